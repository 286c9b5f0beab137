// MemoryBudget: a daemon-wide bound on bytes held for calls in flight.
//
// Query results being collected for the result cache, cached, or held by
// readers still streaming them after their eviction are held whole in
// memory. Each result is bounded by result_cache.max_entry_bytes, but many at
// once are not: the budget (limits.max_inflight_result_bytes) bounds their
// sum, wherever they are held (a CachedResult carries its lease).
// A reservation that does not fit is refused rather than waited for: the
// caller then streams its result without caching it, which needs no more
// than one batch.
//
// Thread-safe and lock-free: a reservation is one compare-and-swap.
#ifndef CONNBROKER_SERVER_MEMORY_BUDGET_H_
#define CONNBROKER_SERVER_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>
#include <utility>

namespace connbroker::server {

class MemoryBudget {
 public:
  // `limit` bytes may be reserved at once; a limit <= 0 refuses every
  // non-empty reservation.
  explicit MemoryBudget(int64_t limit) : limit_(limit) {}

  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Reserves `bytes` (>= 0) if they fit under the limit; false otherwise,
  // and nothing is reserved.
  bool TryReserve(int64_t bytes) {
    if (bytes <= 0) return true;
    int64_t used = in_use_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_ - used) return false;
    } while (!in_use_.compare_exchange_weak(used, used + bytes,
                                            std::memory_order_relaxed));
    return true;
  }

  // Gives back `bytes` reserved earlier.
  void Release(int64_t bytes) {
    if (bytes > 0) in_use_.fetch_sub(bytes, std::memory_order_relaxed);
  }

  // For stats.
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_; }

  // The bytes one holder (a query run) has reserved, given back when it is
  // destroyed. A lease over a null budget grants everything: unbounded.
  // Not thread-safe (one holder); the budget it draws on is.
  class Lease {
   public:
    explicit Lease(MemoryBudget* budget = nullptr) : budget_(budget) {}
    Lease(Lease&& other) noexcept
        : budget_(other.budget_), bytes_(std::exchange(other.bytes_, 0)) {}
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        ReleaseAll();
        budget_ = other.budget_;
        bytes_ = std::exchange(other.bytes_, 0);
      }
      return *this;
    }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { ReleaseAll(); }

    // Adds `bytes` to the lease if the budget has room; false otherwise.
    bool TryGrow(int64_t bytes) {
      if (budget_ != nullptr && !budget_->TryReserve(bytes)) return false;
      bytes_ += bytes;
      return true;
    }

    // Gives back `bytes` of the lease (at most what it holds).
    void Shrink(int64_t bytes) {
      if (bytes > bytes_) bytes = bytes_;
      if (bytes <= 0) return;
      bytes_ -= bytes;
      if (budget_ != nullptr) budget_->Release(bytes);
    }

    void ReleaseAll() { Shrink(bytes_); }

    int64_t bytes() const { return bytes_; }

   private:
    MemoryBudget* budget_;
    int64_t bytes_ = 0;
  };

 private:
  const int64_t limit_;
  std::atomic<int64_t> in_use_{0};
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_MEMORY_BUDGET_H_
