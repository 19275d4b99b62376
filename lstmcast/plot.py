"""Figures: forecasts after each series' history, and the training history of a run.

matplotlib is optional (`pip install 'lstmcast[plot]'`) and imported only when a figure is drawn.
Figures are built as `matplotlib.figure.Figure` objects with an Agg canvas, never through pyplot, so
no global backend state is touched. The image is rendered in memory and written with the same
atomic write as every other output: a failure leaves any previous file as it was.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .checkpoint import atomic_write_bytes
from .errors import LstmcastError
from .keys import quantile_pairs
from .predict import forecast, forecast_frame, load_run, read_for_run
from .rundir import check_output

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
MAX_DEFAULT_SERIES = 6                 # series drawn when none are named
PANEL_SIZE = (5.0, 3.0)                # inches per series panel (width, height)
DPI = 100
HISTORY_COLOR, FORECAST_COLOR = "C0", "C1"
INSTALL_HINT = "plotting needs matplotlib: pip install 'lstmcast[plot]'"
HISTORY_COLUMNS = ("member", "epoch", "train_loss", "val_loss", "lr")


@dataclass(frozen=True)
class ForecastPlot:
    """What `plot_forecasts` drew."""

    path: Path
    series_ids: list[str]                  # one panel each, in drawing order (read back from the figure)
    left_out: int                          # series in the data that were not drawn
    bands: list[tuple[str, str]]           # quantile column pairs shaded, outermost first


@dataclass(frozen=True)
class HistoryPlot:
    """What `plot_history` drew."""

    path: Path
    members: list[int]
    epochs: int                            # rows of history.csv (all members)
    best_epochs: dict[int, int]            # member -> epoch of its lowest validation loss
    log_scale: bool                        # loss axis


def _matplotlib():
    """(Figure, FigureCanvasAgg, matplotlib.dates, matplotlib.ticker), or a LstmcastError with the fix."""
    try:
        import matplotlib  # first: a submodule already imported would otherwise hide a missing package
        import matplotlib.dates as mdates
        import matplotlib.ticker as mticker
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise LstmcastError(INSTALL_HINT) from None
    version = tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())
    if version < (3, 7):
        raise LstmcastError(f"plotting needs matplotlib>=3.7 (found {matplotlib.__version__}): "
                            f"pip install 'lstmcast[plot]'")
    return Figure, FigureCanvasAgg, mdates, mticker


def _check_out(out_path: str | Path, inputs: list, run_dir: str | Path) -> tuple[Path, str]:
    """The output path and its format; checked before any work is done. Never one of `inputs`,
    never inside the run directory."""
    out = Path(out_path)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise LstmcastError(f"{out}: unsupported figure format '{out.suffix or '(no suffix)'}'; "
                            f"use one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise LstmcastError(f"{out}: is a directory; give a file path such as {out / ('figure' + out.suffix)}")
    if not out.parent.is_dir():
        raise LstmcastError(f"{out.parent}: directory not found; create it or choose another --out")
    check_output(out, inputs, run_dir)
    return out, fmt


def _save(figure, canvas_class, out: Path, fmt: str) -> None:
    """Render in memory, then write atomically: a failure never leaves half a file."""
    canvas_class(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    atomic_write_bytes(out, buffer.getvalue())


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) for n panels: one column for one series, two up to four, then three."""
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    return math.ceil(n / cols), cols


def _wall_times(times) -> np.ndarray:
    """Timestamps as matplotlib takes them; a time zone is shown as local wall time."""
    index = pd.DatetimeIndex(times)
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.to_numpy()


