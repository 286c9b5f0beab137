// ResultCache: query results kept for a TTL, with single flight on a miss.
//
// Keyed by a string the caller builds from (connection key, sql, params,
// options). When many callers ask for the same missing key at once, one
// becomes the leader and runs the query; the others wait and share its
// result, so the database runs it once. The cache holds at most `max_bytes`
// of results (oldest-expiring first out); a result over `max_entry_bytes` is
// not cached.
//
// Thread-safe. GetOrLead's waiting blocks the calling thread; callers that
// must not hold a thread while an identical query runs (the service: a
// waiting follower would keep a worker from everyone else) use
// GetOrLeadAsync, which registers a callback instead.
#ifndef CONNBROKER_SERVER_RESULT_CACHE_H_
#define CONNBROKER_SERVER_RESULT_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connbroker/v1/broker.pb.h"
#include "server/clock.h"
#include "server/memory_budget.h"

namespace connbroker::server {

// A whole result, immutable once published, kept as the reply's messages
// already encoded: a hit hands the same bytes to every reader, with neither a
// copy nor a serialization per hit.
struct CachedResult {
  std::string schema_wire;              // a QueryResponse with its schema
  std::vector<std::string> batch_wire;  // a QueryResponse with a batch, each
  std::vector<int64_t> batch_rows;      // rows of each batch
  int64_t row_count = 0;
  int64_t bytes = 0;  // sum of the encoded messages' sizes
  // The result's share of the daemon's result memory
  // (limits.max_inflight_result_bytes), given back when the last holder --
  // the cache, or a slow reader still streaming it after its eviction --
  // lets go. Result memory is bounded wherever it is held.
  MemoryBudget::Lease memory;
};

struct ResultCacheStats {
  int64_t hits = 0;
  int64_t misses = 0;  // a leader was chosen
  int64_t joins = 0;   // waited for a leader and shared its result
  int64_t entries = 0;
  int64_t bytes = 0;
};

class ResultCache {
 public:
  // The leader's duty: exactly one of Publish, Fail or Abandon (the
  // destructor abandons if none was called).
  class Flight {
   public:
    virtual ~Flight() = default;
    // Caches `result` for `ttl` (if it fits) and hands it to the waiters.
    virtual void Publish(std::shared_ptr<const CachedResult> result,
                         absl::Duration ttl) = 0;
    // The query failed for a reason every waiter shares (bad SQL): waiters
    // get `status`. Nothing is cached.
    virtual void Fail(const absl::Status& status) = 0;
    // The leader gave up for a reason of its own (its client went away, the
    // result is too big to cache): one waiter becomes the new leader.
    virtual void Abandon() = 0;
  };

  struct Lookup {
    // Set on a hit or a join.
    std::shared_ptr<const CachedResult> result;
    bool joined = false;  // the result came from another caller's flight
    // Set when the caller must run the query (result is null then).
    std::unique_ptr<Flight> flight;
  };

  // `clock` must outlive the cache.
  ResultCache(const Clock* clock, int64_t max_bytes, int64_t max_entry_bytes);
  ~ResultCache();

  ResultCache(const ResultCache&) = delete;
  ResultCache& operator=(const ResultCache&) = delete;

  // A fresh cached result, or the result of an identical query in flight
  // (waiting until `deadline`: DEADLINE_EXCEEDED after), or a Flight for the
  // caller to run. `owner` is the connection key, for DropOwner.
  absl::StatusOr<Lookup> GetOrLead(const std::string& key,
                                   const std::string& owner,
                                   absl::Time deadline);

  // Called once, on the thread that ends the flight, with its outcome: the
  // published result (a join), the failure, or neither when the leader
  // abandoned (look again).
  using FlightDone = std::function<void(
      std::shared_ptr<const CachedResult> result, absl::Status status)>;

  // GetOrLead without blocking: a hit or a new Flight as GetOrLead; when an
  // identical query is in flight, returns a Lookup with neither result nor
  // flight and calls `on_done` when that flight ends. `on_done` must not
  // call back into the cache synchronously in a way that waits.
  absl::StatusOr<Lookup> GetOrLeadAsync(const std::string& key,
                                        const std::string& owner,
                                        FlightDone on_done);

  // A fresh cached result of `key` (counted as a hit), or null: never leads
  // or joins a flight, never waits.
  std::shared_ptr<const CachedResult> GetIfCached(const std::string& key);

  // Drops every result of one connection (Reset). Returns how many.
  int64_t DropOwner(const std::string& owner);

  // Counts the results of one connection.
  int64_t CountOwner(const std::string& owner) const;

  // Drops expired entries (janitor; lookups also skip them).
  void EvictExpired();

  // Drops cached results nobody else holds, soonest to expire first, until
  // `bytes` of them are gone (or none is left): a caller that needs result
  // memory makes room. Returns the bytes dropped.
  int64_t ShedUnreferenced(int64_t bytes);

  int64_t max_entry_bytes() const;
  ResultCacheStats Stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_RESULT_CACHE_H_
