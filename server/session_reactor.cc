// SessionReactor: a Session stream's requests, run in order on workers.
#include "server/session_reactor.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "connbroker/config/shown.h"
#include "server/drivers/sql_text.h"
#include "server/logging.h"
#include "server/status_mapping.h"
#include "server/wire.h"

namespace connbroker::server {
namespace {

constexpr int kIdField = 15;  // SessionResponse.id
constexpr size_t kMaxSessionBytes = 256;

TransactionOptions OptionsOf(const v1::BeginRequest& begin) {
  TransactionOptions options;
  switch (begin.isolation()) {
    case v1::BeginRequest::READ_UNCOMMITTED:
      options.isolation = TransactionOptions::Isolation::kReadUncommitted;
      break;
    case v1::BeginRequest::READ_COMMITTED:
      options.isolation = TransactionOptions::Isolation::kReadCommitted;
      break;
    case v1::BeginRequest::REPEATABLE_READ:
      options.isolation = TransactionOptions::Isolation::kRepeatableRead;
      break;
    case v1::BeginRequest::SERIALIZABLE:
      options.isolation = TransactionOptions::Isolation::kSerializable;
      break;
    default:
      options.isolation = TransactionOptions::Isolation::kDefault;
      break;
  }
  options.read_only = begin.read_only();
  options.deferrable = begin.deferrable();
  return options;
}

}  // namespace

bool SessionSet::Add(SessionReactor* session) {
  absl::MutexLock lock(&mu_);
  sessions_.insert(session);
  return !draining_;
}

void SessionSet::Remove(SessionReactor* session) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(session);
}

void SessionSet::DrainAll() {
  // Under mu_: a session removes itself (its destructor) only through it.
  absl::MutexLock lock(&mu_);
  draining_ = true;
  for (SessionReactor* session : sessions_) session->Drain();
}

SessionReactor::SessionReactor(Broker* broker, WorkerPool* workers,
                               SessionSet* sessions,
                               grpc::CallbackServerContext* context,
                               absl::StatusOr<Caller> caller)
    : broker_(broker),
      workers_(workers),
      sessions_(sessions),
      context_(context),
      anchor_(std::make_shared<Anchor>()),
      max_pipelined_(broker->settings().limits.max_pipelined_requests) {
  {
    absl::MutexLock lock(&anchor_->mu);
    anchor_->reactor = this;
  }
  const int max_sessions = broker->settings().limits.max_sessions;
  if (caller.ok() && broker_->counters().sessions_open.fetch_add(
                         1, std::memory_order_relaxed) >= max_sessions) {
    broker_->counters().sessions_open.fetch_sub(1, std::memory_order_relaxed);
    broker_->counters().calls_refused.fetch_add(1, std::memory_order_relaxed);
    caller = absl::ResourceExhaustedError(absl::StrCat(
        "the daemon has ", max_sessions,
        " session streams open (limits.max_sessions); the one-shot calls "
        "still work"));
  } else if (caller.ok()) {
    counted_ = true;
  }
  if (!caller.ok()) {
    {
      absl::MutexLock lock(&mu_);
      finished_ = true;
    }
    broker_->CountError();
    Finish(ToGrpcStatus(caller.status(), context_));
    return;
  }
  caller_ = *std::move(caller);
  if (!sessions_->Add(this)) Drain();
  ReadMore();
}

SessionReactor::~SessionReactor() {
  for (TimerQueue::Id timer : {idle_timer_, request_timer_}) {
    if (timer != 0) TimerQueue::Shared().Cancel(timer);
  }
  if (counted_) sessions_->Remove(this);
  {
    absl::MutexLock lock(&anchor_->mu);
    anchor_->reactor = nullptr;
  }
  if (txn_ != nullptr) {
    spdlog::debug("session ended inside a transaction on {}: rolling back",
                  txn_->connection->handle());
    txn_.reset();  // rolls back and returns the backend
    // Counted down only now, so that a client seeing 0 knows it is done.
    broker_->counters().transactions_open.fetch_sub(1,
                                                    std::memory_order_relaxed);
  }
  if (counted_) {
    broker_->counters().sessions_open.fetch_sub(1, std::memory_order_relaxed);
  }
  // Members go now: txn_ rolls back and returns its backend.
}

