// QueryRun: the reply of one Query call, from the result cache or a cursor.
#include "server/query_run.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace connbroker::server {
namespace {

// Protobuf maps serialise in no fixed order unless asked to; a cache key
// needs equal named params to give equal bytes.
std::string DeterministicBytes(const google::protobuf::Message& message) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return bytes;
}

// The result cache key: every input the result depends on. chunk_rows and
// batch_bytes are in it because a cached result is replayed in the batches
// it was cut into.
std::string CacheKey(const std::string& owner, const std::string& sql,
                     const v1::Params& params, absl::Duration ttl,
                     const QueryLimits& limits) {
  return absl::StrCat(owner, "\x1fsql\x1f", sql, "\x1fparams\x1f",
                      DeterministicBytes(params), "\x1fttl\x1f",
                      absl::FormatDuration(ttl), "\x1f", limits.chunk_rows,
                      "\x1f", limits.batch_bytes);
}

}  // namespace

QueryRun::QueryRun(std::shared_ptr<Connection> connection, std::string sql,
                   v1::Params params, absl::Duration ttl,
                   const QueryLimits& limits, ResultCache* cache,
                   BrokerCounters* counters, const Clock* clock,
                   std::function<void()> resume)
    : connection_(std::move(connection)),
      sql_(std::move(sql)),
      params_(std::move(params)),
      ttl_(ttl),
      limits_(limits),
      cache_(cache),
      // Built once: Begin() runs again each time a followed flight ends.
      cache_key_(
          ttl_ > absl::ZeroDuration()
              ? CacheKey(connection_->key(), sql_, params_, ttl_, limits_)
              : std::string()),
      counters_(counters),
      clock_(clock),
      resume_(std::move(resume)),
      started_(clock->Now()),
      inflight_(limits_.inflight) {
  connection_->CountQuery();
}

absl::StatusOr<bool> QueryRun::Begin() {
  if (ttl_ <= absl::ZeroDuration()) return OpenCursorWithRetry();
  if (flight_ != nullptr) return LeadFlight();  // resumed with a backend
  while (true) {
    {
      absl::MutexLock lock(&cursor_mu_);
      if (cancelled_) return absl::CancelledError("query cancelled");
      if (flight_done_) {
        // The flight this run followed has ended: share its outcome, or,
        // when its leader gave up, look again.
        flight_done_ = false;
        if (!flight_status_.ok()) return flight_status_;
        if (flight_result_ != nullptr) {
          Replay(std::move(flight_result_));
          return true;
        }
      }
    }
    absl::StatusOr<ResultCache::Lookup> lookup = cache_->GetOrLeadAsync(
        cache_key_, connection_->key(),
        [this](std::shared_ptr<const CachedResult> result,
               absl::Status status) {
          OnFlightDone(std::move(result), std::move(status));
        });
    if (!lookup.ok()) return lookup.status();
    if (lookup->result != nullptr) {
      Replay(std::move(lookup->result));
      return true;
    }
    if (lookup->flight != nullptr) {
      flight_ = std::move(lookup->flight);
      return LeadFlight();
    }
    // Following a flight. It may already have ended (OnFlightDone ran before
    // this lock): then take its outcome now instead of waiting.
    absl::MutexLock lock(&cursor_mu_);
    if (!flight_done_) {
      waiting_ = true;
      return false;
    }
  }
}

bool QueryRun::TryServeFromCache() {
  if (ttl_ <= absl::ZeroDuration() || phase_ != Phase::kBegin) return false;
  std::shared_ptr<const CachedResult> hit = cache_->GetIfCached(cache_key_);
  if (hit == nullptr) return false;
  Replay(std::move(hit));
  phase_ = Phase::kSchema;
  return true;
}

void QueryRun::Replay(std::shared_ptr<const CachedResult> result) {
  replay_ = std::move(result);
  from_cache_ = true;
}

void QueryRun::OnFlightDone(std::shared_ptr<const CachedResult> result,
                            absl::Status status) {
  bool resume_now;
  {
    absl::MutexLock lock(&cursor_mu_);
    flight_done_ = true;
    flight_result_ = std::move(result);
    flight_status_ = std::move(status);
    // Resume only a run that is parked in kWaiting; a run still inside
    // Begin() sees flight_done_ itself. Never both: one Next() at a time.
    resume_now = std::exchange(waiting_, false);
  }
  if (resume_now) resume_();
}

