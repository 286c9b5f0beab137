// Helpers every driver and caller of the Database contract shares.
#include "server/drivers/database.h"

#include <algorithm>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/synchronization/notification.h"
#include "absl/types/optional.h"

namespace connbroker::server {
namespace {

constexpr char kSqlStatePayload[] = "connbroker.v1/sqlstate";

absl::StatusOr<Reservation> WaitForSlot(Database& database, Access access,
                                        CancelSignal* cancel) {
  absl::Notification done;
  absl::StatusOr<Reservation> slot;
  database.Reserve(access, cancel, [&](absl::StatusOr<Reservation> result) {
    slot = std::move(result);
    done.Notify();
  });
  done.WaitForNotification();
  return slot;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ResultCursor>> QueryNow(Database& database,
                                                       const std::string& sql,
                                                       const v1::Params& params,
                                                       CancelSignal* cancel) {
  absl::StatusOr<Reservation> slot =
      WaitForSlot(database, Access::kRead, cancel);
  if (!slot.ok()) return slot.status();
  return database.Query(sql, params, *std::move(slot), cancel);
}

absl::StatusOr<ExecuteResult> ExecuteNow(Database& database,
                                         const std::string& sql,
                                         const v1::Params& params,
                                         CancelSignal* cancel) {
  absl::StatusOr<Reservation> slot =
      WaitForSlot(database, Access::kWrite, cancel);
  if (!slot.ok()) return slot.status();
  return database.Execute(sql, params, *std::move(slot), cancel);
}

absl::StatusOr<std::unique_ptr<PinnedBackend>> PinNow(Database& database,
                                                      Access access,
                                                      CancelSignal* cancel) {
  absl::StatusOr<Reservation> slot = WaitForSlot(database, access, cancel);
  if (!slot.ok()) return slot.status();
  return database.Pin(*std::move(slot));
}

absl::Status WithSqlState(absl::Status status, absl::string_view sqlstate) {
  if (!status.ok() && !sqlstate.empty()) {
    status.SetPayload(kSqlStatePayload, absl::Cord(sqlstate));
  }
  return status;
}

std::string SqlStateOf(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kSqlStatePayload);
  return payload.has_value() ? std::string(*payload) : std::string();
}

absl::Status TransactionLeftOpenError() {
  return absl::FailedPreconditionError(
      "the statement left a transaction open; it was rolled back (one-shot "
      "Execute commits each call on its own: send BEGIN ... COMMIT in one "
      "script, or use a session for transactions)");
}

absl::Status TransactionAlreadyOpenError() {
  return absl::FailedPreconditionError(
      "a transaction is already open (COMMIT or ROLLBACK it first)");
}

absl::string_view IsolationLevelSql(TransactionOptions::Isolation isolation) {
  switch (isolation) {
    case TransactionOptions::Isolation::kDefault:
      return "";
    case TransactionOptions::Isolation::kReadUncommitted:
      return "READ UNCOMMITTED";
    case TransactionOptions::Isolation::kReadCommitted:
      return "READ COMMITTED";
    case TransactionOptions::Isolation::kRepeatableRead:
      return "REPEATABLE READ";
    case TransactionOptions::Isolation::kSerializable:
      return "SERIALIZABLE";
  }
  return "";
}

void AddPoolCounters(const BackendPoolCounters& counters, PoolStats* stats) {
  stats->set_open(stats->open() + counters.open);
  stats->set_in_use(stats->in_use() + counters.in_use);
  stats->set_idle(stats->idle() + counters.idle);
  stats->set_waiting(stats->waiting() + counters.waiting);
  stats->set_max_size(stats->max_size() + counters.max_size);
  stats->set_opened_total(stats->opened_total() + counters.opened_total);
  stats->set_acquire_timeouts(stats->acquire_timeouts() +
                              counters.acquire_timeouts);
  stats->set_recycled(stats->recycled() + counters.recycled);
  stats->set_pre_ping_failures(stats->pre_ping_failures() +
                               counters.pre_ping_failures);
  stats->set_connect_failures(stats->connect_failures() +
                              counters.connect_failures);
}

BackendPoolOptions PoolOptionsFor(const config::ConnectionSpec& spec,
                                  std::string role,
                                  const DriverContext& context) {
  const config::PoolSettings& pool = spec.pool;
  BackendPoolOptions options;
  options.name = spec.name;
  options.role = std::move(role);
  options.pool_size = pool.pool_size;
  options.max_overflow = pool.max_overflow;
  options.min_idle = std::min(pool.min_idle, pool.pool_size);
  options.acquire_timeout = pool.acquire_timeout;
  options.idle_timeout = pool.idle_timeout;
  options.recycle = pool.recycle;
  options.pre_ping_after =
      pool.pre_ping ? pool.pre_ping_after : absl::InfiniteDuration();
  options.max_waiting = pool.max_waiting;
  options.budget = context.budget;
  return options;
}

}  // namespace connbroker::server
