"""Which frequency a file's timestamps are on: the candidates their spacing suggests (in calendar
terms: days, weekdays, weeks, months) and how each fits every timestamp (timegrid.positions), all
series at once. data.resolve_frequency decides with it; timegrid holds the grids themselves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .timegrid import BDAY, DAY_NS, END, Freq, WallTimes, fixed_freq, month_freq, positions, start_rows, week_freq


@dataclass(frozen=True)
class Fit:
    freq: Freq
    missing: int   # grid points between each series' first and last timestamp not in the data
    positions: np.ndarray | None = field(default=None, compare=False, repr=False)   # of the times


def fit(freq: Freq, times, starts, codes: np.ndarray, n_series: int) -> Fit | None:
    """How `freq` fits the timestamps (None: some time is off its grid)."""
    pos = positions(freq, times, starts)
    if (pos < 0).any():
        return None
    spans = np.zeros(n_series, dtype=np.int64)
    np.maximum.at(spans, codes, pos)
    return Fit(freq, int((spans + 1).sum() - len(pos)), pos)


def _mode_gcd(values: np.ndarray) -> tuple[int, int]:
    """(the most common value, ties to the smallest; the greatest common divisor) of non-empty
    `values`, from one hash of them (no sort)."""
    codes, uniques = pd.factorize(values)
    counts = np.bincount(codes)
    return int(uniques[counts == counts.max()].min()), int(np.gcd.reduce(uniques))


def _single(values: np.ndarray) -> bool:
    """Whether every value is the same (no sort, unlike np.unique)."""
    return len(values) == 0 or bool((values == values[0]).all())


def candidates(times, codes: np.ndarray) -> list[Freq]:
    """Frequencies worth checking for timestamps sorted by (series, time): from the most common
    spacing and the greatest common spacing, in calendar terms (days, weekdays, months)."""
    wall = WallTimes.of(times)
    t = wall.ns
    same = codes[1:] == codes[:-1]
    diffs = (t[1:] - t[:-1])[same]
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        return []
    out: list[Freq] = []
    tod = wall.field("time_of_day")
    day_level = bool((tod[1:][same] == tod[:-1][same]).all()) and diffs.min() >= DAY_NS
    if not day_level:
        return [fixed_freq(s) for s in dict.fromkeys(_mode_gcd(diffs))]
    days = diffs // DAY_NS
    day_steps = _mode_gcd(days)
    weekday = wall.field("day_of_week")
    for n in dict.fromkeys(day_steps):
        if n % 7 == 0 and _single(weekday):
            out.append(week_freq(n // 7, int(weekday[0])))
        elif n < 28:
            out.append(fixed_freq(n * DAY_NS))
        if n == 1 and (weekday < 5).all():
            out.append(BDAY)
    if days.min() >= 28:
        months = wall.field("month_index")
        mdiff = (months[1:] - months[:-1])[same]
        mdiff = mdiff[mdiff > 0]
        if len(mdiff):
            dom = wall.field("day_of_month")
            if wall.field("is_month_end").all():
                day = END
            elif _single(dom) and dom[0] <= 28:
                day = int(dom[0])
            else:
                day = None
            if day is not None:
                for step in dict.fromkeys(_mode_gcd(mdiff)):
                    phases = pd.unique(months % step)
                    out.append(month_freq(step, day, int(phases[0]) if len(phases) == 1 else None))
        if not any(f.kind == "month" for f in out):
            out += [fixed_freq(n * DAY_NS) for n in dict.fromkeys(day_steps) if n >= 28]
    return list(dict.fromkeys(out))


def infer(times, codes: np.ndarray, n_series: int) -> tuple[list[Fit], list[Freq]]:
    """(fits, candidates): the candidates whose grid holds every timestamp and has the fewest
    missing points (one: the frequency; several: ambiguous; none: no regular grid), and all
    candidates tried. `times` sorted by (series code, time)."""
    wall = WallTimes.of(times)
    starts = wall.take(start_rows(codes))
    tried = candidates(wall, codes)
    fits = [f for f in (fit(c, wall, starts, codes, n_series) for c in tried) if f is not None]
    if not fits:
        return [], tried
    best = min(f.missing for f in fits)
    return [f for f in fits if f.missing == best], tried
