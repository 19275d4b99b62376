"""Typed, frozen configuration: defaults, then a YAML file, then `--set key=value` overrides.

Every key lives in one of three sections (data / model / train). Unknown keys and bad values are
LstmcastError naming the key and what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LstmcastError

# The allowed values of the choice keys, one list each. They live here, the one module the CLI
# imports at once (no torch, no pandas); the modules that own each concept import them from here:
# data.FILL_POLICIES, scaling.METHODS, cells.CELLS, losses (LOSSES), precision.PRECISIONS, device.
FILL_POLICIES = ("error", "ffill", "interpolate", "zero")
SCALINGS = ("standard", "robust", "minmax", "none")
CALENDARS = ("auto", "none")
WINDOW_NORMS = ("none", "standard", "mean")
CELLS = ("lstm", "peephole", "cifg", "gru")
LOSSES = ("mse", "mae", "huber", "smape", "mase")
PRECISIONS = ("auto", "bf16", "fp32", "tf32")
# train.device and every --device: "cuda:N" is the GPU of index N. Whether it works here is
# checked by allocating on it (device.resolve_device).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


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
         resumable: bool = False, option: str | None = None):
    """A config field, declared once: its default, its validation rules (`items`: of a list;
    `exclusive`: minimum and maximum themselves are not allowed; `unique`: no repeated items),
    `doc` (its line in configs/default.yaml), whether an ensemble member may set it in
    train.members (`member`), whether --resume may change it (`resumable`: how long or where the
    run trains, not what it computes) and its named option of `lstmcast train` (`option`)."""
    meta = {"choices": choices, "minimum": minimum, "maximum": maximum, "nullable": nullable,
            "kind": kind if kind is not None else type(default), "items": items,
            "exclusive": exclusive, "unique": unique, "doc": doc, "member": member,
            "resumable": resumable, "option": option}
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
        "lstm", "recurrent cell: lstm (cuDNN on CUDA) | peephole | cifg (coupled input-forget gate) | gru",
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
    """Symmetric pairs (lo, hi = 1 - lo) among `levels`, outermost first: the prediction intervals."""
    lows = sorted(q for q in levels if q < 0.5)
    return [(lo, hi) for lo in lows for hi in levels if hi > 0.5 and math.isclose(hi, 1.0 - lo, abs_tol=1e-9)]


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
    lr_factor: float = _key(0.5, "multiplier applied to the learning rate at each cut", minimum=0.0, maximum=1.0,
                            member=True)
    loss: str = _key(
        "mse", "training loss on window-normalised values: mse | mae | huber | smape | mase (smape, mase: with "
        "data.scaling none)", choices=LOSSES, member=True)
    precision: str = _key(
        "auto", "auto = bf16 on CUDA where every cell has a fast bf16 path (probed), fp32 elsewhere | bf16 | "
        "fp32 (IEEE, TF32 off) | tf32", choices=PRECISIONS)
    device: str = _key("auto", "auto = cuda, then mps, then cpu | cpu | cuda | cuda:N (GPU N) | mps",
                       choices=DEVICES, resumable=True, option="--device")
    seed: int = _key(0, "same seed, same data, same CPU -> identical checkpoints and forecasts", minimum=0,
                     option="--seed")
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
    members: list | None = _key(
        None, "e.g. [{train.loss: smape}, {model.window_norm: standard, train.loss: mase}]: member k's own keys "
        "(cycled; docs/model.md, Mixed ensembles)", nullable=True, kind=list, items=dict)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def declared() -> dict[str, dataclasses.Field]:
    """Every config key, dotted ("data.horizon"), with its declaration (a dataclass field whose
    metadata holds what _key was given), in declaration order."""
    return {f"{section}.{f.name}": f for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


# Keys an ensemble member may set for itself in train.members (declared member=True): how it
# reads, what it is and how it learns. Everything else (horizon, scaling, covariates, quantiles,
# device, ...) is the run's.
MEMBER_KEYS = tuple(key for key, f in declared().items() if f.metadata["member"])
# Keys that may differ between an interrupted run and its --resume (declared resumable=True): they
# change how long or where it trains, not what it computes.
RESUMABLE_KEYS = frozenset(key for key, f in declared().items() if f.metadata["resumable"])
# The named options of `lstmcast train` that set a config key: {"--horizon": "data.horizon", ...}.
OPTION_KEYS = {f.metadata["option"]: key for key, f in declared().items() if f.metadata["option"]}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for key, noun in (("ensemble_lookbacks", "lookbacks"), ("members", "entries")):
            listed = getattr(self.train, key)
            if listed and len(listed) > self.train.ensemble:
                raise LstmcastError(f"train.{key} lists {len(listed)} {noun} but train.ensemble is "
                                    f"{self.train.ensemble}; set train.ensemble to at least {len(listed)} "
                                    f"({noun} are cycled over the members) or train.{key} to null")
        for index, entry in enumerate(self.train.members or []):
            overrides = _member_updates(entry)
            bad = next((k for k in overrides if k not in MEMBER_KEYS), None)
            if bad is not None:
                raise LstmcastError(f"train.members entry {index + 1}: '{bad}' is not a key a member may "
                                    f"set (the others are the run's); allowed: {', '.join(MEMBER_KEYS)}")
            if "data.lookback" in overrides and self.train.ensemble_lookbacks:
                raise LstmcastError(f"train.members entry {index + 1} sets data.lookback and "
                                    f"train.ensemble_lookbacks is set too; give lookbacks in one place")
            self.member(index + 1)  # checks every value, naming the entry

    def cells_in_use(self) -> tuple[str, ...]:
        """The recurrent cells of all ensemble members (each probed for bf16 on CUDA)."""
        return tuple(sorted({self.member(k).model.cell for k in range(1, self.train.ensemble + 1)}))

    def member(self, member: int) -> Config:
        """The whole config ensemble member `member` (1-based) trains with: its lookback from
        train.ensemble_lookbacks and its entry of train.members (both cycled) applied."""
        lookbacks, entries = self.train.ensemble_lookbacks, self.train.members
        if not lookbacks and not entries:
            return self
        updates = {"train.ensemble_lookbacks": None, "train.members": None}
        if lookbacks:
            updates["data.lookback"] = int(lookbacks[(member - 1) % len(lookbacks)])
        where = "train.ensemble_lookbacks"
        if entries:
            updates.update(_member_updates(entries[(member - 1) % len(entries)]))
            where = f"train.members entry {(member - 1) % len(entries) + 1}"
        try:
            return _apply(self, updates, where)
        except LstmcastError as exc:
            message = str(exc)
            raise LstmcastError(message if message.startswith(where) else f"{where}: {message}") from None

    def member_lookback(self, member: int) -> int:
        """Input length of ensemble member `member` (1-based): train.ensemble_lookbacks or its
        train.members entry, cycled, else data.lookback."""
        return self.member(member).data.resolved_lookback

    @property
    def input_length(self) -> int:
        """Points of history the model reads: the longest member lookback."""
        return max(self.member_lookback(m) for m in range(1, self.train.ensemble + 1))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)




def _member_updates(entry: dict) -> dict[str, Any]:
    """One train.members entry as dotted keys; `{model: {layers: 1}}` reads as `{model.layers: 1}`."""
    flat = {}
    for key, value in entry.items():
        if isinstance(value, dict) and key in _SECTIONS:
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Validate one value against its field's rules; return it in its canonical type."""
    meta = f.metadata
    if value is None:
        if meta["nullable"]:
            return None
        raise LstmcastError(f"config key '{key}' cannot be null")
    kind = meta["kind"]
    if kind is list and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if kind is list and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # `--set model.quantiles=0.9` reads as a number: a list of one
    if kind is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise LstmcastError(f"config key '{key}' must be {kind.__name__}, got {value!r}")
    if kind is list:
        return _check_items(key, meta, value)
    if kind is float and not math.isfinite(value):
        raise LstmcastError(f"config key '{key}' must be a finite number, got {value!r}")
    if meta["choices"] is not None and not is_choice(value, meta["choices"]):
        allowed = "|".join(meta["choices"])
        raise LstmcastError(f"config key '{key}' must be one of {allowed}, got {value!r}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise LstmcastError(f"config key '{key}' must be >= {meta['minimum']}, got {value!r}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise LstmcastError(f"config key '{key}' must be <= {meta['maximum']}, got {value!r}")
    return value


def _item(items: type, item: Any) -> Any:
    """One list item in the item type where it reads as one ("36" -> 36, "0.1" or 1 -> float)."""
    if items is int and isinstance(item, str) and item.strip().lstrip("-").isdigit():
        return int(item)
    if items is float and isinstance(item, str):
        try:
            return float(item)
        except ValueError:
            return item
    if items is float and isinstance(item, int) and not isinstance(item, bool):
        return float(item)
    return item


def _check_items(key: str, meta: dict, value: list) -> list:
    """A list key: every item of the field's item type (numbers may be given as "36,54")."""
    items, out = meta["items"], []
    low, high, strict = meta["minimum"], meta["maximum"], meta["exclusive"]
    for raw in value:
        item = _item(items, raw)
        if not isinstance(item, items) or isinstance(item, bool):
            kind = "mappings (key: value)" if items is dict else items.__name__
            raise LstmcastError(f"config key '{key}' must be a list of {kind}, got {value!r}")
        if items is float and not math.isfinite(item):
            raise LstmcastError(f"config key '{key}': every item must be a finite number, got {value!r}")
        if strict and not ((low is None or item > low) and (high is None or item < high)):
            raise LstmcastError(f"config key '{key}': every item must be strictly between {low:g} and "
                                f"{high:g}, got {value!r}")
        if low is not None and item < low:
            raise LstmcastError(f"config key '{key}': every item must be >= {low}, got {value!r}")
        if high is not None and item > high:
            raise LstmcastError(f"config key '{key}': every item must be <= {high}, got {value!r}")
        if meta["unique"] and item in out:
            raise LstmcastError(f"config key '{key}': {item!r} is listed twice, got {value!r}")
        out.append(item)
    if not out:
        raise LstmcastError(f"config key '{key}' must not be an empty list (use null)")
    return out


def _apply(config: Config, updates: dict[str, Any], source: str) -> Config:
    """Return config with dotted-key updates applied, each checked."""
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in _SECTIONS}
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if section not in _SECTIONS or not name:
            raise LstmcastError(f"{source}: unknown config key '{key}' "
                                f"(keys look like data.horizon, model.layers, train.epochs)")
        fields = {f.name: f for f in dataclasses.fields(_SECTIONS[section])}
        if name not in fields:
            raise LstmcastError(f"{source}: unknown config key '{key}'; "
                                f"{section} keys are: {', '.join(fields)}")
        sections[section][name] = _check_value(key, fields[name], value)
    return Config(**{name: cls(**sections[name]) for name, cls in _SECTIONS.items()})


