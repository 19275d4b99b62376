"""model.cell=grid, the Grid LSTM (Kalchbrenner et al. 2015): its block by hand, the fast path against
the block-by-block reference (float64, gradients too), its parameter count, and the CLI path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SALES, TINY, run_cli
from torch import nn

from lstmcast import cells
from lstmcast.cells import GridEncoder, RecurrentEncoder, make_encoder, parameter_count
from lstmcast.config import load_config
from lstmcast.model import Forecaster, count_parameters
from lstmcast.predict import forecast, load_run, read_for_run

F64 = torch.float64
TOL = {"rtol": 0.0, "atol": 1e-10}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def random_grid(layers: int, bidirectional: bool, inputs: int = 3, hidden: int = 4, seed: int = 0) -> GridEncoder:
    """Weights drawn from N(0, 1): large enough that every term of every gate matters."""
    generator = torch.Generator().manual_seed(seed)
    encoder = RecurrentEncoder("grid", inputs, hidden, layers, bidirectional=bidirectional, dtype=F64)
    with torch.no_grad():
        for param in encoder.parameters():
            param.copy_(torch.randn(param.shape, dtype=F64, generator=generator))
    return encoder.eval()


# ----------------------------------------------------------------------------------------------
# The block and the grid, by hand


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def hand_grid(params: dict, x: np.ndarray, layers: int) -> tuple[np.ndarray, list, list]:
    """The paper's 2-D grid in numpy, every block written out: x (batch, seq, in) -> (top h^D per
    step, h^T and m^T of each layer at the end). Zero initial time state; h^D_{t,-1} = P x_t,
    m^D_{t,-1} = 0."""
    P = params["weight_input"]
    hidden = P.shape[0]
    batch, steps = x.shape[:2]
    h_time = [np.zeros((batch, hidden)) for _ in range(layers)]
    m_time = [np.zeros((batch, hidden)) for _ in range(layers)]

    def transform(H, m, W, b):
        gate = {name: H @ W[k * hidden:(k + 1) * hidden].T + b[k * hidden:(k + 1) * hidden]
                for k, name in enumerate("ifgo")}
        m_new = sigmoid(gate["f"]) * m + sigmoid(gate["i"]) * np.tanh(gate["g"])
        return sigmoid(gate["o"]) * np.tanh(m_new), m_new

    tops = []
    for t in range(steps):
        h_depth, m_depth = x[:, t] @ P.T, np.zeros((batch, hidden))
        for k in range(layers):
            H = np.concatenate([h_time[k], h_depth], axis=1)
            new_time = transform(H, m_time[k], params[f"weight_time_l{k}"], params[f"bias_time_l{k}"])
            h_depth, m_depth = transform(H, m_depth, params[f"weight_depth_l{k}"], params[f"bias_depth_l{k}"])
            h_time[k], m_time[k] = new_time
        tops.append(h_depth)
    return np.stack(tops, axis=1), h_time, m_time


@pytest.mark.parametrize("fast", [True, False])
def test_grid_matches_the_papers_equations_by_hand(fast):
    encoder = random_grid(layers=3, bidirectional=False)
    encoder.fast = fast
    x = torch.randn(2, 4, 3, dtype=F64)
    params = {name: p.detach().numpy() for name, p in encoder.named_parameters()}
    want_top, want_h, want_m = hand_grid(params, x.numpy(), layers=3)
    with torch.no_grad():
        out, (h_n, c_n) = encoder(x)
    np.testing.assert_allclose(out.numpy(), want_top, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), np.stack(want_h), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), np.stack(want_m), rtol=0, atol=1e-12)


def test_one_layer_time_dimension_is_an_lstm_over_the_projected_input():
    """Layer 0's time transform is torch's LSTM with W_ih = W_T[:, H:] P, W_hh = W_T[:, :H], b_T."""
    encoder = random_grid(layers=1, bidirectional=False, hidden=5)
    lstm = nn.LSTM(3, 5, batch_first=True).to(F64)
    w_time, hidden = encoder.weight_time_l0.detach(), 5
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(w_time[:, hidden:] @ encoder.weight_input)
        lstm.weight_hh_l0.copy_(w_time[:, :hidden])
        lstm.bias_ih_l0.copy_(encoder.bias_time_l0)
        lstm.bias_hh_l0.zero_()
    x = torch.randn(3, 6, 3, dtype=F64)
    state = (torch.randn(1, 3, 5, dtype=F64), torch.randn(1, 3, 5, dtype=F64))
    with torch.no_grad():
        _, (h_n, c_n) = encoder(x, state)
        _, (want_h, want_c) = lstm(x, state)
    torch.testing.assert_close(h_n, want_h, **TOL)
    torch.testing.assert_close(c_n, want_c, **TOL)


# ----------------------------------------------------------------------------------------------
# The fast path against the reference: outputs, final states and every gradient


def outputs_and_grads(encoder, inputs, state):
    inputs = inputs.clone().requires_grad_(True)
    state = tuple(s.clone().requires_grad_(True) for s in state)
    out, (h_n, c_n) = encoder(inputs, state)
    weights = torch.linspace(-1, 1, out.shape[-1], dtype=F64)
    loss = (out.sin() * weights).sum() + (h_n ** 2).sum() + (c_n ** 3).sum()
    grads = torch.autograd.grad(loss, [inputs, *state, *encoder.parameters()])
    return [out, h_n, c_n, *grads]


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, False), (2, True)])
def test_fast_path_equals_the_reference_with_gradients(layers, bidirectional):
    encoder = random_grid(layers, bidirectional, hidden=4)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 3, dtype=F64, generator=generator)
    shape = (layers * (2 if bidirectional else 1), 3, 4)
    state = (torch.randn(shape, dtype=F64, generator=generator), torch.randn(shape, dtype=F64, generator=generator))
    encoder.fast = True
    got = outputs_and_grads(encoder, x, state)
    encoder.fast = False
    want = outputs_and_grads(encoder, x, state)
    assert len(got) == len(want) == 3 + 3 + len(list(encoder.parameters()))
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, **TOL)
    assert all(float(g.abs().max()) > 0 for g in got[3:])  # every input and parameter is used


def test_reference_forward_is_the_block_by_block_walk():
    encoder = random_grid(2, False)
    x = torch.randn(2, 5, 3, dtype=F64)
    with torch.no_grad():
        assert encoder.fast
        fast, _ = encoder(x)
        reference, _ = encoder.reference_forward(x)
    torch.testing.assert_close(fast, reference, **TOL)


def test_bidirectional_is_two_grids_and_the_backward_one_reads_reversed():
    both = random_grid(2, True)
    backward = RecurrentEncoder("grid", 3, 4, 2, dtype=F64).eval()
    backward.load_state_dict({name.replace("_reverse", ""): p for name, p in both.state_dict().items()
                              if name.endswith("_reverse")})
    x = torch.randn(2, 6, 3, dtype=F64)
    with torch.no_grad():
        out, (h_n, _) = both(x)
        reversed_out, (reversed_h, _) = backward(x.flip(1))
    assert out.shape == (2, 6, 8) and h_n.shape == (4, 2, 4)
    torch.testing.assert_close(out[..., 4:], reversed_out.flip(1), **TOL)
    torch.testing.assert_close(h_n[1::2], reversed_h, **TOL)   # layer k backward at index 2k + 1


def test_dropout_acts_on_the_depth_output_between_layers_in_training_only():
    torch.manual_seed(0)
    encoder = make_encoder("grid", 2, 6, layers=2, dropout=0.5)
    x = torch.randn(4, 7, 2)
    quiet = encoder.eval()(x)[0]
    torch.testing.assert_close(encoder(x)[0], quiet, rtol=0, atol=0)
    assert not torch.allclose(encoder.train()(x)[0], quiet)
    single = make_encoder("grid", 2, 6, layers=1, dropout=0.5)          # nothing between layers
    torch.testing.assert_close(single.train()(x)[0], single.eval()(x)[0], rtol=0, atol=0)


def test_bf16_autocast_keeps_the_memories_in_fp32():
    torch.manual_seed(0)
    encoder = make_encoder("grid", 2, 8, layers=2)
    x = torch.randn(4, 5, 2, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h_n, c_n) = encoder(x)
    assert out.dtype == h_n.dtype == torch.bfloat16 and c_n.dtype == torch.float32
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(out.float(), encoder(x)[0], rtol=0, atol=0.05)


# ----------------------------------------------------------------------------------------------
# Construction: parameters, names, forget-gate bias


@pytest.mark.parametrize("layers, bidirectional", [(1, False), (3, False), (2, True)])
def test_parameter_count(layers, bidirectional):
    inputs, hidden, directions = 4, 6, 2 if bidirectional else 1
    encoder = make_encoder("grid", inputs, hidden, layers, 0.0, bidirectional)
    assert type(encoder) is GridEncoder and isinstance(encoder, RecurrentEncoder)
    got = sum(p.numel() for p in encoder.parameters())
    # P (H x in), then per layer two transforms of (4H x 2H) weights and a 4H bias.
    assert got == parameter_count("grid", inputs, hidden, layers, bidirectional) == (
        directions * (hidden * inputs + layers * 2 * (4 * hidden * 2 * hidden + 4 * hidden)))


def test_parameter_count_of_the_default_size():
    """Hidden 64, 2 layers, 2 inputs: 128 + 2 x 2 x 33,024; 2.6x plain stacking's 50,688."""
    assert parameter_count("grid", 2, 64, 2) == 132_224
    assert parameter_count("lstm", 2, 64, 2) == 50_688
    config = load_config(None, {"model.cell": "grid"}).model
    assert count_parameters(Forecaster(config, horizon=3, lookback=9)) == 132_224 + 64 * 3 + 3


