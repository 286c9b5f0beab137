// Broker: Connect, Query, Execute, Reset and reporting, without gRPC.
#include "server/broker.h"

#include <sys/stat.h>

#include <cmath>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "connbroker/config/shown.h"
#include "server/logging.h"
#include "server/status_mapping.h"

namespace connbroker::server {
namespace {

config::Value FromProto(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return value.bool_value();
    case v1::Value::kInt64Value:
      return value.int64_value();
    case v1::Value::kDoubleValue:
      return value.double_value();
    case v1::Value::kTextValue:
      return value.text_value();
    case v1::Value::kBlobValue:
      return config::Blob{value.blob_value()};
    case v1::Value::kNullValue:
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return std::monostate{};
}

config::Params ToParams(
    const google::protobuf::Map<std::string, v1::Value>& kwargs) {
  config::Params params;
  for (const auto& [key, value] : kwargs) params.emplace(key, FromProto(value));
  return params;
}

int64_t UnixMicros(absl::Time time) { return absl::ToUnixMicros(time); }

RegistryLimits RegistryLimitsOf(const config::DaemonLimits& limits) {
  RegistryLimits out;
  out.max_connections = limits.max_connections;
  out.max_handles = limits.max_handles;
  out.handle_idle_timeout = limits.handle_idle_timeout;
  out.max_caches = limits.max_connection_caches;
  return out;
}

absl::Status MayNotUse(const Caller& caller, absl::string_view name) {
  return absl::PermissionDeniedError(absl::StrCat(
      caller.who, " may not use connection '", config::Shown(name), "'"));
}

v1::ExecuteResponse ExecuteResponseOf(const ExecuteResult& result,
                                      const Connection& connection) {
  v1::ExecuteResponse response;
  response.set_rows_affected(result.rows_affected);
  response.set_last_insert_id(result.last_insert_id);
  response.set_handle(connection.handle());
  return response;
}

absl::Status NeedsAdmin(const Caller& caller, absl::string_view what) {
  return absl::PermissionDeniedError(absl::StrCat(
      what, " is an admin call, and ", caller.who, " is not an admin"));
}

// A fingerprint of the files' metadata: equal while none of them changed.
// Editors often replace a file (new inode) rather than rewrite it, hence the
// inode beside size and mtime.
std::string FilesStamp(const std::vector<config::SecretsFile>& files) {
  std::string stamp;
  for (const config::SecretsFile& file : files) {
    struct stat info;
    if (::stat(file.path.c_str(), &info) != 0) {
      absl::StrAppend(&stamp, file.path, ":absent;");
      continue;
    }
    absl::StrAppend(&stamp, file.path, ":", info.st_ino, ":", info.st_size, ":",
                    info.st_mtim.tv_sec, ".", info.st_mtim.tv_nsec, ";");
  }
  return stamp;
}

}  // namespace

Broker::Broker(Options options, const Clock* clock)
    : settings_(std::move(options.settings)),
      secrets_files_(std::move(options.secrets_files)),
      env_(std::move(options.env)),
      run_on_worker_(options.run_on_worker
                         ? std::move(options.run_on_worker)
                         : [](std::function<void()> work) { work(); }),
      backends_(options.backends),
      clock_(clock),
      started_(clock->Now()),
      inflight_results_(settings_.limits.max_inflight_result_bytes),
      registry_(clock, std::move(options.database_factory),
                RegistryLimitsOf(settings_.limits)),
      results_(clock, settings_.result_cache_bytes,
               settings_.result_cache_entry_bytes) {
  ReloadSecrets().IgnoreError();  // reported by ReloadSecrets itself
}

absl::Status Broker::ReloadSecrets() {
  absl::MutexLock reloading(&reload_mu_);
  // Stamped before reading, so an edit made while reading shows as a change
  // at the next check.
  std::string stamp = FilesStamp(secrets_files_);
  absl::StatusOr<config::Secrets> loaded =
      config::Secrets::Load(secrets_files_);
  if (loaded.ok() && FilesStamp(secrets_files_) != stamp) {
    // Written to while being read: what was read may be half of it.
    loaded = absl::UnavailableError(
        "a secrets file changed while it was read; it will be read again "
        "once it stops changing");
    stamp.clear();  // never equal to the files: the next check sees a change
  }
  std::shared_ptr<const config::Secrets> previous;
  {
    absl::MutexLock lock(&secrets_mu_);
    secrets_stamp_ = std::move(stamp);
    changing_stamp_.clear();
    if (!loaded.ok()) {
      secrets_error_ = loaded.status();
      spdlog::error("secrets not loaded{}: {}",
                    secrets_ != nullptr ? " (keeping the last good ones)" : "",
                    loaded.status().message());
      return loaded.status();
    }
    previous = std::exchange(
        secrets_, std::make_shared<const config::Secrets>(*std::move(loaded)));
    secrets_error_ = absl::OkStatus();
    spdlog::info("secrets loaded from {} file(s); connections: {}",
                 secrets_->files().size(), secrets_->ConnectionNames().size());
  }
  if (previous != nullptr) ForgetChangedConnections(*previous);
  return absl::OkStatus();
}

void Broker::ForgetChangedConnections(const config::Secrets& previous) {
  std::shared_ptr<const config::Secrets> current;
  {
    absl::MutexLock lock(&secrets_mu_);
    current = secrets_;
  }
  std::set<std::string> names;
  for (const std::string& name : previous.ConnectionNames()) names.insert(name);
  for (const std::string& name : current->ConnectionNames()) names.insert(name);
  for (const std::string& name : names) {
    const config::Params* before = previous.FindConnection(name);
    const config::Params* after = current->FindConnection(name);
    if (before != nullptr && after != nullptr && *before == *after) continue;
    // The section changed, appeared or went away: its connections no longer
    // say what the secrets say. Forgetting their handles makes clients
    // Connect again and resolve the new section; the others keep running.
    std::vector<std::string> keys = registry_.ForgetNamed(name);
    int64_t results = 0;
    for (const std::string& key : keys) results += results_.DropOwner(key);
    if (!keys.empty()) {
      spdlog::info(
          "secrets section '{}' changed: {} connection(s) and {} cached "
          "result(s) dropped; clients will connect again",
          name, keys.size(), results);
    }
  }
}

std::shared_ptr<const config::Secrets> Broker::CurrentSecrets(
    absl::Status* load_error) const {
  absl::MutexLock lock(&secrets_mu_);
  *load_error = secrets_error_;
  return secrets_;
}

absl::StatusOr<ConnectOutcome> Broker::ConnectInternal(
    const v1::ConnectRequest& request, const Caller& caller) {
  counters_.connect_calls.fetch_add(1, std::memory_order_relaxed);
  // A reload that changes the section while its connection is being opened
  // makes the registry refuse what was built from the old one (ABORTED):
  // resolve the new section and try again.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    absl::StatusOr<ConnectOutcome> outcome = ConnectOnce(request, caller);
    if (outcome.ok() || outcome.status().code() != absl::StatusCode::kAborted ||
        attempt == kAttempts) {
      return outcome;
    }
  }
}

