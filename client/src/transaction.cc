// Transaction and Session: the two ways a caller holds a Session stream of
// its own, instead of borrowing a pooled one for each call. Both take the
// stream from the Client's pool and give it back when done, if it is still
// healthy and carries nothing of theirs (no transaction, no answers unread).
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/src/client_core.h"
#include "client/src/session_stream.h"
#include "connbroker/client.h"

namespace connbroker {

namespace {

v1::BeginRequest::Isolation ToProto(Isolation isolation) {
  switch (isolation) {
    case Isolation::kDefault:
      return v1::BeginRequest::ISOLATION_DEFAULT;
    case Isolation::kReadUncommitted:
      return v1::BeginRequest::READ_UNCOMMITTED;
    case Isolation::kReadCommitted:
      return v1::BeginRequest::READ_COMMITTED;
    case Isolation::kRepeatableRead:
      return v1::BeginRequest::REPEATABLE_READ;
    case Isolation::kSerializable:
      return v1::BeginRequest::SERIALIZABLE;
  }
  return v1::BeginRequest::ISOLATION_DEFAULT;
}

}  // namespace

// ---------------------------------------------------------------------------
// Transaction

// The stream and the state of one transaction. `stream_` is null once the
// transaction ended (it went back to the pool) or broke.
class Transaction::Impl {
 public:
  Impl(std::shared_ptr<const ClientCore> core,
       std::unique_ptr<SessionStream> stream, std::string handle,
       std::optional<absl::Duration> deadline)
      : core_(std::move(core)),
        stream_(std::move(stream)),
        handle_(std::move(handle)),
        deadline_(deadline) {}

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ~Impl() {
    // A rollback that fails leaves the stream broken (then dropped: the
    // daemon rolls back as it ends) or still in the transaction (then
    // closed by the pool, with the same effect).
    if (stream_ != nullptr && !ended_ && !stream_->broken()) {
      (void)End(/*commit=*/false);
    }
    Done();
  }

  absl::Status Run(v1::SessionRequest& request,
                   std::optional<absl::Duration> deadline, Result* result,
                   const BatchCallback* on_batch, v1::SessionResponse* last) {
    if (absl::Status usable = Usable(/*ending=*/false); !usable.ok()) {
      return usable;
    }
    return Exchange(request, deadline, result, on_batch, last);
  }

  absl::Status End(bool commit) {
    if (absl::Status usable = Usable(/*ending=*/!commit); !usable.ok()) {
      return usable;
    }
    v1::SessionRequest request;
    if (commit) {
      request.mutable_commit();
    } else {
      request.mutable_rollback();
    }
    absl::Status status =
        Exchange(request, std::nullopt, nullptr, nullptr, nullptr);
    if (status.ok() && stream_ != nullptr) {
      // Ended, whether or not the daemon said so (it does not after it
      // rolled back on its own).
      stream_->ForgetTransaction();
      aborted_ = absl::OkStatus();
      Done();
    }
    return status;
  }

  bool active() const { return stream_ != nullptr && !ended_; }
  const std::string& handle() const { return handle_; }

 private:
  // Why the transaction takes no more statements, if it does not. A
  // rollback (`ending`) is still taken after the daemon's notice: it is
  // what clears it.
  absl::Status Usable(bool ending) {
    if (ended_) {
      return absl::FailedPreconditionError(
          "the transaction has ended (committed or rolled back)");
    }
    if (stream_ == nullptr) {
      return absl::FailedPreconditionError(
          "the transaction's stream broke, and its work was rolled back");
    }
    if (std::optional<v1::SessionError> notice = stream_->TakeNotice()) {
      aborted_ = absl::AbortedError(notice->message());
    }
    if (!aborted_.ok() && !ending) return aborted_;
    return absl::OkStatus();
  }

  absl::Status Exchange(v1::SessionRequest& request,
                        std::optional<absl::Duration> deadline, Result* result,
                        const BatchCallback* on_batch,
                        v1::SessionResponse* last) {
    const absl::Time when =
        core_->Deadline(deadline.has_value() ? deadline : deadline_);
    auto exchange = [&](v1::SessionRequest& r, QueryAssembler* query) {
      return connbroker::Exchange(*stream_, r, when, query);
    };
    // No handle recovery: a new handle would be outside the transaction.
    bool unknown_handle = false;
    absl::Status status = CallOnHandle(exchange, request, handle_, result,
                                       on_batch, last, &unknown_handle);
    if (std::optional<v1::SessionError> notice = stream_->TakeNotice()) {
      aborted_ = absl::AbortedError(notice->message());
    }
    if (stream_->broken()) {
      stream_.reset();  // the daemon rolls back as the stream ends
    } else if (!stream_->transaction_open() && aborted_.ok()) {
      Done();  // COMMIT or ROLLBACK sent as SQL ended it
    }
    return status;
  }