void SessionReactor::OnDone() {
  workers_->Submit([this] { delete this; });
}

// ---------------------------------------------------------------------------
// Reading and scheduling

void SessionReactor::ReadMore() {
  {
    absl::MutexLock lock(&mu_);
    if (reading_ || reads_done_ || broken_ || draining_ || finished_) return;
    if (static_cast<int>(queue_.size()) >= max_pipelined_) return;
    reading_ = true;
  }
  StartRead(&read_buffer_);
}

void SessionReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client half-closed (no more requests), or the stream is gone.
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      reads_done_ = true;
    }
    MaybeFinish();
    return;
  }
  auto request = std::make_unique<v1::SessionRequest>();
  absl::Status decoded = DecodeRequest(read_buffer_, request.get());
  read_buffer_.Clear();
  if (!decoded.ok()) {
    // Without an id nothing can be answered: the stream is unusable.
    absl::MutexLock lock(&mu_);
    reading_ = false;
    reads_done_ = true;
    broken_ = true;
    end_status_ = decoded;
  } else if (request->request_case() == v1::SessionRequest::kCancel) {
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
    }
    HandleCancel(request->cancel().id(), /*timed_out=*/false);
  } else {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    queue_.push_back(std::move(request));
  }
  MaybeFinish();
  Pump();
  ReadMore();
}

void SessionReactor::HandleCancel(uint64_t id, bool timed_out) {
  {
    absl::MutexLock lock(&mu_);
    if (!running_ || running_id_ != id) {
      for (const auto& queued : queue_) {
        if (queued->id() == id) cancelled_ids_.insert(id);
      }
      return;
    }
  }
  // The running request: interrupt its statement or its wait. Under run_mu_
  // so that the run is not destroyed meanwhile; what the cancel calls back
  // (a waiting run's resume) only queues work.
  std::shared_ptr<CancelSignal> signal;
  {
    absl::MutexLock lock(&run_mu_);
    if (signal_id_ != id) return;  // it ended meanwhile
    if (timed_out) timed_out_ = true;
    if (cancellable_run_ != nullptr) cancellable_run_->Cancel();
    signal = signal_;
  }
  // Outside run_mu_: a wait it removes answers at once, which writes.
  if (signal != nullptr) signal->Cancel();
}

void SessionReactor::Pump() {
  {
    absl::MutexLock lock(&mu_);
    if (running_ || finished_ || broken_ || queue_.empty()) return;
    running_ = true;
    current_ = std::move(queue_.front());
    queue_.pop_front();
    running_id_ = current_->id();
    ++activity_;
    // Its cancel signal exists from the moment a cancel can name it.
    absl::MutexLock run_lock(&run_mu_);
    signal_ = std::make_shared<CancelSignal>();
    signal_id_ = running_id_;
    timed_out_ = false;
  }
  if (!RunInline()) workers_->Submit([this] { Run(); });
}

bool SessionReactor::RunInline() {
  // Only a result-cache hit on a live connection never blocks; anything
  // else, or any doubt, goes to a worker.
  if (!current_->has_query() || txn_ != nullptr) return false;
  const v1::QueryRequest& query = current_->query();
  if (!(query.ttl_seconds() > 0) || !query.target().has_handle() ||
      ControlOf(query.sql()) != Control::kNone) {
    return false;
  }
  {
    absl::MutexLock lock(&mu_);
    if (!aborted_.ok()) return false;
  }
  if (!Prepare()) return true;
  absl::StatusOr<std::unique_ptr<QueryRun>> run = broker_->StartQuery(
      query, caller_, [this] { workers_->Submit([this] { ProduceQuery(); }); },
      /*pinned=*/nullptr, /*only_if_live=*/true);
  if (!run.ok()) {
    AnswerError(run.status());
    Complete();
    return true;
  }
  if (*run == nullptr) {
    workers_->Submit([this] { RunQuery(); });  // the connection needs work
    return true;
  }
  const bool hit = (*run)->TryServeFromCache();
  StartRun(*std::move(run));
  if (hit) {
    ProduceQuery();  // copies the cached result out: no database, no wait
  } else {
    workers_->Submit([this] { ProduceQuery(); });
  }
  return true;
}

