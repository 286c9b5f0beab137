// ConnectionSpec: what a Connect call resolves to, following st.connection.
//
// ResolveSpec applies Streamlit's rules in one place: the name (or env:VAR),
// the type (request, else the section's `type`, else the name itself), the
// params (request kwargs over the secrets section, key by key), the scope and
// the per-type target. Pure: no I/O but what the given lookups do.
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

// Resolves `args` against `secrets`. Errors, each with its own message:
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
//  - bad create_engine_kwargs / scope values: INVALID_ARGUMENT.
// Type aliases: Streamlit class paths (streamlit.connections.SQLConnection,
// ...SnowflakeConnection, ...SnowparkConnection,
// ...SnowflakeCallersRightsConnection) mean the built-in types.
// create_engine_kwargs.{pool_size, pool_timeout, connect_args.timeout} map to
// PoolSettings {readers, acquire_timeout, busy_timeout}.
absl::StatusOr<ConnectionSpec> ResolveSpec(const ConnectArgs& args,
                                           const Secrets& secrets,
                                           const EnvLookup& env,
                                           const PoolSettings& pool_defaults);

// Canonical type name for `type` (aliases applied), or the error above.
absl::StatusOr<std::string> CanonicalType(const std::string& type);

// The first-party type names, sorted (for messages).
std::vector<std::string> KnownTypes();

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SPEC_H_
