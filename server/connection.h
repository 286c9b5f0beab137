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

 private:
  const std::string handle_;
  const std::string key_;
  const config::ConnectionSpec spec_;
  const std::unique_ptr<Database> database_;
  const absl::Time created_;
  std::atomic<int64_t> queries_{0};
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_CONNECTION_H_
