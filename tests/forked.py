"""``pixelwise ARGS`` in a forked child of the test process: a real process (its own exit code, ``kill -9``,
files it leaves behind) without paying for a fresh interpreter.

A new ``python -m pixelwise train`` spends ~7 s importing torch, MONAI and torch._dynamo on the 2-core VM
(measured 2026-12-06) before its first step; the test worker has imported them already, and a fork inherits
them. The child runs the real console entry point ``main()`` with its own argv, environment, stdout and stderr.

Why a fork is safe here: the worker runs torch with one thread (``conftest.py``) and so does the child
(PIXELWISE_THREADS=1), so no OpenMP pool is inherited half-alive. Tests that need a cold start (a clean
``sys.modules``, the installed entry point) keep using ``subprocess``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback


def _child(args: list[str], env: dict, kill_at: str | None, kill_after: bool, out, err) -> int:
    """Runs in the child: become ``pixelwise ARGS`` and return its exit code (or die by SIGKILL at ``kill_at``)."""
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    if kill_at:
        _kill_at_nth_call(kill_at, kill_after)
    from pixelwise.cli import main

    sys.argv = ["pixelwise", *args]
    try:
        main()
        return 0
    except SystemExit as exit_:
        if exit_.code is None:
            return 0
        if isinstance(exit_.code, int):
            return exit_.code
        print(exit_.code, file=sys.stderr)
        return 1


def _kill_at_nth_call(where_nth: str, after: bool) -> None:
    """Patch ``module.function`` (``"module.function:N"``) so that its Nth call kills the process with SIGKILL
    (after the call completes when ``after``), leaving nothing a chance to clean up."""
    import importlib

    where, nth = where_nth.rsplit(":", 1)
    module_name, function_name = where.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, function_name)
    calls = {"n": 0}

    def killing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == int(nth):
            if after:
                original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, function_name, killing)


def import_once() -> None:
    """Import here, once, what every child would otherwise import again: the CLI, MONAI (losses) and
    torch._dynamo (which torch.optim imports on first use)."""
    import monai.losses  # noqa: F401
    import torch._dynamo  # noqa: F401

    import pixelwise.cli  # noqa: F401


def run_pixelwise(
    args: list,
    env: dict | None = None,
    kill_at: str | None = None,
    kill_after: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``pixelwise ARGS`` in a forked child; ``returncode`` is -9 when ``kill_at`` killed it.

    ``env`` replaces the child's environment (default: this process's, with PIXELWISE_THREADS=1 and a wide
    terminal so no line wraps); ``kill_at`` is ``"module.function:N"``.
    """
    args = [str(a) for a in args]
    import_once()
    env = {**os.environ, "PIXELWISE_THREADS": "1", "COLUMNS": "200"} if env is None else env
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            code = 1
            try:
                code = _child(args, env, kill_at, kill_after, out, err)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(["pixelwise", *args], timeout)
            time.sleep(0.02)
        returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            ["pixelwise", *args],
            returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
        )
