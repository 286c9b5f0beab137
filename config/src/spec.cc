// ResolveSpec: st.connection's rules for name, type, params, scope and pool.
#include "connbroker/config/spec.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "connbroker/config/name_pattern.h"
#include "connbroker/config/shown.h"

namespace connbroker::config {
namespace {

constexpr char kEnvPrefix[] = "env:";
constexpr char kPluginPrefix[] = "plugin:";
constexpr char kAllowClientKwargs[] = "allow_client_kwargs";
constexpr char kAllowAttach[] = "allow_attach";
// Longest connection name or type a request may carry.
constexpr size_t kMaxNameBytes = 256;

// The params that say where a connection points. A shared daemon must not be
// redirected by its clients, so a request may set them only where the
// section allows it. A new param a driver reads to decide where to connect
// (or which files to read) belongs here.
constexpr const char* kRoutingKeys[] = {
    "url",      "dialect",  "driver",   "host",  "port",
    "database", "username", "password", "query",
};

bool IsRoutingKey(const std::string& key) {
  for (const char* routing : kRoutingKeys) {
    if (key == routing) return true;
  }
  return absl::StartsWith(key, "query.");
}

// Params only the operator's section may hold: allow_attach lets SQL read
// and write other files; allow_client_kwargs is the policy itself.
bool IsSectionOnlyKey(const std::string& key) {
  return key == kAllowAttach || key == kAllowClientKwargs ||
         absl::StartsWith(key, absl::StrCat(kAllowClientKwargs, "."));
}

// A client's key, for a message: keys are the client's text, so bound them.
std::string ShownKey(const std::string& key) { return Shown(key); }

// How messages refer to a connection. A name read from the daemon's
// environment (env:VAR) is not echoed back to the client that wrote env:VAR.
struct Names {
  std::string connection;  // "connection 'db'"
  std::string section;     // "[connections.db]"
};

Names NamesFor(const ConnectArgs& args, const std::string& name) {
  if (absl::StartsWith(args.name, kEnvPrefix)) {
    return {absl::StrCat("connection '", Shown(args.name), "'"),
            "[connections.<name>]"};
  }
  return {absl::StrCat("connection '", name, "'"),
          absl::StrCat("[connections.", name, "]")};
}

absl::Status SectionOnly(const Names& names, const std::string& key) {
  return absl::PermissionDeniedError(absl::StrCat(
      names.connection, ": a client may not set '", ShownKey(key),
      "' (only the ", names.section, " section in the daemon's secrets can)"));
}

// The section's allow_client_kwargs: a list of routing keys ("query" means
// every query option), written as a TOML array (flattened to
// allow_client_kwargs.0, .1, ...) or a single string.
absl::StatusOr<std::set<std::string>> AllowedClientKwargs(
    const Names& names, const Params& section) {
  std::set<std::string> allowed;
  const std::string prefix = absl::StrCat(kAllowClientKwargs, ".");
  for (auto it = section.lower_bound(kAllowClientKwargs);
       it != section.end() &&
       (it->first == kAllowClientKwargs || absl::StartsWith(it->first, prefix));
       ++it) {
    const auto* key = std::get_if<std::string>(&it->second);
    if (key == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          names.connection, ": allow_client_kwargs in ", names.section,
          " must be a list of key names, such as [\"database\"]"));
    }
    if (!IsRoutingKey(*key) || *key == "query.") {
      return absl::FailedPreconditionError(absl::StrCat(
          names.connection, ": allow_client_kwargs in ", names.section,
          " lists '", ShownKey(*key), "', ",
          IsSectionOnlyKey(*key)
              ? "which a client may never set"
              : "which needs no permission (clients may set it anyway)",
          "; it may list ", absl::StrJoin(kRoutingKeys, ", "),
          " (every query option) or query.<option>"));
    }
    allowed.insert(*key);
  }
  return allowed;
}