def _flatten(tree: dict, source: str) -> dict[str, Any]:
    flat = {}
    for section, values in tree.items():
        if section not in _SECTIONS:
            raise LstmcastError(f"{source}: unknown config section '{section}' "
                                f"(allowed: {', '.join(_SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise LstmcastError(f"{source}: section '{section}' must be a mapping of keys")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    return flat


class _DuplicateKey(yaml.YAMLError):
    """A mapping gives the same key twice (PyYAML alone keeps the last one silently)."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"key {key!r} appears twice")
        self.key, self.line, self.first = key, line, first


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (merge keys `<<` may still be
    overridden, as YAML intends)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        raise _DuplicateKey(key, line, first_line[key])
                    first_line[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep)


def safe_load(text: str) -> Any:
    """yaml.safe_load, except that a key given twice in one mapping is an error (_DuplicateKey)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml(path: str | Path, what: str = "config file", advice: str | None = None) -> Any:
    """The YAML document in `path`, or LstmcastError naming the file, the problem and what to do
    (`advice`, else a fix for each problem): missing, a directory, unreadable, not UTF-8, not
    valid YAML, a key given twice in one mapping."""
    path = Path(path)
    if path.is_dir():
        raise LstmcastError(f"{path}: is a directory, not a {what}; "
                            f"{advice or 'give the path of a YAML file'}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LstmcastError(f"{path}: {what} not found" + (f"; {advice}" if advice else "")) from None
    except OSError as exc:
        raise LstmcastError(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__}); "
                            f"{advice or 'check the path and its permissions'}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise LstmcastError(f"{path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                            f"{advice or f'save the {what} as UTF-8'}") from None
    try:
        return safe_load(text)
    except _DuplicateKey as exc:
        raise LstmcastError(f"{path} line {exc.line}: key '{exc.key}' is given twice (first on line "
                            f"{exc.first}); {advice or 'keep one'}") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise LstmcastError(f"{path}{where}: not valid YAML; {advice or 'fix the syntax'}") from None


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set a.b=value` strings -> {"a.b": value}; values are read as YAML scalars."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise LstmcastError(f"--set '{item}': expected key=value, e.g. --set train.epochs=3")
        try:
            out[key.strip()] = safe_load(raw) if raw.strip() else None
        except _DuplicateKey as exc:
            raise LstmcastError(f"--set '{item}': key '{exc.key}' is given twice; keep one") from None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                base: Config | None = None) -> Config:
    """Defaults (or `base`), then the YAML file at `path`, then `overrides` (dotted keys)."""
    config = base if base is not None else Config()
    if path is not None:
        tree = read_yaml(path) or {}
        if not isinstance(tree, dict):
            raise LstmcastError(f"{path}: expected a mapping with data/model/train sections")
        config = _apply(config, _flatten(tree, str(path)), str(path))
    if overrides:
        config = _apply(config, overrides, "--set")
    return config


def config_from_dict(tree: dict) -> Config:
    """Rebuild a Config saved with to_dict(). A checkpoint's or config.yaml's tree goes through
    run.config_from_saved, which migrates older ones first."""
    return _apply(Config(), _flatten(tree, "saved config"), "saved config")


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
    for section, cls in _SECTIONS.items():
        lines.append(f"{section}:")
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            entry = f"  {f.name}: {_yaml_scalar(default)}"
            lines.append(f"{entry.ljust(20)}  # {f.metadata['doc']}")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"
