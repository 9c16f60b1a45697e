"""``pixelwise ARGS`` run in-process through ``main()``, for tests that read the command's output."""

from __future__ import annotations

import sys

from pixelwise.cli import main


def run_cli(args: list, capsys, monkeypatch) -> tuple[int, str]:
    """``pixelwise ARGS`` through ``main()`` on a wide terminal (no wrapped lines): (exit code, output)."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(sys, "argv", ["pixelwise", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.err + captured.out
