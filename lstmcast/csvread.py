"""Reading a CSV into typed columns: the dialect (delimiter, Excel's `sep=` line), ids kept as
text byte for byte, which columns are id / time / target, numbers and covariates cell by cell,
and timestamps (day/month order, UTC offsets). data.py builds the series from these. Parquet,
NetCDF and DataFrame sources are read in columnar.py into the same shape; _read_table dispatches.

Every problem a user can fix is a LstmcastError naming the file, the line (1-based, the header
is line 1), the column and what to do. Nothing here writes files.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import timegrid
from .columnar import (  # noqa: F401  (re-exported: data.py, stream.py and others import them from here)
    NA_TEXT,
    NETCDF_SUFFIXES,
    PARQUET_SUFFIXES,
    FrameName,
    _frame_copy,
    _parquet_files,
    _read_netcdf,
    _read_parquet,
    by_rows,
)
from .errors import LstmcastError

DEFAULT_ID, DEFAULT_TIME, DEFAULT_TARGET = "unique_id", "ds", "y"

# pandas 3 (with pyarrow) reads text as pyarrow strings: faster to parse than Categoricals (1.5 s
# against 2.6 s for 12M rows), and fast to factorize, so there the id and time columns are
# parsed as text and made Categoricals after (_stripped). pandas 2 makes a Python string per cell:
# there parsing them straight into Categoricals is the faster (1.9 s against 3.1 s).
ARROW_TEXT = getattr(pd.Series(["a"]).dtype, "storage", None) == "pyarrow"
# pandas 3 (whose text is pyarrow's) reads numbers as pyarrow does: there pyarrow's multithreaded
# CSV reader reads what it can read as pandas would (arrowcsv.py), about twice as fast.
ARROW_CSV = ARROW_TEXT


@dataclass(frozen=True)
class Columns:
    """How the user's file maps onto (series id, time, value)."""

    id_col: str            # name of the id column in outputs ("unique_id" when the file has none)
    time_col: str
    targets: tuple[str, ...]
    id_in_input: bool      # False: one series per target column (single-series or wide file)

    def to_dict(self) -> dict:
        return {"id_col": self.id_col, "time_col": self.time_col, "targets": list(self.targets),
                "id_in_input": self.id_in_input}

    @classmethod
    def from_dict(cls, d: dict) -> Columns:
        return cls(d["id_col"], d["time_col"], tuple(d["targets"]), bool(d["id_in_input"]))


def _line(index: int) -> int:
    """DataFrame row index -> 1-based line number in the file (line 1 is the header)."""
    return int(index) + 2


def _at(path, index: int) -> str:
    """Where a row is, for a message: 'sales.csv line 12' or 'sales.parquet row 11'."""
    return f"{path} row {int(index) + 1}" if by_rows(path) else f"{path} line {_line(index)}"


def _other(path, index: int) -> str:
    """The same place without the file's name: 'line 12' or 'row 11'."""
    return _at(path, index)[len(str(path)) + 1:]


_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class Table:
    """A CSV as read: numbers as numbers, the `text` columns (ids) as written, every other cell
    in NA_TEXT missing. `skipped`: lines above the header (Excel's `sep=`); the index starts
    there, so _line(index) stays the file's line number."""

    frame: pd.DataFrame
    skipped: int = 0


