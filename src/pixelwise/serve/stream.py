"""The live camera stream of ``pixelwise serve``: ``WS /v1/stream``, its wire protocol and its frame loop.

Protocol (``ws://HOST:PORT/v1/stream?format=png``; ``format`` is any ``POST /v1/segment`` format, ``png`` by
default, with its parameters: ``?format=cutout&background=%2300ff00``). Every binary message, both ways, is one
frame::

    4 bytes   n, big-endian unsigned: the length of the JSON header (2 to 1024 bytes)
    n bytes   the header: a UTF-8 JSON object
    the rest  the payload

- client → server: header ``{"seq": 17}`` (an integer 0 to 2**53 - 1 the client picks, echoed back; more keys
  are ignored), payload the camera frame's image file bytes (JPEG, or any format ``POST /v1/segment`` reads).
- server → client, one per processed frame: header ``{"seq": 17, "format": "png", "media_type": "image/png",
  "server_ms": 21.4, "wait_ms": 0.3, "dropped": 2}``, payload ``POST /v1/segment?format=...``'s answer for
  the same image, byte for byte (``png``: the mask PNG). ``server_ms``: from taking the frame to the answer
  encoded (decode, resize, network, post-processing, encoding); ``wait_ms``: how long it waited for the
  frame before it; ``dropped``: frames of this stream dropped so far.
- server → client, a text message: one line of JSON ``{"error": "...", "status": 413, "seq": 17}`` (``status``:
  the HTTP status ``POST /v1/segment`` gives for the same problem). After a frame's error (not an image, over
  ``--max-pixels``, server busy, over ``--timeout``) the stream goes on; after a protocol error it is closed:

  ====  =====================================================================================================
  1003  a text message from the client (frames are binary)
  1008  a malformed frame (header length, JSON, ``seq``), an unknown ``format`` or one the run refuses (as
        ``POST /v1/segment``'s 400: a multi-class run's cutouts, a bad ``background``), a cross-origin or
        unexpected-Host page (refused before the handshake completes: no error message, HTTP 403)
  1009  a frame over ``--max-body-mb``
  1013  ``--max-queue`` streams already open
  1001  no frame for ``--timeout`` seconds
  ====  =====================================================================================================

Rate: the server answers at the rate it sustains. A frame that arrives while another is processed waits in
a one-frame slot; a newer one replaces it (the older is dropped and counted): at most one frame per stream
is processed and one waits, whatever the client sends, and the next one processed is always the newest. A
client that keeps one frame in flight (the page does) never has one dropped.

:func:`run_stream` is the frame loop: one task reads messages into the slot, the other processes and sends;
only that one sends, so a message and the close never race.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.websockets import WebSocketDisconnect

HEADER_LIMIT = 1024  # bytes of JSON header, either way
MAX_SEQ = 2**53 - 1  # the largest integer a JavaScript number holds exactly

CLOSE_NORMAL = 1000
CLOSE_IDLE = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013


class FrameError(Exception):
    """One frame could not be answered: sent as ``{"error", "status", "seq"}``; the stream goes on."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ProtocolError(Exception):
    """The client broke the protocol: the error is sent, then the socket closed with ``code``."""

    def __init__(self, code: int, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def pack_frame(header: dict, payload: bytes) -> bytes:
    """One binary message: the 4-byte header length, the compact JSON header, the payload."""
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return len(head).to_bytes(4, "big") + head + payload


def parse_frame(message: bytes, max_image_bytes: int) -> tuple[int, bytes]:
    """A client's binary message → ``(seq, image bytes)``.

    Raises:
        ProtocolError: malformed (1008) or an image over ``max_image_bytes`` (1009).
    """
    if len(message) < 4:
        raise ProtocolError(CLOSE_POLICY, "frame shorter than its 4-byte header length")
    size = int.from_bytes(message[:4], "big")
    if not 2 <= size <= HEADER_LIMIT or len(message) < 4 + size:
        raise ProtocolError(
            CLOSE_POLICY, f"frame header length {size}: must be 2 to {HEADER_LIMIT} bytes and within the message"
        )
    try:
        header = json.loads(message[4 : 4 + size])
    except (UnicodeDecodeError, ValueError):
        header = None
    seq = header.get("seq") if isinstance(header, dict) else None
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise ProtocolError(CLOSE_POLICY, 'frame header must be a JSON object like {"seq": 0} (an integer seq)')
    image = message[4 + size :]
    if len(image) > max_image_bytes:
        raise ProtocolError(
            CLOSE_TOO_BIG,
            f"frame {seq} is {len(image):,} bytes, above this server's limit of {max_image_bytes:,} (--max-body-mb)",
            status=413,
        )
    return seq, image


def error_message(message: str, status: int, seq: int | None = None) -> str:
    """The one-line JSON text message of an error."""
    answer: dict = {"error": message, "status": status}
    if seq is not None:
        answer["seq"] = seq
    return json.dumps(answer)


@dataclass
class Frame:
    seq: int
    image: bytes
    received: float  # time.perf_counter() when it arrived


@dataclass
class StreamStats:
    """What one stream did: the access log's line at its end."""

    frames_in: int = 0
    answered: int = 0
    errors: int = 0
    dropped: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    close_code: int = CLOSE_NORMAL
    started: float = field(default_factory=time.perf_counter)


class LatestFrame:
    """A one-frame slot on the event loop: :meth:`put` replaces (drops) the frame waiting, :meth:`take` waits."""

    def __init__(self, stats: StreamStats):
        self.stats = stats
        self.frame: Frame | None = None
        self.ended: ProtocolError | None | bool = False  # False: open; None: the client left; an error: abuse
        self._changed = asyncio.Event()

    def put(self, frame: Frame) -> None:
        if self.frame is not None:
            self.stats.dropped += 1
        self.frame = frame
        self._changed.set()

    def end(self, error: ProtocolError | None = None) -> None:
        self.ended = error
        self._changed.set()

    async def take(self, idle_timeout: float) -> Frame | None:
        """The newest frame (waiting up to ``idle_timeout`` s; :class:`asyncio.TimeoutError` past it), or None
        once the reader ended."""
        if self.frame is None and self.ended is False:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), idle_timeout)
        if self.ended is not False:
            return None
        frame, self.frame = self.frame, None
        return frame


