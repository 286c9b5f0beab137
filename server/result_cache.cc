// ResultCache: cached query results with a TTL and a byte budget, and single
// flight so that identical queries arriving together run once.
//
// Choices the header leaves open, made here:
//  - Deadlines are wall-clock times (they come from gRPC) and are waited on
//    with absl::Mutex::AwaitWithDeadline; TTLs use the injected Clock.
//  - An entry is fresh while Clock::Now() < expires. A lookup that finds an
//    expired entry drops it; EvictExpired() drops the rest.
//  - Over budget, the entry that expires soonest goes first (it is worth the
//    least). A result larger than max_bytes itself is not cached either: it
//    would push every other result out and then itself.
//  - DropOwner bumps the owner's generation. A flight remembers the
//    generation it started under, and its Publish caches nothing if the owner
//    was reset since: the result may predate the reset. Its waiters still get
//    it (they asked before the reset).
//  - A Flight's second Publish/Fail/Abandon is ignored. A Publish of a null
//    result fails the flight with INTERNAL rather than hand waiters nothing.
//  - The clock is read once per lookup attempt, under the lock, before the
//    caller may wait. Tests count clock reads to know a caller is waiting.
//
// Locking: one mutex, `mu`, guards every map, counter and flight state.
// Results dropped under the lock are released after it (a large result's
// batches take a while to free).
#include "server/result_cache.h"

#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace connbroker::server {
namespace {

using Released = std::vector<std::shared_ptr<const CachedResult>>;

// The shared state of one flight: the leader's Flight writes its outcome
// here, waiters read it. Guarded by ResultCache::Impl::mu except the const
// fields.
struct FlightState {
  enum class Outcome { kRunning, kPublished, kFailed, kAbandoned };

  FlightState(std::string k, std::string o, uint64_t generation)
      : key(std::move(k)), owner(std::move(o)), owner_generation(generation) {}

  const std::string key;
  const std::string owner;
  const uint64_t owner_generation;  // of `owner` when the flight began
  Outcome outcome = Outcome::kRunning;
  bool finished = false;  // outcome != kRunning; what waiters await
  std::shared_ptr<const CachedResult> result;
  absl::Status status;
  // Followers that asked not to block; told the outcome by Finish.
  std::vector<ResultCache::FlightDone> async_waiters;
};

}  // namespace

struct ResultCache::Impl {
  struct Entry {
    std::shared_ptr<const CachedResult> result;
    absl::Time expires;
    std::string owner;
    int64_t bytes = 0;
  };
  using Entries = absl::flat_hash_map<std::string, Entry>;

  // The leader's side of a flight. Must not outlive the cache.
  class LeaderFlight final : public Flight {
   public:
    LeaderFlight(Impl* cache, std::shared_ptr<FlightState> state)
        : cache_(cache), state_(std::move(state)) {}
    ~LeaderFlight() override { Abandon(); }

    void Publish(std::shared_ptr<const CachedResult> result,
                 absl::Duration ttl) override {
      if (std::exchange(finished_, true)) return;
      if (result == nullptr) {
        cache_->Finish(*state_, FlightState::Outcome::kFailed, nullptr,
                       absl::InternalError("a query published no result"),
                       absl::ZeroDuration());
        return;
      }
      cache_->Finish(*state_, FlightState::Outcome::kPublished,
                     std::move(result), absl::OkStatus(), ttl);
    }

    void Fail(const absl::Status& status) override {
      if (std::exchange(finished_, true)) return;
      cache_->Finish(
          *state_, FlightState::Outcome::kFailed, nullptr,
          status.ok() ? absl::InternalError("a query failed without a reason")
                      : status,
          absl::ZeroDuration());
    }

    void Abandon() override {
      if (std::exchange(finished_, true)) return;
      cache_->Finish(*state_, FlightState::Outcome::kAbandoned, nullptr,
                     absl::OkStatus(), absl::ZeroDuration());
    }

   private:
    Impl* const cache_;
    const std::shared_ptr<FlightState> state_;
    bool finished_ = false;  // the leader's own; a Flight is single-threaded
  };

  Impl(const Clock* c, int64_t max, int64_t max_entry)
      : clock(c), max_bytes(max), max_entry_bytes(max_entry) {}

