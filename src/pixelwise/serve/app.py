"""The HTTP API and the web page of ``pixelwise serve``: :func:`create_app` builds the FastAPI app.

Endpoints (every error is ``{"error": "<one line>"}`` with its status):

- ``POST /v1/segment?format=png|json|overlay|instances|cutout``: the request body is the image file's bytes.
  ``png`` (the default): the mask at the input's size, byte for byte what ``pixelwise predict`` writes (binary
  runs 0/255 greyscale; multi-class runs a palette PNG: pixel values = class indices, palette = class colours);
  ``overlay``: predict's overlay PNG (binary: the contour; multi-class: class colours and a legend);
  ``json``: size, classes with names and pixel counts, threshold, instances; ``instances`` (instance runs):
  the objects as COCO results; ``cutout`` (binary semantic runs): ``predict --cutout``'s RGBA PNG (alpha: the
  probability refined by the guided filter, :meth:`Segmentation.cutout`), or with ``&background=blur|#rrggbb|
  r,g,b|name`` (``#`` sent as ``%23``) ``predict --background``'s RGB PNG; image backgrounds are refused (400),
  and so are cutouts of multi-class and instance runs, before the body is read. A cutout's pixels count 4× in
  ``--max-pixels-in-flight`` (it holds the probabilities and the alpha while it is made).
  400 empty body, unknown format or a format this run does not answer, 413 body over ``--max-body-mb``
  (counted while it streams in, whatever Content-Length says) or image over ``--max-pixels`` (read from its
  header, before decoding), 415 not an image the server reads, 503 ``--max-queue`` requests (or
  ``--max-pixels-in-flight`` decoded pixels) already in progress, 504 no result within ``--timeout`` seconds,
  408 body not received within it.
- ``WS /v1/stream?format=png|...``: the live camera. The client sends frames (a small JSON header with a
  sequence number, then the JPEG's bytes); the server answers each frame it processes with its ``seq``, its
  processing time and ``POST /v1/segment``'s answer for the same image (the same prepare → batcher → render
  path), at the rate it sustains: a frame that arrives while another is processed waits in a one-frame slot,
  and a newer one replaces it (dropped). The wire protocol, the errors and the close codes:
  :mod:`pixelwise.serve.stream`. Same-origin pages only (the ``Origin`` header, when sent, must name the
  ``Host``), at most ``--max-queue`` streams.
- ``GET /v1/model``: the run (name, classes, input size, threshold, training data and best validation Dice, the
  ``formats`` it answers).
- ``POST /v1/reload`` with ``{"run": "PATH"}`` (``Content-Type: application/json``): loads that run in a
  thread, then swaps it in at once; requests already running finish with the run they started with.
- ``GET /healthz``; ``GET /``: the web page (``static/``), under a strict Content-Security-Policy.

Work is split so the event loop never waits on a computation: decoding and resizing the upload, and
encoding the answer, run in a small thread pool; the network runs on one inference thread
(:class:`~pixelwise.serve.batcher.Batcher`) that batches waiting images. Each request logs one JSON line
(method, path, status, bytes in and out, latency) to the ``pixelwise.serve.access`` logger.

:func:`create_app` reads top to bottom: the state (settings checked, run loaded), the middleware, the error
handlers, then the routes: page, model info, segment, stream, reload. Answer formats are rows of :data:`FORMATS`
(with their query parameters and which runs they refuse), shared by the POST endpoint and the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixelwise.api import Segmentation, Segmenter, load
from pixelwise.data.classes import page_colours
from pixelwise.data.imageio import ImageTooLarge, decode_image
from pixelwise.errors import PixelwiseError
from pixelwise.fileio import encode_png, first_line, json_safe
from pixelwise.masks.cutout import BINARY_ONLY, IMAGE_SUFFIXES, Background, parse_colour
from pixelwise.masks.overlay import hex_colour
from pixelwise.serve.batcher import Batcher
from pixelwise.serve.settings import MIB, ServeSettings
from pixelwise.serve.stream import CLOSE_POLICY, CLOSE_TRY_LATER, FrameError, error_message, run_stream

#: Script, styles, images and requests from this server only; no inline script or style, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
RELOAD_BODY_LIMIT = 64 * 1024

access_log = logging.getLogger("pixelwise.serve.access")
log = logging.getLogger("pixelwise.serve")


@dataclass(frozen=True)
class AnswerFormat:
    """One ``format`` of ``POST /v1/segment`` (and of ``WS /v1/stream``): how its answer is made.

    Attributes:
        media_type: the answer's Content-Type.
        keeps_image: the decoded upload is kept until the answer is encoded (answers drawn on the image).
        encode: ``(segmenter, segmentation, settings, options) -> bytes``, the answer; runs on a worker thread.
        check: ``(segmenter, query parameters) -> options``, before the body is read (and per stream frame):
            raises :class:`ApiError` 400 when the run cannot give this answer or a parameter is wrong; what it
            returns is ``encode``'s ``options``. None: every run, no parameters.
        params: the query parameters it reads besides ``format`` (given to another format: a 400).
        keeps_probabilities: the probabilities at the image's size are kept for ``encode`` (cutouts).
        pixel_weight: each pixel counts this many times towards ``--max-pixels-in-flight``, for answers that hold
            more than the ~4 bytes a pixel of the mask formats while they are made.
    """

    media_type: str
    keeps_image: bool
    encode: Callable[[Segmenter, Segmentation, ServeSettings, Any], bytes]
    check: Callable[[Segmenter, Mapping[str, str]], Any] | None = None
    params: tuple[str, ...] = ()
    keeps_probabilities: bool = False
    pixel_weight: int = 1


def _json_answer(segmenter: Segmenter, result: Segmentation, settings: ServeSettings, options=None) -> bytes:
    """``format=json``: size, classes with names and pixel counts, threshold, instances."""
    answer = {
        "model": segmenter.run.name,
        **result.summary(),
        "instances": result.instances("upload", min_area=settings.min_area),
    }
    return json.dumps(json_safe(answer), allow_nan=False).encode()


def _is_instance_run(segmenter: Segmenter) -> bool:
    return segmenter.config.record.task == "instances"


def _check_instances(segmenter: Segmenter, query: Mapping[str, str]) -> None:
    if not _is_instance_run(segmenter):
        raise ApiError(
            400, f"format=instances: run {segmenter.run.name} is not an instance run (--task instances); use json"
        )


def _instances_answer(segmenter: Segmenter, result: Segmentation, settings: ServeSettings, options=None) -> bytes:
    """``format=instances``: the objects as COCO results (RLE masks, ``score``, ``category_id`` = object class,
    ``image_id`` 1); instance runs only (``--task instances``)."""
    if result.objects is None:
        raise PixelwiseError(
            f"format=instances: run {segmenter.run.name} is not an instance run (--task instances); use json"
        )
    min_area = settings.min_area or 0
    answer = [entry for entry in result.objects.coco(1) if entry["area"] >= min_area]
    return json.dumps(json_safe(answer), allow_nan=False).encode()


#: What ``&background=`` accepts, for the errors that refuse anything else.
BACKGROUND_HELP = "use blur, #rrggbb (written %23rrggbb in a URL), r,g,b (0..255) or a colour name such as white"


def http_background(spec: str | None) -> Background | None:
    """``&background=``: ``blur`` or a colour (:func:`~pixelwise.masks.cutout.parse_colour`); None: absent.

    Image backgrounds (``predict --background IMAGE``) are refused: over HTTP a path would name a file on the
    server, and an upload of a second image is not part of this endpoint.

    Raises:
        ApiError: 400 with one line (an image file, an empty value, anything that is not a colour).
    """
    if spec is None:
        return None
    text = spec.strip()
    if not text:
        raise ApiError(400, f"background is empty (a bare # in a URL starts its fragment): {BACKGROUND_HELP}")
    if text.lower() == "blur":
        return Background("blur")
    try:
        return Background("colour", colour=parse_colour(text))
    except PixelwiseError:
        pass
    shown = text if len(text) <= 60 else text[:57] + "..."
    if "/" in text or "\\" in text or Path(text).suffix.lower() in IMAGE_SUFFIXES:
        raise ApiError(
            400,
            f"background {shown!r}: image backgrounds are not accepted over HTTP (pixelwise predict --background "
            f"IMAGE takes them); {BACKGROUND_HELP}",
        )
    raise ApiError(400, f"background {shown!r} is not blur or a colour: {BACKGROUND_HELP}")


def _check_cutout(segmenter: Segmenter, query: Mapping[str, str]) -> Background | None:
    """``format=cutout``: binary semantic runs only; ``&background=`` parsed (:func:`http_background`)."""
    name = segmenter.run.name
    if _is_instance_run(segmenter):
        raise ApiError(
            400,
            f"format=cutout: {BINARY_ONLY}; run {name} is an instance run (--task instances): "
            f"use format=instances or overlay",
        )
    if not segmenter.class_map.is_binary:
        raise ApiError(
            400,
            f"format=cutout: {BINARY_ONLY}; run {name} has {segmenter.num_classes} classes "
            f"({', '.join(segmenter.class_names)}): use format=png or overlay",
        )
    return http_background(query.get("background"))


def _cutout_answer(segmenter: Segmenter, result: Segmentation, settings: ServeSettings, background) -> bytes:
    """``format=cutout``: ``predict --cutout``'s RGBA PNG (:meth:`Segmentation.cutout`: the guided-filter alpha),
    or with a ``background`` ``predict --background``'s RGB PNG (:meth:`Segmentation.replace_background`)."""
    picture = result.cutout() if background is None else result.replace_background(background)
    return encode_png(picture)