void SessionReactor::MaybeFinish() {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || running_ || writing_ || !outbox_.empty()) return;
    if (!broken_ && !((reads_done_ || draining_) && queue_.empty())) return;
    finished_ = true;
    status = end_status_;
  }
  if (!status.ok()) broker_->CountError();
  Finish(ToGrpcStatus(status, context_));
}

void SessionReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    broken_ = true;
    if (end_status_.ok()) {
      end_status_ = absl::CancelledError("the session stream was cancelled");
    }
    queue_.clear();
  }
  std::shared_ptr<CancelSignal> signal;
  {
    absl::MutexLock lock(&run_mu_);
    if (cancellable_run_ != nullptr) cancellable_run_->Cancel();
    signal = signal_;
  }
  if (signal != nullptr) signal->Cancel();
  MaybeFinish();
}

void SessionReactor::Drain() {
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || draining_) return;
    draining_ = true;
    if (end_status_.ok()) {
      end_status_ = absl::UnavailableError(
          "the daemon is shutting down; open a new session");
    }
  }
  MaybeFinish();
}

bool SessionReactor::Broken() {
  absl::MutexLock lock(&mu_);
  return broken_;
}

// ---------------------------------------------------------------------------
// Running one request (on a worker)

bool SessionReactor::Prepare() {
  const uint64_t id = current_->id();
  bool cancelled;
  {
    absl::MutexLock lock(&mu_);
    cancelled = cancelled_ids_.erase(id) > 0;
  }
  txn_changed_ = false;
  if (cancelled) {
    AnswerError(absl::CancelledError(
        absl::StrCat("request ", id, " was cancelled before it ran")));
    Complete();
    return false;
  }
  if (current_->timeout_millis() > 0) {
    std::weak_ptr<Anchor> weak = anchor_;
    request_timer_ = TimerQueue::Shared().Schedule(
        absl::Now() + absl::Milliseconds(current_->timeout_millis()),
        [weak, id] {
          std::shared_ptr<Anchor> anchor = weak.lock();
          if (anchor == nullptr) return;
          absl::MutexLock lock(&anchor->mu);
          if (anchor->reactor != nullptr) {
            anchor->reactor->HandleCancel(id, /*timed_out=*/true);
          }
        });
  }
  first_request_ = !requests_seen_;
  requests_seen_ = true;
  return true;
}

void SessionReactor::Run() {
  if (!Prepare()) return;
  const bool first = first_request_;
  switch (current_->request_case()) {
    case v1::SessionRequest::kOpen: {
      const std::string& session = current_->open().session();
      if (!first) {
        AnswerError(absl::FailedPreconditionError(
            "open must be the session's first request"));
      } else if (session.size() > kMaxSessionBytes) {
        AnswerError(absl::InvalidArgumentError(
            absl::StrCat("the session id is ", session.size(),
                         " bytes long; at most ", kMaxSessionBytes)));
      } else if (!session.empty() && !caller_.session.empty() &&
                 session != caller_.session) {
        AnswerError(absl::InvalidArgumentError(
            "open.session differs from the call's connbroker-session "
            "metadata; send one of them"));
      } else {
        if (!session.empty()) caller_.session = session;
        v1::SessionResponse answer;
        answer.mutable_opened()->set_session(caller_.session);
        answer.mutable_opened()->set_max_pipelined(max_pipelined_);
        Answer(std::move(answer));
      }
      Complete();
      return;
    }
    case v1::SessionRequest::kConnect:
      AnswerWith(broker_->Connect(current_->connect(), caller_),
                 &v1::SessionResponse::mutable_connected);
      Complete();
      return;
    case v1::SessionRequest::kReset:
      AnswerWith(broker_->Reset(current_->reset(), caller_),
                 &v1::SessionResponse::mutable_reset);
      Complete();
      return;
    case v1::SessionRequest::kQuery:
      RunQuery();
      return;
    case v1::SessionRequest::kExecute:
      RunExecute();
      return;
    case v1::SessionRequest::kBegin:
      RunBegin();
      return;
    case v1::SessionRequest::kCommit:
      RunEnd(/*commit=*/true);
      return;
    case v1::SessionRequest::kRollback:
      RunEnd(/*commit=*/false);
      return;
    case v1::SessionRequest::kCancel:  // handled as it is read
    case v1::SessionRequest::REQUEST_NOT_SET:
      break;
  }
  AnswerError(absl::InvalidArgumentError(
      "the session request names no operation (open, connect, query, "
      "execute, begin, commit, rollback, reset or cancel)"));
  Complete();
}

