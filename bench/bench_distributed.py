"""Data-parallel training over MPI: where the time goes on this machine.

    python bench/bench_distributed.py            # all three parts
    python bench/bench_distributed.py --part allreduce --rounds 9

1. MiniLM fine-tuning on Rotten Tomatoes with the same global batch (16): one process with 2
   threads (batch 16) against 2 MPI processes with 1 thread each (batch 8 each, ember's
   Trainer under `mpiexec -n 2`, no code change). Median seconds per optimizer step over the
   steps after the first two, rounds interleaved; ratio 2-process / 1-process.
2. A 100 MB float32 allreduce on 2 ranks through `ember.distributed.all_reduce` against raw
   mpi4py `Allreduce(IN_PLACE)`, interleaved in one job; ember's overhead in percent.
3. How much of DDP's gradient allreduce is hidden behind backward (MiniLM, batch 8 per rank,
   25 MB buckets): backward with DDP (t_ddp), backward under no_sync (t_local), and the same
   buckets allreduced after backward with nothing to overlap (t_comm); hidden fraction
   = 1 - (t_ddp - t_local) / t_comm.

Each part prints one JSON line. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "examples", "seed"))

GLOBAL_BATCH, MAX_LENGTH, SEED = 16, 64, 42


def _mpiexec() -> str:
    from ember.distributed.launch import find_mpiexec

    return find_mpiexec()


def _run(command: list, threads: int, timeout: int = 900) -> list:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        EMBER_BENCH_THREADS=str(threads),
        PYTHONPATH=ROOT,
    )
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    # the JSON lines only (the Trainer prints its logs as Python dicts)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]


# ---------------------------------------------------------------------- workers (one process)
def _minilm_trainer(per_device: int, steps: int):
    from _rotten_tomatoes import load_reviews, minilm_folder, tokenize

    import ember
    from ember.train import Trainer, TrainerCallback, TrainingArguments
    from ember.transformers import AutoTokenizer, BertForSequenceClassification

    ember.set_num_threads(int(os.environ.get("EMBER_BENCH_THREADS", "1")))
    train, _ = load_reviews(seed=SEED)
    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    times = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    dataset = tokenize(tokenizer, train, max_length=MAX_LENGTH)
    import tempfile

    args = TrainingArguments(
        tempfile.mkdtemp(prefix="bench-dist-"),
        max_steps=steps,
        per_device_train_batch_size=per_device,
        learning_rate=5e-5,
        seed=SEED,
        save_strategy="no",
        report_to="none",
        logging_steps=1000,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model, args, train_dataset=dataset, processing_class=tokenizer, callbacks=[StepTimes()]
    )
    return trainer, times


def worker_minilm(per_device: int, steps: int) -> None:
    trainer, times = _minilm_trainer(per_device, steps)
    result = trainer.train()
    if trainer.is_world_process_zero():
        print(
            json.dumps(
                {
                    "world_size": trainer.world_size,
                    "per_device": per_device,
                    "s_per_step": statistics.median(times[2:]),
                    "train_loss": result.training_loss,
                }
            ),
            flush=True,
        )


def worker_allreduce(rounds: int, megabytes: int) -> None:
    import numpy as np
    from mpi4py import MPI

    import ember
    import ember.distributed as dist

    dist.init_process_group("mpi")
    comm = MPI.COMM_WORLD
    n = megabytes * 1024 * 1024 // 4
    tensor = ember.ones(n, dtype=ember.float32)
    raw = np.ones(n, dtype=np.float32)
    ours, theirs = [], []
    for i in range(rounds + 1):
        for side in ("ember", "mpi4py") if i % 2 == 0 else ("mpi4py", "ember"):
            comm.Barrier()
            start = time.perf_counter()
            if side == "ember":
                dist.all_reduce(tensor)
            else:
                comm.Allreduce(MPI.IN_PLACE, raw, MPI.SUM)
            elapsed = time.perf_counter() - start
            if i > 0:  # the first round pays the page faults
                (ours if side == "ember" else theirs).append(elapsed)
    # everyone agrees on the median: the slowest rank decides a collective's time
    me = comm.allreduce(statistics.median(ours), MPI.MAX)
    them = comm.allreduce(statistics.median(theirs), MPI.MAX)
    if comm.rank == 0:
        print(
            json.dumps(
                {
                    "workload": f"allreduce_{megabytes}MB_2ranks",
                    "ember_s": me,
                    "mpi4py_s": them,
                    "overhead_percent": 100 * (me / them - 1),
                    "bus_GBps_mpi4py": 2 * (megabytes / 1024) * (2 - 1) / 2 / them,
                }
            ),
            flush=True,
        )
    dist.destroy_process_group()


def worker_overlap(rounds: int, per_device: int) -> None:
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel

    trainer, _ = _minilm_trainer(per_device, 1)  # the model, data and collator as trained
    model = trainer.model
    ddp = DistributedDataParallel(model)
    group = ddp._group
    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    batch = {k: v for k, v in batch.items()}

    def step(mode: str) -> float:
        model.zero_grad(set_to_none=True)
        runner = ddp if mode != "local" else model
        loss = trainer.compute_loss(runner, batch)
        group.barrier()
        start = time.perf_counter()
        if mode == "local":  # the same backward, its hooks idle
            with ddp.no_sync():
                loss.backward()
        elif mode == "ddp":
            loss.backward()
        else:  # after: backward alone, then the same buckets reduced with nothing to overlap
            with ddp.no_sync():
                loss.backward()
            t_backward = time.perf_counter() - start
            for bucket in ddp._buckets:
                offset = 0
                for i in bucket.params:
                    grad = ddp._params[i].grad._data.reshape(-1)
                    bucket.buffer[offset : offset + grad.size] = grad
                    offset += grad.size
            group.barrier()
            start = time.perf_counter()
            for bucket in ddp._buckets:
                group.allreduce(bucket.buffer, "sum")
            return t_backward, time.perf_counter() - start
        return time.perf_counter() - start

    timings = {"ddp": [], "local": [], "comm": []}
    for i in range(rounds + 1):
        t_ddp = step("ddp")
        t_local = step("local")
        _, t_comm = step("after")
        if i > 0:
            timings["ddp"].append(t_ddp)
            timings["local"].append(t_local)
            timings["comm"].append(t_comm)
    medians = {k: group.allgather_object(statistics.median(v)) for k, v in timings.items()}
    if group.rank == 0:
        t_ddp, t_local, t_comm = (max(medians[k]) for k in ("ddp", "local", "comm"))
        exposed = max(t_ddp - t_local, 0.0)
        print(
            json.dumps(
                {
                    "workload": "ddp_overlap_minilm",
                    "per_device": per_device,
                    "buckets": len(ddp._buckets),
                    "gradient_MB": sum(b.buffer.nbytes for b in ddp._buckets) / 2**20,
                    "backward_ddp_s": t_ddp,
                    "backward_local_s": t_local,
                    "allreduce_alone_s": t_comm,
                    "hidden_fraction": max(0.0, 1 - exposed / t_comm),
                }
            ),
            flush=True,
        )
    dist.destroy_process_group()


# ---------------------------------------------------------------------- orchestration
def part_minilm(rounds: int, steps: int) -> None:
    """1 process x 2 threads vs 2 processes x 1 thread (and 1 x 1 for scale), interleaved."""
    script = os.path.abspath(__file__)
    configs = {  # name: (processes, threads)
        "1 process x 2 threads": (1, 2),
        "2 processes x 1 thread": (2, 1),
        "1 process x 1 thread": (1, 1),
    }
    times = {name: [] for name in configs}
    for i in range(rounds):
        names = list(configs) if i % 2 == 0 else list(configs)[::-1]
        for name in names:
            processes, threads = configs[name]
            command = [sys.executable, script, "--worker", "minilm", "--steps", str(steps)]
            command += ["--per-device", str(GLOBAL_BATCH // processes)]
            if processes > 1:
                command = [_mpiexec(), "-n", str(processes), *command]
            times[name].append(_run(command, threads=threads)[0]["s_per_step"])
            print(f"  round {i} {name}: {times[name][-1]:.3f} s/step", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    one, two = medians["1 process x 2 threads"], medians["2 processes x 1 thread"]
    print(
        f"MiniLM, global batch {GLOBAL_BATCH}: "
        + ", ".join(f"{name} {m:.3f} s/step" for name, m in medians.items())
        + f"; 2 processes / 1 process x 2 threads: {two / one:.2f}"
    )
    print(
        json.dumps(
            {
                "workload": "minilm_finetune_global_batch_16",
                "one_process_2_threads_s_per_step": one,
                "two_processes_1_thread_s_per_step": two,
                "one_process_1_thread_s_per_step": medians["1 process x 1 thread"],
                "ratio_2proc_over_1proc_2threads": two / one,
            }
        )
    )


def part_allreduce(rounds: int) -> None:
    script = os.path.abspath(__file__)
    command = [_mpiexec(), "-n", "2", sys.executable, script, "--worker", "allreduce"]
    result = _run(command + ["--rounds", str(rounds)], threads=1)[0]
    print(
        f"100 MB allreduce on 2 ranks: ember {result['ember_s'] * 1e3:.1f} ms, mpi4py "
        f"{result['mpi4py_s'] * 1e3:.1f} ms, overhead {result['overhead_percent']:+.1f}%"
    )
    print(json.dumps(result))


def part_overlap(rounds: int) -> None:
    script = os.path.abspath(__file__)
    command = [_mpiexec(), "-n", "2", sys.executable, script, "--worker", "overlap"]
    result = _run(command + ["--rounds", str(rounds), "--per-device", "8"], threads=1)[0]
    print(
        f"DDP MiniLM backward: {result['backward_ddp_s']:.3f} s with DDP, "
        f"{result['backward_local_s']:.3f} s local, allreduce alone "
        f"{result['allreduce_alone_s']:.3f} s ({result['gradient_MB']:.0f} MB in "
        f"{result['buckets']} buckets): {100 * result['hidden_fraction']:.0f}% hidden"
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("minilm", "allreduce", "overlap"), default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--per-device", type=int, default=8)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker == "minilm":
        return worker_minilm(options.per_device, options.steps)
    if options.worker == "allreduce":
        return worker_allreduce(options.rounds or 7, 100)
    if options.worker == "overlap":
        return worker_overlap(options.rounds or 5, options.per_device)
    if options.part in (None, "allreduce"):
        part_allreduce(options.rounds or 9)
    if options.part in (None, "overlap"):
        part_overlap(options.rounds or 5)
    if options.part in (None, "minilm"):
        part_minilm(options.rounds or 2, options.steps)


if __name__ == "__main__":
    main()
