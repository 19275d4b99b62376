"""evaluate's scores accumulated chunk by chunk: exact sums of the metric components per window.

A backtest's report needs, per window, only sums over its scored points (absolute and squared
errors, sMAPE terms, per-row MAE / scale for MASE, interval hits and widths, pinball losses) and
counts. Each chunk's backtest is folded into these sums and dropped, so memory is one chunk plus
a few numbers per window, not every scored point.

Float sums depend on the order of their terms, and the chunks' boundaries change that order: the
sums are exact instead (ExactSums: integers in units of 2**-1126), rounded once at the end, so the
report has the same bits for every chunk size. Every metric is a mean (or the square root of one),
so every one accumulates exactly; none is a median.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .keys import quantile_pairs
from .metrics import pair_name

# A finite float64 is m * 2**e with |m| < 1 (53 bits), e >= -1073: m * 2**53 * 2**(e - 53) is an
# integer times 2**-1126 at the smallest e, so every value is an integer in these units.
UNIT_BITS = 1126
BINS = 2098               # e - 53 + UNIT_BITS for e in -1073..1024
HALF_BITS = 26            # a mantissa split in two halves: bincount's float sums of them stay exact
SLICE = 1 << 24           # values summed per bincount: 2**24 halves of < 2**27 stay below 2**53


class ExactSums:
    """`n` sums of float64 values, kept exactly (Python integers in units of 2**-UNIT_BITS), so
    their value does not depend on the order the values came in. NaN and infinities are noted
    aside, as a float sum would end: NaN, or an infinity of one sign."""

    def __init__(self, n: int) -> None:
        self.total = [0] * n
        self.nan = np.zeros(n, dtype=bool)
        self.plus = np.zeros(n, dtype=bool)       # some value was +inf
        self.minus = np.zeros(n, dtype=bool)      # some value was -inf

    def add(self, values: np.ndarray, group: np.ndarray) -> None:
        """Add `values` (rows, ...) to the sum of their row's `group` (rows,) in 0..n-1."""
        values = np.asarray(values, dtype=np.float64)
        group = np.broadcast_to(np.asarray(group).reshape((-1,) + (1,) * (values.ndim - 1)), values.shape).ravel()
        values = values.ravel()
        finite = np.isfinite(values)
        if not finite.all():
            odd, where = values[~finite], group[~finite]
            self.nan[where[np.isnan(odd)]] = True
            self.plus[where[odd == np.inf]] = True
            self.minus[where[odd == -np.inf]] = True
            values, group = values[finite], group[finite]
        for lo in range(0, len(values), SLICE):
            self._add_finite(values[lo:lo + SLICE], group[lo:lo + SLICE])

    def _add_finite(self, values: np.ndarray, group: np.ndarray) -> None:
        if not len(values):
            return
        mantissa, exponent = np.frexp(values)
        whole = (mantissa * 2.0 ** 53).astype(np.int64)          # exact: |whole| < 2**53
        high = whole >> HALF_BITS                                 # whole = high * 2**26 + low
        low = whole - (high << HALF_BITS)
        bins = exponent.astype(np.int64) - 53 + UNIT_BITS         # value = whole * 2**(bins - UNIT_BITS)
        first = int(bins.min())
        span = int(bins.max()) - first + 1
        key = group.astype(np.int64) * span + (bins - first)
        size = len(self.total) * span
        highs = np.bincount(key, weights=high, minlength=size)   # integers below 2**53: exact
        lows = np.bincount(key, weights=low, minlength=size)
        for k in np.flatnonzero((highs != 0) | (lows != 0)).tolist():
            g, shift = divmod(k, span)
            self.total[g] += ((int(highs[k]) << HALF_BITS) + int(lows[k])) << (shift + first)

    def merged(self) -> ExactSums:
        """One sum of all n."""
        out = ExactSums(1)
        out.total = [sum(self.total)]
        out.nan[0], out.plus[0], out.minus[0] = self.nan.any(), self.plus.any(), self.minus.any()
        return out

    def mean(self, g: int, count: int) -> float:
        """The sum of group g divided by `count` (> 0), rounded once."""
        if self.nan[g] or (self.plus[g] and self.minus[g]):
            return math.nan
        if self.plus[g] or self.minus[g]:
            return math.inf if self.plus[g] else -math.inf
        try:
            return self.total[g] / (count << UNIT_BITS)           # int / int: correctly rounded
        except OverflowError:
            return math.inf if self.total[g] > 0 else -math.inf


