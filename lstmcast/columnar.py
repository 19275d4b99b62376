"""Tables that are not CSV text: a Parquet file or a folder of them, a NetCDF file, a pandas
DataFrame, read into the shape csvread reads a CSV into (plain column names, rows numbered 0..,
the id columns as text, NA_TEXT cells missing), so that everything after the read is the same.

csvread dispatches here by suffix (by_rows: a source whose rows are named by number, not by CSV
line); stream.py reads Parquet in row batches through _parquet_files and _frame_copy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import LstmcastError

PARQUET_SUFFIXES = (".parquet", ".pq")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


class FrameName(str):
    """The name a pandas DataFrame goes by in messages (read_series(frame, name=...)): its
    rows are numbered from 1, as they are for Parquet."""


def by_rows(path) -> bool:
    """Whether `path`'s rows are named by number (Parquet, a folder of it, a data frame)
    rather than by CSV line (the header is line 1)."""
    if isinstance(path, FrameName):
        return True
    path = Path(path)
    return path.suffix.lower() in PARQUET_SUFFIXES + NETCDF_SUFFIXES or path.is_dir()


# Cells read as "no value" in value and covariate columns (pandas' defaults); ids stay text.
NA_TEXT = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                     "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _parquet_files(path: Path) -> list[Path]:
    """The Parquet file itself, or a folder's *.parquet / *.pq files (recursively, sorted)."""
    if path.is_file():
        return [path]
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in PARQUET_SUFFIXES)
    if not files:
        raise LstmcastError(f"{path}: a folder with no .parquet files in it; pass a CSV or Parquet file, "
                            f"or a folder of Parquet files")
    return files


def _read_parquet(path: Path, text: tuple[str, ...], categories: tuple[str, ...] = ()) -> pd.DataFrame:
    """A Parquet file, or a folder of them read as one table (files in name order, rows
    numbered on from one file to the next); needs pyarrow (the `parquet` extra). Text columns
    named in `categories` are read as pandas Categoricals (pyarrow's dictionary arrays: one Python
    string per distinct value, not one per row)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LstmcastError(f"{path}: reading Parquet needs pyarrow; pip install 'lstmcast[parquet]' "
                            f"(or pyarrow), or pass a CSV") from None
    frames = []
    for file in _parquet_files(path):
        try:
            frames.append(pq.read_table(file, read_dictionary=list(categories)).to_pandas())
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise LstmcastError(f"{file}: not a readable Parquet file ({str(exc).strip()})") from None
    names = [list(f.columns) for f in frames]
    if any(n != names[0] for n in names[1:]):
        other = next(i for i, n in enumerate(names) if n != names[0])
        raise LstmcastError(f"{_parquet_files(path)[other]}: its columns differ from "
                            f"{_parquet_files(path)[0].name}'s; every file of the folder needs the same columns")
    return _frame_copy(path, concat_frames(frames), text, copy=False)


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The rows of `frames` (the same columns) in order, rows numbered 0..; a column that is a
    Categorical in every frame stays one (of the union of their categories, in order of first
    use), where pandas would make it objects."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True)
    for name in out.columns:
        parts = [f[name] for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts) and \
                not isinstance(out[name].dtype, pd.CategoricalDtype):
            out[name] = pd.api.types.union_categoricals([p.array for p in parts], sort_categories=False)
    return out


def _read_netcdf(path: Path, text: tuple[str, ...]) -> pd.DataFrame:
    """A NetCDF file as a long table: one row per point of its dimensions (time, lat, lon, ...),
    a column per dimension and per variable (xarray's to_dataframe); needs xarray and h5netcdf
    (the `netcdf` extra)."""
    try:
        import xarray
    except ImportError:
        raise LstmcastError(f"{path}: reading NetCDF needs xarray; pip install 'lstmcast[netcdf]', "
                            f"or pass a CSV or Parquet file") from None
    try:
        with xarray.open_dataset(path) as data:
            frame = data.to_dataframe().reset_index()
    except (OSError, ValueError) as exc:  # not NetCDF, or no engine installed that reads it
        raise LstmcastError(f"{path}: not a readable NetCDF file ({str(exc).strip().splitlines()[0]}); "
                            f"pip install 'lstmcast[netcdf]' for NetCDF-4 files") from None
    return _frame_copy(path, frame, text, copy=False)


def _frame_copy(path, frame: pd.DataFrame, text: tuple[str, ...], copy: bool = True) -> pd.DataFrame:
    """A typed table (Parquet, a DataFrame) in the shape a CSV is read into: plain column names,
    rows numbered 0.., the `text` columns as strings (missing stays missing), text cells of the
    NA_TEXT spellings missing elsewhere. The caller's frame is never changed."""
    if not all(isinstance(c, str) for c in frame.columns):
        other = next(c for c in frame.columns if not isinstance(c, str))
        raise LstmcastError(f"{path}: column names must be text (found {other!r})")
    names = [c.strip() for c in frame.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LstmcastError(f"{path}: column name {', '.join(repr(n) for n in twice)} appears more than once; "
                            f"give every column its own name")
    frame = frame.copy() if copy else frame
    frame.columns = names
    frame.index = pd.RangeIndex(len(frame))
    for name in names:
        column = frame[name]
        coded = isinstance(column.dtype, pd.CategoricalDtype)
        if name in text:
            if coded:   # its categories as text, each once (two with one text, 1 and '1': then per row)
                labels = column.cat.categories
                if not (labels.dtype == object or pd.api.types.is_string_dtype(labels)):
                    text_labels = labels.astype(str)
                    frame[name] = (column.cat.rename_categories(text_labels) if text_labels.is_unique
                                   else column.astype(str).where(column.notna()))
            elif not (column.dtype == object or pd.api.types.is_string_dtype(column)):
                frame[name] = column.astype(str).where(column.notna())
        elif coded or column.dtype == object or pd.api.types.is_string_dtype(column):
            frame[name] = column.where(~column.isin(NA_TEXT))
    return frame
