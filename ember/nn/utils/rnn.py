"""Packed and padded sequences for the recurrent layers (PyTorch's `torch.nn.utils.rnn`):
PackedSequence, pack_padded_sequence, pad_packed_sequence, pack_sequence, pad_sequence,
unpad_sequence, unpack_sequence.

Note [Packed layout]: a PackedSequence holds the steps of a batch of sequences sorted by
decreasing length, time-major and without padding: `data` is (sum of lengths, *), step t
contributing its first `batch_sizes[t]` rows (the sequences still running at t).
`sorted_indices[i]` is the original batch row of sorted row i (None when the batch came
sorted) and `unsorted_indices` its inverse. Packing and unpacking are gathers (index_select)
of fixed index arrays, so gradients flow through both.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ember import dtypes as _dt
from ember._util.errors import ShapeError
from ember.ops import shape as S
from ember.tensor import Tensor, tensor

__all__ = [
    "PackedSequence",
    "pack_padded_sequence",
    "pad_packed_sequence",
    "pack_sequence",
    "pad_sequence",
    "unpad_sequence",
    "unpack_sequence",
]


class PackedSequence(NamedTuple):
    """A batch of variable-length sequences without padding (Note [Packed layout]).

    Example:
        >>> import ember
        >>> from ember.nn.utils.rnn import pack_sequence
        >>> p = pack_sequence([ember.tensor([1.0, 2.0, 3.0]), ember.tensor([4.0, 5.0])])
        >>> p.data.tolist(), p.batch_sizes.tolist()
        ([1.0, 4.0, 2.0, 5.0, 3.0], [2, 2, 1])
    """

    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor | None = None
    unsorted_indices: Tensor | None = None

    def to(self, *args, **kwargs) -> "PackedSequence":
        """The same packing with `data` moved or cast (`Tensor.to`'s arguments)."""
        return self._replace(data=self.data.to(*args, **kwargs))

    def float(self) -> "PackedSequence":
        return self._replace(data=self.data.float())

    def double(self) -> "PackedSequence":
        return self._replace(data=self.data.double())

    def detach(self) -> "PackedSequence":
        return self._replace(data=self.data.detach())

    @property
    def is_cuda(self) -> bool:
        return self.data.device.type == "cuda"

    def is_pinned(self) -> bool:
        return False


def _lengths_array(lengths, name: str) -> np.ndarray:
    if isinstance(lengths, Tensor):
        lengths = lengths.detach().cpu().numpy()
    out = np.asarray(lengths)
    if out.ndim != 1 or (out.size and out.dtype.kind not in "iu"):
        raise ValueError(f"{name}: lengths must be a 1-D sequence of integers, got {lengths!r}")
    return out.astype(np.int64)


def batch_sizes_of(lengths) -> np.ndarray:
    """batch_sizes[t]: how many of the (decreasing) `lengths` exceed t."""
    lengths = np.asarray(lengths)
    steps = int(lengths.max()) if lengths.size else 0
    return (lengths[None, :] > np.arange(steps)[:, None]).sum(axis=1).astype(np.int64)


def lengths_of(batch_sizes) -> np.ndarray:
    """The (decreasing) lengths of the sequences in a packing, from its batch_sizes."""
    batch_sizes = np.asarray(batch_sizes)
    if batch_sizes.size == 0:
        return np.zeros(0, dtype=np.int64)
    return (batch_sizes[None, :] > np.arange(int(batch_sizes[0]))[:, None]).sum(axis=1)


def _packed_positions(batch_sizes) -> np.ndarray:
    """(T, B) flat row of each (step, sorted row) in `data`, len(data) where padding."""
    batch_sizes = np.asarray(batch_sizes, dtype=np.int64)
    B = int(batch_sizes[0]) if len(batch_sizes) else 0
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]])
    rows = np.arange(B)[None, :]
    return np.where(rows < batch_sizes[:, None], offsets[:, None] + rows, int(batch_sizes.sum()))


def padded_from_packed(data: Tensor, batch_sizes, padding_value: float = 0.0) -> Tensor:
    """Time-major (T, B, *) padded tensor from packed `data`, rows in sorted order."""
    positions = _packed_positions(batch_sizes)
    T, B = positions.shape
    pad = data.new_full((1,) + tuple(data.shape[1:]), padding_value)
    extended = S.cat([data, pad], 0)
    flat = extended.index_select(0, tensor(positions.reshape(-1), dtype=_dt.int64))
    return flat.reshape((T, B) + tuple(data.shape[1:]))


def packed_from_padded(padded: Tensor, batch_sizes) -> Tensor:
    """Packed `data` from a time-major padded tensor whose rows are in sorted order."""
    batch_sizes = np.asarray(batch_sizes, dtype=np.int64)
    T, B = padded.shape[0], padded.shape[1]
    rows = np.arange(B)[None, :] < batch_sizes[:, None]
    index = (np.arange(T)[:, None] * B + np.arange(B)[None, :])[rows]
    flat = padded.reshape((T * B,) + tuple(padded.shape[2:]))
    return flat.index_select(0, tensor(index, dtype=_dt.int64))


