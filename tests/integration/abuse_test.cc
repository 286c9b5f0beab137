// A bounded abuse run (issue 11): for ABUSE_SECONDS (default 10) one real
// connbrokerd with small [limits] takes, all at once, a kwargs flood, 500
// slowly read Query streams of a 100k-row table, megabyte names, random
// bytes on every method and a flood of sessions -- while a well-behaved
// client process runs `SELECT 1` against another connection. That client
// must see every call succeed; the daemon must stay within its memory and
// file budgets, keep its connection bound, answer the abusers with a status
// that names the problem (never UNKNOWN or INTERNAL), and still shut down
// cleanly. Its own binary, which ctest runs alone (RUN_SERIAL): it loads the
// machine on purpose.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "SQLiteCpp/SQLiteCpp.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/alarm.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "integration/proto/standard_services.grpc.pb.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;

// The bounds under test; BrokerToml() states the same numbers.
constexpr int kMaxConnections = 16;
constexpr int kMaxOpenFiles = 512;
constexpr int kMaxCallsPerConnection = 64;
constexpr int64_t kMaxInflightResultBytes = int64_t{32} << 20;
constexpr int64_t kResultCacheBytes = int64_t{16} << 20;

// broker.toml with small bounds. `max_backends` is the parameter of the
// test: at 32, backends run out first (every pool opens its SQLite writer at
// Connect), so most abusers are refused by that bound; at 128, the 16
// connections run out first, so idle ones are evicted for room all the time
// and all 500 streams are admitted (8 connections x 64 calls).
std::string BrokerToml(int max_backends) {
  return absl::StrCat(R"([limits]
max_connections = 16
max_backends = )",
                      max_backends, R"(
max_open_files = 512
reserved_files = 64
max_calls_per_connection = 64
max_inflight_result_bytes = 33554432
max_transport_bytes = 67108864

[result_cache]
max_bytes = 16777216
max_entry_bytes = 16777216
)");
}

// The daemon's memory bound, from what the configuration allows it to hold:
// result memory (max_inflight_result_bytes, 32 MiB: collected, cached and
// still read), gRPC's buffers (max_transport_bytes, 64 MiB), one SQLite page
// cache per open backend (SQLite's default cache_size is 2 MiB), and 64 MiB
// for the rest (code, some 35 threads' stacks, the registry, one batch per
// admitted stream). Before results carried their share of the budget until
// their last reader let go, 500 slow readers of evicted ~7.5 MiB results
// took RSS to 680 MiB.
int64_t RssBoundBytes(int max_backends) {
  return (int64_t{32} << 20) + (int64_t{64} << 20) +
         max_backends * (int64_t{2} << 20) + (int64_t{64} << 20);
}

constexpr int kBigRows = 100000;
constexpr int kStreams = 500;
constexpr int kReaderThreads = 4;
// Slow readers: a pause after every batch of kChunkRows rows, so a stream
// of the whole table would take ~20 s, longer than the run.
constexpr int kChunkRows = 256;
constexpr absl::Duration kPausePerBatch = absl::Milliseconds(50);
// A stream the daemon refused is opened again after this pause: the 500
// streams stay open or trying, without a busy loop on two cores.
constexpr absl::Duration kReopenAfter = absl::Milliseconds(250);

constexpr const char* kMethods[] = {"Connect", "Query",           "Execute",
                                    "Reset",   "ListConnections", "GetStats"};

absl::Duration AbuseDuration() {
  int seconds = 10;
  const char* text = std::getenv("ABUSE_SECONDS");
  if (text != nullptr && !absl::SimpleAtoi(text, &seconds)) seconds = 10;
  return absl::Seconds(std::max(seconds, 1));
}

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// Status codes per kind of abuse, and the first message seen for each.
class Tally {
 public:
  void Record(const std::string& kind, int code, const std::string& message) {
    absl::MutexLock lock(&mu_);
    ++counts_[kind][code];
    std::string& sample = samples_[{kind, code}];
    if (sample.empty()) sample = message.substr(0, 200);
    // A refusal must tell the client which bound it hit: a [limits]
    // setting, or the pool and its size.
    if (code == static_cast<int>(absl::StatusCode::kResourceExhausted) &&
        !absl::StrContains(message, "limits.") &&
        !absl::StrContains(message, "pool_size")) {
      unnamed_.push_back(absl::StrCat(kind, ": ", message.substr(0, 200)));
    }
  }
  void Record(const std::string& kind, const absl::Status& status) {
    Record(kind, static_cast<int>(status.code()),
           std::string(status.message()));
  }
  void Record(const std::string& kind, const grpc::Status& status) {
    Record(kind, static_cast<int>(status.error_code()), status.error_message());
  }

