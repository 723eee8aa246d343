"""The training runs of the distributed tests, shared by the MPI worker (each rank trains on its
share of every global batch) and by the tests (one process trains on the whole global batch).

Run as a script under MPI: `mpiexec -n 2 python tests/distributed/cases.py OUT CASE...` writes
`OUT/CASE.rank{r}.npz` (or `.json`) per case and rank.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import ember  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import nn  # noqa: E402

STEPS = 20
PER_RANK = 4  # examples per rank and micro-batch
WORLD = 2  # the global batch is PER_RANK x WORLD examples per micro-batch


class MLP(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.fc1 = nn.Linear(10, 32, dtype=dtype)
        self.fc2 = nn.Linear(32, 32, dtype=dtype)
        self.out = nn.Linear(32, 3, dtype=dtype)

    def forward(self, x):
        return self.out(self.fc2(self.fc1(x).tanh()).relu())


def mlp(dtype, seed):
    ember.manual_seed(seed)
    return MLP(getattr(ember, dtype))


def tiny_bert(seed):
    from ember.transformers import BertConfig, BertForSequenceClassification

    ember.manual_seed(seed)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def global_batches(kind: str, micro: int, dtype: str = "float64"):
    """STEPS optimizer steps of `micro` micro-batches of PER_RANK x WORLD examples."""
    rng = np.random.default_rng(1234)
    n = PER_RANK * WORLD * micro
    out = []
    for _ in range(STEPS):
        if kind == "bert":
            ids = rng.integers(1, 99, size=(n, 7))
            mask = np.ones_like(ids)
            mask[:, 5:] = rng.integers(0, 2, size=(n, 2))
            out.append((ids, mask, rng.integers(0, 3, size=n)))
        else:
            out.append((rng.normal(size=(n, 10)).astype(dtype), rng.integers(0, 3, size=n)))
    return out


def loss_of(model, kind, batch):
    if kind == "bert":
        ids, mask, labels = batch
        return model(
            input_ids=ember.tensor(ids),
            attention_mask=ember.tensor(mask),
            labels=ember.tensor(labels),
        ).loss
    x, y = batch
    return F.cross_entropy(model(ember.tensor(x)), ember.tensor(y))


def rows(batch, start, stop):
    return tuple(a[start:stop] for a in batch)


def train(model, kind, rank, micro, ddp_model=None, dtype="float64"):
    """SGD with momentum; with `ddp_model`, rank `rank` takes its share of
    each micro-batch and all but the last micro-batch of a step run under no_sync(); without,
    one process takes the whole global batch."""
    runner = ddp_model if ddp_model is not None else model
    # SGD: Adam divides by sqrt(v), which turns float32 rounding in near-zero gradients into
    # relative weight changes of ~1e-6 whatever the reduction (the engines are compared here)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for batch in global_batches(kind, micro, dtype):
        optimizer.zero_grad()
        total = 0.0
        per_micro = PER_RANK * WORLD
        for m in range(micro):
            part = rows(batch, m * per_micro, (m + 1) * per_micro)
            mine = rows(part, rank * PER_RANK, (rank + 1) * PER_RANK) if ddp_model else part
            loss = loss_of(runner, kind, mine) * (1.0 / micro)
            if ddp_model is not None and m < micro - 1:
                with ddp_model.no_sync():
                    loss.backward()
            else:
                loss.backward()
            total += float(loss.item())
        optimizer.step()
        losses.append(total)
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}, losses


def build(case: str, seed: int):
    kind, dtype = case.split("_")[1], case.split("_")[2]
    model = tiny_bert(seed) if kind == "bert" else mlp(dtype, seed)
    if case.endswith("unused"):
        model.spare = nn.Linear(3, 3, dtype=getattr(ember, dtype))  # in no forward
    return model, kind, dtype


DDP_CASES = {
    # case: (micro-batches per step, DistributedDataParallel keyword arguments)
    "ddp_mlp_float64": (1, {}),
    "ddp_mlp_float32": (1, {}),
    "ddp_mlp_float64_nosync": (2, {"bucket_cap_mb": 0.001}),
    "ddp_mlp_float64_view": (1, {"gradient_as_bucket_view": True, "bucket_cap_mb": 0.002}),
    "ddp_bert_float32": (1, {"bucket_cap_mb": 0.01}),
    "ddp_bert_float32_nosync": (2, {"find_unused_parameters": True}),
    "ddp_mlp_float64_unused": (2, {"find_unused_parameters": True, "bucket_cap_mb": 0.002}),
}


def reference(case: str):
    """One process, the whole global batch, the model rank 0 starts from."""
    micro, _ = DDP_CASES[case]
    model, kind, dtype = build(case, seed=0)
    return train(model, kind, rank=0, micro=micro, dtype=dtype)


def run_ddp(case: str, out: str) -> None:
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    micro, kwargs = DDP_CASES[case]
    assert world == WORLD, f"the distributed cases run on {WORLD} ranks, not {world}"
    model, kind, dtype = build(case, seed=rank)  # rank 1 starts elsewhere: DDP sends rank 0's
    ddp = DistributedDataParallel(model, **kwargs)
    weights, losses = train(model, kind, rank, micro, ddp_model=ddp, dtype=dtype)
    np.savez(os.path.join(out, f"{case}.rank{rank}.npz"), **weights)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    with open(os.path.join(out, f"{case}.rank{rank}.json"), "w") as f:
        json.dump({"losses": losses, "buckets": ddp.bucket_sizes, "no_grad": unused}, f)


def run_collectives(out: str) -> None:
    import ember.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    rng = np.random.default_rng(100 + rank)
    got = {}
    base = rng.normal(size=(3, 4))
    got["input"] = base
    for op in ("SUM", "AVG", "MAX", "MIN", "PRODUCT"):
        t = ember.tensor(base.copy())
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        got[f"all_reduce_{op}"] = t.numpy().copy()
    t = ember.tensor(base.astype(np.int32) + rank)
    dist.all_reduce(t)
    got["all_reduce_int32"] = t.numpy().copy()
    t = ember.tensor(base.copy())
    work = dist.all_reduce(t, async_op=True)
    work.wait()
    got["all_reduce_async"] = t.numpy().copy()
    t = ember.tensor(base.copy())
    dist.broadcast(t, src=1)
    got["broadcast_src1"] = t.numpy().copy()
    outs = [ember.zeros(3, 4, dtype=ember.float64) for _ in range(world)]
    dist.all_gather(outs, ember.tensor(base))
    got["all_gather"] = np.stack([o.numpy() for o in outs])
    flat = ember.zeros(world * 3, 4, dtype=ember.float64)
    dist.all_gather_into_tensor(flat, ember.tensor(base))
    got["all_gather_into_tensor"] = flat.numpy()
    chunks = [ember.tensor(base * (i + 1)) for i in range(world)]
    t = ember.zeros(3, 4, dtype=ember.float64)
    dist.reduce_scatter(t, chunks)
    got["reduce_scatter"] = t.numpy().copy()
    gathered = [ember.zeros(3, 4, dtype=ember.float64) for _ in range(world)] if rank == 0 else None
    dist.gather(ember.tensor(base), gathered, dst=0)
    if rank == 0:
        got["gather"] = np.stack([g.numpy() for g in gathered])
    t = ember.zeros(3, 4, dtype=ember.float64)
    dist.scatter(t, [ember.tensor(base + i) for i in range(world)] if rank == 1 else None, src=1)
    got["scatter_src1"] = t.numpy().copy()
    if rank == 0:
        dist.send(ember.tensor(base), dst=1)
        work = dist.irecv(t, src=1)
        work.wait()
        got["recv"] = t.numpy().copy()
    else:
        sender = dist.recv(t)  # from any rank
        got["recv_sender"] = np.array(sender)
        got["recv"] = t.numpy().copy()
        dist.isend(ember.tensor(base), dst=0).wait()
    big = ember.tensor(np.arange(300_000, dtype=np.float64) * (rank + 1))  # 2.4 MB: blocking
    dist.all_reduce(big, op=dist.ReduceOp.AVG)
    got["all_reduce_big_avg"] = big.numpy().copy()
    dist.broadcast(big, src=1)
    got["broadcast_big"] = big.numpy()[:10].copy()
    objects = [None] * world
    dist.all_gather_object(objects, {"rank": rank})
    got["objects"] = np.array([o["rank"] for o in objects])
    dist.barrier()
    errors = []
    for call in (
        lambda: dist.broadcast(ember.tensor(base), src=5),
        lambda: dist.all_reduce(ember.tensor(base), op="median"),
        lambda: dist.all_gather([ember.tensor(base)], ember.tensor(base)),
    ):
        try:
            call()
        except dist.DistributedError as e:
            errors.append(str(e))
    np.savez(os.path.join(out, f"collectives.rank{rank}.npz"), **got)
    with open(os.path.join(out, f"collectives_errors.rank{rank}.json"), "w") as f:
        json.dump(errors, f)


def run_sampler(out: str) -> None:
    import ember.distributed as dist

    rank = dist.get_rank()
    seen = {}
    for n, drop_last in ((10, False), (11, False), (11, True)):
        sampler = dist.DistributedSampler(range(n), shuffle=True, seed=3, drop_last=drop_last)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            seen[f"{n}_{drop_last}_{epoch}"] = list(sampler)
    with open(os.path.join(out, f"sampler.rank{rank}.json"), "w") as f:
        json.dump(seen, f)


def run_shape_mismatch(out: str) -> None:
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel

    rank = dist.get_rank()
    model = nn.Sequential(nn.Linear(4, 5 + rank), nn.Linear(5 + rank, 2))
    try:
        DistributedDataParallel(model)
        message = None
    except dist.DistributedError as e:
        message = str(e)
    with open(os.path.join(out, f"shape_mismatch.rank{rank}.json"), "w") as f:
        json.dump(message, f)


def run_unused_error(out: str) -> None:
    """A parameter without a gradient and no find_unused_parameters: an error naming it."""
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel

    rank = dist.get_rank()
    model, kind, _ = build("ddp_mlp_float64_unused", seed=0)
    ddp = DistributedDataParallel(model)
    batch = rows(global_batches(kind, 1)[0], rank * PER_RANK, (rank + 1) * PER_RANK)
    try:
        loss_of(ddp, kind, batch).backward()
        message = None
    except dist.DistributedError as e:
        message = str(e)
    with open(os.path.join(out, f"unused_error.rank{rank}.json"), "w") as f:
        json.dump(message, f)


def main(argv) -> None:
    import ember.distributed as dist

    out, cases = argv[0], argv[1:]
    dist.init_process_group(backend="mpi", timeout=60)
    for case in cases:
        if case in DDP_CASES:
            run_ddp(case, out)
        else:
            {
                "collectives": run_collectives,
                "sampler": run_sampler,
                "shape_mismatch": run_shape_mismatch,
                "unused_error": run_unused_error,
            }[case](out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