absl::StatusOr<ConnectOutcome> Broker::ConnectOnce(
    const v1::ConnectRequest& request, const Caller& caller) {
  // A name read from the environment is checked once resolved; any other
  // before anything is resolved, so that a limited caller learns nothing
  // about connections it may not use.
  const bool from_env = absl::StartsWith(request.name(), "env:");
  if (!from_env && !caller.MayUse(request.name())) {
    return MayNotUse(caller, request.name());
  }
  absl::Status load_error;
  std::shared_ptr<const config::Secrets> secrets = CurrentSecrets(&load_error);
  if (secrets == nullptr) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            "no connection can be resolved until the secrets load: ",
            load_error.message())),
        v1::ErrorDetail::CONFIG);
  }
  absl::StatusOr<config::ConnectionSpec> spec =
      config::ResolveSpec(config::ConnectArgs{request.name(), request.type(),
                                              ToParams(request.kwargs())},
                          *secrets, env_, settings_);
  if (!spec.ok()) return WithReason(spec.status(), v1::ErrorDetail::CONFIG);
  if (from_env && !caller.MayUse(spec->name)) {
    return MayNotUse(caller, request.name());
  }

  CacheSettings cache;
  cache.max_entries = request.has_max_entries()
                          ? std::optional<int64_t>(request.max_entries())
                          : settings_.default_max_entries;
  if (request.has_ttl_seconds()) {
    if (!std::isfinite(request.ttl_seconds()) || request.ttl_seconds() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ttl_seconds must be a positive number of seconds, got ",
                       request.ttl_seconds()));
    }
    cache.ttl = absl::Seconds(request.ttl_seconds());
  } else {
    cache.ttl = settings_.default_ttl;
  }
  absl::StatusOr<ConnectOutcome> outcome =
      registry_.Connect(*spec, cache, caller.session);
  if (outcome.ok() && outcome->created) {
    spdlog::info("connection {} created: name={} type={} scope={} -> {}",
                 outcome->connection->handle(), spec->name, spec->type,
                 config::ScopeName(spec->scope), spec->description);
  }
  return outcome;
}