  std::map<std::string, std::map<int, int64_t>> counts() const {
    absl::MutexLock lock(&mu_);
    return counts_;
  }
  // RESOURCE_EXHAUSTED messages that name no bound.
  std::vector<std::string> unnamed() const {
    absl::MutexLock lock(&mu_);
    return unnamed_;
  }
  std::string sample(const std::string& kind, int code) const {
    absl::MutexLock lock(&mu_);
    auto it = samples_.find({kind, code});
    return it == samples_.end() ? "" : it->second;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::map<int, int64_t>> counts_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, int>, std::string> samples_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unnamed_ ABSL_GUARDED_BY(mu_);
};

// A channel on a TCP/Unix connection of its own: gRPC shares one
// connection among channels with equal arguments unless told not to, and
// each abuser should load the daemon as a separate client would.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

std::chrono::system_clock::time_point In(absl::Duration d) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(d);
}

// Sends `bytes` as the one request message of `method` and reads whatever
// comes back, as a streaming call, so that it works for the server-streaming
// Query as well as the unary methods.
grpc::Status CallRaw(grpc::GenericStub& stub, const std::string& method,
                     const std::string& bytes) {
  grpc::ClientContext context;
  context.set_deadline(In(absl::Seconds(30)));
  grpc::CompletionQueue cq;
  void* tag = nullptr;
  bool ok = false;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(
      &context, absl::StrCat("/connbroker.v1.ConnectionBroker/", method), &cq);
  call->StartCall(&tag);
  cq.Next(&tag, &ok);
  if (ok) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    call->Write(request, &tag);
    cq.Next(&tag, &ok);
    if (ok) {
      call->WritesDone(&tag);
      cq.Next(&tag, &ok);
    }
    grpc::ByteBuffer response;
    do {
      call->Read(&response, &tag);
      cq.Next(&tag, &ok);
    } while (ok);
  }
  grpc::Status status;
  call->Finish(&status, &tag);
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Query streams of the big table, each read slowly, driven by one thread
// through a completion queue. A stream that ends before the run does is
// opened again after kReopenAfter, so all of them stay open or trying.
class SlowReaders {
 public:
  struct Counters {
    int64_t opened = 0;
    int64_t batches = 0;
    int64_t streams_with_rows = 0;
    int64_t completed = 0;  // read to the end
    int64_t cancelled_at_end = 0;
  };

  SlowReaders(std::shared_ptr<grpc::Channel> channel, int first_slot, int slots)
      : stub_(v1::ConnectionBroker::NewStub(std::move(channel))) {
    for (int i = 0; i < slots; ++i) {
      slots_.push_back(std::make_unique<Slot>());
      slots_.back()->index = first_slot + i;
    }
  }

  // Runs until `stop` is set, then cancels every stream and returns once
  // each has finished.
  Counters Run(const std::atomic<bool>& stop, Tally& tally) {
    for (auto& slot : slots_) Open(*slot);
    size_t active = slots_.size();
    bool stopping = false;
    while (active > 0) {
      void* tag = nullptr;
      bool ok = false;
      grpc::CompletionQueue::NextStatus next =
          cq_.AsyncNext(&tag, &ok, In(absl::Milliseconds(100)));
      if (!stopping && stop.load()) {
        stopping = true;
        for (auto& slot : slots_) {
          if (slot->context != nullptr) slot->context->TryCancel();
          if (slot->alarm_pending) slot->alarm->Cancel();
        }
      }
      if (next != grpc::CompletionQueue::GOT_EVENT) continue;
      Slot& slot = *static_cast<Slot*>(tag);
      switch (slot.state) {
        case State::kStarting:
          if (ok && !stopping) {
            slot.state = State::kReading;
            slot.reader->Read(&slot.response, &slot);
          } else {
            Finish(slot);
          }
          break;
        case State::kReading:
          if (!ok || stopping) {
            Finish(slot);
          } else if (slot.response.has_batch()) {
            ++counters_.batches;
            if (!slot.got_rows) ++counters_.streams_with_rows;
            slot.got_rows = true;
            slot.state = State::kPausing;
            SetAlarm(slot, kPausePerBatch);
          } else {
            slot.reader->Read(&slot.response, &slot);  // schema or summary
          }
          break;
        case State::kPausing:
          slot.alarm_pending = false;
          if (stopping) {
            Finish(slot);
          } else {
            slot.state = State::kReading;
            slot.reader->Read(&slot.response, &slot);
          }
          break;
        case State::kFinishing:
          if (stopping && slot.status.error_code() == grpc::CANCELLED) {
            ++counters_.cancelled_at_end;  // our own cancel, not the daemon's
          } else {
            tally.Record("query_streams", slot.status);
            if (slot.status.ok()) ++counters_.completed;
          }
          slot.reader.reset();
          slot.context.reset();
          if (stopping) {
            --active;
          } else {
            slot.state = State::kBackoff;
            SetAlarm(slot, kReopenAfter);
          }
          break;
        case State::kBackoff:
          slot.alarm_pending = false;
          if (stopping) {
            --active;
          } else {
            Open(slot);
          }
          break;
      }
    }
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
    return counters_;
  }