  // Records the leader's outcome, wakes the waiters, and caches a published
  // result if it may be.
  void Finish(FlightState& state, FlightState::Outcome outcome,
              std::shared_ptr<const CachedResult> result, absl::Status status,
              absl::Duration ttl) ABSL_LOCKS_EXCLUDED(mu) {
    std::vector<FlightDone> notify;
    {
      Released released;  // before the lock: released after it
      absl::MutexLock lock(&mu);
      state.outcome = outcome;
      state.result = result;
      state.status = std::move(status);
      state.finished = true;
      notify = std::move(state.async_waiters);
      if (outcome == FlightState::Outcome::kPublished) {
        joins += static_cast<int64_t>(notify.size());
      }
      // A later flight for the key (after an abandon) is not ours to remove.
      if (auto it = flights.find(state.key);
          it != flights.end() && it->second.get() == &state) {
        flights.erase(it);
      }
      if (outcome == FlightState::Outcome::kPublished) {
        CacheLocked(state, std::move(result), ttl, &released);
      }
    }
    // Outside the lock: a callback may look the key up again. The state's
    // outcome fields no longer change, so reading them unlocked is safe.
    for (FlightDone& done : notify) {
      switch (outcome) {
        case FlightState::Outcome::kPublished:
          done(state.result, absl::OkStatus());
          break;
        case FlightState::Outcome::kFailed:
          done(nullptr, state.status);
          break;
        case FlightState::Outcome::kAbandoned:
        case FlightState::Outcome::kRunning:
          done(nullptr, absl::OkStatus());
          break;
      }
    }
  }

  // Caches a published result if it may be: a positive ttl, within the size
  // limits, and no DropOwner of its owner since the flight began.
  void CacheLocked(const FlightState& state,
                   std::shared_ptr<const CachedResult> result,
                   absl::Duration ttl, Released* released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (ttl <= absl::ZeroDuration() || result->bytes > max_entry_bytes ||
        result->bytes > max_bytes ||
        GenerationOf(state.owner) != state.owner_generation) {
      return;
    }
    if (auto old = entries.find(state.key); old != entries.end()) {
      Erase(old, released);
    }
    const absl::Time expires = clock->Now() + ttl;
    const int64_t result_bytes = result->bytes;
    entries.emplace(state.key, Entry{std::move(result), expires, state.owner,
                                     result_bytes});
    by_expiry.emplace(expires, state.key);
    bytes += result_bytes;
    ++owner_entries[state.owner];
    while (bytes > max_bytes && !by_expiry.empty()) {
      Erase(entries.find(by_expiry.begin()->second), released);
    }
  }

  // A fresh cached result, or a new flight the caller leads; otherwise
  // nothing, with `*running` set to the flight in progress. Reads the clock
  // once (see the file comment).
  std::optional<Lookup> HitOrLeadLocked(const std::string& key,
                                        const std::string& owner,
                                        Released* released,
                                        std::shared_ptr<FlightState>* running)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const absl::Time now = clock->Now();
    if (auto it = entries.find(key); it != entries.end()) {
      if (now < it->second.expires) {
        ++hits;
        Lookup hit;
        hit.result = it->second.result;
        return hit;
      }
      Erase(it, released);
    }
    if (auto in_flight = flights.find(key); in_flight != flights.end()) {
      *running = in_flight->second;  // kept alive: the leader erases it
      return std::nullopt;
    }
    auto state = std::make_shared<FlightState>(key, owner, GenerationOf(owner));
    flights.emplace(key, state);
    ++misses;
    Lookup lead;
    lead.flight = std::make_unique<LeaderFlight>(this, std::move(state));
    return lead;
  }

  // Removes one entry, keeping the indexes and totals in step.
  void Erase(Entries::iterator it, Released* released)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Entry& entry = it->second;
    by_expiry.erase({entry.expires, it->first});
    bytes -= entry.bytes;
    if (auto count = owner_entries.find(entry.owner);
        count != owner_entries.end() && --count->second == 0) {
      owner_entries.erase(count);
    }
    released->push_back(std::move(entry.result));
    entries.erase(it);
  }

  uint64_t GenerationOf(const std::string& owner) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = owner_generation.find(owner);
    return it == owner_generation.end() ? 0 : it->second;
  }

  const Clock* const clock;
  const int64_t max_bytes;
  const int64_t max_entry_bytes;

  mutable absl::Mutex mu;
  Entries entries ABSL_GUARDED_BY(mu);
  // (expires, key) of every entry: soonest to expire first.
  std::set<std::pair<absl::Time, std::string>> by_expiry ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::shared_ptr<FlightState>> flights
      ABSL_GUARDED_BY(mu);
  // Bumped by DropOwner; absent means 0.
  absl::flat_hash_map<std::string, uint64_t> owner_generation
      ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, int64_t> owner_entries ABSL_GUARDED_BY(mu);
  int64_t bytes ABSL_GUARDED_BY(mu) = 0;
  int64_t hits ABSL_GUARDED_BY(mu) = 0;
  int64_t misses ABSL_GUARDED_BY(mu) = 0;
  int64_t joins ABSL_GUARDED_BY(mu) = 0;
};

