"""pyarrow's CSV reader (arrowcsv, used with pandas 3): the same frame as pandas' reader with
csvread's options, whole and in parts, or declined (and then pandas reads it); rows cut only
between quotes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SALES

from lstmcast import arrowcsv, csvread, stream

pytest.importorskip("pyarrow.csv")
pytestmark = pytest.mark.usefixtures("one_thread")

TEXT, CATEGORIES = ("unique_id",), ("unique_id", "ds")

# Files both readers read alike, with pandas 2 and 3 (the numbers have few digits: pandas 2's
# parser does not always round long ones to the nearest float64; pandas 3's and pyarrow's do).
SAME = {
    "plain": "unique_id,ds,y\na,2020-01-01,1.5\na,2020-01-02,2\nb,2020-01-01,-3e2\n",
    "ids as written": "unique_id,ds,y\n007,2020-01-01,1\nNA,2020-01-01,2\n ,2020-01-01,3\n, 2020-01-01,4\n",
    "missing cells": "unique_id,ds,y\na,2020-01-01,NA\na,NA,\na,2020-01-03,nan\na, NA,1\n",
    "quoted": 'unique_id,ds,y\n"a,b","2020-01-01","1.5"\n"NA",2020-01-02,"NA"\n',
    "integers and other columns": "unique_id,ds,y,price,note\na,2020-01-01,1,10,x\na,2020-01-02,2,,NA\n"
                                  "a,2020-01-03,3,12, yes\n",
    "numbers with spaces": "unique_id,ds,y\na,2020-01-01,1.5 \na,2020-01-02,\t2\n",
    "infinities": "unique_id,ds,y\na,2020-01-01,inf\na,2020-01-02,-Infinity\n",
    "semicolons": "sep=;\nunique_id;ds;y\na;2020-01-01;1,5\n",
    "text cells that are numbers": "unique_id,ds,y,code\na,2020-01-01,1,x1\na,2020-01-02,2,7\n",
    "windows lines": "unique_id,ds,y\r\na,2020-01-01,1\r\na,2020-01-02,2\r\n",
    "no line end": "unique_id,ds,y\na,2020-01-01,1\na,2020-01-02,2",
    "text after numbers": "unique_id,ds,y\na,2020-01-01,1\na,2020-01-02,x\n",
    "missing after spaces": "unique_id,ds,y,price\na,2020-01-01, NA,  \n",
    "blank lines": "unique_id,ds,y\na,2020-01-01,1\n\na,2020-01-02,2\n",
    "a line break in quotes": 'unique_id,ds,y,note\na,2020-01-01,1,"two\nlines"\n',
}

# What pyarrow would read otherwise than pandas: declined, so pandas reads them.
DECLINED = {
    "space then quote": 'unique_id,ds,y\na, "2020-01-01",1\n',
    "booleans": "unique_id,ds,y,promo\na,2020-01-01,1,true\na,2020-01-02,2,False\n",
    "hexadecimal": "unique_id,ds,y\na,2020-01-01,0x10\n",
    "a missing cell after spaces among numbers": "unique_id,ds,y\na,2020-01-01, NA\na,2020-01-02,3\n",
    "a NaN that is not missing": "unique_id,ds,y\na,2020-01-01,NAN\n",
    "a short row": "unique_id,ds,y\na,2020-01-01\na,2020-01-02,2\n",
    "not UTF-8": b"unique_id,ds,y\n\xff,2020-01-01,1\n",
    "a quote in the header": 'unique_id,"ds",y\na,2020-01-01,1\n',
}


@pytest.fixture
def taken(monkeypatch) -> list:
    """What each arrowcsv.read returned (None: declined)."""
    results = []
    real = arrowcsv.read
    monkeypatch.setattr(arrowcsv, "read", lambda *a, **k: results.append(real(*a, **k)) or results[-1])
    return results


def write(tmp_path, name: str, content) -> object:
    path = tmp_path / f"{name.replace(' ', '_')}.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def read(path, arrow: bool, monkeypatch) -> pd.DataFrame:
    monkeypatch.setattr(csvread, "ARROW_CSV", arrow)
    return csvread._read_table(path, TEXT, categories=CATEGORIES).frame


def assert_same(a: pd.DataFrame, b: pd.DataFrame, floats: bool = True) -> None:
    """Equal frames; `floats`: a's number columns are float64 (pyarrow's; pandas' may be int64)."""
    assert list(a.columns) == list(b.columns)
    assert list(a.index) == list(b.index)
    for name in a.columns:
        x, y = a[name], b[name]
        if isinstance(x.dtype, pd.CategoricalDtype) or isinstance(y.dtype, pd.CategoricalDtype):
            assert list(x.cat.categories) == list(y.cat.categories), name
            assert np.array_equal(x.cat.codes.to_numpy(), y.cat.codes.to_numpy()), name
        elif pd.api.types.is_numeric_dtype(y.dtype):
            assert x.dtype == np.float64 or not floats, name
            assert np.array_equal(x.to_numpy(dtype=float), y.to_numpy(dtype=float), equal_nan=True), name
        else:
            assert list(x.astype(object).where(x.notna(), None)) == list(y.astype(object).where(y.notna(), None)), name


