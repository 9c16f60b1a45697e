"""End to end in a real browser: ``pixelwise serve`` in a subprocess, Debian's Chromium driven headless by
Playwright: upload an image through the page's file input, wait for the overlay, and compare the pixel
count the page shows, and the mask it offers for download, with ``pixelwise predict``'s mask; the cutout and
new-background answers (an RGBA picture on the canvas, the PNG the server answers behind the download link); and the
camera mode, with Chromium's fake camera playing a y4m clip made here: frames go out over the WebSocket, masks come
back and are drawn.

Skipped (with the reason) where Chromium or the Playwright package is missing; ``.ci/run`` installs
Chromium with apt-get.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny_run import camera_frames, make_tiny_run, write_images, write_y4m

CHROMIUM = os.environ.get("PIXELWISE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pixelwise_command(*args) -> list[str]:
    return [sys.executable, "-c", "from pixelwise.cli import main; main()", *map(str, args)]


@pytest.fixture(scope="module")
def playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install chromium` (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


def fake_camera_args(clip: Path) -> list[str]:
    """Chromium's flags for a camera that plays ``clip`` (y4m, looped) and a permission granted unasked."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]


@contextmanager
def serving(run: Path, root: Path):
    """`pixelwise serve RUN` on a free loopback port: yields its address; stopped afterwards."""
    log_path = root / "serve.log"
    env = {**os.environ, "PIXELWISE_THREADS": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(pixelwise_command("serve", run, "--port", "0"), stdout=log, stderr=log, env=env)
    try:
        yield wait_until_serving(process, log_path), log_path
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny run, `pixelwise serve` on a free loopback port, and its address; stopped afterwards."""
    root = tmp_path_factory.mktemp("browser")
    run = make_tiny_run(root / "run")
    with serving(run, root) as (url, log_path):
        yield run, url, log_path


def wait_until_serving(process: subprocess.Popen, log_path: Path, seconds: float = 90.0) -> str:
    deadline = time.monotonic() + seconds
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pixelwise serve exited with {process.returncode}: {log_path.read_text()}")
        found = re.search(r"on (http://127\.0\.0\.1:\d+/)", log_path.read_text())
        if found:
            url = found.group(1)
            try:
                with urllib.request.urlopen(url + "healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"pixelwise serve did not answer at {url} within {seconds:.0f} s: {log_path.read_text()}")


def test_upload_in_the_page_shows_predicts_pixel_count(browser, served, tmp_path):
    run, url, log_path = served
    (image,) = write_images(tmp_path / "in", sizes=((180, 240),))
    out = tmp_path / "predicted"
    result = subprocess.run(
        pixelwise_command("predict", run, image, "--out", out, "--no-tta"),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIXELWISE_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    predicted_bytes = (out / f"{image.stem}_mask.png").read_bytes()
    predicted = np.asarray(Image.open(out / f"{image.stem}_mask.png")) > 0
    assert 0 < predicted.sum() < predicted.size, "the tiny run should find some lesion, not all"

    page = browser.new_page(accept_downloads=True)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    response = page.goto(url)
    assert response.status == 200 and "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert "unet" in page.inner_text("#model-info")

    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    shown = page.get_attribute("#pixel-counts li[data-class='1']", "data-pixels")
    assert int(shown) == int(predicted.sum())
    background = page.get_attribute("#pixel-counts li[data-class='0']", "data-pixels")
    assert int(background) == int((~predicted).sum())
    assert f"{int(predicted.sum()):,} px" in page.inner_text("#pixel-counts")
    size = page.evaluate("() => [document.getElementById('canvas').width, document.getElementById('canvas').height]")
    assert size == [240, 180]

    # The overlay is drawn over the image: the slider changes how strongly.
    opaque = canvas_pixels(page)
    page.fill("#opacity", "0")
    page.dispatch_event("#opacity", "input")
    clear = canvas_pixels(page)
    assert page.get_attribute("#canvas", "data-opacity") == "0"
    changed = np.any(opaque != clear, axis=2)
    assert changed.sum() > 0 and np.array_equal(changed, predicted), "only the mask's pixels change"
    page.fill("#opacity", "60")
    page.dispatch_event("#opacity", "input")

    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "downloaded_mask.png"
    download.value.save_as(saved)
    assert saved.read_bytes() == predicted_bytes, "the page's download is predict's mask file"
    assert download.value.suggested_filename == f"{image.stem}_mask.png"

    screenshot = tmp_path / "serve_page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 1000

    # A file that is not an image: the server's one-line reason is shown.
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert "not an image" in page.inner_text("#error") and "415" in page.inner_text("#error")
    page.close()
    unexpected = [p for p in problems if "415" not in p]  # the browser logs the failed request itself
    assert not unexpected, unexpected

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    segment = [line for line in lines if line["path"] == "/v1/segment"]
    assert [line["status"] for line in segment] == [200, 415]
    assert segment[0]["bytes_in"] == image.stat().st_size and segment[0]["bytes_out"] == len(predicted_bytes)


def canvas_pixels(page, alpha: bool = False) -> np.ndarray:
    data = page.evaluate("""() => {
        const c = document.getElementById('canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    height, width = page.evaluate(
        "() => [document.getElementById('canvas').height, document.getElementById('canvas').width]"
    )
    return np.array(data, dtype=np.uint8).reshape(height, width, 4)[..., : 4 if alpha else 3]


def test_cutout_and_background_answers_in_the_page(browser, served, tmp_path):
    """The answer chosen as a cutout: the canvas shows the RGBA picture (transparent outside the subject, opaque
    inside), the opacity and the counts are hidden, and the download link holds the server's cutout PNG under
    predict's name; then the background in a chosen colour, re-asked for the same image without a new upload."""
    run, url, _ = served
    (image,) = write_images(tmp_path / "in", sizes=((120, 160),))
    body = image.read_bytes()
    request = urllib.request.Request(url + "v1/segment?format=cutout", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        served_cutout = answer.read()
    alpha = np.asarray(Image.open(io.BytesIO(served_cutout)))[..., 3]

    page = browser.new_page(accept_downloads=True)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=30_000)
    assert not page.eval_on_selector("#answer option[value=cutout]", "option => option.disabled")
    page.select_option("#answer", "cutout")
    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    assert page.get_attribute("#canvas", "data-answer") == "cutout"
    assert page.is_hidden("#opacity") and page.is_hidden("#pixel-counts")
    shown = canvas_pixels(page, alpha=True)
    assert shown.shape == (120, 160, 4)
    assert (shown[alpha == 0, 3] == 0).all() and (shown[alpha == 255, 3] == 255).all(), "the picture's alpha"
    assert (alpha == 0).any() and (alpha == 255).any()
    href = page.get_attribute("#download", "href")
    assert href.startswith("blob:") and "cutout" in page.inner_text("#download")
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "downloaded_cutout.png"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"{image.stem}_cutout.png"
    assert saved.read_bytes() == served_cutout and Image.open(saved).mode == "RGBA"

    # The background in a colour: the same image answered again; green exactly where the cutout is transparent.
    page.select_option("#answer", "colour")
    assert page.is_visible("#answer-colour")
    page.evaluate("""() => {
        const colour = document.getElementById('answer-colour');
        colour.value = '#00ff00';
        colour.dispatchEvent(new Event('change'));
    }""")
    page.wait_for_function(
        "() => document.body.dataset.state === 'done' && "
        "document.getElementById('download').download.endsWith('_background.png')",
        timeout=60_000,
    )
    assert page.get_attribute("#canvas", "data-answer") == "picture"
    pixels = canvas_pixels(page).astype(int)
    assert (pixels[alpha == 0] == (0, 255, 0)).all()
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "downloaded_background.png"
    download.value.save_as(saved)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(saved).mode == "RGB"

    # Back to the mask: the counts and the opacity return.
    page.select_option("#answer", "overlay")
    page.wait_for_function(
        "() => document.body.dataset.state === 'done' && "
        "document.getElementById('canvas').dataset.answer === 'overlay'",
        timeout=60_000,
    )
    assert page.is_visible("#opacity") and page.is_visible("#pixel-counts")
    assert page.get_attribute("#download", "download") == f"{image.stem}_mask.png"
    page.close()
    assert not problems, problems


def test_multiclass_masks_are_counted_per_class_in_the_page(browser, tmp_path):
    """A 3-class run: the page reads the palette mask's colours back into classes, and its per-class pixel
    counts are those of predict's mask (whose pixel values are the class indices)."""
    run = make_tiny_run(tmp_path / "run3", num_classes=3)
    (image,) = write_images(tmp_path / "in", sizes=((120, 160),))
    out = tmp_path / "predicted"
    result = subprocess.run(
        pixelwise_command("predict", run, image, "--out", out, "--no-tta"),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIXELWISE_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    labels = np.asarray(Image.open(out / f"{image.stem}_mask.png"))
    with serving(run, tmp_path) as (url, _):
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=30_000)
        assert page.eval_on_selector("#answer option[value=cutout]", "option => option.disabled"), "binary only"
        page.set_input_files("#file", str(image))
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        for index in range(3):
            shown = page.get_attribute(f"#pixel-counts li[data-class='{index}']", "data-pixels")
            assert int(shown) == int((labels == index).sum()), index


def test_camera_mode_streams_frames_and_draws_their_masks(playwright, served, tmp_path):
    """The page's camera mode against Chromium's fake camera (a 320×180 clip): frames go out over the
    WebSocket one at a time, masks come back and are drawn over them (then the foreground on a chosen colour:
    exactly the mask's background pixels take it), the round trip is shown, the stop button ends the stream."""
    run, url, log_path = served
    clip = write_y4m(tmp_path / "clip.y4m", camera_frames(6, 320, 180))
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS + fake_camera_args(clip), headless=True
    )
    try:
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=30_000)
        page.click("#camera-toggle")
        page.wait_for_selector("body[data-camera=on]", timeout=30_000)
        drawn = "(n) => Number(document.getElementById('camera-canvas').dataset.drawn || 0) >= n"
        page.wait_for_function(drawn, arg=3, timeout=60_000)
        stats = page.evaluate("() => window.pixelwiseCamera")
        assert stats["errors"] == 0 and stats["sent"] >= stats["drawn"] >= 3
        assert min(stats["rtt"]) > 0 and min(stats["latency"]) >= min(stats["rtt"]) and min(stats["server"]) > 0
        assert page.get_attribute("#camera-canvas", "data-view") == "overlay"
        assert page.evaluate(
            "() => [document.getElementById('camera-canvas').width, document.getElementById('camera-canvas').height]"
        ) == [320, 180]
        assert re.search(
            r"round trip \d+ ms \(server \d+ ms\), [\d.]+ frames/s, 320×180 px", page.inner_text("#camera-timing")
        )

        # The foreground on a colour: exactly the mask's background pixels are that colour.
        # The colour first: a frame drawn between the two steps would be a cutout on the old colour.
        page.evaluate("() => { document.getElementById('camera-background').value = '#00ff00'; }")
        page.select_option("#camera-view", "cutout")
        page.wait_for_function(
            "() => document.getElementById('camera-canvas').dataset.view === 'cutout'", timeout=30_000
        )
        page.evaluate("() => new Promise((done) => setTimeout(done, 0))")
        pixels, foreground = page.evaluate("""() => {
            const c = document.getElementById('camera-canvas');
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let green = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] === 0 && data[i + 1] === 255 && data[i + 2] === 0) green += 1;
            }
            return [green, Number(c.dataset.foreground)];
        }""")
        assert 0 < foreground < 320 * 180, "the tiny run finds some foreground, not all"
        assert pixels == 320 * 180 - foreground

        page.click("#camera-toggle")
        page.wait_for_selector("body[data-camera=off]", timeout=10_000)
        sent = page.evaluate("() => window.pixelwiseCamera.sent")
        assert not problems, problems
    finally:
        browser.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        streams = [line for line in lines if line["path"] == "/v1/stream"]
        if streams:
            break
        time.sleep(0.1)
    assert len(streams) == 1 and streams[0]["status"] == 101 and streams[0]["errors"] == 0
    assert streams[0]["frames_in"] <= sent and streams[0]["dropped"] == 0, "one frame in flight: none dropped"