void SessionReactor::Complete() {
  if (request_timer_ != 0) {
    TimerQueue::Shared().Cancel(std::exchange(request_timer_, 0));
  }
  {
    absl::MutexLock lock(&run_mu_);
    signal_.reset();
    signal_id_ = 0;
    cancellable_run_ = nullptr;
  }
  current_.reset();
  {
    absl::MutexLock lock(&mu_);
    running_ = false;
    ++activity_;
  }
  ArmIdleTimer();
  MaybeFinish();
  Pump();
  ReadMore();
}

absl::Status SessionReactor::Interrupted(absl::Status status) {
  absl::MutexLock lock(&run_mu_);
  if (timed_out_ && status.code() == absl::StatusCode::kCancelled) {
    return absl::DeadlineExceededError(
        absl::StrCat("the request ran past its timeout_millis (",
                     current_->timeout_millis(), " ms) and was cancelled"));
  }
  return status;
}

// ---------------------------------------------------------------------------
// Statements and transactions

absl::Status SessionReactor::AbortedFor(const v1::Target& target) {
  std::string handle;
  absl::Status aborted;
  {
    absl::MutexLock lock(&mu_);
    if (aborted_.ok()) return absl::OkStatus();
    handle = aborted_handle_;
    aborted = aborted_;
  }
  if (target.has_connect()) {
    absl::StatusOr<std::shared_ptr<Connection>> resolved =
        broker_->ResolveTarget(target, caller_);
    if (!resolved.ok() || (*resolved)->handle() != handle) {
      return absl::OkStatus();
    }
  } else if (target.handle() != handle) {
    return absl::OkStatus();
  }
  return aborted;
}

bool SessionReactor::OnTransaction(const v1::Target& target) {
  if (txn_ == nullptr) return false;
  if (target.has_connect()) {
    absl::StatusOr<std::shared_ptr<Connection>> resolved =
        broker_->ResolveTarget(target, caller_);
    return resolved.ok() && *resolved == txn_->connection;
  }
  return target.handle() == txn_->connection->handle();
}

SessionReactor::Control SessionReactor::ControlOf(const std::string& sql) {
  // The standard's comments count as blanks here; the database parses the
  // statement again anyway.
  absl::string_view word = LeadingKeyword(sql, SqlComments{});
  auto is = [word](absl::string_view expected) {
    return absl::EqualsIgnoreCase(word, expected);
  };
  if (is("BEGIN") || is("START")) return Control::kBegin;
  if (is("COMMIT") || is("END")) return Control::kCommit;
  if (is("ROLLBACK") || is("ABORT")) return Control::kRollback;
  return Control::kNone;
}

bool SessionReactor::RouteThroughTransaction(const v1::Target& target,
                                             const std::string& sql,
                                             const v1::Params& params,
                                             bool as_query) {
  const Control control = ControlOf(sql);
  if (absl::Status aborted = AbortedFor(target); !aborted.ok()) {
    if (control == Control::kCommit || control == Control::kRollback) {
      RunEnd(/*commit=*/control == Control::kCommit);
    } else {
      AnswerError(aborted);
      Complete();
    }
    return true;
  }
  if (OnTransaction(target)) {
    // A query streams from the pinned backend (RunQuery); everything else
    // runs there as an Execute.
    if (as_query && control == Control::kNone) return false;
    RunOnTransaction(sql, params, as_query);
    return true;
  }
  if (control == Control::kBegin) {
    RunBeginStatement(target, sql, params, as_query);
    return true;
  }
  return false;
}

