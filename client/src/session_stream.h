// Internal to the C++ client: the client side of the Session stream.
//
// SessionStream is one Session call, used by one thread at a time (whoever
// holds it: a Connection call, a Transaction, a Session). SessionPool keeps
// idle streams for reuse, so a Connection call costs one message each way
// instead of a new call. DeadlineGuard cancels a stream whose answer is
// overdue: a blocking read on a stream cannot otherwise stop waiting, and a
// long-lived stream has no deadline of its own. Exchange() sends one request
// and reads its whole answer; every caller goes through it.
#ifndef CONNBROKER_CLIENT_SRC_SESSION_STREAM_H_
#define CONNBROKER_CLIENT_SRC_SESSION_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/src/client_core.h"
#include "connbroker/v1/session.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"

namespace connbroker {

// Cancels calls whose time ran out, from one thread (started at first use).
// A watch lives on the waiting caller's stack between Arm and Disarm.
class DeadlineGuard {
 public:
  struct Watch {
    grpc::ClientContext* context = nullptr;
    absl::Time when = absl::InfiniteFuture();
    bool fired = false;  // set by the guard (under its mutex)
  };

  DeadlineGuard() = default;
  DeadlineGuard(const DeadlineGuard&) = delete;
  DeadlineGuard& operator=(const DeadlineGuard&) = delete;
  ~DeadlineGuard();

  // From now until Disarm, cancels `watch->context` once `watch->when`
  // passes.
  void Arm(Watch* watch);
  // Returns whether the guard cancelled the call. After it returns the
  // guard no longer touches the watch.
  bool Disarm(Watch* watch);

 private:
  void Run();

  absl::Mutex mu_;
  // A handful (one per thread waiting on a stream): a vector beats a set.
  std::vector<Watch*> armed_ ABSL_GUARDED_BY(mu_);
  // When the thread means to wake next; Arm wakes it early only for a watch
  // due before that.
  absl::Time wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool rearm_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

// One Session call. Not thread-safe: one holder at a time. Starting it does
// no I/O (the call's headers leave with the first request), so a stream to
// a daemon that is down fails at its first Send or Receive.
class SessionStream {
 public:
  explicit SessionStream(const ClientCore& core);
  SessionStream(const SessionStream&) = delete;
  SessionStream& operator=(const SessionStream&) = delete;
  // Ends the call: half-closes it and waits (briefly, guarded) for the
  // daemon to finish it, or cancels a broken one.
  ~SessionStream();

  // True once the stream failed: it must not be used (or kept) any more.
  bool broken() const { return broken_; }
  // True once it answered a request: a kept stream, which may have died
  // while idle (the daemon restarted) without anyone noticing yet.
  bool kept() const { return answers_ > 0; }
  // Whether the session has a transaction open, as the last
  // TransactionState said, and on which connection.
  bool transaction_open() const { return transaction_open_; }
  const std::string& transaction_handle() const { return transaction_handle_; }
  // After a rollback the daemon answered without a TransactionState (it
  // had already rolled back on its own): no transaction is open.
  void ForgetTransaction() {
    transaction_open_ = false;
    transaction_handle_.clear();
  }

  // Sends `request`, giving it the stream's next id. Returns false when the
  // stream is dead (it is then broken()).
  bool Send(v1::SessionRequest& request);
  // Reads the next message, waiting until `give_up` at most (then the
  // stream is cancelled). Notes TransactionState. A non-OK return breaks the
  // stream and says why: the call's status, or DEADLINE_EXCEEDED.
  absl::Status Receive(v1::SessionResponse& response, absl::Time give_up);
  // Breaks the stream on purpose (cancels it); returns the call's status.
  absl::Status Break();

  // A notice the daemon sent unasked (it rolled the transaction back),
  // kept by Exchange until someone takes it.
  void KeepNotice(const v1::SessionError& notice) { notice_ = notice; }
  std::optional<v1::SessionError> TakeNotice();

  // A message kept for reading answers into (see Exchange).
  v1::SessionResponse& buffer() { return buffer_; }

