"""Data-parallel training on 2 processes: an MLP on MNIST with DistributedDataParallel.

    ember launch -n 2 examples/distributed_mnist.py     # or: mpiexec -n 2 python ...

Each rank trains on its half of every global batch of 64 (DistributedSampler); DDP averages the
gradients. To show that this is the same training as one process on the whole batch, rank 0
also trains a copy of the model on the full global batches and prints both losses per step and
the largest weight difference at the end. Run with one process, it trains alone.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "seed"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ember  # noqa: E402
import ember.distributed as dist  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import nn  # noqa: E402
from ember.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402
from ember.nn.parallel import DistributedDataParallel  # noqa: E402

GLOBAL_BATCH, STEPS, EXAMPLES = 64, 20, 2048


def make_model():
    ember.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def main() -> None:
    from _mnist import load_mnist, normalized

    dist.init_process_group(backend="mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    images, labels = load_mnist("train")
    x = normalized(images[:EXAMPLES]).reshape(EXAMPLES, -1)
    y = labels[:EXAMPLES]
    dataset = TensorDataset(ember.tensor(x), ember.tensor(y))
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=GLOBAL_BATCH // world, sampler=sampler)

    model = DistributedDataParallel(make_model())
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if rank == 0:
        print(f"{world} processes, global batch {GLOBAL_BATCH} ({GLOBAL_BATCH // world} each)")
        reference = make_model()  # one process on the whole global batch, for comparison
        ref_optimizer = ember.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
        order = list(np.random.default_rng(0).permutation(EXAMPLES))  # DistributedSampler's
        print(f"{'step':>4} {'DDP loss (mean over ranks)':>28} {'1-process loss':>16}")
    sampler.set_epoch(0)
    for step, (xb, yb) in enumerate(loader):
        if step == STEPS:
            break
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss, op=dist.ReduceOp.AVG)
        if rank == 0:
            rows = order[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH]
            ref_optimizer.zero_grad()
            ref_loss = F.cross_entropy(reference(ember.tensor(x[rows])), ember.tensor(y[rows]))
            ref_loss.backward()
            ref_optimizer.step()
            print(f"{step:>4} {mean_loss.item():>28.6f} {ref_loss.item():>16.6f}")
    if rank == 0:
        diff = max(
            float(np.abs(p.detach().numpy() - q.detach().numpy()).max())
            for p, q in zip(model.module.parameters(), reference.parameters())
        )
        print(f"largest weight difference after {STEPS} steps: {diff:.2e} (float32)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
