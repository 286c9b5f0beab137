"""What a statement is, from its first keyword: the client's one guess.

The daemon has two calls, Query (rows) and Execute (an effect and a row
count); DB-API has one, execute(). The first keyword decides, as in the
CLI's `connbroker shell`: SELECT, WITH, VALUES, SHOW, ... return rows, and so
does any statement with RETURNING. Comments, whitespace and opening
parentheses before the first keyword are skipped.
"""

import functools
import re

_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_WORD = re.compile(r"[A-Za-z_]+")
_ROW_KEYWORDS = frozenset({
    "SELECT", "WITH", "VALUES", "SHOW", "PRAGMA", "EXPLAIN", "TABLE",
    "DESCRIBE", "DESC", "FETCH",
})
# Statements the sqlite3 module opens a transaction before (its legacy
# isolation_level behaviour, which SQLAlchemy's SQLite dialect expects).
_SQLITE_DML = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
# Quoted text, which must not be taken for a keyword.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")


def first_keyword(sql):
    match = _WORD.match(sql, _LEADING.match(sql).end())
    return match.group(0).upper() if match else ""


@functools.lru_cache(maxsize=1024)
def returns_rows(sql):
    if first_keyword(sql) in _ROW_KEYWORDS:
        return True
    return _RETURNING.search(_QUOTED.sub("", sql)) is not None


@functools.lru_cache(maxsize=1024)
def is_sqlite_dml(sql):
    return first_keyword(sql) in _SQLITE_DML


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def qmark_to_dollar(sql):
    """Rewrites `?` placeholders as PostgreSQL's `$1, $2, ...`, outside
    quoted text, dollar-quoted text and comments: DB-API's qmark style on a
    database that numbers its parameters. Returns (sql, count)."""
    out = []
    count = 0
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "'" or c == '"':
            # E'...' strings take backslash escapes.
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE"
            j = i + 1
            while j < n:
                if escapes and sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif c == "/" and sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(sql[i:j])
            i = j
        elif c == "$":
            tag = _DOLLAR_TAG.match(sql, i)
            if tag is None:
                out.append(c)
                i += 1
                continue
            end = sql.find(tag.group(0), tag.end())
            j = n if end < 0 else end + len(tag.group(0))
            out.append(sql[i:j])
            i = j
        elif c == "?":
            count += 1
            out.append(f"${count}")
            i += 1
        else:
            j = i + 1
            while j < n and sql[j] not in "'\"-/$?":
                j += 1
            out.append(sql[i:j])
            i = j
    return "".join(out), count