#: ``?format=`` name → its answer, one row each (a new format is one more row); ``png`` is the default.
FORMATS = {
    "png": AnswerFormat("image/png", False, lambda segmenter, result, settings, options: result.png_bytes()),
    "json": AnswerFormat("application/json", False, _json_answer),
    "overlay": AnswerFormat("image/png", True, lambda segmenter, result, settings, options: result.overlay_png_bytes()),
    "instances": AnswerFormat("application/json", False, _instances_answer, check=_check_instances),
    # Held while made: the image, the 2×H×W float32 probabilities, the alpha and the guided filter's (blur's)
    # arrays: tens of bytes a pixel (measured ~30 for the alpha, ~50 with blur, at 2000×1500).
    "cutout": AnswerFormat(
        "image/png",
        True,
        _cutout_answer,
        check=_check_cutout,
        params=("background",),
        keeps_probabilities=True,
        pixel_weight=4,
    ),
}
DEFAULT_FORMAT = "png"


def answer_options(fmt: str, query: Mapping[str, str], segmenter: Segmenter) -> Any:
    """A request's ``format`` and its parameters checked for ``segmenter``'s run (:attr:`AnswerFormat.check`):
    the options its ``encode`` takes.

    Raises:
        ApiError: 400 with one line: an unknown format, a parameter of another format, a run or parameter the
            format refuses.
    """
    if fmt not in FORMATS:
        raise ApiError(400, f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    answer = FORMATS[fmt]
    for name, owner in FORMAT_PARAMS.items():
        if name in query and name not in answer.params:
            raise ApiError(400, f"{name}= goes with format={owner}, not format={fmt}")
    return answer.check(segmenter, query) if answer.check else None


#: Each format's own query parameter → the format it belongs to.
FORMAT_PARAMS = {name: fmt for fmt, answer in FORMATS.items() for name in answer.params}


def run_formats(segmenter: Segmenter) -> list[str]:
    """The formats ``segmenter``'s run answers (``GET /v1/model``'s ``formats``: the page offers only these)."""
    answered = []
    for fmt in FORMATS:
        try:
            answer_options(fmt, {}, segmenter)
        except ApiError:
            continue
        answered.append(fmt)
    return answered


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass
class Prepared:
    """An upload after decoding: the network's input and what the answer needs of the original."""

    x: np.ndarray  # uint8 3×S×S (squashed runs) or the H×W×3 image (tiled runs): Segmenter.network_inputs
    size: tuple[int, int]  # original (H, W)
    image: np.ndarray | None  # the RGB original, kept only for overlays


class ServeState:
    """What the endpoints share: the current model, the batcher, the worker pool and the counters."""

    def __init__(self, segmenter: Segmenter, settings: ServeSettings):
        self.segmenter = segmenter
        self.settings = settings
        self.preparing = 0  # uploads being decoded: the batcher waits for them (up to --max-wait-ms)
        self.batcher = Batcher(settings.max_batch, settings.max_wait_ms / 1000.0, lambda: self.preparing > 0)
        self.pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="pixelwise-serve")
        self.in_flight = 0
        self.pixels_in_flight = 0  # decoded pixels of the requests past decoding (bounded: max_pixels_in_flight)
        self.loaded_at = time.time()
        self._reload_lock: asyncio.Lock | None = None

    @property
    def reload_lock(self) -> asyncio.Lock:
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        return self._reload_lock

    def close(self) -> None:
        self.batcher.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one segmentation, in three steps ------------------------------------------------------------------
    async def segment(self, segmenter: Segmenter, body: bytes, fmt: str, options: Any = None) -> tuple[bytes, str]:
        """``body`` segmented by ``segmenter`` and answered in ``fmt`` with its checked ``options``
        (:func:`answer_options`): ``(answer bytes, media type)``."""
        answer = FORMATS[fmt]
        record = segmenter.config.record
        # Instance runs decode objects from the probabilities; refine_edges runs refine them on the image.
        keeps_probabilities = answer.keeps_probabilities or record.needs_probabilities
        keeps_image = answer.keeps_image or record.refine_edges
        loop = asyncio.get_running_loop()
        self.preparing += 1
        try:
            prepared = await loop.run_in_executor(self.pool, self.prepare, segmenter, body, keeps_image)
        finally:
            self.preparing -= 1
        # A refine_edges run holds what a cutout holds (image, probabilities, the filter's arrays) for every answer;
        # multi-class, K probability planes and K filtered ones.
        weight = answer.pixel_weight
        if record.refine_edges:
            weight = max(weight, FORMATS["cutout"].pixel_weight, record.num_classes)
        pixels = prepared.size[0] * prepared.size[1] * weight
        limit = self.settings.max_pixels_in_flight
        if self.pixels_in_flight and self.pixels_in_flight + pixels > limit:
            raise ApiError(
                503,
                f"server busy: images of {self.pixels_in_flight:,} pixels in progress, this one"
                f"{f' (a {fmt}: its pixels count {weight}×)' if weight > 1 else ''} "
                f"would pass the limit of {limit:,} (--max-pixels-in-flight); retry shortly",
                headers={"Retry-After": "1"},
            )
        # Held from here to the answer: the original (overlays, cutouts), the labels (cutouts: the probabilities)
        # at its size, the encoded answer.
        self.pixels_in_flight += pixels
        try:
            labels, probabilities = await self.batcher.submit(segmenter, prepared.x, prepared.size, keeps_probabilities)
            return await loop.run_in_executor(
                self.pool, self.render, segmenter, labels, prepared.image, fmt, probabilities, options
            )
        finally:
            self.pixels_in_flight -= pixels

    def prepare(self, segmenter: Segmenter, body: bytes, keep_image: bool) -> Prepared:
        """Decode (pixel count checked from the header first) and resize to the run's size; worker thread."""
        limit = self.settings.max_pixels
        try:
            rgb = decode_image(body, "upload", limit)
        except ImageTooLarge as error:
            size = (
                f"{error.width}×{error.height} = {error.width * error.height:,} pixels" if error.width else "too large"
            )
            raise ApiError(
                413, f"image is {size}, above this server's limit of {limit:,} pixels (--max-pixels); downscale it"
            ) from None
        except PixelwiseError as error:
            raise ApiError(415, _unsupported(error)) from None
        # Squashed runs: uint8 3×S×S at the run's size; tiled runs: the image itself (tiled on the inference thread).
        x = np.asarray(segmenter.network_inputs([rgb])[0])
        return Prepared(x, rgb.shape[:2], rgb if keep_image else None)

    def render(
        self,
        segmenter: Segmenter,
        labels: np.ndarray,
        image: np.ndarray | None,
        fmt: str,
        probabilities: np.ndarray | None = None,
        options: Any = None,
    ) -> tuple[bytes, str]:
        """Post-process and encode the answer in ``fmt`` (:data:`FORMATS`) with its ``options``; worker thread."""
        answer = FORMATS[fmt]
        result = segmenter.finish(labels, image, probabilities)
        return answer.encode(segmenter, result, self.settings, options), answer.media_type


