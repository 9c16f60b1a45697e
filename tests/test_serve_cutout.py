"""``pixelwise serve``'s ``format=cutout`` through FastAPI's TestClient: the RGBA cutout and the new backgrounds
are ``predict --cutout/--background``'s files byte for byte, their alpha follows the mask, the refusals (multi-class
and instance runs, bad backgrounds) are one-line 400s, the limits hold (cutouts weigh 4× in
``--max-pixels-in-flight``), and the live stream answers ``format=cutout`` with POST's bytes."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from pixelwise.cli import app as cli_app
from pixelwise.serve.app import create_app
from pixelwise.serve.settings import ServeSettings

from tiny_run import make_tiny_run, write_images

GREEN = "#00ff00"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("serve-cutout") / "run")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("serve-cutout-images") / "in")


@pytest.fixture(scope="module")
def predicted(run, images, tmp_path_factory) -> Path:
    """``predict --cutout --background #00ff00`` of the images, one pass each as the server runs them."""
    out = tmp_path_factory.mktemp("serve-cutout-predict") / "out"
    result = CliRunner().invoke(
        cli_app,
        ["predict", str(run), str(images[0].parent), "--out", str(out), "--no-tta", "--cutout", "--background", GREEN],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out


def client_for(run: Path, **settings) -> TestClient:
    return TestClient(create_app(run, ServeSettings(**settings)))


def png(content: bytes) -> Image.Image:
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(content))


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and "\n" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]


def test_cutout_is_predicts_rgba_png_with_alpha_from_the_mask(run, images, predicted):
    """An RGBA PNG at the input's size: the input's colours, alpha 255 inside the predicted mask and 0 outside
    (exactly, away from its border; the guided filter's soft edge between), byte for byte predict's cutout."""
    interiors = 0
    with client_for(run) as client:
        for path in images:
            body = path.read_bytes()
            mask = np.asarray(png(client.post("/v1/segment", content=body).content)) > 0
            answer = client.post("/v1/segment", params={"format": "cutout"}, content=body)
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
            assert answer.content == (predicted / f"{path.stem}_cutout.png").read_bytes(), path.name
            cutout = png(answer.content)
            rgb = np.asarray(Image.open(path).convert("RGB"))
            assert cutout.mode == "RGBA" and cutout.size == (rgb.shape[1], rgb.shape[0])
            rgba = np.asarray(cutout)
            assert np.array_equal(rgba[..., :3], rgb)
            alpha = rgba[..., 3]
            assert 0 < mask.sum() < mask.size, "the tiny run finds some foreground, not all"
            # High inside, low outside: at most a few pixels change sides (the edge moves onto the image's).
            assert ((alpha >= 128) == mask).mean() > 0.95
            away = np.ones((11, 11), bool)  # farther than the filter's band (2 × radius 2) from the border
            inside, outside = ndimage.binary_erosion(mask, away), ndimage.binary_erosion(~mask, away)
            assert (alpha[inside] == 255).all() and (alpha[outside] == 0).all()
            soft = (alpha > 0) & (alpha < 255)
            assert soft.any() and not (soft & (inside | outside)).any(), "soft alpha only along the border"
            interiors += int(inside.sum())
    assert interiors > 500, "masks with an inside farther than the band from their border"


def test_backgrounds_are_rgb_pngs_green_where_alpha_is_zero(run, images, predicted):
    body = images[1].read_bytes()
    rgb = np.asarray(Image.open(images[1]).convert("RGB")).astype(int)
    with client_for(run) as client:
        alpha = np.asarray(png(client.post("/v1/segment?format=cutout", content=body).content))[..., 3]
        green = client.post("/v1/segment", params={"format": "cutout", "background": GREEN}, content=body)
        assert green.status_code == 200 and green.headers["content-type"] == "image/png"
        assert green.content == (predicted / f"{images[1].stem}_background.png").read_bytes()
        picture = png(green.content)
        assert picture.mode == "RGB" and picture.size == (rgb.shape[1], rgb.shape[0])
        pixels = np.asarray(picture).astype(int)
        assert (alpha == 0).any() and (pixels[alpha == 0] == (0, 255, 0)).all()
        assert (pixels[alpha == 255] == rgb[alpha == 255]).all()
        # The other spellings of a colour, and blur (the image blurred around the subject: not flat).
        for spec, colour in [("white", (255, 255, 255)), ("10, 20, 30", (10, 20, 30)), ("#F0A", (255, 0, 170))]:
            answer = client.post("/v1/segment", params={"format": "cutout", "background": spec}, content=body)
            assert (np.asarray(png(answer.content))[alpha == 0] == colour).all(), spec
        blur = client.post("/v1/segment", params={"format": "cutout", "background": "Blur"}, content=body)
        blurred = np.asarray(png(blur.content)).astype(int)
        assert png(blur.content).mode == "RGB" and blurred[alpha == 0].std() > 1
        assert not np.array_equal(blurred[alpha == 0], rgb[alpha == 0])


