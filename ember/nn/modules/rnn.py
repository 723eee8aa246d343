"""Recurrent layers: RNN, LSTM, GRU (stacked, bidirectional, packed sequences, LSTM's
proj_size) and the single-step RNNCell, LSTMCell, GRUCell, with PyTorch's parameter names,
shapes and initialisation so that state dicts move between the two unchanged.

Each direction of each layer runs through one fused recurrence (Note [Fused recurrence] in
ember/ops/rnn.py); a projected LSTM (proj_size > 0) runs the per-step decomposition.
"""

from __future__ import annotations

import math
import warnings

from ember._util.errors import ShapeError
from ember.nn import functional as F
from ember.nn import init
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.nn.utils.rnn import (
    PackedSequence,
    lengths_of,
    packed_from_padded,
    padded_from_packed,
)
from ember.ops import rnn as R
from ember.ops import shape as S
from ember.tensor import Tensor, empty

__all__ = ["RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


class RNNBase(Module):
    """The stacked, optionally bidirectional recurrence shared by RNN, LSTM and GRU.

    Parameters per layer k and direction (suffix "" or "_reverse"), as PyTorch names them:
    weight_ih_l{k} (G*H, in), weight_hh_l{k} (G*H, H_out), bias_ih_l{k}, bias_hh_l{k} (G*H,),
    and for a projected LSTM weight_hr_l{k} (proj_size, H); G is 4 (LSTM), 3 (GRU) or 1, and
    H_out is proj_size if set, else hidden_size. All start uniform in +-1/sqrt(hidden_size).
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(mode, mode)
        if mode not in _GATES:
            raise ValueError(f"RNNBase: unknown mode {mode!r}")
        if (
            not isinstance(dropout, (int, float))
            or not 0 <= dropout <= 1
            or isinstance(dropout, bool)
        ):
            raise ValueError(
                f"{name}: dropout should be a number in range [0, 1] representing the "
                f"probability of an element being zeroed, got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{name}: dropout option adds dropout after all but last recurrent layer, so "
                f"non-zero dropout expects num_layers greater than 1, but got dropout={dropout} "
                f"and num_layers={num_layers}",
                stacklevel=2,
            )
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"{name}: hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"{name}: num_layers must be a positive integer, got {num_layers!r}")
        if proj_size < 0:
            raise ValueError(f"{name}: proj_size should be a positive integer or zero to disable")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        directions = 2 if bidirectional else 1
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size or hidden_size
        factory = {"device": device, "dtype": dtype}
        self._flat_weights_names = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = "_reverse" if direction else ""
                shapes = [
                    ("weight_ih", (gate_size, layer_input)),
                    ("weight_hh", (gate_size, real_hidden)),
                ]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for kind, shape in shapes:
                    name_k = f"{kind}_l{layer}{suffix}"
                    setattr(self, name_k, Parameter(empty(shape, **factory)))
                    self._flat_weights_names.append(name_k)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """A no-op kept for PyTorch code (cuDNN's contiguous weight buffer)."""

    @property
    def _flat_weights(self) -> list:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list:
        """Per layer and direction, the list of that cell's parameters (PyTorch's order)."""
        per = len(self._flat_weights_names) // (self.num_layers * (2 if self.bidirectional else 1))
        w = self._flat_weights
        return [w[i : i + per] for i in range(0, len(w), per)]

    def _cell_weights(self, layer: int, direction: int) -> tuple:
        suffix = "_reverse" if direction else ""
        get = lambda kind: getattr(self, f"{kind}_l{layer}{suffix}", None)  # noqa: E731
        weights = (get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"))
        return weights + ((get("weight_hr"),) if self.proj_size else ())

    def _error_label(self) -> str:
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size})"

    def _expected_hidden(self, batch: int, cell: bool = False) -> tuple:
        directions = 2 if self.bidirectional else 1
        size = self.hidden_size if cell or not self.proj_size else self.proj_size
        return (self.num_layers * directions, batch, size)

    def _check_state(self, state, expected, which: str, batched: bool) -> Tensor:
        want = expected if batched else (expected[0], expected[2])
        if not isinstance(state, Tensor) or tuple(state.shape) != want:
            got = list(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ShapeError(f"{type(self).__name__}: expected {which} size {want}, got {got}")
        return state if batched else state.unsqueeze(1)

    def forward(self, input, hx=None):
        name = type(self).__name__
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            batch_sizes = input.batch_sizes.detach().cpu().numpy()
            x = padded_from_packed(input.data, batch_sizes)
            lengths = tuple(int(n) for n in lengths_of(batch_sizes))
            if len(set(lengths)) == 1:
                lengths = None  # every row runs every step: no masks needed
            batched = True
            if input.data.ndim != 2:
                raise ShapeError(
                    f"{name}: packed input data must have 2 dimensions, got {input.data.ndim}"
                )
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{name}: input must be a Tensor or a PackedSequence")
            if input.ndim not in (2, 3):
                raise ShapeError(
                    f"{name}: Expected input to be 2D or 3D, got {input.ndim}D tensor instead"
                )
            batched = input.ndim == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {x.shape[-1]}"
            )
        weight = self._flat_weights[0]
        if x.dtype != weight.dtype:
            raise ValueError(
                f"{name}: input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: "
                f"model.to({x.dtype})"
            )
        batch = x.shape[1]
        is_lstm = self.mode == "LSTM"
        expected = self._expected_hidden(batch)
        if hx is None:
            h0 = x.new_zeros(expected)
            c0 = x.new_zeros(self._expected_hidden(batch, cell=True)) if is_lstm else None
        else:
            if is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{name}: hx must be a tuple (h_0, c_0)")
                h0 = self._check_state(hx[0], expected, "hidden[0]", batched)
                c0 = self._check_state(
                    hx[1], self._expected_hidden(batch, cell=True), "hidden[1]", batched
                )
            else:
                if not isinstance(hx, Tensor):
                    raise TypeError(f"{name}: hx must be a Tensor")
                h0 = self._check_state(hx, expected, "hidden", batched)
                c0 = None
            if packed and input.sorted_indices is not None:
                h0 = h0.index_select(1, input.sorted_indices)
                c0 = c0.index_select(1, input.sorted_indices) if c0 is not None else None
        output, h_n, c_n = self._run(x, h0, c0, lengths)
        if packed:
            if input.unsorted_indices is not None:
                h_n = h_n.index_select(1, input.unsorted_indices)
                c_n = c_n.index_select(1, input.unsorted_indices) if c_n is not None else None
            output = PackedSequence(
                packed_from_padded(output, batch_sizes),
                input.batch_sizes,
                input.sorted_indices,
                input.unsorted_indices,
            )
        elif not batched:
            output = output.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, ((h_n, c_n) if is_lstm else h_n)

    def _run(self, x, h0, c0, lengths):
        directions = 2 if self.bidirectional else 1
        h_finals, c_finals = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = self._cell_weights(layer, direction)
                reverse = direction == 1
                out, h, c = self._direction(
                    layer_input, h0[k], c0[k] if c0 is not None else None, weights, reverse, lengths
                )
                outputs.append(out)
                h_finals.append(h)
                c_finals.append(c)
            layer_input = outputs[0] if directions == 1 else S.cat(outputs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        h_n = S.stack(h_finals, 0)
        c_n = S.stack(c_finals, 0) if c0 is not None else None
        return layer_input, h_n, c_n

    def _direction(self, x, h0, c0, weights, reverse, lengths):
        mode = self.mode
        if mode == "LSTM":
            if self.proj_size:
                out, (h, c) = R.recurrent_layer_reference(
                    "LSTM", x, (h0, c0), weights, reverse=reverse, lengths=lengths
                )
                return out, h, c
            return R.lstm_layer(x, h0, c0, *weights, reverse=reverse, lengths=lengths)
        if mode == "GRU":
            out, h = R.gru_layer(x, h0, *weights, reverse=reverse, lengths=lengths)
        else:
            nonlinearity = "tanh" if mode == "RNN_TANH" else "relu"
            out, h = R.rnn_layer(
                x, h0, *weights, nonlinearity=nonlinearity, reverse=reverse, lengths=lengths
            )
        return out, h, None

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu.

    Example:
        >>> import ember, ember.nn as nn
        >>> rnn = nn.RNN(10, 20, num_layers=2)
        >>> out, h_n = rnn(ember.randn(5, 3, 10))
        >>> tuple(out.shape), tuple(h_n.shape)
        ((5, 3, 20), (2, 3, 20))
    """

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if len(args) > 3:  # PyTorch's positional order: input, hidden, layers, nonlinearity
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(mode, *args, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Long short-term memory: gates i, f, g, o from x_t and h_{t-1}; c_t = f c_{t-1} + i g,
    h_t = o tanh(c_t) (projected by W_hr when proj_size > 0). Returns (output, (h_n, c_n)).

    Example:
        >>> import ember, ember.nn as nn
        >>> lstm = nn.LSTM(10, 20, batch_first=True, bidirectional=True)
        >>> out, (h_n, c_n) = lstm(ember.randn(3, 5, 10))
        >>> tuple(out.shape), tuple(h_n.shape), tuple(c_n.shape)
        ((3, 5, 40), (2, 3, 20), (2, 3, 20))
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """Gated recurrent unit: gates r, z and candidate n = tanh(W_in x + b_in + r (W_hn h +
    b_hn)); h_t = (1 - z) n + z h_{t-1}.

    Example:
        >>> import ember, ember.nn as nn
        >>> gru = nn.GRU(10, 20)
        >>> out, h_n = gru(ember.randn(5, 3, 10))
        >>> tuple(out.shape), tuple(h_n.shape)
        ((5, 3, 20), (1, 3, 20))
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("GRU", *args, **kwargs)


class RNNCellBase(Module):
    """One step of a recurrence; parameters weight_ih (G*H, in), weight_hh (G*H, H), bias_ih,
    bias_hh (G*H,), uniform in +-1/sqrt(hidden_size) as in PyTorch."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = Parameter(empty((num_chunks * hidden_size, input_size), **factory))
        self.weight_hh = Parameter(empty((num_chunks * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = Parameter(empty((num_chunks * hidden_size,), **factory))
            self.bias_hh = Parameter(empty((num_chunks * hidden_size,), **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _prepare(self, input, hx, states: int):
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ShapeError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise ShapeError(
                f"{name}: input has inconsistent input_size: got {input.shape[-1]} expected "
                f"{self.input_size}"
            )
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        shape = (x.shape[0], self.hidden_size)
        if hx is None:
            hx = tuple(x.new_zeros(shape) for _ in range(states))
        else:
            hx = tuple(hx) if states > 1 else (hx,)
            if len(hx) != states:
                raise TypeError(f"{name}: hx must be a tuple of {states} tensors")
            hx = tuple(h if batched else h.unsqueeze(0) for h in hx)
            for h in hx:
                if tuple(h.shape) != shape:
                    raise ShapeError(
                        f"{name}: hidden state has shape {tuple(h.shape)}, expected {shape}"
                    )
        return x, hx, batched

    def _weights(self):
        return (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(RNNCellBase):
    """One Elman step: h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh), act tanh or relu."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        cell = R.rnn_tanh_cell if self.nonlinearity == "tanh" else R.rnn_relu_cell
        out = cell(x, h, *self._weights())
        return out if batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step; returns (h', c').

    Example:
        >>> import ember, ember.nn as nn
        >>> cell = nn.LSTMCell(10, 20)
        >>> h, c = cell(ember.randn(3, 10))
        >>> tuple(h.shape), tuple(c.shape)
        ((3, 20), (3, 20))
    """

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        x, (h, c), batched = self._prepare(input, hx, 2)
        h, c = R.lstm_cell(x, h, c, *self._weights())
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input, hx=None):
        x, (h,), batched = self._prepare(input, hx, 1)
        out = R.gru_cell(x, h, *self._weights())
        return out if batched else out.squeeze(0)
