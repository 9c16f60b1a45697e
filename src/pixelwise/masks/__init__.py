"""Masks: from probabilities to class-index masks at the image's size, clean-up, regions, overlays.

Shared by ``predict``, ``evaluate`` and ``serve``; it imports none of them.
"""