@pytest.mark.parametrize(
    "spec, words",
    [
        ("plaid", ["'plaid' is not blur or a colour", "#rrggbb"]),
        ("300,0,0", ["is not blur or a colour"]),
        ("beach.jpg", ["image backgrounds are not accepted over HTTP", "predict --background IMAGE"]),
        ("/etc/passwd", ["image backgrounds are not accepted over HTTP"]),
        ("", ["background is empty", "%23rrggbb"]),
    ],
)
def test_bad_backgrounds_are_one_line_400s(run, images, spec, words):
    with client_for(run) as client:
        response = client.post("/v1/segment", params={"format": "cutout", "background": spec}, content=b"x")
        assert_error(response, 400, *words)


def test_a_background_without_format_cutout_is_refused(run, images):
    with client_for(run) as client:
        response = client.post("/v1/segment", params={"background": "blur"}, content=images[0].read_bytes())
        assert_error(response, 400, "background= goes with format=cutout, not format=png")
        assert client.get("/v1/model").json()["formats"] == ["png", "json", "overlay", "cutout"]


def test_multi_class_and_instance_runs_are_refused_with_what_to_use(images, tmp_path):
    """Refused before the body is read (an empty body would be a 400 of its own), naming why and what to use;
    ``GET /v1/model`` leaves cutout out of their formats (the page offers what it lists)."""
    three = make_tiny_run(tmp_path / "three", steps=1, num_classes=3, class_names=("skin", "lesion", "ruler"))
    with client_for(three) as client:
        message = assert_error(
            client.post("/v1/segment?format=cutout", content=b""), 400, "binary run", "3 classes", "use format=png"
        )
        assert "skin, lesion, ruler" in message
        assert "cutout" not in client.get("/v1/model").json()["formats"]
        assert client.post("/v1/segment?format=overlay", content=images[0].read_bytes()).status_code == 200
    objects = make_tiny_run(
        tmp_path / "objects", steps=1, num_classes=3, class_names=("background", "border", "nucleus"),
        record={"task": "instances"},
    )  # fmt: skip
    with client_for(objects) as client:
        assert_error(client.post("/v1/segment?format=cutout", content=b""), 400, "instance run", "format=instances")
        assert client.get("/v1/model").json()["formats"] == ["png", "json", "overlay", "instances"]


def test_format_instances_on_a_semantic_run_is_a_400_not_a_500(run, images):
    with TestClient(create_app(run, ServeSettings()), raise_server_exceptions=False) as client:
        response = client.post("/v1/segment?format=instances", content=images[0].read_bytes())
        assert_error(response, 400, "not an instance run", "use json")


class Held:
    """Holds the network step of a Segmenter until released; records each call's batch size and whether it kept
    the probabilities."""

    def __init__(self, segmenter):
        self.segmenter, self.real = segmenter, segmenter.labels
        self.open, self.entered = threading.Event(), threading.Event()
        self.calls: list[tuple[int, bool]] = []

    def __enter__(self):
        def labels(batch, sizes, keep_probabilities=False):
            self.calls.append((len(batch), keep_probabilities))
            self.entered.set()
            assert self.open.wait(30), "the test never opened the gate"
            return self.real(batch, sizes, keep_probabilities)

        self.segmenter.labels = labels
        return self

    def __exit__(self, *exc):
        self.open.set()
        del self.segmenter.labels


