"""Elementwise fusion (not implemented yet): the pipeline's hook for turning chains of
elementwise ops and their reductions into one generated kernel (numba on CPU, loaded lazily,
with a NumPy path). Today it returns the graph unchanged; the executor already runs those
chains as ufuncs writing into preallocated buffers (Note [Executor])."""

from __future__ import annotations


def fuse_elementwise(graph):
    return graph
