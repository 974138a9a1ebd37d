"""The colours of a picture of J, the same on screen (render/picture.py) and in a file
(render/image.py): a diverging scale centred on 0, with colours of their own for exact zeros,
NaN and ±Infinity."""

ZERO_RGB = (107, 107, 107)
NEUTRAL_RGB = (247, 247, 247)
POSITIVE_RGB = (178, 24, 43)
NEGATIVE_RGB = (33, 102, 172)
NAN_RGB = (230, 171, 2)
POSITIVE_INFINITY_RGB = (231, 41, 138)
NEGATIVE_INFINITY_RGB = (27, 158, 119)
"""±Infinity in colours of their own: not the grey of an exact 0, nor the ends of the scale."""
