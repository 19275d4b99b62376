"""Covariates and calendar features: what the model reads besides the target, and its layout.

Per time step the model reads (value, observed, past covariates..., future covariates...,
calendar...). The last `n_known` columns (future covariates, then calendar) are known in advance:
the head reads them for each forecast step. Covariates are standardised per column with the
mean and standard deviation of the training part; calendar features are sin/cos pairs in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import timegrid
from .config import Config
from .data import SeriesSet


def calendar_parts(freq: str) -> list[tuple[str, float]]:
    """The calendar features of a frequency, before sin/cos (timegrid.FAMILIES): sub-daily: hour
    of day (+ minute of hour when sub-hourly), day of week; daily / business daily: day of week,
    day of year; weekly: week of year; monthly: month; quarterly: quarter; yearly: none."""
    return timegrid.calendar_parts(freq)


def calendar_names(freq: str, mode: str = "auto") -> tuple[str, ...]:
    """Column names of the calendar features: ("month_sin", "month_cos") for monthly data."""
    if mode == "none":
        return ()
    return tuple(f"{name}_{f}" for name, _ in calendar_parts(freq) for f in ("sin", "cos"))


def _position(times: pd.DatetimeIndex, name: str) -> np.ndarray:
    """x of a calendar feature, counted from 0: hour 0..23 (with minutes as a fraction), minute
    0..59, day of week 0 (Monday)..6, day of year 0..365, ISO week 0..52, month 0..11, quarter 0..3.
    On the wall clock of the times' zone; numpy calendar arithmetic, not per-field accessors."""
    wall = (times.tz_localize(None) if times.tz is not None else times).as_unit("ns").values
    days = wall.astype("datetime64[D]")
    if name in ("hour", "minute"):
        minutes = (wall - days).astype("timedelta64[m]").astype(np.int64)
        return minutes // 60 + (minutes % 60) / 60.0 if name == "hour" else (minutes % 60).astype(float)
    if name == "dayofweek":
        return ((days.astype(np.int64) + 3) % 7).astype(float)   # 1970-01-01 was a Thursday
    if name == "dayofyear":
        return (days - days.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64).astype(float)
    if name == "week":
        return times.isocalendar().week.to_numpy().astype(float) - 1.0
    month = (wall.astype("datetime64[M]").astype(np.int64) % 12).astype(float)   # 0..11
    return month if name == "month" else month // 3


def calendar_features(times: pd.DatetimeIndex, freq: str, mode: str = "auto") -> np.ndarray:
    """(len(times), len(calendar_names(freq))) float64: sin and cos of 2 pi x / period per feature."""
    if mode == "none" or not calendar_parts(freq):
        return np.zeros((len(times), 0))
    times = pd.DatetimeIndex(times)
    # Once per distinct time (files repeat a few thousand timestamps over millions of rows).
    codes, unique = pd.factorize(times)
    columns = []
    for name, period in calendar_parts(freq):
        angle = 2 * np.pi * _position(pd.DatetimeIndex(unique), name) / period
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1)[codes]