@dataclass
class WindowScores:
    """Per window (0-based here), everything evaluate's report needs, summed over the chunks."""

    windows: int
    horizon: int
    forecasters: tuple[str, ...]
    pairs: list[tuple[float, float]] = field(default_factory=list)     # interval (lo, hi) levels
    losses: list[float] = field(default_factory=list)                  # pinball levels, sorted
    seen_kinds: tuple[str, ...] | None = None                          # None: in-sample unknown

    def __post_init__(self) -> None:
        w = self.windows
        self.rows = np.zeros(w, dtype=np.int64)                   # scored (series, window) pairs
        self.sums = {(name, part): ExactSums(w) for name in self.forecasters
                     for part in ("abs", "squared", "smape", "mase")}
        self.mase_rows = {name: np.zeros(w, dtype=np.int64) for name in self.forecasters}
        self.inside = {pair: np.zeros(w, dtype=np.int64) for pair in self.pairs}
        self.width = {pair: ExactSums(w) for pair in self.pairs}
        self.pinball = {level: ExactSums(w) for level in self.losses}
        self.upto = None if self.seen_kinds is None else np.zeros((len(self.seen_kinds), w), dtype=np.int64)

    @classmethod
    def for_run(cls, windows: int, horizon: int, forecasters: tuple[str, ...], levels, requested,
                seen_kinds: tuple[str, ...] | None) -> WindowScores:
        """`levels`: the run's quantile levels (None: point forecasts); `requested` those scored."""
        if levels is None:
            return cls(windows, horizon, forecasters, seen_kinds=seen_kinds)
        return cls(windows, horizon, forecasters, quantile_pairs(requested), sorted(requested), seen_kinds)

    def add(self, window: np.ndarray, actual: np.ndarray, forecasts: dict[str, np.ndarray], scale: np.ndarray,
            quantiles: np.ndarray | None = None, levels=(), upto: np.ndarray | None = None) -> None:
        """Fold in one chunk's rows: `window` (rows,) 0-based, `actual` and each forecast
        (rows, horizon), `scale` (rows,) MASE scales, `quantiles` (rows, horizon, Q) of `levels`,
        `upto` (kinds, rows) scored points of each row the run saw, cumulative by kind."""
        self.rows += np.bincount(window, minlength=self.windows)
        usable = np.isfinite(scale) & (scale > 0)
        for name, forecast in forecasts.items():
            error = forecast - actual
            denom = np.abs(actual) + np.abs(forecast)
            smape = np.where(denom > 0, 200.0 * np.abs(error) / np.where(denom > 0, denom, 1.0), 0.0)
            self.sums[name, "abs"].add(np.abs(error), window)
            self.sums[name, "squared"].add(error ** 2, window)
            self.sums[name, "smape"].add(smape, window)
            per_row = np.mean(np.abs(error), axis=1)            # (rows,) each row's MAE, as metrics does
            self.sums[name, "mase"].add(per_row[usable] / scale[usable], window[usable])
            self.mase_rows[name] += np.bincount(window[usable], minlength=self.windows)
        if quantiles is not None:
            column = {level: quantiles[..., k] for k, level in enumerate(levels)}
            for lo, hi in self.pairs:
                inside = ((actual >= column[lo]) & (actual <= column[hi])).sum(axis=1)
                self.inside[lo, hi] += np.bincount(window, weights=inside, minlength=self.windows).astype(np.int64)
                self.width[lo, hi].add(column[hi] - column[lo], window)
            for level in self.losses:
                error = actual - column[level]
                self.pinball[level].add(np.maximum(level * error, (level - 1.0) * error), window)
        if upto is not None:
            for k, row in enumerate(upto):
                self.upto[k] += np.bincount(window, weights=row, minlength=self.windows).astype(np.int64)

    def overall(self) -> WindowScores:
        """The same sums over every window, as one window."""
        out = WindowScores(1, self.horizon, self.forecasters, self.pairs, self.losses, self.seen_kinds)
        out.rows = self.rows.sum(keepdims=True)
        out.sums = {key: s.merged() for key, s in self.sums.items()}
        out.mase_rows = {name: n.sum(keepdims=True) for name, n in self.mase_rows.items()}
        out.inside = {pair: n.sum(keepdims=True) for pair, n in self.inside.items()}
        out.width = {pair: s.merged() for pair, s in self.width.items()}
        out.pinball = {level: s.merged() for level, s in self.pinball.items()}
        out.upto = None if self.upto is None else self.upto.sum(axis=1, keepdims=True)
        return out

    def metrics(self, w: int) -> dict[str, dict[str, float]] | None:
        """metrics.point_metrics of each forecaster over window w's rows (None: no rows)."""
        rows = int(self.rows[w])
        if not rows:
            return None
        points = rows * self.horizon
        out = {}
        for name in self.forecasters:
            n = int(self.mase_rows[name][w])
            out[name] = {"mae": self.sums[name, "abs"].mean(w, points),
                         "rmse": math.sqrt(self.sums[name, "squared"].mean(w, points)),
                         "smape": self.sums[name, "smape"].mean(w, points),
                         "mase": self.sums[name, "mase"].mean(w, n) if n else math.nan}
        return out

    def quantile_scores(self, w: int) -> dict[str, dict | None]:
        """metrics.quantile_metrics over window w's rows: {"intervals", "quantile_loss"} (None: no rows)."""
        rows = int(self.rows[w])
        if not rows:
            return {"intervals": None, "quantile_loss": None}
        points = rows * self.horizon
        intervals = {pair_name(lo, hi): {"nominal": round(hi - lo, 12),
                                         "coverage": int(self.inside[lo, hi][w]) / points,
                                         "width": self.width[lo, hi].mean(w, points)}
                     for lo, hi in self.pairs}
        losses = {f"{level:g}": self.pinball[level].mean(w, points) for level in self.losses}
        return {"intervals": intervals, "quantile_loss": losses}

    def in_sample(self, w: int) -> dict[str, int] | None:
        """{"points", "of", "trained", "early_stopping", "calibration"}: window w's scored points the
        run saw, by what it did with them (None: unknown, an old checkpoint)."""
        if self.upto is None:
            return None
        upto = [int(n) for n in self.upto[:, w]]
        out = {"points": upto[-1], "of": int(self.rows[w]) * self.horizon}
        out.update({kind: int(n) for kind, n in zip(self.seen_kinds, np.diff([0, *upto]))})
        return out
