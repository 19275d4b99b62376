"""Classical forecasts, for the ensemble to combine with its neural members: the Theta method and
damped-trend exponential smoothing, each on seasonally adjusted data.

Vectorised over series: histories are a (series, points) array aligned on their last point, NaN
before a series starts; one Python loop over time, none over series. The methods follow
Hyndman & Billah (2003) / forecast::thetaf for Theta (SES with its initial level fitted by least
squares for each smoothing weight on a grid, drift half the OLS slope) and Gardner's damped trend
for ES (grid over alpha, beta, phi), after a classical multiplicative decomposition of the series
whose lag-m autocorrelation passes the 90% test (as thetaf does). Deterministic: no random
numbers, the same numbers on every machine up to float64 rounding.
"""

from __future__ import annotations

import itertools

import numpy as np

from .keys import CLASSICAL

METHODS = CLASSICAL   # declared with model.classical (keys.py)

SEASONAL_Z = 1.645        # one-sided 95% normal quantile: thetaf's 90% two-sided seasonality test
THETA_ALPHAS = np.r_[np.linspace(0.02, 0.98, 25), 0.995]
ES_ALPHAS = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99])
ES_BETAS = np.array([0.0, 0.01, 0.05, 0.1, 0.2])
ES_PHIS = np.array([0.8, 0.9, 0.95, 0.98, 1.0])
ES_BLOCK = 128           # series per pass of the ES grid search (their (series, grid) arrays fit in cache)


def _rowsum(a: np.ndarray) -> np.ndarray:
    """Each row's sum, added left to right (a running sum: numpy's sum may group a row's terms
    differently with the array's shape, and a series' forecast must not depend on its neighbours)."""
    return np.cumsum(a, axis=1)[:, -1] if a.shape[1] else np.zeros(len(a))