def _unsupported(error: PixelwiseError) -> str:
    """Pillow's reason for refusing an upload, in one line without object addresses."""
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the upload", first_line(error))
    text = text.removeprefix("upload: ").split("; re-", 1)[0]
    return f"not an image this server reads ({text}); send a PNG, JPEG, BMP, TIFF or WebP file"


def model_info(segmenter: Segmenter, settings: ServeSettings) -> dict:
    """What ``GET /v1/model`` answers: the run, its classes and colours, input size, threshold, training."""
    recipe, record = segmenter.config.recipe, segmenter.config.record
    class_map = segmenter.class_map
    colours = page_colours(class_map)
    classes = [
        {"index": i, "name": name, "color": hex_colour(colours[i]) if i else None}
        for i, name in enumerate(segmenter.class_names)
    ]
    return json_safe(
        {
            "name": segmenter.run.name,
            "model": recipe.model,
            "engine": segmenter.engine,
            "precision": segmenter.precision,
            "tta": segmenter.tta,
            "device": segmenter.device,
            "num_classes": segmenter.num_classes,
            "classes": classes,
            "input_size": segmenter.size,
            "input_fit": segmenter.fit,
            "threshold": segmenter.threshold,
            "mask_png": "0/255" if class_map.is_binary else "palette: class indices, class colours",
            "formats": run_formats(segmenter),
            "training": {
                "data": Path(recipe.data).name if recipe.data else "embedded synthetic set",
                "best_val_dice": record.best_val_dice,
                "best_epoch": record.best_epoch,
                "kept_epoch": record.kept_epoch,
                "train_seconds": record.train_seconds,
                "folds": recipe.folds,
            },
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_pixels": settings.max_pixels,
                "max_batch": settings.max_batch,
                "timeout_s": settings.timeout,
            },
        }
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as more than ``limit`` bytes arrived (a declared
    Content-Length above the limit is refused before reading; a smaller one is not trusted)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, _too_large(int(declared), limit))
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, _too_large(total, limit, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (
        f"request body is {'over ' if at_least else ''}{size / MIB:.1f} MiB, above this server's limit of "
        f"{limit / MIB:g} MiB (--max-body-mb)"
    )


def create_app(run: str | Path, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI app serving ``run``; the run is loaded now, so a bad run fails before any port is bound.

    Raises:
        PixelwiseError: bad settings, or a run that cannot be loaded.
    """
    state = _serve_state(run, settings)
    app = FastAPI(title="pixelwise", lifespan=_closing(state), docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    _add_middleware(app, settings)
    _add_error_handlers(app)
    _add_page_routes(app)
    _add_model_routes(app, state)
    _add_segment_route(app, state)
    _add_stream_route(app, state)
    _add_reload_route(app, state)
    return app


def _serve_state(run: str | Path, settings: ServeSettings) -> ServeState:
    """The settings checked, then the run loaded: what the endpoints share."""
    settings.validate()
    return ServeState(load_segmenter(run, settings), settings)


def _closing(state: ServeState):
    """The app's lifespan: nothing to start (the run is loaded already); the batcher and pool closed at exit."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    return lifespan


def _add_middleware(app: FastAPI, settings: ServeSettings) -> None:
    """Security headers on every answer, the ``--allowed-host`` check and one access-log line per request."""
    app.add_middleware(AccessLogMiddleware, allowed_hosts=settings.allowed_hosts)


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answered as ``{"error": "<one line>"}`` with its status; unexpected ones logged."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = {
            404: f"not found: {request.url.path}",
            405: f"method {request.method} not allowed on {request.url.path}",
        }.get(error.status_code, str(error.detail))
        return JSONResponse({"error": message}, error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return JSONResponse({"error": first_line(error)}, 400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": f"internal error ({type(error).__name__}); see the server log"}, 500)


def _add_page_routes(app: FastAPI) -> None:
    """``GET /`` and ``GET /static/{name}``: the web page, read once now."""
    page = {
        name: (resources.files("pixelwise.serve") / "static" / name).read_bytes() for name in ("index.html", *STATIC)
    }

    @app.get("/", include_in_schema=False)
    async def index():
        return Response(
            page["index.html"], media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"}
        )

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC:
            raise ApiError(404, f"not found: /static/{name}")
        return Response(page[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})


def _add_model_routes(app: FastAPI, state: ServeState) -> None:
    """``GET /healthz`` (the run, requests in progress, images waiting) and ``GET /v1/model`` (:func:`model_info`)."""

    @app.get("/healthz")
    async def healthz():
        return {
            "status": "ok",
            "model": state.segmenter.run.name,
            "in_progress": state.in_flight,
            "pixels_in_flight": state.pixels_in_flight,
            "waiting_for_network": state.batcher.depth,
        }

    @app.get("/v1/model")
    async def model():
        return model_info(state.segmenter, state.settings)


def _add_segment_route(app: FastAPI, state: ServeState) -> None:
    """``POST /v1/segment?format=...``: the limits (format, queue, body size, time), then
    :meth:`ServeState.segment`."""
    settings = state.settings

    @app.post("/v1/segment")
    async def segment(request: Request):
        fmt = request.query_params.get("format", DEFAULT_FORMAT)
        segmenter = state.segmenter  # this request's run, even if a reload swaps it meanwhile
        options = answer_options(fmt, request.query_params, segmenter)  # 400s before the body is read
        if state.in_flight >= settings.max_queue:
            raise ApiError(
                503,
                f"server busy: {state.in_flight} requests in progress (--max-queue "
                f"{settings.max_queue}); retry shortly",
                headers={"Retry-After": "1"},
            )
        state.in_flight += 1
        try:
            try:
                body = await asyncio.wait_for(read_body(request, settings.max_body_bytes), settings.timeout)
            except asyncio.TimeoutError:
                raise ApiError(408, f"request body not received within {settings.timeout:g} s (--timeout)") from None
            if not body:
                raise ApiError(400, "empty request body: send the image file's bytes as the body")
            try:
                content, media_type = await asyncio.wait_for(
                    state.segment(segmenter, body, fmt, options), settings.timeout
                )
            except asyncio.TimeoutError:
                raise ApiError(
                    504,
                    f"no result within {settings.timeout:g} s (--timeout): the server is "
                    f"overloaded or the image too large",
                ) from None
        finally:
            state.in_flight -= 1
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-store"})


def _add_stream_route(app: FastAPI, state: ServeState) -> None:
    """``WS /v1/stream?format=...``: the live camera (:mod:`pixelwise.serve.stream`). Each frame takes the POST
    endpoint's path (:meth:`ServeState.segment`: the same limits, the batcher, the same answer bytes) and counts
    as a request in progress while it runs; one access-log line per stream when it ends."""
    settings = state.settings
    streams = {"open": 0}

    async def process(fmt: str, query: Mapping[str, str], image: bytes) -> tuple[bytes, str]:
        if not image:
            raise FrameError(400, "empty frame: send the image file's bytes after the header")
        if state.in_flight >= settings.max_queue:
            raise FrameError(503, f"server busy: {state.in_flight} requests in progress (--max-queue); frame skipped")
        state.in_flight += 1
        try:
            segmenter = state.segmenter  # checked again per frame: a reload may bring a run that refuses fmt
            options = answer_options(fmt, query, segmenter)
            return await asyncio.wait_for(state.segment(segmenter, image, fmt, options), settings.timeout)
        except ApiError as error:
            raise FrameError(error.status, error.message) from None
        except asyncio.TimeoutError:
            raise FrameError(504, f"no result within {settings.timeout:g} s (--timeout)") from None
        except Exception as error:  # the stream goes on; the cause is in the server log
            log.error("internal error on a /v1/stream frame", exc_info=error)
            raise FrameError(500, f"internal error ({type(error).__name__}); see the server log") from None
        finally:
            state.in_flight -= 1

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket):
        started = time.perf_counter()
        refusal = _stream_refusal(websocket.scope, settings)
        if refusal:  # before the handshake completes: the browser sees HTTP 403
            await websocket.close(CLOSE_POLICY)
            _log_stream(websocket.scope, started, status=403, refused=refusal)
            return
        await websocket.accept()
        query = websocket.query_params
        fmt = query.get("format", DEFAULT_FORMAT)
        try:  # an unknown format, or one this run refuses (cutouts of a multi-class run, a bad background)
            answer_options(fmt, query, state.segmenter)
            refused = None
        except ApiError as error:
            refused = (CLOSE_POLICY, error.status, error.message)
        if refused or streams["open"] >= settings.max_queue:
            code, status, message = refused or (
                CLOSE_TRY_LATER,
                503,
                f"server busy: {streams['open']} streams open (--max-queue); retry shortly",
            )
            await websocket.send_text(error_message(message, status))
            await websocket.close(code)
            _log_stream(websocket.scope, started, status=101, refused=message)
            return
        streams["open"] += 1
        try:
            stats = await run_stream(
                websocket,
                lambda image: process(fmt, query, image),
                fmt,
                max_image_bytes=settings.max_body_bytes,
                idle_timeout=settings.timeout,
            )
        finally:
            streams["open"] -= 1
        _log_stream(websocket.scope, started, status=101, stats=stats)


def _stream_refusal(scope, settings: ServeSettings) -> str | None:
    """Why a WebSocket handshake is refused, or None: a Host outside ``--allowed-host`` (DNS rebinding), or an
    ``Origin`` (sent by every browser) naming another site than the Host: browsers let any page open a
    WebSocket anywhere, so this check is what keeps other sites' pages off the stream."""
    headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
    if settings.allowed_hosts is not None and _host(scope) not in {h.lower() for h in settings.allowed_hosts}:
        return "unexpected Host header"
    origin = headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1].rstrip("/").lower() != headers.get("host", "").lower():
        return f"cross-origin WebSocket from {origin[:100]}"
    return None


def _log_stream(scope, started: float, status: int, stats=None, refused: str | None = None) -> None:
    """The access-log line of one stream: frames in, answered, dropped, bytes, how long it was open."""
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "method": "WEBSOCKET",
        "path": scope.get("path"),
        "status": status,
        "bytes_in": stats.bytes_in if stats else 0,
        "bytes_out": stats.bytes_out if stats else 0,
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
        "client": (scope.get("client") or [None])[0],
    }
    if stats:
        line.update(
            frames_in=stats.frames_in,
            answered=stats.answered,
            dropped=stats.dropped,
            errors=stats.errors,
            close_code=stats.close_code,
        )
    if refused:
        line["refused"] = refused
    access_log.info(json.dumps(line))


