"""A 2-rank training run in which one rank fails at step 5 (the fault tests' worker).

`python faults.py OUT MODE RANK`: MODE "kill" (the rank SIGKILLs itself), "raise" (its Python
raises) or "exit" (it calls sys.exit(3) mid-training). Every rank writes its pid to
OUT/pid.rank{r}; the survivors must end with an error naming the failed rank.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import ember  # noqa: E402
import ember.distributed as dist  # noqa: E402
import ember.nn.functional as F  # noqa: E402
from ember import nn  # noqa: E402
from ember.nn.parallel import DistributedDataParallel  # noqa: E402


def main(out: str, mode: str, failing: int) -> None:
    dist.init_process_group(backend="mpi", timeout=60)
    rank = dist.get_rank()
    with open(os.path.join(out, f"pid.rank{rank}"), "w") as f:
        f.write(str(os.getpid()))
    ember.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2)))
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(rank)
    for step in range(10_000):
        if step == 5 and rank == failing:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "exit":
                sys.exit(3)
            raise ValueError(f"boom at step {step}")
        x = ember.tensor(rng.normal(size=(4, 8)).astype(np.float32))
        y = ember.tensor(rng.integers(0, 2, size=4))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    print(f"rank {rank} finished every step: the failure went unnoticed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
