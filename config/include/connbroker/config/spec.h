// ConnectionSpec: what a Connect call resolves to, following st.connection.
//
// ResolveSpec applies Streamlit's rules in one place: the name (or env:VAR),
// the type (request, else the section's `type`, else the name itself), the
// params (request kwargs over the secrets section, key by key, within the
// redirect policy), the scope and the per-type target. No I/O but what the
// given lookups do, and resolving the path of an ad-hoc SQLite file.
#ifndef CONNBROKER_CONFIG_SPEC_H_
#define CONNBROKER_CONFIG_SPEC_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "connbroker/config/broker_settings.h"
#include "connbroker/config/secrets.h"
#include "connbroker/config/sql_url.h"
#include "connbroker/config/value.h"

namespace connbroker::config {

// st.connection's first-party types.
inline constexpr char kTypeSql[] = "sql";
inline constexpr char kTypeSnowflake[] = "snowflake";
inline constexpr char kTypeSnowflakeCallersRights[] =
    "snowflake-callers-rights";
inline constexpr char kTypeSnowpark[] = "snowpark";

enum class Scope { kGlobal, kSession };
const char* ScopeName(Scope scope);

// A Connect call before resolution.
struct ConnectArgs {
  std::string name;
  std::string type;  // may be empty
  Params kwargs;
};

// Looks up an environment variable (std::getenv in the daemon, a map in tests).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

struct ConnectionSpec {
  std::string name;  // after env: resolution
  std::string type;  // canonical: "sql", ...
  // Merged params, secrets under kwargs, without `type` and `scope`.
  Params params;
  Scope scope = Scope::kGlobal;
  SqlTarget sql;      // for type "sql"
  PoolSettings pool;  // broker defaults, overridden by create_engine_kwargs.*
  // Redacted, for replies and logs: e.g. "sqlite:////srv/app.db".
  std::string description;

  // Equal for equal (name, type, params): the connection cache's key.
  std::string CanonicalKey() const;
};

// Resolves `args` against `secrets` under the daemon's `settings` (pool
// defaults, ad-hoc policy).
//
// Who decides where a connection points (DESIGN.md: "a shared daemon must not
// be redirected by its clients"):
//  - A name with a [connections.<name>] section: request kwargs override the
//    section key by key, except the routing keys url, dialect, driver, host,
//    port, database, username, password, query and query.<option>. A client
//    may pass one of those only with the section's own value (a no-op) or
//    when the section lists it in `allow_client_kwargs = ["database", ...]`
//    ("query" there allows every query option). Otherwise PERMISSION_DENIED
//    naming the key, never its value. Note that a client's url is refused
//    when the section is written as parts, and its parts when the section
//    has a url. create_engine_kwargs.*, scope and type stay free: they tune
//    pools or make a private copy, and their bounds are checked.
//  - `allow_attach` and `allow_client_kwargs` come only from the section: a
//    client setting either is PERMISSION_DENIED whatever the section says.
//    A section whose allow_client_kwargs lists anything but routing keys is
//    FAILED_PRECONDITION.
//  - A name with no section whose kwargs say where to connect (url or
//    dialect) is an ad-hoc connection: PERMISSION_DENIED unless
//    settings.allow_ad_hoc. When allowed, a SQLite file must resolve (made
//    absolute against the daemon's working directory, "..", "." and
//    symbolic links of its existing part resolved) strictly inside one of
//    settings.ad_hoc_sqlite_dirs, and must not be a file: URI (in-memory is
//    always fine); a network database must name its host, every host it
//    names (host, libpq's query.host and comma lists, MySQL's
//    query.unix_socket) must match settings.ad_hoc_hosts, and only query
//    options that tune the session are accepted (not hostaddr, port,
//    service, sslkey, ssl_ca, ...). This is the one place ResolveSpec reads
//    the file system.
// Other errors, each with its own message:
//  - env:VAR unset: FAILED_PRECONDITION naming VAR;
//  - no type anywhere: FAILED_PRECONDITION naming the three places a type
//    could come from (the request, `type` in [connections.<name>], a name
//    that is itself a type) -- and, when the name has no section, NOT_FOUND
//    listing the configured names instead;
//  - unknown type: INVALID_ARGUMENT listing the known ones;
//  - a first-party type this build lacks (snowflake, snowpark): UNIMPLEMENTED
//    saying which backend library it needs;
//  - sql with nothing to connect to and no section: NOT_FOUND listing the
//    configured names; with a section: INVALID_ARGUMENT naming the missing
//    part;
//  - bad create_engine_kwargs / scope values: INVALID_ARGUMENT naming the key
//    and its range.
// Type aliases: Streamlit class paths (streamlit.connections.SQLConnection,
// ...SnowflakeConnection, ...SnowparkConnection,
// ...SnowflakeCallersRightsConnection) mean the built-in types.
// create_engine_kwargs map to PoolSettings over settings.pool:
//   pool_size (1..1024)            -> pool_size
//   max_overflow (0..1024; -1, SQLAlchemy's "no limit", is refused)
//                                  -> max_overflow
//   pool_timeout (duration)        -> acquire_timeout
//   pool_recycle (-1: never, or a duration >= 1s) -> recycle
//   pool_pre_ping (bool)           -> pre_ping
//   connect_args.timeout           -> busy_timeout (SQLite)
//   connect_args.connect_timeout   -> connect_timeout
//   min_idle (0..pool_size), idle_timeout (>= 1s), max_waiting (0..65536):
//   connbroker's own. Other create_engine_kwargs (echo, ...) are ignored.
absl::StatusOr<ConnectionSpec> ResolveSpec(const ConnectArgs& args,
                                           const Secrets& secrets,
                                           const EnvLookup& env,
                                           const BrokerSettings& settings);

// Canonical type name for `type` (aliases applied), or the error above.
absl::StatusOr<std::string> CanonicalType(const std::string& type);

// The first-party type names, sorted (for messages).
std::vector<std::string> KnownTypes();

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SPEC_H_
