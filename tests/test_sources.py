"""Where series come from: a CSV, a Parquet file, a folder of Parquet files, or a pandas
DataFrame give the same SeriesSet; messages name rows (Parquet, frames) or lines (CSV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lstmcast.data import read_series
from lstmcast.errors import LstmcastError

pytest.importorskip("pyarrow")  # the dev extra installs it; the 'parquet' extra for users

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "sales_monthly.csv"


def same(a, b) -> None:
    assert a.ids == b.ids and a.freq == b.freq and a.columns == b.columns
    assert [str(s) for s in a.starts] == [str(s) for s in b.starts]
    assert all(np.array_equal(x, y) for x, y in zip(a.values, b.values))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE)


def test_frame_parquet_and_folder_read_as_the_csv(frame, tmp_path):
    csv = read_series(SAMPLE)
    same(read_series(frame), csv)
    frame.to_parquet(tmp_path / "one.parquet")
    same(read_series(tmp_path / "one.parquet"), csv)
    folder = tmp_path / "parts"
    folder.mkdir()
    frame.iloc[:500].to_parquet(folder / "a.parquet")
    frame.iloc[500:].to_parquet(folder / "b.pq")
    same(read_series(folder), csv)


def test_typed_columns_read_as_text_would(frame, tmp_path):
    """Parquet keeps types: timestamps as datetime64, ids as integers; both read as their text."""
    typed = frame.assign(ds=pd.to_datetime(frame["ds"]),
                         unique_id=frame["unique_id"].str.replace("store_", "").astype(int))
    typed.to_parquet(tmp_path / "typed.parquet")
    series = read_series(tmp_path / "typed.parquet")
    assert series.ids[:2] == ["1", "2"] and series.freq == "MS"
    same(series, read_series(typed))


def test_only_text_becomes_categories(frame, tmp_path):
    """The id and time columns are read as Categoricals of their text (a CSV's parsed straight into
    codes); a typed timestamp column (here with its zone) is read as it is, not as text."""
    from lstmcast.columnar import FrameName
    from lstmcast.csvread import _read_table
    zoned = frame.assign(ds=pd.to_datetime(frame["ds"]).dt.tz_localize("Europe/Paris"))
    read = _read_table(FrameName("zoned"), ("unique_id",), zoned, categories=("unique_id", "ds")).frame
    assert read["ds"].dtype == zoned["ds"].dtype and isinstance(read["unique_id"].dtype, pd.CategoricalDtype)
    frame.to_csv(tmp_path / "text.csv", index=False)
    read = _read_table(tmp_path / "text.csv", ("unique_id",), categories=("unique_id", "ds")).frame
    assert all(isinstance(read[c].dtype, pd.CategoricalDtype) for c in ("unique_id", "ds"))
    assert read["ds"].astype(str).tolist() == frame["ds"].astype(str).tolist()
    assert read_series(zoned).starts[0] == pd.Timestamp("2017-01-01", tz="Europe/Paris")


def test_parquet_text_columns_are_read_as_dictionaries(frame, tmp_path):
    """Parquet ids and text timestamps come as Categoricals straight from pyarrow's dictionaries,
    across the files of a folder too (the union of their categories, in order of first use)."""
    from lstmcast.csvread import _read_table
    folder = tmp_path / "parts"
    folder.mkdir()
    text = frame.assign(ds=frame["ds"].astype(str))
    text.iloc[:500].to_parquet(folder / "a.parquet")
    text.iloc[500:].to_parquet(folder / "b.parquet")
    read = _read_table(folder, ("unique_id",), categories=("unique_id", "ds")).frame
    for name in ("unique_id", "ds"):
        assert isinstance(read[name].dtype, pd.CategoricalDtype), name
        assert read[name].astype(str).tolist() == text[name].tolist()
    numbered = frame.assign(unique_id=frame["unique_id"].str.replace("store_", "").astype(int))
    numbered.to_parquet(tmp_path / "numbered.parquet")
    assert read_series(tmp_path / "numbered.parquet").ids[:2] == ["1", "2"]


def test_the_callers_frame_is_not_changed(frame):
    before = frame.copy()
    padded = frame.rename(columns={"y": " y "})
    read_series(padded, target=["y"])
    pd.testing.assert_frame_equal(frame, before)
    assert list(padded.columns) == ["unique_id", "ds", " y "]


def test_messages_name_rows_for_frames_and_parquet(frame, tmp_path):
    bad = frame.copy()
    bad.loc[5, "y"] = np.inf
    with pytest.raises(LstmcastError, match=r"^batch 7 row 6, column 'y': 'inf' is not a finite number"):
        read_series(bad, name="batch 7")
    dup = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    dup.to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(LstmcastError, match=r"dup.parquet row 1093: duplicate row for series 'store_01' "
                                            r"at 2017-04-01 00:00:00 \(first at row 4\)"):
        read_series(tmp_path / "dup.parquet")


def test_csv_messages_still_name_lines(frame, tmp_path):
    dup = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(LstmcastError, match=r"dup.csv line 1094: duplicate row .*\(first at line 5\)"):
        read_series(tmp_path / "dup.csv")


def test_folders_that_cannot_be_one_table(frame, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LstmcastError, match="a folder with no .parquet files"):
        read_series(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frame.to_parquet(mixed / "a.parquet")
    frame.rename(columns={"y": "sales"}).to_parquet(mixed / "b.parquet")
    with pytest.raises(LstmcastError, match=r"b.parquet: its columns differ from a.parquet's"):
        read_series(mixed)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(LstmcastError, match=r"junk.parquet: not a readable Parquet file"):
        read_series(tmp_path / "junk.parquet")
