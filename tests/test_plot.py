"""lstmcast plot / plot-history through the CLI, and the pieces the figures are made of."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from conftest import SALES, run_cli

pytest.importorskip("matplotlib")

import matplotlib.figure  # noqa: E402
import matplotlib.image  # noqa: E402

import lstmcast.plot as plot_module  # noqa: E402
from lstmcast.plot import plot_forecasts, plot_history, quantile_bands  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_png(sales_run, tmp_path):
    out = tmp_path / "forecasts.png"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"wrote forecasts of 6 series to {out} (6 more not shown; choose with --series)"
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(out)
    # 6 series -> 2 rows x 3 columns of 5 x 3 inch panels at 100 dpi, RGBA.
    assert pixels.shape == (600, 1500, 4)
    assert pixels[..., :3].std() > 0.05          # not a blank image
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts.png"]   # no temp file left


def test_plot_named_series_only(sales_run, tmp_path):
    out = tmp_path / "two.png"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out, "--series", "store_07,store_03",
                     "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and out.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(out).shape == (300, 1000, 4)     # 1 row x 2 columns
    info = plot_forecasts(SALES, sales_run, out, series_ids=["store_07", "store_03"], history=10)
    assert info.series_ids == ["store_07", "store_03"]              # titles of the axes with data
    assert info.left_out == 10 and info.bands == [] and info.path == out


def test_plot_repeated_series_option(sales_run, tmp_path):
    out = tmp_path / "three.svg"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out, "--series", "store_01",
                     "--series", "store_12,store_02")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"wrote forecasts of 3 series to {out}"
    text = out.read_text()
    for sid in ("store_01", "store_12", "store_02"):
        assert sid in text
    assert "store_05" not in text


def test_plot_draws_history_and_joined_forecast(sales_run, tmp_path, monkeypatch):
    """The lines drawn: the last `history` points, then the forecast starting at the last point."""
    figures = []
    real_save = plot_module._save
    monkeypatch.setattr(plot_module, "_save", lambda fig, *a: (figures.append(fig), real_save(fig, *a)))
    plot_forecasts(SALES, sales_run, tmp_path / "f.png", series_ids=["store_03"], history=10)
    (ax,) = figures[0].axes
    past, ahead = ax.lines[0], ax.lines[1]
    data = pd.read_csv(SALES, parse_dates=["ds"])
    store = data[data["unique_id"] == "store_03"]
    assert np.allclose(past.get_ydata(), store["y"].to_numpy()[-10:])
    assert len(ahead.get_ydata()) == 12 + 1
    assert ahead.get_ydata()[0] == store["y"].iloc[-1]              # no gap at the forecast origin
    assert pd.Timestamp(ahead.get_xdata()[0]) == store["ds"].max()
    assert pd.Timestamp(ahead.get_xdata()[-1]) == pd.Timestamp("2025-12-01")
    assert ax.get_title() == "store_03" and len(figures[0].legends) == 1


def test_plot_unknown_series(sales_run, tmp_path):
    out = tmp_path / "x.png"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out, "--series", "store_01,store_99,nope")
    assert result.exit_code == 2
    assert result.stderr.startswith("lstmcast: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "'store_99' not found" in result.stderr and "12 series: store_01, store_02" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_plot_bad_suffix_is_checked_first(tmp_path):
    out = tmp_path / "figure.jpg"
    # The run directory does not exist: the suffix must be rejected before the run is loaded.
    result = run_cli("plot", SALES, "--model", tmp_path / "no_run", "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"lstmcast: error: {out}: unsupported figure format '.jpg'; "
                                     f"use one of .png, .svg, .pdf")
    assert list(tmp_path.iterdir()) == []


def test_plot_output_directory_must_exist(sales_run, tmp_path):
    out = tmp_path / "missing" / "f.png"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 2
    assert f"{tmp_path / 'missing'}: directory not found" in result.stderr
    assert not (tmp_path / "missing").exists()


def test_plot_history_writes_svg(sales_run, tmp_path):
    out = tmp_path / "history.svg"
    result = run_cli("plot-history", sales_run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"wrote training history (3 epochs) to {out}"
    text = out.read_text()
    assert "<svg" in text
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    info = plot_history(sales_run, tmp_path / "again.svg")
    history = pd.read_csv(sales_run / "history.csv")
    assert info.members == [1] and info.epochs == 3
    assert info.best_epochs == {1: int(history.loc[history["val_loss"].idxmin(), "epoch"])}


def test_plot_history_ensemble_with_refit_epochs(tmp_path):
    """Two members, refit epochs without a validation loss, a learning rate that decays."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text(
        "member,epoch,train_loss,val_loss,lr,seconds\n"
        "1,1,2.0,3.0,0.001,0.1\n1,2,0.5,1.0,0.001,0.1\n1,3,0.1,1.5,0.0005,0.1\n1,4,0.08,nan,0.0005,0.1\n"
        "2,1,1.8,2.5,0.001,0.1\n2,2,0.6,0.9,0.001,0.1\n2,3,0.2,0.7,0.001,0.1\n2,4,0.15,,0.001,0.1\n")
    out = tmp_path / "h.png"
    result = run_cli("plot-history", run, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == f"wrote training history (2 members, 8 epochs in all) to {out}"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(out).shape == (550, 800, 4)
    info = plot_history(run, tmp_path / "h.pdf")
    assert info.members == [1, 2] and info.best_epochs == {1: 2, 2: 3}
    assert info.log_scale is True                       # 0.08 .. 3.0 spans more than 10x
    assert (tmp_path / "h.pdf").read_bytes()[:5] == b"%PDF-"


def test_plot_history_missing_files(sales_run, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    result = run_cli("plot-history", empty, "--out", tmp_path / "h.png")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"lstmcast: error: {empty / 'history.csv'}: not found;")
    assert "train" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("plot-history", tmp_path / "nowhere", "--out", tmp_path / "h.png")
    assert result.exit_code == 2 and "run directory not found" in result.stderr
    assert not (tmp_path / "h.png").exists()


def test_matplotlib_missing(sales_run, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)        # `import matplotlib` now fails
    out = tmp_path / "f.png"
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip() == "lstmcast: error: plotting needs matplotlib: pip install 'lstmcast[plot]'"
    result = run_cli("plot-history", sales_run, "--out", out)
    assert result.exit_code == 2 and "pip install 'lstmcast[plot]'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_failed_plot_keeps_previous_file(sales_run, tmp_path, monkeypatch):
    out = tmp_path / "forecasts.png"
    assert run_cli("plot", SALES, "--model", sales_run, "--out", out, "--quiet").exit_code == 0
    before = out.read_bytes()

    def half_then_fail(self, target, **kwargs):
        target.write(b"\x89PNG half a file")
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail)
    result = run_cli("plot", SALES, "--model", sales_run, "--out", out, "--series", "store_02")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)    # a bug, not a user error
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecasts.png"]