 private:
  // Cancels, drains and finishes the call; remembers and returns its status.
  absl::Status Finish(bool cancel);

  const ClientCore& core_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionResponse>>
      stream_;
  uint64_t next_id_ = 1;
  int64_t answers_ = 0;
  bool broken_ = false;
  bool finished_ = false;
  absl::Status final_status_;
  bool transaction_open_ = false;
  std::string transaction_handle_;
  std::optional<v1::SessionError> notice_;
  v1::SessionResponse buffer_;
};

// True when `response` is the last message of its request's answer: it
// holds a summary, or any field numbered 16 and above (known or not).
bool EndsAnswer(const v1::SessionResponse& response);

// How one request went on a stream.
struct Exchanged {
  absl::Status status;
  // The request never left: the stream was already dead.
  bool dead_stream = false;
  // The status is the stream's end (it broke, or the daemon refused the
  // call), not an answer to the request.
  bool stream_failed = false;
  // The message that ended a successful answer other than a query's (its
  // fields 16 and up: executed, reset, transaction, ...).
  v1::SessionResponse last;
};

// Sends `request` on `stream` and reads its whole answer, within
// `deadline`: the request carries the time left as timeout_millis, and the
// guard cancels the stream if no answer came kGrace after. A query's parts
// go to `query` (null for other requests); if `query` refuses one (its
// callback failed), the request is cancelled and its answer drained, so the
// stream stays usable. Notices seen on the way are kept on the stream.
Exchanged Exchange(SessionStream& stream, v1::SessionRequest& request,
                   absl::Time deadline, QueryAssembler* query);

// Sends a request and reads its answer on some stream (the pool's, or one
// held by a Transaction or Session).
using ExchangeFn =
    absl::FunctionRef<Exchanged(v1::SessionRequest&, QueryAssembler*)>;

// Points `request`'s target (whichever request it is) at `handle`.
void SetTarget(v1::SessionRequest& request, const std::string& handle);

// One request on `handle` through `exchange`. A query's answer (`result`
// non-null) is decoded into `result`, or with `on_batch` batch by batch; any
// other answer's last message goes to `last`. `unknown_handle` is set when
// the daemon did not know the handle and nothing was handed to the caller
// yet (so a retry on a new handle is safe).
absl::Status CallOnHandle(ExchangeFn exchange, v1::SessionRequest& request,
                          const std::string& handle, Result* result,
                          const BatchCallback* on_batch,
                          v1::SessionResponse* last, bool* unknown_handle);

// Idle SessionStreams of one Client, kept for the next call. Thread-safe.
class SessionPool {
 public:
  SessionPool(const ClientCore& core, size_t max_idle)
      : core_(core), max_idle_(max_idle) {}
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;
  ~SessionPool();

  // An idle stream (the most recently used: its connection is warm), or a
  // new one when none is idle. The caller holds it exclusively.
  std::unique_ptr<SessionStream> Acquire();
  // Takes a stream back. Keeps it when it is healthy, has no transaction
  // open (a plain SQL BEGIN on a pooled call must not leak into the next
  // caller's), and fewer than max_idle are kept; otherwise closes it.
  void Release(std::unique_ptr<SessionStream> stream);

  size_t max_idle() const { return max_idle_; }

 private:
  const ClientCore& core_;
  const size_t max_idle_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<SessionStream>> idle_ ABSL_GUARDED_BY(mu_);
};

// Runs `request` on a pooled stream: retried once on a fresh stream when it
// could not be sent on a kept one (which died while idle). The stream goes
// back to the pool, or to `*keep` when given: the caller then owns it, and
// releases it when done (Connection::Begin keeps it for the transaction).
Exchanged ExchangeOnPool(const ClientCore& core, v1::SessionRequest& request,
                         absl::Time deadline, QueryAssembler* query,
                         std::unique_ptr<SessionStream>* keep = nullptr);

}  // namespace connbroker

#endif  // CONNBROKER_CLIENT_SRC_SESSION_STREAM_H_
