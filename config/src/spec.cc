// ResolveSpec: st.connection's rules for name, type, params, scope and pool.
#include "connbroker/config/spec.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "connbroker/config/duration.h"

namespace connbroker::config {
namespace {

constexpr char kEnvPrefix[] = "env:";
constexpr char kPluginPrefix[] = "plugin:";
constexpr int kMaxPoolSize = 1024;

// "no connection named 'x': ..." -- shared by the no-type and the
// nothing-to-connect-to cases, which both mean the section is missing.
absl::Status NoSuchConnection(const std::string& name, const Secrets& secrets) {
  const std::vector<std::string> names = secrets.ConnectionNames();
  const std::string where =
      secrets.files().empty()
          ? std::string(" (no secrets file found)")
          : absl::StrCat(" in ", absl::StrJoin(secrets.files(), ", "));
  return absl::NotFoundError(absl::StrCat(
      "no connection named '", name, "': no [connections.", name, "] section",
      where,
      "; configured: ", names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

bool IsFirstPartyName(const std::string& name) {
  for (const std::string& type : KnownTypes()) {
    if (name == type) return true;
  }
  return false;
}

absl::Status ApplyEngineKwargs(const Params& params, PoolSettings& pool) {
  if (auto it = params.find("create_engine_kwargs.pool_size");
      it != params.end()) {
    const auto* size = std::get_if<int64_t>(&it->second);
    if (size == nullptr || *size < 1 || *size > kMaxPoolSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("create_engine_kwargs.pool_size must be an integer "
                       "from 1 to ",
                       kMaxPoolSize));
    }
    pool.pool_size = static_cast<int>(*size);
  }
  if (auto it = params.find("create_engine_kwargs.pool_timeout");
      it != params.end()) {
    absl::StatusOr<absl::Duration> timeout =
        ParseDuration(it->second, "create_engine_kwargs.pool_timeout");
    if (!timeout.ok()) return timeout.status();
    pool.acquire_timeout = *timeout;
  }
  if (auto it = params.find("create_engine_kwargs.connect_args.timeout");
      it != params.end()) {
    absl::StatusOr<absl::Duration> timeout =
        ParseDuration(it->second, "create_engine_kwargs.connect_args.timeout");
    if (!timeout.ok()) return timeout.status();
    pool.busy_timeout = *timeout;
  }
  // Other create_engine_kwargs (echo, pool_recycle, ...) have no meaning
  // for the broker's pools and are ignored, as the request still works.
  return absl::OkStatus();
}

}  // namespace

const char* ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kGlobal:
      return "global";
    case Scope::kSession:
      return "session";
  }
  return "global";
}

std::vector<std::string> KnownTypes() {
  return {kTypeSnowflake, kTypeSnowflakeCallersRights, kTypeSnowpark, kTypeSql};
}

absl::StatusOr<std::string> CanonicalType(const std::string& type) {
  // Streamlit accepts the connection class itself; its public path and the
  // module path both name the same built-in type.
  static constexpr std::pair<const char*, const char*> kAliases[] = {
      {"streamlit.connections.SQLConnection", kTypeSql},
      {"streamlit.connections.sql_connection.SQLConnection", kTypeSql},
      {"streamlit.connections.SnowflakeConnection", kTypeSnowflake},
      {"streamlit.connections.snowflake_connection.SnowflakeConnection",
       kTypeSnowflake},
      {"streamlit.connections.SnowflakeCallersRightsConnection",
       kTypeSnowflakeCallersRights},
      {"streamlit.connections.snowflake_connection."
       "SnowflakeCallersRightsConnection",
       kTypeSnowflakeCallersRights},
      {"streamlit.connections.SnowparkConnection", kTypeSnowpark},
      {"streamlit.connections.snowpark_connection.SnowparkConnection",
       kTypeSnowpark},
  };
  if (IsFirstPartyName(type)) return type;
  for (const auto& [alias, canonical] : kAliases) {
    if (type == alias) return std::string(canonical);
  }
  if (absl::StartsWith(type, kPluginPrefix)) {
    return absl::UnimplementedError(
        "connection type plugins (plugin:...) are not supported by this "
        "build");
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown connection type '", type,
      "'; known types: ", absl::StrJoin(KnownTypes(), ", "),
      " (Streamlit class paths such as streamlit.connections.SQLConnection "
      "are accepted too)"));
}

