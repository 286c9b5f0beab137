// Janitor: periodic upkeep on its own thread.
#include "server/janitor.h"

#include <utility>

namespace connbroker::server {

Janitor::Janitor(absl::Duration period, std::function<void()> upkeep)
    : thread_([this, period, upkeep = std::move(upkeep)] {
        while (!stop_.WaitForNotificationWithTimeout(period)) upkeep();
      }) {}

Janitor::~Janitor() {
  stop_.Notify();
  thread_.join();
}

}  // namespace connbroker::server
