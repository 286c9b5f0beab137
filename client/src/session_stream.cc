// The client side of the Session stream: the deadline guard, one stream,
// the exchange of one request for its answer, and the pool of kept streams.
//
// Choices the header leaves open, made here:
// - Streams are gRPC's synchronous ones, read on the caller's own thread: a
//   call's answer needs no hand-off from a completion thread, which is most
//   of what a small query costs. The price is that a blocked Read can only
//   be stopped by cancelling the stream, hence DeadlineGuard.
// - The daemon enforces each request's timeout_millis and answers
//   DEADLINE_EXCEEDED itself; the guard fires only kGrace later, for a
//   daemon that hangs, and then the stream is lost.
#include "client/src/session_stream.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/unknown_field_set.h"

namespace connbroker {

namespace {

// How long past a request's deadline the client waits for the daemon's own
// DEADLINE_EXCEEDED before giving the stream up: long enough for the
// daemon to interrupt the database and say so on a loaded machine.
constexpr absl::Duration kGrace = absl::Seconds(2);
// How long closing a healthy stream waits for the daemon to end the call.
constexpr absl::Duration kCloseWait = absl::Seconds(1);

uint32_t TimeoutMillis(absl::Duration left) {
  const double ms = std::ceil(absl::ToDoubleMilliseconds(left));
  if (ms >= static_cast<double>(std::numeric_limits<uint32_t>::max())) {
    return std::numeric_limits<uint32_t>::max();
  }
  return static_cast<uint32_t>(std::max(1.0, ms));
}

}  // namespace

// ---------------------------------------------------------------------------
// DeadlineGuard

DeadlineGuard::~DeadlineGuard() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

void DeadlineGuard::Arm(Watch* watch) {
  absl::MutexLock lock(&mu_);
  armed_.push_back(watch);
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  if (watch->when < wake_at_) rearm_ = true;
}

bool DeadlineGuard::Disarm(Watch* watch) {
  absl::MutexLock lock(&mu_);
  auto it = std::find(armed_.begin(), armed_.end(), watch);
  if (it != armed_.end()) {
    *it = armed_.back();
    armed_.pop_back();
  }
  return watch->fired;
}

void DeadlineGuard::Run() {
  absl::MutexLock lock(&mu_);
  auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || rearm_;
  };
  while (!stop_) {
    const absl::Time now = absl::Now();
    absl::Time next = absl::InfiniteFuture();
    for (Watch* watch : armed_) {
      if (watch->fired) continue;
      if (watch->when <= now) {
        // Never blocks; the waiting Read returns false soon after.
        watch->context->TryCancel();
        watch->fired = true;
      } else {
        next = std::min(next, watch->when);
      }
    }
    wake_at_ = next;
    rearm_ = false;
    mu_.AwaitWithDeadline(absl::Condition(&woken), next);
  }
}

// ---------------------------------------------------------------------------
// SessionStream

SessionStream::SessionStream(const ClientCore& core) : core_(core) {
  core.Prepare(context_, std::nullopt);
  // The headers go out with the first request: no round trip to start.
  context_.set_initial_metadata_corked(true);
  stream_ = core.stub().Session(&context_);
}

SessionStream::~SessionStream() {
  if (finished_) return;
  if (broken_ || next_id_ == 1) {
    // Broken, or never used (nothing reached the daemon): cancel.
    (void)Finish(/*cancel=*/true);
    return;
  }
  // Half-close, and let the daemon end the call as it does when a client is
  // done (a cancel would look like a client gone wrong in its log).
  DeadlineGuard::Watch watch{&context_, absl::Now() + kCloseWait};
  core_.guard().Arm(&watch);
  stream_->WritesDone();
  v1::SessionResponse ignored;
  while (stream_->Read(&ignored)) {
  }
  stream_->Finish();
  core_.guard().Disarm(&watch);
  finished_ = true;
}

