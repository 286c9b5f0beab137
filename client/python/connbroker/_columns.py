"""Column batches (values.proto RowBatch) as numpy arrays and Python values.

A batch carries one typed vector per column. Fixed-width vectors (doubles)
and varint vectors (int64s) are decoded by numpy from their encoded bytes,
so a numeric column becomes an array without a Python object per cell; text
and blobs become Python strings and bytes, one per cell, as they must.

What a value means beyond its storage class comes from the column's
`database_type`: PostgreSQL and MySQL send decimals, dates and times as text
and the converters here give what psycopg2 and mysqlclient give (Decimal,
datetime, date, time or timedelta). SQLite's values stay as stored, as the
sqlite3 module returns them, because SQLAlchemy's SQLite dialect parses them
itself.
"""

import datetime
import decimal
import re

import numpy as np

from connbroker.v1 import values_pb2

KIND = values_pb2.ValueKind


class ColumnData:
    """One column of one batch: values (ndarray or list), a null mask (bool
    ndarray, or None when no row is NULL) and the vector they came in
    ("int64s", "texts", ...; None when every row is NULL)."""

    __slots__ = ("values", "nulls", "vector")

    def __init__(self, values, nulls, vector):
        self.values = values
        self.nulls = nulls
        self.vector = vector


def _packed_payload(vector_message):
    """The packed bytes of a vector message's one repeated field: the message
    re-encoded (in C++) minus its field tag and length."""
    encoded = vector_message.SerializeToString()
    if not encoded:
        return b""
    # tag byte (field 1, length-delimited), then a varint length.
    pos = 1
    while encoded[pos] & 0x80:
        pos += 1
    return memoryview(encoded)[pos + 1:]


