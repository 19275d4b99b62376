"""RecurrentEncoder (the stacked, optionally bidirectional encoder of the custom cells),
make_encoder (torch's nn.LSTM / nn.GRU for lstm and gru), the forget-gate bias, and the mapping
to and from torch's modules."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn

from .equations import GATE_BLOCKS, LSTM_FAMILY, LayerWeights, check_cell, encoder_output_size, run_reference
from .fastpath import run_fast

# ----------------------------------------------------------------------------------------------
# The encoder


class RecurrentEncoder(nn.Module):
    """Stacked (optionally bidirectional) recurrent encoder with nn.LSTM(batch_first=True)'s
    call contract: encoder(inputs, state=None) -> (states, final), where

        inputs (batch, seq, input_size); states (batch, seq, H * directions), the last layer's h
        at every step, directions concatenated (forward first);
        final  (h_n, c_n) for the LSTM family, h_n for gru, each (layers * directions, batch, H)
               ordered layer 0 forward, layer 0 backward, layer 1 forward, ...; `state` the same.

    Dropout acts on the outputs of every layer but the last, in training only (as nn.LSTM).
    The backward direction runs the same step on the reversed sequence and is reversed back, so
    states[:, t] of both directions belong to input step t.
    """

    def __new__(cls, *args, **kwargs):
        # RecurrentEncoder("grid", ...) is a GridEncoder (gridlstm.py): its layers are linked
        # inside each block, so it walks the grid itself. (No arguments: copy / unpickling.)
        cell = args[0] if args else kwargs.get("cell")
        if cls is RecurrentEncoder and cell == "grid":
            from .gridlstm import GridEncoder
            cls = GridEncoder
        return super().__new__(cls)

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int = 1,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None):
        super().__init__()
        self.cell = check_cell(cell)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, layers
        self.dropout, self.bidirectional, self.batch_first = float(dropout), bidirectional, True
        self.fast = True  # False: forward runs the step-by-step reference
        self._register_parameters({"device": device, "dtype": dtype})
        self.reset_parameters()

    def _register_parameters(self, factory: dict) -> None:
        """torch's layout (equations.py), layer by layer, forward before backward."""
        rows, hidden_size = GATE_BLOCKS[self.cell] * self.hidden_size, self.hidden_size
        for layer in range(self.num_layers):
            n = self.input_size if layer == 0 else encoder_output_size(hidden_size, self.bidirectional)
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                self.register_parameter(f"weight_ih_{name}", nn.Parameter(torch.empty(rows, n, **factory)))
                self.register_parameter(f"weight_hh_{name}", nn.Parameter(torch.empty(rows, hidden_size, **factory)))
                self.register_parameter(f"bias_ih_{name}", nn.Parameter(torch.empty(rows, **factory)))
                self.register_parameter(f"bias_hh_{name}", nn.Parameter(torch.empty(rows, **factory)))
                if self.cell == "peephole":
                    self.register_parameter(f"peephole_{name}", nn.Parameter(torch.empty(3 * hidden_size, **factory)))

    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """torch's rule for every parameter, peepholes included: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def weights(self, layer: int, direction: int) -> LayerWeights:
        name = f"l{layer}{self._suffixes()[direction]}"
        peephole = getattr(self, f"peephole_{name}") if self.cell == "peephole" else None
        return LayerWeights(getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}"),
                            getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}"), peephole)

    def forward(self, inputs: Tensor, state=None):
        return self._run(inputs, state, run_fast if self.fast else run_reference)

    def reference_forward(self, inputs: Tensor, state=None):
        """The same computation one step at a time with the equations written out."""
        return self._run(inputs, state, run_reference)

    def _initial_state(self, inputs: Tensor, state) -> tuple[Tensor, ...]:
        if state is None:
            directions = len(self._suffixes())
            zeros = inputs.new_zeros(self.num_layers * directions, inputs.shape[0], self.hidden_size)
            return (zeros, zeros) if self.cell in LSTM_FAMILY else (zeros,)
        return tuple(state) if self.cell in LSTM_FAMILY else (state,)

    def _run(self, inputs: Tensor, state, run_layer):
        initial = self._initial_state(inputs, state)            # each (layers * dirs, batch, H)
        directions = len(self._suffixes())
        layer_input, finals = inputs, []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                start = tuple(s[layer * directions + direction] for s in initial)
                sequence = layer_input.flip(1) if direction else layer_input
                out, end = run_layer(self.cell, sequence, start, self.weights(layer, direction))
                outputs.append(out.flip(1) if direction else out)  # (batch, seq, H)
                finals.append(end)
            layer_input = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        final = tuple(torch.stack([end[k] for end in finals]) for k in range(len(initial)))
        # (batch, seq, H * directions); not necessarily contiguous (nn.LSTM's is not always either)
        return layer_input, (final if self.cell in LSTM_FAMILY else final[0])

    def extra_repr(self) -> str:
        return (f"{self.cell}, {self.input_size}, {self.hidden_size}, layers={self.num_layers}, "
                f"dropout={self.dropout}, bidirectional={self.bidirectional}")


# ----------------------------------------------------------------------------------------------
# torch's nn.LSTM / nn.GRU, with cuDNN's own bf16 under bf16 autocast


def bf16_autocast_on(inputs: Tensor) -> bool:
    """Whether `inputs` sit on a CUDA device inside a bf16 autocast region."""
    return (inputs.is_cuda and torch.is_autocast_enabled("cuda")
            and torch.get_autocast_dtype("cuda") == torch.bfloat16)


class _CudnnBf16:
    """Under bf16 autocast, torch's autocast wrapper of cuDNN's RNN casts to float16, not bf16
    (found by the bf16 probe on an H200, torch 2.11): an "bf16" LSTM was fp16 without loss scaling.
    These modules run cuDNN's RNN in real bf16 there instead: autocast off, the input, the initial
    state and a bf16 copy of each fp32 weight (differentiable: the gradients reach the fp32
    weights in fp32) handed to the fused kernel; the output is bf16, as autocast's would be.
    Elsewhere (fp32, a CPU) they are exactly nn.LSTM / nn.GRU; parameters and state_dict are the same.
    """

    _fused = None   # _VF.lstm / _VF.gru

    def forward(self, inputs, hx=None):
        if inputs.dim() != 3 or not self.bf16_here(inputs):
            return super().forward(inputs, hx)
        return self._bf16_forward(inputs, hx)

    @staticmethod
    def bf16_here(inputs: Tensor) -> bool:
        return bf16_autocast_on(inputs)

    def _bf16_forward(self, inputs: Tensor, hx):
        bf16 = torch.bfloat16
        lstm = isinstance(self, nn.LSTM)
        if hx is None:
            zeros = inputs.new_zeros(self.num_layers * (2 if self.bidirectional else 1),
                                     inputs.shape[0 if self.batch_first else 1], self.hidden_size, dtype=bf16)
            hx = (zeros, zeros) if lstm else zeros
        else:
            hx = tuple(h.to(bf16) for h in hx) if lstm else hx.to(bf16)
        weights = [w.to(bf16) for w in self._flat_weights]
        with torch.autocast("cuda", enabled=False), warnings.catch_warnings():
            # the bf16 copies are not one flat buffer: cuDNN packs them per call, as it does for
            # autocast's own casts; its warning about it says nothing to a user.
            warnings.filterwarnings("ignore", message=".*not part of single contiguous chunk")
            result = type(self)._fused(inputs.to(bf16), hx, weights, self.bias, self.num_layers,
                                       float(self.dropout), self.training, self.bidirectional, self.batch_first)
        return (result[0], (result[1], result[2])) if lstm else (result[0], result[1])


class TorchLSTM(_CudnnBf16, nn.LSTM):
    """nn.LSTM (cuDNN on CUDA), real cuDNN bf16 under bf16 autocast."""

    _fused = staticmethod(_VF.lstm)


class TorchGRU(_CudnnBf16, nn.GRU):
    """nn.GRU (cuDNN on CUDA), real cuDNN bf16 under bf16 autocast."""

    _fused = staticmethod(_VF.gru)


# ----------------------------------------------------------------------------------------------
# Factory, forget-gate bias, and the mapping to and from torch's modules


def make_encoder(cell: str, input_size: int, hidden_size: int, layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False) -> nn.Module:
    """The encoder for `cell`, forget-gate bias 1 for the LSTM family.

    lstm and gru are torch's own nn.LSTM / nn.GRU (batch_first=True; cuDNN on CUDA, in real bf16
    under bf16 autocast: TorchLSTM / TorchGRU), the others
    a RecurrentEncoder (for grid its subclass GridEncoder); all share the call contract, and all
    but grid the parameter names.
    """
    check_cell(cell)
    dropout = dropout if layers > 1 else 0.0  # between layers only; torch warns otherwise
    kinds = {"lstm": TorchLSTM, "gru": TorchGRU}
    if cell in kinds:
        encoder = kinds[cell](input_size, hidden_size, num_layers=layers, dropout=dropout,
                              bidirectional=bidirectional, batch_first=True)
    else:
        encoder = RecurrentEncoder(cell, input_size, hidden_size, layers, dropout, bidirectional)
    init_forget_bias(encoder)
    return encoder


def encoder_cell(encoder: nn.Module) -> str:
    """The cell name of any encoder make_encoder returns."""
    if isinstance(encoder, RecurrentEncoder):
        return encoder.cell
    if isinstance(encoder, nn.LSTM):
        return "lstm"
    if isinstance(encoder, nn.GRU):
        return "gru"
    raise TypeError(f"not a recurrent encoder: {type(encoder).__name__}")


def forget_gate_block(cell: str) -> int | None:
    """Index of the forget gate's block in the gate order; None for gru (it has no forget gate)."""
    return {"lstm": 1, "peephole": 1, "cifg": 0, "grid": 1}.get(check_cell(cell))