 private:
  enum class State { kStarting, kReading, kPausing, kFinishing, kBackoff };
  struct Slot {
    int index = 0;
    State state = State::kStarting;
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientAsyncReader<v1::QueryResponse>> reader;
    v1::QueryResponse response;
    grpc::Status status;
    // A fresh alarm per wait: simpler than reasoning about re-arming one.
    std::unique_ptr<grpc::Alarm> alarm;
    bool alarm_pending = false;
    bool got_rows = false;
  };

  void Open(Slot& slot) {
    ++counters_.opened;
    slot.got_rows = false;
    slot.context = std::make_unique<grpc::ClientContext>();
    // Long enough never to end a stream during the run: the test cancels.
    slot.context->set_deadline(In(absl::Minutes(5)));
    v1::QueryRequest request;
    // Half the streams on the one plain `app` connection, so that
    // limits.max_calls_per_connection has to hold them back; the other half
    // spread over 8 connections of `app` (distinct pool sizes, the same
    // values as the kwargs flood), where all of them fit the bound, so the
    // daemon really holds hundreds of slow streams at once.
    v1::ConnectRequest* connect = request.mutable_target()->mutable_connect();
    connect->set_name("app");
    if (slot.index % 2 == 1) {
      (*connect->mutable_kwargs())["create_engine_kwargs.pool_size"]
          .set_int64_value(slot.index / 2 % 8 + 1);
    }
    // Seven distinct results, so single-flight joins and the result cache
    // see several keys; two streams in three ask for caching.
    request.set_sql(absl::StrCat("SELECT id, v FROM big WHERE id > ",
                                 (slot.index % 7) * 1000));
    if (slot.index % 3 != 0) request.set_ttl_seconds(60);
    request.set_chunk_rows(kChunkRows);
    slot.reader = stub_->PrepareAsyncQuery(slot.context.get(), request, &cq_);
    slot.state = State::kStarting;
    slot.reader->StartCall(&slot);
  }

  void Finish(Slot& slot) {
    slot.state = State::kFinishing;
    slot.reader->Finish(&slot.status, &slot);
  }

  void SetAlarm(Slot& slot, absl::Duration after) {
    slot.alarm = std::make_unique<grpc::Alarm>();
    slot.alarm_pending = true;
    slot.alarm->Set(&cq_, In(after), &slot);
  }

  std::unique_ptr<v1::ConnectionBroker::Stub> stub_;
  grpc::CompletionQueue cq_;
  std::vector<std::unique_ptr<Slot>> slots_;
  Counters counters_;
};

// VmRSS of `pid` in bytes, or -1 when it cannot be read (no such process).
int64_t RssBytes(pid_t pid) {
  std::istringstream status(ReadFile(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      std::istringstream(line.substr(6)) >> kib;
      return kib * 1024;
    }
  }
  return -1;
}

// Open file descriptors of `pid`, or -1 when they cannot be listed.
int64_t OpenFiles(pid_t pid) {
  std::error_code error;
  std::filesystem::directory_iterator it(absl::StrCat("/proc/", pid, "/fd"),
                                         error);
  if (error) return -1;
  int64_t count = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
    if (error) return -1;
    ++count;
  }
  return count;
}

int64_t Total(const std::map<int, int64_t>& codes) {
  int64_t total = 0;
  for (const auto& [code, count] : codes) total += count;
  return total;
}

std::string RandomHex(std::mt19937_64& random) {
  return absl::StrCat(absl::Hex(random(), absl::kZeroPad16),
                      absl::Hex(random(), absl::kZeroPad16));
}