absl::StatusOr<v1::ConnectResponse> Broker::Connect(
    const v1::ConnectRequest& request, const Caller& caller) {
  absl::StatusOr<ConnectOutcome> outcome = ConnectInternal(request, caller);
  if (!outcome.ok()) return outcome.status();
  const Connection& connection = *outcome->connection;
  v1::ConnectResponse response;
  response.set_handle(connection.handle());
  response.set_name(connection.spec().name);
  response.set_type(connection.spec().type);
  response.set_description(connection.spec().description);
  response.set_created(outcome->created);
  response.set_scope(config::ScopeName(connection.spec().scope));
  return response;
}

absl::StatusOr<std::shared_ptr<Connection>> Broker::ResolveTarget(
    const v1::Target& target, const Caller& caller) {
  switch (target.target_case()) {
    case v1::Target::kHandle: {
      absl::StatusOr<std::shared_ptr<Connection>> connection =
          registry_.Get(target.handle(), caller.session);
      if (!connection.ok() &&
          connection.status().code() == absl::StatusCode::kNotFound) {
        return WithReason(connection.status(), v1::ErrorDetail::UNKNOWN_HANDLE);
      }
      if (connection.ok() && !caller.MayUse((*connection)->spec().name)) {
        return MayNotUse(caller, (*connection)->spec().name);
      }
      return connection;
    }
    case v1::Target::kConnect: {
      absl::StatusOr<ConnectOutcome> outcome =
          ConnectInternal(target.connect(), caller);
      if (!outcome.ok()) return outcome.status();
      return std::move(outcome->connection);
    }
    case v1::Target::TARGET_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "the request names no connection: set target.handle (from Connect) or "
      "target.connect");
}

absl::StatusOr<std::unique_ptr<QueryRun>> Broker::StartQuery(
    const v1::QueryRequest& request, const Caller& caller,
    std::function<void()> resume, PinnedTransaction* pinned,
    bool only_if_live) {
  std::shared_ptr<Connection> live;
  if (only_if_live) {
    // Anything but a live connection is left to the full path, which
    // words its errors and counts the query then.
    if (!request.target().has_handle() || pinned != nullptr) return nullptr;
    absl::StatusOr<std::shared_ptr<Connection>> found =
        registry_.GetIfLive(request.target().handle(), caller.session);
    if (!found.ok() || *found == nullptr ||
        !caller.MayUse((*found)->spec().name)) {
      return nullptr;
    }
    live = *std::move(found);
  }
  counters_.queries.fetch_add(1, std::memory_order_relaxed);
  if (request.sql().empty()) {
    return absl::InvalidArgumentError("the query has no sql");
  }
  if (request.chunk_rows() < 0) {
    return absl::InvalidArgumentError("chunk_rows must not be negative");
  }
  absl::Duration ttl = absl::ZeroDuration();
  if (request.has_ttl_seconds()) {
    if (!std::isfinite(request.ttl_seconds()) || request.ttl_seconds() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("ttl_seconds must be a non-negative number, got ",
                       request.ttl_seconds()));
    }
    ttl = absl::Seconds(request.ttl_seconds());
  }
  absl::StatusOr<std::shared_ptr<Connection>> connection =
      pinned != nullptr ? pinned->connection
      : live != nullptr ? live
                        : ResolveTarget(request.target(), caller);
  if (!connection.ok()) return connection.status();
  if (pinned != nullptr) {
    // A transaction sees its own uncommitted writes: a cached result would
    // be another snapshot, and caching its result would show them to others.
    ttl = absl::ZeroDuration();
  }

  QueryLimits limits;
  limits.chunk_rows = request.chunk_rows() > 0 ? request.chunk_rows()
                                               : settings_.default_chunk_rows;
  limits.batch_bytes = settings_.batch_bytes;
  limits.max_attempts = settings_.max_attempts;
  limits.inflight = &inflight_results_;
  // A transaction holds the connection's call slot already.
  Connection::CallSlot slot;
  if (pinned == nullptr) {
    absl::StatusOr<Connection::CallSlot> started =
        (*connection)->StartCall(settings_.limits.max_calls_per_connection);
    if (!started.ok()) {
      counters_.calls_refused.fetch_add(1, std::memory_order_relaxed);
      return started.status();
    }
    slot = *std::move(started);
  }
  auto run = std::make_unique<QueryRun>(
      *std::move(connection), request.sql(), request.params(), ttl, limits,
      &results_, &counters_, clock_, std::move(resume));
  if (pinned != nullptr) {
    run->UsePinned(pinned->backend.get());
  } else {
    run->HoldCallSlot(std::move(slot));
  }
  return run;
}

