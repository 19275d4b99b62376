"""Every config key, declared once: its section, type, default, allowed values, description (its
line in configs/default.yaml), whether an ensemble member may set it, whether --resume may change
it, and its named option of `lstmcast train`. MEMBER_KEYS, RESUMABLE_KEYS, OPTION_KEYS and
configs/default.yaml (default_yaml) are derived from the declarations; config.py composes the
sections into a Config and loads one from YAML and --set.

No torch, no pandas: the CLI imports this at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import LstmcastError

# The allowed values of the choice keys, one list each, declared with their keys (no torch, no
# pandas: the CLI imports this at once); the modules that own each concept import them from here:
# data.FILL_POLICIES, scaling.METHODS, cells.CELLS, losses (LOSSES), precision.PRECISIONS, device.
FILL_POLICIES = ("error", "ffill", "interpolate", "zero")
SCALINGS = ("standard", "robust", "minmax", "none")
CALENDARS = ("auto", "none")
WINDOW_NORMS = ("none", "standard", "mean")
CELLS = ("lstm", "peephole", "cifg", "gru", "grid")
LOSSES = ("mse", "mae", "huber", "smape", "mase")
PRECISIONS = ("auto", "bf16", "fp32", "tf32")
# train.device and every --device: "cuda:N" is the GPU of index N. Whether it works here is
# checked by allocating on it (device.resolve_device).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
BUFFERS = ("auto", "device", "host")  # where the series buffer lives (windows.place)
RECIPES = ("auto", "none")
CLASSICAL = ("theta", "ets")
SCHEDULES = ("plateau", "linear")


def duration_text(value: Any, key: str) -> str | None:
    """A duration key's canonical text ('10m', '90s', '1.5h'), or None (no limit)."""
    from .budget import format_duration, parse_duration
    seconds = parse_duration(value, key)
    return None if seconds is None else format_duration(seconds)


def is_choice(value: Any, choices: tuple) -> bool:
    """`value` is one of `choices`, where a choice "name:N" stands for name:0, name:1, ..."""
    for choice in choices:
        if isinstance(choice, str) and choice.endswith(":N"):
            if isinstance(value, str) and re.fullmatch(re.escape(choice[:-1]) + "[0-9]+", value):
                return True
        elif value == choice:
            return True
    return False


