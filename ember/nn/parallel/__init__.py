"""`ember.nn.parallel`: data-parallel training (`DistributedDataParallel`, over MPI).

The class loads on first use; the process group comes from `ember.distributed`
(`init_process_group(backend="mpi")`), as in PyTorch.
"""

__all__ = ["DistributedDataParallel"]


def __getattr__(name: str):
    if name == "DistributedDataParallel":
        from ember.nn.parallel.distributed import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'ember.nn.parallel' has no attribute {name!r}")