@dataclass
class FeatureSpec:
    """The feature layout of a run and the covariate scaling numbers fitted on its training part."""

    past: tuple[str, ...]
    future: tuple[str, ...]
    calendar: str                # data.calendar: auto | none
    freq: str
    mean: np.ndarray             # (n_covariates,) past then future
    std: np.ndarray
    series_ids: list[str]        # training series, in the order of the series embedding

    @property
    def calendar_names(self) -> tuple[str, ...]:
        return calendar_names(self.freq, self.calendar)

    @property
    def n_extra(self) -> int:
        return len(self.past) + len(self.future) + len(self.calendar_names)

    @property
    def n_known(self) -> int:
        """Features known for every forecast step: future covariates and calendar (the last columns)."""
        return len(self.future) + len(self.calendar_names)

    def layout(self) -> list[str]:
        """Name of every feature column, in order."""
        return ["value", "observed", *self.past, *self.future, *self.calendar_names]

    def dims(self) -> dict:
        """Forecaster sizes beyond the config: input features, known features, embedded series."""
        return {"input_size": 2 + self.n_extra, "n_known": self.n_known, "n_series": len(self.series_ids)}

    @classmethod
    def fit(cls, config: Config, series: SeriesSet, train_lengths: np.ndarray) -> FeatureSpec:
        names = config.data.covariates
        if names:
            part = np.concatenate([c[:n] for c, n in zip(series.covariates, train_lengths)])
            mean, std = part.mean(axis=0), part.std(axis=0)
            std = np.where(np.isfinite(std) & (std > 1e-12 * np.maximum(1.0, np.abs(mean))), std, 1.0)
        else:
            mean, std = np.zeros(0), np.zeros(0)
        return cls(tuple(config.data.past_covariates or []), tuple(config.data.future_covariates or []),
                   config.data.calendar, series.freq, mean, std, list(series.ids))

    def to_dict(self) -> dict:
        return {"layout": self.layout(), "past": list(self.past), "future": list(self.future),
                "calendar": self.calendar, "calendar_features": list(self.calendar_names),
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict, freq: str, series_ids: list[str]) -> FeatureSpec:
        """The spec to_dict() saved, for series at `freq` embedded in `series_ids` order (a run
        saved without features: run.RunMeta.from_checkpoint fills them in)."""
        return cls(tuple(d["past"]), tuple(d["future"]), d["calendar"], freq,
                   np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64),
                   list(series_ids))

    def codes(self, ids: list[str]) -> np.ndarray:
        """(n,) each series' row in the embedding; -1 for series not seen in training."""
        index = {sid: i for i, sid in enumerate(self.series_ids)}
        return np.array([index.get(sid, -1) for sid in ids], dtype=np.int64)

    def _calendar(self, series: SeriesSet, after: int) -> list[np.ndarray]:
        """Per series (length + after, n_calendar): calendar features of its timestamps and the
        `after` ones past its end, computed once over the grid spanning every series."""
        if not self.calendar_names:
            return [np.zeros((len(v) + after, 0)) for v in series.values]
        lengths = series.lengths() + after
        starts = pd.DatetimeIndex(series.starts)
        on_grid = timegrid.series_grid(series.grid, starts, lengths)
        times, rows = on_grid if on_grid is not None else (timegrid.series_times(series.grid, starts, lengths), None)
        if series.zone is not None:  # calendar on the wall clock forecasts are written with
            times = times.tz_convert(series.zone)
        table = calendar_features(times, self.freq, self.calendar)
        return np.split(table if rows is None else table[rows], np.cumsum(lengths)[:-1])

    def extra(self, series: SeriesSet) -> list[np.ndarray] | None:
        """Per series (length, n_extra): scaled covariates, then calendar; None without any."""
        if self.n_extra == 0:
            return None
        calendar = self._calendar(series, 0)
        if not (self.past or self.future):
            return calendar
        return [np.concatenate([(c - self.mean) / self.std, cal], axis=1)
                for c, cal in zip(series.covariates, calendar)]

    def tail(self, series: SeriesSet, future: np.ndarray | None, horizon: int) -> list[np.ndarray] | None:
        """Per series (horizon, n_extra) features of the steps after its end: past covariates 0
        (unknown), future covariates from `future` ((n_series, steps, n_future), steps <= horizon;
        later steps 0: a step's forecast reads only its own features), calendar of the future
        timestamps. None when nothing is known in advance."""
        if self.n_known == 0:
            return None
        rows = np.zeros((len(series), horizon, self.n_extra))
        if self.future:
            k = len(self.past)
            steps = future.shape[1]
            rows[:, :steps, k: k + len(self.future)] = (future - self.mean[k:]) / self.std[k:]
        if self.calendar_names:
            times = series.all_future_times(horizon)  # in the zone forecasts are written with
            rows[:, :, len(self.past) + len(self.future):] = calendar_features(
                times, self.freq, self.calendar).reshape(len(series), horizon, -1)
        return list(rows)
