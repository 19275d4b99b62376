"""The command line: the commands and their options. With clireport.py (errors to exit codes,
progress and tables), the only module that imports typer or rich.

The core (train, predict, evaluate, plot: torch, pandas, matplotlib) is imported inside each
command body, so `lstmcast --help` and a usage error answer at once.

User errors (LstmcastError) -> one line on stderr, exit 2. Ctrl-C -> exit 130. Anything else is a
bug: traceback, exit 1. On a terminal progress is drawn with rich; otherwise (cron, pipes) plain
lines go to stderr and nothing is animated.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List

import typer

from . import __version__
from .clireport import Reporter, _fail, _guard, _in_sample_note, _other_rank
from .config import OPTION_KEYS, Config, load_config, parse_set

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train stacked-LSTM forecasters on CSV files, forecast and evaluate them.")


def _build_config(config_file: Path | None, sets: List[str] | None, base: Config | None,
                  **options) -> Config:
    """YAML file, then the named options, then --set: later wins. `options` are train's parameters
    named after the options keys.py declares (--past-covariates: past_covariates)."""
    names = {option.removeprefix("--").replace("-", "_"): key for option, key in OPTION_KEYS.items()}
    overrides = {names[k]: v for k, v in options.items() if v is not None}
    overrides.update(parse_set(sets or []))
    return load_config(config_file, overrides, base=base)


@app.command()
def train(
    data: Path = typer.Argument(..., help="CSV file: long (id, time, value) or wide (--target a,b,c)."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="YAML config file."),
    id_col: str | None = typer.Option(None, "--id-col", help="Series id column (default unique_id)."),
    time_col: str | None = typer.Option(None, "--time-col", help="Timestamp column (default ds, or detected)."),
    target: str | None = typer.Option(None, "--target", help="Value column, or a comma list for a wide file."),
    horizon: int | None = typer.Option(None, "--horizon", help="Steps to forecast."),
    freq: str | None = typer.Option(None, "--freq",
                                    help="Frequency of the data, e.g. D, B, W-WED, MS, MS@15, QE-DEC, h "
                                         "(data.freq; default: inferred, an error if ambiguous)."),
    lookback: int | None = typer.Option(None, "--lookback", help="Input window length (default 3 x horizon)."),
    quantiles: str | None = typer.Option(None, "--quantiles",
                                         help="Quantile levels to forecast, e.g. 0.1,0.5,0.9 (model.quantiles)."),
    past_covariates: str | None = typer.Option(
        None, "--past-covariates", help="Numeric columns known only up to now, e.g. temp,visits (encoder input)."),
    future_covariates: str | None = typer.Option(
        None, "--future-covariates", help="Numeric columns known in advance, e.g. price,promo (predict --future)."),
    grid_cols: str | None = typer.Option(
        None, "--grid-cols", help="Grid coordinate columns of a gridded file, e.g. lat,lon (data.grid; ConvLSTM)."),
    set_: List[str] | None = typer.Option(None, "--set", help="Config override key=value, repeatable."),
    device: str | None = typer.Option(None, "--device", help="auto|cpu|cuda|cuda:N|mps."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    time_budget: str | None = typer.Option(
        None, "--time-budget", help="Wall-clock limit for training, e.g. 90s, 10m, 1h30m (train.time_budget; "
                                    "default 10m; 'none': no limit)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an existing run directory once the new run is done."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Train a forecaster on DATA and write a run directory (under torchrun: one model, every rank
    training on its share of each batch, rank 0 writing and reporting)."""
    quiet = quiet or _other_rank()
    reporter = Reporter(quiet)

    def body():
        from .rundir import saved_config
        from .train import train as train_run

        base = saved_config(out) if resume else None
        targets = [t.strip() for t in target.split(",") if t.strip()] if target else None
        cfg = _build_config(config, set_, base, id_col=id_col, time_col=time_col, target=targets,
                            horizon=horizon, freq=freq, lookback=lookback, device=device, seed=seed,
                            time_budget=time_budget,
                            quantiles=quantiles, past_covariates=past_covariates,
                            future_covariates=future_covariates, grid_cols=grid_cols)
        try:
            result = train_run(data, out, cfg, resume=resume, overwrite=overwrite,
                               on_event=reporter)
        finally:
            reporter.close()
        reporter.table(f"early-stopping windows ({result.metrics['horizon']} points per series; "
                       f"in-sample: they chose the best epoch)", result.metrics["validation"])
        reporter.interval_table("validation intervals (before conformal calibration)"
                                if "conformal" in result.metrics else "validation intervals", result.metrics)
        if "conformal" in result.metrics:
            conformal = result.metrics["conformal"]
            widened = ", ".join(f"{name} {sum(c) / len(c):+.3f}"
                                for name, c in zip(conformal["names"], conformal["corrections"]))
            reporter.info(f"conformal corrections from {conformal['n_calibration']} calibration windows "
                          f"(held out from training and early stopping; mean over steps, "
                          f"in the model's units, window-normalised or scaled): {widened}")
        losing = _loses_to_seasonal_naive(result.metrics.get("validation", {}))
        if losing and not quiet:
            print(f"lstmcast: warning: {losing}", file=sys.stderr)
        reporter.info(f"best epoch {result.best_epoch} of {result.epochs_run} "
                      f"(val_loss {result.best_val_loss:.5f}); run written to {result.run_dir}")

    _guard(body, "interrupted; continue the run with 'lstmcast train ... --resume'", speaks=not _other_rank())