def quantile_bands(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs (lower, upper) of quantile columns `q_<level>` with levels p and 1 - p, outermost first.

    q_0.1 pairs with q_0.9 and q_0.25 with q_0.75; a level without its mirror (q_0.5) is not a band.
    """
    levels: dict[float, str] = {}
    for name in frame.columns:
        name = str(name)
        if not name.startswith("q_"):
            continue
        try:
            level = float(name[2:])
        except ValueError:
            continue
        if 0.0 < level < 1.0 and level not in levels:
            levels[level] = name
    return [(levels[low], levels[high]) for low, high in quantile_pairs(list(levels))]


def _band_width(band: tuple[str, str]) -> float:
    return float(band[1][2:]) - float(band[0][2:])


def _select(all_ids: list[str], series_ids, data_path) -> tuple[list[int], int]:
    """Indices of the series to draw, and how many of the file's series are left out."""
    if series_ids is None:
        chosen = list(range(min(MAX_DEFAULT_SERIES, len(all_ids))))
        return chosen, len(all_ids) - len(chosen)
    wanted = list(dict.fromkeys(str(s) for s in series_ids))
    if not wanted:
        raise LstmcastError("no series ids given; name at least one with --series ID")
    index = {sid: i for i, sid in enumerate(all_ids)}
    unknown = next((sid for sid in wanted if sid not in index), None)
    if unknown is not None:
        some = ", ".join(all_ids[:5]) + (", ..." if len(all_ids) > 5 else "")
        raise LstmcastError(f"{data_path}: series '{unknown}' not found; the file has {len(all_ids)} "
                            f"series: {some}")
    return [index[sid] for sid in wanted], len(all_ids) - len(wanted)


def _draw_series(ax, past: pd.DatetimeIndex, values: np.ndarray, ahead: pd.DataFrame, time_col: str,
                 bands: list[tuple[str, str]], history: int) -> dict[str, object]:
    """One series' last `history` points, its forecast and bands; the legend handles by label."""
    handles: dict[str, object] = {}
    # Forecast and bands start at the last observed point, so history and forecast join.
    times = _wall_times(past[-1:].append(pd.DatetimeIndex(ahead[time_col])))
    origin = values[-1]
    for band, alpha in zip(bands, np.linspace(0.18, 0.35, len(bands))):
        lower = np.concatenate([[origin], ahead[band[0]].to_numpy(dtype=float)])
        upper = np.concatenate([[origin], ahead[band[1]].to_numpy(dtype=float)])
        handles[f"{_band_width(band):.0%} interval"] = ax.fill_between(
            times, lower, upper, color=FORECAST_COLOR, alpha=float(alpha), linewidth=0)
    shown = slice(max(0, len(values) - history), None)
    (handles["history"],) = ax.plot(_wall_times(past[shown]), values[shown], color=HISTORY_COLOR, linewidth=1.4)
    forecast_values = np.concatenate([[origin], ahead["forecast"].to_numpy(dtype=float)])
    (handles["forecast"],) = ax.plot(times, forecast_values, color=FORECAST_COLOR, linewidth=1.6)
    handles["forecast origin"] = ax.axvline(times[0], color="0.4", linestyle=":", linewidth=1)
    return handles


def plot_forecasts(data_path: str | Path, run_dir: str | Path, out_path: str | Path,
                   series_ids: list[str] | None = None, history: int | None = None,
                   device: str = "cpu", future: str | Path | None = None) -> ForecastPlot:
    """One panel per series: its last `history` points, then the forecast from the last point on.

    `history` defaults to 4 x horizon, and at least the model's lookback. Without `series_ids` the
    first 6 series of the file are drawn. `future`: the future covariates CSV, needed (as for
    predict) when the run was trained with data.future_covariates.
    """
    out, fmt = _check_out(out_path, [data_path, future], run_dir)
    Figure, FigureCanvasAgg, mdates, _ = _matplotlib()
    if history is not None and history < 1:
        raise LstmcastError(f"--history {history}: give the number of past points to show (>= 1)")
    run = load_run(run_dir, device)
    series = read_for_run(run, data_path)
    chosen, left_out = _select(list(series.ids), series_ids, data_path)
    # Forecast only the series drawn: each series is forecast independently of the others.
    series = series.subset(chosen)
    frame = forecast_frame(run, series, forecast(run, series, future=future))
    if history is None:
        history = max(4 * run.horizon, run.config.input_length)
    bands = sorted(quantile_bands(frame), key=_band_width, reverse=True)
    id_col, time_col = run.columns.id_col, run.columns.time_col

    rows, cols = _grid(len(series))
    figure = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), dpi=DPI, layout="constrained")
    handles: dict[str, object] = {}
    pasts = np.split(series.times(), np.cumsum(series.lengths())[:-1])
    for k, sid in enumerate(series.ids):
        ax = figure.add_subplot(rows, cols, k + 1)
        past = pasts[k]
        ahead = frame[frame[id_col] == sid]
        handles.update(_draw_series(ax, past, series.values[k], ahead, time_col, bands, history))
        ax.set_title(str(sid), fontsize=10)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.grid(True, alpha=0.3)
    order = ["history", "forecast"] + [k for k in handles if k.endswith("interval")] + ["forecast origin"]
    figure.legend([handles[k] for k in order], order, loc="outside upper center", ncol=len(order),
                  frameon=False)
    drawn = [ax.get_title() for ax in figure.axes if ax.lines]
    _save(figure, FigureCanvasAgg, out, fmt)
    return ForecastPlot(out, drawn, left_out, bands)


