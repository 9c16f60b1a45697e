"""Data: reading files, finding image/mask pairs, checking, splitting, caching, augmenting.

Network inputs are normalised with the ImageNet per-channel statistics of 0..1 RGB values.
"""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
