"""Regenerate the bundled sample CSVs (deterministic): python sample_data/make_samples.py

sales_monthly.csv      long format (unique_id, ds, y): 12 stores, monthly; one store opened late,
                       so its history is shorter than lookback + horizon (it is padded, not dropped).
load_hourly_wide.csv   wide format (ds, feeder_a, feeder_b, feeder_c): hourly load, 6 weeks.
"""

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def sales_monthly(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for k in range(12):
        months = 36 if k == 11 else 96
        ds = pd.date_range(end="2024-12-01", periods=months, freq="MS")
        t = np.arange(months)
        level = rng.uniform(80, 2000)
        trend = rng.uniform(-0.002, 0.01) * level * t
        season = rng.uniform(0.05, 0.3) * level * np.sin(2 * np.pi * (t + rng.integers(12)) / 12)
        december = np.where(ds.month == 12, rng.uniform(0.1, 0.4) * level, 0.0)
        noise = rng.normal(0, 0.04 * level, months)
        y = np.maximum(level + trend + season + december + noise, 0.0)
        rows.append(pd.DataFrame({"unique_id": f"store_{k + 1:02d}", "ds": ds.strftime("%Y-%m-%d"),
                                  "y": np.round(y, 1)}))
    return pd.concat(rows, ignore_index=True)


def load_hourly(rng: np.random.Generator) -> pd.DataFrame:
    ds = pd.date_range("2024-06-03 00:00", periods=24 * 7 * 6, freq="h")
    hour, weekday = ds.hour.to_numpy(), ds.day_of_week.to_numpy()
    out = {"ds": ds.strftime("%Y-%m-%d %H:%M")}
    for name, base in (("feeder_a", 420.0), ("feeder_b", 260.0), ("feeder_c", 90.0)):
        daily = np.sin(2 * np.pi * (hour - 7) / 24) + 0.5 * np.sin(4 * np.pi * (hour - 3) / 24)
        weekend = np.where(weekday >= 5, rng.uniform(-0.25, -0.1), 0.0)
        weather = np.convolve(rng.normal(0, 1, len(ds)), np.ones(48) / 48, mode="same")
        y = base * (1 + 0.3 * daily + weekend + 0.15 * weather) + rng.normal(0, 0.02 * base, len(ds))
        out[name] = np.round(y, 2)
    return pd.DataFrame(out)


if __name__ == "__main__":
    rng = np.random.default_rng(20241124)
    sales_monthly(rng).to_csv(HERE / "sales_monthly.csv", index=False)
    load_hourly(rng).to_csv(HERE / "load_hourly_wide.csv", index=False)
