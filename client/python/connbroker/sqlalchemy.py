"""SQLAlchemy dialects that run through connbrokerd.

    from sqlalchemy import create_engine
    engine = create_engine("postgresql+connbroker:///analytics")

Each dialect is SQLAlchemy's own dialect of its database (SQL, DDL and
reflection compile for the real backend) with connbroker.dbapi as the
DB-API. The URL's database part is the broker connection's name, the name
st.connection would take; the query string holds `target` (the daemon, else
$CONNBROKER_TARGET, else its default socket), `type`, `ttl`, `max_entries`,
and any other st.connection kwarg. Host, user and password never appear in
the URL: the daemon's secrets file holds them.

Importing this module registers the four drivers with SQLAlchemy, for code
that runs without the installed package's entry points (a build tree).

Written to the API SQLAlchemy 1.4 and 2.x share.
"""

import decimal
import re
import weakref

from sqlalchemy import exc
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect

from connbroker import _columns

# The daemon's BeginRequest.Isolation numbers, by SQL name.
_ISOLATION = {
    "READ UNCOMMITTED": 1,
    "READ COMMITTED": 2,
    "REPEATABLE READ": 3,
    "SERIALIZABLE": 4,
}


def _import_dbapi(cls=None):
    from connbroker import dbapi

    return dbapi


def _raw(connection):
    """The connbroker.dbapi Connection behind SQLAlchemy's pool proxy: an
    attribute set on the proxy would not reach it."""
    return getattr(connection, "dbapi_connection", None) or connection


def _float_to_decimal(scale):
    def process(value):
        if not isinstance(value, float):
            return value
        return decimal.Decimal("%.*f" % (scale, value)) if scale is not None \
            else decimal.Decimal(repr(value))
    return process


def _to_float(value):
    return None if value is None else float(value)


class _BrokerDialect:
    """What the four dialects share: the DB-API module, URL to connect()
    arguments, isolation levels as the daemon's transactions take them, and
    disconnect detection. Comes first in each dialect's bases."""

    driver = "connbroker"
    supports_statement_cache = True
    supports_sane_rowcount = True
    # Cursor.executemany adds up the rowcounts of its statements.
    supports_sane_multi_rowcount = True
    supports_server_side_cursors = False
    returns_unicode_strings = getattr(
        sqltypes.String, "RETURNS_UNICODE", True)
    description_encoding = None

    dbapi = classmethod(_import_dbapi)  # SQLAlchemy 1.4

    def __init__(self, *args, **kwargs):
        # connbroker.dbapi takes `?` and `:name` alike: without this, the
        # module's paramstyle ("qmark") would win over the dialect's.
        kwargs.setdefault("paramstyle", self.default_paramstyle)
        super().__init__(*args, **kwargs)
        # Isolation levels set on connections, kept here rather than as
        # attributes on the DB-API's objects.
        self._levels = weakref.WeakKeyDictionary()

    # -- connecting --

    def create_connect_args(self, url):
        if url.username or url.password or url.host or url.port:
            raise exc.ArgumentError(
                f"{url.drivername} URLs take no user, password, host or "
                "port: the daemon's secrets file holds credentials. Write "
                f"{url.drivername}:///NAME for [connections.NAME].")
        if not url.database:
            raise exc.ArgumentError(
                f"no connection name: write {url.drivername}:///NAME")
        kwargs = {}
        for key, value in url.query.items():
            if not isinstance(value, str):
                raise exc.ArgumentError(
                    f"URL option {key!r} is given more than once")
            kwargs[key] = value
        if "max_entries" in kwargs:
            kwargs["max_entries"] = int(kwargs["max_entries"])
        if "ttl" in kwargs:
            # Seconds as a number; Streamlit's "1h"-style text stays text.
            try:
                kwargs["ttl"] = float(kwargs["ttl"])
            except ValueError:
                pass
        return [url.database], kwargs

    def is_disconnect(self, e, connection, cursor):
        if not isinstance(e, self.dbapi.Error):
            return False
        if isinstance(e, self.dbapi.InterfaceError) and "closed" in str(e):
            return True
        # The daemon is gone, or the stream broke inside a transaction.
        code = getattr(e.code, "name", None)
        return code == "UNAVAILABLE" or "connection to the daemon broke" \
            in str(e)

    def do_ping(self, dbapi_connection):
        conn = _raw(dbapi_connection)
        if conn.in_transaction or conn.autocommit:
            return super().do_ping(dbapi_connection)
        # Outside a transaction, ping in autocommit so the ping does not
        # open one (PostgreSQL, MySQL) and pin a backend in the daemon.
        conn.autocommit = True
        try:
            return super().do_ping(dbapi_connection)
        finally:
            conn.autocommit = False

    # -- isolation --

    def get_isolation_level_values(self, dbapi_connection):  # SQLAlchemy 2
        return ["AUTOCOMMIT", *self._isolation_names]

    @property
    def _isolation_names(self):
        return list(_ISOLATION)

    def set_isolation_level(self, dbapi_connection, level):
        conn = _raw(dbapi_connection)
        level = level.replace("_", " ").upper()
        if level == "AUTOCOMMIT":
            conn.autocommit = True
            self._levels.pop(conn, None)
            return
        if level not in self._isolation_names:
            raise exc.ArgumentError(
                f"Invalid value {level!r} for isolation_level. Valid "
                f"isolation levels for {self.name} are "
                f"{', '.join(self.get_isolation_level_values(conn))}")
        conn.autocommit = False
        # The database's default needs no word when a transaction begins.
        if level == getattr(self, "default_isolation_level", None):
            self._levels.pop(conn, None)
        else:
            self._levels[conn] = level

    def get_isolation_level(self, dbapi_connection):
        conn = _raw(dbapi_connection)
        if conn.autocommit:
            return "AUTOCOMMIT"
        if conn in self._levels:
            return self._levels[conn]
        return super().get_isolation_level(conn)

    def do_begin(self, dbapi_connection):
        # Transactions otherwise begin by themselves before the first
        # statement; one with an isolation level must begin with it, since
        # a SET SESSION would reach only one of the daemon's backends.
        conn = _raw(dbapi_connection)
        level = self._levels.get(conn)
        if level and not conn.autocommit and not conn.in_transaction:
            conn.begin(isolation=_ISOLATION[level])

    def do_commit(self, dbapi_connection):
        dbapi_connection.commit()

    def do_rollback(self, dbapi_connection):
        dbapi_connection.rollback()