// Request kwargs may tune a configured connection but not redirect it: a
// routing key must be absent from the kwargs, equal the section's value, or
// be listed in the section's allow_client_kwargs. The value is never quoted:
// it may be a password.
absl::Status CheckClientKwargs(const Names& names, const Params& section,
                               const Params& kwargs) {
  absl::StatusOr<std::set<std::string>> allowed =
      AllowedClientKwargs(names, section);
  if (!allowed.ok()) return allowed.status();
  for (const auto& [key, value] : kwargs) {
    if (IsSectionOnlyKey(key)) return SectionOnly(names, key);
    if (!IsRoutingKey(key)) continue;
    // Clients often pass what the section already says; that changes nothing.
    if (auto it = section.find(key); it != section.end() && it->second == value)
      continue;
    if (allowed->contains(key) ||
        (absl::StartsWith(key, "query.") && allowed->contains("query"))) {
      continue;
    }
    return absl::PermissionDeniedError(
        absl::StrCat(names.connection, ": a client may not set '",
                     ShownKey(key), "' (the ", names.section,
                     " section decides where it points; list the key in its "
                     "allow_client_kwargs to allow it)"));
  }
  return absl::OkStatus();
}

// --- Ad-hoc connections: no section, the target from the kwargs alone. ---

namespace fs = std::filesystem;

// Resolves `path` as the daemon will open it: relative to the working
// directory, then "..", "." and symbolic links of its existing part resolved.
absl::StatusOr<fs::path> ResolvedPath(const fs::path& path) {
  std::error_code error;
  fs::path absolute = path.is_absolute() ? path : fs::absolute(path, error);
  if (error) return absl::InternalError(error.message());
  fs::path resolved = fs::weakly_canonical(absolute, error);
  if (error) return absl::InternalError(error.message());
  resolved = resolved.lexically_normal();
  // "/srv/dbs/" and "/srv/dbs" are one directory.
  if (!resolved.has_filename() && resolved != resolved.root_path()) {
    resolved = resolved.parent_path();
  }
  return resolved;
}

// True when `path` lies strictly below `dir` (both resolved).
bool IsBelow(const fs::path& path, const fs::path& dir) {
  auto [d, p] = std::mismatch(dir.begin(), dir.end(), path.begin(), path.end());
  return d == dir.end() && p != path.end();
}

absl::Status CheckAdHocSqlitePath(const Names& names, const SqlTarget& sql,
                                  const BrokerSettings& settings) {
  if (sql.IsSqliteMemory()) return absl::OkStatus();
  const absl::Status refused = absl::PermissionDeniedError(absl::StrCat(
      names.connection,
      ": an ad-hoc SQLite database must lie inside one of the directories in "
      "broker.toml's [security] ad_hoc_sqlite_dirs (after resolving '..' and "
      "symbolic links), and this one does not; configure it as a ",
      names.section, " section instead"));
  // A "file:" name is a URI to a SQLite built with SQLITE_USE_URI, and would
  // be opened by what follows "file:", not by the path checked here.
  if (absl::StartsWithIgnoreCase(sql.database, "file:")) {
    return absl::PermissionDeniedError(absl::StrCat(
        names.connection,
        ": an ad-hoc SQLite database must be a plain path, not a file: URI"));
  }
  absl::StatusOr<fs::path> path = ResolvedPath(fs::path(sql.database));
  if (!path.ok()) return refused;
  for (const std::string& dir_text : settings.ad_hoc_sqlite_dirs) {
    absl::StatusOr<fs::path> dir = ResolvedPath(fs::path(dir_text));
    if (dir.ok() && dir->is_absolute() && IsBelow(*path, *dir)) {
      return absl::OkStatus();
    }
  }
  return refused;
}

// One host the connection would reach, and the param that named it.
struct Endpoint {
  std::string host;
  std::string source;
};