def _dialect(path: Path) -> tuple[str, int]:
    """(delimiter, lines to skip): Excel's `sep=;` first line names it; else the header's most
    frequent delimiter among , ; tab |."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
    if first.strip().lower().startswith("sep=") and len(first.strip()) == 5:
        return first.strip()[4], 1
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return (best if counts[best] else ","), 0


def _read_table(path, text: tuple[str, ...] = (), frame: pd.DataFrame | None = None,
                categories: tuple[str, ...] = ()) -> Table:
    """Read a CSV, a Parquet file or a folder of Parquet files (by suffix), or take `frame` (a
    pandas DataFrame, `path` its FrameName); the columns named in `text` (the id column) are kept
    as text, byte for byte; those in `categories` become Categoricals (_stripped; a CSV's are
    parsed straight into codes: its text is held once per distinct value, not once per row)."""
    if frame is not None:
        table = Table(_frame_copy(path, frame, text))
    else:
        if not path.exists():
            raise LstmcastError(f"{path}: file not found")
        if path.suffix.lower() in NETCDF_SUFFIXES:
            table = Table(_read_netcdf(path, text))
        elif by_rows(path):
            table = Table(_read_parquet(path, text, categories))
        else:
            if not path.is_file():
                raise LstmcastError(f"{path}: not a file")
            table = _read_csv(path, text, categories)
    if table.frame.empty:
        raise LstmcastError(f"{path}: no data rows" + ("" if by_rows(path) else " below the header"))
    return _stripped(table, text, categories)


def _read_csv(path: Path, text: tuple[str, ...], categories: tuple[str, ...] = ()) -> Table:
    """The whole CSV. pandas parses it in blocks (low_memory: a third faster on millions of rows,
    from memory reused between blocks) and types each column per block; when a column's blocks
    disagree (numbers in one, text in another: pandas' DtypeWarning), the file is read again in
    one piece, so that every value of that column is typed alike, as a whole read types it."""
    with _csv_errors(path):
        skip, options = csv_options(path, text, categories)
        frame = _arrow_read(path, skip, options, text, categories) if ARROW_CSV else None
        if frame is not None:
            frame.index = pd.RangeIndex(skip, skip + len(frame))
            return Table(frame, skip)
        with warnings.catch_warnings(record=True) as seen, np.errstate(all="ignore"):  # overflow
            warnings.simplefilter("always")
            frame = pd.read_csv(path, **{**options, "low_memory": True})
        if any(issubclass(w.category, pd.errors.DtypeWarning) for w in seen):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                frame = pd.read_csv(path, **options)
    frame.index = pd.RangeIndex(skip, skip + len(frame))  # so that _line(index) is the file's line
    return Table(frame, skip)


def data_start(path: Path, skip: int) -> int | None:
    """The byte offset of the first row below the header (`skip` lines above it), or None when a
    line up to the header holds a quote (a header cell with a line break would end elsewhere)."""
    with open(path, "rb") as handle:
        for _ in range(skip + 1):
            line = handle.readline()
            if b'"' in line:
                return None
        return handle.tell()


def _arrow_read(path: Path, skip: int, options: dict, text: tuple[str, ...], categories: tuple[str, ...]
                ) -> pd.DataFrame | None:
    """The whole CSV read by pyarrow as pandas reads it (arrowcsv), or None: pandas reads it."""
    from . import arrowcsv
    start = data_start(path, skip)
    if start is None:
        return None
    with open(path, "rb") as handle:
        handle.seek(start)
        head = handle.read(arrowcsv.PROBE_BYTES + 1)
    names = options["names"]
    kind = arrowcsv.kinds(head, names, options["sep"], text)
    if kind is None:
        return None
    return arrowcsv.read(str(path), names, options["sep"], skip + 1, kind,
                         tuple(n for n in categories if n in names), tuple(n for n in text if n in names))


def csv_options(path: Path, text: tuple[str, ...], categories: tuple[str, ...] = ()) -> tuple[int, dict]:
    """(lines above the header, pandas.read_csv's keyword arguments) for the CSV at `path`: its
    dialect, its header's names, the `text` columns as text, those in `categories` as pandas
    Categoricals of their text (not with ARROW_TEXT: _stripped makes them so), NA_TEXT missing
    outside `text`. Raise inside _csv_errors."""
    if path.stat().st_size == 0:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row")
    sep, skip = _dialect(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        lines = iter(handle)
        for _ in range(skip):
            next(lines, None)
        names = [c.strip() for c in next(csv.reader(lines, delimiter=sep), [])]
    if not names:
        raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LstmcastError(f"{path} line {skip + 1}: column name {', '.join(repr(n) for n in twice)} "
                            f"appears more than once; give every column its own name")
    as_text = [n for n in names if n in text]
    coded = () if ARROW_TEXT else categories
    dtype = {n: "category" if n in coded else str for n in as_text}
    dtype.update({n: "category" for n in names if n in coded})
    return skip, dict(sep=sep, skiprows=skip + 1, header=None, names=names, dtype=dtype,
                      keep_default_na=False, na_values={n: sorted(NA_TEXT) for n in names if n not in as_text},
                      skipinitialspace=True, encoding="utf-8-sig", low_memory=False, index_col=False)


class _csv_errors:
    """pandas' and Python's errors reading a CSV -> the user's one line."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        path = self.path
        if kind is not None and issubclass(kind, pd.errors.EmptyDataError):
            raise LstmcastError(f"{path}: file is empty; expected a CSV with a header row") from None
        if kind is not None and issubclass(kind, pd.errors.ParserError):
            raise LstmcastError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
        if kind is not None and issubclass(kind, UnicodeDecodeError):
            raise LstmcastError(f"{path}: not a text CSV file (encoding is not UTF-8)") from None
        return False


def _stripped(table: Table, text: tuple[str, ...], categories: tuple[str, ...] = ()) -> Table:
    """Text columns: surrounding blanks removed (per distinct value). The text columns named in
    `categories` become pandas Categoricals of the stripped text (what reads them next then
    factorizes codes, not text: stream.py)."""
    frame = table.frame
    for name in frame.columns:
        if (name in text or frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name])
                or (name in categories and isinstance(frame[name].dtype, pd.CategoricalDtype))):
            codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
            stripped = pd.Index(uniques.astype(str)).str.strip()
            same = stripped.equals(pd.Index(uniques.astype(str)))
            if name in categories:
                if not same:  # " a" and "a" are one id
                    recode, uniques = pd.factorize(np.asarray(stripped, dtype=object))
                    codes = np.where(codes >= 0, recode[codes], -1)
                frame[name] = pd.Categorical.from_codes(codes, categories=pd.Index(uniques, dtype=object))
            elif not same:
                frame[name] = pd.Series(np.asarray(stripped, dtype=object)[codes], index=frame.index).where(codes >= 0)
    return table


