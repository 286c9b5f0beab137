// Clock::Real: the wall clock the daemon runs on. Tests inject a fake Clock
// instead, so nothing else in the broker reads absl::Now() for TTLs.
#include "server/clock.h"

namespace connbroker::server {
namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

const Clock* Clock::Real() {
  // Leaked on purpose: callers may read it from threads that outlive static
  // destruction (the janitor during shutdown).
  static const Clock* const kClock = new RealClock();
  return kClock;
}

}  // namespace connbroker::server
