// Janitor: a thread that performs the broker's periodic upkeep -- expiring
// connections and cached results, closing idle backends -- so eviction is
// timely even when no call arrives to trigger it.
#ifndef CONNBROKER_SERVER_JANITOR_H_
#define CONNBROKER_SERVER_JANITOR_H_

#include <functional>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace connbroker::server {

class Janitor {
 public:
  // Calls `upkeep` every `period` on a thread of its own until destroyed.
  Janitor(absl::Duration period, std::function<void()> upkeep);
  ~Janitor();  // stops and joins the thread

  Janitor(const Janitor&) = delete;
  Janitor& operator=(const Janitor&) = delete;

 private:
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_JANITOR_H_
