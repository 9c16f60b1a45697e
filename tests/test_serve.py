"""``pixelwise serve``'s app through FastAPI's TestClient: the three answer formats against predict's files,
every limit and error (one-line JSON each), batching, concurrency, reload, the access log and the page's
security headers."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from pixelwise.cli import app as cli_app
from pixelwise.errors import PixelwiseError
from pixelwise.serve.app import create_app
from pixelwise.serve.server import bind_socket, is_loopback
from pixelwise.serve.settings import ServeSettings

from tiny_run import SIZE, THRESHOLD, make_tiny_run, write_images

EXTRA = {"best_val_dice": 0.912, "best_epoch": 7, "train_seconds": 12.5}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("serve") / "run", record=EXTRA)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("serve-images") / "in")


@pytest.fixture(scope="module")
def predicted(run, images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve-predict") / "out"
    result = CliRunner().invoke(
        cli_app,
        ["predict", str(run), str(images[0].parent), "--out", str(out), "--instances", "--no-tta"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return out


def client_for(run: Path, **settings) -> TestClient:
    return TestClient(create_app(run, ServeSettings(**settings)))


class Gate:
    """Holds the network step of a Segmenter until released; counts the calls and their batch sizes."""

    def __init__(self, segmenter):
        self.segmenter, self.real = segmenter, segmenter.labels
        self.open, self.entered = threading.Event(), threading.Event()
        self.batches: list[int] = []

    def __enter__(self):
        def labels(batch, sizes, keep_probabilities=False):
            self.batches.append(len(batch))
            self.entered.set()
            assert self.open.wait(30), "the test never opened the gate"
            return self.real(batch, sizes, keep_probabilities)

        self.segmenter.labels = labels
        return self

    def __exit__(self, *exc):
        self.open.set()
        del self.segmenter.labels  # the class's method again


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# --------------------------------------------------------------------------------------------------------
# Answers


def test_png_json_and_overlay_match_predicts_files(run, images, predicted):
    with client_for(run) as client:
        for path in images:
            body = path.read_bytes()
            png = client.post("/v1/segment", content=body)
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            assert png.content == (predicted / f"{path.stem}_mask.png").read_bytes(), path.name
            overlay = client.post("/v1/segment?format=overlay", content=body)
            assert overlay.status_code == 200
            assert overlay.content == (predicted / f"{path.stem}_overlay.png").read_bytes()
            answer = client.post("/v1/segment?format=json", content=body)
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
            data = answer.json()
            mask = np.asarray(Image.open(io.BytesIO(png.content))) > 0
            assert (data["width"], data["height"]) == (mask.shape[1], mask.shape[0])
            assert data["threshold"] == THRESHOLD and data["model"] == "run"
            assert [c["name"] for c in data["classes"]] == ["background", "foreground"]
            assert data["pixel_counts"] == {"background": int((~mask).sum()), "foreground": int(mask.sum())}
            assert data["classes"][1]["pixels"] == int(mask.sum())
            rows = [r for r in csv_rows(predicted / "instances.csv") if r["image"] == path.stem]
            assert len(data["instances"]) == len(rows)
            assert [i["area_px"] for i in data["instances"]] == [int(r["area_px"]) for r in rows]


def csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_model_health_and_page(run):
    with client_for(run) as client:
        model = client.get("/v1/model").json()
        assert model["name"] == "run" and model["model"] == "unet" and model["input_size"] == SIZE
        assert model["threshold"] == THRESHOLD and model["num_classes"] == 2
        assert [c["name"] for c in model["classes"]] == ["background", "foreground"]
        assert model["training"]["best_val_dice"] == EXTRA["best_val_dice"]
        assert model["training"]["data"] == "embedded synthetic set"
        assert client.get("/healthz").json()["status"] == "ok"
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None, "no inline script"
        assert " style=" not in page.text and "<style" not in page.text, "no inline style"
        assert "http://" not in page.text and "https://" not in page.text, "nothing from other sites"
        for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            asset = client.get(src)
            assert asset.status_code == 200 and asset.content, src
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/static/../cli.py").status_code == 404
        assert 'id="pixel-counts"' in page.text and 'type="file"' in page.text and 'id="opacity"' in page.text


# --------------------------------------------------------------------------------------------------------
# Limits and errors: a status and one line of JSON each


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and "\n" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def test_bad_requests(run, images):
    with client_for(run) as client:
        assert_error(client.post("/v1/segment", content=b""), 400, "empty")
        assert_error(client.post("/v1/segment?format=jpeg", content=images[0].read_bytes()), 400, "format")
        assert_error(client.post("/v1/segment", content=b"hello, this is text"), 415, "not an image")
        truncated = images[0].read_bytes()[:200]
        assert_error(client.post("/v1/segment", content=truncated), 415)
        assert_error(client.get("/v1/segment"), 405, "not allowed")
        assert_error(client.get("/v2/nothing"), 404, "not found")


def test_body_limit_is_counted_while_streaming(run, images):
    limit_mb = 0.05  # 52,428 bytes
    big = b"\0" * 60_000
    with client_for(run, max_body_mb=limit_mb) as client:
        assert client.post("/v1/segment", content=images[0].read_bytes()).status_code == 200  # ~20 kB
        assert_error(client.post("/v1/segment", content=big), 413, "--max-body-mb")  # declared length

        def chunks():  # no Content-Length: only counting can tell
            for _ in range(6):
                yield b"\0" * 10_000

        assert_error(client.post("/v1/segment", content=chunks()), 413, "--max-body-mb")


def test_a_content_length_that_lies_is_not_trusted(run):
    """Raw ASGI: the header says 10 bytes, 600,000 arrive; the server stops reading past its limit."""
    app = create_app(run, ServeSettings(max_body_mb=0.25))
    received = {"chunks": 0}
    sent: list[dict] = []

    async def receive():
        received["chunks"] += 1
        more = received["chunks"] < 60
        return {"type": "http.request", "body": b"\0" * 10_000, "more_body": more}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/segment",
        "raw_path": b"/v1/segment",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-length", b"10")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert "--max-body-mb" in json.loads(sent[1]["body"])["error"]
    assert received["chunks"] <= 28, "reading stopped soon after the limit (262,144 bytes)"
    app.state.serve.close()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height RGB, an empty IDAT and IEND: no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_pixel_limit_is_read_from_the_header_before_decoding(run):
    with client_for(run, max_pixels=250_000) as client:
        # The header declares 10,000 × 10,000 and there are no pixels: only a header check answers 413
        # (decoding would find the data missing: 415, as it does below for a header within the limit).
        assert_error(
            client.post("/v1/segment", content=png_header_only(10_000, 10_000)), 413, "10000×10000", "--max-pixels"
        )
        assert_error(client.post("/v1/segment", content=png_header_only(30_000, 30_000)), 413, "--max-pixels")
        buffer = io.BytesIO()
        Image.new("RGB", (600, 500)).save(buffer, format="PNG")  # 300,000 pixels in a small file
        assert_error(client.post("/v1/segment", content=buffer.getvalue()), 413, "300,000")
        buffer = io.BytesIO()
        Image.new("RGB", (500, 500)).save(buffer, format="PNG")  # at the limit: accepted
        assert client.post("/v1/segment", content=buffer.getvalue()).status_code == 200
        assert_error(client.post("/v1/segment", content=png_header_only(400, 400)), 415)


def test_queue_full_is_503_and_the_event_loop_stays_free(run, images):
    body = images[0].read_bytes()
    with client_for(run, max_queue=2) as client, ThreadPoolExecutor(4) as pool:
        state = client.app.state.serve
        with Gate(state.segmenter) as gate:
            first = [pool.submit(client.post, "/v1/segment", content=body) for _ in range(2)]
            wait_for(lambda: state.in_flight == 2 and gate.entered.is_set())
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200  # the network is busy, the loop is not
            assert time.monotonic() - started < 2.0
            refused = client.post("/v1/segment", content=body)
            assert_error(refused, 503, "busy", "--max-queue")
            assert refused.headers["retry-after"] == "1"
            gate.open.set()
            assert [f.result().status_code for f in first] == [200, 200]
        assert client.post("/v1/segment", content=body).status_code == 200


def test_pixels_in_flight_are_bounded_with_503_and_released(run, images):
    """Decoded images held at once are limited (memory under a flood of large images); one is always admitted."""
    body = images[0].read_bytes()  # 96×96 = 9,216 pixels
    with client_for(run, max_pixels_in_flight=15_000) as client, ThreadPoolExecutor(4) as pool:
        state = client.app.state.serve
        with Gate(state.segmenter) as gate:
            first = pool.submit(client.post, "/v1/segment", content=body)
            wait_for(lambda: gate.entered.is_set())
            assert state.pixels_in_flight == 96 * 96
            assert_error(client.post("/v1/segment", content=body), 503, "busy", "--max-pixels-in-flight")
            gate.open.set()
            assert first.result().status_code == 200
        assert state.pixels_in_flight == 0
        assert client.post("/v1/segment", content=body).status_code == 200
    with client_for(run, max_pixels_in_flight=100) as client:  # larger than the limit, but alone: admitted
        assert client.post("/v1/segment", content=body).status_code == 200


def test_a_flood_neither_crashes_the_server_nor_grows_its_memory(run, images):
    """Many clients for a few seconds, twice: every answer is 200 or 503, the counters return to zero, and the
    second flood does not raise the process's peak memory much above the first (no growth without bound)."""
    import resource

    bodies = [path.read_bytes() for path in images]

    def flood(client, seconds: float) -> list[int]:
        end = time.monotonic() + seconds

        def client_loop(i: int) -> list[int]:
            codes = []
            while time.monotonic() < end:
                fmt = ("png", "overlay", "json")[i % 3]
                codes.append(client.post(f"/v1/segment?format={fmt}", content=bodies[i % len(bodies)]).status_code)
            return codes

        with ThreadPoolExecutor(12) as pool:
            return [code for codes in pool.map(client_loop, range(12)) for code in codes]

    with client_for(run, max_queue=6) as client:
        state = client.app.state.serve
        first = flood(client, 3.0)
        peak_after_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        second = flood(client, 3.0)
        peak_after_second = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert set(first + second) <= {200, 503} and 200 in second and 503 in first + second
        assert state.in_flight == 0 and state.pixels_in_flight == 0 and state.batcher.depth == 0
        assert peak_after_second - peak_after_first < 100 * 1024, "KiB: memory grew from one flood to the next"
        assert client.get("/healthz").status_code == 200