def wait_for(condition, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_cutouts_weigh_four_times_their_pixels_in_flight_and_batch_apart(run, images):
    """With ``--max-pixels-in-flight`` 5 images' worth: a cutout in flight holds 4 of them, so a mask is still
    admitted and a second cutout is refused (503); cutouts (which keep the probabilities) and masks waiting
    together run as separate network calls, and every answer is the one a lone request gets."""
    body = images[0].read_bytes()
    pixels = 96 * 96
    with client_for(run, max_pixels_in_flight=5 * pixels) as client:
        alone = {fmt: client.post(f"/v1/segment?format={fmt}", content=body).content for fmt in ("png", "cutout")}
        state = client.app.state.serve
        with Held(state.segmenter) as held, ThreadPoolExecutor(4) as pool:
            first = pool.submit(client.post, "/v1/segment?format=cutout", content=body)
            wait_for(held.entered.is_set)
            assert state.pixels_in_flight == 4 * pixels
            busy = client.post("/v1/segment?format=cutout", content=body)
            assert_error(busy, 503, "--max-pixels-in-flight", "(a cutout: its pixels count 4×)")
            second = pool.submit(client.post, "/v1/segment?format=png", content=body)
            wait_for(lambda: state.batcher.depth == 1)
            held.open.set()
            assert first.result(30).content == alone["cutout"] and second.result(30).content == alone["png"]
        assert held.calls == [(1, True), (1, False)]
        assert state.pixels_in_flight == 0 and state.in_flight == 0
    with client_for(run) as client:  # waiting together: one call for the masks, one for the cutouts
        state = client.app.state.serve
        with Held(state.segmenter) as held, ThreadPoolExecutor(5) as pool:
            blocker = pool.submit(client.post, "/v1/segment?format=png", content=images[2].read_bytes())
            wait_for(held.entered.is_set)
            mixed = [pool.submit(client.post, f"/v1/segment?format={fmt}", content=body) for fmt in ("png", "cutout")]
            wait_for(lambda: state.batcher.depth == 2)
            held.open.set()
            assert [f.result(30).content for f in mixed] == [alone["png"], alone["cutout"]]
            assert blocker.result(30).status_code == 200
        assert sorted(held.calls[1:]) == [(1, False), (1, True)]


def test_cutout_keeps_the_body_limit(run, images):
    with client_for(run, max_body_mb=0.001) as client:
        response = client.post("/v1/segment?format=cutout&background=blur", content=images[0].read_bytes())
        assert_error(response, 413, "--max-body-mb")


# --------------------------------------------------------------------------------------------------------
# The live stream: the same table of formats


def stream_frame(seq: int, image: bytes) -> bytes:
    header = json.dumps({"seq": seq}).encode()
    return len(header).to_bytes(4, "big") + header + image


def stream_answer(ws) -> tuple[dict, bytes | None]:
    message = ws.receive()
    if message["type"] == "websocket.close":
        return {"close": message["code"]}, None
    if message.get("text") is not None:
        return json.loads(message["text"]), None
    data = message["bytes"]
    size = int.from_bytes(data[:4], "big")
    return json.loads(data[4 : 4 + size]), data[4 + size :]


def test_stream_answers_cutouts_with_posts_bytes(run, images):
    bodies = [path.read_bytes() for path in images[:2]]
    with client_for(run) as client:
        for query in ({"format": "cutout"}, {"format": "cutout", "background": GREEN}):
            posted = [client.post("/v1/segment", params=query, content=body).content for body in bodies]
            url = "/v1/stream?" + "&".join(f"{k}={v.replace('#', '%23')}" for k, v in query.items())
            with client.websocket_connect(url) as ws:
                for seq, body in enumerate(bodies):
                    ws.send_bytes(stream_frame(seq, body))
                    header, payload = stream_answer(ws)
                    assert header["seq"] == seq and header["format"] == "cutout"
                    assert header["media_type"] == "image/png" and payload == posted[seq]
        with client.websocket_connect("/v1/stream?format=cutout&background=plaid") as ws:
            error, _ = stream_answer(ws)
            assert error["status"] == 400 and "not blur or a colour" in error["error"]
            assert stream_answer(ws)[0] == {"close": 1008}
        assert client.get("/healthz").json()["in_progress"] == 0


def test_stream_refuses_cutouts_of_a_multi_class_run(tmp_path):
    three = make_tiny_run(tmp_path / "three", steps=1, num_classes=3)
    with client_for(three) as client, client.websocket_connect("/v1/stream?format=cutout") as ws:
        error, _ = stream_answer(ws)
        assert error["status"] == 400 and "binary run" in error["error"] and "\n" not in error["error"]
        assert stream_answer(ws)[0] == {"close": 1008}
