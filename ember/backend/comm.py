"""L1: communication between processes, on backend arrays, over MPI (mpi4py, imported lazily).

This is to collectives what `numpy_backend` is to kernels: the one place that talks to the
engine (MPI), on raw NumPy arrays, below every layer that needs it. `ember.nn.parallel`
(DistributedDataParallel, L5), `ember.data.DistributedSampler` (L5) and the Trainer (L8) use
the default group from here; `ember.distributed` (L9) is the PyTorch-style face on Tensors.

Note [Collective waits]: every collective is started non-blocking (`Iallreduce`, `Ibcast`...)
and finished by `ProcessGroup.wait`, which polls `Testall` (spinning first, then sleeping
briefly) instead of blocking inside MPI. Polling drives MPI's progress engine as fast as a
blocking wait would, and lets the wait give up with a `DistributedError` when the watchdog
reports a failed rank or the group's timeout passes, where a blocking `MPI_Wait` would hang.
One exception: a blocking (`async_op=False`) allreduce or broadcast of `BLOCKING_MIN_BYTES`
or more calls MPI's blocking collective, whose algorithms for large buffers are faster than
the non-blocking ones (MPICH: a 100 MB allreduce ~5% faster); if a rank fails during it, the
watchdog ends this process after `FAILURE_GRACE_S` with the error naming that rank.

Note [Rank failure]: MPI itself does not say which rank died (MPICH's launcher kills the job and
names a pid). At `init`, each rank opens a TCP connection to rank 0 (127.0.0.1 when all ranks
share a host), and a daemon thread per rank watches it. A rank whose Python raises an uncaught
exception sends `failed <rank> <reason>` before exiting; a rank that is killed closes its socket
(the kernel does it). Rank 0 relays either to every rank. A rank told of a failure raises
`DistributedError("rank 1 ... failed: ...")` from its current or next collective wait; if it
reaches none within `FAILURE_GRACE_S`, the watchdog prints the error and ends the process. A
process that ends after a failure skips `MPI_Finalize` (which would wait for the dead rank) and
exits with status 1 (after unlinking the MPI library's shared-memory segments), so nothing
hangs and nothing is left in /dev/shm. A rank that ends normally says `bye` (relayed by rank
0) and waits, watched, in a barrier on a communicator of its own for the others to end too
(MPI_Finalize would wait unwatched, after Python's threads have stopped); a collective still
waiting `LEFT_GRACE_S` after a rank said bye fails naming it (a rank that called sys.exit
early): a healthy job never waits on a rank that has ended. `ember launch` runs MPICH's
mpiexec with `-disable-auto-cleanup` and each rank under a supervisor that turns a death by
signal into an exit status, so the launcher does not kill the survivors before they report;
under a plain `mpiexec` the launcher kills them itself at once (its message names the pid, not
the rank).
"""

from __future__ import annotations

import atexit
import os
import pickle
import socket
import sys
import threading
import time

import numpy as np

from ember._util.errors import DistributedError

__all__ = [
    "ReduceOp",
    "ProcessGroup",
    "Work",
    "init",
    "destroy",
    "is_initialized",
    "default_group",
    "env_world",
    "rank",
    "world_size",
]

DEFAULT_TIMEOUT_S = 1800.0  # PyTorch's default process-group timeout
FAILURE_GRACE_S = 10.0  # Note [Rank failure]
BLOCKING_MIN_BYTES = 1 << 20  # Note [Collective waits]
LEFT_GRACE_S = 5.0  # a collective still waiting this long after a rank said bye gives up


class ReduceOp:
    """Reduction operators of `all_reduce`, `reduce_scatter` (PyTorch's `ReduceOp`)."""

    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"

    ALL = (SUM, AVG, PRODUCT, MIN, MAX)


def _check_op(op, what: str) -> str:
    name = getattr(op, "value", op)
    if isinstance(name, str) and name.lower() in ReduceOp.ALL:
        return name.lower()
    raise DistributedError(
        f"{what}: unknown reduce op {op!r}; expected one of ReduceOp.SUM, AVG, PRODUCT, MIN, MAX"
    )


