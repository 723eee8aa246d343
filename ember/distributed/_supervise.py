"""The per-rank supervisor that `ember launch` puts between MPI's launcher and each rank.

`python -m ember.distributed._supervise python train.py ...` runs the rank as its child and
ends with the child's status, with one difference: a rank killed by a signal (SIGKILL, the OOM
killer, a segfault) is reported as an exit status (128 + signal) after a line naming the rank.
MPICH's hydra kills every other rank the moment one dies by a signal, even with
`-disable-auto-cleanup`, before they can say which rank failed; an exit status leaves them
running, so their watchdogs report the failure and end them (Note [Rank failure] in
ember/backend/comm.py). The child dies with its supervisor (PR_SET_PDEATHSIG), so killing a
supervisor leaves no orphan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list) -> int:
    if not argv:
        print("usage: python -m ember.distributed._supervise PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    # hydra signals SIGUSR1 to every rank's process group when one rank exits: not for us
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    child = subprocess.Popen(argv, close_fds=False, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        try:
            child.send_signal(signum)
        except OSError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:
            continue
    if code >= 0:
        return code
    name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "?"
    sys.stderr.write(
        f"ember launch: rank {rank} (pid {child.pid} on {os.uname().nodename}) was killed by "
        f"{name}\n"
    )
    sys.stderr.flush()
    return 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