ResultCache::ResultCache(const Clock* clock, int64_t max_bytes,
                         int64_t max_entry_bytes)
    : impl_(std::make_unique<Impl>(clock, max_bytes, max_entry_bytes)) {}

ResultCache::~ResultCache() = default;

absl::StatusOr<ResultCache::Lookup> ResultCache::GetOrLead(
    const std::string& key, const std::string& owner, absl::Time deadline) {
  Released released;  // before the lock: released after it
  absl::MutexLock lock(&impl_->mu);
  while (true) {
    std::shared_ptr<FlightState> state;
    if (std::optional<Lookup> lookup =
            impl_->HitOrLeadLocked(key, owner, &released, &state)) {
      return *std::move(lookup);
    }
    if (!impl_->mu.AwaitWithDeadline(absl::Condition(&state->finished),
                                     deadline)) {
      return absl::DeadlineExceededError(
          "waited for an identical query in flight until the deadline");
    }
    switch (state->outcome) {
      case FlightState::Outcome::kPublished: {
        ++impl_->joins;
        Lookup joined;
        joined.result = state->result;
        joined.joined = true;
        return joined;
      }
      case FlightState::Outcome::kFailed:
        return state->status;
      case FlightState::Outcome::kAbandoned:
      case FlightState::Outcome::kRunning:
        // The leader gave up: look again. Under the lock exactly one of the
        // woken waiters finds no flight and leads; the others join it.
        break;
    }
  }
}

absl::StatusOr<ResultCache::Lookup> ResultCache::GetOrLeadAsync(
    const std::string& key, const std::string& owner, FlightDone on_done) {
  Released released;  // before the lock: released after it
  absl::MutexLock lock(&impl_->mu);
  std::shared_ptr<FlightState> state;
  if (std::optional<Lookup> lookup =
          impl_->HitOrLeadLocked(key, owner, &released, &state)) {
    return *std::move(lookup);
  }
  state->async_waiters.push_back(std::move(on_done));
  return Lookup();
}

std::shared_ptr<const CachedResult> ResultCache::GetIfCached(
    const std::string& key) {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->entries.find(key);
  if (it == impl_->entries.end() || impl_->clock->Now() >= it->second.expires) {
    return nullptr;  // the full lookup (on a worker) settles it
  }
  ++impl_->hits;
  return it->second.result;
}

int64_t ResultCache::DropOwner(const std::string& owner) {
  Released released;
  absl::MutexLock lock(&impl_->mu);
  ++impl_->owner_generation[owner];
  int64_t dropped = 0;
  for (auto it = impl_->entries.begin(); it != impl_->entries.end();) {
    auto next = std::next(it);
    if (it->second.owner == owner) {
      impl_->Erase(it, &released);
      ++dropped;
    }
    it = next;
  }
  return dropped;
}

int64_t ResultCache::CountOwner(const std::string& owner) const {
  absl::MutexLock lock(&impl_->mu);
  auto it = impl_->owner_entries.find(owner);
  return it == impl_->owner_entries.end() ? 0 : it->second;
}

void ResultCache::EvictExpired() {
  Released released;
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = impl_->clock->Now();
  while (!impl_->by_expiry.empty() && impl_->by_expiry.begin()->first <= now) {
    impl_->Erase(impl_->entries.find(impl_->by_expiry.begin()->second),
                 &released);
  }
}

int64_t ResultCache::ShedUnreferenced(int64_t bytes) {
  Released released;  // destroyed after the lock: frees memory and budget
  absl::MutexLock lock(&impl_->mu);
  int64_t shed = 0;
  for (auto next = impl_->by_expiry.begin();
       shed < bytes && next != impl_->by_expiry.end();) {
    auto entry = impl_->entries.find((next++)->second);
    // use_count is exact enough: new references are made under mu.
    if (entry->second.result.use_count() != 1) continue;
    shed += entry->second.bytes;
    impl_->Erase(entry, &released);  // `next` stays valid: another node
  }
  return shed;
}

int64_t ResultCache::max_entry_bytes() const { return impl_->max_entry_bytes; }

ResultCacheStats ResultCache::Stats() const {
  absl::MutexLock lock(&impl_->mu);
  ResultCacheStats stats;
  stats.hits = impl_->hits;
  stats.misses = impl_->misses;
  stats.joins = impl_->joins;
  stats.entries = static_cast<int64_t>(impl_->entries.size());
  stats.bytes = impl_->bytes;
  return stats;
}

}  // namespace connbroker::server