def env_world() -> tuple[int, int] | None:
    """(rank, world size) announced by a launcher's environment (MPICH's hydra, Open MPI,
    PMIx, Slurm, torchrun), or None outside one; read without importing MPI."""
    env = os.environ
    for rank_key, size_key in (
        ("PMI_RANK", "PMI_SIZE"),
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("RANK", "WORLD_SIZE"),
    ):
        if rank_key in env and size_key in env:
            try:
                return int(env[rank_key]), int(env[size_key])
            except ValueError:
                continue
    return None


def mpi_launched_size() -> int:
    """The number of ranks an MPI launcher (mpiexec/mpirun, Slurm's srun with PMI) started this
    process among, from its environment; 1 outside one. Read without importing MPI."""
    env = os.environ
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        if key in env:
            try:
                return int(env[key])
            except ValueError:
                pass
    if "PMIX_RANK" in env and "SLURM_NTASKS" in env:
        try:
            return int(env["SLURM_NTASKS"])
        except ValueError:
            pass
    return 1


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(
            "ember.distributed needs mpi4py and an MPI library: pip install 'ember[distributed]' "
            f"(mpi4py and the mpich wheel); importing it failed: {e}"
        ) from None
    return MPI


class Work:
    """A collective in flight (PyTorch's `Work`): `wait()` finishes it, `is_completed()` polls.

    `then` callbacks run once, in order, when the requests complete (an AVG's division, the
    copy of a gathered buffer into the caller's arrays).
    """

    def __init__(self, group: "ProcessGroup", requests: list, what: str, then=None, statuses=None):
        self._group = group
        self._requests = requests
        self._statuses = statuses
        self._what = what
        self._then = then
        self._done = False
        self.result_value = None

    def _finish(self) -> None:
        self._done = True
        self._requests = []
        if self._then is not None:
            then, self._then = self._then, None
            self.result_value = then()

    def is_completed(self) -> bool:
        if self._done:
            return True
        if self._group._test(self._requests, self._statuses):
            self._finish()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until done; raises DistributedError on a rank failure or a timeout."""
        if not self._done:
            self._group.wait(self._requests, self._what, timeout, self._statuses)
            self._finish()
        return True

    def result(self):
        self.wait()
        return self.result_value


class ProcessGroup:
    """The ranks of an MPI communicator and the collectives among them, on NumPy arrays.

    Arrays are updated in place where PyTorch updates tensors in place. Every method with
    `async_op` returns a `Work` when it is True and waits otherwise (Note [Collective waits]).
    """

    def __init__(self, comm, timeout: float = DEFAULT_TIMEOUT_S):
        self.MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = float(timeout)
        self.watchdog: _Watchdog | None = None
        self.exit_comm = None

    # ---------------------------------------------------------------- waiting
    def _test(self, requests, statuses=None) -> bool:
        if not requests:
            return True
        try:
            return bool(self.MPI.Request.Testall(requests, statuses))
        except self.MPI.Exception as e:
            self._raise_failure(f"MPI error: {e}")
            raise

    def _raise_failure(self, what: str) -> None:
        if self.watchdog is not None and self.watchdog.failure is not None:
            raise DistributedError(f"{what}: {self.watchdog.failure}")

    def wait(
        self,
        requests,
        what: str,
        timeout: float | None = None,
        statuses=None,
        check_departed: bool = True,
    ) -> None:
        """Poll `requests` to completion (Note [Collective waits])."""
        limit = self.timeout if timeout is None else float(timeout)
        start = time.monotonic()
        spins = 0
        test = self._test
        while not test(requests, statuses):
            spins += 1
            if spins & 1023:
                continue
            watchdog = self.watchdog
            waited = time.monotonic() - start
            if watchdog is not None:
                if watchdog.failure is not None:
                    raise DistributedError(f"{what} on rank {self.rank}: {watchdog.failure}")
                if check_departed and watchdog.departed and waited > LEFT_GRACE_S:
                    left = ", ".join(watchdog.describe(r) for r in sorted(watchdog.departed))
                    raise DistributedError(
                        f"{what} on rank {self.rank}: {left} ended its program (sys.exit, or "
                        f"the end of its script) while this rank waits for it"
                    )
            if waited > limit:
                raise DistributedError(
                    f"{what} on rank {self.rank} of {self.size} did not complete within "
                    f"{limit:g} s (a rank that never reached it, or a deadlock); the timeout is "
                    f"init_process_group(timeout=...)"
                )
            if waited > 2.0:  # a long wait (a slow rank): stop burning its core
                time.sleep(0.001)

    def _blocking(self, what: str, call, *args, **kwargs) -> None:
        """A blocking MPI collective (Note [Collective waits])."""
        watchdog = self.watchdog
        if watchdog is not None and watchdog.failure is not None:
            raise DistributedError(f"{what} on rank {self.rank}: {watchdog.failure}")
        try:
            call(*args, **kwargs)
        except self.MPI.Exception as e:
            self._raise_failure(f"{what} on rank {self.rank}")
            raise DistributedError(f"{what} on rank {self.rank}: MPI error: {e}") from None

    def _done(self, requests, what: str, async_op: bool, then=None):
        work = Work(self, requests, what, then)
        if async_op:
            return work
        work.wait()
        return work.result_value

    # ---------------------------------------------------------------- checks
    def _buffer(self, array, what: str):
        if not isinstance(array, np.ndarray):
            raise DistributedError(
                f"{what}: expected a NumPy-backed (CPU) tensor, got {type(array).__name__}"
            )
        if array.dtype.kind not in "fiub":
            raise DistributedError(f"{what}: unsupported dtype {array.dtype}")
        return array

    def _check_rank(self, rank: int, what: str, name: str) -> int:
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.size:
            raise DistributedError(
                f"{what}: {name}={rank!r} is not a rank of this group (0..{self.size - 1})"
            )
        return int(rank)

    def _mpi_op(self, op: str):
        MPI = self.MPI
        return {
            "sum": MPI.SUM,
            "avg": MPI.SUM,
            "product": MPI.PROD,
            "min": MPI.MIN,
            "max": MPI.MAX,
        }[op]

    def _average(self, array, op: str, what: str):
        if op != "avg":
            return None
        if array.dtype.kind != "f":
            raise DistributedError(
                f"{what}: ReduceOp.AVG needs a floating dtype, got {array.dtype}"
            )
        size = self.size

        def divide():
            np.divide(array, size, out=array)

        return divide

    # ---------------------------------------------------------------- collectives
    def allreduce(self, array, op="sum", async_op: bool = False):
        """Reduce `array` over all ranks, in place, on every rank."""
        what = "all_reduce"
        op = _check_op(op, what)
        self._buffer(array, what)
        then = self._average(array, op, what)
        target, copy_back = _contiguous(array)
        if array.size == 0:
            return self._done([], what, async_op, then)
        if not async_op and target.nbytes >= BLOCKING_MIN_BYTES:
            self._blocking(what, self.comm.Allreduce, self.MPI.IN_PLACE, target, self._mpi_op(op))
            return _chain(copy_back, then)() if (copy_back or then) else None
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, target, self._mpi_op(op))
        return self._done([request], what, async_op, _chain(copy_back, then))

    def broadcast(self, array, src: int = 0, async_op: bool = False):
        """Copy rank `src`'s `array` into every rank's `array`."""
        what = "broadcast"
        src = self._check_rank(src, what, "src")
        self._buffer(array, what)
        target, copy_back = _contiguous(array)
        if not async_op and target.nbytes >= BLOCKING_MIN_BYTES:
            self._blocking(what, self.comm.Bcast, target, root=src)
            return copy_back() if copy_back is not None else None
        request = self.comm.Ibcast(target, root=src)
        return self._done([request], what, async_op, copy_back)

    def allgather(self, outputs: list, array, async_op: bool = False):
        """outputs[r] <- rank r's `array`, on every rank."""
        what = "all_gather"
        self._buffer(array, what)
        self._check_list(outputs, array, what, "tensor_list")
        send = np.ascontiguousarray(array)
        recv = np.empty((self.size,) + array.shape, dtype=array.dtype)
        request = self.comm.Iallgather(send, recv)

        def scatter_out():
            for r, out in enumerate(outputs):
                out[...] = recv[r]

        return self._done([request], what, async_op, scatter_out)

    def allgather_into(self, output, array, async_op: bool = False):
        """`output` (size x array's numel, or world-size times its first dim) <- every rank's
        `array` in rank order (PyTorch's all_gather_into_tensor)."""
        what = "all_gather_into_tensor"
        self._buffer(array, what)
        if output.size != array.size * self.size or output.dtype != array.dtype:
            raise DistributedError(
                f"{what}: output should hold {self.size} x {array.shape} {array.dtype}, "
                f"got {output.shape} {output.dtype}"
            )
        target, copy_back = _contiguous(output)
        request = self.comm.Iallgather(np.ascontiguousarray(array), target)
        return self._done([request], what, async_op, copy_back)

    def reduce_scatter(self, output, inputs: list, op="sum", async_op: bool = False):
        """output <- the reduction over ranks of every rank's inputs[this rank]."""
        what = "reduce_scatter"
        op = _check_op(op, what)
        self._buffer(output, what)
        self._check_list(inputs, output, what, "input_list")
        send = np.ascontiguousarray(np.stack([np.asarray(x) for x in inputs]))
        then = self._average(output, op, what)
        target, copy_back = _contiguous(output)
        request = self.comm.Ireduce_scatter_block(send, target, self._mpi_op(op))
        return self._done([request], what, async_op, _chain(copy_back, then))

    def gather(self, array, outputs: list | None, dst: int = 0, async_op: bool = False):
        """On rank `dst`, outputs[r] <- rank r's `array`."""
        what = "gather"
        dst = self._check_rank(dst, what, "dst")
        self._buffer(array, what)
        recv = None
        if self.rank == dst:
            if outputs is None:
                raise DistributedError(f"{what}: rank {dst} (dst) needs a gather_list")
            self._check_list(outputs, array, what, "gather_list")
            recv = np.empty((self.size,) + array.shape, dtype=array.dtype)
        elif outputs:
            raise DistributedError(f"{what}: only rank {dst} (dst) takes a gather_list")
        request = self.comm.Igather(np.ascontiguousarray(array), recv, root=dst)

        def scatter_out():
            if recv is not None:
                for r, out in enumerate(outputs):
                    out[...] = recv[r]

        return self._done([request], what, async_op, scatter_out)

    def scatter(self, output, inputs: list | None, src: int = 0, async_op: bool = False):
        """output <- rank `src`'s inputs[this rank]."""
        what = "scatter"
        src = self._check_rank(src, what, "src")
        self._buffer(output, what)
        send = None
        if self.rank == src:
            if inputs is None:
                raise DistributedError(f"{what}: rank {src} (src) needs a scatter_list")
            self._check_list(inputs, output, what, "scatter_list")
            send = np.ascontiguousarray(np.stack([np.asarray(x) for x in inputs]))
        elif inputs:
            raise DistributedError(f"{what}: only rank {src} (src) takes a scatter_list")
        target, copy_back = _contiguous(output)
        request = self.comm.Iscatter(send, target, root=src)
        return self._done([request], what, async_op, copy_back)

    def send(self, array, dst: int, tag: int = 0, async_op: bool = False):
        what = f"send to rank {dst}"
        dst = self._check_rank(dst, "send", "dst")
        self._buffer(array, what)
        request = self.comm.Isend(np.ascontiguousarray(array), dest=dst, tag=tag)
        return self._done([request], what, async_op)

    def recv(self, array, src: int | None = None, tag: int = 0, async_op: bool = False):
        """Receive into `array` from `src` (any rank when None); returns the sender's rank."""
        MPI = self.MPI
        what = "recv" if src is None else f"recv from rank {src}"
        source = MPI.ANY_SOURCE if src is None else self._check_rank(src, "recv", "src")
        self._buffer(array, what)
        target, copy_back = _contiguous(array)
        status = MPI.Status()
        request = self.comm.Irecv(target, source=source, tag=tag)

        def finish():
            if copy_back is not None:
                copy_back()
            return status.Get_source()

        work = Work(self, [request], what, finish, statuses=[status])
        if async_op:
            return work
        return work.result()

    def barrier(self, async_op: bool = False):
        return self._done([self.comm.Ibarrier()], "barrier", async_op)

    # ---------------------------------------------------------------- objects
    def allgather_object(self, obj) -> list:
        """Every rank's picklable `obj`, in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.empty(self.size, dtype=np.int64)
        self.wait(
            [self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes)],
            "all_gather_object",
        )
        recv = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        request = self.comm.Iallgatherv(data, [recv, sizes, offsets, self.MPI.BYTE])
        self.wait([request], "all_gather_object")
        return [
            pickle.loads(recv[o : o + s].tobytes())
            for o, s in zip(offsets.tolist(), sizes.tolist())
        ]

    def broadcast_object(self, obj, src: int = 0):
        """Rank `src`'s picklable `obj`, on every rank."""
        src = self._check_rank(src, "broadcast_object", "src")
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if self.rank == src else None
        size = np.array([0 if data is None else data.size], dtype=np.int64)
        self.broadcast(size, src)
        buf = data.copy() if data is not None else np.empty(int(size[0]), dtype=np.uint8)
        self.broadcast(buf, src)
        return pickle.loads(buf.tobytes()) if self.rank != src else obj

    def _check_list(self, arrays, like, what: str, name: str) -> None:
        if arrays is None or len(arrays) != self.size:
            raise DistributedError(
                f"{what}: {name} should hold {self.size} tensors (one per rank), got "
                f"{None if arrays is None else len(arrays)}"
            )
        for i, a in enumerate(arrays):
            if tuple(a.shape) != like.shape or a.dtype != like.dtype:
                raise DistributedError(
                    f"{what}: {name}[{i}] is {tuple(a.shape)} {a.dtype}, expected "
                    f"{like.shape} {like.dtype}"
                )


