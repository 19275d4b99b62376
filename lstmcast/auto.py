"""The automatic recipe: what lstmcast trains when the user does not say.

`train.recipe: auto` (the default) resolves every key the user did not give (in a config file,
with --set or with a named option) from facts about the data the run reads: its frequency and
season length, how many series, how long they are, whether every value is positive and how many
training windows there are. Each choice comes with its reason (`Choice.line`), printed once at
the start of training and written out in the run's config.yaml, so `--config RUN/config.yaml`
trains the same recipe again (every key is then given). `train.recipe: none` keeps the plain
declared defaults.

The rules come from measurements on the competition and fpp3 data sets (docs/accuracy.md), made
on the validation part (the horizon before the scored one), never on the scored points:

- window normalisation with a scale-free loss: each window centred and scaled by its own mean and
  spread, trained on MASE (shift- and scale-free), instead of per-series scaling with MSE;
- on strictly positive data also members that divide each window by its mean level and train on
  sMAPE: they make different errors, and the median of both recipes beats either alone;
- two lookbacks per recipe (members differ in what they read as well as in their seeds);
- up to MEMBERS members, as many as the time budget fits: on small data sets the budget has room
  for more than one round of recipes x lookbacks, and the median of more members was better on
  the validation part of M1 and M3 quarterly;
- sub-daily data: calendar features and the linear skip ("the same hour yesterday / last week");
- one refit epoch with the latest horizon when that horizon is a large part of the history;
- batch size and epoch size from the number of windows (enough optimizer steps per epoch, and
  epochs that do not grow with the data);
- patience from the steps an epoch: 3 epochs of 200 or more steps, else 10 (an epoch of fewer
  steps trains little, and with a handful of series early stopping judges a noisy loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .keys import CLASSICAL
from .timegrid import family, season_length

# M4 conventions where there are some (Makridakis et al. 2020): yearly 6, quarterly 8, monthly 18,
# weekly 13, daily 14, hourly 48. Business days: two weeks; sub-hourly: one day of steps (<= 96).
HORIZONS = {"yearly": 6, "quarterly": 8, "monthly": 18, "weekly": 13, "daily": 14, "business": 10,
            "hourly": 48, "other": 12}
MEMBERS = 12               # ensemble members of the automatic recipe (the time budget may train fewer)
STEPS_PER_EPOCH = 300      # an epoch is at most this many optimizer steps (windows sampled per epoch)
MIN_STEPS_PER_EPOCH = 60   # the batch shrinks (to 16 at the least) until an epoch has this many steps


@dataclass(frozen=True)
class Facts:
    """What the automatic recipe reads from the data."""

    family: str        # timegrid family: monthly, quarterly, daily, hourly, ...
    season: int        # season length in steps (1: none)
    steps_per_day: int  # sub-daily data: steps in a day (0 otherwise)
    n_series: int
    min_length: int
    median_length: int
    max_length: int
    positive: bool     # every value > 0

    @classmethod
    def of(cls, series) -> Facts:
        """Facts of a data.SeriesSet."""
        lengths = series.lengths()
        name = family(series.freq)
        season = season_length(series.freq)
        positive = all(bool(np.all(v > 0)) for v in series.values)
        return cls(name, season, season if name in ("hourly", "subhourly") else 0, len(series),
                   int(lengths.min()), int(np.median(lengths)), int(lengths.max()), positive)

    def windows(self, horizon: int) -> int:
        """About how many training windows the series give (one per target position)."""
        return max(self.median_length * self.n_series - self.n_series * 2 * horizon, self.n_series)


@dataclass(frozen=True)
class Choice:
    """One key the recipe set, and why."""

    key: str
    value: Any
    reason: str

    def line(self) -> str:
        value = str(self.value).lower() if isinstance(self.value, bool) else self.value
        return f"{self.key} = {value}: {self.reason}"


def _horizon(facts: Facts) -> tuple[int, str]:
    if facts.family == "subhourly":
        steps = min(facts.steps_per_day, 96)
        return steps, f"{'one day' if steps == facts.steps_per_day else '96 steps'} of {facts.family} data"
    horizon = HORIZONS[facts.family]
    reason = (f"the M4 convention for {facts.family} data" if facts.family in
              ("yearly", "quarterly", "monthly", "weekly", "daily", "hourly") else f"for {facts.family} data")
    # Training needs 2 x horizon + 1 points to hold out a validation part: shorten the horizon for
    # short histories rather than refuse the file.
    longest_usable = max((facts.max_length - 1) // 2, 1)
    if horizon > longest_usable:
        return longest_usable, (f"{reason} would be {horizon}, but the longest series has "
                                f"{facts.max_length} points (2 x horizon + 1 are needed)")
    if horizon > facts.min_length - 1:  # every series needs horizon + 1 points to train on
        shortest = max(facts.min_length - 1, 1)
        return shortest, (f"{reason} would be {horizon}, but the shortest series has {facts.min_length} "
                          f"points (horizon + 1 are needed)")
    return horizon, reason


def _lookbacks(facts: Facts, horizon: int) -> tuple[list[int], str]:
    """Two input lengths, the members alternating between them."""
    if facts.family in ("hourly", "subhourly"):
        week = 7 * facts.steps_per_day
        long, why = max(week, 2 * horizon), "one week"
        short = max(3 * facts.steps_per_day, horizon)
        reason = f"{long} ({why}, so the weekly pattern is in view) and {short} (three days)"
    elif facts.family in ("daily", "business"):
        long = max(8 * facts.season, 2 * horizon)
        short = max(4 * facts.season, horizon)
        reason = f"{long} (eight weeks) and {short} (four weeks)"
    else:
        long = max(2 * horizon, 2 * facts.season if facts.season > 1 else 0)
        short = max(math.ceil(4 * horizon / 3), facts.season + 1 if facts.season > 1 else 0)
        reason = f"{long} = 2 x horizon and {short} = 4/3 x horizon"
        if facts.season > 1:
            reason += f" (at least a season of {facts.season} and more)"
    # Members read the history that exists: no lookback longer than the longest training part.
    usable = max(facts.max_length - horizon, 1)
    if long > usable:
        long, short = usable, min(short, usable)
        reason += f", cut to {usable}: the longest series has {facts.max_length} points"
    # The shorter first: it is cheaper, and on M3 monthly as accurate (docs/accuracy.md); when the
    # budget leaves room for fewer members, the first ones train.
    return ([short, long] if short != long else [long]), reason


def _batch(windows: int) -> tuple[int, str]:
    batch = 256
    while batch > 16 and windows / batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    if batch == 256:
        return batch, f"~{windows:,} training windows"
    return batch, f"~{windows:,} training windows: at least {MIN_STEPS_PER_EPOCH} steps an epoch"


def resolve(config, series) -> tuple[Any, list[Choice]]:
    """`config` with the automatic recipe's choices for `series` (a data.SeriesSet) applied, and
    the choices; unchanged with train.recipe none or when the user gave every key."""
    if config.train.recipe != "auto":
        return config, []
    from .config import load_config
    given = config.given_keys()
    user_members = len(config.train.members) if "train.members" in given and config.train.members else None
    # Classical forecasts join point forecasts only, and only where train.select may leave them out.
    classical = not config.model.quantiles and ("train.select" not in given or config.train.select)
    choices = choose(Facts.of(series), given, config.data.horizon, user_members, config.train.tbptt,
                     classical=bool(classical))
    if not choices:
        return config, []
    return load_config(None, {c.key: c.value for c in choices}, base=config), choices


def choose(facts: Facts, given: set[str], horizon: int | None = None,
           user_members: int | None = None, tbptt: int = 0, classical: bool = True) -> list[Choice]:
    """The automatic recipe for data with these facts: a Choice for each key not in `given`
    (dotted keys the user set). `horizon`: the user's, when given; `user_members`: how many
    train.members entries the user gave; `tbptt`: train.tbptt (a stateful model: _stateful);
    `classical`: offer model.classical (point forecasts, train.select not turned off)."""
    if tbptt:
        return _stateful(facts, given, horizon)
    if "train.ensemble_lookbacks" in given:
        given = given | {"data.lookback"}
    out, pick = _picker(given)
    if horizon is None or "data.horizon" not in given:
        horizon, why = _horizon(facts)
        pick("data.horizon", horizon, why)
    subdaily = facts.family in ("hourly", "subhourly")
    pick("data.scaling", "none", "each window is normalised inside the model instead")
    pick("data.calendar", "auto" if subdaily else "none",
         "hour of day and day of week, known for every forecast step" if subdaily else
         f"{facts.family} data: the lookback shows the season itself")
    pick("model.linear_skip", subdaily,
         "reads 'the same hour yesterday and last week' directly" if subdaily else
         "measured to help only on sub-daily data")

    lookbacks, why_lookbacks = _lookbacks(facts, horizon)
    recipes = _recipes(facts, given)
    members = _members(recipes, lookbacks if "data.lookback" not in given else [None], given)
    pick("data.lookback", lookbacks[-1], f"members read {why_lookbacks}" if len(lookbacks) > 1 else why_lookbacks)
    if user_members is not None:
        pick("train.ensemble", user_members, "one member per train.members entry")
    else:
        pick("train.ensemble", len(members), "the median of members of different recipes and lookbacks "
             "beats any one of them; the time budget may train fewer")
    if "train.members" not in given and any(members):
        pick("train.members", members, "; ".join(r[2] for r in recipes))
        pick("train.select", True, "after training, members whose recipe does not suit the data are left "
             "out, judged on the early-stopping windows")
    if classical:
        pick("model.classical", list(CLASSICAL), "the median with Theta and damped exponential smoothing, each "
             "kept only where it lowers the early-stopping windows' MASE (train.select)")
        if not any(choice.key == "train.select" for choice in out):
            pick("train.select", True, "classical forecasts are kept only where they help on the early-stopping "
                 "windows")
    first = recipes[0]
    pick("model.window_norm", first[0], "each window centred and scaled by its own mean and spread"
         if first[0] == "standard" else "each window divided by its mean level")
    pick("train.loss", first[1], "scale- and shift-free, like the window normalisation"
         if first[1] == "mase" else "scale-free, on the real scale")

    windows = facts.windows(horizon)
    batch, why_batch = _batch(windows)
    pick("train.batch_size", batch, why_batch)
    pick("train.lr", 0.002 if batch >= 256 else 0.001, f"for batch {batch}")
    steps = max(windows // batch, 1)
    per_epoch = STEPS_PER_EPOCH * batch
    if windows > per_epoch:
        pick("train.windows_per_epoch", per_epoch,
             f"{STEPS_PER_EPOCH} steps of {batch}, sampled anew each epoch: epochs do not grow with the data")
        steps = STEPS_PER_EPOCH
    patience = 3 if steps >= 200 else 10
    pick("train.patience", patience, f"{steps} steps an epoch")
    pick("train.lr_patience", max(patience // 3, 1), f"a third of patience {patience}")
    share = 100 * horizon / facts.median_length
    if share >= 10:
        pick("train.refit_epochs", 1, f"the latest horizon is {share:.0f}% of a median series: train on it "
             "too, one epoch after early stopping")
    else:
        pick("train.refit_epochs", 0, f"the latest horizon is only {share:.0f}% of a median series")
    return out


def _picker(given: set[str]):
    """(the choices made, pick(key, value, reason)): pick records a Choice for a key not given."""
    out: list[Choice] = []

    def pick(key: str, value: Any, reason: str) -> None:
        if key not in given:
            out.append(Choice(key, value, reason))

    return out, pick


def _stateful(facts: Facts, given: set[str], horizon: int | None) -> list[Choice]:
    """The recipe of a stateful model (train.tbptt): no window normalisation, no window-reading head;
    each series scaled once on its training part. One member: its state spans the whole history."""
    out, pick = _picker(given)
    if horizon is None or "data.horizon" not in given:
        horizon, why = _horizon(facts)
        pick("data.horizon", horizon, why)
    why = "train.tbptt: the state runs over each series' whole history"
    pick("data.scaling", "standard", f"{why}, so each series is scaled once, on its training part")
    pick("model.window_norm", "none", f"{why}: no window to normalise")
    pick("model.linear_skip", False, f"{why}: no window for the skip to read")
    pick("train.loss", "mse", "on the per-series scaled values")
    subdaily = facts.family in ("hourly", "subhourly")
    pick("data.calendar", "auto" if subdaily else "none",
         "hour of day and day of week, known for every forecast step" if subdaily else
         f"{facts.family} data: the state carries the season itself")
    pick("train.ensemble", 1, f"{why}: one member")
    return out


def _recipes(facts: Facts, given: set[str]) -> list[tuple[str, str, str]]:
    """(window_norm, loss, description) of the member recipes."""
    standard = ("standard", "mase", "window_norm standard + mase loss")
    mean = ("mean", "smape", "window_norm mean + smape loss (every value is positive)")
    if "model.window_norm" in given or "train.loss" in given or not facts.positive:
        return [standard]
    return [mean, standard]


def _members(recipes: list[tuple[str, str, str]], lookbacks: list, given: set[str]) -> list[dict]:
    """train.members entries: every recipe with every lookback (recipes vary fastest), up to MEMBERS."""
    entries = []
    for lookback in lookbacks:
        for norm, loss, _ in recipes:
            entry = {}
            if lookback is not None:
                entry["data.lookback"] = lookback
            if "model.window_norm" not in given:
                entry["model.window_norm"] = norm
            if "train.loss" not in given:
                entry["train.loss"] = loss
            entries.append(entry)
    # Fewer combinations than members: the same recipes again, with other seeds.
    return [dict(entries[k % len(entries)]) for k in range(MEMBERS)]