void SessionReactor::RunQuery() {
  const v1::QueryRequest& query = current_->query();
  if (RouteThroughTransaction(query.target(), query.sql(), query.params(),
                              /*as_query=*/true)) {
    return;
  }
  const bool pinned = OnTransaction(query.target());
  absl::StatusOr<std::unique_ptr<QueryRun>> run = broker_->StartQuery(
      query, caller_, [this] { workers_->Submit([this] { ProduceQuery(); }); },
      pinned ? txn_.get() : nullptr);
  if (!run.ok()) {
    AnswerError(run.status());
    Complete();
    return;
  }
  StartRun(*std::move(run));
  ProduceQuery();
}

void SessionReactor::StartRun(std::unique_ptr<QueryRun> run) {
  run_ = std::move(run);
  parts_.clear();
  parts_have_batch_ = false;
  schema_taken_ = false;
  absl::MutexLock lock(&run_mu_);
  cancellable_run_ = run_.get();
  if (signal_ != nullptr && signal_->cancelled()) run_->Cancel();
}

grpc::ByteBuffer SessionReactor::Parts(std::vector<grpc::Slice> parts) const {
  // The id goes first: a client may read it before the rows.
  auto id = std::make_shared<const std::string>(
      VarintField(kIdField, current_->id()));
  parts.insert(parts.begin(), SharedSlice(std::move(id)));
  return grpc::ByteBuffer(parts.data(), parts.size());
}

bool SessionReactor::Ship(std::vector<grpc::Slice> ready) {
  {
    absl::MutexLock lock(&flow_mu_);
    if (query_write_in_flight_) {
      // One part is being written and this one is ready: the producer stops
      // here until that write completes, so a slow reader holds at most two.
      parked_ = std::move(ready);
      return false;
    }
    query_write_in_flight_ = true;
  }
  Send(Parts(std::move(ready)), [this] {
    bool resume;
    {
      absl::MutexLock lock(&flow_mu_);
      query_write_in_flight_ = false;
      resume = !parked_.empty();
    }
    if (resume) workers_->Submit([this] { ProduceQuery(); });
  });
  return true;
}

void SessionReactor::ProduceQuery() {
  std::vector<grpc::Slice> parked;
  {
    absl::MutexLock lock(&flow_mu_);
    parked = std::move(parked_);
    parked_.clear();
  }
  if (!parked.empty() && !Ship(std::move(parked))) return;
  while (true) {
    if (Broken()) {
      EndQuery(absl::CancelledError("the session stream ended"));
      return;
    }
    if (!parts_.empty() && run_->NextNeedsDatabase()) {
      // What is ready goes out before the database is asked for more; the
      // next batch is read while it is written.
      std::vector<grpc::Slice> ready = std::move(parts_);
      parts_.clear();
      parts_have_batch_ = false;
      if (!Ship(std::move(ready))) return;
      continue;
    }
    QueryRun::Outgoing out;
    absl::StatusOr<QueryRun::Progress> progress = run_->Next(&out);
    if (!progress.ok()) {
      EndQuery(Interrupted(progress.status()));
      return;
    }
    if (*progress == QueryRun::Progress::kWaiting) return;  // resume follows
    if (*progress == QueryRun::Progress::kDone) {
      EndQuery(absl::OkStatus());  // unreachable: the summary ended it
      return;
    }
    grpc::Slice slice;
    if (out.wire != nullptr) {
      slice = SharedSlice(std::move(out.wire));
    } else {
      slice = EncodedSlice(*out.message);
    }
    const bool is_batch = schema_taken_ && !out.last;
    schema_taken_ = true;
    if (is_batch && parts_have_batch_) {
      // One batch a message: the one before goes out first.
      std::vector<grpc::Slice> ready = std::move(parts_);
      parts_.clear();
      parts_.push_back(std::move(slice));
      if (!Ship(std::move(ready))) return;
      continue;
    }
    parts_.push_back(std::move(slice));
    if (is_batch) parts_have_batch_ = true;
    if (out.last) {
      EndQuery(absl::OkStatus());
      return;
    }
  }
}