QueryRun::~QueryRun() {
  // A flight still led here (the call ended while waiting for a backend)
  // must not leave its followers waiting.
  if (flight_ != nullptr) flight_->Abandon();
  std::unique_ptr<ResultCursor> cursor;
  {
    absl::MutexLock lock(&cursor_mu_);
    cursor = std::move(cursor_);
  }
  // The cursor returns its backend to the pool as it is destroyed, outside
  // the lock.
}

void QueryRun::Cancel() {
  {
    absl::MutexLock lock(&cursor_mu_);
    cancelled_ = true;
  }
  // Outside cursor_mu_: the signal may call OnSlot (a queued reservation
  // removed), which takes cursor_mu_.
  cancel_.Cancel();
}

void QueryRun::OnSlot(absl::StatusOr<Reservation> slot) {
  bool resume_now;
  {
    absl::MutexLock lock(&cursor_mu_);
    slot_ = std::move(slot);
    slot_ready_ = true;
    // As in OnFlightDone: a run still inside Next() sees slot_ready_ itself.
    resume_now = std::exchange(waiting_, false);
  }
  if (resume_now) resume_();
}

absl::Status QueryRun::StartCursor(
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor) {
  ++backend_executions_;
  counters_->backend_executions.fetch_add(1, std::memory_order_relaxed);
  if (!cursor.ok()) return cursor.status();
  ResultCursor* raw = cursor->get();
  {
    absl::MutexLock lock(&cursor_mu_);
    if (cancelled_) return absl::CancelledError("query cancelled");
    cursor_ = std::move(*cursor);
  }
  v1::RowBatch first;
  absl::StatusOr<bool> more = raw->Next(
      limits_.chunk_rows, static_cast<size_t>(limits_.batch_bytes), &first);
  if (!more.ok()) {
    absl::MutexLock lock(&cursor_mu_);
    cursor_.reset();
    return more.status();
  }
  schema_ = raw->schema();
  cursor_has_more_ = *more;
  if (first.row_count() > 0) {
    Buffered buffered;
    *buffered.message.mutable_batch() = std::move(first);
    buffered_.push_back(std::move(buffered));
  }
  if (!cursor_has_more_) {
    // Exhausted already: give the backend back (or, pinned, free it for the
    // session's next statement) now.
    std::unique_ptr<ResultCursor> done;
    absl::MutexLock lock(&cursor_mu_);
    done = std::move(cursor_);
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> QueryRun::OpenCursorWithRetry() {
  if (pinned_ != nullptr) {
    // A session's transaction: its own backend, which a retry would not
    // have (the transaction's work is on the broken one), so never retried.
    {
      absl::MutexLock lock(&cursor_mu_);
      if (cancelled_) return absl::CancelledError("query cancelled");
    }
    absl::Status started = StartCursor(pinned_->Query(sql_, params_, &cancel_));
    if (!started.ok()) return started;
    return true;
  }
  Database& database = connection_->database();
  while (true) {
    // 1. A backend: ask the pool, and park (kWaiting) until it answers.
    bool ask = false;
    {
      absl::MutexLock lock(&cursor_mu_);
      if (cancelled_) return absl::CancelledError("query cancelled");
      if (!slot_asked_) {
        slot_asked_ = true;
        slot_ready_ = false;
        ask = true;
      }
    }
    if (ask) {
      // May answer at once, on this thread (OnSlot then finds no waiter).
      database.Reserve(Access::kRead, &cancel_,
                       [this](absl::StatusOr<Reservation> result) {
                         OnSlot(std::move(result));
                       });
    }
    absl::StatusOr<Reservation> slot;
    {
      absl::MutexLock lock(&cursor_mu_);
      if (!slot_ready_) {
        waiting_ = true;
        return false;
      }
      slot_asked_ = false;
      slot_ready_ = false;
      slot = std::move(slot_);
      slot_ = absl::UnknownError("no reservation");
    }
    if (!slot.ok()) return slot.status();

    // 2. The statement and its first batch, which settles the column kinds
    // the schema announces and is where a broken backend usually shows.
    ++attempts_;
    absl::Status last =
        StartCursor(database.Query(sql_, params_, *std::move(slot), &cancel_));
    if (last.ok()) return true;
    if (last.code() != absl::StatusCode::kUnavailable) return last;
    if (attempts_ >= limits_.max_attempts) {
      return absl::Status(last.code(), absl::StrCat(last.message(), " (after ",
                                                    attempts_, " attempts)"));
    }
    // As Streamlit's SQLConnection does: a broken backend is reset and the
    // query tried again; SQL errors are never retried.
    counters_->retries.fetch_add(1, std::memory_order_relaxed);
    database.Reset();
  }
}

absl::StatusOr<bool> QueryRun::ReadBatch(v1::RowBatch* batch) {
  ResultCursor* cursor;
  {
    absl::MutexLock lock(&cursor_mu_);
    cursor = cursor_.get();
  }
  absl::StatusOr<bool> more = cursor->Next(
      limits_.chunk_rows, static_cast<size_t>(limits_.batch_bytes), batch);
  if (!more.ok()) return more.status();
  cursor_has_more_ = *more;
  if (!cursor_has_more_) {
    // Give the backend back as soon as the result is exhausted, not when
    // the client has read the last batch.
    std::unique_ptr<ResultCursor> done;
    absl::MutexLock lock(&cursor_mu_);
    done = std::move(cursor_);
  }
  return cursor_has_more_;
}

bool QueryRun::GrowResultMemory(int64_t bytes) {
  if (inflight_.TryGrow(bytes)) return true;
  // Cached results nobody reads hold result memory too: make room from
  // them before giving up on caching this one.
  cache_->ShedUnreferenced(bytes);
  return inflight_.TryGrow(bytes);
}

absl::StatusOr<bool> QueryRun::Collect(Collected* collected) {
  const int64_t max_bytes = cache_->max_entry_bytes();
  v1::QueryResponse schema_message;
  *schema_message.mutable_schema() = schema_;
  collected->bytes = static_cast<int64_t>(schema_message.ByteSizeLong());
  const int64_t schema_bytes = collected->bytes;
  // Takes one more batch into `collected` if it fits the entry bound and
  // the budget; else hands everything read so far to the stream.
  auto take = [&](v1::QueryResponse message) -> bool {
    const int64_t bytes = static_cast<int64_t>(message.ByteSizeLong());
    const bool too_big = collected->bytes + bytes > max_bytes;
    if (!too_big && GrowResultMemory(bytes)) {
      collected->rows += message.batch().row_count();
      collected->bytes += bytes;
      collected->batches.push_back(std::move(message));
      return true;
    }
    if (!too_big) {
      counters_->inflight_budget_refusals.fetch_add(1,
                                                    std::memory_order_relaxed);
    }
    // Collected batches stay leased until produced (see Next); this one
    // never was, and the schema is produced from schema_.
    inflight_.Shrink(schema_bytes);
    std::deque<Buffered> stream;
    for (v1::QueryResponse& kept : collected->batches) {
      const int64_t leased = static_cast<int64_t>(kept.ByteSizeLong());
      stream.push_back(Buffered{std::move(kept), leased});
    }
    collected->batches.clear();
    stream.push_back(Buffered{std::move(message), 0});
    // Batches still buffered were read after `message`.
    for (Buffered& later : buffered_) stream.push_back(std::move(later));
    buffered_.swap(stream);
    return false;
  };
  if (!GrowResultMemory(schema_bytes)) {
    counters_->inflight_budget_refusals.fetch_add(1, std::memory_order_relaxed);
    return false;  // buffered_ and the cursor stream as they are
  }
  while (!buffered_.empty()) {
    v1::QueryResponse message = std::move(buffered_.front().message);
    buffered_.pop_front();
    if (!take(std::move(message))) return false;
  }
  while (cursor_has_more_) {
    v1::QueryResponse message;
    absl::StatusOr<bool> more = ReadBatch(message.mutable_batch());
    if (!more.ok()) return more.status();
    if (message.batch().row_count() > 0 && !take(std::move(message))) {
      return false;
    }
  }
  return true;
}

void QueryRun::EndFlight(const absl::Status& status) {
  // Every caller of this same query would meet the same SQL error or
  // broken backend; a cancellation or a full pool is this caller's own
  // business, and the followers try for themselves.
  switch (status.code()) {
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kResourceExhausted:
      flight_->Abandon();
      break;
    default:
      flight_->Fail(status);
      break;
  }
  flight_.reset();
}

absl::StatusOr<bool> QueryRun::LeadFlight() {
  absl::StatusOr<bool> opened = OpenCursorWithRetry();
  if (!opened.ok()) {
    EndFlight(opened.status());
    return opened.status();
  }
  if (!*opened) return false;  // the flight stays led while waiting
  Collected collected;
  absl::StatusOr<bool> complete = Collect(&collected);
  if (!complete.ok()) {
    EndFlight(complete.status());
    collected.batches.clear();
    inflight_.ReleaseAll();
    return complete.status();
  }
  if (!*complete) {
    // Too large to cache, or no budget left to hold it: stream what was
    // read (buffered_), then the rest of the cursor. The waiters run the
    // query themselves.
    flight_->Abandon();
    flight_.reset();
    return true;
  }
  // The result's bytes stay counted in the daemon's result memory for as
  // long as the result lives -- in the cache, or held by a slow reader after
  // its eviction -- and also in the cache's own bound while it is cached.
  std::shared_ptr<CachedResult> result = Encode(std::move(collected));
  result->memory = std::move(inflight_);
  inflight_ = MemoryBudget::Lease(limits_.inflight);
  replay_ = result;
  flight_->Publish(std::move(result), ttl_);
  flight_.reset();
  return true;
}

std::shared_ptr<CachedResult> QueryRun::Encode(Collected collected) const {
  auto result = std::make_shared<CachedResult>();
  v1::QueryResponse schema_message;
  *schema_message.mutable_schema() = schema_;
  result->schema_wire = schema_message.SerializeAsString();
  result->batch_wire.reserve(collected.batches.size());
  result->batch_rows.reserve(collected.batches.size());
  for (v1::QueryResponse& batch : collected.batches) {
    result->batch_wire.push_back(batch.SerializeAsString());
    result->batch_rows.push_back(batch.batch().row_count());
    batch.Clear();  // the encoded copy replaces it: hold one at a time
  }
  result->row_count = collected.rows;
  result->bytes = collected.bytes;
  return result;
}

bool QueryRun::NextNeedsDatabase() const {
  switch (phase_) {
    case Phase::kBegin:
      return true;
    case Phase::kBatches:
      if (replay_ != nullptr) return false;  // replays never read a cursor
      return buffered_.empty() && cursor_has_more_;
    case Phase::kSchema:
    case Phase::kSummary:
    case Phase::kDone:
      return false;
  }
  return true;
}

absl::StatusOr<QueryRun::Progress> QueryRun::Next(Outgoing* out) {
  *out = Outgoing();
  // The message handed out last has been written by now (the caller asks
  // for the next only then): its bytes leave the budget.
  inflight_.Shrink(std::exchange(produced_leased_bytes_, 0));
  switch (phase_) {
    case Phase::kBegin: {
      absl::StatusOr<bool> begun = Begin();
      if (!begun.ok()) return begun.status();
      if (!*begun) return Progress::kWaiting;
      phase_ = Phase::kSchema;
      [[fallthrough]];
    }
    case Phase::kSchema:
      if (replay_ != nullptr) {
        // Aliasing pointers: they share the result's ownership.
        out->wire =
            std::shared_ptr<const std::string>(replay_, &replay_->schema_wire);
      } else {
        *message_.mutable_schema() = schema_;
        out->message = &message_;
      }
      phase_ = Phase::kBatches;
      return Progress::kMessage;
    case Phase::kBatches: {
      if (replay_ != nullptr) {
        if (replay_next_ < replay_->batch_wire.size()) {
          rows_sent_ += replay_->batch_rows[replay_next_];
          out->wire = std::shared_ptr<const std::string>(
              replay_, &replay_->batch_wire[replay_next_++]);
          return Progress::kMessage;
        }
      } else if (!buffered_.empty()) {
        // A move swaps the batch in: the deque's slot takes the old one.
        message_ = std::move(buffered_.front().message);
        produced_leased_bytes_ = buffered_.front().leased_bytes;
        buffered_.pop_front();
        rows_sent_ += message_.batch().row_count();
        out->message = &message_;
        return Progress::kMessage;
      } else {
        while (cursor_has_more_) {
          v1::RowBatch* batch = message_.mutable_batch();
          absl::StatusOr<bool> more = ReadBatch(batch);
          if (!more.ok()) return more.status();
          if (batch->row_count() > 0) {
            rows_sent_ += batch->row_count();
            out->message = &message_;
            return Progress::kMessage;
          }
        }
      }
      phase_ = Phase::kSummary;
      [[fallthrough]];
    }
    case Phase::kSummary: {
      message_.Clear();
      v1::QuerySummary* summary = message_.mutable_summary();
      summary->set_row_count(rows_sent_);
      summary->set_from_cache(from_cache_);
      summary->set_elapsed_micros(
          absl::ToInt64Microseconds(clock_->Now() - started_));
      summary->set_backend_executions(backend_executions_);
      summary->set_handle(connection_->handle());
      out->message = &message_;
      out->last = true;
      phase_ = Phase::kDone;
      return Progress::kMessage;
    }
    case Phase::kDone:
      return Progress::kDone;
  }
  return Progress::kDone;
}

}  // namespace connbroker::server