def _key(default: Any, doc: str, *, choices: tuple | None = None, minimum: float | None = None,
         maximum: float | None = None, nullable: bool = False, kind: type | None = None,
         items: type = str, exclusive: bool = False, unique: bool = False, member: bool = False,
         resumable: bool = False, option: str | None = None, check=None):
    """A config field, declared once: its default, its validation rules (`items`: of a list;
    `exclusive`: minimum and maximum themselves are not allowed; `unique`: no repeated items),
    `doc` (its line in configs/default.yaml), whether an ensemble member may set it in
    train.members (`member`), whether --resume may change it (`resumable`: how long or where the
    run trains, not what it computes) and its named option of `lstmcast train` (`option`).
    `check(value, key)`: a parser that validates a value and returns its canonical form."""
    meta = {"choices": choices, "minimum": minimum, "maximum": maximum, "nullable": nullable,
            "kind": kind if kind is not None else type(default), "items": items,
            "exclusive": exclusive, "unique": unique, "doc": doc, "member": member,
            "resumable": resumable, "option": option, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    id_col: str | None = _key(
        None, 'series id column; null = "unique_id" if present, else the file is one series',
        nullable=True, kind=str, option="--id-col")
    time_col: str | None = _key(
        None, 'timestamp column; null = "ds" if present, else the only datetime-like column',
        nullable=True, kind=str, option="--time-col")
    target: list | None = _key(
        None, 'value column(s); null = "y" if present, else the only numeric column. A list makes a wide file',
        nullable=True, kind=list, option="--target")
    horizon: int = _key(12, "steps forecast at once (time steps of the data's frequency)",
                        minimum=1, option="--horizon")
    lookback: int | None = _key(
        None, "input window in time steps; null = 3 x horizon. Shorter series are left-padded and masked",
        minimum=1, nullable=True, kind=int, member=True, option="--lookback")
    fill: str = _key("error", "gaps and empty values: error | ffill | interpolate | zero", choices=FILL_POLICIES)
    freq: str | None = _key(
        None, "frequency, e.g. D | B | W-WED | MS | MS@15 | QE-DEC | YS-JAN | h; null = inferred (an error if "
        "ambiguous)", nullable=True, kind=str, option="--freq")
    dayfirst: bool | None = _key(
        None, "01/02/2021 is 1 Feb (true) or 2 Jan (false); null = from the data, an error if ambiguous",
        nullable=True, kind=bool)
    scaling: str = _key(
        "standard", "per-series scaling fitted on the training part: standard | robust | minmax | none",
        choices=SCALINGS)
    past_covariates: list | None = _key(
        None, "e.g. [temp, visits]: numeric columns known only up to now, read by the encoder",
        nullable=True, kind=list, unique=True, option="--past-covariates")
    future_covariates: list | None = _key(
        None, "e.g. [price, promo]: numeric columns known in advance; predict reads them from --future",
        nullable=True, kind=list, unique=True, option="--future-covariates")
    calendar: str = _key(
        "auto", "sin/cos calendar features from the timestamps by frequency (docs/covariates.md): auto | none",
        choices=CALENDARS)
    grid: list | None = _key(
        None, "e.g. [lat, lon]: the grid coordinate columns of a gridded file, one frame per timestamp, forecast "
        "by a ConvLSTM (docs/gridded.md); null = series", nullable=True, kind=list, unique=True,
        option="--grid-cols")

    def __post_init__(self):
        both = set(self.past_covariates or []) & set(self.future_covariates or [])
        if both:
            raise LstmcastError(f"config keys 'data.past_covariates' and 'data.future_covariates' both list "
                                f"'{sorted(both)[0]}'; a covariate is either past-only or known in advance")

    @property
    def covariates(self) -> list[str]:
        """Past, then future covariate columns: their order in the feature layout."""
        return [*(self.past_covariates or []), *(self.future_covariates or [])]

    @property
    def resolved_lookback(self) -> int:
        return self.lookback if self.lookback is not None else 3 * self.horizon


@dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = _key(64, "LSTM units per layer", minimum=1, member=True)
    layers: int = _key(2, "stacked LSTM layers", minimum=1, member=True)
    dropout: float = _key(0.1, "between LSTM layers and before the head (0 = off)", minimum=0.0, maximum=0.95,
                          member=True)
    window_norm: str = _key(
        "none", "per-window normalisation inside the model: none | standard (mean, std) | mean (divide by mean |x|)",
        choices=WINDOW_NORMS, member=True)
    cell: str = _key(
        "lstm", "recurrent cell: lstm (cuDNN on CUDA) | peephole | cifg (coupled input-forget gate) | gru | grid "
        "(Grid LSTM: layers also linked by LSTM memory along depth)",
        choices=CELLS, member=True)
    bidirectional: bool = _key(False, "also read the lookback window backwards; the head sees both final states",
                               member=True)
    attention: bool = _key(False, "the head also attends over every encoder state, not only the final one",
                           member=True)
    linear_skip: bool = _key(
        False, "the head also adds a linear map of the window's own values (an autoregressive skip around the LSTM)",
        member=True)
    quantiles: list | None = _key(
        None, "e.g. [0.1, 0.5, 0.9]: also forecast these levels (q_0.1, ... columns), trained with the pinball "
        "loss; null = point forecasts", nullable=True, kind=list, items=float, minimum=0.0, maximum=1.0,
        exclusive=True, unique=True, option="--quantiles")
    conformal: bool = _key(
        False, "widen/narrow symmetric quantile pairs to their nominal coverage (conformalized quantile "
        "regression) on calibration windows: the last horizon of each series of >= 3 x horizon + 1 points, held "
        "out from training and early stopping (which moves to the horizon before)")
    classical: list | None = _key(
        None, "classical forecasts combined with the neural median (the median of all, the mean of two): "
        "theta | ets (damped-trend exponential smoothing), each on seasonally adjusted data; with "
        "train.select only those that lower the early-stopping windows' MASE are kept; null = none. Point "
        "forecasts only", nullable=True, kind=list, choices=CLASSICAL, unique=True)
    series_embedding: int = _key(
        0, "size of a learned vector per series joined to the summary (0 = off); unseen series get the mean vector",
        minimum=0)
    conv_kernel: int = _key(3, "gridded runs (data.grid): ConvLSTM kernel size, odd (3 = each cell sees its 8 "
                            "neighbours per step)", minimum=1)
    conv_channels: int = _key(16, "gridded runs (data.grid): ConvLSTM hidden channels per layer (model.layers "
                              "layers in the encoder and in the forecaster)", minimum=1)

    def __post_init__(self):
        if self.conv_kernel % 2 == 0:
            raise LstmcastError(f"config key 'model.conv_kernel' must be odd (the frame keeps its size), "
                                f"got {self.conv_kernel}; use {self.conv_kernel + 1}")
        if self.quantiles:
            # Columns are named f"q_{level:g}" (6 significant digits): two levels must not share a name.
            odd = next((q for q in self.quantiles if float(f"{q:g}") != q), None)
            if odd is not None:
                raise LstmcastError(f"config key 'model.quantiles': {odd!r} has more than 6 significant "
                                    f"digits (its column would be q_{odd:g}); round it")
        if self.classical and self.quantiles:
            raise LstmcastError("config key 'model.classical' combines point forecasts; it cannot be used with "
                                "model.quantiles: set model.classical or model.quantiles to null")
        if self.conformal and not quantile_pairs(self.quantiles or []):
            raise LstmcastError("config key 'model.conformal' calibrates symmetric pairs of "
                                "model.quantiles (such as 0.1 and 0.9); set model.quantiles to "
                                "include one, or model.conformal to false")

    @property
    def levels(self) -> tuple[float, ...] | None:
        """The levels the model learns: model.quantiles sorted, with the median 0.5 added (the
        `forecast` column is always the median); None for point forecasts."""
        if not self.quantiles:
            return None
        return tuple(sorted({*self.quantiles, 0.5}))


def quantile_pairs(levels) -> list[tuple[float, float]]:
    """Symmetric pairs (lo, hi = 1 - lo) among `levels`, outermost first: the prediction intervals.
    A level without its mirror (0.5 itself) is in no pair. The one home of this rule: training,
    metrics and the plot's bands (plot.quantile_bands) all pair levels here."""
    pairs = []
    for lo in sorted(q for q in levels if q < 0.5):
        hi = next((q for q in levels if q > 0.5 and math.isclose(q, 1.0 - lo, abs_tol=1e-9)), None)
        if hi is not None:
            pairs.append((lo, hi))
    return pairs


def quantile_column(level: float) -> str:
    """The forecasts column of a quantile level: q_0.1, q_0.05, q_0.9."""
    return f"q_{level:g}"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _key(100, "upper bound; early stopping usually ends sooner", minimum=1, member=True,
                       resumable=True)
    batch_size: int = _key(64, "windows per optimizer step", minimum=1, member=True)
    lr: float = _key(1e-3, "AdamW learning rate", minimum=0.0, member=True)
    weight_decay: float = _key(
        1e-4, "AdamW decoupled weight decay, on weight matrices only (not biases, vectors or embeddings)",
        minimum=0.0, member=True)
    clip: float = _key(1.0, "max gradient norm (0 = no clipping)", minimum=0.0, member=True)
    patience: int = _key(10, "epochs without a better validation loss before stopping", minimum=1, member=True,
                         resumable=True)
    lr_patience: int = _key(3, "epochs without improvement before the learning rate is cut", minimum=0,
                            member=True)
    schedule: str = _key(
        "plateau", "learning rate: plateau = cut by lr_factor after lr_patience epochs without improvement | "
        "linear = from lr down to 0 over train.epochs (with a time budget: the epochs that fit, planned after "
        "the first)", choices=SCHEDULES, member=True)
    lr_factor: float = _key(0.5, "multiplier applied to the learning rate at each cut", minimum=0.0, maximum=1.0,
                            member=True)
    loss: str = _key(
        "mse", "training loss on window-normalised values: mse | mae | huber | smape | mase (smape, mase: with "
        "data.scaling none)", choices=LOSSES, member=True)
    precision: str = _key(
        "auto", "auto = bf16 on CUDA where it is faster (lstm/gru, hidden_size >= 192, batch_size >= 1024) and "
        "every cell has a fast bf16 path (probed), fp32 elsewhere | bf16 | fp32 (IEEE, TF32 off) | tf32",
        choices=PRECISIONS)
    device: str = _key("auto", "auto = cuda, then mps, then cpu | cpu | cuda | cuda:N (GPU N) | mps",
                       choices=DEVICES, resumable=True, option="--device")
    buffer: str = _key(
        "auto", "where the training series live: auto = on the device while they take at most half of its free "
        "memory, else host | device | host (host memory; each batch is gathered there into pinned memory and "
        "copied to the GPU asynchronously; the same numbers)", choices=BUFFERS, resumable=True)
    seed: int = _key(0, "same seed, same data, same CPU -> identical checkpoints and forecasts; member k "
                     "trains with seed + k - 1 unless its train.members entry sets its own", minimum=0,
                     option="--seed", member=True)
    ensemble: int = _key(1, "members trained with seeds seed, seed+1, ...; the forecast is their median", minimum=1)
    refit_epochs: int = _key(
        0, "after early stopping, this many more epochs on all windows, the validation part too, from the best "
        "weights with a fresh AdamW at the learning rate of the best epoch", minimum=0, member=True)
    ensemble_lookbacks: list | None = _key(
        None, "e.g. [36, 54, 72]: member k reads the k-th lookback (cycled); null = data.lookback",
        nullable=True, kind=list, items=int, minimum=1)
    max_windows_per_series: int | None = _key(
        None, "train on only the latest N windows of each series (null = all); faster epochs",
        minimum=1, nullable=True, kind=int, member=True)
    windows_per_epoch: int | None = _key(
        None, "windows an epoch trains on, sampled anew each epoch from all training windows (null = all): "
        "epochs that do not grow with the data", minimum=1, nullable=True, kind=int, member=True)
    validation_series: int | None = _key(
        20000, "the early-stopping loss of each epoch is computed on at most this many series, a fixed random "
        "sample (the seed's) when there are more (null = every series): validation that does not grow with the "
        "data; the final validation metrics use every series", minimum=1, nullable=True, kind=int)
    recipe: str = _key(
        "auto", "auto = every key not given (file, --set, option) is chosen from the data, each choice printed "
        "with its reason and written to the run's config.yaml | none = the declared defaults", choices=RECIPES,
        resumable=True)
    time_budget: str | None = _key(
        "10m", "training ends inside this wall-clock time (e.g. 90s, 10m, 1h30m), data reading included; "
        "members and epochs are fitted to it | null = no limit", nullable=True, kind=str, resumable=True,
        option="--time-budget", check=duration_text)
    select: bool = _key(
        False, "keep only the members whose median forecast scores best on the early-stopping windows "
        "(validation MASE; a larger set within 0.5% is preferred)")
    tbptt: int = _key(
        0, "truncated back-propagation through time: 0 = off (windows of data.lookback) | K = stateful, each "
        "series' whole history read in chunks of K steps, the LSTM state carried over (docs/model.md)", minimum=0)
    members: list | None = _key(
        None, "e.g. [{train.loss: smape}, {model.window_norm: standard, train.loss: mase}]: member k's own keys "
        "(cycled; docs/model.md, Mixed ensembles)", nullable=True, kind=list, items=dict)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def declared() -> dict[str, dataclasses.Field]:
    """Every config key, dotted ("data.horizon"), with its declaration (a dataclass field whose
    metadata holds what _key was given), in declaration order."""
    return {f"{section}.{f.name}": f for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


# Keys an ensemble member may set for itself in train.members (declared member=True): how it
# reads, what it is and how it learns. Everything else (horizon, scaling, covariates, quantiles,
# device, ...) is the run's.
MEMBER_KEYS = tuple(key for key, f in declared().items() if f.metadata["member"])
# Keys that may differ between an interrupted run and its --resume (declared resumable=True): they
# change how long or where it trains, not what it computes.
RESUMABLE_KEYS = frozenset(key for key, f in declared().items() if f.metadata["resumable"])
# The named options of `lstmcast train` that set a config key: {"--horizon": "data.horizon", ...}.
OPTION_KEYS = {f.metadata["option"]: key for key, f in declared().items() if f.metadata["option"]}


_DEFAULT_YAML_HEADER = """\
# lstmcast default configuration: every key, with its default. Copy this file, keep the keys you
# change, and pass it with --config FILE.yaml; --set section.key=value overrides any key.
"""


def _yaml_scalar(value: Any) -> str:
    """A default as YAML writes it: null, true, 12, 0.0001, error."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def default_yaml() -> str:
    """The text of configs/default.yaml, generated from the declarations: every key with its
    default and its description, the comments aligned at column 22 (at least two spaces after the
    value). tests/test_config_source.py checks that the committed file is this text; regenerate
    it with `make default-config`."""
    lines = [_DEFAULT_YAML_HEADER]
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            entry = f"  {f.name}: {_yaml_scalar(default)}"
            lines.append(f"{entry.ljust(20)}  # {f.metadata['doc']}")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"
