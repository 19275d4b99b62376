"""Recurrent cells written from their equations: the LSTM and its variants, and the GRU.

For input x_t and the previous state (h_{t-1}, c_{t-1}), the LSTM (Hochreiter & Schmidhuber 1997)
with the forget gate of Gers et al. (2000) computes

    f_t = sigmoid(W_f x_t + U_f h_{t-1} + b_f)      i_t = sigmoid(W_i x_t + U_i h_{t-1} + b_i)
    g_t = tanh(W_c x_t + U_c h_{t-1} + b_c)         c_t = f_t * c_{t-1} + i_t * g_t
    o_t = sigmoid(W_o x_t + U_o h_{t-1} + b_o)      h_t = o_t * tanh(c_t)

Cells (the `cell` name):
  lstm      the equations above; what torch.nn.LSTM computes.
  peephole  Gers & Schmidhuber (2000): i and f also see c_{t-1}, o sees c_t, through diagonal
            weight vectors p_i, p_f, p_o of size H (3H more parameters per layer and direction).
  cifg      coupled input-forget gate: i_t = 1 - f_t. Three gate blocks instead of four.
  gru       Cho et al. (2014), as torch.nn.GRU computes it (gates r, z, n).
  grid      Grid LSTM (Kalchbrenner, Danihelka & Graves 2015): the layers are also linked by LSTM
            transforms along depth, a 2-D grid over time and depth with a memory per dimension.
            Block (t, l) reads H = [h^T_{t-1,l}; h^D_{t,l-1}] and, for d in {T, D} with its own
            W_d (4H, 2H), b_d: the gates above from W_d H + b_d, m'_d = f m_d + i g,
            h'_d = o tanh(m'_d); the time output goes to (t+1, l), the depth output up to (t, l+1).
            Its own layout, parameter names and encoder (GridEncoder): see gridlstm.py.

The parameter layout (all cells but grid) is torch's, so that weights move between this module and nn.LSTM / nn.GRU
by name: weight_ih_l{k} (G*H, in), weight_hh_l{k} (G*H, H), bias_ih_l{k} and bias_hh_l{k} (G*H,),
suffix `_reverse` for the backward direction, G gate blocks stacked in the order
  lstm, peephole: i, f, g, o     cifg: f, g, o     gru: r, z, n
and for peephole one more vector peephole_l{k} (3H,) holding p_i, p_f, p_o.

Two ways to run the same parameters:
  reference  one time step at a time, every gate written out as in the equations (`*_step`).
             Slow; it is the definition the tests hold everything else to.
  fast       the input projections of all time steps in ONE matmul before the loop; per step one
             addmm (h @ U) and a fused element-wise update (TorchScript on CPU, a Triton kernel
             on CUDA); a layer is one autograd node (LstmLayer) whose
             backward runs the time loop in reverse with hand-written gradients (per step one
             Triton kernel and one mm on CUDA). What
             RecurrentEncoder.forward runs; the GRU runs autograd through its loop instead.
For cell 'lstm' and 'gru' the model should simply use torch's own modules (cuDNN on CUDA):
`make_encoder` returns nn.LSTM / nn.GRU for those and a RecurrentEncoder for the others.

The package, by job:
  equations.py      cell names, parameter layout and count, the reference steps
  pointwise.py      the fused element-wise update, its hand-written backward, the layer time loops
  triton_kernel.py  the same update and its backward as Triton kernels (CUDA), and the layer's
                    time loops with them
  graphs.py         CUDA graphs: each Triton time loop recorded once per shape and replayed
  fastpath.py       the switches (USE_TRITON, USE_SCRIPT), TorchScript compilation, the choice of
                    loop with its recorded fallbacks, LstmLayer (the autograd node), run_fast
  encoder.py        RecurrentEncoder, make_encoder, the forget-gate bias, the torch mapping
  gridlstm.py       GridEncoder: the grid walked block by block (reference) and layer by layer
                    (fast: LstmLayer along time, one batched update along depth)
Everything is used as `cells.X`. The switches and hooks that fastpath reads at call time
(_FORWARDED below) are forwarded: reading or setting `cells.USE_TRITON` (or monkeypatching
`cells.triton_layer_forward`, `cells.use_triton`, `cells._COMPILED`, ...) reads or sets
fastpath's own global, the one its functions look up.
"""

import sys
import types

from . import fastpath as _fastpath
from . import graphs
from .encoder import (
    RecurrentEncoder,
    TorchGRU,
    TorchLSTM,
    encoder_cell,
    forget_gate_block,
    from_torch_gru,
    from_torch_lstm,
    init_forget_bias,
    make_encoder,
    to_torch_gru,
    to_torch_lstm,
)
from .equations import (
    CELLS,
    GATE_BLOCKS,
    LSTM_FAMILY,
    REFERENCE_STEPS,
    GridWeights,
    LayerWeights,
    check_cell,
    cifg_step,
    encoder_output_size,
    grid_step,
    gru_step,
    lstm_step,
    parameter_count,
    peephole_step,
    run_reference,
)
from .fastpath import LstmLayer, run_fast
from .gridlstm import GridEncoder, grid_fast, grid_reference
from .pointwise import (
    gru_pointwise,
    lstm_layer_backward,
    lstm_layer_forward,
    lstm_pointwise,
    lstm_pointwise_backward,
    peephole_grad,
)
from .triton_kernel import triton_lstm_pointwise, triton_lstm_pointwise_backward

# fastpath's switches and hooks: read and written there (see the module docstring).
_FORWARDED = frozenset({"USE_TRITON", "USE_SCRIPT", "_COMPILED", "triton", "triton_layer_forward",
                        "triton_layer_backward", "use_triton", "compiled", "layer_forward", "layer_backward"})

__all__ = [
    "CELLS", "GATE_BLOCKS", "GridEncoder", "graphs", "GridWeights", "LSTM_FAMILY", "REFERENCE_STEPS", "LayerWeights",
    "LstmLayer", "RecurrentEncoder", "check_cell", "cifg_step", "encoder_cell", "encoder_output_size",
    "forget_gate_block", "from_torch_gru", "grid_fast", "grid_reference", "grid_step",
    "from_torch_lstm", "gru_pointwise", "gru_step", "init_forget_bias", "lstm_layer_backward",
    "lstm_layer_forward", "lstm_pointwise", "lstm_pointwise_backward", "lstm_step", "make_encoder",
    "parameter_count", "peephole_grad", "peephole_step", "run_fast", "run_reference", "to_torch_gru",
    "to_torch_lstm", "triton_lstm_pointwise", "triton_lstm_pointwise_backward", "TorchGRU", "TorchLSTM",
    *sorted(_FORWARDED),
]


def __dir__() -> list[str]:
    return sorted({*globals(), *_FORWARDED})


def _forwarded(name: str) -> property:
    return property(lambda module: getattr(_fastpath, name), lambda module, value: setattr(_fastpath, name, value),
                    doc=f"fastpath.{name}, read and set there")


# The package module's class: each forwarded name is a data descriptor (a property) reading and
# setting fastpath's global, so it wins over the module's __dict__, and pytest's monkeypatch (which
# sees a data descriptor) restores it by setting it back rather than deleting it.
_Package = type("_Package", (types.ModuleType,), {name: _forwarded(name) for name in sorted(_FORWARDED)})
sys.modules[__name__].__class__ = _Package
