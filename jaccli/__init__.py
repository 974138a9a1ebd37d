"""jaccli: a command-line Jacobian calculator built on PyTorch autograd."""

__version__ = "0.1.0"
