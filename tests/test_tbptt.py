"""train.tbptt: stateful training over whole series (lstmcast/tbptt.py).

The state is carried (chunked passes equal one long pass, and a packed slot starts each series
from zero), no gradient crosses a chunk boundary, a stateful model forecasts what depends on an
event far older than any window, and the CLI trains, predicts and evaluates such a run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PREFIX, SALES, run_cli

from lstmcast import tbptt
from lstmcast.config import load_config
from lstmcast.errors import LstmcastError
from lstmcast.model import Forecaster
from lstmcast.predict import forecast, load_run, read_for_run
from lstmcast.train import train
from lstmcast.windows import SeriesBuffer

pytestmark = pytest.mark.usefixtures("one_thread")

HORIZON = 3


def _model_and_buffer(lengths=(50, 23, 37), layers=2):
    """A float64 stateful Forecaster (no dropout) and a float64 buffer of random series."""
    torch.manual_seed(0)
    config = load_config(None, {"model.hidden_size": 5, "model.layers": layers, "model.dropout": 0.0,
                                "train.tbptt": 8, "data.horizon": HORIZON})
    model = Forecaster(config.model, HORIZON, 4).double().eval()
    rng = np.random.default_rng(0)
    series = [rng.standard_normal(n) for n in lengths]
    buffer = SeriesBuffer.build(series, 4, torch.device("cpu"), horizon=HORIZON)
    return model, dataclasses.replace(buffer, features=buffer.features.double()), series


def _one_long_pass(model, buffer: SeriesBuffer, index: int) -> torch.Tensor:
    """Forecasts from every origin 1..n of series `index`, from a single encoder call over all of it."""
    start = buffer.offsets[index]
    inputs = buffer.features[start: start + buffer.lengths[index]]   # (n, features)
    with torch.no_grad():
        states, _ = model.encoder(inputs[None])                       # (1, n, width)
        return model.decode(states[0], inputs[:, :1])                 # (n, horizon)


def test_chunked_state_equals_one_long_pass():
    model, buffer, series = _model_and_buffer()
    for index, values in enumerate(series):
        origins = np.arange(1, len(values) + 1)
        whole = _one_long_pass(model, buffer, index)
        for chunk in (1, 3, 8, 1000):   # state carried across 1..50 chunk boundaries, or none
            chunked = tbptt.forecast_origins(model, buffer, origins, np.full(len(origins), index), chunk=chunk)
            assert chunked.dtype == torch.float64
            torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_packed_slot_starts_each_series_from_zero_state():
    """One slot reads all three series one after the other: each forecast equals that series alone."""
    model, buffer, series = _model_and_buffer()
    lanes = tbptt.pack(np.array([len(s) for s in series]), 8, 1)
    assert lanes.fresh.sum() == 3 and (lanes.series >= 0).all()      # one lane, three fresh starts
    origins = np.array([len(s) for s in series])
    side_by_side = tbptt.forecast_origins(model, buffer, origins, chunk=8)
    one_slot = tbptt.forecast_origins(model, buffer, origins, chunk=8, slots=1)
    for index in range(len(series)):
        alone = _one_long_pass(model, buffer, index)[-1]
        torch.testing.assert_close(side_by_side[index], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(one_slot[index], alone, rtol=1e-12, atol=1e-12)


def test_pack_balances_lanes_and_covers_every_chunk():
    lengths = np.array([100, 7, 0, 64, 65, 30])
    lanes = tbptt.pack(lengths, 16, 2)
    chunks = -(-lengths // 16)
    assert lanes.steps == max(int(np.ceil(chunks.sum() / 2)), chunks.max())
    for i, n in enumerate(chunks):
        rows = np.argwhere(lanes.series == i)
        assert len(rows) == n                           # every chunk once, in one slot, in order
        if n:
            assert len(set(rows[:, 1])) == 1
            assert np.array_equal(lanes.start[lanes.series == i], np.arange(n) * 16)
            assert np.array_equal(rows[:, 0], lanes.first_step[i] + np.arange(n))


def test_no_gradient_crosses_a_chunk_boundary():
    model, buffer, _ = _model_and_buffer(layers=1)
    model.train()
    first = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    second = torch.randn(2, 6, 2, dtype=torch.float64)

    def loss_of_second_chunk(state_between) -> torch.Tensor:
        states, _ = model.encoder(second, state_between)
        return states.pow(2).sum()

    _, state = model.encoder(first)
    loss_of_second_chunk(tbptt.carry(state, np.ones(2, dtype=bool))).backward()
    assert first.grad is None                           # detached: chunk 2's loss never reaches chunk 1
    assert all(p.grad is not None for p in model.encoder.parameters())
    _, state = model.encoder(first)                     # the control: without carry's detach it would
    loss_of_second_chunk(state).backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    _, state = model.encoder(first)                     # a fresh slot starts from zeros
    reset = tbptt.carry(state, np.array([True, False]))
    assert torch.equal(reset[0][:, 1], torch.zeros_like(reset[0][:, 1]))
    assert torch.equal(reset[1][:, 0], state[1][:, 0].detach())


def _regime_series(n_series: int = 32, reveals: int = 6, seed: int = 0):
    """Series whose next answer depends on a regime set long before any practical window.

    Each series: a regime flag (10 steps at +3 or -3), then `reveals` times [quiet noise of 20-29
    steps whose last step raises the `query` covariate, then an answer: 8 steps at 2 x regime];
    then the regime flips (a -regime flag) and the same again. The noise has one distribution in
    both regimes, so a window shorter than the gaps (lookback 16 < 20) sees the query but not the
    sign; the state remembers it from the last answer or flag. Returns the training frame (up to the
    answer before the last), the history up to the last query, and the last answers (n, 8)."""
    rng = np.random.default_rng(seed)
    frames, answers = [], []
    for i in range(n_series):
        sign = 1.0 if i % 2 else -1.0
        values, query, ends = [], [], []
        for regime in (sign, -sign):
            values += list(regime * 3 + 0.3 * rng.standard_normal(10))
            query += [0] * 10
            for _ in range(reveals):
                gap = int(rng.integers(20, 30))
                values += list(0.1 * rng.standard_normal(gap))
                query += [0] * (gap - 1) + [1]
                values += list(regime * 2 + 0.3 * rng.standard_normal(8))
                query += [0] * 8
                ends.append(len(values))
        history = len(values) - 8
        answers.append(np.array(values[history:]))
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range("2000-01-01", periods=history, freq="D"),
                                    "y": values[:history], "query": query[:history],
                                    "train": np.arange(history) < ends[-2]}))
    frame = pd.concat(frames)
    in_training = frame.pop("train")
    return frame[in_training], frame, np.stack(answers)


def test_stateful_model_remembers_what_no_window_sees(tmp_path):
    train_frame, history, answers = _regime_series()
    train_frame.to_csv(tmp_path / "train.csv", index=False)
    history.to_csv(tmp_path / "history.csv", index=False)
    base = {"data.horizon": 8, "train.recipe": "none", "model.hidden_size": 16, "model.layers": 1,
            "model.dropout": 0.0, "data.calendar": "none", "data.past_covariates": ["query"],
            "train.lr": 0.01, "train.lr_patience": 1000, "train.patience": 1000, "train.time_budget": None}
    errors = {}
    for name, keys in (("stateful", {"train.tbptt": 64, "train.batch_size": 8, "train.epochs": 60}),
                       ("windowed", {"data.lookback": 16, "train.batch_size": 256, "train.epochs": 15})):
        train(tmp_path / "train.csv", tmp_path / name, load_config(None, {**base, **keys}))
        run = load_run(tmp_path / name)
        errors[name] = float(np.abs(forecast(run, read_for_run(run, tmp_path / "history.csv")) - answers).mean())
    # Knowing the sign: about the answers' noise (0.3 x 0.8); not knowing it: about |2 x regime| = 2.
    assert errors["stateful"] < 0.6, errors
    assert errors["windowed"] > 1.5, errors
    assert errors["stateful"] < 0.3 * errors["windowed"], errors


def test_cli_train_predict_evaluate_stateful(tmp_path):
    run_dir, forecasts, metrics = tmp_path / "run", tmp_path / "forecasts.csv", tmp_path / "metrics.json"
    tiny = ["--set", "model.hidden_size=8", "--set", "model.layers=1", "--set", "train.epochs=2"]
    result = run_cli("train", SALES, "--out", run_dir, "--horizon", 6, "--set", "train.tbptt=16", *tiny)
    assert result.exit_code == 0, result.output
    run = load_run(run_dir)
    assert run.config.train.tbptt == 16 and run.model.tbptt == 16            # saved in, restored from model.pt
    assert "tbptt: 16" in (run_dir / "config.yaml").read_text()
    result = run_cli("predict", SALES, "--model", run_dir, "--out", forecasts)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(forecasts)
    sales = pd.read_csv(SALES)
    assert len(frame) == sales["unique_id"].nunique() * 6 and np.isfinite(frame["forecast"]).all()
    # predict warms the state over the whole history: the same numbers as the stateful pass itself
    series = read_for_run(run, SALES)
    assert np.allclose(frame["forecast"].to_numpy().reshape(-1, 6), forecast(run, series), rtol=1e-6)
    result = run_cli("evaluate", SALES, "--model", run_dir, "--out", metrics, "--windows", 2)
    assert result.exit_code == 0, result.output
    report = json.loads(metrics.read_text())
    assert report["windows"] == 2 and report["horizon"] == 6
    assert all(np.isfinite(value) for value in report["metrics"]["model"].values())


@pytest.mark.parametrize("keys, names", [
    ({"model.window_norm": "standard"}, "model.window_norm standard"),
    ({"data.scaling": "none"}, "data.scaling none"),
    ({"model.attention": True}, "model.attention"),
    ({"model.cell": "peephole"}, "model.cell peephole"),
    ({"train.loss": "mase"}, "train.loss mase"),
    ({"train.ensemble": 2, "train.members": [{"model.window_norm": "mean"}]}, "model.window_norm mean"),
])
def test_combinations_that_make_no_sense_are_refused(keys, names):
    with pytest.raises(LstmcastError, match=f"train.tbptt.*cannot be combined with {names}"):
        load_config(None, {"train.tbptt": 32, **keys})
    load_config(None, {"train.tbptt": 0, **keys})   # each is fine without tbptt


def test_cli_refuses_window_norm_with_tbptt_in_one_line(tmp_path):
    result = run_cli("train", SALES, "--out", tmp_path / "run", "--set", "train.tbptt=8",
                     "--set", "model.window_norm=standard")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX) and "model.window_norm=none" in lines[0]
    assert not (tmp_path / "run").exists()