def invert_permutation(permutation: Tensor | None) -> Tensor | None:
    if permutation is None:
        return None
    p = permutation.detach().cpu().numpy()
    out = np.empty_like(p)
    out[p] = np.arange(len(p))
    return tensor(out, dtype=_dt.int64)


def pack_padded_sequence(input: Tensor, lengths, batch_first: bool = False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *) with batch_first) of sequences of the
    given lengths (Note [Packed layout]). With enforce_sorted=False the batch is sorted by
    decreasing length first and the permutation recorded in the result."""
    lengths = _lengths_array(lengths, "pack_padded_sequence")
    if batch_first:
        input = input.transpose(0, 1)
    if input.ndim < 2 or len(lengths) != input.shape[1]:
        raise ShapeError(
            f"pack_padded_sequence: {len(lengths)} lengths for input of shape "
            f"{tuple(input.shape)} (batch dim {0 if batch_first else 1})"
        )
    if lengths.size and lengths.min() <= 0:
        raise ValueError(
            "pack_padded_sequence: length of all samples has to be greater than 0, but found "
            f"an element in 'lengths' that is <= 0: {lengths.tolist()}"
        )
    if lengths.size and lengths.max() > input.shape[0]:
        raise ShapeError(
            f"pack_padded_sequence: a length {int(lengths.max())} exceeds the {input.shape[0]} "
            "steps of the padded input"
        )
    sorted_indices = None
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise ValueError(
                "pack_padded_sequence: `lengths` array must be sorted in decreasing order when "
                "`enforce_sorted` is True. You can pass `enforce_sorted=False` to "
                "pack_padded_sequence and/or pack_sequence to sidestep this requirement if "
                "you do not need ONNX exportability."
            )
    else:
        order = np.argsort(-lengths, kind="stable")
        sorted_indices = tensor(order, dtype=_dt.int64)
        lengths = lengths[order]
        input = input.index_select(1, sorted_indices)
    batch_sizes = batch_sizes_of(lengths)
    data = packed_from_padded(input[: len(batch_sizes)], batch_sizes)
    return PackedSequence(
        data,
        tensor(batch_sizes, dtype=_dt.int64),
        sorted_indices,
        invert_permutation(sorted_indices),
    )


def pad_packed_sequence(
    sequence: PackedSequence,
    batch_first: bool = False,
    padding_value: float = 0.0,
    total_length: int | None = None,
):
    """The padded batch and the lengths (in the original batch order) of a PackedSequence."""
    batch_sizes = sequence.batch_sizes.detach().cpu().numpy().astype(np.int64)
    padded = padded_from_packed(sequence.data, batch_sizes, padding_value)
    lengths = lengths_of(batch_sizes)
    if total_length is not None:
        if total_length < padded.shape[0]:
            raise ValueError(
                "pad_packed_sequence: expected total_length to be at least the length of the "
                f"longest sequence ({padded.shape[0]}), got total_length={total_length}"
            )
        extra = total_length - padded.shape[0]
        if extra:
            fill = padded.new_full((extra,) + tuple(padded.shape[1:]), padding_value)
            padded = S.cat([padded, fill], 0)
    if sequence.unsorted_indices is not None:
        padded = padded.index_select(1, sequence.unsorted_indices)
        lengths = lengths[sequence.unsorted_indices.numpy()]
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, tensor(lengths, dtype=_dt.int64)


def pad_sequence(
    sequences,
    batch_first: bool = False,
    padding_value: float = 0.0,
    padding_side: str = "right",
) -> Tensor:
    """Stack sequences of shapes (L_i, *) into (max L, B, *) (or (B, max L, *)), padded."""
    if padding_side not in ("right", "left"):
        raise ValueError(
            f"pad_sequence: padding_side must be 'left' or 'right', got {padding_side!r}"
        )
    sequences = list(sequences)
    if not sequences:
        raise ValueError("pad_sequence: received an empty list of sequences")
    trailing = tuple(sequences[0].shape[1:])
    for s in sequences:
        if tuple(s.shape[1:]) != trailing:
            raise ShapeError(
                f"pad_sequence: sequences must agree past dim 0, got {tuple(sequences[0].shape)} "
                f"and {tuple(s.shape)}"
            )
    longest = max(s.shape[0] for s in sequences)
    rows = []
    for s in sequences:
        short = longest - s.shape[0]
        if short:
            fill = s.new_full((short,) + trailing, padding_value)
            s = S.cat([s, fill] if padding_side == "right" else [fill, s], 0)
        rows.append(s)
    return S.stack(rows, 0 if batch_first else 1)


def unpad_sequence(padded_sequences: Tensor, lengths, batch_first: bool = False) -> list:
    """The list of sequences that pad_sequence stacked."""
    lengths = _lengths_array(lengths, "unpad_sequence")
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    return [padded_sequences[i, : int(n)] for i, n in enumerate(lengths)]


def pack_sequence(sequences, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of sequences (L_i, *) (pad_sequence then pack_padded_sequence)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list:
    """The list of sequences that pack_sequence packed."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