absl::Status SessionStream::Finish(bool cancel) {
  if (finished_) return final_status_;
  finished_ = true;
  broken_ = true;
  if (cancel) context_.TryCancel();
  v1::SessionResponse ignored;
  while (stream_->Read(&ignored)) {
  }
  grpc::Status status = stream_->Finish();
  final_status_ =
      status.ok()
          ? absl::UnavailableError("the daemon ended the session stream")
          : core_.MapError(status, context_);
  return final_status_;
}

absl::Status SessionStream::Break() { return Finish(/*cancel=*/true); }

bool SessionStream::Send(v1::SessionRequest& request) {
  if (broken_) return false;
  request.set_id(next_id_++);
  if (stream_->Write(request)) return true;
  broken_ = true;
  return false;
}

absl::Status SessionStream::Receive(v1::SessionResponse& response,
                                    absl::Time give_up) {
  if (broken_) return Finish(/*cancel=*/true);
  bool read;
  bool fired = false;
  if (give_up == absl::InfiniteFuture()) {
    read = stream_->Read(&response);
  } else {
    DeadlineGuard::Watch watch{&context_, give_up};
    core_.guard().Arm(&watch);
    read = stream_->Read(&response);
    fired = core_.guard().Disarm(&watch);
  }
  if (!read) {
    absl::Status status = Finish(/*cancel=*/fired);
    if (fired) {
      return absl::DeadlineExceededError(
          "no answer from the daemon by the deadline (and a grace period); "
          "the session stream was dropped");
    }
    return status;
  }
  if (response.has_transaction()) {
    transaction_open_ = response.transaction().open();
    transaction_handle_ = response.transaction().handle();
  }
  if (response.id() != 0 && EndsAnswer(response)) ++answers_;
  return absl::OkStatus();
}

std::optional<v1::SessionError> SessionStream::TakeNotice() {
  std::optional<v1::SessionError> notice = std::move(notice_);
  notice_.reset();
  return notice;
}

// ---------------------------------------------------------------------------
// Exchange

bool EndsAnswer(const v1::SessionResponse& response) {
  if (response.has_summary() || response.has_error() || response.has_opened() ||
      response.has_connected() || response.has_executed() ||
      response.has_transaction() || response.has_reset() ||
      response.has_notice()) {
    return true;
  }
  // A newer daemon's kind of answer: the numbering rule still tells.
  const google::protobuf::UnknownFieldSet& unknown =
      response.GetReflection()->GetUnknownFields(response);
  for (int i = 0; i < unknown.field_count(); ++i) {
    if (unknown.field(i).number() >= 16) return true;
  }
  return false;
}

Exchanged Exchange(SessionStream& stream, v1::SessionRequest& request,
                   absl::Time deadline, QueryAssembler* query) {
  Exchanged out;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) {
    out.status = absl::DeadlineExceededError(
        "the deadline passed before the request was sent");
    return out;
  }
  request.set_timeout_millis(TimeoutMillis(left));
  if (!stream.Send(request)) {
    out.dead_stream = true;
    out.stream_failed = true;
    out.status = stream.Break();
    return out;
  }
  const absl::Time give_up = deadline + kGrace;
  absl::Status refused;  // the query's own error (its callback's, say)
  // Read into the stream's own message: parsing reuses the sub-messages a
  // previous answer allocated (schema, batch, summary).
  v1::SessionResponse& response = stream.buffer();
  for (;;) {
    absl::Status read = stream.Receive(response, give_up);
    if (!read.ok()) {
      out.stream_failed = true;
      out.status = refused.ok() ? read : refused;
      return out;
    }
    if (response.id() == 0 && response.has_notice()) {
      stream.KeepNotice(response.notice());
      continue;
    }
    if (response.id() != request.id()) {
      (void)stream.Break();
      out.stream_failed = true;
      out.status = absl::InternalError(
          absl::StrCat("the daemon answered request ", response.id(),
                       " while request ", request.id(), " was due"));
      return out;
    }
    const bool last = EndsAnswer(response);
    if (query != nullptr && refused.ok()) {
      if (response.has_schema()) refused = query->Schema(response.schema());
      if (refused.ok() && response.has_batch()) {
        refused = query->Batch(response.batch());
      }
      if (refused.ok() && response.has_summary()) {
        query->Summary(response.summary());
      }
      if (!refused.ok() && !last) {
        // Stop the daemon's work, then read what it sent meanwhile up to the
        // end of the answer, which keeps the stream in step.
        v1::SessionRequest cancel;
        cancel.mutable_cancel()->set_id(request.id());
        if (!stream.Send(cancel)) {
          (void)stream.Break();
          out.stream_failed = true;
          out.status = refused;
          return out;
        }
      }
    }
    if (last) break;
  }
  if (!refused.ok()) {
    out.status = refused;
  } else if (response.has_error()) {
    out.status = FromSessionError(response.error());
  } else if (query == nullptr) {
    out.last.Swap(&response);
  }
  return out;
}

