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


class Rows:
    """Timestamps sorted by (series code, time), placed on candidate grids. A time's position on a
    grid depends only on (its series' first time, the time itself): when the file repeats a few
    hundred distinct times over millions of rows, each distinct pair is placed once and the rows
    read their position back (one gather instead of a dozen calendar operations per row)."""

    def __init__(self, times, codes: np.ndarray):
        self.wall, self.codes = WallTimes.of(times), codes
        self.firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])   # each series' first row
        self._starts: WallTimes | None = None
        self._pairs: tuple | None = None
        distinct = self.wall.distinct()
        if distinct is not None:
            rows, times = distinct
            n = len(times.ns)
            lengths = np.diff(np.r_[self.firsts, len(codes)])
            key = np.repeat(rows[self.firsts].astype(np.int64) * n, lengths) + rows
            if n * n <= 1 << 22:   # a table of every pair, read by the key itself
                seen, index = np.flatnonzero(np.bincount(key, minlength=n * n)), key
            else:
                index, seen = pd.factorize(key)
            self._pairs = (times, seen // n, seen % n, index, n * n if index is key else None)

    def positions(self, freq: Freq) -> np.ndarray:
        """timegrid.positions of every row, counted from its series' first time."""
        if self._pairs is None:
            if self._starts is None:
                self._starts = self.wall.take(start_rows(self.codes))
            return positions(freq, self.wall, self._starts)
        times, first, then, index, dense = self._pairs
        placed = positions(freq, times.take(then), times.take(first))
        if dense is not None:
            table = np.empty(dense, dtype=np.int64)
            table[first * len(times.ns) + then] = placed
            placed = table
        return placed[index]


def fit(freq: Freq, rows: Rows, n_series: int) -> Fit | None:
    """How `freq` fits the timestamps (None: some time is off its grid)."""
    pos = rows.positions(freq)
    if (pos < 0).any():
        return None
    spans = np.zeros(n_series, dtype=np.int64)
    np.maximum.at(spans, rows.codes, pos)
    return Fit(freq, int((spans + 1).sum() - len(pos)), pos)


def _mode_gcd(values: np.ndarray, weights: np.ndarray) -> tuple[int, int]:
    """(the most common value, counting each `weights` times, ties to the smallest; the greatest
    common divisor) of non-empty `values`, from one hash of them (no sort)."""
    codes, uniques = pd.factorize(values)
    counts = np.bincount(codes, weights=weights)
    return int(uniques[counts == counts.max()].min()), int(np.gcd.reduce(uniques))


def _single(values: np.ndarray) -> bool:
    """Whether every value is the same (no sort, unlike np.unique)."""
    return len(values) == 0 or bool((values == values[0]).all())


@dataclass(frozen=True)
class Steps:
    """The steps from each time to the next one of its series, as distinct (earlier, later) pairs
    of `times` with how many rows step so. `times` is the distinct times of the file when they
    repeat (a few hundred dates over millions of rows: every question below is then asked of a
    few hundred pairs), else every row."""
    times: WallTimes
    before: np.ndarray
    after: np.ndarray
    count: np.ndarray

    @classmethod
    def of(cls, wall: WallTimes, codes: np.ndarray) -> Steps:
        """For rows sorted by (series code, time)."""
        ends = np.flatnonzero(codes[1:] != codes[:-1])   # the last row of each series but the last
        distinct = wall.distinct()
        if distinct is None:
            before = np.delete(np.arange(len(codes) - 1), ends)
            return cls(wall, before, before + 1, np.ones(len(before), dtype=np.int64))
        rows, times = distinct
        n = len(times.ns)
        key = rows[:-1].astype(np.int64) * n + rows[1:]
        key[ends] = n * n   # across two series: no step
        if n * n <= 1 << 22:
            counts = np.bincount(key, minlength=n * n + 1)[:n * n]
            pairs = np.flatnonzero(counts)
            counts = counts[pairs]
        else:
            codes_, pairs = pd.factorize(key)
            counts = np.bincount(codes_)
            kept = pairs != n * n
            pairs, counts = np.asarray(pairs)[kept], counts[kept]
        return cls(times, pairs // n, pairs % n, counts)

    def delta(self, values: np.ndarray) -> np.ndarray:
        """Each pair's later value less its earlier one."""
        return values[self.after] - values[self.before]


def candidates(times, codes: np.ndarray) -> list[Freq]:
    """Frequencies worth checking for timestamps sorted by (series, time): from the most common
    spacing and the greatest common spacing, in calendar terms (days, weekdays, months)."""
    steps = Steps.of(WallTimes.of(times), codes)
    wall = steps.times   # the distinct times (or every row): the fields' values, each at least once
    diffs = steps.delta(wall.ns)
    forward = diffs > 0
    diffs, weights = diffs[forward], steps.count[forward]
    if len(diffs) == 0:
        return []
    out: list[Freq] = []
    tod = wall.field("time_of_day")
    day_level = bool((tod[steps.after] == tod[steps.before]).all()) and diffs.min() >= DAY_NS
    if not day_level:
        return [fixed_freq(s) for s in dict.fromkeys(_mode_gcd(diffs, weights))]
    days = diffs // DAY_NS
    day_steps = _mode_gcd(days, weights)
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
        mdiff = steps.delta(months)
        up = mdiff > 0
        mdiff, mweights = mdiff[up], steps.count[up]
        if len(mdiff):
            dom = wall.field("day_of_month")
            if wall.field("is_month_end").all():
                day = END
            elif _single(dom) and dom[0] <= 28:
                day = int(dom[0])
            else:
                day = None
            if day is not None:
                for step in dict.fromkeys(_mode_gcd(mdiff, mweights)):
                    phases = pd.unique(months % step)
                    out.append(month_freq(step, day, int(phases[0]) if len(phases) == 1 else None))
        if not any(f.kind == "month" for f in out):
            out += [fixed_freq(n * DAY_NS) for n in dict.fromkeys(day_steps) if n >= 28]
    return list(dict.fromkeys(out))


def infer(times, codes: np.ndarray, n_series: int) -> tuple[list[Fit], list[Freq]]:
    """(fits, candidates): the candidates whose grid holds every timestamp and has the fewest
    missing points (one: the frequency; several: ambiguous; none: no regular grid), and all
    candidates tried. `times` sorted by (series code, time).

    A grid that holds every timestamp misses exactly (last position + 1) - points in each series,
    which the series' first and last times tell: each candidate is bounded by that, one row per
    series, and checked row by row only while it could still be among the best."""
    rows = Rows(times, codes)
    wall = rows.wall
    tried = candidates(wall, codes)
    firsts = rows.firsts
    lasts = np.r_[firsts[1:] - 1, len(codes) - 1]
    ends, begins = wall.take(lasts), wall.take(firsts)
    bounds = []
    for c in tried:
        last = positions(c, ends, begins)
        bounds.append(None if (last < 0).any() else int((last + 1).sum() - len(codes)))
    fits: list[Fit] = []
    for bound, c in sorted(((b, c) for b, c in zip(bounds, tried) if b is not None), key=lambda bc: bc[0]):
        if fits and bound > fits[0].missing:
            break
        found = fit(c, rows, n_series)
        if found is not None:
            fits.append(found)
    return fits, tried
