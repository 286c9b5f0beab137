// Broker: the daemon's handling of every call, free of gRPC.
//
// It resolves Connect requests against the secrets (config/), finds or builds
// the shared connection (ConnectionRegistry), runs queries through the
// result cache (QueryRun), and reports. The gRPC service is a thin shell that
// moves requests to worker threads and calls in here; a test or another
// transport could do the same. Thread-safe; calls may block (run them on
// worker threads).
#ifndef CONNBROKER_SERVER_BROKER_H_
#define CONNBROKER_SERVER_BROKER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "connbroker/config/broker_settings.h"
#include "connbroker/config/secrets.h"
#include "connbroker/config/spec.h"
#include "connbroker/v1/broker.pb.h"
#include "server/caller.h"
#include "server/clock.h"
#include "server/connection_registry.h"
#include "server/drivers/backend_budget.h"
#include "server/memory_budget.h"
#include "server/query_run.h"
#include "server/result_cache.h"

namespace connbroker::server {

// A session's transaction: one backend of one connection, pinned to the
// session until commit or rollback. Destroying it rolls back what is open
// and returns the backend (members go in reverse order: the backend first,
// then the call slot, then the connection).
struct PinnedTransaction {
  std::shared_ptr<Connection> connection;
  Connection::CallSlot call;  // a transaction counts as a call
  std::unique_ptr<PinnedBackend> backend;
};

class Broker {
 public:
  struct Options {
    config::BrokerSettings settings;
    std::vector<config::SecretsFile> secrets_files;
    config::EnvLookup env;  // for env:VAR names
    ConnectionRegistry::DatabaseFactory database_factory;
    // Backends open daemon-wide (for stats); the factory's pools take their
    // units from it. Null: not reported.
    const BackendBudget* backends = nullptr;
    // Runs blocking work on a worker thread; called from whichever thread
    // hands a waiting call its backend. Unset: runs it on that thread
    // (tests).
    std::function<void(std::function<void()>)> run_on_worker;
  };

  // Loads the secrets once; a failure does not stop the broker (it is
  // reported by Connect and Stats until a reload succeeds).
  Broker(Options options, const Clock* clock);

  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Re-reads the secrets files. On failure the last good secrets stay in
  // use and the error is reported; returns it. On success, connections whose
  // own section changed are forgotten (clients Connect again and get the new
  // configuration); the others keep running.
  absl::Status ReloadSecrets();

  // Re-reads the secrets once a change on disk (a file appeared, vanished,
  // or changed size, mtime or inode) has settled: the files must look the
  // same at two calls in a row, so a file being rewritten in place is not
  // read half-written. Returns whether it reloaded. Upkeep calls it.
  bool ReloadSecretsIfChanged();

  // Every call names its Caller: connection names are checked against
  // caller.names (PERMISSION_DENIED), session-scoped handles against
  // caller.session; stats, reset and listing every session's connections
  // need caller.admin, and a listing shows only names the caller may use.
  absl::StatusOr<v1::ConnectResponse> Connect(const v1::ConnectRequest& request,
                                              const Caller& caller);
  // `resume`: see QueryRun. With `pinned` (a session's transaction, on
  // request's connection) the statement runs on its backend, uncached.
  // With `only_if_live`, never blocks: a null run when the handle's
  // connection is not live (or the target is not a handle), instead of
  // building it.
  absl::StatusOr<std::unique_ptr<QueryRun>> StartQuery(
      const v1::QueryRequest& request, const Caller& caller,
      std::function<void()> resume, PinnedTransaction* pinned = nullptr,
      bool only_if_live = false);
  // Runs the statement on the connection's writer; `done` runs once with
  // the reply. Waiting for the writer holds no thread (the statement then
  // runs through run_on_worker); `cancel` (must outlive the call) removes
  // the wait or interrupts the statement. The resolving part (Connect may
  // build the connection) blocks: call it from a worker.
  using ExecuteDone = std::function<void(absl::StatusOr<v1::ExecuteResponse>)>;
  void Execute(const v1::ExecuteRequest& request, const Caller& caller,
               CancelSignal* cancel, ExecuteDone done);
  // Runs the statement on a session's transaction (blocking: call it from a
  // worker). Not retried: the transaction's work is on that backend.
  absl::StatusOr<v1::ExecuteResponse> ExecuteOn(PinnedTransaction& pinned,
                                                const std::string& sql,
                                                const v1::Params& params,
                                                CancelSignal* cancel);
  // Pins a backend of the connection `target` names to a session (Reserve
  // with `access`, then Database::Pin); `done` runs once, on a worker. The
  // resolving part blocks: call it from a worker. `cancel` must outlive the
  // call.
  using PinDone =
      std::function<void(absl::StatusOr<std::unique_ptr<PinnedTransaction>>)>;
  void Pin(const v1::Target& target, const Caller& caller, Access access,
           CancelSignal* cancel, PinDone done);
  // The connection `target` names: a handle (NOT_FOUND when unknown or
  // another session's), or a ConnectRequest resolved on the spot (which may
  // build the connection: blocking).
  absl::StatusOr<std::shared_ptr<Connection>> ResolveTarget(
      const v1::Target& target, const Caller& caller);