def _contiguous(array):
    """(a C-contiguous buffer for `array`, a callback copying it back, or None)."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array, None
    if not array.flags.writeable:
        raise DistributedError("collective: the output array is read-only")
    buffer = np.ascontiguousarray(array)

    def copy_back():
        array[...] = buffer

    return buffer, copy_back


def _chain(first, second):
    if first is None:
        return second
    if second is None:
        return first

    def both():
        first()
        second()

    return both


# -------------------------------------------------------------------- the watchdog
class _Watchdog:
    """Note [Rank failure]: one TCP connection per rank to rank 0, watched by a daemon thread."""

    def __init__(self, group: ProcessGroup):
        self.group = group
        self.rank = group.rank
        self.size = group.size
        self.failure: str | None = None
        self.failure_time: float | None = None
        self.peers: dict[int, socket.socket] = {}
        self.departed: set[int] = set()
        self.stopping = False
        self._lock = threading.Lock()
        self._own_exception: str | None = None
        hosts = group.allgather_object(socket.gethostname())
        self.hosts = hosts
        if self.rank == 0:
            local = all(h == hosts[0] for h in hosts)
            bind = "127.0.0.1" if local else "0.0.0.0"
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind((bind, 0))
            server.listen(self.size)
            address = os.environ.get("EMBER_MASTER_ADDR") or (
                "127.0.0.1" if local else socket.gethostbyname(socket.gethostname())
            )
            group.broadcast_object((address, server.getsockname()[1]))
            server.settimeout(60)
            try:
                for _ in range(self.size - 1):
                    conn, _ = server.accept()
                    peer = int(conn.recv(16).split(b"\n", 1)[0])
                    self.peers[peer] = conn
            finally:
                server.close()
        else:
            address, port = group.broadcast_object(None)
            conn = socket.create_connection((address, port), timeout=60)
            conn.sendall(f"{self.rank}\n".encode().ljust(16))
            self.peers[0] = conn
        for conn in self.peers.values():
            conn.settimeout(None)
        self.thread = threading.Thread(target=self._watch, name="ember-watchdog", daemon=True)
        self.thread.start()

    def describe(self, rank: int) -> str:
        return f"rank {rank} (host {self.hosts[rank]})"

    def _set_failure(self, message: str) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = message
                self.failure_time = time.monotonic()

    def _send_all(self, line: str, skip: int | None = None) -> None:
        data = (line.replace("\n", " ") + "\n").encode()
        for r, conn in list(self.peers.items()):
            if r == skip:
                continue
            try:
                conn.sendall(data)
            except OSError:
                pass

    def _watch(self) -> None:
        import selectors

        selector = selectors.DefaultSelector()
        buffers = {}
        for r, conn in self.peers.items():
            selector.register(conn, selectors.EVENT_READ, r)
            buffers[r] = b""
        open_peers = set(self.peers)
        while open_peers:
            events = selector.select(timeout=0.5)
            for key, _ in events:
                r = key.data
                try:
                    chunk = key.fileobj.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_peers.discard(r)
                    if r not in self.departed and not self.stopping:
                        if self.rank == 0:
                            message = (
                                f"{self.describe(r)} ended without a word (killed, or "
                                f"crashed outside Python)"
                            )
                            self._set_failure(message)
                            self._send_all(f"failed {r} {message}", skip=r)
                        else:
                            self._set_failure(
                                f"{self.describe(0)} ended without a word (killed, or crashed "
                                f"outside Python)"
                            )
                    continue
                buffers[r] += chunk
                while b"\n" in buffers[r]:
                    line, buffers[r] = buffers[r].split(b"\n", 1)
                    self._handle(r, line.decode(errors="replace"))
            self._enforce_grace()
        while not self.stopping:  # every connection closed: keep enforcing the grace period
            self._enforce_grace()
            time.sleep(0.5)

    def _handle(self, sender: int, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "bye":
            self.departed.add(sender)
            if self.rank == 0:
                self._send_all(f"left {sender}", skip=sender)
        elif kind == "left":
            self.departed.add(int(rest))
        elif kind == "failed":
            failed, _, reason = rest.partition(" ")
            self._set_failure(reason)
            if self.rank == 0:
                self._send_all(f"failed {failed} {reason}", skip=int(failed))

    def _enforce_grace(self) -> None:
        if self.failure is None or self._own_exception is not None or self.stopping:
            return
        if time.monotonic() - self.failure_time > FAILURE_GRACE_S:
            sys.stderr.write(
                f"ember.distributed: rank {self.rank}: {self.failure}; this rank reached no "
                f"collective within {FAILURE_GRACE_S:g} s and ends now\n"
            )
            sys.stderr.flush()
            os._exit(1)

    def report_exception(self, exc_type, exc) -> None:
        """This rank's Python raised `exc` and nothing caught it: tell the others."""
        if self.failure is not None and self._own_exception is None:
            return  # the consequence of another rank's failure: rank 0 relayed that already
        text = f"{exc_type.__name__}: {exc}".strip()
        if len(text) > 500:
            text = text[:500] + "..."
        self._own_exception = text
        message = f"{self.describe(self.rank)} failed: {text}"
        self._set_failure(message)
        self._send_all(f"failed {self.rank} {message}")

    def close(self, wait_s: float = 0.0) -> None:
        """Say bye (a normal end), or wait up to `wait_s` for the others to hang up."""
        if wait_s > 0:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self.thread.is_alive():
                if all(_closed(c) for c in self.peers.values()):
                    break
                time.sleep(0.05)
        else:
            self._send_all("bye")
        self.stopping = True
        for conn in self.peers.values():
            try:
                conn.close()
            except OSError:
                pass


