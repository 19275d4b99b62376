"""Recurrent cells: the equations, the mapping to torch's LSTM / GRU, the fast path, the variants."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from lstmcast import cells
from lstmcast.cells import (
    CELLS,
    GridEncoder,
    RecurrentEncoder,
    encoder_output_size,
    from_torch_gru,
    from_torch_lstm,
    make_encoder,
    parameter_count,
    to_torch_gru,
    to_torch_lstm,
)
from lstmcast.device import clear_fallbacks, fallbacks

F64 = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def random_state(module, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    directions = 2 if module.bidirectional else 1
    shape = (module.num_layers * directions, batch, module.hidden_size)
    return (torch.randn(shape, dtype=F64, generator=generator),
            torch.randn(shape, dtype=F64, generator=generator))


def loss_and_grads(module, inputs, state, lstm: bool):
    """A scalar loss that uses every output (all states, final h and c), and its gradients
    w.r.t. the inputs, the initial states and every parameter (in named_parameters order)."""
    inputs = inputs.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, final = module(inputs, state if lstm else state[0])
    finals = final if lstm else (final,)
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=F64)
    loss = (out.sin() * weights).sum() + sum((f ** 2).sum() for f in finals)
    grads = torch.autograd.grad(loss, [inputs, *state, *module.parameters()])
    return out, finals, grads


def assert_same_computation(torch_module, ours, lstm: bool):
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(5, 11, 2, dtype=F64, generator=generator)      # (batch, seq, input)
    state = random_state(torch_module, 5, generator)
    if not lstm:
        state = state[:1]
    expected_out, expected_final, expected_grads = loss_and_grads(torch_module, inputs, state, lstm)
    for fast in (True, False):
        ours.fast = fast
        out, final, grads = loss_and_grads(ours, inputs, state, lstm)
        torch.testing.assert_close(out, expected_out, **TOL)
        for got, want in zip(final, expected_final, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        assert len(grads) == len(expected_grads)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, **TOL)


# ----------------------------------------------------------------------------------------------
# The mapping to torch: same numbers, gradients included


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_from_torch_computes_what_torch_computes(bidirectional):
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 7, num_layers=3, batch_first=True, dropout=0.3, bidirectional=bidirectional).to(F64).eval()
    ours = from_torch_lstm(lstm).eval()
    assert isinstance(ours, RecurrentEncoder) and ours.cell == "lstm"
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in lstm.named_parameters()]
    assert_same_computation(lstm, ours, lstm=True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_from_torch_computes_what_torch_computes(bidirectional):
    torch.manual_seed(0)
    gru = nn.GRU(2, 7, num_layers=3, batch_first=True, bidirectional=bidirectional).to(F64).eval()
    ours = from_torch_gru(gru).eval()
    assert ours.cell == "gru"
    assert_same_computation(gru, ours, lstm=False)


@pytest.mark.parametrize("kind, there, back", [(nn.LSTM, from_torch_lstm, to_torch_lstm),
                                               (nn.GRU, from_torch_gru, to_torch_gru)])
def test_round_trip_reproduces_the_torch_module_exactly(kind, there, back):
    torch.manual_seed(0)
    original = kind(3, 5, num_layers=2, batch_first=True, dropout=0.25, bidirectional=True).to(F64)
    copy = back(there(original))
    assert type(copy) is kind
    for attribute in ("input_size", "hidden_size", "num_layers", "dropout", "bidirectional", "batch_first", "bias"):
        assert getattr(copy, attribute) == getattr(original, attribute), attribute
    expected, got = original.state_dict(), copy.state_dict()
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and torch.equal(got[name], expected[name]), name
    inputs = torch.randn(4, 6, 3, dtype=F64)
    assert torch.equal(copy.eval()(inputs)[0], original.eval()(inputs)[0])


def test_mapping_refuses_what_it_cannot_represent():
    with pytest.raises(ValueError, match="proj_size"):
        from_torch_lstm(nn.LSTM(2, 6, proj_size=3, batch_first=True))
    with pytest.raises(ValueError, match="'peephole' encoder has no torch.nn.LSTM"):
        to_torch_lstm(RecurrentEncoder("peephole", 2, 4))
    with pytest.raises(ValueError, match="unknown recurrent cell 'rnn'; choose one of lstm, peephole, cifg, gru, grid"):
        make_encoder("rnn", 2, 4)


# ----------------------------------------------------------------------------------------------
# The variants: their equations, written out by hand


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hand_lstm_family(cell: str, params: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peephole / CIFG from the papers' equations, in numpy, one step and one gate at a time.
    x (batch, 2 steps, input) -> (h per step (batch, 2, H), c_2)."""
    W, U = params["weight_ih_l0"], params["weight_hh_l0"]
    b = params["bias_ih_l0"] + params["bias_hh_l0"]
    hidden = U.shape[1]
    block = {name: slice(k * hidden, (k + 1) * hidden)
             for k, name in enumerate("ifgo" if cell == "peephole" else "fgo")}

    def pre(name, x_t, h):   # W_name x_t + U_name h_{t-1} + b_name
        return x_t @ W[block[name]].T + h @ U[block[name]].T + b[block[name]]

    h = np.zeros((x.shape[0], hidden))
    c = np.zeros((x.shape[0], hidden))
    outputs = []
    for t in range(2):
        x_t = x[:, t]
        if cell == "peephole":
            p_i, p_f, p_o = np.split(params["peephole_l0"], 3)
            i = sigmoid(pre("i", x_t, h) + p_i * c)
            f = sigmoid(pre("f", x_t, h) + p_f * c)
            g = np.tanh(pre("g", x_t, h))
            c = f * c + i * g
            o = sigmoid(pre("o", x_t, h) + p_o * c)          # o sees the new cell
        else:
            f = sigmoid(pre("f", x_t, h))
            i = 1.0 - f                                       # coupled
            g = np.tanh(pre("g", x_t, h))
            c = f * c + i * g
            o = sigmoid(pre("o", x_t, h))
        h = o * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1), c


