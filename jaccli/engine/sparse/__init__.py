"""Sparse Jacobians: J's sparsity pattern, and J computed from it in a few passes.

Imports scipy; nothing imports this package but the sparse paths, so a dense run never
loads scipy.
"""