def _loses_to_seasonal_naive(validation: dict) -> str | None:
    """The warning for a model worse than seasonal naive on its own early-stopping windows (an
    undertrained run, a budget too small for the data), or None."""
    model = validation.get("model", {}).get("mase", float("nan"))
    baseline = validation.get("seasonal_naive", {}).get("mase", float("nan"))
    if not (model > baseline):  # nan compares False: no warning without both scores
        return None
    return (f"on its early-stopping windows the model's MASE {model:.3f} is worse than seasonal naive's "
            f"{baseline:.3f}; give training more time (--time-budget) or more epochs before using its forecasts")


@app.command()
def predict(
    data: Path = typer.Argument(..., help="CSV with the history to forecast from."),
    model: Path = typer.Option(..., "--model", help="Run directory made by 'lstmcast train'."),
    out: Path = typer.Option(..., "--out", help="Forecasts to write: CSV, or Parquet for a .parquet / .pq name."),
    horizon: int | None = typer.Option(None, "--horizon", help="Steps to forecast (at most the trained horizon)."),
    future: Path | None = typer.Option(None, "--future",
                                       help="CSV of future covariates: id, time, the columns, every forecast step."),
    device: str = typer.Option("cpu", "--device", help="auto|cpu|cuda|cuda:N|mps."),
    shard: str | None = typer.Option(None, "--shard", help="i/N: only the series of shard i of N (0 <= i < N, "
                                     "by a stable hash of the id); the N outputs together are the whole forecast."),
    chunk_series: int | None = typer.Option(None, "--chunk-series", help="Series forecast at a time, read and "
                                            "written as they go (default 10000; 0: the whole file at once)."),
    ray: bool = typer.Option(False, "--ray", help="Forecast on Ray Data: actors each load the model once and map "
                             "batches of whole series (pip install 'lstmcast[ray]'); the same output."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --ray: the cluster to use, e.g. auto "
                                           "or ray://head:10001 (default: RAY_ADDRESS, else a local Ray)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Forecast past the end of every series in DATA (a CSV or Parquet file, or a folder of
    Parquet files; or a folder or a quoted glob of CSV files, each forecast to OUT/<its name>, OUT
    then a folder)."""
    if ray or ray_address is not None:
        _guard(lambda: _predict_ray(data, model, out, horizon, device, future, shard, ray, ray_address, quiet,
                                    chunk_series))
        return
    many = _many_inputs(data)
    if many is not None:
        _guard(lambda: _predict_many(many, data, model, out, horizon, device, future, shard, quiet,
                                     chunk_series))
        return

    def body():
        from .predict import parse_shard
        from .predict import predict as predict_run

        reporter = Reporter(quiet)
        result = predict_run(data, model, out, horizon=horizon, device=device, future=future,
                             shard=parse_shard(shard), chunk_series=chunk_series, on_event=reporter)
        if not quiet and hasattr(result, "attrs") and "grid" in result.attrs:
            height, width = result.attrs["grid"]["shape"]
            print(f"wrote {result.attrs['grid']['frames']} frames of {height}x{width} grid cells ({len(result)} rows) "
                  f"to {out}", file=sys.stderr)
        elif not quiet:
            steps = f" x {result.steps} steps" if result.series else ""
            where = f", shard {shard}" if shard else ""
            print(f"wrote {result.rows} forecasts ({result.series} series{steps}{where}) to {out}", file=sys.stderr)

    _guard(body)


def _predict_ray(data: Path, model: Path, out: Path, horizon, device: str, future, shard, ray: bool,
                 address: str | None, quiet: bool, chunk_series: int | None = None) -> None:
    """predict --ray: one file forecast on Ray Data (raydata.predict_file), the same output file."""
    from .errors import LstmcastError

    clash = ("--ray-address needs --ray" if not ray else
             "--shard and --ray are two ways to spread the work; use one" if shard is not None else
             "--future is not taken with --ray; predict without --ray" if future is not None else
             "--ray forecasts on the workers' CPUs; drop --device" if device != "cpu" else
             "--chunk-series is predict's own streaming; Ray batches the series itself: drop it"
             if chunk_series is not None else
             "--ray reads one file; give one CSV or Parquet file" if _many_inputs(data) else None)
    if clash is not None:
        raise LstmcastError(clash)
    from .raydata import predict_file

    frame = predict_file(data, model, out, horizon=horizon, address=address)
    if not quiet:
        n_series = frame.iloc[:, 0].nunique()
        print(f"wrote {len(frame)} forecasts ({n_series} series x {len(frame) // n_series} steps, on Ray) to {out}",
              file=sys.stderr)


def _many_inputs(data: Path) -> list[Path] | None:
    """The CSV files of a folder or a glob pattern, sorted; None for a single file, or for a folder
    of Parquet files with no CSV (one table: data.md)."""
    import glob

    text = str(data)
    if data.is_dir():
        files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        parquet = any(p.is_file() and p.suffix.lower() in (".parquet", ".pq") for p in data.rglob("*"))
        return None if not files and parquet else files
    if any(c in text for c in "*?[") and not data.exists():
        return sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
    return None


def _predict_many(files: list[Path], data: Path, model: Path, out: Path, horizon, device, future, shard,
                  quiet: bool, chunk_series: int | None = None) -> None:
    """predict over many files from cron: one output per input (OUT/<input name>), going on past
    a file that fails (its one error line printed), a summary line, exit 2 if any failed."""
    from .errors import LstmcastError
    from .predict import parse_shard
    from .predict import predict as predict_run

    if not files:
        raise LstmcastError(f"{data}: no CSV files there; give a folder of .csv files, a quoted glob such as "
                            f"'data/*.csv', or one file")
    if out.exists() and not out.is_dir():
        raise LstmcastError(f"--out {out}: with several input files --out is a folder (one forecast file per "
                            f"input); name a folder")
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LstmcastError(f"{data}: several inputs are named {twice[0]!r} and would write the same "
                            f"{out / twice[0]}; match files of distinct names")
    if any(f.resolve().parent == out.resolve() for f in files):
        raise LstmcastError(f"--out {out}: is the inputs' own folder, so forecasts would replace the data; "
                            f"choose another folder")
    shard_spec = parse_shard(shard)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LstmcastError(f"--out {out}: cannot create the folder ({exc.strerror}); choose another") from None
    failed = []
    for path in files:
        try:
            predict_run(path, model, out / path.name, horizon=horizon, device=device, future=future,
                        shard=shard_spec, chunk_series=chunk_series, on_event=Reporter(quiet))
        except LstmcastError as exc:
            failed.append(path)
            print(f"lstmcast: error: {exc}", file=sys.stderr)
    done = len(files) - len(failed)
    if failed:
        _fail(f"{len(failed)} of {len(files)} files failed ({', '.join(p.name for p in failed[:3])}"
              f"{' ...' if len(failed) > 3 else ''}; their errors are above); the other {done} forecast to {out}", 2)
    if not quiet:
        print(f"wrote forecasts for {done} files to {out}", file=sys.stderr)


@app.command()
def evaluate(
    data: Path = typer.Argument(..., help="CSV; the last horizon points of each series are held out."),
    model: Path = typer.Option(..., "--model", help="Run directory made by 'lstmcast train'."),
    out: Path | None = typer.Option(None, "--out", help="Write the metrics as JSON here."),
    season: int | None = typer.Option(None, "--season-length",
                                      help="Seasonal period for seasonal naive and MASE (default: by frequency)."),
    windows: int = typer.Option(1, "--windows",
                                help="Backtest windows (forecast origins) per series; 1 = the last horizon only."),
    step: int | None = typer.Option(None, "--step", help="Steps between window origins (default: the horizon)."),
    device: str = typer.Option("cpu", "--device", help="auto|cpu|cuda|cuda:N|mps."),
    chunk_series: int | None = typer.Option(None, "--chunk-series", help="Series read and scored at a time "
                                            "(default 10000; 0: the whole file at once)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Score the model on held-out data against naive and seasonal-naive baselines."""
    def body():
        from .evaluate import evaluate as evaluate_run

        reporter = Reporter(quiet)
        result = evaluate_run(data, model, out, device=device, season=season, windows=windows, step=step,
                              chunk_series=chunk_series, on_event=reporter)
        n, horizon, season_ = result["n_series"], result["horizon"], result["season_length"]
        seen = result["in_sample"]
        seen = ("in-sample: unknown (older run)" if seen is None else
                f"in-sample: {seen['points']} of {seen['of']} points")
        if "grid" in result:
            height, width = result["grid"]["shape"]
            title = (f"{height}x{width} grid, {result['windows']} window(s) of the last {horizon} frames, "
                     f"season {season_}\n{seen}")
        elif result["windows"] == 1:
            title = f"{n} series, last {horizon} scored, season {season_}\n{seen}"
        else:
            title = (f"{n} series, {result['windows']} windows of {horizon} every {result['step']}, "
                     f"season {season_}\n{seen}")
        reporter.table(title, result["metrics"], stdout=True)
        reporter.interval_table("prediction intervals (model)", result, stdout=True)
        if result["windows"] > 1 and "grid" not in result:
            reporter.window_table("per window, oldest first (before end: steps from the last window)",
                                  result["per_window"], stdout=True)
        note = _in_sample_note(result["in_sample"])
        if note is not None:
            reporter.info(note)
        if out is not None:
            reporter.info(f"metrics written to {out}")

    _guard(body)


@app.command()
def plot(
    data: Path = typer.Argument(..., help="CSV with the history to forecast from."),
    model: Path = typer.Option(..., "--model", help="Run directory made by 'lstmcast train'."),
    out: Path = typer.Option(..., "--out", help="Figure to write: .png, .svg or .pdf."),
    series: List[str] | None = typer.Option(None, "--series",
                                            help="Series id to plot; repeatable or a comma list (default: first 6)."),
    history: int | None = typer.Option(None, "--history",
                                       help="Past points shown per series (default 4 x horizon, at least lookback)."),
    future: Path | None = typer.Option(None, "--future",
                                       help="CSV of the future covariates (runs trained with --future-covariates)."),
    device: str = typer.Option("cpu", "--device", help="auto|cpu|cuda|cuda:N|mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Draw each series' recent history and its forecast into one figure."""
    def body():
        from .plot import plot_forecasts

        ids = [s.strip() for item in series for s in item.split(",") if s.strip()] if series else None
        result = plot_forecasts(data, model, out, series_ids=ids, history=history, device=device,
                                future=future)
        if not quiet:
            more = (f" ({result.left_out} more not shown; choose with --series)"
                    if result.left_out and ids is None else "")
            print(f"wrote forecasts of {len(result.series_ids)} series to {result.path}{more}", file=sys.stderr)

    _guard(body)


@app.command("plot-history")
def plot_history(
    run_dir: Path = typer.Argument(..., help="Run directory made by 'lstmcast train'."),
    out: Path = typer.Option(..., "--out", help="Figure to write: .png, .svg or .pdf."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print errors only."),
) -> None:
    """Draw training and validation loss per epoch, and the learning rate, from history.csv."""
    def body():
        from .plot import plot_history as plot_history_run

        result = plot_history_run(run_dir, out)
        if not quiet:
            what = (f"{len(result.members)} members, {result.epochs} epochs in all" if len(result.members) > 1
                    else f"{result.epochs} epochs")
            print(f"wrote training history ({what}) to {result.path}", file=sys.stderr)

    _guard(body)


@app.command()
def version() -> None:
    """Print the lstmcast version."""
    print(__version__)


def _is_usage_error(exc: BaseException) -> bool:
    """A command-line mistake caught by the option parser (click's UsageError, which typer may
    vendor under another module)."""
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """The console script: like app(), except that a command-line mistake (an unknown option, a
    value of the wrong type) is one `lstmcast: error:` line with exit 2, not a framed box.
    SIGTERM (cron's timeout, kill, a scheduler) unwinds like Ctrl-C: a partial output's temporary
    file and an unfinished run directory are removed, and the exit code is 143."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `lstmcast`: the help, as click shows it
            print(exc.ctx.get_help(), file=sys.stderr)
            sys.exit(2)
        if not _is_usage_error(exc):
            raise
        command = getattr(getattr(exc, "ctx", None), "command_path", None) or "lstmcast"
        text = " ".join(exc.format_message().split()).rstrip(".")
        print(f"lstmcast: error: {text}; see '{command} --help'", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