def init_forget_bias(encoder: nn.Module, value: float = 1.0) -> None:
    """Forget-gate bias `value` (Gers et al. 2000): remember by default early in training.

    The gates see bias_ih + bias_hh, so the forget block of bias_ih is set to `value` and that of
    bias_hh to 0; grid's transforms have one bias each (bias_time_*, bias_depth_*), set to
    `value`: both memories are kept by default. A GRU is left as it is.
    """
    block = forget_gate_block(encoder_cell(encoder))
    if block is None:
        return
    rows = slice(block * encoder.hidden_size, (block + 1) * encoder.hidden_size)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if name.startswith("bias_"):
                param[rows] = 0.0 if name.startswith("bias_hh") else value


def _from_torch(module: nn.Module, cell: str) -> RecurrentEncoder:
    if getattr(module, "proj_size", 0) or not module.bias:
        raise ValueError("only torch modules with biases and without projections (proj_size=0) map to cells")
    first = next(module.parameters())
    encoder = RecurrentEncoder(cell, module.input_size, module.hidden_size, module.num_layers, module.dropout,
                               module.bidirectional, device=first.device, dtype=first.dtype)
    encoder.load_state_dict(module.state_dict())  # same names, shapes and gate order
    return encoder


def _to_torch(encoder: RecurrentEncoder, cell: str, kind: type) -> nn.Module:
    if encoder.cell != cell:
        raise ValueError(f"a {encoder.cell!r} encoder has no torch.nn.{kind.__name__} equivalent")
    first = next(encoder.parameters())
    module = kind(encoder.input_size, encoder.hidden_size, num_layers=encoder.num_layers,
                  dropout=encoder.dropout, bidirectional=encoder.bidirectional, batch_first=True,
                  device=first.device, dtype=first.dtype)
    module.load_state_dict(encoder.state_dict())
    return module


def from_torch_lstm(lstm: nn.LSTM) -> RecurrentEncoder:
    """A cell='lstm' RecurrentEncoder computing exactly what `lstm` computes (weights copied)."""
    return _from_torch(lstm, "lstm")


def to_torch_lstm(encoder: RecurrentEncoder) -> nn.LSTM:
    """The nn.LSTM(batch_first=True) of a cell='lstm' encoder (weights copied)."""
    return _to_torch(encoder, "lstm", nn.LSTM)


def from_torch_gru(gru: nn.GRU) -> RecurrentEncoder:
    return _from_torch(gru, "gru")


def to_torch_gru(encoder: RecurrentEncoder) -> nn.GRU:
    return _to_torch(encoder, "gru", nn.GRU)
