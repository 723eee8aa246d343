"""`ember.distributed`: PyTorch's `torch.distributed` API on ember Tensors, over MPI.

L9. The process group, its collectives on NumPy arrays and the rank-failure watchdog live in
`ember.backend.comm` (L1), below `DistributedDataParallel` (`ember.nn.parallel`, L5),
`DistributedSampler` (`ember.data`, L5) and the Trainer (L8), which all use the default group;
this package is the face on Tensors, plus `ember launch` (ember/distributed/launch.py).

Run a script on 2 processes with `mpiexec -n 2 python train.py` or `ember launch -n 2
train.py` (README, "Distributed training"). Collectives update tensors in place, as PyTorch's
do; `async_op=True` returns a `Work` whose `wait()` finishes it.

Example:
    >>> import ember, ember.distributed as dist  # doctest: +SKIP
    >>> dist.init_process_group(backend="mpi")  # doctest: +SKIP
    >>> t = ember.tensor([float(dist.get_rank() + 1)])  # doctest: +SKIP
    >>> dist.all_reduce(t, op=dist.ReduceOp.SUM)  # doctest: +SKIP
    >>> t  # on 2 ranks  # doctest: +SKIP
    tensor([3.])
"""

from __future__ import annotations

from ember._util.errors import DistributedError as DistributedError
from ember.backend import comm as _comm
from ember.backend.comm import ReduceOp as ReduceOp
from ember.backend.comm import Work as Work
from ember.data.sampler import DistributedSampler as DistributedSampler

__all__ = [
    "DistributedDataParallel",
    "DistributedError",
    "DistributedSampler",
    "ReduceOp",
    "Work",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "destroy_process_group",
    "gather",
    "get_backend",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "irecv",
    "is_available",
    "is_initialized",
    "is_mpi_available",
    "isend",
    "recv",
    "reduce_scatter",
    "scatter",
    "send",
]


def __getattr__(name: str):
    if name == "DistributedDataParallel":
        from ember.nn.parallel.distributed import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'ember.distributed' has no attribute {name!r}")