absl::StatusOr<v1::ExecuteResponse> Broker::ExecuteOn(PinnedTransaction& pinned,
                                                      const std::string& sql,
                                                      const v1::Params& params,
                                                      CancelSignal* cancel) {
  counters_.executes.fetch_add(1, std::memory_order_relaxed);
  if (sql.empty())
    return absl::InvalidArgumentError("the statement has no sql");
  counters_.backend_executions.fetch_add(1, std::memory_order_relaxed);
  absl::StatusOr<ExecuteResult> result =
      pinned.backend->Execute(sql, params, cancel);
  if (!result.ok()) return result.status();
  return ExecuteResponseOf(*result, *pinned.connection);
}

void Broker::Pin(const v1::Target& target, const Caller& caller, Access access,
                 CancelSignal* cancel, PinDone done) {
  absl::StatusOr<std::shared_ptr<Connection>> resolved =
      ResolveTarget(target, caller);
  if (!resolved.ok()) {
    done(resolved.status());
    return;
  }
  auto pinned = std::make_shared<PinnedTransaction>();
  pinned->connection = *std::move(resolved);
  absl::StatusOr<Connection::CallSlot> call =
      pinned->connection->StartCall(settings_.limits.max_calls_per_connection);
  if (!call.ok()) {
    counters_.calls_refused.fetch_add(1, std::memory_order_relaxed);
    done(call.status());
    return;
  }
  pinned->call = *std::move(call);
  Database& database = pinned->connection->database();
  database.Reserve(
      access, cancel,
      [this, pinned,
       done = std::move(done)](absl::StatusOr<Reservation> backend) mutable {
        if (!backend.ok()) {
          done(backend.status());
          return;
        }
        // std::function needs a copyable task; the reservation is move-only.
        auto held = std::make_shared<Reservation>(*std::move(backend));
        run_on_worker_([pinned, done = std::move(done), held]() mutable {
          absl::StatusOr<std::unique_ptr<PinnedBackend>> backend =
              pinned->connection->database().Pin(std::move(*held));
          if (!backend.ok()) {
            done(backend.status());
            return;
          }
          auto owned = std::make_unique<PinnedTransaction>();
          owned->connection = pinned->connection;
          owned->call = std::move(pinned->call);
          owned->backend = *std::move(backend);
          done(std::move(owned));
        });
      });
}

