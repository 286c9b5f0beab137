// Connection: one cached, shared connection -- what st.connection returns.
//
// Owned by std::shared_ptr: the registry holds one reference while the
// connection is cached, and every in-flight call holds another. An evicted
// connection therefore lives until its last call finishes; then its Database
// is destroyed and closes its backends. Thread-safe.
#ifndef CONNBROKER_SERVER_CONNECTION_H_
#define CONNBROKER_SERVER_CONNECTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "connbroker/config/spec.h"
#include "server/drivers/database.h"

namespace connbroker::server {

class Connection {
 public:
  Connection(std::string handle, std::string key, config::ConnectionSpec spec,
             std::unique_ptr<Database> database, absl::Time created)
      : handle_(std::move(handle)),
        key_(std::move(key)),
        spec_(std::move(spec)),
        database_(std::move(database)),
        created_(created) {}

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& handle() const { return handle_; }
  // The cache key: spec key plus session id for session-scoped connections.
  // Also keys the connection's cached results.
  const std::string& key() const { return key_; }
  const config::ConnectionSpec& spec() const { return spec_; }
  Database& database() const { return *database_; }
  absl::Time created() const { return created_; }

  void CountQuery() { queries_.fetch_add(1, std::memory_order_relaxed); }
  int64_t queries() const { return queries_.load(std::memory_order_relaxed); }

  // One call running or queued on this connection, for as long as it lives.
  // The connection must outlive it (the call holds a reference).
  class CallSlot {
   public:
    CallSlot() = default;
    CallSlot(CallSlot&& other) noexcept
        : connection_(std::exchange(other.connection_, nullptr)) {}
    CallSlot& operator=(CallSlot&& other) noexcept {
      Release();
      connection_ = std::exchange(other.connection_, nullptr);
      return *this;
    }
    ~CallSlot() { Release(); }

   private:
    friend class Connection;
    explicit CallSlot(Connection* connection) : connection_(connection) {}
    void Release() {
      if (connection_ != nullptr) {
        connection_->calls_.fetch_sub(1, std::memory_order_relaxed);
        connection_ = nullptr;
      }
    }
    Connection* connection_ = nullptr;
  };

  // A slot for one more call, or RESOURCE_EXHAUSTED when `max_calls` are
  // running or queued already: one client's burst on a connection must not
  // grow the daemon's queues without bound.
  absl::StatusOr<CallSlot> StartCall(int max_calls) {
    if (calls_.fetch_add(1, std::memory_order_relaxed) >= max_calls) {
      calls_.fetch_sub(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(absl::StrCat(
          "connection '", spec_.name, "' has ", max_calls,
          " calls running or queued (limits.max_calls_per_connection); retry "
          "later"));
    }
    return CallSlot(this);
  }
  int calls() const { return calls_.load(std::memory_order_relaxed); }

 private:
  const std::string handle_;
  const std::string key_;
  const config::ConnectionSpec spec_;
  const std::unique_ptr<Database> database_;
  const absl::Time created_;
  std::atomic<int64_t> queries_{0};
  std::atomic<int> calls_{0};
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_CONNECTION_H_
