"""`DistributedDataParallel`: one model replica per process, gradients averaged over MPI.

L5 code over the L1 communication layer (`ember.backend.comm`); `ember.distributed` (L9) sets
up the process group it uses and re-exports this class, as `torch.distributed` does.

Note [DDP buckets]: at wrap time the trainable parameters are laid out, in reverse
registration order (roughly the order backward produces their gradients), into buckets of one
dtype each: the first bucket holds about 1 MB (so communication starts early, as PyTorch
does), the others `bucket_cap_mb`. Each bucket owns one flat buffer. A post-accumulate-grad hook
per parameter (Note [Gradient-ready hooks] in ember/autograd/engine.py) copies the parameter's
`.grad` into its slot; when a bucket's last slot is filled, its allreduce (`Iallreduce`, SUM)
starts, so it runs while backward computes the earlier layers' gradients. Buckets start in
bucket order on every rank (a ready bucket waits for the ones before it): MPI requires the
same order of collectives on all ranks, and the order of hooks may differ. A callback queued
for the end of backward waits for every bucket, divides by the world size and writes the
averages back into `.grad` (with `gradient_as_bucket_view=True`, `.grad` is a view of the
bucket, so nothing is copied). Inside `no_sync()` the hooks do nothing: gradients accumulate
locally, and the first backward after it reduces the sums.

Note [DDP unused parameters]: a parameter that gets no gradient in a backward leaves its
bucket unfinished. With `find_unused_parameters=True`, the forward walks the autograd graph
from the outputs, marks the parameters it does not reach as ready (a zero contribution) and
starts an allreduce of the used-flags, so a parameter no rank used keeps `.grad = None` (the
optimizer skips it) as in single-process training. Without it, the end of backward raises an
error naming the parameters that got no gradient.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ember._util.errors import DistributedError
from ember.autograd.engine import Node, queue_callback
from ember.backend import comm
from ember.nn.modules.module import Module
from ember.tensor import Tensor

__all__ = ["DistributedDataParallel"]

_FIRST_BUCKET_BYTES = 1024 * 1024  # PyTorch's dist._DEFAULT_FIRST_BUCKET_BYTES


class _Bucket:
    __slots__ = ("index", "dtype", "params", "offsets", "buffer", "views", "pending", "work")

    def __init__(self, index: int, dtype, params: list):
        self.index = index
        self.dtype = dtype
        self.params = params  # parameter indices, in bucket order
        self.offsets = []
        self.buffer = None
        self.views = []
        self.pending = 0
        self.work = None


class DistributedDataParallel(Module):
    """Data-parallel training: `module` replicated on every rank, gradients averaged by MPI.

    Example (run under `ember launch`; after `backward`, `.grad` holds the average over all
    ranks):
        >>> import ember.distributed as dist  # doctest: +SKIP
        >>> dist.init_process_group(backend="mpi")  # doctest: +SKIP
        >>> ddp = ember.nn.parallel.DistributedDataParallel(model)  # doctest: +SKIP
        >>> loss_fn(ddp(x), y).backward()  # doctest: +SKIP

    Args:
        module: the model; its parameters and buffers are broadcast from rank 0.
        bucket_cap_mb: size of the gradient buckets (Note [DDP buckets]).
        find_unused_parameters: allow parameters that get no gradient in a backward (Note [DDP
            unused parameters]).
        gradient_as_bucket_view: make each `.grad` a view of its bucket (saves a copy and the
            memory of one gradient).
        broadcast_buffers: copy rank 0's buffers (BatchNorm statistics) to all ranks at each
            training forward.
        process_group: the group to average over (the default group).
        device_ids, output_device, dim: accepted for PyTorch compatibility (CPU only).
    """

    def __init__(
        self,
        module: Module,
        device_ids=None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group=None,
        bucket_cap_mb: float | None = 25,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
    ):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel: module should be an ember nn.Module, got "
                f"{type(module).__name__}"
            )
        if bucket_cap_mb is None:
            bucket_cap_mb = 25
        if not bucket_cap_mb > 0:
            raise ValueError(
                f"DistributedDataParallel: bucket_cap_mb should be > 0, got {bucket_cap_mb}"
            )
        group = process_group if process_group is not None else comm.default_group()
        object.__setattr__(self, "_group", group)
        self.module = module
        self.dim = dim
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_parameters(named)
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._sync_module_states()
        self._buckets = self._make_buckets(bucket_cap_mb)
        self._where = {}  # parameter index -> (bucket, slot)
        for bucket in self._buckets:
            for slot, i in enumerate(bucket.params):
                self._where[i] = (bucket, slot)
        self._handles = [
            p.register_post_accumulate_grad_hook(self._make_hook(i))
            for i, p in enumerate(self._params)
        ]
        self._active = False  # a synchronised backward has started and not been finished
        self._next_bucket = 0
        self._ready_buckets = set()
        self._filled = None
        self._unused_work = None
        self._used_flags = None

    # ------------------------------------------------------------------ set-up
    def _check_same_parameters(self, named) -> None:
        """Every rank wraps the same parameters (names, shapes, dtypes) in the same order."""
        group = self._group
        mine = [(n, tuple(p.shape), str(p.dtype)) for n, p in named]
        everyone = group.allgather_object(mine)
        reference = everyone[0]
        for rank, theirs in enumerate(everyone[1:], start=1):
            for (n0, s0, d0), (n1, s1, d1) in zip(reference, theirs):
                if n0 != n1:
                    raise DistributedError(
                        f"DistributedDataParallel: the parameters differ across ranks: rank 0 "
                        f"has {n0!r} where rank {rank} has {n1!r}"
                    )
                if s0 != s1 or d0 != d1:
                    raise DistributedError(
                        f"DistributedDataParallel: parameter {n0!r} is {s0} {d0} on rank 0 but "
                        f"{s1} {d1} on rank {rank}; every rank must build the same model"
                    )
            if len(theirs) != len(reference):
                longer, rank_of = (theirs, rank) if len(theirs) > len(reference) else (reference, 0)
                extra = [n for n, _, _ in longer[min(len(theirs), len(reference)) :]]
                raise DistributedError(
                    f"DistributedDataParallel: rank 0 has {len(reference)} trainable parameters, "
                    f"rank {rank} has {len(theirs)} (rank {rank_of} also has {extra[:5]})"
                )

    def _sync_module_states(self) -> None:
        """Rank 0's parameters and buffers, on every rank."""
        group = self._group
        for p in self.module.parameters():
            group.broadcast(p.array, 0)
        for b in self.module.buffers():
            group.broadcast(b.array, 0)

    def _make_buckets(self, cap_mb: float) -> list:
        order = list(range(len(self._params)))[::-1]
        cap = max(int(cap_mb * 1024 * 1024), 1)
        caps = [min(_FIRST_BUCKET_BYTES, cap), cap]
        open_buckets: dict = {}  # dtype -> (params, bytes)
        closed = []
        for i in order:
            p = self._params[i]
            dtype = p.array.dtype
            params, size = open_buckets.get(dtype, ([], 0))
            params.append(i)
            size += p.array.nbytes
            cap = caps[0] if not closed else caps[1]
            if size >= cap:
                closed.append((dtype, params))
                open_buckets.pop(dtype, None)
            else:
                open_buckets[dtype] = (params, size)
        closed.extend((dtype, params) for dtype, (params, _) in open_buckets.items())
        buckets = []
        for index, (dtype, params) in enumerate(closed):
            bucket = _Bucket(index, dtype, params)
            offset = 0
            for i in params:
                bucket.offsets.append(offset)
                offset += self._params[i].array.size
            bucket.buffer = np.zeros(offset, dtype=dtype)
            bucket.views = [
                bucket.buffer[o : o + self._params[i].array.size].reshape(
                    self._params[i].array.shape
                )
                for o, i in zip(bucket.offsets, params)
            ]
            buckets.append(bucket)
        return buckets

    @property
    def bucket_sizes(self) -> list:
        """(number of parameters, bytes) per bucket, in the order they are reduced."""
        return [(len(b.params), b.buffer.nbytes) for b in self._buckets]

    # ------------------------------------------------------------------ forward
    def forward(self, *inputs, **kwargs):
        if self._active:
            raise DistributedError(
                "DistributedDataParallel: a forward started while the previous backward's "
                "gradient reduction is unfinished"
            )
        if self.training and self.broadcast_buffers and self._group.size > 1:
            for b in self.module.buffers():
                self._group.broadcast(b.array, 0)
        output = self.module(*inputs, **kwargs)
        if self.find_unused_parameters and self.require_backward_grad_sync and self.training:
            self._find_unused(output)
        return output

    def _find_unused(self, output) -> None:
        """Note [DDP unused parameters]: the parameters this forward's graph does not reach."""
        reached = set()
        seen = set()
        stack = [t._node for t in _tensors_in(output) if t._node is not None]
        for t in _tensors_in(output):
            if t._node is None and t.requires_grad:
                reached.add(id(t))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            for e in node.edges:
                if e is None:
                    continue
                if e.__class__ is Node:
                    stack.append(e)
                else:
                    reached.add(id(e))
        # a gradient accumulated under no_sync() counts as use: it must be reduced too
        flags = np.array(
            [id(p) in reached or p.grad is not None for p in self._params], dtype=np.uint8
        )
        self._used_flags = flags
        self._unused_work = self._group.allreduce(flags, "max", async_op=True)
        self._unused_local = [i for i, used in enumerate(flags) if not used]

    # ------------------------------------------------------------------ backward
    def _make_hook(self, index: int):
        def hook(param):
            if self.require_backward_grad_sync:
                self._grad_ready(index)

        return hook

    def _start_reduction(self) -> None:
        self._active = True
        self._next_bucket = 0
        self._ready_buckets = set()
        for bucket in self._buckets:
            bucket.pending = len(bucket.params)
            bucket.work = None
        self._filled = np.zeros(len(self._params), dtype=bool)
        queue_callback(self._finish_reduction)
        if self.find_unused_parameters and self._used_flags is not None:
            for i in self._unused_local:
                self._grad_ready(i)

    def _grad_ready(self, index: int) -> None:
        if not self._active:
            self._start_reduction()
        if self._filled[index]:
            return
        self._filled[index] = True
        bucket, slot = self._where[index]
        param = self._params[index]
        view = bucket.views[slot]
        grad = param.grad
        if grad is not None and not isinstance(grad.array, np.ndarray):
            raise DistributedError(
                f"DistributedDataParallel: the gradient of {self._names[index]!r} is not a "
                f"NumPy array ({type(grad.array).__name__}): a DDP model cannot run inside "
                f"ember.compile; compile the unwrapped module's step and average the gradients "
                f"with ember.distributed.all_reduce (the Trainer does this)"
            )
        if grad is None:
            view[...] = 0
        elif grad.array is not view:
            np.copyto(view, grad.array)
            if self.gradient_as_bucket_view:
                param.grad = Tensor.from_array(view)
        bucket.pending -= 1
        if bucket.pending == 0:
            self._ready_buckets.add(bucket.index)
            self._launch_ready()
        elif self._next_bucket > 0:
            # drive MPI's progress engine for the buckets in flight (Note [Collective waits])
            self._buckets[self._next_bucket - 1].work.is_completed()

    def _launch_ready(self) -> None:
        """Start the ready buckets in bucket order (the same order on every rank)."""
        while self._next_bucket in self._ready_buckets:
            bucket = self._buckets[self._next_bucket]
            bucket.work = self._group.allreduce(bucket.buffer, "sum", async_op=True)
            self._next_bucket += 1

    def _finish_reduction(self) -> None:
        """End of backward: wait for every bucket, average, write back into .grad."""
        self._active = False
        if self._next_bucket < len(self._buckets):
            missing = [self._names[i] for i in range(len(self._params)) if not self._filled[i]]
            raise DistributedError(
                f"DistributedDataParallel: on rank {self._group.rank}, {len(missing)} "
                f"parameters received no gradient in this backward: {missing[:8]}; pass "
                f"find_unused_parameters=True to DistributedDataParallel if some parameters "
                f"are unused in a forward, or make every output take part in the loss"
            )
        globally_unused = set()
        if self._unused_work is not None:
            self._unused_work.wait()
            globally_unused = {i for i, used in enumerate(self._used_flags) if not used}
            self._unused_work = self._used_flags = None
        size = self._group.size
        for bucket in self._buckets:
            bucket.work.wait()
            bucket.work = None
            if size > 1:
                np.divide(bucket.buffer, size, out=bucket.buffer)
            for slot, i in enumerate(bucket.params):
                if i in globally_unused:
                    continue
                param = self._params[i]
                view = bucket.views[slot]
                if self.gradient_as_bucket_view:
                    if param.grad is None or param.grad.array is not view:
                        param.grad = Tensor.from_array(view)
                elif param.grad is None:
                    param.grad = Tensor.from_array(view.copy())
                else:
                    np.copyto(param.grad.array, view)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally: backward passes inside do not communicate; the first
        backward after the block reduces the accumulated sums."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self) -> str:
        return (
            f"world_size={self._group.size}, buckets={len(self._buckets)}, "
            f"bucket_cap_mb={self.bucket_cap_mb}"
        )


def _tensors_in(value):
    """The Tensors inside a (nested) model output."""
    from collections.abc import Mapping

    from ember.tensor import Tensor

    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, Tensor):
            yield v
        elif isinstance(v, Mapping):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif hasattr(v, "__dict__") and not isinstance(v, type):
            stack.extend(vars(v).values())