def _rowmean(a: np.ndarray) -> np.ndarray:
    """Each row's mean over its finite entries (NaN where none)."""
    ok = np.isfinite(a)
    n = _rowsum(ok.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return _rowsum(np.where(ok, a, 0.0)) / n


def aligned(histories: list[np.ndarray], points: int | None = None) -> np.ndarray:
    """Histories (each 1-d) -> (series, L) float64, right-aligned, NaN-padded on the left; the last
    `points` of each when given."""
    tails = [np.asarray(x, dtype=np.float64)[-points:] if points else np.asarray(x, dtype=np.float64)
             for x in histories]
    # A fixed width when `points` is given: each row's arithmetic is then the same whichever other
    # series share the array (predict's chunks give the same bytes).
    width = points if points else max((len(x) for x in tails), default=0)
    out = np.full((len(tails), width), np.nan)
    lengths = np.fromiter((len(x) for x in tails), dtype=np.int64, count=len(tails))
    if len(tails):
        rows = np.repeat(np.arange(len(tails)), lengths)
        cols = np.concatenate([np.arange(width - n, width) for n in lengths]) if width else np.zeros(0, int)
        out[rows, cols] = np.concatenate(tails) if width else 0.0
    return out


def seasonal(x: np.ndarray, m: int) -> np.ndarray:
    """Which rows pass thetaf's seasonality test: positive, at least 3 seasons, and |acf(m)| above
    1.645 x its standard error (Bartlett)."""
    valid = np.isfinite(x)
    n = valid.sum(axis=1)
    if m <= 1 or x.shape[1] <= m:
        return np.zeros(len(x), dtype=bool)
    mean = np.where(n > 0, _rowsum(np.where(valid, x, 0.0)) / np.maximum(n, 1), 0.0)
    z = np.where(valid, x - mean[:, None], 0.0)
    denom = _rowsum(z * z)
    r = np.stack([_rowsum(z[:, :-k] * z[:, k:]) for k in range(1, m + 1)], axis=1)
    r = r / np.where(denom > 0, denom, np.inf)[:, None]
    se = np.sqrt((1 + 2 * _rowsum(r[:, :-1] ** 2)) / np.maximum(n, 1))
    positive = np.all(np.where(valid, x > 0, True), axis=1)
    return positive & (n >= 3 * m) & (denom > 0) & (np.abs(r[:, -1]) > SEASONAL_Z * se)


def seasonal_indices(x: np.ndarray, m: int) -> np.ndarray:
    """Classical multiplicative decomposition: (series, m) indices by phase counted from the end
    (phase 0 is the first forecast step), mean 1; ones where the test fails."""
    s, width = x.shape
    out = np.ones((s, m))
    test = seasonal(x, m)
    if not test.any():
        return out
    xs = x[test]
    weights = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    k = len(weights)
    # Centred moving average over each row's valid span (NaN where the window leaves it).
    cma = np.full(xs.shape, np.nan)
    if width >= k:   # term by term (not a BLAS product, whose rounding may depend on the row count)
        span = width - k + 1
        total = np.zeros((len(xs), span))
        for j, weight in enumerate(weights):
            total += weight * xs[:, j: j + span]
        cma[:, (k - 1) // 2: (k - 1) // 2 + span] = total
    ratio = xs / cma
    phase = (np.arange(width) - width) % m
    idx = np.stack([_rowmean(ratio[:, phase == p]) for p in range(m)], axis=1)
    idx = idx / (_rowsum(idx) / m)[:, None]
    out[test] = idx
    return out


def _deseasonalised(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    idx = seasonal_indices(x, m) if m > 1 else np.ones((len(x), 1))
    period = max(m, 1)
    phase = (np.arange(x.shape[1]) - x.shape[1]) % period
    return x / idx[:, phase], idx


def _reseasonalised(forecast: np.ndarray, idx: np.ndarray) -> np.ndarray:
    phase = np.arange(forecast.shape[1]) % idx.shape[1]
    return forecast * idx[:, phase]


def theta(x: np.ndarray, h: int, m: int) -> np.ndarray:
    """The Theta method (theta = 2): SES of the seasonally adjusted series plus half its linear
    trend, reseasonalised. x (series, L) right-aligned -> (series, h)."""
    y, idx = _deseasonalised(x, m)
    valid = np.isfinite(y)
    n = valid.sum(axis=1)
    # SES with initial level 0, per alpha: level_t = c_t, and the level's weight on l0 is w_t.
    a = THETA_ALPHAS[None, :]
    c = np.zeros((len(y), len(THETA_ALPHAS)))
    w = np.ones_like(c)
    sxy, sxx = np.zeros_like(c), np.zeros_like(c)     # least squares for l0: sum w*(y-c), sum w^2
    syy = np.zeros_like(c)
    for t in range(y.shape[1]):
        on = valid[:, t][:, None]
        yt = np.where(on, y[:, t][:, None], 0.0)
        e_c = yt - c                                        # one-step error is e_c - w * l0
        sxy += np.where(on, w * e_c, 0.0)
        sxx += np.where(on, w * w, 0.0)
        syy += np.where(on, e_c * e_c, 0.0)
        c = np.where(on, c + a * e_c, c)
        w = np.where(on, w * (1 - a), w)
    l0 = sxy / np.where(sxx > 0, sxx, 1.0)
    sse = syy - 2 * l0 * sxy + l0 * l0 * sxx
    best = np.argmin(sse, axis=1)
    rows = np.arange(len(y))
    level = c[rows, best] + w[rows, best] * l0[rows, best]
    alpha = THETA_ALPHAS[best]
    # Drift: half the OLS slope of the adjusted series against time over its valid span.
    t = np.where(valid, np.arange(y.shape[1])[None, :], np.nan)
    tm, ym = _rowmean(t), _rowmean(y)
    dt = np.where(valid, t - tm[:, None], 0.0)
    cov = _rowsum(dt * np.where(valid, y - ym[:, None], 0.0))
    var = _rowsum(dt * dt)
    slope = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 0.0)
    steps = np.arange(h)[None, :] + ((1 - (1 - alpha) ** n) / alpha)[:, None]
    forecast = level[:, None] + slope[:, None] / 2 * steps
    return _reseasonalised(forecast, idx)


def damped(x: np.ndarray, h: int, m: int) -> np.ndarray:
    """Damped-trend exponential smoothing of the seasonally adjusted series (grid over alpha, beta,
    phi by in-sample one-step squared error), reseasonalised. x (series, L) -> (series, h)."""
    y, idx = _deseasonalised(x, m)
    valid = np.isfinite(y)
    # beta 0 keeps the trend at 0, where phi changes nothing: those settings once, with phi 1.
    grid = np.array([g for g in itertools.product(ES_ALPHAS, ES_BETAS, ES_PHIS) if g[1] > 0 or g[2] == 1.0])
    n = valid.sum(axis=1)
    first = np.argmax(valid, axis=1)
    rows = np.arange(len(y))
    y0 = y[rows, first]
    later = np.minimum(first + np.minimum(np.maximum(m, 1), np.maximum(n - 1, 1)), y.shape[1] - 1)
    span = np.maximum(later - first, 1)
    trend0 = np.where(n > 1, (y[rows, later] - y0) / span, 0.0)
    level, trend = np.empty(len(y)), np.empty(len(y))
    best = np.empty(len(y), dtype=np.int64)
    for lo in range(0, len(y), ES_BLOCK):   # a block of series at a time: its arrays stay in cache
        block = slice(lo, lo + ES_BLOCK)
        level[block], trend[block], best[block] = _smooth(y[block], valid[block], first[block], y0[block],
                                                          trend0[block], grid)
    damp = np.cumsum(grid[best, 2][:, None] ** np.arange(1, h + 1)[None, :], axis=1)
    forecast = level[:, None] + damp * trend[:, None]
    return _reseasonalised(forecast, idx)


def _smooth(y, valid, first, y0, trend0, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Damped-trend ES of each row of `y` for every (alpha, beta, phi) of `grid`: the final level
    and trend of each row's best-fitting setting, and its index."""
    a, b, p = (grid[:, i][None, :] for i in range(3))
    ab = a * b
    level = np.repeat(y0[:, None], len(grid), axis=1)
    trend = trend0[:, None] * (b > 0)
    sse = np.zeros_like(level)
    f, e, tmp = np.empty_like(level), np.empty_like(level), np.empty_like(level)
    for t in range(int(first.min(initial=y.shape[1])) + 1, y.shape[1]):   # before: no row has started
        on = (valid[:, t] & (t > first))[:, None]
        np.multiply(p, trend, out=f)
        f += level                                           # f = level + phi * trend
        np.subtract(y[:, t][:, None], f, out=e)
        np.copyto(e, 0.0, where=~on)                         # e = y - f where the row has started, else 0
        np.multiply(e, e, out=tmp)
        sse += tmp
        np.multiply(a, e, out=tmp)
        tmp += f                                             # level' = f + alpha * e
        np.copyto(level, tmp, where=on)
        np.multiply(p, trend, out=tmp)
        tmp += ab * e                                        # trend' = phi * trend + alpha * beta * e
        np.copyto(trend, tmp, where=on)
    best = np.argmin(sse, axis=1)
    rows = np.arange(len(y))
    return level[rows, best], trend[rows, best], best


def forecast(method: str, histories: list[np.ndarray] | np.ndarray, h: int, m: int,
             points: int | None = None) -> np.ndarray:
    """(series, h) forecasts of `method` (one of METHODS) from each history's last `points`."""
    x = histories if isinstance(histories, np.ndarray) else aligned(histories, points)
    if method == "theta":
        return theta(x, h, m)
    if method == "ets":
        return damped(x, h, m)
    raise ValueError(f"unknown classical method {method!r}")


def history_points(input_length: int, season: int) -> int:
    """How many of a series' last points the classical methods read: ten seasons, at least 120
    points and the network's own input length (a bounded cost per series, as the network's)."""
    return max(input_length, 10 * max(season, 1), 120)


def forecasts(methods, histories: list[np.ndarray], h: int, m: int, points: int) -> list[np.ndarray]:
    """One (series, h) array per method, from each history's last `points` points."""
    x = aligned(histories, points)
    return [forecast(method, x, h, m) for method in methods]


def combine(neural: np.ndarray, classical: list[np.ndarray]) -> np.ndarray:
    """The median over the neural forecast and the classical ones (of two: their mean), per series and
    step; a classical forecast that is not finite (a history it cannot fit) is left out of that point's
    median."""
    if not classical:
        return neural
    stack = np.stack([neural, *classical])
    stack[1:][~np.isfinite(stack[1:])] = np.nan
    return np.nanmedian(stack, axis=0)