async def _read_frames(websocket, slot: LatestFrame, max_image_bytes: int) -> None:
    """Receive messages into ``slot`` until the client leaves (``end()``) or breaks the protocol (``end(error)``)."""
    stats = slot.stats
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                stats.close_code = message.get("code") or CLOSE_NORMAL  # the client's own close
                slot.end()
                return
            data = message.get("bytes")
            if data is None:
                stats.bytes_in += len((message.get("text") or "").encode())
                raise ProtocolError(
                    CLOSE_UNSUPPORTED, "send frames as binary messages: 4-byte header length, JSON header, image"
                )
            stats.bytes_in += len(data)
            seq, image = parse_frame(data, max_image_bytes)
            stats.frames_in += 1
            slot.put(Frame(seq, image, time.perf_counter()))
    except ProtocolError as error:
        slot.end(error)
    except (WebSocketDisconnect, RuntimeError, OSError):  # the connection broke: nothing more can be read
        slot.end()


async def run_stream(
    websocket,
    process: Callable[[bytes], Awaitable[tuple[bytes, str]]],
    fmt: str,
    max_image_bytes: int,
    idle_timeout: float,
) -> StreamStats:
    """Answer an accepted WebSocket's frames with ``process(image) -> (payload, media type)`` until the client
    leaves, breaks the protocol or sends nothing for ``idle_timeout`` s; ``process`` raises :class:`FrameError`
    for a frame it cannot answer. Returns what the stream did."""
    stats = StreamStats()
    slot = LatestFrame(stats)
    reader = asyncio.create_task(_read_frames(websocket, slot, max_image_bytes))

    async def send_text(text: str) -> None:
        stats.bytes_out += len(text.encode())
        await websocket.send_text(text)

    try:
        while True:
            try:
                frame = await slot.take(idle_timeout)
            except asyncio.TimeoutError:
                stats.close_code = CLOSE_IDLE
                await send_text(error_message(f"no frame for {idle_timeout:g} s (--timeout): closing", 408))
                await websocket.close(CLOSE_IDLE)
                return stats
            if frame is None:
                break
            taken = time.perf_counter()
            try:
                payload, media_type = await process(frame.image)
            except FrameError as error:
                stats.errors += 1
                await send_text(error_message(error.message, error.status, frame.seq))
                continue
            header = {
                "seq": frame.seq,
                "format": fmt,
                "media_type": media_type,
                "server_ms": round((time.perf_counter() - taken) * 1000.0, 2),
                "wait_ms": round((taken - frame.received) * 1000.0, 2),
                "dropped": stats.dropped,
            }
            message = pack_frame(header, payload)
            stats.bytes_out += len(message)
            stats.answered += 1
            await websocket.send_bytes(message)
        if isinstance(slot.ended, ProtocolError):
            error = slot.ended
            stats.errors += 1
            stats.close_code = error.code
            await send_text(error_message(error.message, error.status))
            await websocket.close(error.code)
        return stats
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client went away while an answer was sent
        if slot.ended is not None:  # not a close the reader saw: the connection broke
            stats.close_code = 1006
        return stats
    finally:
        reader.cancel()
