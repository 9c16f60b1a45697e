"""pixelwise: segmentation as pixel classification, from image folders to masks."""

__version__ = "0.1.0"