@pytest.mark.parametrize("name", sorted(SAME))
def test_pyarrow_reads_what_pandas_reads(tmp_path, monkeypatch, taken, name):
    path = write(tmp_path, name, SAME[name])
    fast = read(path, True, monkeypatch)
    assert taken and taken[-1] is not None, "pyarrow declined"
    assert_same(fast, read(path, False, monkeypatch))


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_what_pyarrow_reads_otherwise_is_left_to_pandas(tmp_path, monkeypatch, taken, name):
    path = write(tmp_path, name, DECLINED[name])
    monkeypatch.setattr(csvread, "ARROW_CSV", True)
    try:
        fast = read(path, True, monkeypatch)
    except csvread.LstmcastError as exc:   # pandas' own verdict, then
        with pytest.raises(csvread.LstmcastError) as again:
            read(path, False, monkeypatch)
        assert str(again.value) == str(exc)
    else:
        assert_same(fast, read(path, False, monkeypatch), floats=False)
    assert all(t is None for t in taken)   # declined by arrowcsv.read, or before it


def test_large_numbers_read_as_pandas_3_reads_them(tmp_path, monkeypatch, taken):
    """Shortest round-trip texts (17 digits): pyarrow gives the nearest float64, as Python does."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1e3, 500), rng.lognormal(0, 8, 500)])
    lines = "".join(f"a,{t},{float(v)!r}\n" for t, v in zip(pd.date_range("2000-01-01", periods=len(values), freq="D")
                                                     .strftime("%Y-%m-%d"), values))
    path = write(tmp_path, "digits", "unique_id,ds,y\n" + lines)
    assert np.array_equal(read(path, True, monkeypatch)["y"].to_numpy(), values)
    assert len(taken) == 1 and taken[0] is not None   # read by pyarrow


@pytest.mark.parametrize("size", [40, 97, 1 << 20])
def test_parts_read_like_the_whole_file(tmp_path, monkeypatch, size):
    """Parts of `size` bytes (cut between rows, never inside quotes) give the rows of the whole read,
    numbered alike; a part pyarrow declines is read by pandas."""
    content = (SAME["quoted"] + 'c,2020-01-03,"4"\n"d\ne",2020-01-04,5\n' + "f,2020-01-05,6\n" * 5
               + "g,2020-01-06,x\n")
    path = write(tmp_path, "parts", content)
    monkeypatch.setattr(stream, "READ_BYTES", size)
    monkeypatch.setattr(csvread, "ARROW_CSV", True)
    parts = list(stream.batches(path, TEXT, 4, CATEGORIES))
    assert all(len(p.frame) <= 4 for p in parts)
    rows = pd.concat([p.frame.astype(object) for p in parts])
    monkeypatch.setattr(csvread, "ARROW_CSV", False)
    whole = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(rows.index) == list(range(len(whole)))
    assert [str(i).strip() for i in rows["unique_id"]] == list(whole["unique_id"])
    def number(v):
        return v if v == "x" else float("nan") if v in csvread.NA_TEXT else float(v)
    assert np.array_equal(np.array([number(v) for v in rows["y"]], dtype=object).astype(str),
                          np.array([number(v) for v in whole["y"]], dtype=object).astype(str))


def test_row_end_skips_breaks_inside_quotes():
    assert arrowcsv.row_end(b"a,1\nb,2\nc") == 8
    assert arrowcsv.row_end(b'a,"x\ny"\nb,"p\nq') == 8
    assert arrowcsv.row_end(b'a,"x""\n""y"\nb') == 12
    assert arrowcsv.row_end(b'a,"x\ny') == -1
    assert arrowcsv.row_end(b"no break") == -1


def test_the_sample_data_is_read_by_pyarrow(monkeypatch, taken):
    assert_same(read(SALES, True, monkeypatch), read(SALES, False, monkeypatch))
    assert len(taken) == 1 and taken[0] is not None


CELLS = ["1", "2.5", "-3e2", "", "NA", " NA", "nan", "NAN", "+nan", "inf", "x", " x", "\t", "\t1", "1 ", " 2",
         '"3"', ' "a"', "True", "false", "0x1", "1e400", "007", "  ", "N/A", "null", '"a,b"', '""', "é"]


@pytest.mark.skipif(not csvread.ARROW_TEXT, reason="with pandas 2 pandas parses every CSV (csvread.ARROW_CSV)")
def test_random_files_read_alike(tmp_path, monkeypatch, taken):
    """300 small files of awkward cells: pyarrow's frame, where it reads one, is pandas' frame, and
    where either raises, both raise the same error."""
    rng = np.random.default_rng(0)
    for k in range(300):
        extra = int(rng.integers(0, 3))
        lines = ["unique_id,ds,y" + "".join(f",c{j}" for j in range(extra))]
        for _ in range(int(rng.integers(1, 7))):
            lines.append(",".join([str(rng.choice(["a", "b", " c", "NA", '"d"', ""])),
                                   str(rng.choice(["2020-01-01", " 2020-01-02", "NA", "2020-01-03 ", '"2020-01-04"']))]
                                  + [str(rng.choice(CELLS)) for _ in range(1 + extra)]))
        path = write(tmp_path, f"random{k}", "\n".join(lines) + "\n")
        try:
            fast = read(path, True, monkeypatch)
        except csvread.LstmcastError as exc:
            with pytest.raises(csvread.LstmcastError) as again:
                read(path, False, monkeypatch)
            assert str(again.value) == str(exc)
            continue
        assert_same(fast, read(path, False, monkeypatch), floats=False)
    assert sum(t is not None for t in taken) >= 60   # pyarrow read a good share of them


def test_columns_are_typed_on_the_first_rows(tmp_path, monkeypatch, taken):
    """The columns' types come from the first rows (PROBE_BYTES, cut at a row's end); a later cell
    that does not fit them hands the file to pandas."""
    monkeypatch.setattr(arrowcsv, "PROBE_BYTES", 40)
    rows = "".join(f"a,2020-01-{d:02d},{d}.5\n" for d in range(1, 20))
    clean = write(tmp_path, "clean", "unique_id,ds,y\n" + rows)
    assert_same(read(clean, True, monkeypatch), read(clean, False, monkeypatch))
    assert taken[-1] is not None
    later = write(tmp_path, "later", "unique_id,ds,y\n" + rows + "a,2020-01-20,x\n")
    assert_same(read(later, True, monkeypatch), read(later, False, monkeypatch), floats=False)
    assert taken[-1] is None