void SetTarget(v1::SessionRequest& request, const std::string& handle) {
  switch (request.request_case()) {
    case v1::SessionRequest::kQuery:
      request.mutable_query()->mutable_target()->set_handle(handle);
      break;
    case v1::SessionRequest::kExecute:
      request.mutable_execute()->mutable_target()->set_handle(handle);
      break;
    case v1::SessionRequest::kReset:
      request.mutable_reset()->mutable_target()->set_handle(handle);
      break;
    case v1::SessionRequest::kBegin:
      request.mutable_begin()->mutable_target()->set_handle(handle);
      break;
    case v1::SessionRequest::kCommit:
      request.mutable_commit()->set_handle(handle);
      break;
    case v1::SessionRequest::kRollback:
      request.mutable_rollback()->set_handle(handle);
      break;
    default:
      break;  // no target
  }
}

absl::Status CallOnHandle(ExchangeFn exchange, v1::SessionRequest& request,
                          const std::string& handle, Result* result,
                          const BatchCallback* on_batch,
                          v1::SessionResponse* last, bool* unknown_handle) {
  SetTarget(request, handle);
  std::optional<QueryAssembler> query;
  if (result != nullptr) query.emplace(*result, on_batch);
  Exchanged out = exchange(request, query.has_value() ? &*query : nullptr);
  if (!out.status.ok()) {
    *unknown_handle =
        !(query.has_value() && query->started()) && IsUnknownHandle(out.status);
    return out.status;
  }
  if (last != nullptr) *last = std::move(out.last);
  return query.has_value() ? query->Finish(handle) : absl::OkStatus();
}

// ---------------------------------------------------------------------------
// SessionPool

SessionPool::~SessionPool() {
  std::vector<std::unique_ptr<SessionStream>> idle;
  {
    absl::MutexLock lock(&mu_);
    idle.swap(idle_);
  }
}

std::unique_ptr<SessionStream> SessionPool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    if (!idle_.empty()) {
      std::unique_ptr<SessionStream> stream = std::move(idle_.back());
      idle_.pop_back();
      return stream;
    }
  }
  return std::make_unique<SessionStream>(core_);
}

void SessionPool::Release(std::unique_ptr<SessionStream> stream) {
  if (!stream->broken() && !stream->transaction_open()) {
    absl::MutexLock lock(&mu_);
    if (idle_.size() < max_idle_) {
      idle_.push_back(std::move(stream));
      return;
    }
  }
  // Closed here, outside the lock: closing waits for the daemon.
}

Exchanged ExchangeOnPool(const ClientCore& core, v1::SessionRequest& request,
                         absl::Time deadline, QueryAssembler* query,
                         std::unique_ptr<SessionStream>* keep) {
  SessionPool& pool = core.pool();
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<SessionStream> stream = pool.Acquire();
    const bool kept = stream->kept();
    Exchanged out = Exchange(*stream, request, deadline, query);
    // A kept stream may have died while idle (the daemon restarted): the
    // request never left, so sending it on a fresh stream is safe.
    if (out.dead_stream && kept && attempt == 0) continue;
    if (keep != nullptr) {
      *keep = std::move(stream);
    } else {
      pool.Release(std::move(stream));
    }
    return out;
  }
}

}  // namespace connbroker
