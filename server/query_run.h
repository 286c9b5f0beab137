// QueryRun: one Query call's reply, produced message by message.
//
// A run yields the reply stream in order -- the schema, the row batches, the
// summary -- from one of three sources: a cached result (a hit, or a result
// shared by an identical query in flight), a result this run computed as the
// single-flight leader, or a live cursor streaming straight from the
// database. Pulling one message at a time lets the service write a batch and
// produce the next only when the client has taken it, so memory stays
// bounded by one batch for uncached queries. A cached query's leader holds
// its whole result while collecting it, within limits.inflight (a budget
// shared by every run) and the cache's max_entry_bytes; past either it stops
// collecting and streams.
//
// Next() does database work and may block: call it from a worker thread, one
// call at a time. It never blocks to wait -- for an identical query in
// flight, or for a backend of a busy pool: it answers kWaiting and calls
// `resume` once the run can go on, so a waiting call holds no thread.
// Cancel() may be called from any thread; it removes a waiting run from the
// pool's queue at once and interrupts a running statement on the server.
#ifndef CONNBROKER_SERVER_QUERY_RUN_H_
#define CONNBROKER_SERVER_QUERY_RUN_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "connbroker/v1/broker.pb.h"
#include "server/clock.h"
#include "server/connection.h"
#include "server/memory_budget.h"
#include "server/result_cache.h"

namespace connbroker::server {

// Counters shared by every call of one broker.
struct BrokerCounters {
  std::atomic<int64_t> connect_calls{0};
  std::atomic<int64_t> queries{0};
  std::atomic<int64_t> executes{0};
  std::atomic<int64_t> backend_executions{0};
  std::atomic<int64_t> retries{0};
  std::atomic<int64_t> errors{0};
  std::atomic<int64_t> resets{0};
  // Results streamed uncached because the in-flight budget was full.
  std::atomic<int64_t> inflight_budget_refusals{0};
  // Calls refused by limits.max_calls_per_connection (and sessions by
  // limits.max_sessions).
  std::atomic<int64_t> calls_refused{0};
  // Session streams and their transactions open now; transactions the
  // daemon rolled back for idling past transactions.idle_timeout.
  std::atomic<int64_t> sessions_open{0};
  std::atomic<int64_t> transactions_open{0};
  std::atomic<int64_t> idle_transactions_rolled_back{0};
};

// How a run cuts and retries.
struct QueryLimits {
  // As BrokerSettings::default_chunk_rows. 8192: a stream's cost per batch
  // (a message, two thread hops) fades, while batch_bytes still caps a
  // message of wide rows; 1024 streamed 1M small rows at ~2/3 the rate.
  int chunk_rows = 8192;
  int64_t batch_bytes = 1 << 20;
  int max_attempts = 3;
  // The daemon-wide budget for results held while collected for the cache
  // (limits.max_inflight_result_bytes); null: unbounded. Must outlive the
  // run.
  MemoryBudget* inflight = nullptr;
};

class QueryRun {
 public:
  // One message of the reply, as Next() hands it out: the run's own
  // message (valid until the next Next() or the run's end), or a cached
  // result's, already encoded and shared (`wire` keeps it alive).
  struct Outgoing {
    const v1::QueryResponse* message = nullptr;
    std::shared_ptr<const std::string> wire;
    bool last = false;  // the summary: nothing follows
  };

  // What Next() did.
  enum class Progress {
    kMessage,  // set `*out`
    kWaiting,  // an identical query is in flight: `resume` will be called
    kDone,     // the summary has been produced already
  };

  // Prepares the query; nothing runs until the first Next(), so that the
  // run can be cancelled from the moment it exists. When `ttl` is positive
  // the result is looked up in `cache`, else a cursor streams it. `resume`
  // is called, from any thread and at most once per kWaiting, when a waiting
  // run can continue (call Next() again then).
  QueryRun(std::shared_ptr<Connection> connection, std::string sql,
           v1::Params params, absl::Duration ttl, const QueryLimits& limits,
           ResultCache* cache, BrokerCounters* counters, const Clock* clock,
           std::function<void()> resume);

  ~QueryRun();

  // Sets `*out` to the next message to write: the first call runs the query
  // (or finds its result) and returns its error, if any. A cached result's
  // messages are shared, encoded, with every caller: not copied.
  absl::StatusOr<Progress> Next(Outgoing* out);

  // Before the first Next(): takes the result from the cache if it is there
  // now, without leading or joining a flight. True on a hit: every Next()
  // then only copies out the cached result (NextNeedsDatabase() is false),
  // so the whole reply may be produced on a thread that must not block.
  bool TryServeFromCache();

  // True when the next Next() may touch the database (and so must run on a
  // worker); false when it only copies out what the run already holds.
  bool NextNeedsDatabase() const;

  // Interrupts the database work of this run, if any.
  void Cancel();

  // Runs the statement on `pinned` (a session's transaction; must outlive
  // the run) instead of a backend of the pool: never cached (ttl must be
  // zero), never retried. Call before the first Next().
  void UsePinned(PinnedBackend* pinned) { pinned_ = pinned; }

  // Counts this run against its connection's calls until it is destroyed.
  void HoldCallSlot(Connection::CallSlot slot) { call_slot_ = std::move(slot); }

