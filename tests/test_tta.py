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
    outputs = [TTA_TRANSFORMS[name][0](x) for name in TTA_MODES["d4"].views]
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
    def fixed_shape_engine(x):  # accepts only the batch's own H×W: no view may swap them
        assert x.shape[-2:] == (6, 10)
        return shift_right(x)

    x = torch.randn(1, 3, 6, 10)
    assert tta_views("d4", 6, 10) == TTA_MODES["flips"].views
    assert tta_views("d4", 10, 10) == TTA_MODES["d4"].views
    assert tta_views("d4-zoom", 6, 10) == TTA_MODES["flips"].views
    torch.testing.assert_close(
        tta_probabilities(fixed_shape_engine, x, "d4"), tta_probabilities(shift_right, x, "flips")
    )


def test_rejects_predictions_of_the_wrong_size():
    with pytest.raises(ValueError, match="expected N×C×H×W"):
        tta_probabilities(lambda x: x[:, :1, ::2, ::2], torch.rand(1, 3, 8, 8), "flips")


def test_d4_zoom_adds_the_d4_views_at_1_25x_and_maps_them_back():
    from pixelwise.predict.tta import scaled_side

    assert TTA_MODES["d4-zoom"].scales == (1.0, 1.25)
    assert [scaled_side(s, 1.25) for s in (128, 160, 20)] == [160, 192, 32]
    assert scaled_side(100, 1.0) == 100
    seen = []

    def recording(x):
        seen.append(tuple(x.shape[-2:]))
        return x[:, :1].sigmoid()

    x = torch.rand(2, 3, 128, 128)
    result = tta_probabilities(recording, x, "d4-zoom")
    assert result.shape == (2, 1, 128, 128)
    assert seen == [(128, 128)] * 8 + [(160, 160)] * 8
    # A smooth image: the enlarged view, resized back, agrees with the plain one except for interpolation.
    ramp = torch.linspace(0, 1, 128).expand(1, 3, 128, 128).clone()
    assert (tta_probabilities(recording, ramp, "d4-zoom") - tta_probabilities(recording, ramp, "d4")).abs().max() < 0.01

    # A model whose output has a size in pixels (a centred blob of σ = 10 px) is seen smaller in the enlarged view.
    def blob(x):
        rows, cols = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2 for n in x.shape[-2:])
        r2 = rows[:, None] ** 2 + cols[None, :] ** 2
        return torch.exp(-r2 / 200).expand(x.shape[0], 1, *x.shape[-2:])

    centre = (0, 0, 64, 64)
    assert tta_probabilities(blob, x, "d4")[centre].item() == pytest.approx(1.0, abs=0.01)
    assert tta_probabilities(blob, x, "d4-zoom")[0, 0, 64, 74] < tta_probabilities(blob, x, "d4")[0, 0, 64, 74] - 0.05

    seen.clear()
    tta_probabilities(recording, torch.rand(1, 3, 64, 96), "d4-zoom")  # non-square: the flips at both scales
    assert seen == [(64, 96)] * 4 + [(96, 128)] * 4
