"""TensorBoard event files, written by ember itself (no tensorboard, TensorFlow or protobuf).

Note [Event files]: a log folder holds `events.out.tfevents.<time>.<host>.<pid>.<n>` files,
each a TFRecord stream of serialized `Event` protocol buffers. A record is
    uint64 length, little-endian | uint32 masked CRC32C of those 8 bytes
    length bytes of data         | uint32 masked CRC32C of the data
where mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32). The first event of a file
carries `file_version = "brain.Event:2"`. The messages used here, with their field numbers
(from tensorboard/compat/proto/{event,summary,tensor,tensor_shape}.proto):
    Event          wall_time=1 (double), step=2 (int64), file_version=3 (string),
                   summary=5 (Summary), session_log=7 (SessionLog: status=1, START = 1)
    Summary        value=1 (repeated Value)
    Value          tag=1, simple_value=2 (float), histo=5 (HistogramProto),
                   tensor=8 (TensorProto), metadata=9 (SummaryMetadata)
    SummaryMetadata  plugin_data=1 (PluginData: plugin_name=1, content=2), data_class=4
    HistogramProto min=1 max=2 num=3 sum=4 sum_squares=5 (doubles),
                   bucket_limit=6, bucket=7 (packed repeated doubles)
    TensorProto    dtype=1 (DT_STRING = 7), tensor_shape=2 (dim=2: size=1), string_val=8
Scalars are written as `simple_value`, a float32, as PyTorch's SummaryWriter does.

Note [Purging a restarted run]: a run that crashed at step T+X and resumes at step T in the same
folder writes, right after the file version, an event at step T with session_log.status START.
TensorBoard's reader (EventAccumulator with purge_orphaned_data, its default, for files of
version 2) then drops every event already read with step >= T, across all tags; the new file
sorts after the old ones by its name (time first), so the old events are read before it.
"""

from __future__ import annotations

import math
import os
import socket
import struct
import threading
import time

import numpy as np

__all__ = ["EventFileWriter", "SummaryWriter", "crc32c"]

# --------------------------------------------------------------------------- CRC32C


def _make_crc_table() -> list[int]:
    polynomial = 0x82F63B78  # Castagnoli, reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes) -> int:
    """The CRC32C (Castagnoli) checksum of `data`, as TFRecord uses.

    Example:
        >>> hex(crc32c(b"123456789"))
        '0xe3069283'
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: framed and checksummed (Note [Event files])."""
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", _masked_crc(header))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


# --------------------------------------------------------------------------- protobuf


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf does
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _field_varint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _field_double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def _field_float(field: int, value: float) -> bytes:
    # float32 rounding as PyTorch's writer does it: beyond float32's range is +-inf (struct
    # would raise OverflowError), nan stays nan.
    with np.errstate(over="ignore"):
        return _key(field, 5) + np.asarray(value, dtype="<f4").tobytes()


def _field_bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _field_packed_doubles(field: int, values) -> bytes:
    return _field_bytes(field, np.asarray(values, dtype="<f8").tobytes())


def _event(
    wall_time: float,
    step: int | None = None,
    *,
    file_version: str | None = None,
    summary_values: list[bytes] = (),
    session_status: int | None = None,
) -> bytes:
    message = _field_double(1, wall_time)
    if step is not None:
        message += _field_varint(2, step)
    if file_version is not None:
        message += _field_bytes(3, file_version.encode())
    if summary_values:
        message += _field_bytes(5, b"".join(_field_bytes(1, v) for v in summary_values))
    if session_status is not None:
        message += _field_bytes(7, _field_varint(1, session_status))
    return message


_SESSION_START = 1  # SessionLog.SessionStatus.START


def _plugin_metadata(plugin_name: str, content: bytes = b"", data_class: int = 0) -> bytes:
    plugin = _field_bytes(1, plugin_name.encode())
    if content:
        plugin += _field_bytes(2, content)
    message = _field_bytes(1, plugin)
    if data_class:
        message += _field_varint(4, data_class)
    return message


# --------------------------------------------------------------------------- files


class EventFileWriter:
    """Appends events to one `events.out.tfevents.*` file in `log_dir`."""

    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(
        self,
        log_dir: str | os.PathLike,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
    ):
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        with EventFileWriter._counter_lock:
            EventFileWriter._counter += 1
            number = EventFileWriter._counter
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{number}{filename_suffix}"
        )
        self.path = os.path.join(self.log_dir, name)
        self._file = open(self.path, "wb")
        self._pending: list[bytes] = []
        self._max_queue = max_queue
        self._flush_secs = flush_secs
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.add_event(_event(time.time(), 0, file_version="brain.Event:2"))
        self.flush()

    def add_event(self, event: bytes) -> None:
        with self._lock:
            if self._file is None:
                raise ValueError(f"SummaryWriter: the event file {self.path!r} is closed")
            self._pending.append(tfrecord(event))
            due = time.monotonic() - self._last_flush >= self._flush_secs
        if len(self._pending) >= self._max_queue or due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._file is None:
                return
            if self._pending:
                self._file.write(b"".join(self._pending))
                self._pending.clear()
            self._file.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------- the writer