void Broker::Execute(const v1::ExecuteRequest& request, const Caller& caller,
                     CancelSignal* cancel, ExecuteDone done) {
  counters_.executes.fetch_add(1, std::memory_order_relaxed);
  if (request.sql().empty()) {
    done(absl::InvalidArgumentError("the statement has no sql"));
    return;
  }
  absl::StatusOr<std::shared_ptr<Connection>> resolved =
      ResolveTarget(request.target(), caller);
  if (!resolved.ok()) {
    done(resolved.status());
    return;
  }
  std::shared_ptr<Connection> connection = *std::move(resolved);
  absl::StatusOr<Connection::CallSlot> call =
      connection->StartCall(settings_.limits.max_calls_per_connection);
  if (!call.ok()) {
    counters_.calls_refused.fetch_add(1, std::memory_order_relaxed);
    done(call.status());
    return;
  }
  // Held until the reply is sent (std::function needs a copyable capture).
  auto slot = std::make_shared<Connection::CallSlot>(*std::move(call));
  Database& database = connection->database();
  database.Reserve(
      Access::kWrite, cancel,
      [this, connection = std::move(connection), &request, cancel,
       done = std::move(done),
       slot](absl::StatusOr<Reservation> backend) mutable {
        if (!backend.ok()) {
          done(backend.status());
          return;
        }
        // std::function needs a copyable task; the reservation is move-only.
        auto held = std::make_shared<Reservation>(*std::move(backend));
        run_on_worker_([this, connection = std::move(connection), &request,
                        cancel, done = std::move(done), held, slot]() mutable {
          // Not retried: a write whose backend broke may have committed,
          // and running it twice is worse than reporting the failure.
          counters_.backend_executions.fetch_add(1, std::memory_order_relaxed);
          absl::StatusOr<ExecuteResult> result = connection->database().Execute(
              request.sql(), request.params(), std::move(*held), cancel);
          if (!result.ok()) {
            done(result.status());
            return;
          }
          done(ExecuteResponseOf(*result, *connection));
        });
      });
}

absl::StatusOr<v1::ResetResponse> Broker::Reset(const v1::ResetRequest& request,
                                                const Caller& caller) {
  if (!caller.admin) return NeedsAdmin(caller, "Reset");
  absl::StatusOr<std::shared_ptr<Connection>> connection =
      ResolveTarget(request.target(), caller);
  if (!connection.ok()) return connection.status();
  counters_.resets.fetch_add(1, std::memory_order_relaxed);
  v1::ResetResponse response;
  response.set_handle((*connection)->handle());
  response.set_backends_closed((*connection)->database().Reset());
  response.set_cached_results_dropped(results_.DropOwner((*connection)->key()));
  spdlog::info("connection {} reset: {} backend(s), {} cached result(s)",
               response.handle(), response.backends_closed(),
               response.cached_results_dropped());
  return response;
}

absl::StatusOr<v1::ListConnectionsResponse> Broker::ListConnections(
    const v1::ListConnectionsRequest& request, const Caller& caller) const {
  if (request.all_sessions() && !caller.admin) {
    return NeedsAdmin(caller, "ListConnections of every session");
  }
  absl::flat_hash_map<std::string, std::string> key_of_handle;
  for (const std::shared_ptr<Connection>& live : registry_.LiveConnections()) {
    key_of_handle[live->handle()] = live->key();
  }
  v1::ListConnectionsResponse response;
  for (const ConnectionSnapshot& snapshot :
       registry_.List(ListFilter{caller.session, request.all_sessions()})) {
    // A limited caller sees the connections it may use, nothing else.
    if (!caller.MayUse(snapshot.name)) continue;
    v1::ConnectionInfo* info = response.add_connections();
    info->set_handle(snapshot.handle);
    info->set_name(snapshot.name);
    info->set_type(snapshot.type);
    info->set_description(snapshot.description);
    info->set_scope(config::ScopeName(snapshot.scope));
    info->set_live(snapshot.live);
    if (snapshot.settings.max_entries) {
      info->set_max_entries(*snapshot.settings.max_entries);
    }
    if (snapshot.settings.ttl) {
      info->set_ttl_seconds(absl::ToDoubleSeconds(*snapshot.settings.ttl));
    }
    info->set_clients(snapshot.joins);
    if (snapshot.live) {
      info->set_created_unix_micros(UnixMicros(snapshot.created));
      if (snapshot.expires) {
        info->set_expires_unix_micros(UnixMicros(*snapshot.expires));
      }
      info->set_queries(snapshot.queries);
      *info->mutable_pool() = snapshot.pool;
      auto key = key_of_handle.find(snapshot.handle);
      if (key != key_of_handle.end()) {
        info->set_cached_results(results_.CountOwner(key->second));
      }
    }
  }
  return response;
}