 private:
  // The first Next(): cache lookup, single flight, or a cursor. Returns
  // false while waiting for another caller's flight.
  absl::StatusOr<bool> Begin();
  // Serves the reply from a whole result (a hit or a shared flight).
  void Replay(std::shared_ptr<const CachedResult> result);
  // Called by the cache when the flight this run follows ends.
  void OnFlightDone(std::shared_ptr<const CachedResult> result,
                    absl::Status status);
  // Opens a cursor and reads its first batch, resetting the backends and
  // retrying while the backend is broken (UNAVAILABLE), up to max_attempts.
  // Returns false while waiting for a backend (`resume` follows).
  absl::StatusOr<bool> OpenCursorWithRetry();
  // Takes the cursor a Query returned and reads its first batch; counts one
  // backend execution.
  absl::Status StartCursor(
      absl::StatusOr<std::unique_ptr<ResultCursor>> cursor);
  // Called by the pool when the reservation asked for is ready (or failed).
  void OnSlot(absl::StatusOr<Reservation> slot);
  // Ends the flight this run leads with `status` (Abandon when it is this
  // caller's own cancellation).
  void EndFlight(const absl::Status& status);
  // Reads the whole result into `collected` as the single-flight leader,
  // reserving its bytes from limits_.inflight. Returns false when it would
  // grow past the cache's max_entry_bytes or the budget: what was read is
  // then in `buffered_` and the rest stays in the cursor.
  struct Collected {
    std::vector<v1::QueryResponse> batches;
    int64_t rows = 0;
    int64_t bytes = 0;  // schema message and batches, as encoded
  };
  absl::StatusOr<bool> Collect(Collected* collected);
  // Encodes a whole collected result for the cache.
  std::shared_ptr<CachedResult> Encode(Collected collected) const;
  absl::StatusOr<bool> ReadBatch(v1::RowBatch* batch);
  // Adds `bytes` to this run's result memory, shedding unread cached results
  // if the budget is full. False when it still does not fit.
  bool GrowResultMemory(int64_t bytes);
  // As the single-flight leader: runs the query and publishes its result.
  // Returns false while waiting for a backend.
  absl::StatusOr<bool> LeadFlight();

  const std::shared_ptr<Connection> connection_;
  Connection::CallSlot call_slot_;  // after connection_: released before it
  const std::string sql_;
  const v1::Params params_;
  const absl::Duration ttl_;
  const QueryLimits limits_;
  ResultCache* const cache_;
  // The result cache key, when ttl_ is positive (see the constructor).
  const std::string cache_key_;
  BrokerCounters* const counters_;
  const Clock* const clock_;
  const std::function<void()> resume_;
  const absl::Time started_;
  PinnedBackend* pinned_ = nullptr;  // see UsePinned

  // A batch read but not yet produced; `leased_bytes` of it are counted in
  // `inflight_`.
  struct Buffered {
    v1::QueryResponse message;
    int64_t leased_bytes = 0;
  };

  // The source of the reply: `replay_` (a whole cached result) or
  // `buffered_` batches followed by what `cursor_` still holds.
  std::shared_ptr<const CachedResult> replay_;
  size_t replay_next_ = 0;
  v1::Schema schema_;
  std::deque<Buffered> buffered_;
  // The message Next() handed out last, unless it came from `replay_`.
  v1::QueryResponse message_;
  // Bytes of `message_` still counted in `inflight_`: released by the next
  // Next(), once the caller has written it.
  int64_t produced_leased_bytes_ = 0;
  // This run's share of limits_.inflight: what it collected and holds.
  MemoryBudget::Lease inflight_;
  bool cursor_has_more_ = false;
  bool from_cache_ = false;
  int backend_executions_ = 0;
  int64_t rows_sent_ = 0;
  int attempts_ = 0;  // backend executions tried by OpenCursorWithRetry
  // The flight this run leads, from the lookup until it is published.
  std::unique_ptr<ResultCache::Flight> flight_;
  // Fired by Cancel(): reaches a queued reservation and a running statement.
  CancelSignal cancel_;
  enum class Phase { kBegin, kSchema, kBatches, kSummary, kDone };
  Phase phase_ = Phase::kBegin;

  // Guards the cursor pointer (not the cursor's use) and the state shared
  // with Cancel() and OnFlightDone(), which run on other threads.
  absl::Mutex cursor_mu_;
  std::unique_ptr<ResultCursor> cursor_ ABSL_GUARDED_BY(cursor_mu_);
  bool cancelled_ ABSL_GUARDED_BY(cursor_mu_) = false;
  // A followed flight's outcome, between OnFlightDone and the Next() that
  // takes it. `waiting_`: Next() returned kWaiting and nobody resumed yet.
  bool waiting_ ABSL_GUARDED_BY(cursor_mu_) = false;
  bool flight_done_ ABSL_GUARDED_BY(cursor_mu_) = false;
  std::shared_ptr<const CachedResult> flight_result_
      ABSL_GUARDED_BY(cursor_mu_);
  absl::Status flight_status_ ABSL_GUARDED_BY(cursor_mu_);
  // The reservation asked for, between OnSlot and the Next() that takes it.
  bool slot_asked_ ABSL_GUARDED_BY(cursor_mu_) = false;
  bool slot_ready_ ABSL_GUARDED_BY(cursor_mu_) = false;
  absl::StatusOr<Reservation> slot_ ABSL_GUARDED_BY(cursor_mu_);
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_QUERY_RUN_H_
