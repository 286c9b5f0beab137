// SinglePoolDatabase: what every driver with one kind of backend (PostgreSQL,
// MySQL) does the same way -- one BackendPool for reads and writes alike,
// reserving, resetting, upkeep and stats -- so each driver's file holds only
// its statements. SQLite, with a writer and readers, has its own.
//
// Thread-safe, as Database requires; the pool does the locking.
#ifndef CONNBROKER_SERVER_DRIVERS_SINGLE_POOL_DATABASE_H_
#define CONNBROKER_SERVER_DRIVERS_SINGLE_POOL_DATABASE_H_

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "server/drivers/backend_pool.h"
#include "server/drivers/database.h"

namespace connbroker::server {

template <typename Backend>
class SinglePoolDatabase : public Database {
 public:
  using Pool = BackendPool<Backend>;
  using Lease = typename Pool::Lease;

  explicit SinglePoolDatabase(std::shared_ptr<Pool> pool)
      : pool_(std::move(pool)) {}

  ~SinglePoolDatabase() override {
    // Idle backends close now; cursors still alive keep the pool (shared)
    // and close their backend when they end.
    pool_->Close();
  }

  void Reserve(Access /*access*/, CancelSignal* cancel,
               ReserveCallback ready) override {
    pool_->Reserve(cancel, std::move(ready));
  }

  int Reset() override { return pool_->Reset(); }

  int ShedIdle() override { return pool_->ShedIdle(); }

  void Maintain() override {
    pool_->CloseIdle(absl::Now());
    pool_->FillMinIdle();
  }

  PoolStats Stats() const override {
    PoolStats stats;
    AddPoolCounters(pool_->Stats(), &stats);
    return stats;
  }

 protected:
  // True when `slot` came from this database's Reserve.
  bool Owns(const Reservation& slot) const {
    return slot && slot.source() == pool_.get();
  }

  // The backend of `slot` (see BackendPool::Claim); INVALID_ARGUMENT for a
  // slot of another connection.
  absl::StatusOr<Lease> ClaimOwn(Reservation slot) {
    if (!Owns(slot)) return NotOurs();
    return pool_->Claim(std::move(slot));
  }

  static absl::Status NotOurs() {
    return absl::InvalidArgumentError(
        "the reservation does not belong to this connection");
  }

  const std::shared_ptr<Pool> pool_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_SINGLE_POOL_DATABASE_H_