def _closed(conn: socket.socket) -> bool:
    try:
        conn.setblocking(False)
        data = conn.recv(65536, socket.MSG_PEEK)
        return data == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# -------------------------------------------------------------------- the default group
_default: ProcessGroup | None = None
_hooks_installed = False
_uncaught: list = []


def init(backend: str = "mpi", timeout: float | None = None, watchdog: bool = True) -> ProcessGroup:
    """Initialise MPI and make COMM_WORLD the default group (idempotent for the same backend)."""
    global _default
    if backend not in ("mpi", None):
        raise DistributedError(
            f"init_process_group: backend {backend!r} is not available; ember runs on 'mpi' "
            f"(mpi4py). 'nccl' and 'gloo' are PyTorch's own engines"
        )
    if _default is not None:
        return _default
    MPI = _mpi()
    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
    _ignore_launcher_notice()
    comm = MPI.COMM_WORLD.Dup()
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    group = ProcessGroup(comm, DEFAULT_TIMEOUT_S if timeout is None else _seconds(timeout))
    if watchdog and group.size > 1:
        group.exit_comm = comm.Dup()  # the end-of-program barrier's own (Note [Rank failure])
        group.watchdog = _Watchdog(group)  # its first allgather: every rank is past MPI_Init
        _unlink_shared_memory()  # Note [Rank failure]: the names only, the mappings stay
    _default = group
    _install_exit_hooks()
    return group