def _scalar(value, where: str) -> float:
    if hasattr(value, "item"):
        value = value.item()
    try:
        return float(value)
    except OverflowError:  # an int beyond float64: +-inf, as float32 would hold it
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: expected a number or a one-element tensor, got {type(value).__name__}"
        ) from None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _step(global_step) -> int:
    """A step as the event's int64 field: ints exactly (no trip through float), whole floats
    accepted; out of int64's range, nan or fractional steps raise instead of wrapping."""
    if hasattr(global_step, "item"):
        global_step = global_step.item()
    if isinstance(global_step, bool) or not isinstance(global_step, (int, float)):
        raise TypeError(f"global_step: expected an int, got {type(global_step).__name__}")
    if isinstance(global_step, float):
        if not global_step.is_integer():
            raise ValueError(f"global_step: expected a whole number, got {global_step!r}")
        global_step = int(global_step)
    if not _INT64_MIN <= global_step <= _INT64_MAX:
        raise ValueError(
            f"global_step: {global_step} does not fit the event file's int64 step field "
            f"[{_INT64_MIN}, {_INT64_MAX}]"
        )
    return global_step


def _as_array(values, where: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a tensor: np.asarray below copies it to the host
        values = values.detach()
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: expected numbers (a tensor, array or list), got {type(values).__name__}"
        ) from None


def _tensorflow_bucket_limits() -> np.ndarray:
    """TensorFlow's default histogram buckets: ±1e-12 * 1.1^k up to 1e20, and 0."""
    positive = []
    value = 1e-12
    while value < 1e20:
        positive.append(value)
        value *= 1.1
    positive = np.array(positive)
    return np.concatenate([-positive[::-1], [0.0], positive, [np.finfo(np.float64).max]])


_TF_LIMITS = None


def _histogram(values: np.ndarray, bins, max_bins: int | None) -> bytes:
    global _TF_LIMITS
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("add_histogram: no finite values to make a histogram of")
    if isinstance(bins, str) and bins == "tensorflow":
        if _TF_LIMITS is None:
            _TF_LIMITS = _tensorflow_bucket_limits()
        limits = _TF_LIMITS
        # bucket i holds limits[i-1] <= v < limits[i]
        counts = np.bincount(np.searchsorted(limits, values, side="right"), minlength=limits.size)[
            : limits.size
        ]
    else:
        counts, edges = np.histogram(values, bins=bins)
        limits = edges[1:]
    if max_bins is not None and counts.size > max_bins:
        factor = math.ceil(counts.size / max_bins)
        pad = -counts.size % factor
        counts = np.pad(counts, (0, pad)).reshape(-1, factor).sum(axis=1)
        limits = np.pad(limits, (0, pad), mode="edge").reshape(-1, factor)[:, -1]
    # Keep the filled buckets and the empty one just before each run of them, so that every
    # filled bucket's left edge (the previous limit) is in the proto.
    nonzero = counts > 0
    keep = nonzero | np.append(nonzero[1:], False)
    message = (
        _field_double(1, values.min())
        + _field_double(2, values.max())
        + _field_double(3, values.size)
        + _field_double(4, values.sum())
        + _field_double(5, float(np.dot(values, values)))
        + _field_packed_doubles(6, limits[keep])
        + _field_packed_doubles(7, counts[keep])
    )
    return message


