"""User-facing errors.

A :class:`PixelwiseError` carries one line that says what is wrong and what to do about it.
The CLI prints that line and exits with a non-zero code, without a traceback.
"""


class PixelwiseError(Exception):
    """An error caused by the user's input (files, options), not by a bug in pixelwise."""