def test_parameter_names_and_forget_bias():
    encoder = make_encoder("grid", 2, 5, layers=2, bidirectional=True)
    names = [name for name, _ in encoder.named_parameters()]
    assert names == ["weight_input", "weight_input_reverse"] + [
        f"{kind}_{dimension}_l{k}{suffix}" for k in (0, 1) for suffix in ("", "_reverse")
        for dimension in ("time", "depth") for kind in ("weight", "bias")]
    assert cells.encoder_cell(encoder) == "grid" and cells.forget_gate_block("grid") == 1
    for name, bias in encoder.named_parameters():
        if name.startswith("bias_"):
            torch.testing.assert_close(bias[5:10], torch.ones(5), rtol=0, atol=0)   # f: block 1
            assert (torch.cat([bias[:5], bias[10:]]) != 1.0).all()


# ----------------------------------------------------------------------------------------------
# Through the CLI: train, checkpoint, predict, evaluate, backtest


@pytest.mark.parametrize("bidirectional, attention", [(False, False), (True, True)])
def test_grid_trains_predicts_and_evaluates_through_the_cli(tmp_path, bidirectional, attention):
    out = tmp_path / "run"
    result = run_cli("train", SALES, "--out", out, *TINY, "--set", "train.epochs=2", "--set", "model.layers=2",
                     "--set", "model.cell=grid", "--set", f"model.bidirectional={bidirectional}",
                     "--set", f"model.attention={attention}")
    assert result.exit_code == 0, result.stderr
    saved = torch.load(out / "model.pt", weights_only=True)            # a plain dict of tensors
    weights = saved["models"][0]
    assert {"encoder.weight_input", "encoder.weight_time_l1", "encoder.bias_depth_l1"} <= set(weights)
    assert saved["config"]["model"]["cell"] == "grid"
    run = load_run(out)
    assert run.config.model.cell == "grid"
    member = run.model.members[0]
    assert type(member.encoder) is GridEncoder and member.encoder.bidirectional == bidirectional
    series = read_for_run(run, SALES)
    values = forecast(run, series)
    assert values.shape == (12, 12) and np.isfinite(values).all()

    forecasts = tmp_path / "f.csv"
    result = run_cli("predict", SALES, "--model", out, "--out", forecasts)
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(forecasts)
    assert len(frame) == 12 * 12 and frame["unique_id"].nunique() == 12
    np.testing.assert_allclose(frame["forecast"].to_numpy(), values.reshape(-1), rtol=1e-6)

    metrics = tmp_path / "metrics.json"
    result = run_cli("evaluate", SALES, "--model", out, "--out", metrics, "--windows", 2)
    assert result.exit_code == 0, result.stderr
    report = json.loads(metrics.read_text())
    assert report["windows"] == 2 and len(report["per_window"]) == 2
    scores = report["metrics"]["model"]
    assert set(scores) == {"mae", "rmse", "smape", "mase"} and all(np.isfinite(v) for v in scores.values())


def test_a_gridded_run_refuses_the_grid_cell(tmp_path):
    """data.grid (a ConvLSTM over lat/lon frames) and model.cell=grid (Grid LSTM over time and
    depth) are different things: a gridded run says model.cell does not apply."""
    t = pd.date_range("2020-01-01", periods=30, freq="D")
    frame = pd.DataFrame([{"ds": d, "lat": a, "lon": b, "y": float(k + a + b)}
                          for k, d in enumerate(t) for a in (0, 1) for b in (0, 1)])
    data = tmp_path / "frames.csv"
    frame.to_csv(data, index=False)
    result = run_cli("train", data, "--out", tmp_path / "run", "--grid-cols", "lat,lon", "--horizon", "3",
                     "--set", "model.cell=grid")
    assert result.exit_code == 2
    assert "config key 'model.cell' does not apply to gridded runs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
