"""Run the app with uvicorn on a socket bound here, so a taken port is a one-line error."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path

from pixelwise.errors import PixelwiseError
from pixelwise.fileio import first_line
from pixelwise.serve.settings import ServeSettings

log = logging.getLogger(__name__)  # under pixelwise.serve: its lines go where setup_access_log sends them


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free port), ready for uvicorn.

    Raises:
        PixelwiseError: the address is unknown or cannot be bound (e.g. the port is taken).
    """
    if not 0 <= port <= 65535:
        raise PixelwiseError(f"--port {port}: use 0 to 65535 (0 picks a free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise PixelwiseError(f"--host {host}: unknown address ({first_line(error)})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise PixelwiseError(
            f"cannot listen on {host}:{port} ({error.strerror or first_line(error)}): "
            f"choose another --port or stop the program using it"
        ) from None
    sock.set_inheritable(True)
    return sock


def setup_access_log(stream=None) -> None:
    """JSON access lines (and the server's own messages) to ``stream`` (default stderr), unformatted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("pixelwise.serve.access", "pixelwise.serve"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run_server(run: Path, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load ``run``, bind ``host:port`` and serve until Ctrl+C / SIGTERM.

    Raises:
        PixelwiseError: bad settings, a run that cannot be loaded, an address that cannot be bound.
    """
    import uvicorn

    from pixelwise.serve.app import create_app

    loopback = is_loopback(host)
    if loopback and settings.allowed_hosts is None:
        # Only names of this machine in the Host header: a web page elsewhere cannot rebind its DNS here.
        from dataclasses import replace

        settings = replace(settings, allowed_hosts=("localhost", "127.0.0.1", "[::1]"))
    app = create_app(run, settings)
    segmenter = app.state.serve.segmenter
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host.strip('[]')}]" if ":" in host else host
    setup_access_log()
    log.info(
        f"serving {segmenter.run} ({segmenter.config.recipe.model}, {segmenter.engine} {segmenter.precision}, "
        f"batches of up to {settings.max_batch}) on http://{shown_host}:{bound_port}/  (Ctrl+C stops)"
    )
    if not loopback:
        log.warning(
            f"warning: listening on {host}: the server has no authentication; anyone who can reach "
            f"this address can segment images and reload runs"
        )
    uvicorn.Server(uvicorn_config(app, settings)).run(sockets=[sock])


def uvicorn_config(app, settings: ServeSettings):
    """uvicorn's settings for ``app``. Connections beyond ``--max-queue`` + 32 are answered 503 by uvicorn before
    the app sees them, so idle or slow clients cannot open connections without bound. WebSocket messages
    (``/v1/stream``'s frames) larger than ``--max-body-mb`` plus a margin are refused by uvicorn itself (1009)
    before they are buffered (smaller ones over the limit get the app's JSON error); no per-message deflate:
    the frames are JPEG and PNG, compressing them again only costs CPU."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.max_queue + 32,
        ws_max_size=settings.max_body_bytes + 64 * 1024,
        ws_per_message_deflate=False,
    )
