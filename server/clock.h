// Clock: where the broker reads the time, so TTL logic can be tested with a
// fake one. Implementations must be safe to call from any thread.
#ifndef CONNBROKER_SERVER_CLOCK_H_
#define CONNBROKER_SERVER_CLOCK_H_

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace connbroker::server {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;

  // The process-wide wall clock. Never deleted.
  static const Clock* Real();
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_CLOCK_H_
