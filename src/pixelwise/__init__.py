"""pixelwise: segmentation as pixel classification, from image folders to masks.

``pixelwise.load(RUN)`` gives a :class:`~pixelwise.api.Segmenter` for a trained run folder (see
:mod:`pixelwise.api`); importing ``pixelwise`` itself loads nothing heavy.
"""

__version__ = "0.1.0"


def load(run, engine: str = "torch", device: str = "auto", precision: str = "fp32", tta: bool = True, **options):
    """Load a trained run for segmenting images: ``pixelwise.load(RUN).predict(image)``.

    See :func:`pixelwise.api.load` for the arguments; returns a :class:`pixelwise.api.Segmenter`.
    """
    from pixelwise.api import load as _load

    return _load(run, engine=engine, device=device, precision=precision, tta=tta, **options)
