"""A CSV read by pyarrow's multithreaded reader into the frame pandas 3's reader makes with
csvread's options, or None: then pandas reads it (csvread, stream.py).

pandas 3 and pyarrow both round decimal text to the nearest float64 (pandas 2 does not always,
so with pandas 2 pandas reads every CSV: csvread.ARROW_CSV). What is read here is declined
(None) wherever the two parsers could disagree, so that a CSV read either way gives the same
cells:

- every column pyarrow types, on the first rows (`kinds`), as anything but numbers or text
  (true/false: pandas' booleans differ from pyarrow's) is declined, and so is any cell that does
  not convert to the type those rows gave (pyarrow raises; pandas would type the column otherwise);
- number columns are read as float64 (an integer column pandas reads as int64: the same values);
  a cell pyarrow reads as NaN but not as missing (`+nan`, which pandas keeps as text) is declined;
- text cells: pandas skips the spaces after a delimiter (skipinitialspace) and then reads quotes;
  pyarrow keeps the spaces, so a cell whose text after its leading spaces begins with a quote is
  declined, and a cell whose text after its leading spaces is in NA_TEXT is missing (outside the
  id columns, as in pandas). A text column whose every cell reads as a number or as true/false is
  declined (pandas would have typed it otherwise); one whose every cell is missing is float64
  NaN, as in pandas;
- anything pyarrow cannot parse (a row with another number of cells, bytes that are not UTF-8) is
  declined; pandas then reads it, or says what is wrong. Line breaks inside quotes are read as
  pandas reads them (newlines_in_values: its blocks are cut outside quotes, about 0.2 s more on
  12M rows).

The id and time columns (`dictionary`) come as pandas Categoricals (pyarrow's dictionary arrays:
one Python string per distinct text), which csvread._stripped takes as it takes pandas' text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .columnar import NA_TEXT

BOOL_TEXT = ["False", "FALSE", "True", "TRUE", "false", "true"]   # pandas' booleans
PROBE_BYTES = 1 << 20    # the first rows pyarrow types the columns on
BLOCK_BYTES = 1 << 22    # pyarrow's parse block: each of its threads parses one at a time


def row_end(data: bytes | bytearray, end: int | None = None) -> int:
    """The index just past the last line break of data[:end] outside quotes (-1: none), `data`
    starting at the beginning of a row. A quote character opens and closes a quoted cell
    ("" inside one closes and opens it again), so a break is outside quotes where the number of
    quote characters before it is even."""
    end = len(data) if end is None else end
    cut = data.rfind(b"\n", 0, end)
    if data.find(b'"', 0, end) < 0:
        return cut + 1 if cut >= 0 else -1
    while cut >= 0 and data.count(b'"', 0, cut) % 2:
        cut = data.rfind(b"\n", 0, cut)
    return cut + 1 if cut >= 0 else -1


def kinds(data: bytes, names: list[str], sep: str, text: tuple[str, ...]) -> dict | None:
    """Column -> "float" or "text" as pyarrow types the first rows of `data` (rows from their
    start; its first PROBE_BYTES, cut at a row's end, when it holds more; the `text` columns are
    text), or None when a column would be typed otherwise than pandas types it (booleans) or
    pyarrow cannot read the rows."""
    import pyarrow as pa
    head = bytes(data[:PROBE_BYTES])
    if len(data) > PROBE_BYTES:
        head = head[:max(row_end(head), 0)]
    if not head:
        return None
    table = _parse(pa.py_buffer(head), names, sep, {n: pa.string() for n in text if n in names}, 0)
    if table is None:
        return None
    out = {}
    for name, kind in zip(table.column_names, table.schema.types):
        if name in text:
            out[name] = "text"
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
            out[name] = "float"
        elif (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_timestamp(kind)
              or pa.types.is_date(kind) or pa.types.is_time(kind)):
            out[name] = "text"
        else:
            return None
    return out


def read(source, names: list[str], sep: str, skip_rows: int, kind: dict, dictionary: tuple[str, ...],
         keep: tuple[str, ...]) -> pd.DataFrame | None:
    """The rows of `source` (a path, or bytes of whole rows) below `skip_rows` rows,
    typed by `kind` (kinds()): the frame pandas 3 reads with csvread's options, or None (declined:
    the module's docstring). The `dictionary` columns as Categoricals; the `keep` columns (ids) as
    text, as written, never missing; outside them, text in NA_TEXT (after leading spaces) is
    missing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    types = {}
    for name in names:
        if name in dictionary:
            types[name] = pa.dictionary(pa.int32(), pa.string())
        elif kind.get(name) == "float" and name not in keep:
            types[name] = pa.float64()
        else:
            types[name] = pa.string()
    table = _parse(source if isinstance(source, str) else pa.py_buffer(source), names, sep, types, skip_rows)
    if table is None or table.column_names != list(names):
        return None
    columns = {}
    for name in names:
        column = table.column(name)
        if name in dictionary:
            column = column.unify_dictionaries() if column.num_chunks > 1 else column
            values = column.to_pandas()  # a Categorical
            categories = values.cat.categories
            text = pd.Index(np.asarray(categories, dtype=object))
            lead = text.str.lstrip(" ")
            if len(text) and lead.str.startswith('"').any():
                return None
            if name not in keep and len(text):
                missing = np.asarray(lead.isin(NA_TEXT))
                if missing.any():
                    codes = values.cat.codes.to_numpy().copy()
                    codes[(codes >= 0) & missing[np.maximum(codes, 0)]] = -1
                    values = pd.Series(pd.Categorical.from_codes(codes, categories=categories))
                    if (codes < 0).all():  # every cell missing: pandas' column of NaN
                        values = pd.Series(np.full(len(codes), np.nan))
            columns[name] = values
        elif types[name] == pa.float64():
            numbers = column.to_numpy()  # missing: NaN
            if np.isnan(numbers).sum() != column.null_count:
                return None  # a NaN pyarrow read but pandas does not ("+nan")
            columns[name] = pd.Series(numbers)
        else:
            lead = pc.utf8_ltrim(column, characters=" ")
            if pc.any(pc.starts_with(lead, '"')).as_py():
                return None
            if name in keep:
                columns[name] = column.to_pandas()
                continue
            missing = pc.is_in(lead, value_set=pa.array(sorted(NA_TEXT)))
            present = pc.filter(lead, pc.invert(missing))
            if not len(present):  # every cell missing: pandas' column of NaN
                columns[name] = pd.Series(np.full(len(column), np.nan))
                continue
            present = pc.utf8_trim_whitespace(present)
            words = pc.filter(present, pc.invert(pc.is_in(present, value_set=pa.array(BOOL_TEXT))))
            if not len(words):
                return None  # every cell true or false: pandas reads booleans
            try:
                pc.cast(words, pa.float64())
                return None  # every cell a number (or true/false): pandas types the column otherwise
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            if pc.any(missing).as_py():
                column = pc.if_else(missing, pa.scalar(None, pa.string()), column)
            values = column.to_pandas()
            columns[name] = values.fillna(np.nan) if values.dtype == object else values  # None, with pandas 2
    frame = pd.DataFrame(columns, copy=False)
    frame.columns = list(names)
    return frame


def _parse(source, names: list[str], sep: str, types: dict, skip_rows: int):
    """pyarrow's table of `source`, or None where it cannot read it."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    try:
        return pcsv.read_csv(
            source,
            read_options=pcsv.ReadOptions(column_names=list(names), skip_rows=skip_rows, block_size=BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types=types, null_values=sorted(NA_TEXT),
                                                strings_can_be_null=False, quoted_strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, UnicodeDecodeError):
        return None