void SessionReactor::EndQuery(absl::Status status) {
  {
    absl::MutexLock lock(&run_mu_);
    cancellable_run_ = nullptr;
  }
  run_.reset();  // a cursor left mid-result is closed here (a worker)
  std::vector<grpc::Slice> ready = std::move(parts_);
  parts_.clear();
  if (status.ok() && ready.empty()) {
    status = absl::InternalError("the query ended without a summary");
  }
  // A transaction's statement may have ended it (COMMIT, an error that
  // aborts it, a broken backend): the answer says where it stands.
  v1::SessionResponse tail;
  if (txn_ != nullptr) SettleTransaction(&tail);
  if (!status.ok()) {
    broker_->CountError();
    spdlog::debug("session request {} failed: {}", current_->id(),
                  status.ToString());
    *tail.mutable_error() = ToSessionError(status);
  }
  if (tail.ByteSizeLong() > 0) {
    ready.push_back(EncodedSlice(tail));
  }
  Send(Parts(std::move(ready)), nullptr);
  Complete();
}

void SessionReactor::RunExecute() {
  const v1::ExecuteRequest& execute = current_->execute();
  if (RouteThroughTransaction(execute.target(), execute.sql(), execute.params(),
                              /*as_query=*/false)) {
    return;
  }
  CancelSignal* const signal = RunningSignal();
  broker_->Execute(execute, caller_, signal,
                   [this](absl::StatusOr<v1::ExecuteResponse> result) {
                     if (result.ok()) {
                       v1::SessionResponse answer;
                       *answer.mutable_executed() = *std::move(result);
                       Answer(std::move(answer));
                     } else {
                       AnswerError(Interrupted(result.status()));
                     }
                     Complete();
                   });
}

void SessionReactor::RunOnTransaction(const std::string& sql,
                                      const v1::Params& params, bool as_query) {
  CancelSignal* const signal = RunningSignal();
  absl::StatusOr<v1::ExecuteResponse> result =
      broker_->ExecuteOn(*txn_, sql, params, signal);
  v1::SessionResponse answer;
  SettleTransaction(&answer);
  if (!result.ok()) {
    AnswerError(Interrupted(result.status()), std::move(answer));
    Complete();
    return;
  }
  if (as_query) {
    answer.mutable_schema();
    answer.mutable_summary()->set_backend_executions(1);
    answer.mutable_summary()->set_handle(result->handle());
  } else {
    *answer.mutable_executed() = *std::move(result);
  }
  Answer(std::move(answer));
  Complete();
}

void SessionReactor::RunBeginStatement(const v1::Target& target,
                                       const std::string& sql,
                                       const v1::Params& params,
                                       bool as_query) {
  CancelSignal* const signal = RunningSignal();
  broker_->Pin(target, caller_, Access::kWrite, signal,
               [this, sql, params, as_query](
                   absl::StatusOr<std::unique_ptr<PinnedTransaction>> pinned) {
                 if (!pinned.ok()) {
                   AnswerError(Interrupted(pinned.status()));
                   Complete();
                   return;
                 }
                 AdoptTransaction(*std::move(pinned));
                 RunOnTransaction(sql, params, as_query);
               });
}

CancelSignal* SessionReactor::RunningSignal() {
  absl::MutexLock lock(&run_mu_);
  return signal_.get();  // kept until Complete(): the request's own
}

void SessionReactor::AdoptTransaction(
    std::unique_ptr<PinnedTransaction> pinned) {
  {
    // Under mu_: the idle timer reads txn_ (only while no request runs).
    absl::MutexLock lock(&mu_);
    txn_ = std::move(pinned);
  }
  broker_->counters().transactions_open.fetch_add(1, std::memory_order_relaxed);
  txn_changed_ = true;
}

void SessionReactor::RunBegin() {
  const v1::BeginRequest& begin = current_->begin();
  if (txn_ != nullptr) {
    AnswerError(absl::FailedPreconditionError(
        absl::StrCat("a transaction is already open on connection ",
                     txn_->connection->handle(),
                     " in this session; commit or roll it back first")));
    Complete();
    return;
  }
  if (absl::Status aborted = AbortedFor(begin.target()); !aborted.ok()) {
    AnswerError(aborted);
    Complete();
    return;
  }
  CancelSignal* const signal = RunningSignal();
  const TransactionOptions options = OptionsOf(begin);
  broker_->Pin(begin.target(), caller_,
               options.read_only ? Access::kRead : Access::kWrite, signal,
               [this, options, signal](
                   absl::StatusOr<std::unique_ptr<PinnedTransaction>> pinned) {
                 if (!pinned.ok()) {
                   AnswerError(Interrupted(pinned.status()));
                   Complete();
                   return;
                 }
                 absl::Status begun =
                     (*pinned)->backend->Begin(options, signal);
                 if (!begun.ok()) {
                   AnswerError(Interrupted(begun));
                   Complete();
                   return;
                 }
                 AdoptTransaction(*std::move(pinned));
                 v1::SessionResponse answer;
                 SetTransactionState(&answer);
                 Answer(std::move(answer));
                 Complete();
               });
}