bool HostAllowed(const std::string& host, int port,
                 const std::vector<HostPattern>& patterns) {
  if (absl::StartsWith(host, "/")) {
    absl::StatusOr<fs::path> socket = ResolvedPath(fs::path(host));
    if (!socket.ok()) return false;
    for (const HostPattern& pattern : patterns) {
      if (!pattern.socket) continue;
      absl::StatusOr<fs::path> allowed = ResolvedPath(fs::path(pattern.host));
      if (allowed.ok() && *allowed == *socket) return true;
    }
    return false;
  }
  std::string name = absl::AsciiStrToLower(host);
  // The URL form of an IPv6 address keeps its brackets in some spellings.
  if (absl::StartsWith(name, "[") && absl::EndsWith(name, "]")) {
    name = name.substr(1, name.size() - 2);
  }
  if (std::optional<std::string> ipv6 = CanonicalIpv6(name)) {
    name = *std::move(ipv6);
  }
  for (const HostPattern& pattern : patterns) {
    if (pattern.socket || pattern.host != name) continue;
    if (!pattern.port.has_value() || *pattern.port == port) return true;
  }
  return false;
}

absl::Status CheckAdHocNetworkTarget(const Names& names, const SqlTarget& sql,
                                     const BrokerSettings& settings) {
  const bool postgres = sql.dialect == "postgresql";
  // Query options that only tune the session. Anything else could redirect
  // the connection (hostaddr, port, service, a defaults file) or make the
  // daemon read its own files (sslkey, passfile, ssl_ca, ...).
  static const std::set<std::string> kPostgresOptions = {
      "host",
      "application_name",
      "channel_binding",
      "client_encoding",
      "connect_timeout",
      "gssencmode",
      "keepalives",
      "keepalives_count",
      "keepalives_idle",
      "keepalives_interval",
      "options",
      "sslmode",
      "target_session_attrs",
      "tcp_user_timeout",
  };
  static const std::set<std::string> kMysqlOptions = {"unix_socket", "charset",
                                                      "ssl", "ssl_verify_cert"};
  const std::set<std::string>& options =
      postgres ? kPostgresOptions : kMysqlOptions;
  for (const auto& [key, value] : sql.query) {
    if (!options.contains(key)) {
      return absl::PermissionDeniedError(absl::StrCat(
          names.connection, ": an ad-hoc ", sql.dialect,
          " connection may not set the query option '", ShownKey(key),
          "'; it may set ", absl::StrJoin(options, ", ")));
    }
  }

  std::vector<Endpoint> endpoints;
  // libpq takes a comma-separated list of hosts and tries each.
  auto add = [&](const std::string& text, const std::string& source) {
    if (!postgres) {
      endpoints.push_back({text, source});
      return;
    }
    for (absl::string_view host : absl::StrSplit(text, ',')) {
      endpoints.push_back({std::string(host), source});
    }
  };
  if (!sql.host.empty()) add(sql.host, "host");
  if (auto it = sql.query.find(postgres ? "host" : "unix_socket");
      it != sql.query.end()) {
    add(it->second, absl::StrCat("query.", it->first));
  }
  if (endpoints.empty()) {
    // Without a host the client library falls back to its own defaults
    // (PGHOST, the default socket), which nobody listed.
    return absl::PermissionDeniedError(
        absl::StrCat(names.connection, ": an ad-hoc ", sql.dialect,
                     " connection must name its host"));
  }

  std::vector<HostPattern> patterns;
  for (const std::string& entry : settings.ad_hoc_hosts) {
    // LoadBrokerSettings has checked them; one that does not parse here
    // simply matches nothing.
    if (absl::StatusOr<HostPattern> p = ParseHostPattern(entry); p.ok()) {
      patterns.push_back(*std::move(p));
    }
  }
  const int port = sql.port.value_or(postgres ? 5432 : 3306);
  for (const Endpoint& endpoint : endpoints) {
    if (endpoint.host.empty() || !HostAllowed(endpoint.host, port, patterns)) {
      return absl::PermissionDeniedError(absl::StrCat(
          names.connection,
          ": ad-hoc connections may reach only the hosts listed in "
          "broker.toml's [security] ad_hoc_hosts, and the one given by '",
          endpoint.source, "' (port ", port,
          ") is not among them; configure it as a ", names.section,
          " section instead"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAdHocTarget(const Names& names, const SqlTarget& sql,
                              const BrokerSettings& settings) {
  if (sql.dialect == "sqlite") {
    return CheckAdHocSqlitePath(names, sql, settings);
  }
  return CheckAdHocNetworkTarget(names, sql, settings);
}

// "no connection named 'x': ..." -- shared by the no-type and the
// nothing-to-connect-to cases, which both mean the section is missing.
absl::Status NoSuchConnection(const std::string& name, const Secrets& secrets) {
  const std::vector<std::string> names = secrets.ConnectionNames();
  const std::string where =
      secrets.files().empty()
          ? std::string(" (no secrets file found)")
          : absl::StrCat(" in ", absl::StrJoin(secrets.files(), ", "));
  return absl::NotFoundError(absl::StrCat(
      "no connection named '", Shown(name), "': no [connections.", Shown(name),
      "] section", where,
      "; configured: ", names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

bool IsFirstPartyName(const std::string& name) {
  for (const std::string& type : KnownTypes()) {
    if (name == type) return true;
  }
  return false;
}

// create_engine_kwargs -> PoolSettings: SQLAlchemy's names, and
// connbroker's own for what SQLAlchemy's QueuePool lacks.
constexpr std::pair<const char*, const char*> kEngineKwargs[] = {
    {"pool_size", "pool_size"},
    {"max_overflow", "max_overflow"},
    {"pool_timeout", "acquire_timeout"},
    {"pool_recycle", "recycle"},
    {"pool_pre_ping", "pre_ping"},
    // SQLite's sqlite3.connect(timeout=): how long to wait for a lock.
    {"connect_args.timeout", "busy_timeout"},
    // libpq's and the MySQL clients' connect_timeout.
    {"connect_args.connect_timeout", "connect_timeout"},
    {"min_idle", "min_idle"},
    {"idle_timeout", "idle_timeout"},
    {"max_waiting", "max_waiting"},
};

absl::Status ApplyEngineKwargs(const Params& params, PoolSettings& pool) {
  const int default_min_idle = pool.min_idle;
  bool min_idle_given = false;
  for (const auto& [name, field] : kEngineKwargs) {
    const std::string key = absl::StrCat("create_engine_kwargs.", name);
    auto it = params.find(key);
    if (it == params.end()) continue;
    if (absl::Status s = SetPoolSetting(field, it->second, key, pool);
        !s.ok()) {
      return s;
    }
    if (absl::string_view(field) == "min_idle") min_idle_given = true;
  }
  if (min_idle_given) {
    if (pool.min_idle > pool.pool_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "create_engine_kwargs.min_idle must be an integer from 0 to "
          "pool_size (",
          pool.pool_size, ")"));
    }
  } else {
    // A smaller pool_size alone takes the broker's min_idle down with it.
    pool.min_idle = std::min(default_min_idle, pool.pool_size);
  }
  // Other create_engine_kwargs (echo, connect_args.check_same_thread, ...)
  // have no meaning for the broker's pools and are ignored, so the same
  // secrets work under Streamlit and here.
  return absl::OkStatus();
}

// Whether the sql driver reads `key` of a resolved spec. Everything else a
// section or a client may write (create_engine_kwargs.echo, keys meant for
// another library) is ignored, as Streamlit's SQLConnection ignores it, and
// is dropped from the spec: kept, it would make every distinct value a
// distinct connection, and a client could open connections without bound
// by varying a key that changes nothing.
bool IsUsedParam(const std::string& key) {
  if (IsRoutingKey(key) || key == kAllowAttach) return true;
  if (!absl::StartsWith(key, "create_engine_kwargs.")) return false;
  const absl::string_view name =
      absl::string_view(key).substr(sizeof("create_engine_kwargs.") - 1);
  for (const auto& [kwarg, field] : kEngineKwargs) {
    if (name == kwarg) return true;
  }
  return false;
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
      "unknown connection type '", Shown(type),
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
                                           const BrokerSettings& settings) {
  ConnectionSpec spec;

  // 1. The name, possibly from the daemon's environment. Names and types
  // are short identifiers; bounding them bounds every message that quotes
  // them.
  if (args.name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection name '", Shown(args.name), "' is too long (",
                     args.name.size(), " bytes; at most ", kMaxNameBytes, ")"));
  }
  if (args.type.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection type '", Shown(args.type), "' is too long (",
                     args.type.size(), " bytes; at most ", kMaxNameBytes, ")"));
  }
  spec.name = args.name;
  const bool from_env = absl::StartsWith(spec.name, kEnvPrefix);
  if (from_env) {
    const std::string var = spec.name.substr(sizeof(kEnvPrefix) - 1);
    if (var.empty()) {
      return absl::InvalidArgumentError(
          "connection name 'env:' needs a variable name: env:VAR");
    }
    if (!MatchesAnyPattern(var, settings.env_names)) {
      return absl::PermissionDeniedError(
          absl::StrCat("connection name 'env:", var,
                       "': the daemon does not let clients "
                       "read environment variable ",
                       var, " (broker.toml: list it in [security] env_names)"));
    }
    std::optional<std::string> value = env ? env(var) : std::nullopt;
    if (!value.has_value()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "connection name 'env:", var, "': environment variable ", var,
          " is not set in the connbroker daemon's environment"));
    }
    // The value itself is the daemon's, not the client's: it is echoed only
    // once it is known to name a configured section (whose names every
    // client may list anyway).
    if (secrets.FindConnection(*value) == nullptr) {
      const std::vector<std::string> configured = secrets.ConnectionNames();
      return absl::NotFoundError(absl::StrCat(
          "connection name 'env:", var,
          "': the variable does not name a configured [connections.<name>] "
          "section; configured: ",
          configured.empty() ? "none" : absl::StrJoin(configured, ", ")));
    }
    spec.name = *std::move(value);
  }
  if (spec.name.empty()) {
    return absl::InvalidArgumentError("connection name is empty");
  }

  // 2. Params: the section, then the request's kwargs key by key -- except
  // that a client may not redirect a configured connection.
  const Names names = NamesFor(args, spec.name);
  const Params* section = secrets.FindConnection(spec.name);
  if (section != nullptr) {
    if (absl::Status s = CheckClientKwargs(names, *section, args.kwargs);
        !s.ok()) {
      return s;
    }
    spec.params = *section;
  } else {
    for (const auto& [key, value] : args.kwargs) {
      if (IsSectionOnlyKey(key)) return SectionOnly(names, key);
    }
  }
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
  // The policy has been applied; it is not a connection parameter.
  for (auto it = spec.params.lower_bound(kAllowClientKwargs);
       it != spec.params.end() &&
       (it->first == kAllowClientKwargs ||
        absl::StartsWith(it->first, absl::StrCat(kAllowClientKwargs, ".")));) {
    it = spec.params.erase(it);
  }

  // 5. The sql target. Without a section, the kwargs alone say where to
  // connect: an ad-hoc connection, which the daemon must allow.
  if (section == nullptr) {
    if (!spec.params.contains("url") && !spec.params.contains("dialect")) {
      return NoSuchConnection(spec.name, secrets);
    }
    if (!settings.allow_ad_hoc) {
      const std::vector<std::string> configured = secrets.ConnectionNames();
      return absl::PermissionDeniedError(absl::StrCat(
          names.connection, " has no ", names.section,
          " section and this daemon does not allow ad-hoc connections "
          "(broker.toml: allow_ad_hoc = true in [security]); configured: ",
          configured.empty() ? "none" : absl::StrJoin(configured, ", ")));
    }
  }
  absl::StatusOr<SqlTarget> sql = SqlTargetFromParams(spec.name, spec.params);
  if (!sql.ok()) return sql.status();
  spec.sql = *std::move(sql);
  if (section == nullptr) {
    if (absl::Status s = CheckAdHocTarget(names, spec.sql, settings); !s.ok()) {
      return s;
    }
  }

  // 6. Pools.
  spec.pool = settings.pool;
  if (absl::Status status = ApplyEngineKwargs(spec.params, spec.pool);
      !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("connection '", spec.name, "': ", status.message()));
  }
  for (auto it = spec.params.begin(); it != spec.params.end();) {
    it = IsUsedParam(it->first) ? std::next(it) : spec.params.erase(it);
  }
  spec.description = spec.sql.Describe();
  return spec;
}

}  // namespace connbroker::config