def _ignore_launcher_notice() -> None:
    """MPICH's hydra sends SIGUSR1 to the surviving ranks when one exits early; its default
    action would end them before they report the failure (Note [Rank failure])."""
    import signal

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _seconds(timeout) -> float:
    return float(timeout.total_seconds() if hasattr(timeout, "total_seconds") else timeout)


def _install_exit_hooks() -> None:
    """Note [Rank failure]: report an uncaught exception to the other ranks, and end without
    MPI_Finalize after a failure."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def excepthook(exc_type, exc, tb):
        _uncaught.append((exc_type, exc))
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    atexit.register(_at_exit)  # after mpi4py's own atexit: runs before its MPI_Finalize


def _at_exit() -> None:
    group = _default
    if group is None or group.watchdog is None:
        return
    dog = group.watchdog
    if _uncaught:
        exc_type, exc = _uncaught[-1]
        if not issubclass(exc_type, (KeyboardInterrupt, SystemExit)) or dog.failure is None:
            dog.report_exception(exc_type, exc)
    if dog.failure is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        dog.close(wait_s=FAILURE_GRACE_S + 5 if dog._own_exception else 0.5)
        _unlink_shared_memory()
        os._exit(1)
    # A normal end. MPI_Finalize waits for every rank and runs after Python's threads have
    # stopped, so wait here instead, watched: a rank that fails meanwhile ends this one too.
    dog._send_all("bye")
    try:
        group.wait(
            [group.exit_comm.Ibarrier()],
            "the end of the program (waiting for the other ranks to end theirs)",
            check_departed=False,
        )
    except DistributedError as e:
        sys.stdout.flush()
        sys.stderr.write(f"ember.distributed: {e}\n")
        sys.stderr.flush()
        _unlink_shared_memory()
        os._exit(1)
    dog.close()


def _unlink_shared_memory() -> None:
    """Remove the names of the MPI library's shared-memory segments this process maps.

    MPI_Finalize unlinks them; a process that skips it after a failure (Note [Rank failure]),
    or a job whose launcher SIGKILLs every rank, would leave them in /dev/shm. Once every rank
    on the host has mapped them (after init's first collective) the names are not needed: the
    mappings live on, as with any unlinked file, and the memory goes when the last rank ends,
    however it ends. Called again when a process leaves after a failure, for segments made later.
    """
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    names = set()
    for line in lines:
        path = line.split(maxsplit=5)[-1] if len(line.split(maxsplit=5)) == 6 else ""
        if path.startswith("/dev/shm/") and not path.endswith("(deleted)"):
            name = os.path.basename(path)
            if name.startswith(("mpich", "mpi_", "ompi", "vader", "sm_segment", "psm", "shm")):
                names.add(path)
    for path in names:
        try:
            os.unlink(path)
        except OSError:
            pass


def destroy() -> None:
    """Leave the default group (PyTorch's destroy_process_group)."""
    global _default
    group = _default
    if group is None:
        return
    if group.watchdog is not None and group.watchdog.failure is None:
        group.barrier()
        group.watchdog.close()
    group.watchdog = None
    for comm in (group.comm, group.exit_comm):
        try:
            if comm is not None:
                comm.Free()
        except Exception:
            pass
    _default = None


def is_initialized() -> bool:
    return _default is not None


def default_group() -> ProcessGroup:
    """The group made by init_process_group; a clear error when there is none."""
    if _default is None:
        raise DistributedError(
            "no default process group: call ember.distributed.init_process_group(backend='mpi') "
            "first (and run under mpiexec or `ember launch`)"
        )
    return _default


def rank() -> int:
    """This process's rank: the default group's, else the launcher's, else 0."""
    if _default is not None:
        return _default.rank
    world = env_world()
    return 0 if world is None else world[0]


def world_size() -> int:
    if _default is not None:
        return _default.size
    world = env_world()
    return 1 if world is None else world[1]