class AbuseTest : public ::testing::TestWithParam<int> {};

TEST_P(AbuseTest, ABoundedAbuseRunLeavesAWellBehavedClientUnharmed) {
  TempDir data;
  {
    // ~7.5 MB of rows: a whole-table result is far bigger than a batch and
    // than the result cache's share per entry.
    SQLite::Database app(data.Path("app.db"),
                         SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    app.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)");
    SQLite::Transaction transaction(app);
    app.exec(absl::StrCat(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
        "WHERE i < ",
        kBigRows, ") INSERT INTO big SELECT i, printf('%064d', i) FROM n"));
    transaction.commit();
    for (const char* file : {"victim.db", "sess.db"}) {
      SQLite::Database db(data.Path(file),
                          SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      db.exec("CREATE TABLE t (x INTEGER)");
    }
  }
  const std::string secrets = data.Write(
      "secrets.toml",
      absl::StrCat("[connections.app]\ntype = \"sql\"\nurl = \"sqlite:///",
                   data.Path("app.db"),
                   "\"\n\n[connections.victim]\ntype = \"sql\"\nurl = "
                   "\"sqlite:///",
                   data.Path("victim.db"),
                   "\"\n\n[connections.sess]\ntype = \"sql\"\nurl = "
                   "\"sqlite:///",
                   data.Path("sess.db"), "\"\nscope = \"session\"\n"));
  std::unique_ptr<Daemon> daemon = Daemon::Start(
      {.secrets_files = {secrets},
       .extra_args = {"--config",
                      data.Write("broker.toml", BrokerToml(GetParam()))}});
  ASSERT_NE(daemon, nullptr);
  const pid_t pid = daemon->pid();

  // The well-behaved client, a process of its own, in place before the
  // abuse starts.
  const std::string ready_file = data.Path("victim-ready");
  const std::string stop_file = data.Path("victim-stop");
  ChildProcess victim(
      {SELECT_LOOP_PATH, daemon->target(), "victim", ready_file, stop_file}, {},
      data.path(), "");
  {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!std::filesystem::exists(ready_file) && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_TRUE(std::filesystem::exists(ready_file))
        << "the victim never ran a query: " << victim.StderrSoFar();
  }

  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> abusers;

  // Monitor: the daemon's memory, files and live connections every 200 ms.
  std::atomic<int64_t> peak_rss{0};
  std::atomic<int64_t> peak_files{0};
  std::atomic<int64_t> peak_live{0};
  std::atomic<int64_t> peak_calls{0};
  std::atomic<int64_t> peak_inflight{0};  // inflight_result_bytes
  std::atomic<int64_t> peak_cached{
      0};  // result_cache_bytes  // in_use + waiting of one connection
  std::string busiest;  // written by the monitor only
  std::atomic<int64_t> samples{0};
  std::atomic<bool> vanished{false};
  std::atomic<int64_t> stats_failures{0};
  std::thread monitor([&] {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon->target()});
    while (!stop.load()) {
      const int64_t rss = RssBytes(pid);
      const int64_t files = OpenFiles(pid);
      if (rss < 0 || files < 0) vanished = true;
      peak_rss = std::max(peak_rss.load(), rss);
      peak_files = std::max(peak_files.load(), files);
      if (client.ok()) {
        absl::StatusOr<v1::GetStatsResponse> stats = (*client)->Stats();
        if (stats.ok()) {
          peak_live = std::max(peak_live.load(), stats->connections_live());
          peak_inflight =
              std::max(peak_inflight.load(), stats->inflight_result_bytes());
          peak_cached =
              std::max(peak_cached.load(), stats->result_cache_bytes());
        } else {
          ++stats_failures;
        }
        // Calls holding or waiting for a backend of one connection: a lower
        // bound of the calls running or queued on it, which
        // limits.max_calls_per_connection bounds.
        absl::StatusOr<v1::ListConnectionsResponse> list =
            (*client)->ListConnections(/*all_sessions=*/true);
        if (list.ok()) {
          for (const v1::ConnectionInfo& info : list->connections()) {
            const int64_t calls = info.pool().in_use() + info.pool().waiting();
            if (calls > peak_calls.load()) {
              peak_calls = calls;
              busiest = absl::StrCat(info.name(), " ", info.description(), ": ",
                                     info.pool().ShortDebugString());
            }
          }
        } else {
          ++stats_failures;
        }
      }
      ++samples;
      absl::SleepFor(absl::Milliseconds(200));
    }
  });

  // Kwargs flood: a harmless kwarg that must join the one connection, and
  // pool sizes, which make connections of their own.
  abusers.emplace_back([&] {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon->target()});
    ASSERT_TRUE(client.ok());
    for (int64_t i = 0; !stop.load(); ++i) {
      ConnectOptions options{.name = "app"};
      if (i % 2 == 0) {
        options.kwargs["create_engine_kwargs.echo"] = i;
      } else {
        options.kwargs["create_engine_kwargs.pool_size"] = i % 50 + 1;
      }
      tally.Record("kwargs_flood", (*client)->Connect(options).status());
    }
  });

  // Megabyte names.
  abusers.emplace_back([&] {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon->target()});
    ASSERT_TRUE(client.ok());
    for (int i = 0; !stop.load(); ++i) {
      tally.Record("megabyte_name",
                   (*client)
                       ->Connect({.name = std::string(1 << 20, 'a' + i % 26)})
                       .status());
    }
  });

  // Random bytes on every method.
  abusers.emplace_back([&] {
    grpc::GenericStub stub(OwnChannel(daemon->target()));
    std::mt19937_64 random(11);
    for (int i = 0; !stop.load(); ++i) {
      std::string bytes(random() % 2048, '\0');
      for (char& c : bytes) c = static_cast<char>(random());
      const std::string method = kMethods[i % std::size(kMethods)];
      tally.Record(absl::StrCat("random_bytes.", method),
                   CallRaw(stub, method, bytes));
    }
  });

  // Sessions flood: a session-scoped connection per random session id, each
  // used once (so it opens a backend).
  abusers.emplace_back([&] {
    auto stub = v1::ConnectionBroker::NewStub(OwnChannel(daemon->target()));
    std::mt19937_64 random(7);
    while (!stop.load()) {
      const std::string session = RandomHex(random);
      v1::ConnectResponse connected;
      {
        grpc::ClientContext context;
        context.set_deadline(In(absl::Seconds(30)));
        context.AddMetadata("connbroker-session", session);
        v1::ConnectRequest request;
        request.set_name("sess");
        grpc::Status status = stub->Connect(&context, request, &connected);
        tally.Record("sessions.connect", status);
        if (!status.ok()) continue;
      }
      grpc::ClientContext context;
      context.set_deadline(In(absl::Seconds(30)));
      context.AddMetadata("connbroker-session", session);
      v1::QueryRequest request;
      request.mutable_target()->set_handle(connected.handle());
      request.set_sql("SELECT 1");
      auto reader = stub->Query(&context, request);
      v1::QueryResponse response;
      while (reader->Read(&response)) {
      }
      tally.Record("sessions.query", reader->Finish());
    }
  });

  // 500 slow Query streams over 4 threads, each on a connection of its own.
  std::vector<SlowReaders::Counters> reader_counters(kReaderThreads);
  for (int t = 0; t < kReaderThreads; ++t) {
    abusers.emplace_back([&, t] {
      const int per_thread = kStreams / kReaderThreads;
      SlowReaders readers(OwnChannel(daemon->target()), t * per_thread,
                          per_thread);
      reader_counters[t] = readers.Run(stop, tally);
    });
  }

  const absl::Duration duration = AbuseDuration();
  absl::SleepFor(duration);  // the length of the run, not a race's timing
  stop = true;
  for (std::thread& abuser : abusers) abuser.join();
  monitor.join();

  // The victim: every call succeeded.
  std::ofstream(stop_file) << "stop\n";
  ProcessResult victim_result = victim.WaitAtMost(60000);
  EXPECT_EQ(victim_result.exit_code, 0)
      << "the well-behaved client saw failures:\n"
      << victim_result.err.substr(0, 4000);
  std::cout << "[ abuse ] " << absl::FormatDuration(duration)
            << " run; victim SELECT 1: " << victim_result.out;

  // The abusers: refused, never failed inside the daemon.
  int64_t total = 0;
  for (const auto& [kind, codes] : tally.counts()) {
    std::string line = absl::StrCat("[ abuse ] ", kind, ":");
    for (const auto& [code, count] : codes) {
      absl::StrAppend(&line, " ", CodeName(code), "=", count);
      total += count;
      EXPECT_NE(code, grpc::UNKNOWN)
          << kind << ": " << tally.sample(kind, code);
      EXPECT_NE(code, grpc::INTERNAL)
          << kind << ": " << tally.sample(kind, code);
    }
    std::cout << line << std::endl;
    for (const auto& [code, count] : codes) {
      if (code != grpc::OK) {
        std::cout << "[ abuse ]   " << CodeName(code) << " e.g. \""
                  << tally.sample(kind, code) << "\"" << std::endl;
      }
    }
  }
  SlowReaders::Counters streams;
  for (const SlowReaders::Counters& c : reader_counters) {
    streams.opened += c.opened;
    streams.batches += c.batches;
    streams.streams_with_rows += c.streams_with_rows;
    streams.completed += c.completed;
    streams.cancelled_at_end += c.cancelled_at_end;
  }
  std::cout << "[ abuse ] query streams: " << streams.opened << " opened, "
            << streams.streams_with_rows << " got rows, " << streams.completed
            << " read to the end, " << streams.cancelled_at_end
            << " still open at the end (cancelled), " << streams.batches
            << " batches" << std::endl;
  std::cout << "[ abuse ] daemon: peak RSS " << (peak_rss.load() >> 20)
            << " MiB (bound " << (RssBoundBytes(GetParam()) >> 20)
            << "), peak open files " << peak_files.load() << " (max_open_files "
            << kMaxOpenFiles << "), peak connections_live " << peak_live.load()
            << " (max " << kMaxConnections << "), peak calls on one connection "
            << peak_calls.load() << " (max " << kMaxCallsPerConnection
            << "), peak inflight_result_bytes " << (peak_inflight.load() >> 20)
            << " MiB (max " << (kMaxInflightResultBytes >> 20)
            << "), peak result_cache_bytes " << (peak_cached.load() >> 20)
            << " MiB (max " << (kResultCacheBytes >> 20) << "), "
            << samples.load() << " samples" << std::endl;
  EXPECT_GT(total, 0);
  for (const std::string kind : {"kwargs_flood", "megabyte_name",
                                 "random_bytes.Query", "sessions.connect"}) {
    EXPECT_GT(tally.counts()[kind].size(), 0u) << kind << " never ran";
  }
  EXPECT_GE(streams.opened, kStreams);
  // Megabyte names are refused for what they are.
  std::map<int, int64_t> names = tally.counts()["megabyte_name"];
  EXPECT_EQ(names[grpc::INVALID_ARGUMENT], Total(names));

  // The daemon's budgets held throughout.
  EXPECT_FALSE(vanished.load()) << "the daemon died during the run";
  EXPECT_GT(samples.load(), 0);
  EXPECT_LT(peak_rss.load(), RssBoundBytes(GetParam()));
  EXPECT_LT(peak_files.load(), kMaxOpenFiles);
  EXPECT_LE(peak_live.load(), kMaxConnections);
  EXPECT_LE(peak_calls.load(), kMaxCallsPerConnection)
      << "calls on one connection past limits.max_calls_per_connection: "
      << busiest;
  EXPECT_LE(peak_inflight.load(), kMaxInflightResultBytes);
  EXPECT_LE(peak_cached.load(), kResultCacheBytes);
  EXPECT_THAT(tally.unnamed(), ::testing::IsEmpty());
  EXPECT_EQ(stats_failures.load(), 0);

  // And afterwards it still serves.
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = daemon->target()});
  ASSERT_TRUE(client.ok());
  absl::StatusOr<v1::GetStatsResponse> stats = (*client)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_LE(stats->connections_live(), kMaxConnections);
  std::cout << "[ abuse ] stats after: connections_live "
            << stats->connections_live() << ", refused_by_limits "
            << stats->refused_by_limits() << ", evicted_for_room "
            << stats->evicted_for_room() << ", backends_open "
            << stats->backends_open() << "/" << stats->max_backends()
            << ", inflight_budget_refusals "
            << stats->inflight_budget_refusals() << ", open_files "
            << stats->open_files() << ", result_cache_bytes "
            << stats->result_cache_bytes() << std::endl;
  {
    auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
        daemon->target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(10)));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::SERVING);
  }
  ProcessResult after = daemon->Cli({"query", "victim", "SELECT 1"});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  client->reset();
  EXPECT_EQ(daemon->Stop(), 0) << daemon->Log().substr(0, 4000);
}

INSTANTIATE_TEST_SUITE_P(Limits, AbuseTest, ::testing::Values(32, 128),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return absl::StrCat("MaxBackends", info.param);
                         });

}  // namespace
}  // namespace connbroker::testing
