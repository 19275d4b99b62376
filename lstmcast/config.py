"""Typed, frozen configuration: defaults, then a YAML file, then `--set key=value` overrides.

Every key lives in one of three sections (data / model / train), declared once in keys.py (type,
default, allowed values, member?, resumable?, CLI option). This module composes the sections into
a Config (with each ensemble member's own config), checks every value against its declaration and
loads a Config from YAML and --set. Unknown keys and bad values are LstmcastError naming the key
and what is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LstmcastError
from .keys import (
    BUFFERS,
    CALENDARS,
    CELLS,
    CLASSICAL,
    DEVICES,
    FILL_POLICIES,
    LOSSES,
    MEMBER_KEYS,
    OPTION_KEYS,
    PRECISIONS,
    RECIPES,
    RESUMABLE_KEYS,
    SCALINGS,
    SCHEDULES,
    SECTIONS,
    WINDOW_NORMS,
    DataConfig,
    ModelConfig,
    TrainConfig,
    declared,
    default_yaml,
    is_choice,
    quantile_column,
    quantile_pairs,
)

# Declared in keys.py, importable from here too (lstmcast.config is the public home of a Config).
__all__ = ["BUFFERS", "CALENDARS", "CELLS", "CLASSICAL", "DEVICES", "FILL_POLICIES", "LOSSES", "MEMBER_KEYS",
           "OPTION_KEYS", "PRECISIONS", "RECIPES", "RESUMABLE_KEYS", "SCALINGS", "SCHEDULES", "WINDOW_NORMS", "Config",
           "DataConfig", "ModelConfig", "TrainConfig", "config_from_dict", "declared", "default_yaml",
           "is_choice", "load_config", "parse_set", "quantile_column", "quantile_pairs", "read_yaml", "safe_load"]


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Dotted keys set explicitly (config file, --set, a named option, a saved config), whatever
    # their value: what the automatic recipe must leave alone (given_keys). Not part of the config.
    given: frozenset = field(default=frozenset(), compare=False, repr=False)

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
        if self.train.tbptt:
            _check_stateful(self)

    def cells_in_use(self) -> tuple[str, ...]:
        """The recurrent cells of all ensemble members (each probed for bf16 on CUDA)."""
        return tuple(sorted({cell for cell, _, _ in self.member_shapes()}))

    def member_shapes(self) -> tuple[tuple[str, int, int], ...]:
        """(cell, hidden_size, batch_size) of every ensemble member: what decides whether bf16 pays."""
        members = [self.member(k) for k in range(1, self.train.ensemble + 1)]
        return tuple(sorted({(m.model.cell, m.model.hidden_size, m.train.batch_size) for m in members}))

    def member(self, member: int) -> Config:
        """The whole config ensemble member `member` (1-based) trains with: its lookback from
        train.ensemble_lookbacks and its entry of train.members (both cycled) applied."""
        lookbacks, entries = self.train.ensemble_lookbacks, self.train.members
        if not lookbacks and not entries:
            return self
        updates = {"train.ensemble_lookbacks": None, "train.members": None, **self.member_keys(member)}
        where = "train.ensemble_lookbacks"
        if entries:
            where = f"train.members entry {(member - 1) % len(entries) + 1}"
        try:
            return _apply(self, updates, where)
        except LstmcastError as exc:
            message = str(exc)
            raise LstmcastError(message if message.startswith(where) else f"{where}: {message}") from None

    def member_keys(self, member: int) -> dict[str, Any]:
        """Member `member`'s own keys, dotted: its lookback from train.ensemble_lookbacks and its
        train.members entry (both cycled)."""
        lookbacks, entries = self.train.ensemble_lookbacks, self.train.members
        own = {"data.lookback": int(lookbacks[(member - 1) % len(lookbacks)])} if lookbacks else {}
        if entries:
            own.update(_member_updates(entries[(member - 1) % len(entries)]))
        return own

    def given_keys(self) -> set[str]:
        """Keys the user set: given explicitly, or (a Config built in Python) different from their
        declared default."""
        defaults = Config().flat()
        return set(self.given) | {k for k, v in self.flat().items() if v != defaults[k]}

    def flat(self) -> dict[str, Any]:
        """{"data.horizon": 12, ...}: every key, dotted."""
        return {f"{s}.{k}": v for s, section in self.to_dict().items() for k, v in section.items()}

    def member_seed(self, member: int) -> int:
        """Seed of ensemble member `member` (1-based): its train.members entry's train.seed if it
        sets one, else train.seed + member - 1."""
        own = self.member_keys(member)
        return int(own["train.seed"]) if "train.seed" in own else self.train.seed + member - 1

    def member_lookback(self, member: int) -> int:
        """Input length of ensemble member `member` (1-based): train.ensemble_lookbacks or its
        train.members entry, cycled, else data.lookback."""
        return self.member(member).data.resolved_lookback

    @property
    def input_length(self) -> int:
        """Points of history the model reads: the longest member lookback."""
        return max(self.member_lookback(m) for m in range(1, self.train.ensemble + 1))

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _member_updates(entry: dict) -> dict[str, Any]:
    """One train.members entry as dotted keys; `{model: {layers: 1}}` reads as `{model.layers: 1}`."""
    flat = {}
    for key, value in entry.items():
        if isinstance(value, dict) and key in SECTIONS:
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Validate one value against its field's rules; return it in its canonical type."""
    meta = f.metadata
    if meta["check"] is not None:
        return meta["check"](value, key)
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
        if meta["choices"] is not None and not is_choice(item, meta["choices"]):
            raise LstmcastError(f"config key '{key}': every item must be one of {'|'.join(meta['choices'])}, "
                                f"got {item!r}")
        if meta["unique"] and item in out:
            raise LstmcastError(f"config key '{key}': {item!r} is listed twice, got {value!r}")
        out.append(item)
    if not out:
        raise LstmcastError(f"config key '{key}' must not be an empty list (use null)")
    return out