def _require(path: Path, frame: pd.DataFrame, name: str, option: str | None) -> None:
    """`option` is the flag that names this column, or None when a trained run fixed it."""
    if name not in frame.columns:
        todo = (f"pass {option} with one of them" if option else
                "the run was trained on that column, so the data needs it too")
        raise LstmcastError(f"{path}: column '{name}' not found (columns: {', '.join(frame.columns)}); "
                            f"{todo}")


def _looks_like_time(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
        return False
    sample = column.dropna().astype(str).head(20)
    if sample.empty:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def resolve_columns(path: Path, frame: pd.DataFrame, id_col: str | None, time_col: str | None,
                    target: list[str] | None, trained: bool = False, covariates: tuple[str, ...] = ()
                    ) -> Columns:
    """Pick the id, time and target columns: explicit names, then defaults, then detection.

    `trained`: the names come from a trained run, not from the user's options. `covariates` are
    never detected as the target.
    """
    def require(name: str, option: str) -> None:
        _require(path, frame, name, None if trained else option)

    if id_col is not None:
        require(id_col, "--id-col")
    elif DEFAULT_ID in frame.columns and not (target and len(target) > 1):
        id_col = DEFAULT_ID
    for name in target or []:
        require(name, "--target")
    taken = {id_col, *(target or [])}

    if time_col is not None:
        require(time_col, "--time-col")
    elif DEFAULT_TIME in frame.columns:
        time_col = DEFAULT_TIME
    else:
        found = [c for c in frame.columns if c not in taken and _looks_like_time(frame[c])]
        if not found:
            raise LstmcastError(f"{path}: no timestamp column found (columns: "
                                f"{', '.join(frame.columns)}); pass --time-col")
        if len(found) > 1:
            raise LstmcastError(f"{path}: several timestamp-like columns ({', '.join(found)}); "
                                f"pass --time-col with one of them")
        time_col = found[0]

    if not target:
        if DEFAULT_TARGET in frame.columns and DEFAULT_TARGET not in (id_col, time_col):
            target = [DEFAULT_TARGET]
        else:
            numeric = [c for c in frame.columns if c not in (id_col, time_col, *covariates)
                       and pd.api.types.is_numeric_dtype(frame[c])]
            if not numeric:
                raise LstmcastError(f"{path}: no numeric value column found; pass --target")
            if len(numeric) > 1:
                raise LstmcastError(f"{path}: several numeric columns ({', '.join(numeric)}); "
                                    f"pass --target with one (long file) or a comma list (wide file)")
            target = numeric
    if len(target) > 1 and id_col is not None:
        raise LstmcastError(f"{path}: --target with several columns makes each column a series "
                            f"(wide file), which cannot be combined with the id column '{id_col}'")
    if time_col in target or (id_col is not None and (id_col == time_col or id_col in target)):
        raise LstmcastError(f"{path}: the id, time and target columns must be different columns")
    return Columns(id_col or DEFAULT_ID, time_col, tuple(target), id_col is not None)


_DMY = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(?=$|[ T])(.*)$")
_OFFSET = re.compile(r"\d:\d{2}(?::\d{2}(?:\.\d*)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)$")


def _reorder_dmy(path: Path, raw: pd.Series, time_col: str, dayfirst: bool | None
                 ) -> tuple[pd.Series | None, bool | None]:
    """(ISO text, dayfirst) for day/month/year-style text (01/02/2021, 1.2.21 13:00) in the right
    order; (None, None) when the column is not written that way. Never guesses: when both orders read every
    row and no number above 12 tells them apart, `data.dayfirst` must say."""
    parts = raw.str.extract(_DMY)
    if parts[0].isna().any():
        return None, None
    a, b = parts[0].astype(int), parts[2].astype(int)
    if dayfirst is None:
        if (a > 12).any() and not (b > 12).any():
            dayfirst = True
        elif (b > 12).any() and not (a > 12).any():
            dayfirst = False
        elif (a == b).all():
            dayfirst = True
        elif not (a > 12).any():
            row = raw.index[(a != b).to_numpy()][0]
            raise LstmcastError(f"{_at(path, row)}, column '{time_col}': {raw[row]!r} reads as "
                                f"day/month and as month/day and no date in the file tells which; set "
                                f"--set data.dayfirst=true (or false), or write dates as 2021-02-01")
    day, month = (a, b) if dayfirst else (b, a)
    year = parts[3].astype(int)
    year = year.where(parts[3].str.len() == 4, np.where(year < 69, 2000 + year, 1900 + year))
    return (year.astype(str).str.zfill(4) + "-" + month.astype(str).str.zfill(2) + "-"
            + day.astype(str).str.zfill(2) + parts[4]), dayfirst


def _parse_times(path: Path, frame: pd.DataFrame, time_col: str, dayfirst: bool | None = None,
                 facts: dict | None = None) -> tuple[pd.Series, object, bool | None]:
    """(timestamps, zone, dayfirst as decided for d/m/y text, else None). Timestamps are naive,
    or all carry a UTC offset. One offset: kept (a fixed zone; zone None). Several (daylight saving
    time): converted to UTC and zone is the offset of the latest timestamp, the one forecasts are
    written with; daily or coarser data at one local time of day stays on the local calendar.
    `facts`, if given, records "offsets": whether there were several UTC offsets."""
    column = frame[time_col]
    codes, uniques = pd.factorize(column)  # parse each distinct timestamp text once
    if (codes < 0).any():
        raise LstmcastError(f"{_at(path, column.index[codes < 0][0])}, column '{time_col}': "
                            f"empty timestamp; every row needs one")
    if _numbers(column):
        raise LstmcastError(f"{path}, column '{time_col}': holds numbers, not timestamps; write dates "
                            f"such as 2024-01-31 (a year 2024 as 2024-01-01), or pass --time-col")
    # Row of each distinct text's first use: factorize numbers them in order of first use, so
    # those rows are where the running maximum of the codes grows (no sort).
    first = np.flatnonzero(codes > np.maximum.accumulate(np.r_[-1, codes[:-1]]))
    raw = pd.Series(np.asarray(uniques, dtype=object), index=column.index[first])
    text = raw.astype(str).str.strip()
    if (text == "").any():
        raise LstmcastError(f"{_at(path, text.index[text == ''][0])}, column '{time_col}': "
                            f"empty timestamp; every row needs one")
    aware = text.str.extract(_OFFSET)[0].notna()
    if aware.any() and not aware.all():
        naive_row, aware_row = raw.index[~aware.to_numpy()][0], raw.index[aware.to_numpy()][0]
        raise LstmcastError(f"{_at(path, naive_row)}, column '{time_col}': {text[naive_row]!r} has no "
                            f"UTC offset but {_other(path, aware_row)} has ({text[aware_row]!r}); write every "
                            f"timestamp with its offset, or none")
    ordered, dayfirst = _reorder_dmy(path, text, time_col, dayfirst)
    source = ordered if ordered is not None else text
    offsets = source.str.extract(_OFFSET)[0] if aware.all() else None
    several = offsets is not None and offsets.nunique() > 1
    if facts is not None:
        facts["offsets"] = several
    try:
        with warnings.catch_warnings():  # "could not infer format" would add lines to stderr
            warnings.simplefilter("ignore")
            times = pd.to_datetime(source, errors="coerce", format="ISO8601", utc=several)
            if times.isna().any() and ordered is None:
                times = pd.to_datetime(source, errors="coerce", utc=several)
    except (ValueError, TypeError, OverflowError) as exc:
        raise LstmcastError(f"{path}, column '{time_col}': cannot read timestamps ({exc}); "
                            f"use one format and one time zone") from None
    bad = times.isna()
    if bad.any():
        row = raw.index[bad][0]
        raise LstmcastError(f"{_at(path, row)}, column '{time_col}': cannot parse "
                            f"{str(raw[row])!r} as a timestamp; use e.g. 2024-01-31 or 2024-01-31 13:00")
    try:
        distinct = pd.DatetimeIndex(times).as_unit("ns")
    except (ValueError, OverflowError):
        raise LstmcastError(f"{path}, column '{time_col}': timestamps outside the years 1678..2261; "
                            f"check the dates") from None
    zone = None
    if several:
        latest = offsets.iloc[int(np.argmax(distinct.asi8))]
        zone = pd.Timestamp(f"2000-01-01T00:00{latest}".replace("Z", "+00:00")).tz
        wall = distinct + pd.to_timedelta(_offset_seconds(offsets).to_numpy(), unit="s")
        if len(np.unique(wall.tz_localize(None).asi8 % timegrid.DAY_NS)) == 1:
            # Daily or coarser data at one local time of day (midnight +01:00 / +02:00): the grid
            # is the wall clock's, held in the latest offset (so forecasts show local dates).
            distinct = wall.tz_localize(None).tz_localize(zone)
            zone = None
    return pd.Series(distinct[codes], index=column.index), zone, dayfirst


def _numbers(column: pd.Series) -> bool:
    """Whether a column holds numbers only: typed so, or a Categorical of text (a CSV's time column,
    parsed straight into codes) every distinct value of which reads as a number."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        return len(categories) > 0 and bool(pd.to_numeric(pd.Series(categories.astype(str)).str.strip(),
                                                           errors="coerce").notna().all())
    return pd.api.types.is_numeric_dtype(column)


def _offset_seconds(offsets: pd.Series) -> pd.Series:
    """'+02:00', '-0530', '+01', 'Z' -> seconds east of UTC."""
    parts = offsets.str.replace("Z", "+00:00").str.extract(r"([+-])(\d{2}):?(\d{2})?")
    sign = np.where(parts[0] == "-", -1, 1)
    return pd.Series(sign * (parts[1].astype(int) * 3600 + parts[2].fillna("0").astype(int) * 60),
                     index=offsets.index)


def _parse_values(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values, not numbers")
    if pd.api.types.is_numeric_dtype(raw):
        values = raw
        bad = np.isinf(values.to_numpy(dtype=float))
    else:
        values = pd.to_numeric(raw, errors="coerce")
        bad = (values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy() \
            | np.isinf(values.to_numpy(dtype=float))
    if bad.any():
        row = raw.index[bad][0]
        raise LstmcastError(f"{_at(path, row)}, column '{column}': {str(raw[row])!r} is not "
                            f"a finite number; fix the value or leave the cell empty")
    if pd.api.types.is_bool_dtype(values):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values, not numbers")
    return values.astype(float)


def _parse_covariate(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A covariate column: a finite number in every row (it is read at every step)."""
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise LstmcastError(f"{path}, column '{column}': holds true/false values; write covariates as 0/1")
    values = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | np.isinf(values.astype(float))
    if bad.any():
        row = raw.index[bad][0]
        what = "is empty" if pd.isna(raw[row]) or str(raw[row]).strip() == "" else \
            f"{str(raw[row])!r} is not a finite number"
        raise LstmcastError(f"{_at(path, row)}, column '{column}': {what}; a covariate needs a "
                            f"finite number in every row")
    return values.to_numpy(dtype=np.float64)


def check_covariates(path: Path, frame: pd.DataFrame, columns: Columns, names: tuple[str, ...],
                     trained: bool) -> None:
    """Every covariate is a column of the file and not the id, time or a target column."""
    for name in names:
        _require(path, frame, name, None if trained else "--past-covariates / --future-covariates")
        role = ("time" if name == columns.time_col else "target" if name in columns.targets else
                "id" if columns.id_in_input and name == columns.id_col else None)
        if role:
            raise LstmcastError(f"{path}: covariate '{name}' is the {role} column; a covariate must be "
                                f"another column")