absl::StatusOr<v1::GetStatsResponse> Broker::Stats(const Caller& caller) const {
  if (!caller.admin) return NeedsAdmin(caller, "GetStats");
  RegistryStats registry = registry_.Stats();
  ResultCacheStats results = results_.Stats();
  v1::GetStatsResponse stats;
  stats.set_connections_live(registry.live);
  stats.set_connections_created(registry.created);
  stats.set_handles(registry.handles);
  stats.set_evicted_ttl(registry.evicted_ttl);
  stats.set_evicted_max_entries(registry.evicted_max_entries);
  stats.set_connect_calls(counters_.connect_calls.load());
  stats.set_queries(counters_.queries.load());
  stats.set_executes(counters_.executes.load());
  stats.set_backend_executions(counters_.backend_executions.load());
  stats.set_result_cache_hits(results.hits);
  stats.set_result_cache_misses(results.misses);
  stats.set_result_cache_entries(results.entries);
  stats.set_result_cache_bytes(results.bytes);
  stats.set_single_flight_joins(results.joins);
  stats.set_retries(counters_.retries.load());
  stats.set_errors(counters_.errors.load());
  stats.set_resets(counters_.resets.load());
  stats.set_evicted_for_room(registry.evicted_for_room);
  stats.set_handles_reclaimed(registry.handles_reclaimed);
  stats.set_connection_caches(registry.caches);
  int64_t refused = registry.refused + counters_.calls_refused.load();
  if (backends_ != nullptr) refused += backends_->refused();
  stats.set_refused_by_limits(refused);
  if (backends_ != nullptr) {
    stats.set_backends_open(backends_->open());
    stats.set_max_backends(backends_->limit());
  }
  stats.set_inflight_result_bytes(inflight_results_.in_use());
  stats.set_max_inflight_result_bytes(inflight_results_.limit());
  stats.set_inflight_budget_refusals(counters_.inflight_budget_refusals.load());
  stats.set_open_files(CountOpenFiles());
  stats.set_sessions_open(counters_.sessions_open.load());
  stats.set_transactions_open(counters_.transactions_open.load());
  stats.set_idle_transactions_rolled_back(
      counters_.idle_transactions_rolled_back.load());
  stats.set_uptime_seconds(absl::ToInt64Seconds(clock_->Now() - started_));
  absl::Status load_error;
  std::shared_ptr<const config::Secrets> secrets = CurrentSecrets(&load_error);
  stats.set_config_error(std::string(load_error.message()));
  if (secrets != nullptr) {
    for (const std::string& file : secrets->files()) {
      stats.add_secrets_files(file);
    }
  }
  return stats;
}

bool Broker::ReloadSecretsIfChanged() {
  std::string stamp = FilesStamp(secrets_files_);
  {
    absl::MutexLock lock(&secrets_mu_);
    if (stamp == secrets_stamp_) {
      changing_stamp_.clear();
      return false;
    }
    if (stamp != changing_stamp_) {
      // Changed since the last check: an editor may still be writing. Read
      // it once it looks the same at the next check.
      changing_stamp_ = std::move(stamp);
      return false;
    }
  }
  spdlog::info("a secrets file changed on disk: reloading");
  ReloadSecrets().IgnoreError();  // logged and reported by ReloadSecrets
  return true;
}

int Broker::ShedIdleBackends() {
  int shed = 0;
  for (const std::shared_ptr<Connection>& connection :
       registry_.LiveConnections()) {
    shed += connection->database().ShedIdle();
  }
  if (shed > 0) {
    spdlog::info("backend budget exhausted: closed {} idle backend(s)", shed);
  }
  return shed;
}

void Broker::Upkeep() {
  ReloadSecretsIfChanged();
  registry_.EvictExpired();
  results_.EvictExpired();
  for (const std::shared_ptr<Connection>& connection :
       registry_.LiveConnections()) {
    connection->database().Maintain();
  }
}

}  // namespace connbroker::server