def test_timeout_is_504_and_the_server_recovers(run, images):
    body = images[1].read_bytes()
    with client_for(run, timeout=1.0) as client:
        state = client.app.state.serve
        with Gate(state.segmenter):
            assert_error(client.post("/v1/segment", content=body), 504, "--timeout")
        assert state.in_flight == 0
        assert client.post("/v1/segment", content=body).status_code == 200


def test_concurrent_requests_of_mixed_sizes_are_batched_and_correct(run, images, predicted):
    expected = {p.name: (predicted / f"{p.stem}_mask.png").read_bytes() for p in images}
    bodies = [images[i % 3] for i in range(9)]
    with client_for(run, max_batch=8) as client, ThreadPoolExecutor(9) as pool:
        state = client.app.state.serve
        with Gate(state.segmenter) as gate:
            futures = [pool.submit(client.post, "/v1/segment", content=path.read_bytes()) for path in bodies]
            wait_for(lambda: gate.entered.is_set() and state.batcher.depth + sum(gate.batches) == 9)
            gate.open.set()
            answers = [f.result() for f in futures]
        assert [a.status_code for a in answers] == [200] * 9
        assert [a.content for a in answers] == [expected[p.name] for p in bodies]
        assert max(gate.batches) > 1, f"queued images ran together: batches {gate.batches}"
        assert sum(state.batcher.batch_sizes.elements()) == 9


