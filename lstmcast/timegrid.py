"""Time grids: frequencies stated or inferred (never guessed), positions on a grid, future
timestamps, season lengths and calendar features; vectorised over all series at once.

A frequency is a `Freq`, named by a string stored in run directories. The names are pandas
aliases where pandas has one (D, B, W-WED, MS, ME, QS-JAN, QE-DEC, YS-JAN, YE-DEC, h, 15min,
2MS, 3D, ...) plus `MS@15`-style names for month-based grids on another day of the month
(`MS@15`: the 15th of every month, `QS-JAN@15`: the 15th of Jan, Apr, Jul, Oct).

Kinds of grid:
- fixed: a fixed step (h, 15min, D, 3D) counted from each series' first timestamp;
- week:  7-day steps on one weekday (W-WED);
- bday:  Monday to Friday (B), at one time of day;
- month: every `step` months on one day of the month (1..28) or the month's last day; anchored
         (Q*/Y*: the months are fixed by the name) or counted from each series' first month.

Times are pandas timestamps, naive or with one fixed UTC offset (several offsets are converted
to UTC by the reader). Calendar fields (month, day, weekday) are read on the wall clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
DAY_NS = 86_400_000_000_000
END = 0  # Freq.day of a grid on the last day of the month


class FreqError(ValueError):
    """A frequency name lstmcast cannot use (the message says what is allowed)."""


@dataclass(frozen=True)
class Freq:
    kind: str                 # fixed | week | bday | month
    step: int                 # fixed: nanoseconds; week: weeks; bday: 1; month: months
    anchor: int | None = None  # week: weekday (0 = Monday); month: month index % step; None: per series
    day: int = 1              # month: day of the month 1..28, or END (0)
    name: str = ""

    def __str__(self) -> str:
        return self.name


_MONTH_ALIAS = re.compile(r"^(\d*)(MS|ME|M|QS|QE|Q|YS|YE|Y|AS|A)(?:-([A-Z]{3}))?(?:@(\d+))?$")


def _month_name(step: int, day: int, anchor: int | None) -> str:
    """Canonical name of a month-based grid (the inverse of parse_freq)."""
    start = day != END
    at = f"@{day}" if start and day != 1 else ""
    if anchor is not None and step in (3, 12):
        if step == 3:  # QS-JAN/FEB/MAR; QE-DEC/JAN/FEB (pandas' defaults QS = QS-JAN, QE = QE-DEC)
            month = anchor if start else {2: 11, 0: 0, 1: 1}[anchor]
            return f"QS-{MONTHS[month]}{at}" if start else f"QE-{MONTHS[month]}"
        return f"YS-{MONTHS[anchor]}{at}" if start else f"YE-{MONTHS[anchor]}"
    lead = "" if step == 1 else str(step)
    return f"{lead}MS{at}" if start else f"{lead}ME"


def month_freq(step: int, day: int, anchor: int | None) -> Freq:
    if anchor is not None and step not in (3, 12):
        anchor = None
    if anchor is not None:
        anchor %= step
    return Freq("month", step, anchor, day, _month_name(step, day, anchor))


def fixed_freq(step_ns: int) -> Freq:
    if step_ns % DAY_NS == 0:
        days = step_ns // DAY_NS
        return Freq("fixed", step_ns, None, 1, "D" if days == 1 else f"{days}D")
    return Freq("fixed", step_ns, None, 1, to_offset(pd.Timedelta(step_ns, unit="ns")).freqstr)


def week_freq(weeks: int, weekday: int) -> Freq:
    lead = "" if weeks == 1 else str(weeks)
    return Freq("week", weeks, weekday, 1, f"{lead}W-{WEEKDAYS[weekday]}")


BDAY = Freq("bday", 1, None, 1, "B")


def parse_freq(text: str) -> Freq:
    """A frequency name (pandas alias or `MS@15` style) -> Freq; FreqError if lstmcast cannot use it."""
    name = str(text).strip()
    match = _MONTH_ALIAS.match(name.upper())
    if match:
        n, base, anchor_name, at = match.groups()
        n = int(n) if n else 1
        start = base in ("MS", "QS", "YS", "AS")
        months = {"M": 1, "Q": 3, "Y": 12, "A": 12}[base[0]]
        if anchor_name is not None and (months == 1 or anchor_name not in MONTHS):
            raise FreqError(f"'{name}' is not a frequency")
        day = 1 if start else END
        if at is not None:
            day = int(at)
            if not start or not 1 <= day <= 28:
                raise FreqError(f"'{name}': '@day' goes with a month-start name and a day 1..28 "
                                f"(e.g. MS@15); for the last day of the month use ME")
        step = n * months
        anchor = None
        if months > 1:
            month = MONTHS.index(anchor_name) if anchor_name else (0 if start else 11)
            # QS-JAN: months 0, 3, 6, 9; QE-DEC: quarters end in Dec (11), Mar, Jun, Sep.
            anchor = month % step if n == 1 else None
            if n != 1:
                raise FreqError(f"'{name}': use {step}MS or {step}ME for every {step} months")
        return month_freq(step, day, anchor)
    try:
        offset = to_offset(name)
    except (ValueError, TypeError):
        raise FreqError(f"'{name}' is not a frequency") from None
    kind = type(offset).__name__
    if kind == "Day" or isinstance(offset, pd.offsets.Tick):
        step = int(pd.Timedelta(offset).value)
        if step <= 0:
            raise FreqError(f"'{name}' is not a positive step")
        return fixed_freq(step)
    if kind == "Week" and offset.weekday is not None and offset.n >= 1:
        return week_freq(offset.n, offset.weekday)
    if kind == "BusinessDay" and offset.n == 1:
        return BDAY
    raise FreqError(f"'{name}' is not a frequency lstmcast supports (use e.g. D, B, W-WED, MS, ME, "
                    f"MS@15, QS-JAN, QE-DEC, YS-JAN, YE-DEC, h, 15min)")


def _wall(times) -> pd.DatetimeIndex:
    """Naive wall-clock times in nanoseconds (a zone's offset applied, then dropped)."""
    times = pd.DatetimeIndex(times)
    if times.tz is not None:
        times = times.tz_localize(None)
    return times.as_unit("ns")


def _per_unique(field):
    """A calendar field computed once per distinct time and spread back: files repeat a few
    thousand timestamps over millions of rows, and numpy's calendar casts are slow per row."""
    def wrapped(wall: pd.DatetimeIndex) -> np.ndarray:
        if len(wall) < 65_536:
            return field(wall)
        codes, unique = pd.factorize(wall.values)   # naive datetime64 in the index's own unit
        if len(unique) > len(wall) // 4:
            return field(wall)
        return field(pd.DatetimeIndex(unique))[codes]
    wrapped.__doc__ = field.__doc__
    wrapped.__wrapped__ = field
    return wrapped


@_per_unique
def _month_index(wall: pd.DatetimeIndex) -> np.ndarray:
    """year * 12 + month - 1 of each time (numpy's calendar arithmetic: no per-field accessors)."""
    return wall.values.astype("datetime64[M]").astype(np.int64) + 1970 * 12


@_per_unique
def _day_of_month(wall: pd.DatetimeIndex) -> np.ndarray:
    days = wall.values.astype("datetime64[D]")
    return (days - days.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


@_per_unique
def _day_of_week(wall: pd.DatetimeIndex) -> np.ndarray:
    """0 (Monday) .. 6; 1970-01-01 was a Thursday."""
    return (wall.values.astype("datetime64[D]").astype(np.int64) + 3) % 7


@_per_unique
def _is_month_end(wall: pd.DatetimeIndex) -> np.ndarray:
    days = wall.values.astype("datetime64[D]")
    return (days + np.timedelta64(1, "D")).astype("datetime64[M]") != days.astype("datetime64[M]")


def _time_of_day(wall: pd.DatetimeIndex) -> np.ndarray:
    return wall.asi8 % DAY_NS


class WallTimes:
    """Times as naive wall-clock nanoseconds (_wall) with their calendar fields, each computed
    once and kept: on long inputs per distinct time (one factorization shared by every field), and
    for `take`n rows gathered from the parent's. Frequency inference asks each field of the same
    millions of rows several times (candidates, then positions for each candidate)."""

    _FIELDS = {"month_index": _month_index.__wrapped__, "day_of_month": _day_of_month.__wrapped__,
               "day_of_week": _day_of_week.__wrapped__, "is_month_end": _is_month_end.__wrapped__}

    def __init__(self, times, parent: WallTimes | None = None, rows: np.ndarray | None = None):
        self.index = _wall(times) if parent is None else parent.index[rows]
        self.ns = self.index.asi8
        self._parent, self._rows, self._fields = parent, rows, {}
        self._codes = self._unique = None
        self._factorized = parent is not None or len(self.index) < 65_536   # else at the first field

    def _factorize(self) -> None:
        """Distinct times, when they are few (a quarter of the rows at most): fields per distinct time."""
        codes, unique = pd.factorize(self.index.values)
        if len(unique) <= len(self.index) // 4:
            self._codes, self._unique = codes, pd.DatetimeIndex(unique)
        self._factorized = True

    @classmethod
    def of(cls, times) -> WallTimes:
        return times if isinstance(times, WallTimes) else cls(times)

    def distinct(self) -> tuple[np.ndarray, WallTimes] | None:
        """(each row's code, the distinct times as a WallTimes) when the rows repeat few times (a
        quarter of the rows at most, 65,536 rows or more); None otherwise."""
        if self._parent is not None:
            return None
        if not self._factorized:
            self._factorize()
        return None if self._codes is None else (self._codes, WallTimes(self._unique))

    def take(self, rows: np.ndarray) -> WallTimes:
        """These times at `rows`, their fields gathered from this one's."""
        return WallTimes(None, self, rows)

    def field(self, name: str) -> np.ndarray:
        if name not in self._fields:
            if name == "time_of_day":
                value = self.ns % DAY_NS
            elif self._parent is not None:
                value = self._parent.field(name)[self._rows]
            else:
                if not self._factorized:
                    self._factorize()
                value = (self._FIELDS[name](self._unique)[self._codes] if self._codes is not None
                         else self._FIELDS[name](self.index))
            self._fields[name] = value
        return self._fields[name]


def positions(freq: Freq, times, starts) -> np.ndarray:
    """(n,) int64 step of each time on the grid counted from its series' start (`starts`, one per
    time, itself on the grid); -1 where the time is off the grid. Either may be a WallTimes."""
    wall, first = WallTimes.of(times), WallTimes.of(starts)
    t, s = wall.ns, first.ns
    if freq.kind in ("fixed", "week"):
        step = freq.step if freq.kind == "fixed" else freq.step * 7 * DAY_NS
        delta = t - s
        on = delta % step == 0
        if freq.kind == "week":
            on &= wall.field("day_of_week") == freq.anchor
        pos = delta // step
    elif freq.kind == "bday":
        on = (wall.field("day_of_week") < 5) & (wall.field("time_of_day") == first.field("time_of_day"))
        days_t = (t // DAY_NS).astype("datetime64[D]")
        days_s = (s // DAY_NS).astype("datetime64[D]")
        pos = np.busday_count(days_s, days_t) if on.all() else np.where(
            on, np.busday_count(days_s, np.where(on, days_t, days_s)), -1)
    else:
        months, months0 = wall.field("month_index"), first.field("month_index")
        delta = months - months0
        on = (delta % freq.step == 0) & (wall.field("time_of_day") == first.field("time_of_day"))
        if freq.anchor is not None:
            on &= months % freq.step == freq.anchor
        on &= (wall.field("is_month_end") if freq.day == END else wall.field("day_of_month") == freq.day)
        pos = delta // freq.step
    return np.where(on, pos, -1).astype(np.int64)


def shift(freq: Freq, base, steps) -> pd.DatetimeIndex:
    """Times `steps` (int array) grid steps after `base` (times on the grid, same length), in
    `base`'s zone."""
    wall = _wall(base)
    steps = np.asarray(steps, dtype=np.int64)
    tz = pd.DatetimeIndex(base).tz
    if freq.kind in ("fixed", "week"):
        step = freq.step if freq.kind == "fixed" else freq.step * 7 * DAY_NS
        out = wall.asi8 + steps * step
    elif freq.kind == "bday":
        days = (wall.asi8 // DAY_NS).astype("datetime64[D]")
        moved = np.busday_offset(days, steps, roll="forward").astype("datetime64[ns]").astype(np.int64)
        out = moved + _time_of_day(wall)
    else:
        months = _month_index(wall) + steps * freq.step - 1970 * 12  # datetime64[M] counts from 1970-01
        if freq.day == END:
            day0 = (months + 1).astype("datetime64[M]").astype("datetime64[D]") - np.timedelta64(1, "D")
        else:
            day0 = months.astype("datetime64[M]").astype("datetime64[D]") + np.timedelta64(freq.day - 1, "D")
        out = day0.astype("datetime64[ns]").astype(np.int64) + _time_of_day(wall)
    result = pd.DatetimeIndex(out.astype("datetime64[ns]"))
    return result.tz_localize(tz) if tz is not None else result


def isoformats(times) -> list[str]:
    """Timestamp.isoformat() of each time, formatted once per distinct time (a run's per-series
    timestamps repeat a few dates over many series)."""
    codes, unique = pd.factorize(pd.DatetimeIndex(times))
    texts = [t.isoformat() for t in unique]
    return [texts[code] for code in codes]


def series_times(freq: Freq, starts, lengths) -> pd.DatetimeIndex:
    """Every series' timestamps, concatenated: lengths[i] steps from starts[i]."""
    lengths = np.asarray(lengths, dtype=np.int64)
    base = pd.DatetimeIndex(starts).repeat(lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return shift(freq, base, offsets)


def series_grid(freq: Freq, starts, lengths) -> tuple[pd.DatetimeIndex, np.ndarray] | None:
    """series_times as (grid, rows): one grid from the earliest start through the latest end and
    each time's row in it (grid[rows] == series_times(freq, starts, lengths)), so that what depends
    on the time alone (calendar features) is computed once per grid point. None when a start is off
    the earliest start's grid (another phase) or the grid is longer than the times themselves."""
    starts, lengths = pd.DatetimeIndex(starts), np.asarray(lengths, dtype=np.int64)
    if len(starts) == 0:
        return None
    origin = starts[[int(np.argmin(starts.asi8))] * len(starts)]
    offsets = positions(freq, starts, origin)
    span = int((offsets + lengths).max())
    if (offsets < 0).any() or span > lengths.sum():
        return None
    grid = shift(freq, origin[:1].repeat(span), np.arange(span))
    rows = np.repeat(offsets - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
    return grid, rows


def future_times(freq: Freq, last, steps: int) -> pd.DatetimeIndex:
    """(n * steps,) the `steps` grid times after each of `last` (n,), series by series."""
    last = pd.DatetimeIndex(last)
    return shift(freq, last.repeat(steps), np.tile(np.arange(1, steps + 1), len(last)))


def start_rows(codes: np.ndarray) -> np.ndarray:
    """Each row's series' first row, for rows sorted by (series code, time)."""
    first = np.r_[True, codes[1:] != codes[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(len(codes)), 0))


def series_starts(times: pd.DatetimeIndex, codes: np.ndarray) -> pd.DatetimeIndex:
    """Each row's series start, for times sorted by (series code, time)."""
    return times[start_rows(codes)]


# --- season lengths and calendar features: one table -------------------------------------------

# (name, period): a calendar feature is 2 pi x / period as a sin/cos pair, x counted from 0.
_HOUR, _MINUTE, _WEEKDAY = ("hour", 24.0), ("minute", 60.0), ("dayofweek", 7.0)
_DAYOFYEAR, _WEEK = ("dayofyear", 366.0), ("week", 53.0)
_MONTH, _QUARTER = ("month", 12.0), ("quarter", 4.0)

# family -> (season length, calendar features). Sub-daily season lengths are steps per day.
FAMILIES: dict[str, tuple[int | None, list[tuple[str, float]]]] = {
    "subhourly": (None, [_HOUR, _MINUTE, _WEEKDAY]),
    "hourly":    (None, [_HOUR, _WEEKDAY]),
    "daily":     (7, [_WEEKDAY, _DAYOFYEAR]),
    "business":  (5, [_WEEKDAY, _DAYOFYEAR]),
    "weekly":    (52, [_WEEK]),
    "monthly":   (None, [_MONTH]),
    "quarterly": (4, [_QUARTER]),
    "yearly":    (1, []),
    "other":     (1, []),
}


def as_freq(freq: Freq | str) -> Freq:
    return freq if isinstance(freq, Freq) else parse_freq(freq)


def family(freq: Freq | str) -> str:
    """Which row of FAMILIES a frequency uses."""
    f = as_freq(freq)
    if f.kind == "bday":
        return "business"
    if f.kind == "week":
        return "weekly"
    if f.kind == "month":
        if f.anchor is not None and f.step == 3:
            return "quarterly"
        if f.anchor is not None and f.step == 12:
            return "yearly"
        return "monthly"
    if f.step < 3_600_000_000_000:
        return "subhourly"
    if f.step < DAY_NS:
        return "hourly"
    return "daily" if f.step == DAY_NS else "other"


def season_length(freq: Freq | str) -> int:
    """The usual seasonal period of a frequency (1 when there is none): hourly 24, 15min 96,
    daily 7, business daily 5, weekly 52, monthly 12 (2MS: 6), quarterly 4."""
    f = as_freq(freq)
    name = family(f)
    season, _ = FAMILIES[name]
    if season is not None:
        return season
    if name == "monthly":
        return 12 // f.step if 12 % f.step == 0 else 1
    return DAY_NS // f.step if DAY_NS % f.step == 0 else 1


def calendar_parts(freq: Freq | str) -> list[tuple[str, float]]:
    """The calendar features of a frequency, before sin/cos (see FAMILIES)."""
    return list(FAMILIES[family(freq)][1])


def describe(freqs) -> str:
    return ", ".join(str(f) for f in freqs)