std::string ConnectionSpec::CanonicalKey() const {
  // Length-prefixed fields and CanonicalParams keep this injective. It holds
  // the params verbatim, passwords included: it lives only in the daemon's
  // memory as a map key and must never be logged or sent.
  return absl::StrCat(name.size(), ":", name, "|", type.size(), ":", type, "|",
                      ScopeName(scope), "|", CanonicalParams(params));
}

absl::StatusOr<ConnectionSpec> ResolveSpec(const ConnectArgs& args,
                                           const Secrets& secrets,
                                           const EnvLookup& env,
                                           const PoolSettings& pool_defaults) {
  ConnectionSpec spec;

  // 1. The name, possibly from the daemon's environment.
  spec.name = args.name;
  if (absl::StartsWith(spec.name, kEnvPrefix)) {
    const std::string var = spec.name.substr(sizeof(kEnvPrefix) - 1);
    if (var.empty()) {
      return absl::InvalidArgumentError(
          "connection name 'env:' needs a variable name: env:VAR");
    }
    std::optional<std::string> value = env ? env(var) : std::nullopt;
    if (!value.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "connection name 'env:", var, "': environment variable ", var,
          " is not set in the connbroker daemon's environment"));
    }
    spec.name = *std::move(value);
  }
  if (spec.name.empty()) {
    return absl::InvalidArgumentError("connection name is empty");
  }

  // 2. Params: the section, then the request's kwargs key by key.
  const Params* section = secrets.FindConnection(spec.name);
  if (section != nullptr) spec.params = *section;
  for (const auto& [key, value] : args.kwargs) spec.params[key] = value;

  // 3. The type: request, else `type` in the params, else the name.
  std::string type = args.type;
  if (type.empty()) {
    if (auto it = spec.params.find("type"); it != spec.params.end()) {
      const auto* text = std::get_if<std::string>(&it->second);
      if (text == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("connection '", spec.name, "': 'type' must be text"));
      }
      type = *text;
    }
  }
  if (type.empty() && IsFirstPartyName(spec.name)) type = spec.name;
  if (type.empty()) {
    if (section == nullptr) return NoSuchConnection(spec.name, secrets);
    return absl::FailedPreconditionError(absl::StrCat(
        "connection '", spec.name,
        "' has no type: pass type=..., set type = \"...\" in [connections.",
        spec.name,
        "], or use a name that is a type (sql, snowflake, snowpark)"));
  }
  absl::StatusOr<std::string> canonical = CanonicalType(type);
  if (!canonical.ok()) return canonical.status();
  spec.type = *std::move(canonical);
  if (spec.type != kTypeSql) {
    return absl::UnimplementedError(absl::StrCat(
        "connection type '", spec.type,
        "' needs the Snowflake backend (Streamlit uses "
        "snowflake-connector-python / snowflake-snowpark-python); this "
        "connbroker build has the sql type only"));
  }

  // 4. Scope, then drop what is not a connection parameter.
  if (auto it = spec.params.find("scope"); it != spec.params.end()) {
    const auto* text = std::get_if<std::string>(&it->second);
    if (text != nullptr && *text == "global") {
      spec.scope = Scope::kGlobal;
    } else if (text != nullptr && *text == "session") {
      spec.scope = Scope::kSession;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "connection '", spec.name, "': scope must be 'global' or 'session'",
          text != nullptr ? absl::StrCat(", not '", *text, "'") : ""));
    }
  }
  spec.params.erase("type");
  spec.params.erase("scope");

  // 5. The sql target.
  if (section == nullptr && !spec.params.contains("url") &&
      !spec.params.contains("dialect")) {
    return NoSuchConnection(spec.name, secrets);
  }
  absl::StatusOr<SqlTarget> sql = SqlTargetFromParams(spec.name, spec.params);
  if (!sql.ok()) return sql.status();
  spec.sql = *std::move(sql);

  // 6. Pools.
  spec.pool = pool_defaults;
  if (absl::Status status = ApplyEngineKwargs(spec.params, spec.pool);
      !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection '", spec.name, "': ", status.message()));
  }
  spec.description = spec.sql.Describe();
  return spec;
}

}  // namespace connbroker::config