def test_quantile_bands_pairs_symmetric_levels():
    frame = pd.DataFrame({"unique_id": ["a"], "ds": [pd.Timestamp("2025-01-01")], "forecast": [1.0],
                          "q_0.75": [1.5], "q_0.1": [0.0], "q_0.5": [1.0], "q_0.9": [2.0],
                          "q_0.25": [0.5], "q_0.3": [0.6], "q_x": [9.0], "quality": [1.0]})
    assert quantile_bands(frame) == [("q_0.1", "q_0.9"), ("q_0.25", "q_0.75")]
    assert quantile_bands(frame[["unique_id", "ds", "forecast"]]) == []


def test_plot_shades_quantile_bands(sales_run, tmp_path, monkeypatch):
    """A frame with quantile columns (a later feature) gets one shaded band per symmetric pair."""
    real_frame = plot_module.forecast_frame

    def with_quantiles(run, series, values):
        frame = real_frame(run, series, values)
        return frame.assign(**{"q_0.25": frame["forecast"] - 5, "q_0.75": frame["forecast"] + 5,
                               "q_0.1": frame["forecast"] - 20, "q_0.9": frame["forecast"] + 20})

    figures = []
    real_save = plot_module._save
    monkeypatch.setattr(plot_module, "forecast_frame", with_quantiles)
    monkeypatch.setattr(plot_module, "_save", lambda fig, *a: (figures.append(fig), real_save(fig, *a)))
    info = plot_forecasts(SALES, sales_run, tmp_path / "bands.png", series_ids=["store_04"])
    assert info.bands == [("q_0.1", "q_0.9"), ("q_0.25", "q_0.75")]
    (ax,) = figures[0].axes
    assert len(ax.collections) == 2                     # one filled band per pair
    outer = ax.collections[0].get_paths()[0].vertices[:, 1]
    forecast = ax.lines[1].get_ydata()
    for edge in np.concatenate([forecast[1:] - 20, forecast[1:] + 20, forecast[:1]]):
        assert np.isclose(outer, edge).any(), edge     # 20 either side, closed at the last observation
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert labels == ["history", "forecast", "80% interval", "50% interval", "forecast origin"]