# --- PostgreSQL -------------------------------------------------------------

_PG_FLOATS = {"float4", "float8", "real", "double precision", "double"}
_PG_EXACT = {"numeric", "decimal", "int2", "int4", "int8", "smallint",
             "integer", "bigint", "oid", "int64"}


class _PGNumeric(sqltypes.Numeric):
    """Numeric results by the column's type name, which is the type code in
    cursor.description here (psycopg2's dialect keys on type OIDs)."""

    def bind_processor(self, dialect):
        return None  # Decimal travels as exact text

    def result_processor(self, dialect, coltype):
        kind = _columns.base_type(coltype) if isinstance(coltype, str) else ""
        if self.asdecimal:
            if kind in _PG_EXACT:
                return None  # Decimal or int already
            return _float_to_decimal(self._effective_decimal_return_scale)
        if kind in _PG_FLOATS:
            return None
        return _to_float


class _PGFloat(_PGNumeric, sqltypes.Float):
    pass


class PGDialect_connbroker(_BrokerDialect, PGDialect):  # noqa: N801
    """PostgreSQL through the daemon: `postgresql+connbroker:///NAME`."""

    supports_statement_cache = True
    default_paramstyle = "named"  # the daemon numbers :name as $1, $2
    supports_native_decimal = True
    supports_native_boolean = True
    colspecs = dict(PGDialect.colspecs)
    colspecs.update({sqltypes.Numeric: _PGNumeric, sqltypes.Float: _PGFloat})
    import_dbapi = classmethod(_import_dbapi)  # SQLAlchemy 2


# --- MySQL and MariaDB ------------------------------------------------------

_MYSQL_ERROR_NUMBER = re.compile(r"\(MySQL error (\d+)\)\s*$")


class MySQLDialect_connbroker(_BrokerDialect, MySQLDialect):  # noqa: N801
    """MySQL through the daemon: `mysql+connbroker:///NAME` (a MariaDB
    server is recognised from its version, as with any MySQL driver)."""

    supports_statement_cache = True
    default_paramstyle = "named"  # the daemon binds :name itself
    supports_native_decimal = True
    import_dbapi = classmethod(_import_dbapi)

    def _detect_charset(self, connection):
        # mysqlclient asks its connection object; here the server says.
        charset = connection.exec_driver_sql(
            "SELECT @@character_set_client").scalar()
        return charset or "utf8mb4"

    def _extract_error_code(self, exception):
        # The daemon ends a MySQL error's message with "(MySQL error N)";
        # SQLAlchemy's MySQL dialect keys on N (1146, no such table, for
        # reflection; the lost-connection numbers for is_disconnect).
        match = _MYSQL_ERROR_NUMBER.search(str(exception))
        if match:
            return int(match.group(1))
        if getattr(exception, "sqlstate", "") == "42S02":
            return 1146
        return None


class MariaDBDialect_connbroker(MariaDBDialect,  # noqa: N801
                                MySQLDialect_connbroker):
    """MariaDB through the daemon: `mariadb+connbroker:///NAME`, with
    SQLAlchemy's MariaDB behaviour (is_mariadb, its identifier rules)."""

    supports_statement_cache = True
    import_dbapi = classmethod(_import_dbapi)


# --- SQLite -----------------------------------------------------------------

class SQLiteDialect_connbroker(_BrokerDialect, SQLiteDialect):  # noqa: N801
    """SQLite through the daemon: `sqlite+connbroker:///NAME`. Values come
    back as stored (as from the sqlite3 module), and the base dialect's
    types parse dates and times from their text."""

    supports_statement_cache = True
    default_paramstyle = "qmark"
    supports_native_decimal = False
    import_dbapi = classmethod(_import_dbapi)

    def __init__(self, *args, dbapi=None, **kwargs):
        # The base dialect reads the SQLite library's version from the
        # DB-API module; that library is the daemon's, known only once
        # connected, so the flags keep their defaults (a current SQLite)
        # and initialize() checks.
        super().__init__(*args, **kwargs)
        self.dbapi = dbapi

    @property
    def _isolation_names(self):
        return ["READ UNCOMMITTED", "SERIALIZABLE"]

    def _get_server_version_info(self, connection):
        text = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(part) for part in text.split("."))

    def initialize(self, connection):
        super().initialize(connection)
        version = self.server_version_info or ()
        if version and version < (3, 7, 11):
            self.supports_multivalues_insert = False
        if version and version < (3, 10, 0):
            self._broken_dotted_colnames = True
        if version and version < (3, 35):  # RETURNING (SQLAlchemy 2)
            self.insert_returning = self.update_returning = \
                self.delete_returning = False


def _register():
    for backend, cls in (("sqlite", "SQLiteDialect_connbroker"),
                         ("postgresql", "PGDialect_connbroker"),
                         ("mysql", "MySQLDialect_connbroker"),
                         ("mariadb", "MariaDBDialect_connbroker")):
        registry.register(f"{backend}.connbroker", __name__, cls)


_register()
