// WorkerPool: the broker's own threads, where every piece of blocking work
// runs (SQLite steps, waiting for a pool member or for a query in flight).
//
// gRPC's callback reactors run on a small shared pool that must never block,
// so the service hands each call's work to this pool and finishes the
// reactor from here. Tasks run in submission order across a fixed number of
// threads. Thread-safe.
#ifndef CONNBROKER_SERVER_WORKER_POOL_H_
#define CONNBROKER_SERVER_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace connbroker::server {

class WorkerPool {
 public:
  // Starts `threads` threads (at least 1).
  explicit WorkerPool(int threads);
  // Runs every task already submitted, then joins the threads.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`. REQUIRES: the pool is not being destroyed.
  void Submit(std::function<void()> task);

  // Tasks waiting for a thread (for stats).
  size_t QueueDepth() const;

 private:
  void Loop();

  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_WORKER_POOL_H_