def _add_reload_route(app: FastAPI, state: ServeState) -> None:
    """``POST /v1/reload`` with ``{"run": "PATH"}``: load that run on a thread, then swap it in at once."""
    settings = state.settings

    @app.post("/v1/reload")
    async def reload(request: Request):
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, 'send {"run": "PATH"} with Content-Type: application/json')
        body = await read_body(request, RELOAD_BODY_LIMIT)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None
        run_path = payload.get("run") if isinstance(payload, dict) else None
        if not isinstance(run_path, str) or not run_path.strip():
            raise ApiError(400, 'body must be JSON like {"run": "runs/my-run"}')
        async with state.reload_lock:
            try:
                segmenter = await asyncio.to_thread(load_segmenter, Path(run_path), settings)
            except PixelwiseError as error:
                raise ApiError(400, first_line(error)) from None
            state.segmenter = segmenter  # one assignment: the next request gets the new run
            state.loaded_at = time.time()
        log.info("reloaded %s", segmenter.run)
        return model_info(segmenter, settings)


def load_segmenter(run: str | Path, settings: ServeSettings) -> Segmenter:
    """Load ``run`` on a short-lived thread of its own, and wait for it.

    Loading runs parallel torch ops, and libgomp (torch's OpenMP) keeps a pool of worker threads for every
    thread that ever ran one, for as long as that thread lives. With two pools (say the event loop's and
    the inference thread's) more OpenMP threads exist than cores on a 2-core machine, libgomp stops
    spinning between parallel regions, and the network on the inference thread ran 1.3-1.6× slower
    (measured: 70-90 ms instead of 56-59 ms for the default model at 256²). A thread that ends takes its
    pool with it, so only the inference thread keeps one.
    """
    s, result = settings, {}

    def target() -> None:
        try:
            result["segmenter"] = load(
                Path(run),
                engine=s.engine,
                device=s.device,
                precision=s.precision,
                tta=s.tta,
                fill_holes=s.fill_holes,
                keep_largest=s.keep_largest,
                min_area=s.min_area,
            )
        except BaseException as error:  # handed to the caller's thread
            result["error"] = error

    thread = threading.Thread(target=target, name="pixelwise-load")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["segmenter"]


class AccessLogMiddleware:
    """Pure ASGI: security headers on every answer, an optional Host check, one JSON log line per request."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None):
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        record = {"status": None, "bytes_in": 0, "bytes_out": 0}

        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                record["bytes_in"] += len(message.get("body", b""))
            return message

        async def counting_send(message):
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            elif message["type"] == "http.response.body":
                record["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            if self.allowed_hosts is not None and _host(scope) not in self.allowed_hosts:
                response = JSONResponse({"error": "unexpected Host header: use the address the server printed"}, 400)
                await response(scope, counting_receive, counting_send)
            else:
                await self.app(scope, counting_receive, counting_send)
        finally:
            access_log.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": record["status"] or 500,
                        "bytes_in": record["bytes_in"],
                        "bytes_out": record["bytes_out"],
                        "latency_ms": round((time.perf_counter() - started) * 1000.0, 2),
                        "client": (scope.get("client") or [None])[0],
                    }
                )
            )


def _host(scope) -> str:
    """The Host header's name without the port (``[::1]:8000`` → ``[::1]``)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = value.decode("latin-1").lower()
            return host.split("]")[0] + "]" if host.startswith("[") else host.split(":")[0]
    return ""