def _read_history(run_dir: str | Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LstmcastError(f"{run_dir}: run directory not found; pass the --out of 'lstmcast train'")
    path = run_dir / "history.csv"
    if not path.is_file():
        raise LstmcastError(f"{path}: not found; 'lstmcast train' writes it after the first epoch, "
                            f"so train (or --resume) into this run directory first")
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise LstmcastError(f"{path}: not a readable history file; retrain to rewrite it") from None
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise LstmcastError(f"{path}: column '{missing[0]}' missing (expected "
                            f"{', '.join(HISTORY_COLUMNS)}); retrain to rewrite it")
    if history.empty:
        raise LstmcastError(f"{path}: no epochs recorded yet; train for at least one epoch")
    for name in HISTORY_COLUMNS:
        history[name] = pd.to_numeric(history[name], errors="coerce")
    if history[["member", "epoch"]].isna().any().any():
        raise LstmcastError(f"{path}: member and epoch must be whole numbers; retrain to rewrite it")
    return history.astype({"member": int, "epoch": int})


def _wide_range(values: np.ndarray) -> bool:
    """True when every value is positive and they span more than 10x: a log axis reads better."""
    values = values[np.isfinite(values)]
    return bool(values.size > 0 and (values > 0).all() and values.max() / values.min() > 10)


def plot_history(run_dir: str | Path, out_path: str | Path) -> HistoryPlot:
    """Training and validation loss per epoch (a colour per ensemble member) over the learning rate."""
    out, fmt = _check_out(out_path, [], run_dir)
    Figure, FigureCanvasAgg, _, mticker = _matplotlib()
    history = _read_history(run_dir)
    from matplotlib.lines import Line2D  # matplotlib is importable here: _matplotlib() checked it

    figure = Figure(figsize=(8, 5.5), dpi=DPI, layout="constrained")
    loss_ax, lr_ax = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    members = sorted(history["member"].unique().tolist())
    best_epochs: dict[int, int] = {}
    for k, member in enumerate(members):
        rows = history[history["member"] == member].sort_values("epoch")
        color = f"C{k % 10}"
        loss_ax.plot(rows["epoch"], rows["train_loss"], color=color, linestyle="-", linewidth=1.4)
        loss_ax.plot(rows["epoch"], rows["val_loss"], color=color, linestyle="--", linewidth=1.4)
        validated = rows.dropna(subset=["val_loss"])
        if not validated.empty:
            best = validated.loc[validated["val_loss"].idxmin()]
            best_epochs[int(member)] = int(best["epoch"])
            loss_ax.plot([best["epoch"]], [best["val_loss"]], marker="o", markersize=7, color=color,
                         markerfacecolor="none", markeredgewidth=1.6)
        lr_ax.plot(rows["epoch"], rows["lr"], color=color, linewidth=1.2, drawstyle="steps-post")
    losses = history[["train_loss", "val_loss"]].to_numpy(dtype=float).ravel()
    log_scale = _wide_range(losses)
    if log_scale:
        loss_ax.set_yscale("log")
    if _wide_range(history["lr"].to_numpy(dtype=float)):
        lr_ax.set_yscale("log")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(f"{Path(run_dir).name}: training history", fontsize=11)
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("epoch")
    lr_ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    for ax in (loss_ax, lr_ax):
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color="0.2", linestyle="-"), Line2D([], [], color="0.2", linestyle="--"),
               Line2D([], [], color="0.2", marker="o", markerfacecolor="none", linestyle="none")]
    labels = ["train", "validation", "best validation"]
    if len(members) > 1:
        handles += [Line2D([], [], color=f"C{k % 10}", linewidth=3) for k in range(len(members))]
        labels += [f"member {m}" for m in members]
    loss_ax.legend(handles, labels, fontsize=8, ncol=2 if len(labels) > 4 else 1)
    _save(figure, FigureCanvasAgg, out, fmt)
    return HistoryPlot(out, [int(m) for m in members], len(history), best_epochs, log_scale)