def decode_varints(payload):
    """Packed protobuf varints (int64, two's complement) as an int64 array,
    decoded by numpy: no Python object per value."""
    b = np.frombuffer(payload, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    last = b < 0x80  # the last byte of each varint
    if last.all():
        return b.astype(np.int64)
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    position = np.arange(b.size) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    # Each byte adds bits no other byte of its varint has: the sum is the OR.
    return np.add.reduceat(parts, starts).view(np.int64)


def _value_of(value):
    which = value.WhichOneof("kind")
    if which is None or which == "null_value":
        return None
    return getattr(value, which)


# Below this many rows a batch's numbers are read as Python values: a small
# result (SELECT 1) is answered sooner without numpy's per-array set-up.
_NUMPY_MIN_ROWS = 64


def decode_column(vector, row_count):
    """A ColumnVector as ColumnData: numpy arrays for bools, int64s and
    doubles, lists for texts, blobs and mixed values."""
    nulls = None
    if len(vector.nulls):
        nulls = np.fromiter(vector.nulls, dtype=bool, count=row_count)
        if not nulls.any():
            nulls = None
    which = vector.WhichOneof("values")
    if row_count < _NUMPY_MIN_ROWS and which in ("int64s", "doubles", "bools"):
        # A few values: numpy's set-up costs more than the Python objects.
        values = list(getattr(vector, which).values)
    elif which == "int64s":
        values = decode_varints(_packed_payload(vector.int64s))
    elif which == "doubles":
        values = np.frombuffer(_packed_payload(vector.doubles), dtype="<f8")
    elif which == "bools":
        values = np.frombuffer(_packed_payload(vector.bools), dtype=np.uint8)
        values = values.astype(bool)
    elif which == "texts":
        values = list(vector.texts.values)
    elif which == "blobs":
        values = list(vector.blobs.values)
    elif which == "mixed":
        values = [_value_of(v) for v in vector.mixed.values]
    else:  # no vector: every row is NULL
        return ColumnData([None] * row_count, np.ones(row_count, dtype=bool),
                          None)
    if len(values) != row_count:
        raise ValueError(
            f"a column of {len(values)} values in a batch of {row_count} rows")
    return ColumnData(values, nulls, which)


# --- Python values by database type ---------------------------------------

_PARAMS = re.compile(r"\(.*\)")


def base_type(database_type):
    """'numeric(10,2)' -> 'numeric', 'bigint unsigned' -> 'bigint unsigned',
    'TIMESTAMP WITH TIME ZONE' -> 'timestamp with time zone'."""
    return _PARAMS.sub("", database_type).strip().lower()


def _timestamp(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return text  # 'infinity', BC dates: kept as the database wrote them


def _date(text):
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return text


def _time(text):
    try:
        return datetime.time.fromisoformat(text)
    except ValueError:
        return text


def _mysql_time(text):
    """MySQL TIME is a duration ('-838:59:59' to '838:59:59'), which
    mysqlclient (and SQLAlchemy's MySQL dialect) take as a timedelta."""
    match = re.fullmatch(r"(-?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?", text)
    if match is None:
        return text
    sign, hours, minutes, seconds, fraction = match.groups()
    delta = datetime.timedelta(
        hours=int(hours), minutes=int(minutes), seconds=int(seconds),
        microseconds=int((fraction or "0").ljust(6, "0")))
    return -delta if sign else delta


_INTERVAL = re.compile(
    r"(?:(?P<years>[+-]?\d+) years? ?)?(?:(?P<months>[+-]?\d+) mons? ?)?"
    r"(?:(?P<days>[+-]?\d+) days? ?)?"
    r"(?:(?P<sign>[+-])?(?P<hours>\d+):(?P<minutes>\d\d):(?P<seconds>\d\d)"
    r"(?:\.(?P<fraction>\d{1,6}))?)?")


def _pg_interval(text):
    """PostgreSQL's interval (IntervalStyle postgres: '1 year 2 mons -3 days
    +04:05:06.5') as a timedelta, with psycopg2's month of 30 days and year
    of 365; other styles stay text."""
    match = _INTERVAL.fullmatch(text)
    if not text or match is None:
        return text
    n = {k: int(v or 0) for k, v in match.groupdict().items()
         if k not in ("sign", "fraction")}
    try:
        clock = datetime.timedelta(
            hours=n["hours"], minutes=n["minutes"], seconds=n["seconds"],
            microseconds=int((match["fraction"] or "0").ljust(6, "0")))
        if match["sign"] == "-":
            clock = -clock
        return clock + datetime.timedelta(
            days=365 * n["years"] + 30 * n["months"] + n["days"])
    except OverflowError:  # past timedelta's 999999999 days
        return text


_DECIMAL_TYPES = {"numeric", "decimal", "number", "decimal unsigned"}
# Integers past int64 (MySQL's BIGINT UNSIGNED) travel as text; they are ints
# all the same, as mysqlclient returns them.
_TEXT_INTEGER_TYPES = {"bigint unsigned", "int unsigned", "integer unsigned",
                       "mediumint unsigned", "smallint unsigned",
                       "tinyint unsigned"}
TIMESTAMP_TYPES = {
    "timestamp", "timestamptz", "datetime", "timestamp without time zone",
    "timestamp with time zone",
}
_TIME_TYPES = {"time", "timetz", "time without time zone",
               "time with time zone"}


def converter(flavor, database_type):
    """The function turning a text cell into the Python value its database
    type means, or None when the text is the value (or for SQLite, whose
    values stay as stored)."""
    if flavor == "sqlite":
        return None
    kind = base_type(database_type)
    if kind in _DECIMAL_TYPES:
        return decimal.Decimal
    if kind in _TEXT_INTEGER_TYPES:
        return int
    if kind in TIMESTAMP_TYPES:
        return _timestamp
    if kind == "date":
        return _date
    if kind in _TIME_TYPES:
        return _mysql_time if flavor == "mysql" else _time
    if kind == "interval" and flavor == "postgresql":
        return _pg_interval
    if flavor == "postgresql" and kind.endswith("[]"):
        return _pg_array_of(kind[:-2])
    return None


# The elements of a PostgreSQL array whose own text is not their value
# (an array arrives as its text form, '{1,NULL,"a b"}'), as psycopg2 reads
# them; other element types stay text, or go through converter().
_PG_ELEMENTS = {
    "int2": int, "int4": int, "int8": int, "oid": int,
    "float4": float, "float8": float,
    "bool": lambda text: text == "t",
}


def _pg_array_of(element_type):
    convert = _PG_ELEMENTS.get(element_type) or converter("postgresql",
                                                          element_type)
    return lambda text: parse_pg_array(text, convert)


def parse_pg_array(text, convert=None):
    """A PostgreSQL array's text form as (nested) lists: elements split on
    commas, double-quoted ones with backslash escapes, unquoted NULL as
    None, each element through convert. Text that is not an array literal
    (a dimension prefix such as '[0:1]={...}') is returned as it is."""
    if not text.startswith("{"):
        return text
    stack = [[]]
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "{":
            stack.append([])
            i += 1
        elif c == "}":
            done = stack.pop()
            if not stack:
                return done
            stack[-1].append(done)
            i += 1
        elif c == ",":
            i += 1
        elif c == '"':
            j = i + 1
            chars = []
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    j += 1
                chars.append(text[j])
                j += 1
            value = "".join(chars)
            stack[-1].append(convert(value) if convert else value)
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ",}":
                j += 1
            value = text[i:j].strip()
            if value.upper() == "NULL":
                stack[-1].append(None)
            else:
                stack[-1].append(convert(value) if convert else value)
            i = j
    return text  # unbalanced: not an array literal after all


def python_values(column, data, flavor):
    """A column of a batch as a list of Python values (DB-API rows)."""
    values = data.values
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if data.nulls is not None:
        values = [None if null else v for v, null in zip(values, data.nulls)]
    if data.vector == "texts":
        convert = converter(flavor, column.database_type)
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
    return values