def test_max_batch_1_turns_batching_off(run, images):
    with client_for(run, max_batch=1) as client, ThreadPoolExecutor(4) as pool:
        state = client.app.state.serve
        with Gate(state.segmenter) as gate:
            futures = [pool.submit(client.post, "/v1/segment", content=images[0].read_bytes()) for _ in range(4)]
            wait_for(lambda: gate.entered.is_set() and state.batcher.depth == 3)
            gate.open.set()
            assert all(f.result().status_code == 200 for f in futures)
        assert set(gate.batches) == {1} and len(gate.batches) == 4


# --------------------------------------------------------------------------------------------------------
# Reload


def test_reload_swaps_the_run_and_running_requests_finish_with_theirs(run, images, tmp_path):
    other = make_tiny_run(tmp_path / "three", steps=1, num_classes=3, class_names=("skin", "lesion", "ruler"))
    body = images[2].read_bytes()
    with client_for(run) as client, ThreadPoolExecutor(2) as pool:
        before = client.post("/v1/segment", content=body).content
        state = client.app.state.serve
        with Gate(state.segmenter) as gate:
            running = pool.submit(client.post, "/v1/segment", content=body)
            wait_for(gate.entered.is_set)
            answer = client.post("/v1/reload", json={"run": str(other)})
            assert answer.status_code == 200, answer.text
            assert [c["name"] for c in answer.json()["classes"]] == ["skin", "lesion", "ruler"]
            gate.open.set()
            assert running.result().content == before, "the request in progress kept its run"
        assert client.get("/v1/model").json()["name"] == "three"
        after = client.post("/v1/segment?format=json", content=body).json()
        assert [c["name"] for c in after["classes"]] == ["skin", "lesion", "ruler"]
        mask = np.asarray(Image.open(io.BytesIO(client.post("/v1/segment", content=body).content)))
        assert mask.max() <= 2, "multi-class PNG: class indices"


