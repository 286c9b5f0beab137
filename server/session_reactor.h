// SessionReactor: one Session stream -- a client session's pipelined
// requests, answered in order, and the transaction they run.
//
// Requests are read ahead (up to limits.max_pipelined_requests) and run one
// at a time, in the order sent, on the broker's workers; answers go out in
// that order, one write outstanding at a time. A query's answer is built
// from QueryRun's parts: schema, batches and summary share one message while
// they fit one batch, so a small result is a single write; a large one is
// written part by part, each produced when the previous write completed, so
// a slow reader slows the cursor instead of growing memory. A cancel is
// acted on as soon as it is read: it stops the request it names, running or
// queued, and nothing else.
//
// A transaction -- begun with a BeginRequest, or by a statement whose first
// keyword is BEGIN or START -- pins one backend of its connection to the
// stream: statements on that connection run on it until COMMIT or ROLLBACK
// (seen on the backend itself, so SQL and explicit requests agree). Idle past
// transactions.idle_timeout, it is rolled back, the client gets a notice,
// and statements on that connection fail with ABORTED until it sends a
// rollback. A backend that breaks inside a transaction is never retried:
// the transaction's work is lost, and the client is told so the same way.
// The stream ending for any reason -- finished, cancelled, the client
// process gone, its deadline -- rolls back what is open.
//
// Life cycle: gRPC creates the reactor; it finishes the call exactly once,
// when reads are done (or the stream broke) and no request runs and no write
// is outstanding; OnDone then deletes it on a worker (dropping a pinned
// backend rolls back: database work). Timers reach it through a weak
// anchor, so a timer that fires after the end does nothing.
#ifndef CONNBROKER_SERVER_SESSION_REACTOR_H_
#define CONNBROKER_SERVER_SESSION_REACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "connbroker/v1/session.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/broker.h"
#include "server/caller.h"
#include "server/drivers/cancel_signal.h"
#include "server/drivers/timer_queue.h"
#include "server/query_run.h"
#include "server/worker_pool.h"

namespace connbroker::server {

class SessionReactor;

// The daemon's live session streams, so that a drain can end them: a stream
// kept by a client between calls is not a call in flight, and must not hold
// the shutdown for its whole grace period. Thread-safe.
class SessionSet {
 public:
  // False once DrainAll ran: the new session must drain at once.
  bool Add(SessionReactor* session);
  void Remove(SessionReactor* session);
  // Ends every stream once its running and queued requests are answered
  // (at once when idle), with UNAVAILABLE: clients open a new one.
  void DrainAll();

