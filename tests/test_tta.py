"""Test-time augmentation: inverse transforms, exactness for equivariant models, averaging otherwise."""

import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.predict.tta import TTA_MODES, TTA_TRANSFORMS, tta_probabilities, tta_views


def per_pixel_model(num_classes=3):
    """A 1×1 convolution + softmax: commutes with every flip and rotation."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, num_classes, 1)

    @torch.no_grad()
    def predict_probs(x):
        return conv(x).softmax(1)

    return predict_probs


def shift_right(x):
    """Not equivariant: the 'probability' at column j is the input's first channel at column j-1 (wrapping)."""
    return torch.roll(x[:, :1], shifts=1, dims=-1).sigmoid()


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 6, 10)])
@pytest.mark.parametrize("name", sorted(TTA_TRANSFORMS))
def test_inverse_undoes_forward(name, shape):
    x = torch.rand(shape)
    forward, inverse = TTA_TRANSFORMS[name]
    assert torch.equal(inverse(forward(x)), x)


def test_d4_views_are_eight_distinct_transforms():
    x = torch.rand(1, 1, 5, 5)
    outputs = [TTA_TRANSFORMS[name][0](x) for name in TTA_MODES["d4"]]
    assert len(outputs) == 8
    assert all(not torch.equal(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(PixelwiseError, match="none, flips, d4"):
        tta_probabilities(shift_right, torch.rand(1, 3, 8, 8), modes="d8")


@pytest.mark.parametrize("modes", ["none", "flips", "d4"])
@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_equivariant_model_gives_exactly_the_plain_result(modes, size):
    predict_probs = per_pixel_model()
    x = torch.randn(2, 3, *size)
    plain = predict_probs(x)
    result = tta_probabilities(predict_probs, x, modes)
    assert result.shape == plain.shape and result.dtype == plain.dtype
    assert torch.equal(result, plain)


def test_flips_average_a_shift_with_its_mirror():
    x = torch.randn(2, 3, 8, 12)
    result = tta_probabilities(shift_right, x, "flips")
    # hflip turns "take from the left" into "take from the right"; vflip leaves it alone.
    left = torch.roll(x[:, :1], 1, dims=-1).sigmoid()
    right = torch.roll(x[:, :1], -1, dims=-1).sigmoid()
    assert result.shape == (2, 1, 8, 12)
    torch.testing.assert_close(result, (left + right) / 2)
    assert not torch.allclose(result, shift_right(x))


def test_d4_averages_a_shift_over_all_four_directions():
    x = torch.randn(2, 3, 10, 10)
    result = tta_probabilities(shift_right, x, "d4")
    channel = x[:, :1]
    directions = [torch.roll(channel, s, dims=d).sigmoid() for d in (-1, -2) for s in (1, -1)]
    torch.testing.assert_close(result, sum(directions) / 4)


def test_d4_on_non_square_input_uses_flips_and_keeps_the_shape():
    def fixed_shape_engine(x):  # like an exported ONNX model: one input size only
        assert x.shape[-2:] == (6, 10)
        return shift_right(x)

    x = torch.randn(1, 3, 6, 10)
    assert tta_views("d4", 6, 10) == TTA_MODES["flips"]
    assert tta_views("d4", 10, 10) == TTA_MODES["d4"]
    torch.testing.assert_close(tta_probabilities(fixed_shape_engine, x, "d4"), tta_probabilities(shift_right, x, "flips"))


def test_rejects_predictions_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected N×C×H×W"):
        tta_probabilities(lambda x: x[:, :1, ::2, ::2], torch.rand(1, 3, 8, 8), "flips")