def test_multiclass_mask_is_a_palette_png_in_the_pages_colours(images, tmp_path):
    three = make_tiny_run(tmp_path / "three", steps=1, num_classes=3, class_names=("skin", "lesion", "ruler"))
    predicted = tmp_path / "out"
    result = CliRunner().invoke(
        cli_app, ["predict", str(three), str(images[0]), "--out", str(predicted), "--no-tta"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    body = images[0].read_bytes()
    with client_for(three) as client:
        info = client.get("/v1/model").json()
        png = client.post("/v1/segment", content=body).content
        overlay = client.post("/v1/segment?format=overlay", content=body).content
    mask = Image.open(io.BytesIO(png))
    assert mask.mode == "P" and png == (predicted / f"{images[0].stem}_mask.png").read_bytes()
    assert overlay == (predicted / f"{images[0].stem}_overlay.png").read_bytes()
    palette = mask.getpalette()
    for entry in info["classes"][1:]:  # the page colours each class as the mask's palette does
        rgb = palette[3 * entry["index"] : 3 * entry["index"] + 3]
        assert entry["color"] == "#" + "".join(f"{c:02x}" for c in rgb)
    assert info["mask_png"].startswith("palette")


@pytest.fixture
def real_server(run):
    """The app under uvicorn on a free loopback port (a thread), with a 1-second --timeout."""
    import uvicorn

    from pixelwise.serve.server import uvicorn_config

    settings = ServeSettings(timeout=1.0, max_queue=4)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(create_app(run, settings), settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def test_a_slow_client_gets_408_and_does_not_hold_up_others(real_server, images):
    import socket
    import urllib.request

    body = images[0].read_bytes()
    slow = socket.create_connection(("127.0.0.1", real_server))
    slow.sendall(
        b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:100]
    )  # then nothing more: a stalled upload
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{real_server}/v1/segment", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:  # served meanwhile
        assert answer.status == 200
    slow.settimeout(10)
    reply = b""
    while b"--timeout" not in reply:  # headers and body may come in separate packets
        chunk = slow.recv(4096)
        if not chunk:
            break
        reply += chunk
    slow.close()
    reply = reply.decode("latin-1")
    assert reply.startswith("HTTP/1.1 408") and "--timeout" in reply
    assert time.monotonic() - started < 10


def test_bad_reloads_keep_the_current_run(run, tmp_path):
    with client_for(run) as client:
        assert_error(client.post("/v1/reload", json={"run": str(tmp_path / "missing")}), 400, "does not exist")
        (tmp_path / "empty").mkdir()
        assert_error(client.post("/v1/reload", json={"run": str(tmp_path / "empty")}), 400, "not a pixelwise run")
        assert_error(client.post("/v1/reload", json={"path": "x"}), 400, '{"run"')
        assert_error(client.post("/v1/reload", content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert_error(
            client.post("/v1/reload", content=json.dumps({"run": str(run)}), headers={"content-type": "text/plain"}),
            415,
            "application/json",
        )
        assert client.get("/v1/model").json()["name"] == "run"


# --------------------------------------------------------------------------------------------------------
# Access log, hosts, settings, CLI


def test_access_log_has_one_json_line_per_request(run, images, caplog):
    body = images[0].read_bytes()
    with client_for(run) as client, caplog.at_level(logging.INFO, logger="pixelwise.serve.access"):
        png = client.post("/v1/segment", content=body)
        client.get("/v2/missing")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pixelwise.serve.access"]
    assert len(lines) == 2
    first, second = lines
    assert {k: first[k] for k in ("method", "path", "status", "bytes_in", "bytes_out")} == {
        "method": "POST",
        "path": "/v1/segment",
        "status": 200,
        "bytes_in": len(body),
        "bytes_out": len(png.content),
    }
    assert first["latency_ms"] > 0 and second["status"] == 404 and second["method"] == "GET"


def test_host_header_check(run):
    with client_for(run, allowed_hosts=("127.0.0.1", "localhost")) as client:
        assert_error(client.get("/healthz"), 400, "Host")  # TestClient sends Host: testserver
        assert client.get("/healthz", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


@pytest.mark.parametrize(
    "changes, option",
    [
        ({"max_batch": 0}, "--max-batch"),
        ({"max_queue": 0}, "--max-queue"),
        ({"max_body_mb": 0}, "--max-body-mb"),
        ({"max_pixels": 10**9}, "--max-pixels"),
        ({"timeout": 0}, "--timeout"),
        ({"max_wait_ms": -1}, "--max-wait-ms"),
        ({"max_pixels_in_flight": 0}, "--max-pixels-in-flight"),
    ],
)
def test_bad_settings_are_one_line_errors(run, changes, option):
    with pytest.raises(PixelwiseError, match=option):
        create_app(run, ServeSettings(**changes))


def test_cli_refuses_a_bad_run_and_a_taken_port(tmp_path, run):
    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "nothing"), "--port", "0"])
    assert result.exit_code != 0 and isinstance(result.exception, PixelwiseError)
    assert "does not exist" in str(result.exception)
    taken = bind_socket("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(PixelwiseError, match="choose another --port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(PixelwiseError, match="--port"):
        bind_socket("127.0.0.1", 70000)


# --------------------------------------------------------------------------------------------------------
# The live camera stream (WS /v1/stream)


def stream_frame(seq: int, image: bytes) -> bytes:
    """A client's binary message: 4-byte header length, the JSON header, the image's bytes."""
    header = json.dumps({"seq": seq}).encode()
    return len(header).to_bytes(4, "big") + header + image


def stream_answer(ws) -> tuple[dict, bytes | None]:
    """The next message: ``(header, payload)`` for an answer, ``(error dict, None)`` for a text message,
    ``({"close": code}, None)`` when the server closed the socket."""
    message = ws.receive()
    if message["type"] == "websocket.close":
        return {"close": message["code"]}, None
    if message.get("text") is not None:
        error = json.loads(message["text"])
        assert "\n" not in message["text"] and isinstance(error["error"], str), message["text"]
        return error, None
    data = message["bytes"]
    size = int.from_bytes(data[:4], "big")
    return json.loads(data[4 : 4 + size]), data[4 + size :]


def jpeg_of(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_stream_answers_each_frame_in_order_with_posts_bytes(run, images, caplog):
    """Frames sent one at a time: every one answered, in order, with its seq, the server's time, and the
    bytes POST /v1/segment answers for the same image (PNG and JPEG frames, png and overlay formats)."""
    bodies = [jpeg_of(images[0]), images[1].read_bytes(), jpeg_of(images[2]), images[0].read_bytes()]
    with client_for(run) as client, caplog.at_level(logging.INFO, logger="pixelwise.serve.access"):
        posted = [client.post("/v1/segment", content=body).content for body in bodies]
        with client.websocket_connect("/v1/stream") as ws:
            for seq, body in zip((5, 6, 7, 100), bodies):
                ws.send_bytes(stream_frame(seq, body))
                header, payload = stream_answer(ws)
                assert header["seq"] == seq and header["format"] == "png" and header["media_type"] == "image/png"
                assert header["server_ms"] > 0 and header["wait_ms"] >= 0 and header["dropped"] == 0
                assert payload == posted[[5, 6, 7, 100].index(seq)], seq
        overlay = client.post("/v1/segment?format=overlay", content=bodies[0]).content
        with client.websocket_connect("/v1/stream?format=overlay") as ws:
            ws.send_bytes(stream_frame(0, bodies[0]))
            header, payload = stream_answer(ws)
            assert header["format"] == "overlay" and payload == overlay
        state = client.app.state.serve
        assert state.in_flight == 0 and state.pixels_in_flight == 0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "pixelwise.serve.access"]
    streams = [line for line in lines if line["path"] == "/v1/stream"]
    assert [(s["method"], s["frames_in"], s["answered"], s["dropped"]) for s in streams] == [
        ("WEBSOCKET", 4, 4, 0),
        ("WEBSOCKET", 1, 1, 0),
    ]
    assert streams[0]["bytes_in"] == sum(len(stream_frame(0, b)) for b in bodies) + 2  # seq 100: 2 more digits


def test_a_burst_of_frames_is_dropped_to_the_newest(run, images):
    """While a frame is processed, newer frames replace each other in a one-frame slot: a burst of 10 gets
    2 answers (the first, then the newest), the dropped count says how many were skipped, and the next frame
    is answered as usual."""
    body = images[0].read_bytes()
    with client_for(run) as client:
        state = client.app.state.serve
        with client.websocket_connect("/v1/stream") as ws:
            with Gate(state.segmenter) as gate:
                ws.send_bytes(stream_frame(0, body))
                wait_for(gate.entered.is_set)
                for seq in range(1, 10):
                    ws.send_bytes(stream_frame(seq, body))
                time.sleep(1.0)  # the server reads the burst while the network is held
                assert state.in_flight == 1, "one frame in progress, one waiting: never a queue"
                gate.open.set()
                answers = [stream_answer(ws)[0] for _ in range(2)]
            assert [a["seq"] for a in answers] == [0, 9]
            assert answers[1]["dropped"] == 8 and answers[1]["wait_ms"] > 0
            assert gate.batches == [1, 1]
            ws.send_bytes(stream_frame(10, body))
            header, payload = stream_answer(ws)
            assert header["seq"] == 10 and header["dropped"] == 8 and payload


def test_stream_errors_are_one_line_json_and_abuse_closes_the_socket(run, images):
    body = images[0].read_bytes()
    with client_for(run, max_body_mb=0.05, max_pixels=250_000) as client:
        with client.websocket_connect("/v1/stream") as ws:
            # A frame's own problem: an error with its seq and POST's status; the stream goes on.
            ws.send_bytes(stream_frame(1, b"hello, this is text"))
            error, _ = stream_answer(ws)
            assert error["seq"] == 1 and error["status"] == 415 and "not an image" in error["error"]
            ws.send_bytes(stream_frame(2, png_header_only(10_000, 10_000)))
            error, _ = stream_answer(ws)
            assert error["seq"] == 2 and error["status"] == 413 and "--max-pixels" in error["error"]
            ws.send_bytes(stream_frame(3, b""))
            assert stream_answer(ws)[0]["status"] == 400
            ws.send_bytes(stream_frame(4, body))
            assert stream_answer(ws)[0]["seq"] == 4
            # Over --max-body-mb: the error, then the socket closed (1009).
            ws.send_bytes(stream_frame(5, b"\0" * 60_000))
            error, _ = stream_answer(ws)
            assert error["status"] == 413 and "--max-body-mb" in error["error"] and "60,000" in error["error"]
            assert stream_answer(ws)[0] == {"close": 1009}
        for message, code, words in [
            ({"text": "hello"}, 1003, "binary"),
            ({"bytes": b"\0\0\0\x02{}" + body}, 1008, "seq"),
            ({"bytes": b"\0\0\x10\0{}"}, 1008, "header length"),
            ({"bytes": b'\0\0\0\x0b{"seq": -1}'}, 1008, "seq"),
            ({"bytes": b"\0\0"}, 1008, "shorter"),
        ]:
            with client.websocket_connect("/v1/stream") as ws:
                ws.send_bytes(message["bytes"]) if "bytes" in message else ws.send_text(message["text"])
                error, _ = stream_answer(ws)
                assert words in error["error"], error
                assert stream_answer(ws)[0] == {"close": code}
        with client.websocket_connect("/v1/stream?format=jpeg") as ws:
            error, _ = stream_answer(ws)
            assert "unknown format" in error["error"] and stream_answer(ws)[0] == {"close": 1008}
        assert client.get("/healthz").json()["in_progress"] == 0


def test_stream_refuses_other_sites_and_closes_when_idle(run, images):
    from starlette.websockets import WebSocketDisconnect

    with client_for(run, timeout=1.0) as client:
        with pytest.raises(WebSocketDisconnect) as refused:
            with client.websocket_connect("/v1/stream", headers={"origin": "http://evil.example"}):
                pass
        assert refused.value.code == 1008
        with client.websocket_connect("/v1/stream", headers={"origin": "http://testserver"}) as ws:
            ws.send_bytes(stream_frame(0, images[0].read_bytes()))
            assert stream_answer(ws)[0]["seq"] == 0
            error, _ = stream_answer(ws)  # then nothing for --timeout 1 s
            assert error["status"] == 408 and "--timeout" in error["error"]
            assert stream_answer(ws)[0] == {"close": 1001}
    with client_for(run, allowed_hosts=("127.0.0.1",)) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("/v1/stream"):  # Host: testserver
                pass
        with client.websocket_connect("/v1/stream", headers={"host": "127.0.0.1:8000"}) as ws:
            ws.send_bytes(stream_frame(0, images[0].read_bytes()))
            assert stream_answer(ws)[0]["seq"] == 0


def test_stream_count_is_bounded_by_max_queue(run):
    with client_for(run, max_queue=1) as client:
        with client.websocket_connect("/v1/stream"):
            with client.websocket_connect("/v1/stream") as second:
                error, _ = stream_answer(second)
                assert error["status"] == 503 and "--max-queue" in error["error"]
                assert stream_answer(second)[0] == {"close": 1013}


def test_stream_under_uvicorn_answers_and_refuses_other_origins(real_server, images):
    """Through uvicorn's own WebSocket protocol: a frame answered with POST's bytes; a handshake from another
    site's page refused (HTTP 403) before any frame is read."""
    import urllib.request

    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    body = jpeg_of(images[1])
    base = f"127.0.0.1:{real_server}"
    request = urllib.request.Request(f"http://{base}/v1/segment", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        posted = answer.read()
    with connect(f"ws://{base}/v1/stream", origin=f"http://{base}", open_timeout=10) as ws:
        ws.send(stream_frame(3, body))
        data = ws.recv(timeout=30)
        size = int.from_bytes(data[:4], "big")
        assert json.loads(data[4 : 4 + size])["seq"] == 3 and data[4 + size :] == posted
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://{base}/v1/stream", origin="http://evil.example", open_timeout=10)
    assert refused.value.response.status_code == 403