void SessionReactor::RunEnd(bool commit) {
  const v1::Target* target = nullptr;
  if (current_->has_commit()) target = &current_->commit();
  if (current_->has_rollback()) target = &current_->rollback();
  // The daemon rolled the transaction back already: a rollback
  // acknowledges that, a commit is told it did not happen.
  absl::Status aborted;
  {
    absl::MutexLock lock(&mu_);
    if (!aborted_.ok() && txn_ == nullptr) {
      aborted = std::exchange(aborted_, absl::OkStatus());
      aborted_handle_.clear();
    }
  }
  if (!aborted.ok()) {
    txn_changed_ = true;
    if (commit) {
      AnswerError(absl::AbortedError(
          absl::StrCat("nothing was committed: ", aborted.message())));
    } else {
      v1::SessionResponse answer;
      SetTransactionState(&answer);
      Answer(std::move(answer));
    }
    Complete();
    return;
  }
  if (txn_ == nullptr) {
    if (commit) {
      AnswerError(absl::FailedPreconditionError(
          "no transaction is open in this session"));
    } else {
      v1::SessionResponse answer;  // rolling back nothing is fine
      SetTransactionState(&answer);
      Answer(std::move(answer));
    }
    Complete();
    return;
  }
  if (target != nullptr &&
      target->target_case() != v1::Target::TARGET_NOT_SET &&
      !OnTransaction(*target)) {
    AnswerError(absl::InvalidArgumentError(absl::StrCat(
        "the session's transaction is on connection ",
        txn_->connection->handle(), ", not the one this request names")));
    Complete();
    return;
  }
  const bool was_query = current_->has_query();
  RunOnTransaction(commit ? "COMMIT" : "ROLLBACK", v1::Params(), was_query);
}

void SessionReactor::SetTransactionState(v1::SessionResponse* answer) const {
  v1::TransactionState* state = answer->mutable_transaction();
  if (txn_ != nullptr) {
    state->set_handle(txn_->connection->handle());
    state->set_open(true);
  }
}

void SessionReactor::SettleTransaction(v1::SessionResponse* answer) {
  if (txn_ != nullptr &&
      (txn_->backend->broken() || !txn_->backend->InTransaction())) {
    if (txn_->backend->broken()) {
      // Its work is lost; say so to the statements that would follow.
      absl::MutexLock lock(&mu_);
      aborted_handle_ = txn_->connection->handle();
      aborted_ = absl::AbortedError(absl::StrCat(
          "the backend of connection '", txn_->connection->spec().name,
          "' broke inside the session's transaction, which is lost; send "
          "ROLLBACK to go on"));
    }
    txn_.reset();  // returns the backend (closed when broken)
    broker_->counters().transactions_open.fetch_sub(1,
                                                    std::memory_order_relaxed);
    txn_changed_ = true;
  }
  if (txn_changed_) SetTransactionState(answer);
}

void SessionReactor::ArmIdleTimer() {
  uint64_t activity;
  std::string section;
  {
    absl::MutexLock lock(&mu_);
    if (txn_ == nullptr) return;
    activity = activity_;
    section = txn_->connection->spec().name;
  }
  const absl::Duration timeout =
      broker_->settings().IdleInTransactionTimeout(section);
  std::weak_ptr<Anchor> weak = anchor_;
  // One idle timer a session: a client running many statements in a
  // transaction must not pile up timers in the daemon.
  if (idle_timer_ != 0) TimerQueue::Shared().Cancel(idle_timer_);
  idle_timer_ =
      TimerQueue::Shared().Schedule(absl::Now() + timeout, [weak, activity] {
        std::shared_ptr<Anchor> anchor = weak.lock();
        if (anchor == nullptr) return;
        absl::MutexLock lock(&anchor->mu);
        if (anchor->reactor != nullptr)
          anchor->reactor->OnIdleTimeout(activity);
      });
}

