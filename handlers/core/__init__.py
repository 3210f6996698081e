"""Model-agnostic serving core shared by every humanserve handler.

It travels inside each model archive, so it imports nothing from this repository
outside itself. Conventions used throughout:

- Coordinates are continuous image pixels: an image spans [0, W] x [0, H] and the
  pixel in row i, column j is the unit square centred on (j + 0.5, i + 0.5).
- Boxes are ``Tensor[N, 4]`` in (x1, y1, x2, y2) order in those coordinates.
- Images are RGB ``uint8`` tensors ``[3, H, W]`` until a model asks for another order.
"""