class SummaryWriter:
    """Writes TensorBoard logs (scalars, histograms, text) to event files in `log_dir`.

    Like PyTorch's `torch.utils.tensorboard.SummaryWriter`; events reach the disk every
    `max_queue` events, every `flush_secs` seconds (checked when an event is added), on
    `flush()` and on `close()`.

    Args:
        log_dir: the folder; default `runs/<date>_<time>_<host><comment>`.
        comment: appended to the default log_dir.
        purge_step: resuming a crashed run at this step: events that earlier runs wrote to the
            same log_dir at steps >= purge_step are hidden when TensorBoard reads the folder
            (Note [Purging a restarted run]). Unlike PyTorch, the `add_scalars` run folders
            are purged too.
        max_queue: events held in memory before they are written.
        flush_secs: the longest time an event waits in memory, checked on each add.
        filename_suffix: appended to the event file name.

    Example:
        >>> import tempfile
        >>> with SummaryWriter(tempfile.mkdtemp()) as writer:
        ...     for step in range(3):
        ...         writer.add_scalar("loss", 1.0 / (step + 1), step)
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
    ):
        if log_dir is None:
            stamp = time.strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        if purge_step is not None and (
            isinstance(purge_step, bool) or not isinstance(purge_step, (int, np.integer))
        ):
            raise TypeError(f"SummaryWriter: purge_step must be an int step, got {purge_step!r}")
        self.log_dir = os.fspath(log_dir)
        self.purge_step = None if purge_step is None else int(purge_step)
        self._options = dict(
            max_queue=max_queue, flush_secs=flush_secs, filename_suffix=filename_suffix
        )
        self._writer: EventFileWriter | None = self._open(self.log_dir)
        self._sub_writers: dict[str, EventFileWriter] = {}

    def _open(self, folder: str) -> EventFileWriter:
        writer = EventFileWriter(folder, **self._options)
        if self.purge_step is not None:  # Note [Purging a restarted run]
            writer.add_event(_event(time.time(), self.purge_step, session_status=_SESSION_START))
        return writer

    # The file writer of the main folder (PyTorch's name).
    def get_logdir(self) -> str:
        return self.log_dir

    def _file_writer(self) -> EventFileWriter:
        if self._writer is None:
            raise ValueError(f"SummaryWriter({self.log_dir!r}) is closed")
        return self._writer

    def _add(self, value: bytes, global_step, walltime, writer: EventFileWriter | None = None):
        step = None if global_step is None else _step(global_step)
        wall_time = time.time() if walltime is None else float(walltime)
        (writer or self._file_writer()).add_event(_event(wall_time, step, summary_values=[value]))

    def add_scalar(
        self, tag: str, scalar_value, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """Log one number (a float, int, NumPy scalar or one-element tensor) under `tag`.

        Example:
            >>> import tempfile
            >>> writer = SummaryWriter(tempfile.mkdtemp())
            >>> writer.add_scalar("train/loss", 0.25, global_step=10)
            >>> writer.close()
        """
        _check_tag(tag, "add_scalar")
        value = _scalar(scalar_value, f"add_scalar({tag!r})")
        self._add(_field_bytes(1, tag.encode()) + _field_float(2, value), global_step, walltime)

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: dict,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Log several related numbers on one chart; each key is written to its own run folder
        `<log_dir>/<main_tag>_<key>` under the tag `main_tag`, as PyTorch does.

        Example:
            >>> import tempfile
            >>> with SummaryWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_scalars("loss", {"train": 0.3, "eval": 0.4}, global_step=1)
        """
        _check_tag(main_tag, "add_scalars")
        if not isinstance(tag_scalar_dict, dict):
            raise TypeError(
                f"add_scalars: expected a dict of name -> number, got "
                f"{type(tag_scalar_dict).__name__}"
            )
        self._file_writer()
        for key, scalar_value in tag_scalar_dict.items():
            folder = os.path.join(self.log_dir, f"{main_tag}_{key}".replace("/", "_"))
            writer = self._sub_writers.get(folder)
            if writer is None:
                writer = self._sub_writers[folder] = self._open(folder)
            value = _scalar(scalar_value, f"add_scalars({main_tag!r}, {key!r})")
            self._add(
                _field_bytes(1, main_tag.encode()) + _field_float(2, value),
                global_step,
                walltime,
                writer,
            )

    def add_histogram(
        self,
        tag: str,
        values,
        global_step: int | None = None,
        bins="tensorflow",
        walltime: float | None = None,
        max_bins: int | None = None,
    ) -> None:
        """Log the distribution of `values` (a tensor, array or list of numbers).

        `bins` is 'tensorflow' (TensorFlow's exponential buckets), or anything `numpy.histogram`
        accepts ('auto', 'fd', an int...). Non-finite values are left out.

        Example:
            >>> import tempfile, numpy as np
            >>> with SummaryWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_histogram("weights", np.random.randn(1000), global_step=0)
        """
        _check_tag(tag, "add_histogram")
        array = _as_array(values, f"add_histogram({tag!r})")
        histo = _histogram(array, bins, max_bins)
        self._add(_field_bytes(1, tag.encode()) + _field_bytes(5, histo), global_step, walltime)

    def add_text(
        self,
        tag: str,
        text_string: str,
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Log a (Markdown) string, shown in TensorBoard's Text tab.

        Example:
            >>> import tempfile
            >>> with SummaryWriter(tempfile.mkdtemp()) as writer:
            ...     writer.add_text("notes", "lr **5e-5**, batch 16", global_step=0)
        """
        _check_tag(tag, "add_text")
        if not isinstance(text_string, str):
            raise TypeError(f"add_text({tag!r}): expected a str, got {type(text_string).__name__}")
        shape = _field_bytes(2, _field_varint(1, 1))  # TensorShapeProto{dim: [{size: 1}]}
        tensor = (
            _field_varint(1, 7)
            + _field_bytes(2, shape)
            + _field_bytes(8, text_string.encode("utf-8"))
        )
        metadata = _plugin_metadata("text", data_class=2)  # DATA_CLASS_TENSOR
        self._add(
            _field_bytes(1, tag.encode()) + _field_bytes(9, metadata) + _field_bytes(8, tensor),
            global_step,
            walltime,
        )

    def flush(self) -> None:
        """Write every pending event to disk."""
        for writer in [self._writer, *self._sub_writers.values()]:
            if writer is not None:
                writer.flush()

    def close(self) -> None:
        """Flush and close the event files; later adds raise an error."""
        for writer in [self._writer, *self._sub_writers.values()]:
            if writer is not None:
                writer.close()
        self._writer = None
        self._sub_writers.clear()

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __repr__(self) -> str:
        state = "closed" if self._writer is None else "open"
        return f"SummaryWriter(log_dir={self.log_dir!r}, {state})"


def _check_tag(tag, where: str) -> None:
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"SummaryWriter.{where}: expected a non-empty str tag, got {tag!r}")
