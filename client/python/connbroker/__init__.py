"""connbroker: Streamlit's st.connection as a shared daemon, from Python.

- `connbroker.connection(name, type=None, max_entries=None, ttl=None,
  **kwargs)` mirrors st.connection for scripts without Streamlit: `query()`
  returns pandas DataFrames, `session()` a transaction, `reset()`.
- `connbroker.dbapi` is a PEP 249 module over the same connections.
- SQLAlchemy URLs `sqlite+connbroker:///NAME`, `postgresql+connbroker:///NAME`,
  `mysql+connbroker:///NAME` and `mariadb+connbroker:///NAME` go through the
  daemon with the stock dialect of each database.
"""

from connbroker.errors import (  # noqa: F401
    DatabaseError, DataError, Error, IntegrityError, InterfaceError,
    InternalError, NotSupportedError, OperationalError, ProgrammingError)

__version__ = "0.1.0"


def connection(name, type=None, max_entries=None, ttl=None, **kwargs):
    """st.connection(name, type, max_entries, ttl, **kwargs) without
    Streamlit: a SQLConnection-like object served by the daemon."""
    from connbroker._connection import SQLConnection

    return SQLConnection(name, type=type, max_entries=max_entries, ttl=ttl,
                         **kwargs)