# ---------------------------------------------------------------------- the process group
def is_available() -> bool:
    """True when mpi4py (and so an MPI library) can be imported."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


is_mpi_available = is_available


def init_process_group(
    backend: str | None = "mpi",
    init_method: str | None = None,
    timeout=None,
    world_size: int = -1,
    rank: int = -1,
    store=None,
    group_name: str = "",
    pg_options=None,
    device_id=None,
) -> None:
    """Join the job's process group: MPI's COMM_WORLD, started by `mpiexec` or `ember launch`.

    Args:
        backend: "mpi" (the only engine; PyTorch's "gloo"/"nccl" are refused with a clear error).
        timeout: seconds (or a timedelta) a collective may wait before failing (30 minutes).
        world_size, rank: if given, checked against what MPI says.
        init_method, store: not needed by MPI (the launcher wires the ranks); a value other
            than None or "env://" is an error.
    """
    if init_method not in (None, "env://") or store is not None:
        raise DistributedError(
            f"init_process_group: init_method={init_method!r}, store={store!r}: the MPI "
            f"backend gets its ranks from the launcher (mpiexec, srun, ember launch)"
        )
    group = _comm.init(backend, timeout)
    for name, given, actual in (("world_size", world_size, group.size), ("rank", rank, group.rank)):
        if given not in (-1, None) and given != actual:
            raise DistributedError(
                f"init_process_group: {name}={given}, but MPI started this process as "
                f"{name} {actual}; launch with `mpiexec -n N` / `ember launch -n N`"
            )


def is_initialized() -> bool:
    return _comm.is_initialized()


def destroy_process_group(group=None) -> None:
    """Leave the process group (after a barrier, so no rank leaves a collective early)."""
    _comm.destroy()


def _group(group):
    return group if group is not None else _comm.default_group()


def get_rank(group=None) -> int:
    """This process's rank (0 when no group is initialised, as in a single-process run)."""
    if group is None and not _comm.is_initialized():
        return 0
    return _group(group).rank


def get_world_size(group=None) -> int:
    if group is None and not _comm.is_initialized():
        return 1
    return _group(group).size


def get_backend(group=None) -> str:
    _group(group)
    return "mpi"


def barrier(group=None, async_op: bool = False, device_ids=None):
    return _group(group).barrier(async_op=async_op)


# ---------------------------------------------------------------------- collectives
def _array(tensor, what: str, written: bool = False):
    """The tensor's array; a tensor the collective writes gets its version bumped, so autograd
    refuses a backward that would read its old value (Note [Saved tensor versions])."""
    data = getattr(tensor, "_data", None)
    if data is None:
        raise DistributedError(f"{what}: expected an ember Tensor, got {type(tensor).__name__}")
    if written:
        tensor._bump_version(what)
    return data


def _arrays(tensors, what: str, name: str, written: bool = False):
    if tensors is None:
        return None
    if not isinstance(tensors, (list, tuple)):
        raise DistributedError(f"{what}: {name} should be a list of Tensors")
    return [_array(t, what, written) for t in tensors]


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce `tensor` over all ranks, in place on every rank."""
    return _group(group).allreduce(_array(tensor, "all_reduce", True), op, async_op=async_op)


def broadcast(tensor, src: int = 0, group=None, async_op: bool = False):
    """Copy rank `src`'s `tensor` into `tensor` on every rank."""
    return _group(group).broadcast(_array(tensor, "broadcast", True), src, async_op=async_op)


def all_gather(tensor_list: list, tensor, group=None, async_op: bool = False):
    """tensor_list[r] <- rank r's `tensor`, on every rank."""
    outputs = _arrays(tensor_list, "all_gather", "tensor_list", True)
    return _group(group).allgather(outputs, _array(tensor, "all_gather"), async_op=async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op: bool = False):
    """`output_tensor` <- every rank's `input_tensor`, concatenated in rank order."""
    return _group(group).allgather_into(
        _array(output_tensor, "all_gather_into_tensor", True),
        _array(input_tensor, "all_gather_into_tensor"),
        async_op=async_op,
    )


def reduce_scatter(output, input_list: list, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """output <- the reduction over ranks of each rank's input_list[this rank]."""
    inputs = _arrays(input_list, "reduce_scatter", "input_list")
    return _group(group).reduce_scatter(
        _array(output, "reduce_scatter", True), inputs, op, async_op=async_op
    )


def gather(tensor, gather_list: list | None = None, dst: int = 0, group=None, async_op=False):
    """On rank `dst`: gather_list[r] <- rank r's `tensor`."""
    outputs = _arrays(gather_list, "gather", "gather_list", True)
    return _group(group).gather(_array(tensor, "gather"), outputs, dst, async_op=async_op)


def scatter(tensor, scatter_list: list | None = None, src: int = 0, group=None, async_op=False):
    """`tensor` <- rank `src`'s scatter_list[this rank]."""
    inputs = _arrays(scatter_list, "scatter", "scatter_list")
    return _group(group).scatter(_array(tensor, "scatter", True), inputs, src, async_op=async_op)


def send(tensor, dst: int, group=None, tag: int = 0) -> None:
    _group(group).send(_array(tensor, "send"), dst, tag)


def recv(tensor, src: int | None = None, group=None, tag: int = 0) -> int:
    """Receive into `tensor` (from any rank when `src` is None); returns the sender's rank."""
    return _group(group).recv(_array(tensor, "recv", True), src, tag)


def isend(tensor, dst: int, group=None, tag: int = 0) -> Work:
    return _group(group).send(_array(tensor, "isend"), dst, tag, async_op=True)


def irecv(tensor, src: int | None = None, group=None, tag: int = 0) -> Work:
    return _group(group).recv(_array(tensor, "irecv", True), src, tag, async_op=True)


def all_gather_object(object_list: list, obj, group=None) -> None:
    """object_list[r] <- rank r's picklable `obj`."""
    gathered = _group(group).allgather_object(obj)
    if len(object_list) != len(gathered):
        raise DistributedError(
            f"all_gather_object: object_list should have {len(gathered)} entries (the world "
            f"size), got {len(object_list)}"
        )
    object_list[:] = gathered


def broadcast_object_list(object_list: list, src: int = 0, group=None, device=None) -> None:
    """object_list[:] <- rank `src`'s object_list (picklable objects)."""
    object_list[:] = _group(group).broadcast_object(list(object_list), src)
