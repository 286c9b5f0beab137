// CountingDatabase: a Database that only counts its own constructions and
// destructions. It exists to observe the ConnectionRegistry's life cycle
// (when a connection is built, evicted and finally closed), not to test SQL:
// every query returns UNIMPLEMENTED. Database behaviour is tested against
// real databases elsewhere.
#ifndef CONNBROKER_TESTS_UNIT_FAKE_DATABASE_H_
#define CONNBROKER_TESTS_UNIT_FAKE_DATABASE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "server/drivers/database.h"

namespace connbroker::testing {

// Shared by every CountingDatabase a test's factory makes.
struct DatabaseCounters {
  std::atomic<int> constructed{0};
  std::atomic<int> destroyed{0};
  int alive() const { return constructed.load() - destroyed.load(); }
};

class CountingDatabase final : public server::Database {
 public:
  // `serial` tells databases apart in PoolStats.opened_total.
  // `on_destroy`, if set, runs in the destructor: a test's probe of where
  // (under which locks) the registry lets a Database die.
  explicit CountingDatabase(DatabaseCounters* counters,
                            std::function<void()> on_destroy = nullptr)
      : counters_(counters),
        serial_(++counters->constructed),
        on_destroy_(std::move(on_destroy)) {}
  ~CountingDatabase() override {
    if (on_destroy_) on_destroy_();
    ++counters_->destroyed;
  }

  void Reserve(server::Access, server::CancelSignal*,
               server::ReserveCallback ready) override {
    ready(absl::UnimplementedError("CountingDatabase runs no SQL"));
  }
  absl::StatusOr<std::unique_ptr<server::ResultCursor>> Query(
      const std::string&, const v1::Params&, server::Reservation,
      server::CancelSignal*) override {
    return absl::UnimplementedError("CountingDatabase runs no SQL");
  }
  absl::StatusOr<server::ExecuteResult> Execute(
      const std::string&, const v1::Params&, server::Reservation,
      server::CancelSignal*) override {
    return absl::UnimplementedError("CountingDatabase runs no SQL");
  }
  int Reset() override { return 0; }
  void Maintain() override {}
  v1::PoolStats Stats() const override {
    v1::PoolStats stats;
    stats.set_max_size(7);
    stats.set_opened_total(serial_);
    return stats;
  }

 private:
  DatabaseCounters* const counters_;
  const int serial_;
  const std::function<void()> on_destroy_;
};

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_UNIT_FAKE_DATABASE_H_
