"""pandas DataFrames from column batches, column by column.

A numeric column goes from the wire to a numpy array with no Python object
per cell (see _columns). The dtype follows the schema, so it is the same for
every chunk of a result: integers stay integers, as pandas' nullable Int64
when the column may hold NULL; doubles are float64 with NaN; booleans bool
or nullable boolean; timestamps datetime64[ns] (UTC for zoned ones);
decimals Decimal; dates date; everything else object.
"""

import numpy as np
import pandas as pd

from connbroker import _columns

_ZONED = {"timestamptz", "timestamp with time zone"}


def _datetimes(column, texts):
    """Timestamps as datetime64, or None when pandas cannot represent them
    (out of its range, 'infinity'): the caller keeps Python values then."""
    kind = _columns.base_type(column.database_type)
    try:
        return pd.to_datetime(pd.Series(texts, dtype=object),
                              utc=kind in _ZONED).array
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None


def _is_timestamp(column):
    return (_columns.base_type(column.database_type) in
            _columns.TIMESTAMP_TYPES)


class _ColumnParts:
    """One result column's batches, joined into one array at the end."""

    def __init__(self, column, flavor):
        self.column = column
        self.flavor = flavor
        self.parts = []

    def add(self, data, row_count):
        self.parts.append((data, row_count))

    def _nulls(self):
        masks = [np.zeros(n, dtype=bool) if d.nulls is None else d.nulls
                 for d, n in self.parts]
        return np.concatenate(masks) if masks else np.zeros(0, dtype=bool)

    def array(self):
        vectors = {d.vector for d, _ in self.parts if d.vector is not None}
        if len(vectors) == 1:
            (vector,) = vectors
            if vector in ("int64s", "doubles", "bools"):
                return self._numeric(vector)
        return self._objects()

    def _numeric(self, vector):
        dtype = {"int64s": np.int64, "doubles": np.float64,
                 "bools": bool}[vector]
        values = np.concatenate([
            d.values if d.vector == vector else np.zeros(n, dtype=dtype)
            for d, n in self.parts
        ]).astype(dtype, copy=False)
        nulls = self._nulls()
        if vector == "doubles":
            if nulls.any():
                values = values.copy()
                values[nulls] = np.nan
            return values
        if not self.column.nullable and not nulls.any():
            return values
        if vector == "int64s":
            return pd.arrays.IntegerArray(values, nulls)
        return pd.arrays.BooleanArray(values, nulls)

    def _objects(self):
        timestamp = _is_timestamp(self.column)
        # Timestamps sent as text (or all NULL) go to pandas' parser whole.
        parse = timestamp and all(d.vector in ("texts", None)
                                  for d, _ in self.parts)
        values = []
        for data, _ in self.parts:
            if data.vector == "texts" and timestamp:
                # Text for pandas' own parser, not Python datetimes.
                texts = data.values
                if data.nulls is not None:
                    texts = [None if null else v
                             for v, null in zip(texts, data.nulls)]
                values.extend(texts)
            else:
                values.extend(_columns.python_values(self.column, data,
                                                     self.flavor))
        if parse and values:
            converted = _datetimes(self.column, values)
            if converted is not None:
                return converted
            convert = _columns.converter(self.flavor,
                                         self.column.database_type)
            if convert is not None:
                values = [None if v is None else convert(v) for v in values]
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array


def _frame(columns, parts, index_col):
    data = {}
    for column, part in zip(columns, parts):
        data[column.name] = part.array()
    names = [c.name for c in columns]
    if len(set(names)) == len(names):
        # No columns= (the dict keeps their order): with it, pandas 1.5
        # round-trips a datetime64 column through Python objects (1.8 s of
        # 3.3 s for a million rows).
        frame = pd.DataFrame(data, copy=False)
    else:
        # Duplicate names (SELECT a.id, b.id): by position, as read_sql.
        frame = pd.DataFrame(
            {i: part.array() for i, part in enumerate(parts)})
        frame.columns = names
    if index_col is not None:
        frame = frame.set_index(index_col)
    return frame


def frame(cursor, flavor, index_col=None):
    """The rest of a cursor's result as one DataFrame."""
    columns = cursor.columns()
    parts = [_ColumnParts(c, flavor) for c in columns]
    for batch, row_count in cursor.column_batches():
        for part, data in zip(parts, batch):
            part.add(data, row_count)
    return _frame(columns, parts, index_col)


def frames(cursor, flavor, chunksize, index_col=None):
    """The rest of a cursor's result as DataFrames of chunksize rows (the
    last may be shorter), each built as soon as its rows have arrived.
    Each chunk's index starts at 0, as pandas.read_sql's chunks do."""
    if chunksize < 1:
        raise ValueError("chunksize must be at least 1")
    columns = cursor.columns()

    def fresh():
        return [_ColumnParts(c, flavor) for c in columns]

    def chunk(whole):
        return whole if index_col is not None else whole.reset_index(
            drop=True)

    carry = None  # rows built into a frame but short of a chunk
    pending, pending_rows = fresh(), 0
    yielded = False
    for batch, row_count in cursor.column_batches():
        for part, data in zip(pending, batch):
            part.add(data, row_count)
        pending_rows += row_count
        carried = 0 if carry is None else len(carry)
        if carried + pending_rows < chunksize:
            continue
        whole = _frame(columns, pending, index_col)
        if carry is not None:
            whole = pd.concat([carry, whole])
        pending, pending_rows = fresh(), 0
        while len(whole) >= chunksize:
            yield chunk(whole.iloc[:chunksize])
            yielded = True
            whole = whole.iloc[chunksize:]
        carry = whole if len(whole) else None
    last = _frame(columns, pending, index_col) if pending_rows else None
    if carry is not None:
        last = carry if last is None else pd.concat([carry, last])
    if last is not None or not yielded:
        yield chunk(last if last is not None else
                    _frame(columns, fresh(), index_col))