def _apply(config: Config, updates: dict[str, Any], source: str) -> Config:
    """Return config with dotted-key updates applied, each checked."""
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    for key, value in updates.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise LstmcastError(f"{source}: unknown config key '{key}' "
                                f"(keys look like data.horizon, model.layers, train.epochs)")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        if name not in fields:
            raise LstmcastError(f"{source}: unknown config key '{key}'; "
                                f"{section} keys are: {', '.join(fields)}")
        sections[section][name] = _check_value(key, fields[name], value)
    return Config(**{name: cls(**sections[name]) for name, cls in SECTIONS.items()},
                  given=config.given | frozenset(updates))


def _flatten(tree: dict, source: str) -> dict[str, Any]:
    flat = {}
    for section, values in tree.items():
        if section not in SECTIONS:
            raise LstmcastError(f"{source}: unknown config section '{section}' "
                                f"(allowed: {', '.join(SECTIONS)})")
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


def _stateful_conflict(config: Config) -> tuple[str, str] | None:
    """(what contradicts train.tbptt, what to do) for the first key a stateful model cannot honour;
    None when the config makes sense. The state runs over a whole series, so nothing may depend
    on a window: no per-window normalisation, no window-reading head, no lookback of its own."""
    data, model, train = config.data, config.model, config.train
    window = "a stateful model reads each series' whole history, not windows"
    if model.window_norm != "none":
        return (f"model.window_norm {model.window_norm} (each window normalised on its own: the units would "
                f"change from chunk to chunk under the one carried state)",
                "set model.window_norm=none (data.scaling scales each series once, on its training part)")
    if data.scaling == "none":
        return ("data.scaling none (nothing would scale the values the state is carried over)",
                "set data.scaling=standard (fitted per series on its training part)")
    for key, on, why in (("model.bidirectional", model.bidirectional, "reading backwards needs the window's end"),
                         ("model.attention", model.attention, "attention weighs the states of one window"),
                         ("model.linear_skip", model.linear_skip, "the skip reads a window of lookback values"),
                         ("train.ensemble_lookbacks", train.ensemble_lookbacks, window),
                         ("train.max_windows_per_series", train.max_windows_per_series, window),
                         ("train.windows_per_epoch", train.windows_per_epoch, window),
                         ("data.grid", data.grid, "gridded runs train a ConvLSTM on windows"),
                         ("train.buffer", train.buffer == "host", "the carried state reads the buffer on the device")):
        if on:
            return f"{key} ({why})", f"drop {key}"
    if model.cell not in ("lstm", "gru"):
        return (f"model.cell {model.cell} (its encoder takes no initial state)",
                "use model.cell=lstm or gru")
    if train.loss == "mase":
        return ("train.loss mase (scaled by each window's own seasonal error)",
                "use train.loss mse, mae or huber")
    return None


def _check_stateful(config: Config) -> None:
    conflict = _stateful_conflict(config)
    if conflict is not None:
        what, todo = conflict
        raise LstmcastError(f"config key 'train.tbptt' ({config.train.tbptt}: stateful training) cannot be "
                            f"combined with {what}; "
                            f"{todo}, or set train.tbptt=0")


def config_from_dict(tree: dict) -> Config:
    """Rebuild a Config saved with to_dict(). A checkpoint's or config.yaml's tree goes through
    run.config_from_saved, which migrates older ones first."""
    return _apply(Config(), _flatten(tree, "saved config"), "saved config")
