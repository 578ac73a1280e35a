"""Preprocessing ops composed from a config string, e.g.
"random_crop(28, pad=2)|normalize('mnist')".

`parse` builds the function; each module below registers one family of ops on import.
"""

# Importing the families registers their ops.
from input_pipeline.ops import color, decode, geometry, normalization, regularization, views
from input_pipeline.ops.registry import (
    Features,
    Op,
    Preprocess,
    before_stats,
    deterministic_image_op,
    image_op,
    list_ops,
    parse,
    register,
    with_decode,
    without_stats,
)

__all__ = [
    'Features',
    'Op',
    'Preprocess',
    'before_stats',
    'deterministic_image_op',
    'image_op',
    'list_ops',
    'parse',
    'register',
    'with_decode',
    'without_stats',
]