 private:
  absl::Mutex mu_;
  absl::flat_hash_set<SessionReactor*> sessions_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

class SessionReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `caller`: who is calling, or why it may not (the call then ends with
  // that error). `broker`, `workers` and `sessions` must outlive the
  // reactor.
  SessionReactor(Broker* broker, WorkerPool* workers, SessionSet* sessions,
                 grpc::CallbackServerContext* context,
                 absl::StatusOr<Caller> caller);

  // Stops reading and ends the stream once what it holds is answered.
  void Drain();
  ~SessionReactor() override;

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // What a statement's first keyword does to the session's transaction.
  enum class Control { kNone, kBegin, kCommit, kRollback };
  // Reaches the reactor from timers, which may fire after it is gone.
  struct Anchor {
    absl::Mutex mu;
    SessionReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  };
  // A write waiting to go out, and what to do once it has.
  struct Outgoing {
    grpc::ByteBuffer buffer;
    std::function<void()> then;
  };

  // Reading and scheduling (any thread, without mu_).
  void ReadMore();
  void Pump();
  void HandleCancel(uint64_t id, bool timed_out);
  void MaybeFinish();
  // Runs the request popped by Pump (a worker).
  void Run();
  // Serves the request popped by Pump on this thread when that cannot block
  // (a query answered from the result cache), saving the hop to a worker
  // that costs a small call most of its time; else hands it to a worker.
  // False: not such a request, nothing done.
  bool RunInline();
  // What every request does first: answers one cancelled while queued
  // (false: nothing more to do), arms its timeout.
  bool Prepare();
  // Takes `run` as the running query (cancellable from now).
  void StartRun(std::unique_ptr<QueryRun> run);
  // The running request is answered: the next may start.
  void Complete();

  void RunQuery();
  void RunExecute();
  static Control ControlOf(const std::string& sql);
  // What a statement means for the session's transaction: refused while the
  // daemon's rollback is unacknowledged, run on the pinned backend, or
  // beginning one. True when it was answered or dispatched here; false:
  // the caller runs it (a query on the transaction streams pinned).
  bool RouteThroughTransaction(const v1::Target& target, const std::string& sql,
                               const v1::Params& params, bool as_query);
  void RunBegin();
  void RunEnd(bool commit);
  // A statement that begins a transaction when none is open: pins a
  // backend, runs it there, and keeps the pin if a transaction opened.
  void RunBeginStatement(const v1::Target& target, const std::string& sql,
                         const v1::Params& params, bool as_query);
  // Runs `sql` on the transaction as an Execute; answers as a query (an
  // empty result) or an execute; drops the pin once the transaction ended.
  void RunOnTransaction(const std::string& sql, const v1::Params& params,
                        bool as_query);
  // Streams the running QueryRun's parts (a worker), reading one batch
  // ahead of the write in flight.
  void ProduceQuery();
  // Writes a part of the query's answer, unless one is being written: then
  // parks it and returns false (the producer stops; the write's completion
  // resumes it).
  bool Ship(std::vector<grpc::Slice> ready);
  // Sends what the query has left (and its error, if any) and completes.
  void EndQuery(absl::Status status);

  // True when `target` names the transaction's connection (resolving a
  // ConnectRequest target may block: a worker).
  bool OnTransaction(const v1::Target& target);
  // The error for a statement on the connection whose transaction the
  // daemon rolled back, if `target` names it; OK otherwise.
  absl::Status AbortedFor(const v1::Target& target);
  // Drops the transaction when its backend says it ended (or broke).
  void SettleTransaction(v1::SessionResponse* answer);
  void SetTransactionState(v1::SessionResponse* answer) const;
  // The running request's cancel signal (null once it completed).
  CancelSignal* RunningSignal();
  // Makes `pinned` the session's transaction.
  void AdoptTransaction(std::unique_ptr<PinnedTransaction> pinned);
  void ArmIdleTimer();
  void OnIdleTimeout(uint64_t activity);

  // Answers the running request with `answer` (its id is set here).
  void Answer(v1::SessionResponse answer);
  void AnswerError(const absl::Status& status, v1::SessionResponse answer = {});
  // Answers with `result` in the field `field` returns, or its error.
  template <typename Reply>
  void AnswerWith(absl::StatusOr<Reply> result,
                  Reply* (v1::SessionResponse::*field)()) {
    if (!result.ok()) {
      AnswerError(result.status());
      return;
    }
    v1::SessionResponse answer;
    *(answer.*field)() = *std::move(result);
    Answer(std::move(answer));
  }
  // Queues `buffer` for writing; `then` runs once it is written (or the
  // stream broke), on the reactor thread.
  void Send(grpc::ByteBuffer buffer, std::function<void()> then);
  void SendLocked(grpc::ByteBuffer buffer, std::function<void()> then)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::ByteBuffer Parts(std::vector<grpc::Slice> parts) const;
  bool Broken();
  // The status to answer a cancelled request with.
  absl::Status Interrupted(absl::Status status);

  Broker* const broker_;
  WorkerPool* const workers_;
  SessionSet* const sessions_;
  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<Anchor> anchor_;
  const int max_pipelined_;
  Caller caller_;  // the worker running a request reads it; Open sets it

  // Owned by the request chain (one request at a time, on workers).
  std::unique_ptr<v1::SessionRequest> current_;
  std::unique_ptr<QueryRun> run_;
  std::vector<grpc::Slice> parts_;  // a query answer not written yet
  bool parts_have_batch_ = false;
  bool schema_taken_ = false;
  bool requests_seen_ = false;
  bool first_request_ = false;  // the running request came first
  bool counted_ = false;        // in the broker's sessions_open
  // The running request's timeout, and the transaction's idle timer (0:
  // none); cancelled when they can no longer matter.
  TimerQueue::Id request_timer_ = 0;
  TimerQueue::Id idle_timer_ = 0;
  // The session's transaction, and after the daemon rolled one back on its
  // own, the error statements on its connection get until a rollback.
  std::unique_ptr<PinnedTransaction> txn_;
  bool txn_changed_ = false;  // this request began or ended one

  grpc::ByteBuffer read_buffer_;

  // A query part's write in flight, and the part waiting for it.
  absl::Mutex flow_mu_;
  bool query_write_in_flight_ ABSL_GUARDED_BY(flow_mu_) = false;
  std::vector<grpc::Slice> parked_ ABSL_GUARDED_BY(flow_mu_);

  // Guards the running request's cancellation against its end.
  absl::Mutex run_mu_;
  QueryRun* cancellable_run_ ABSL_GUARDED_BY(run_mu_) = nullptr;
  // Shared: a cancel fires it outside run_mu_ (what it interrupts may
  // answer at once, taking mu_).
  std::shared_ptr<CancelSignal> signal_ ABSL_GUARDED_BY(run_mu_);
  uint64_t signal_id_ ABSL_GUARDED_BY(run_mu_) = 0;  // whose signal_ it is
  bool timed_out_ ABSL_GUARDED_BY(run_mu_) = false;

  absl::Mutex mu_;
  std::deque<std::unique_ptr<v1::SessionRequest>> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<uint64_t> cancelled_ids_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t running_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Transaction bookkeeping the idle timer reads.
  std::string aborted_handle_ ABSL_GUARDED_BY(mu_);
  absl::Status aborted_ ABSL_GUARDED_BY(mu_);
  uint64_t activity_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_SESSION_REACTOR_H_
