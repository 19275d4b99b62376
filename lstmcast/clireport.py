"""The command line's reporting: user errors to one line and an exit code (_guard), progress,
log lines and result tables (Reporter). With cli.py, the only module that imports typer or rich;
cli.py holds the commands and their options.

User errors (LstmcastError) -> one line on stderr, exit 2. Ctrl-C -> exit 130. Anything else is a
bug: traceback, exit 1. On a terminal progress is drawn with rich; otherwise (cron, pipes) plain
lines go to stderr and nothing is animated.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .config import quantile_column, quantile_pairs
from .errors import LstmcastError


def _fail(message: str, code: int) -> None:
    print(f"lstmcast: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _exit(code: int) -> None:
    raise typer.Exit(code)


def _other_rank() -> bool:
    """A torchrun process other than rank 0 (distributed.Ranks.from_env reads the same variables):
    it prints nothing but a bug's traceback; rank 0 reports every rank's user errors."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and os.environ.get("RANK", "0") != "0"


def _guard(action, interrupted: str = "interrupted", speaks: bool = True):
    """Run a command body, mapping user errors to exit 2 and Ctrl-C to exit 130 (`interrupted`:
    what the user can do then); without `speaks` (a torchrun rank other than 0) silently.

    Python warnings are the core's to prevent at their source. Should one still be raised, it is
    not dumped as a multi-line warning: a successful command ends with one `lstmcast: warning:`
    line naming it (and how many more), and a user error stays the one error line.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            result = action()
        except LstmcastError as exc:
            _fail(str(exc), 2) if speaks else _exit(2)
        except KeyboardInterrupt:
            _fail(interrupted, 130) if speaks else _exit(130)
    if caught and speaks:
        first = caught[0]
        more = f" (and {len(caught) - 1} more)" if len(caught) > 1 else ""
        text = " ".join(str(first.message).split())
        print(f"lstmcast: warning: {first.category.__name__} from {Path(first.filename).name}:{first.lineno}: "
              f"{text}{more}; please report it to the lstmcast developers", file=sys.stderr)
    return result


class Reporter:
    """Renders training events: rich progress on a terminal, plain stderr lines otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.tty = self.console.is_terminal
        self.progress: Progress | None = None
        self.epochs_task = self.steps_task = None

    def info(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, event) -> None:
        if self.quiet:
            return
        from .rundir import Recovered  # loaded by then: events come from a running train
        from .train import EpochEnd, Note, Step, TrainStart

        if isinstance(event, (Recovered, Note)):
            self.info(event.message)
        elif isinstance(event, TrainStart):
            resumed = f", resuming at epoch {event.first_epoch}" if event.first_epoch > 1 else ""
            member = f"member {event.member}/{event.members}: " if event.members > 1 else ""
            if event.recipe:
                member = f"member {event.member}/{event.members} ({event.recipe}): "
            self.info(f"{member}device {event.device}, precision {event.precision}; {event.n_series} "
                      f"series, {event.n_windows} training windows, {event.parameters} parameters{resumed}")
            self.close()
            if self.tty:
                self.progress = Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[losses]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=self.console, transient=True)
                self.progress.start()
                self.epochs_task = self.progress.add_task("epochs", total=event.epochs,
                                                          completed=event.first_epoch - 1, losses="")
                self.steps_task = self.progress.add_task("steps", total=event.steps_per_epoch,
                                                         losses="")
        elif isinstance(event, Step) and self.progress is not None:
            fields = {"losses": f"train {event.loss:.4f}"} if event.loss is not None else {}
            self.progress.update(self.steps_task, completed=event.step,
                                 description=f"epoch {event.epoch}", **fields)
        elif isinstance(event, EpochEnd):
            mark = "  best" if event.improved else ""
            member = f"member {event.member}/{event.members} " if event.members > 1 else ""
            self.info(f"{member}epoch {event.epoch}/{event.epochs} train_loss={event.train_loss:.5f} "
                      f"val_loss={event.val_loss:.5f} lr={event.lr:.3g} "
                      f"time={event.seconds:.1f}s{mark}")
            if self.progress is not None:
                self.progress.update(self.epochs_task, completed=event.epoch,
                                     losses=f"val {event.val_loss:.4f}")
                self.progress.reset(self.steps_task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def table(self, title: str, metrics: dict[str, dict[str, float]], stdout: bool = False) -> None:
        """Model and baselines side by side: one row per forecaster, one column per metric."""
        if self.quiet:
            return
        table = Table(title=title)
        names = list(next(iter(metrics.values())))
        table.add_column("forecaster")
        for name in names:
            table.add_column(name, justify="right")
        for who, values in metrics.items():
            table.add_row(who, *(f"{values[n]:.4g}" for n in names))
        Console(file=sys.stdout if stdout else sys.stderr).print(table)

    def window_table(self, title: str, per_window: list[dict], stdout: bool = False) -> None:
        """Backtest windows, oldest first: one row per window, sMAPE and MASE of each forecaster."""
        if self.quiet:
            return
        table = Table(title=title)
        for name in ("window", "before end", "series", "in-sample\npoints"):
            table.add_column(name, justify="right")
        columns = [(who, metric) for metric in ("smape", "mase")
                   for who in ("model", "naive", "seasonal_naive")]
        for who, metric in columns:
            table.add_column(f"{metric}\n{'snaive' if who == 'seasonal_naive' else who}", justify="right")
        for row in per_window:
            metrics = row["metrics"]
            table.add_row(str(row["window"]), str(row["steps_before_end"]), str(row["n_series"]),
                          _seen_share(row["in_sample"]),
                          *(f"{metrics[who][metric]:.4g}" if metrics else "-" for who, metric in columns))
        console = Console(file=sys.stdout if stdout else sys.stderr)
        if not console.is_terminal:   # a log or pipe: room for every column (96 wide), not 80
            console.width = max(console.width, 96)
        console.print(table)

    def interval_table(self, title: str, result: dict, stdout: bool = False) -> None:
        """Prediction intervals of a quantile run: one row per interval (coverage against nominal,
        mean width), then one per level without its mirror; the pinball loss of each level."""
        if self.quiet or "quantile_loss" not in result or result["quantile_loss"] is None:
            return
        from .metrics import pair_name

        table = Table(title=title)
        for name in ("quantiles", "nominal", "coverage", "width", "pinball loss"):
            table.add_column(name, justify="right")
        losses = {float(level): loss for level, loss in result["quantile_loss"].items()}
        for lo, hi in quantile_pairs(list(losses)):
            row = result["intervals"][pair_name(lo, hi)]
            table.add_row(f"{quantile_column(lo)}..{quantile_column(hi)}", f"{row['nominal']:.4g}",
                          f"{row['coverage']:.4g}", f"{row['width']:.4g}",
                          f"{losses.pop(lo):.4g} / {losses.pop(hi):.4g}")
        for level, loss in losses.items():
            table.add_row(quantile_column(level), "", "", "", f"{loss:.4g}")
        Console(file=sys.stdout if stdout else sys.stderr).print(table)


def _seen_share(in_sample: dict | None) -> str:
    """'144/144': scored points the run saw of those scored; '?' when the run does not record it;
    '-' when nothing was scored."""
    if in_sample is None:
        return "?"
    return f"{in_sample['points']}/{in_sample['of']}" if in_sample["of"] else "-"


def _in_sample_note(in_sample: dict | None) -> str | None:
    """The one hint line under evaluate's tables (None: every scored point is held out)."""
    if in_sample is None:
        return ("note: this run's checkpoint predates in-sample tracking, so some scored points may be ones it "
                "trained or early-stopped on; retrain to know")
    if in_sample["points"] == 0:
        return None
    parts = [f"{in_sample[kind]} {what}" for kind, what in
             (("trained", "trained on"), ("early_stopping", "chose the best epoch"),
              ("calibration", "calibrated the intervals")) if in_sample[kind]]
    return (f"note: {in_sample['points']} of {in_sample['of']} scored points were seen by the run "
            f"({', '.join(parts)}): in-sample; to score held-out data, train on a file cut before the "
            f"evaluation windows")