  // The transaction is over: its stream goes back to the pool.
  void Done() {
    ended_ = true;
    if (stream_ != nullptr) core_->pool().Release(std::move(stream_));
  }

  const std::shared_ptr<const ClientCore> core_;
  std::unique_ptr<SessionStream> stream_;
  const std::string handle_;
  const std::optional<absl::Duration> deadline_;
  bool ended_ = false;
  // ABORTED with the daemon's reason once it rolled the transaction back on
  // its own; OK otherwise.
  absl::Status aborted_;
};

Transaction::Transaction(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transaction::Transaction(Transaction&& other) noexcept = default;
Transaction& Transaction::operator=(Transaction&& other) noexcept = default;
Transaction::~Transaction() = default;

namespace {

absl::Status MovedFrom() {
  return absl::FailedPreconditionError("the Transaction was moved from");
}

}  // namespace

absl::StatusOr<Result> Transaction::Query(std::string sql,
                                          const QueryOptions& options) {
  if (impl_ == nullptr) return MovedFrom();
  v1::SessionRequest request;
  FillQueryRequest(std::move(sql), options, *request.mutable_query());
  Result result;
  absl::Status status =
      impl_->Run(request, options.deadline, &result, nullptr, nullptr);
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<QuerySummary> Transaction::QueryBatches(
    std::string sql, const QueryOptions& options,
    const BatchCallback& on_batch) {
  if (impl_ == nullptr) return MovedFrom();
  v1::SessionRequest request;
  FillQueryRequest(std::move(sql), options, *request.mutable_query());
  Result result;
  absl::Status status =
      impl_->Run(request, options.deadline, &result, &on_batch, nullptr);
  if (!status.ok()) return status;
  return result.summary();
}

absl::StatusOr<ExecuteResult> Transaction::Execute(
    std::string sql, const std::vector<Value>& params,
    const std::map<std::string, Value>& named_params) {
  if (impl_ == nullptr) return MovedFrom();
  v1::SessionRequest request;
  FillExecuteRequest(std::move(sql), params, named_params,
                     *request.mutable_execute());
  v1::SessionResponse last;
  absl::Status status =
      impl_->Run(request, std::nullopt, nullptr, nullptr, &last);
  if (!status.ok()) return status;
  return ToExecuteResult(last.executed());
}

absl::Status Transaction::Commit() {
  return impl_ == nullptr ? MovedFrom() : impl_->End(/*commit=*/true);
}

absl::Status Transaction::Rollback() {
  return impl_ == nullptr ? MovedFrom() : impl_->End(/*commit=*/false);
}

bool Transaction::active() const { return impl_ != nullptr && impl_->active(); }

std::string Transaction::handle() const {
  return impl_ == nullptr ? std::string() : impl_->handle();
}

absl::StatusOr<Transaction> Connection::Begin(
    const TransactionOptions& options) const {
  const ClientCore& core = state_->core();
  const absl::Time deadline = core.Deadline(options.deadline);
  v1::SessionRequest request;
  v1::BeginRequest& begin = *request.mutable_begin();
  begin.set_isolation(ToProto(options.isolation));
  begin.set_read_only(options.read_only);
  begin.set_deferrable(options.deferrable);

  std::unique_ptr<SessionStream> stream;
  std::string handle;
  auto exchange = [&](v1::SessionRequest& r, QueryAssembler* query) {
    // A second attempt (on a new handle) starts from a pooled stream again.
    if (stream != nullptr) core.pool().Release(std::move(stream));
    return ExchangeOnPool(core, r, deadline, query, &stream);
  };
  absl::Status status = state_->RunWithRecovery(
      deadline, [&](const std::string& used, bool* unknown_handle) {
        handle = used;
        return CallOnHandle(exchange, request, used, nullptr, nullptr, nullptr,
                            unknown_handle);
      });
  if (status.ok() && !stream->transaction_open()) {
    status = absl::InternalError(
        "the daemon answered begin but opened no "
        "transaction");
  }
  if (!status.ok()) {
    if (stream != nullptr) core.pool().Release(std::move(stream));
    return status;
  }
  if (!stream->transaction_handle().empty()) {
    handle = stream->transaction_handle();
  }
  return Transaction(std::make_unique<Transaction::Impl>(
      state_->shared_core(), std::move(stream), std::move(handle),
      options.deadline));
}

// ---------------------------------------------------------------------------
// Session

// The stream of one Session, and how many requests sent with Send still
// wait for (the end of) their answer.
class Session::Impl {
 public:
  Impl(std::shared_ptr<const ClientCore> core,
       std::unique_ptr<SessionStream> stream)
      : core_(std::move(core)), stream_(std::move(stream)) {}

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  ~Impl() {
    // Unread answers would reach the pool's next user: close it instead.
    if (outstanding_ == 0) core_->pool().Release(std::move(stream_));
  }

  absl::StatusOr<uint64_t> Send(v1::SessionRequest& request) {
    if (request.timeout_millis() == 0) {
      request.set_timeout_millis(static_cast<uint32_t>(std::min<int64_t>(
          absl::ToInt64Milliseconds(core_->default_deadline()), UINT32_MAX)));
    }
    if (!stream_->Send(request)) return stream_->Break();
    // A cancel gets no answer of its own.
    if (!request.has_cancel()) ++outstanding_;
    return request.id();
  }

  absl::StatusOr<v1::SessionResponse> Receive(
      std::optional<absl::Duration> timeout) {
    v1::SessionResponse response;
    absl::Status status = stream_->Receive(
        response, absl::Now() + timeout.value_or(core_->default_deadline()));
    if (!status.ok()) return status;
    if (response.id() != 0 && EndsAnswer(response) && outstanding_ > 0) {
      --outstanding_;
    }
    return response;
  }

  // One blocking request on `connection`, with its handle recovery while no
  // transaction is open (a new handle would be outside it).
  absl::Status Call(const ConnectionState& connection,
                    v1::SessionRequest& request,
                    std::optional<absl::Duration> deadline, Result* result,
                    const BatchCallback* on_batch, v1::SessionResponse* last) {
    if (outstanding_ > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          outstanding_, " answers to Send are still to be received"));
    }
    const absl::Time when = core_->Deadline(deadline);
    auto exchange = [&](v1::SessionRequest& r, QueryAssembler* query) {
      return Exchange(*stream_, r, when, query);
    };
    auto attempt = [&](const std::string& handle, bool* unknown_handle) {
      return CallOnHandle(exchange, request, handle, result, on_batch, last,
                          unknown_handle);
    };
    if (stream_->transaction_open()) {
      bool ignored = false;
      return attempt(connection.handle(), &ignored);
    }
    return connection.RunWithRecovery(when, attempt);
  }

  SessionStream& stream() { return *stream_; }

 private:
  const std::shared_ptr<const ClientCore> core_;
  std::unique_ptr<SessionStream> stream_;
  int64_t outstanding_ = 0;
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::Session(Session&& other) noexcept = default;
Session& Session::operator=(Session&& other) noexcept = default;
Session::~Session() = default;

Session Client::OpenSession() const {
  return Session(
      std::make_unique<Session::Impl>(core_, core_->pool().Acquire()));
}

namespace {

absl::Status SessionMovedFrom() {
  return absl::FailedPreconditionError("the Session was moved from");
}

}  // namespace

absl::StatusOr<uint64_t> Session::Send(v1::SessionRequest request) {
  if (impl_ == nullptr) return SessionMovedFrom();
  return impl_->Send(request);
}

absl::StatusOr<v1::SessionResponse> Session::Receive(
    std::optional<absl::Duration> timeout) {
  if (impl_ == nullptr) return SessionMovedFrom();
  return impl_->Receive(timeout);
}

absl::StatusOr<Result> Session::Query(const Connection& connection,
                                      std::string sql,
                                      const QueryOptions& options) {
  if (impl_ == nullptr) return SessionMovedFrom();
  v1::SessionRequest request;
  FillQueryRequest(std::move(sql), options, *request.mutable_query());
  Result result;
  absl::Status status = impl_->Call(
      *connection.state_, request, options.deadline, &result, nullptr, nullptr);
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<QuerySummary> Session::QueryBatches(
    const Connection& connection, std::string sql, const QueryOptions& options,
    const BatchCallback& on_batch) {
  if (impl_ == nullptr) return SessionMovedFrom();
  v1::SessionRequest request;
  FillQueryRequest(std::move(sql), options, *request.mutable_query());
  Result result;
  absl::Status status =
      impl_->Call(*connection.state_, request, options.deadline, &result,
                  &on_batch, nullptr);
  if (!status.ok()) return status;
  return result.summary();
}

absl::StatusOr<ExecuteResult> Session::Execute(
    const Connection& connection, std::string sql,
    const std::vector<Value>& params,
    const std::map<std::string, Value>& named_params) {
  if (impl_ == nullptr) return SessionMovedFrom();
  v1::SessionRequest request;
  FillExecuteRequest(std::move(sql), params, named_params,
                     *request.mutable_execute());
  v1::SessionResponse last;
  absl::Status status = impl_->Call(*connection.state_, request, std::nullopt,
                                    nullptr, nullptr, &last);
  if (!status.ok()) return status;
  return ToExecuteResult(last.executed());
}

bool Session::transaction_open() const {
  return impl_ != nullptr && impl_->stream().transaction_open();
}

absl::Status Session::TakeNotice() {
  if (impl_ == nullptr) return absl::OkStatus();
  std::optional<v1::SessionError> notice = impl_->stream().TakeNotice();
  if (!notice.has_value()) return absl::OkStatus();
  return absl::AbortedError(notice->message());
}

bool Session::broken() const {
  return impl_ == nullptr || impl_->stream().broken();
}

}  // namespace connbroker