void SessionReactor::OnIdleTimeout(uint64_t activity) {
  std::shared_ptr<PinnedTransaction> expired;
  {
    absl::MutexLock lock(&mu_);
    // Anything that ran or queued since the timer was set keeps it alive;
    // a request popped later sees txn_ gone (Pump takes mu_).
    if (finished_ || running_ || !queue_.empty() || activity != activity_ ||
        txn_ == nullptr) {
      return;
    }
    const absl::Duration timeout = broker_->settings().IdleInTransactionTimeout(
        txn_->connection->spec().name);
    aborted_handle_ = txn_->connection->handle();
    aborted_ = absl::AbortedError(absl::StrCat(
        "the session's transaction on connection '",
        txn_->connection->spec().name, "' was idle for ",
        absl::FormatDuration(timeout),
        " (transactions.idle_timeout) and was rolled back; send ROLLBACK to "
        "go on"));
    expired = std::move(txn_);
    v1::SessionResponse notice;
    *notice.mutable_notice() = ToSessionError(aborted_);
    grpc::ByteBuffer buffer;
    if (Encode(notice, &buffer).ok()) SendLocked(std::move(buffer), nullptr);
  }
  spdlog::info(
      "a session's transaction on {} idled past its timeout: rolled "
      "back",
      expired->connection->handle());
  // Rolling back is database work: a worker's.
  workers_->Submit([counters = &broker_->counters(),
                    expired = std::move(expired)]() mutable {
    expired.reset();
    counters->transactions_open.fetch_sub(1, std::memory_order_relaxed);
    counters->idle_transactions_rolled_back.fetch_add(
        1, std::memory_order_relaxed);
  });
}

// ---------------------------------------------------------------------------
// Writing

void SessionReactor::Answer(v1::SessionResponse answer) {
  answer.set_id(current_->id());
  if (txn_changed_ && !answer.has_transaction()) SetTransactionState(&answer);
  grpc::ByteBuffer buffer;
  absl::Status encoded = Encode(answer, &buffer);
  if (!encoded.ok()) {
    v1::SessionResponse error;
    error.set_id(current_->id());
    *error.mutable_error() = ToSessionError(encoded);
    if (!Encode(error, &buffer).ok()) return;
  }
  Send(std::move(buffer), nullptr);
}

void SessionReactor::AnswerError(const absl::Status& status,
                                 v1::SessionResponse answer) {
  broker_->CountError();
  spdlog::debug("session request {} failed: {}", current_->id(),
                status.ToString());
  *answer.mutable_error() = ToSessionError(status);
  Answer(std::move(answer));
}

void SessionReactor::Send(grpc::ByteBuffer buffer, std::function<void()> then) {
  absl::MutexLock lock(&mu_);
  SendLocked(std::move(buffer), std::move(then));
}

void SessionReactor::SendLocked(grpc::ByteBuffer buffer,
                                std::function<void()> then) {
  if (finished_ || broken_) {
    // Nobody will read it; the chain still goes on (and sees broken_).
    if (then) workers_->Submit(std::move(then));
    return;
  }
  outbox_.push_back(Outgoing{std::move(buffer), std::move(then)});
  if (!writing_) {
    writing_ = true;
    StartWrite(&outbox_.front().buffer);
  }
}

void SessionReactor::OnWriteDone(bool ok) {
  std::function<void()> then;
  {
    absl::MutexLock lock(&mu_);
    then = std::move(outbox_.front().then);
    outbox_.pop_front();
    if (!ok) {
      broken_ = true;
      if (end_status_.ok()) {
        end_status_ = absl::CancelledError("the client stopped reading");
      }
      // What is still queued will not be read either; its continuations
      // run so that the request chain ends.
      while (!outbox_.empty()) {
        if (outbox_.front().then)
          workers_->Submit(std::move(outbox_.front().then));
        outbox_.pop_front();
      }
    }
    if (!outbox_.empty()) {
      StartWrite(&outbox_.front().buffer);
    } else {
      writing_ = false;
    }
  }
  if (then) then();
  MaybeFinish();
}

}  // namespace connbroker::server