@pytest.mark.parametrize("cell", ["peephole", "cifg"])
def test_variant_matches_its_equations_by_hand(cell):
    torch.manual_seed(3)
    encoder = RecurrentEncoder(cell, 2, 3, dtype=F64)
    with torch.no_grad():
        for param in encoder.parameters():
            param.uniform_(-1.5, 1.5)            # large enough that every term matters
    x = torch.randn(2, 2, 2, dtype=F64)         # (batch 2, 2 steps, input 2)
    params = {name: p.detach().numpy() for name, p in encoder.named_parameters()}
    want_h, want_c = hand_lstm_family(cell, params, x.numpy())
    for fast in (True, False):
        encoder.fast = fast
        with torch.no_grad():
            out, (h_n, c_n) = encoder(x)
        np.testing.assert_allclose(out.numpy(), want_h, rtol=0, atol=1e-12)
        np.testing.assert_allclose(h_n[0].numpy(), want_h[:, -1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(c_n[0].numpy(), want_c, rtol=0, atol=1e-12)


def test_zero_peepholes_make_a_peephole_cell_an_lstm():
    """The peephole terms are the only difference: with p = 0 the numbers are the LSTM's."""
    torch.manual_seed(0)
    lstm = RecurrentEncoder("lstm", 2, 4, layers=2, dtype=F64)
    peephole = RecurrentEncoder("peephole", 2, 4, layers=2, dtype=F64)
    state = {k: v for k, v in lstm.state_dict().items()}
    state.update({k: torch.zeros_like(v) for k, v in peephole.state_dict().items() if k.startswith("peephole")})
    peephole.load_state_dict(state)
    x = torch.randn(3, 5, 2, dtype=F64)
    torch.testing.assert_close(peephole(x)[0], lstm(x)[0], **TOL)


# ----------------------------------------------------------------------------------------------
# Bidirectional


@pytest.mark.parametrize("cell", CELLS)
def test_backward_direction_is_the_forward_cell_on_the_reversed_sequence(cell):
    torch.manual_seed(0)
    both = RecurrentEncoder(cell, 2, 5, bidirectional=True, dtype=F64)
    backward = RecurrentEncoder(cell, 2, 5, dtype=F64)
    backward.load_state_dict({name.replace("_reverse", ""): p for name, p in both.state_dict().items()
                              if name.endswith("_reverse")})
    x = torch.randn(3, 8, 2, dtype=F64)
    out, final = both(x)
    assert out.shape == (3, 8, 10)
    reversed_out, reversed_final = backward(x.flip(1))
    torch.testing.assert_close(out[..., 5:], reversed_out.flip(1), **TOL)
    finals = final if cell != "gru" else (final,)
    reversed_finals = reversed_final if cell != "gru" else (reversed_final,)
    for got, want in zip(finals, reversed_finals, strict=True):
        assert got.shape == (2, 3, 5)
        torch.testing.assert_close(got[1], want[0], **TOL)     # index 1 = layer 0, backward


@pytest.mark.parametrize("cell", CELLS)
def test_every_encoder_keeps_nn_lstm_call_contract(cell):
    encoder = make_encoder(cell, 2, 6, layers=2, dropout=0.2, bidirectional=True)
    x = torch.randn(4, 9, 2)
    out, final = encoder(x)
    assert out.shape == (4, 9, encoder_output_size(6, True)) == (4, 9, 12)
    h_n = final[0] if cell != "gru" else final
    assert h_n.shape == (4, 4, 6)                  # (layers * directions, batch, hidden)
    assert encoder.batch_first and encoder.num_layers == 2 and encoder.hidden_size == 6
    expected = {"lstm": cells.TorchLSTM, "gru": cells.TorchGRU, "grid": GridEncoder}.get(cell, RecurrentEncoder)
    assert type(encoder) is expected
    assert encoder_output_size(6, False) == 6


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    encoder = RecurrentEncoder("peephole", 2, 6, layers=2, dropout=0.5)
    x = torch.randn(4, 7, 2)
    encoder.eval()
    quiet = encoder(x)[0]
    torch.testing.assert_close(encoder(x)[0], quiet, rtol=0, atol=0)
    encoder.train()
    torch.manual_seed(1)
    noisy = encoder(x)[0]
    assert not torch.allclose(noisy, quiet)
    single = RecurrentEncoder("peephole", 2, 6, layers=1, dropout=0.5)   # nothing between layers
    torch.testing.assert_close(single.train()(x)[0], single.eval()(x)[0], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# The fused element-wise update and the hand-written backward


def random_gates(cell, batch=4, hidden=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    encoder = RecurrentEncoder(cell, 3, hidden, dtype=F64)
    with torch.no_grad():
        for param in encoder.parameters():
            param.copy_(torch.randn(param.shape, dtype=F64, generator=generator))
    x = torch.randn(batch, 3, dtype=F64, generator=generator)
    h = torch.randn(batch, hidden, dtype=F64, generator=generator)
    c = torch.randn(batch, hidden, dtype=F64, generator=generator)
    return encoder.weights(0, 0), x, h, c


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_fused_step_equals_reference_step(cell):
    w, x, h, c = random_gates(cell)
    want_h, want_c = cells.REFERENCE_STEPS[cell](x, (h, c), w)
    gates = x @ w.weight_ih.T + w.bias_ih + h @ w.weight_hh.T + w.bias_hh
    for pointwise in (cells.lstm_pointwise, cells.compiled(cells.lstm_pointwise)):
        got_h, got_c, _ = pointwise(gates, c, w.peephole, cell == "cifg")
        torch.testing.assert_close(got_h, want_h, rtol=0, atol=1e-12)
        torch.testing.assert_close(got_c, want_c, rtol=0, atol=1e-12)


def textbook_update(gates, c, peephole, coupled):
    """(h_t, c_t) from pre-activation gates, gate by gate as in the papers (autograd-able)."""
    blocks = list(gates.chunk(3 if coupled else 4, dim=1))
    if coupled:
        f_pre, g_pre, o_pre = blocks
        f = torch.sigmoid(f_pre)
        i = 1 - f
    else:
        i_pre, f_pre, g_pre, o_pre = blocks
        p_i, p_f, p_o = peephole.chunk(3) if peephole is not None else (0.0, 0.0, 0.0)
        i, f = torch.sigmoid(i_pre + p_i * c), torch.sigmoid(f_pre + p_f * c)
    c_new = f * c + i * torch.tanh(g_pre)
    if peephole is not None:
        o_pre = o_pre + p_o * c_new
    return torch.sigmoid(o_pre) * torch.tanh(c_new), c_new


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_hand_written_backward_equals_autograd(cell):
    w, x, h, c = random_gates(cell, seed=1)
    peephole, coupled = w.peephole, cell == "cifg"
    gates = (x @ w.weight_ih.T + w.bias_ih + h @ w.weight_hh.T + w.bias_hh).detach().requires_grad_(True)
    c = c.requires_grad_(True)
    grad_h, grad_c_new = torch.randn_like(c), torch.randn_like(c)
    h_new, c_new = textbook_update(gates, c, peephole, coupled)
    want = torch.autograd.grad((h_new * grad_h).sum() + (c_new * grad_c_new).sum(), [gates, c])
    with torch.no_grad():
        _, c_fused, acts = cells.lstm_pointwise(gates, c, peephole, coupled)
        got = cells.lstm_pointwise_backward(acts, c, c_fused, peephole, coupled, grad_h, grad_c_new)
    for g, expected in zip(got, want, strict=True):
        torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", ["peephole", "cifg"])
def test_layer_function_passes_gradcheck(cell):
    """LstmLayer's backward (BPTT by hand, one W_hh matmul, peephole sums) against finite differences."""
    torch.manual_seed(0)
    hidden, blocks = 3, cells.GATE_BLOCKS[cell]
    projected = torch.randn(4, 2, blocks * hidden, dtype=F64, requires_grad=True)   # (seq, batch, G*H)
    h0, c0 = (torch.randn(2, hidden, dtype=F64, requires_grad=True) for _ in range(2))
    weight_hh = torch.randn(blocks * hidden, hidden, dtype=F64, requires_grad=True)
    peephole = torch.randn(3 * hidden, dtype=F64, requires_grad=True) if cell == "peephole" else None
    assert torch.autograd.gradcheck(lambda *a: cells.LstmLayer.apply(*a, cell == "cifg"),
                                    (projected, h0, c0, weight_hh, peephole))


# ----------------------------------------------------------------------------------------------
# Parameters and initialisation


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, False), (2, True)])
def test_parameter_count_formula(cell, layers, bidirectional):
    inputs, hidden = 4, 6
    want = parameter_count(cell, inputs, hidden, layers, bidirectional)
    for encoder in (make_encoder(cell, inputs, hidden, layers, 0.0, bidirectional),
                    RecurrentEncoder(cell, inputs, hidden, layers, 0.0, bidirectional)):
        assert sum(p.numel() for p in encoder.parameters()) == want
    directions = 2 if bidirectional else 1
    sizes = [inputs] + [hidden * directions] * (layers - 1)       # each layer's input size
    lstm = sum(directions * 4 * hidden * (n + hidden + 2) for n in sizes)
    expected = {"lstm": lstm,
                "peephole": lstm + layers * directions * 3 * hidden,
                "cifg": lstm - sum(directions * hidden * (n + hidden + 2) for n in sizes),
                "gru": sum(directions * 3 * hidden * (n + hidden + 2) for n in sizes),
                "grid": directions * (hidden * inputs + layers * 2 * 4 * hidden * (2 * hidden + 1))}
    assert want == expected[cell]


def test_parameter_counts_of_the_default_size():
    """Hidden 64, 2 layers, 2 inputs: the numbers the benchmark table prints."""
    assert [parameter_count(c, 2, 64, 2) for c in CELLS] == [50688, 51072, 38016, 38016, 132224]
    assert parameter_count("lstm", 2, 64, 2) == sum(p.numel() for p in nn.LSTM(2, 64, 2).parameters())


@pytest.mark.parametrize("cell", ["lstm", "peephole", "cifg"])
def test_forget_gate_bias_starts_at_one(cell):
    encoder = make_encoder(cell, 2, 5, layers=2, bidirectional=True)
    hidden, block = 5, cells.forget_gate_block(cell)
    biases = dict(encoder.named_parameters())
    for suffix in ("l0", "l1", "l0_reverse", "l1_reverse"):
        total = biases[f"bias_ih_{suffix}"] + biases[f"bias_hh_{suffix}"]
        forget = total[block * hidden: (block + 1) * hidden]
        torch.testing.assert_close(forget, torch.ones(hidden), rtol=0, atol=0)
        others = torch.cat([total[: block * hidden], total[(block + 1) * hidden:]])
        assert (others != 1.0).all()


def test_gru_has_no_forget_gate_to_set():
    torch.manual_seed(0)
    gru = nn.GRU(2, 4, batch_first=True)
    before = {k: v.clone() for k, v in gru.state_dict().items()}
    cells.init_forget_bias(gru)
    assert all(torch.equal(before[k], v) for k, v in gru.state_dict().items())


# ----------------------------------------------------------------------------------------------
# Every cell learns


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_learns_a_sine(cell):
    """Next value of a period-16 sine from 16 past values: 200 Adam steps of a 16-unit encoder.
    The last-value forecast scores an MSE of 0.076 here; every cell gets below 1e-4."""
    t = torch.arange(240, dtype=torch.float32)
    series = torch.sin(2 * torch.pi * t / 16)
    starts = torch.arange(len(series) - 16)
    inputs = series[starts[:, None] + torch.arange(16)].unsqueeze(-1)   # (224, 16, 1)
    targets = series[starts + 16].unsqueeze(-1)                          # (224, 1)
    torch.manual_seed(0)
    encoder, head = make_encoder(cell, 1, 16), nn.Linear(16, 1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.01)
    for _ in range(200):
        states, _ = encoder(inputs)
        loss = nn.functional.mse_loss(head(states[:, -1]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-4


# ----------------------------------------------------------------------------------------------
# Triton and CUDA (skipped where they are missing)

try:
    import triton  # noqa: F401
    HAS_TRITON = True
except Exception:  # noqa: BLE001
    HAS_TRITON = False


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_triton_kernel_in_the_interpreter_matches_the_twin():
    """TRITON_INTERPRET=1 runs the kernels on the CPU: the same arithmetic as lstm_pointwise and
    lstm_pointwise_backward, and the encoder's fast path with them (the forward and the backward
    time loops as Triton kernels) matches the reference."""
    script = textwrap.dedent("""
        import torch
        from lstmcast import cells
        torch.manual_seed(0)
        for coupled, peephole in ((False, None), (False, torch.randn(21)), (True, None)):
            gates, c = torch.randn(5, (3 if coupled else 4) * 7) * 2, torch.randn(5, 7)
            got = cells.triton_lstm_pointwise(gates, c, peephole, coupled)
            want = cells.lstm_pointwise(gates, c, peephole, coupled)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
            h, c_new, acts = want
            grads = torch.randn(5, 7), torch.randn(5, 7)
            got = cells.triton_lstm_pointwise_backward(acts, c, c_new, peephole, coupled, *grads)
            want = cells.lstm_pointwise_backward(acts, c, c_new, peephole, coupled, *grads)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        # The layer loops as they run under bf16 autocast: bf16 projections and weights, fp32 cell
        # state and activations, so the backward kernel also writes the bf16 copy the mm reads.
        from lstmcast.cells import pointwise, triton_kernel
        for coupled, peephole in ((False, None), (False, torch.randn(21)), (True, None)):
            blocks = 3 if coupled else 4
            projected = torch.randn(6, 5, blocks * 7).to(torch.bfloat16)
            h0, c0 = torch.randn(5, 7).to(torch.bfloat16), torch.randn(5, 7)
            weight = (torch.randn(blocks * 7, 7) * 0.3).to(torch.bfloat16)
            hs, cs, acts = triton_kernel.triton_layer_forward(projected, h0, c0, weight.t(), peephole, coupled)
            assert acts.dtype == torch.float32 and hs.dtype == torch.bfloat16
            want_hs = pointwise.lstm_layer_forward(projected, h0, c0, weight.t(), peephole, coupled)[0]
            torch.testing.assert_close(hs.float(), want_hs.float(), rtol=0, atol=0.02)
            grad_hs, grad_c = torch.randn(6, 5, 7).to(torch.bfloat16), torch.randn(5, 7)
            got = triton_kernel.triton_layer_backward(grad_hs, grad_c, acts, cs, weight, peephole, coupled)
            want = pointwise.lstm_layer_backward(grad_hs, grad_c, acts, cs, weight, peephole, coupled)
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype
                torch.testing.assert_close(g.float(), w.float(), rtol=0.02, atol=0.02)
        cells.use_triton = lambda tensor: True          # the CUDA path, interpreted on the CPU
        ran = []
        for name in ("triton_layer_forward", "triton_layer_backward"):
            kernel = getattr(cells, name)
            setattr(cells, name, lambda *a, kernel=kernel, name=name: ran.append(name) or kernel(*a))
        for cell in ("peephole", "cifg"):
            encoder = cells.RecurrentEncoder(cell, 3, 6, layers=2, bidirectional=True)
            x = torch.randn(4, 5, 3, requires_grad=True)
            results = []
            for run in (encoder, encoder.reference_forward):
                out, (_, c_n) = run(x)
                results.append([out, *torch.autograd.grad(out.sum() + c_n.sum(), [x, *encoder.parameters()])])
            for g, w in zip(*results):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
        # both loops ran as Triton kernels (2 layers x 2 directions x 2 cells), nothing fell back
        assert ran.count("triton_layer_forward") == ran.count("triton_layer_backward") == 8, ran
        from lstmcast.device import fallbacks
        assert not fallbacks(), fallbacks()
        print("ok")
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("coupled, peephole", [(False, False), (False, True), (True, False)])
@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.gpu
@needs_cuda
def test_triton_kernel_on_cuda_matches_the_twin(coupled, peephole):
    torch.manual_seed(0)
    hidden, blocks = 37, 3 if coupled else 4
    gates = torch.randn(300, blocks * hidden, device="cuda") * 2
    c = torch.randn(300, hidden, device="cuda")
    p = torch.randn(3 * hidden, device="cuda") if peephole else None
    got = cells.triton_lstm_pointwise(gates, c, p, coupled)
    want = cells.lstm_pointwise(gates, c, p, coupled)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["peephole", "cifg"])
@pytest.mark.parametrize("triton_on", [True, False])
@pytest.mark.gpu
@needs_cuda
def test_fast_path_on_cuda_matches_the_reference(cell, triton_on, monkeypatch):
    """With triton_on the Triton kernels must really run, forward and backward (a fallback to the
    scripted loop fails this test); without, the TorchScript loops run on CUDA. Either way nothing
    falls back, and bf16 autocast gives gradients near the fp32 ones."""
    monkeypatch.setattr(cells, "USE_TRITON", triton_on)
    clear_fallbacks()
    calls = []
    for name in ("triton_layer_forward", "triton_layer_backward"):
        kernel = getattr(cells, name)
        monkeypatch.setattr(cells, name, lambda *a, kernel=kernel, name=name: calls.append(name) or kernel(*a))
    cells.graphs.clear()
    replays = cells.graphs.REPLAYS[0]
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 3, 32, layers=2, bidirectional=True).cuda().eval()
    x = torch.randn(16, 20, 3, device="cuda", requires_grad=True)
    got, (h_n, c_n) = encoder(x)
    got_grads = torch.autograd.grad(got.sum() + c_n.sum(), [x, *encoder.parameters()])
    want, (_, want_c) = encoder.reference_forward(x)
    want_grads = torch.autograd.grad(want.sum() + want_c.sum(), [x, *encoder.parameters()])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        states, (_, c_bf16) = encoder(x)
    assert states.dtype == torch.bfloat16
    bf16_grads = torch.autograd.grad(states.float().sum() + c_bf16.float().sum(), [x, *encoder.parameters()])
    for g, w in zip(bf16_grads, want_grads, strict=True):
        assert (g.float() - w).norm() <= 0.05 * w.norm() + 1e-3
    assert fallbacks() == {}
    # Triton ran both loops (recorded into CUDA graphs: a graph replay calls no Python, so the
    # spies see the eager calls and the recordings, and the replays are counted apart)
    assert set(calls) == ({"triton_layer_forward", "triton_layer_backward"} if triton_on else set())
    assert (cells.graphs.REPLAYS[0] > replays) == triton_on


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_cells_hand_cudnn_real_bf16_under_bf16_autocast(cell, monkeypatch):
    """torch's autocast runs cuDNN's RNN in float16 under a bf16 autocast; TorchLSTM / TorchGRU
    hand the fused kernel bf16 input, state and weight copies instead. The CUDA branch is forced
    here on the CPU (the same _VF kernel entry): every tensor the kernel gets is bf16, the output
    is bf16 and near the fp32 one, the gradients land in the fp32 weights near the fp32 gradients."""
    torch.manual_seed(0)
    encoder = make_encoder(cell, 3, 16, layers=2, bidirectional=True)
    assert isinstance(encoder, nn.LSTM if cell == "lstm" else nn.GRU)
    assert list(encoder.state_dict()) == list(getattr(nn, cell.upper())(3, 16, 2, bidirectional=True).state_dict())
    x = torch.randn(5, 9, 3)
    want, _ = encoder(x)                                  # not forced: nn.LSTM / nn.GRU itself, fp32
    want_grads = torch.autograd.grad(want.sum(), list(encoder.parameters()))
    seen = []
    fused = type(encoder)._fused

    def spy(inputs, hx, weights, *rest):
        states = hx if isinstance(hx, tuple) else (hx,)
        seen.append({t.dtype for t in (inputs, *states, *weights)})
        return fused(inputs, hx, weights, *rest)

    monkeypatch.setattr(type(encoder), "_fused", staticmethod(spy))
    monkeypatch.setattr(type(encoder), "bf16_here", staticmethod(lambda inputs: True))
    got, final = encoder(x)
    assert seen == [{torch.bfloat16}]
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    error = (got.float() - want).abs().max().item()
    assert 0 < error < 0.03                               # bf16: near, and really not fp32
    grads = torch.autograd.grad(got.float().sum(), list(encoder.parameters()))
    for param, g, w in zip(encoder.parameters(), grads, want_grads, strict=True):
        assert param.dtype == g.dtype == torch.float32
        assert (g - w).norm() < 0.05 * w.norm() + 1e-3
    # A carried state (tbptt) in fp32 goes in as bf16 too.
    encoder(x, final)
    assert seen[-1] == {torch.bfloat16}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
def test_cuda_graph_replays_give_the_eager_numbers(monkeypatch):
    """The time loops recorded as CUDA graphs and replayed compute what the eager loops do (the
    same kernels; a stale or misplaced input would be off by far more than the tolerance)."""
    clear_fallbacks()
    cells.graphs.clear()
    torch.manual_seed(0)
    encoder = RecurrentEncoder("peephole", 3, 64, layers=2).cuda()
    x = torch.randn(32, 40, 3, device="cuda", requires_grad=True)
    results = {}
    for graphs_on in (False, True):
        monkeypatch.setattr(cells.graphs, "USE_GRAPHS", graphs_on)
        replays = cells.graphs.REPLAYS[0]
        for _ in range(3):   # eager, recorded, replayed
            out, (_, c_n) = encoder(x)
            grads = torch.autograd.grad(out.sum() + c_n.sum(), [x, *encoder.parameters()])
        results[graphs_on] = [out, *grads]
        assert (cells.graphs.REPLAYS[0] > replays) == graphs_on
    for g, w in zip(results[True], results[False], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert fallbacks() == {}


class _ReplayOnCpu:
    """A stand-in for torch.cuda.CUDAGraph on the CPU: replay() reruns the function on the
    recorded input tensors and writes into the recorded output tensors, as a replay does."""

    def __init__(self, fn, inputs, flags):
        self.fn, self.inputs, self.flags = fn, inputs, flags
        self.outputs = fn(*inputs, *flags)

    def replay(self):
        for mine, new in zip(self.outputs, self.fn(*self.inputs, *self.flags), strict=True):
            mine.copy_(new)


def test_graph_cache_records_on_the_second_call_replays_after_and_says_a_failure(monkeypatch, capsys):
    from lstmcast.cells import graphs
    graphs.clear()
    monkeypatch.setattr(graphs, "USE_GRAPHS", True)
    monkeypatch.setattr(graphs, "eligible", lambda tensor: graphs.USE_GRAPHS)
    monkeypatch.setattr(graphs, "budget_bytes", lambda device: 1e9)
    recorded = []

    def capture(fn, inputs, flags):
        recorded.append(tuple(t.shape for t in inputs if t is not None))
        graph = _ReplayOnCpu(fn, inputs, flags)
        return graph, graph.outputs

    monkeypatch.setattr(graphs, "capture", capture)
    calls = []

    def loop(a, b, scale):
        calls.append(1)
        return a * scale + b, (a - b).sum(0)

    a, b = torch.randn(4, 3), torch.randn(4, 3)
    first = graphs.run(loop, "test", (a, b), (2.0,))
    assert recorded == [] and len(calls) == 1                        # first sight: eager
    for k in range(3):
        a2, b2 = a + k, b - k                                         # new values, same shape
        got = graphs.run(loop, "test", (a2, b2), (2.0,))
        want = (a2 * 2.0 + b2, (a2 - b2).sum(0))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert recorded == [((4, 3), (4, 3))]                              # recorded once, then replayed
    got[0].add_(100)                                                   # outputs are the caller's own
    torch.testing.assert_close(graphs.run(loop, "test", (a, b), (2.0,))[0], first[0], rtol=0, atol=0)
    # a shape over the memory budget always runs eagerly
    monkeypatch.setattr(graphs, "budget_bytes", lambda device: 10)
    for _ in range(3):
        graphs.run(loop, "test", (torch.randn(5, 3), torch.randn(5, 3)), (1.0,))
    assert len(recorded) == 1
    # a recording that fails: said once, recorded, eager from then on, the numbers still right
    monkeypatch.setattr(graphs, "budget_bytes", lambda device: 1e9)
    monkeypatch.setattr(graphs, "capture", lambda fn, inputs, flags: (_ for _ in ()).throw(RuntimeError("no graphs")))
    clear_fallbacks()
    c = torch.randn(6, 3)
    for _ in range(3):
        out = graphs.run(loop, "test", (c, c), (3.0,))
    torch.testing.assert_close(out[0], c * 4.0, rtol=0, atol=0)
    assert "no graphs" in fallbacks()["cuda graphs"] and graphs.USE_GRAPHS is False
    assert capsys.readouterr().err.count("cuda graphs") == 1
    graphs.clear()