  absl::StatusOr<v1::ResetResponse> Reset(const v1::ResetRequest& request,
                                          const Caller& caller);
  absl::StatusOr<v1::ListConnectionsResponse> ListConnections(
      const v1::ListConnectionsRequest& request, const Caller& caller) const;
  absl::StatusOr<v1::GetStatsResponse> Stats(const Caller& caller) const;

  // The counters every call adds to (session streams count theirs here).
  BrokerCounters& counters() { return counters_; }

  // Counts a failed call (the service calls it once per error it returns).
  void CountError() { counters_.errors.fetch_add(1); }

  // Closes the idle backends of every connection at once (the backend
  // budget's reclaimer). Returns how many.
  int ShedIdleBackends();

  // Periodic upkeep (janitor): notice edited secrets files, expire
  // connections and results, close idle backends.
  void Upkeep();

  const config::BrokerSettings& settings() const { return settings_; }

 private:
  absl::StatusOr<ConnectOutcome> ConnectInternal(
      const v1::ConnectRequest& request, const Caller& caller);
  absl::StatusOr<ConnectOutcome> ConnectOnce(const v1::ConnectRequest& request,
                                             const Caller& caller);
  std::shared_ptr<const config::Secrets> CurrentSecrets(
      absl::Status* load_error) const;
  // After a reload: forgets the connections whose [connections.<name>]
  // section differs from `previous` (see ConnectionRegistry::ForgetNamed).
  void ForgetChangedConnections(const config::Secrets& previous);

  const config::BrokerSettings settings_;
  const std::vector<config::SecretsFile> secrets_files_;
  const config::EnvLookup env_;
  const std::function<void(std::function<void()>)> run_on_worker_;
  const BackendBudget* const backends_;
  const Clock* const clock_;
  const absl::Time started_;
  // Results collected for the cache and shared by identical queries in
  // flight, daemon-wide (limits.max_inflight_result_bytes).
  MemoryBudget inflight_results_;

  absl::Mutex reload_mu_;           // one reload at a time (janitor, SIGHUP)
  mutable absl::Mutex secrets_mu_;  // after reload_mu_ when both are held
  std::shared_ptr<const config::Secrets> secrets_ ABSL_GUARDED_BY(secrets_mu_);
  absl::Status secrets_error_ ABSL_GUARDED_BY(secrets_mu_);
  // What the secrets files looked like when last read (see FilesStamp), and
  // at the last check that saw them differ from it (a change settling).
  std::string secrets_stamp_ ABSL_GUARDED_BY(secrets_mu_);
  std::string changing_stamp_ ABSL_GUARDED_BY(secrets_mu_);

  ConnectionRegistry registry_;
  ResultCache results_;
  BrokerCounters counters_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_BROKER_H_
