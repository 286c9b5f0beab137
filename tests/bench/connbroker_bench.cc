// connbroker_bench: measures a running connbrokerd against SQLite used
// directly in-process, and prints one markdown table. tests/bench/run.sh
// starts the daemon and runs this; see tests/bench/README.md for the rows.
//
//   connbroker_bench --target unix:/tmp/x/b.sock --db /tmp/x/bench.db
//                    [--connection bench] [--seconds 3] [--clients 8]
//                    [--daemon-pid PID]   # to charge the daemon CPU per call
//
// Why a hand-written harness and not Google Benchmark: the numbers that
// matter come from several client *processes* (one gRPC channel each, as
// real app processes have) running for the same fixed time, with their
// latencies merged into one set of percentiles. Google Benchmark measures
// threads inside one process, picks iteration counts itself and cannot merge
// samples across processes. Workers are this same binary re-executed with
// --worker, not plain fork()s: a process that already runs gRPC threads
// (the parent sets up the data through its own Client) cannot safely fork
// without exec.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "SQLiteCpp/SQLiteCpp.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "connbroker/result.h"

extern char** environ;

namespace connbroker::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Data set sizes. The point-lookup table is big enough that lookups are not
// all served from one page; the stream is big enough that per-query costs
// vanish and only per-row and per-batch costs remain.
constexpr int64_t kItemRows = 100'000;
constexpr int64_t kStreamRows = 1'000'000;
// Bytes of one streamed row as the application sees it: int64 + double + a
// 16-character text ('row-' and 12 digits, fixed width by construction).
constexpr int64_t kStreamRowBytes = 8 + 8 + 16;
constexpr int64_t kCachedId = 4242;
// Calls each worker makes before the clock starts: the first calls pay for
// the channel's connection and the server's first statement preparation.
constexpr int kWarmupCalls = 20;

constexpr char kPointSql[] = "SELECT * FROM items WHERE id = ?";
constexpr char kStreamSql[] = "SELECT a, b, c FROM big";
constexpr char kInsertSql[] = "INSERT INTO log(v) VALUES (?)";

struct Flags {
  std::string target;
  std::string db;
  std::string connection = "bench";
  double seconds = 3;
  int many_clients = 8;
  // The daemon's process id, to charge it CPU time per call; 0: unknown.
  int daemon_pid = 0;
  // Worker processes only.
  std::string worker_mode;
  std::string out;
  int index = 0;
};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "connbroker_bench: FAILED: %s\n", message.c_str());
  std::exit(1);
}

void Progress(const std::string& message) {
  std::fprintf(stderr, "connbroker_bench: %s\n", message.c_str());
}

Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--target") {
      flags.target = next();
    } else if (arg == "--db") {
      flags.db = next();
    } else if (arg == "--connection") {
      flags.connection = next();
    } else if (arg == "--seconds") {
      flags.seconds = std::atof(next().c_str());
    } else if (arg == "--clients") {
      flags.many_clients = std::atoi(next().c_str());
    } else if (arg == "--daemon-pid") {
      flags.daemon_pid = std::atoi(next().c_str());
    } else if (arg == "--worker") {
      flags.worker_mode = next();
    } else if (arg == "--out") {
      flags.out = next();
    } else if (arg == "--index") {
      flags.index = std::atoi(next().c_str());
    } else {
      Die("unknown argument " + arg +
          " (usage: --target T --db FILE [--connection NAME] [--seconds N] "
          "[--clients N] [--daemon-pid PID])");
    }
  }
  if (flags.target.empty()) Die("--target is required");
  if (flags.worker_mode.empty() && flags.db.empty()) Die("--db is required");
  if (flags.seconds <= 0) Die("--seconds must be positive");
  if (flags.many_clients < 1) Die("--clients must be at least 1");
  return flags;
}

std::optional<int64_t> AsInt(const Value& value) {
  if (const int64_t* v = std::get_if<int64_t>(&value)) return *v;
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Samples and the table

// What one worker (or an in-process loop) measured.
struct Samples {
  std::vector<int64_t> latencies_ns;  // measured calls only
  int64_t elapsed_ns = 0;             // wall time of the measured loop
  int64_t total_calls = 0;            // warm-up calls included
  int64_t server_micros = 0;          // sum of QuerySummary::elapsed_micros
  int64_t cpu_ns = 0;                 // this process's CPU in the loop
};

// CPU time (user + system) of this process so far.
int64_t SelfCpuNanos() {
  struct rusage u;
  ::getrusage(RUSAGE_SELF, &u);
  auto ns = [](const timeval& t) {
    return int64_t{t.tv_sec} * 1'000'000'000 + int64_t{t.tv_usec} * 1000;
  };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

// CPU time (user + system) of process `pid` so far, from /proc (clock-tick
// resolution, 10 ms: fine over runs of seconds); -1 when unknown.
int64_t ProcessCpuNanos(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  // After "pid (comm)": field 3 is the state; utime and stime are 14, 15.
  std::istringstream fields(stat.substr(paren + 2));
  std::string field;
  int64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && (fields >> field); ++i) {
    if (i == 14) utime = std::atoll(field.c_str());
    if (i == 15) stime = std::atoll(field.c_str());
  }
  return (utime + stime) * (1'000'000'000 / ::sysconf(_SC_CLK_TCK));
}

// Merged over the workers of one scenario.
struct Measurement {
  int clients = 0;
  int64_t ops = 0;
  double ops_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  int64_t total_calls = 0;
  double server_mean_us = 0;
  double client_cpu_us = 0;   // per call, all client processes
  double daemon_cpu_us = -1;  // per call; -1: unknown
};

Measurement Merge(std::vector<Samples>& all) {
  Measurement m;
  m.clients = static_cast<int>(all.size());
  std::vector<int64_t> merged;
  for (Samples& s : all) {
    m.ops += static_cast<int64_t>(s.latencies_ns.size());
    // Each worker ran for its own measured time; rates add up.
    if (s.elapsed_ns > 0) {
      m.ops_per_second += static_cast<double>(s.latencies_ns.size()) * 1e9 /
                          static_cast<double>(s.elapsed_ns);
    }
    m.total_calls += s.total_calls;
    m.server_mean_us += static_cast<double>(s.server_micros);
    m.client_cpu_us += static_cast<double>(s.cpu_ns) / 1e3;
    merged.insert(merged.end(), s.latencies_ns.begin(), s.latencies_ns.end());
  }
  if (merged.empty()) Die("a scenario completed no calls at all");
  m.server_mean_us /= static_cast<double>(m.ops);
  m.client_cpu_us /= static_cast<double>(m.ops);
  std::sort(merged.begin(), merged.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(merged.size()));
    return static_cast<double>(merged[std::min(i, merged.size() - 1)]) / 1e3;
  };
  m.p50_us = at(0.50);
  m.p99_us = at(0.99);
  return m;
}

struct Row {
  std::string scenario;
  int clients = 0;
  double ops_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  std::string notes;
};

std::string FormatRate(double v) {
  return v >= 100 ? absl::StrFormat("%.0f", v) : absl::StrFormat("%.2f", v);
}

std::string FormatMicros(double v) {
  return v >= 100 ? absl::StrFormat("%.0f", v) : absl::StrFormat("%.1f", v);
}

Row MakeRow(std::string scenario, const Measurement& m, std::string notes) {
  return Row{
      std::move(scenario), m.clients, m.ops_per_second, m.p50_us, m.p99_us,
      std::move(notes)};
}

std::string MachineLine(const Flags& flags) {
  struct utsname u;
  ::uname(&u);
  std::string cpu;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  return absl::StrFormat(
      "machine: nproc %d, %s, Linux %s; %s; %.3g s a scenario",
      static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)),
      cpu.empty() ? "cpu unknown" : cpu, u.release,
      absl::FormatTime("%Y-%m-%d %H:%M %Z", absl::Now(), absl::UTCTimeZone()),
      flags.seconds);
}

void PrintTable(const Flags& flags, const std::vector<Row>& rows) {
  std::printf("%s\n\n", MachineLine(flags).c_str());
  std::printf("| scenario | clients | ops/s | p50 us | p99 us | notes |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | --- |\n");
  for (const Row& r : rows) {
    std::printf("| %s | %d | %s | %s | %s | %s |\n", r.scenario.c_str(),
                r.clients, FormatRate(r.ops_per_second).c_str(),
                FormatMicros(r.p50_us).c_str(), FormatMicros(r.p99_us).c_str(),
                r.notes.c_str());
  }
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// Worker processes

// One timed call of a scenario. Each call checks its own answer, so a wrong
// or empty result can never pass for a fast one.
using Call = std::function<absl::Status(bool warming_up, Samples& samples)>;

absl::Status Check(bool ok, const std::string& what) {
  return ok ? absl::OkStatus() : absl::InternalError(what);
}

absl::Status CheckUncached(const Result& r) {
  return Check(!r.from_cache() && r.backend_executions() == 1,
               absl::StrCat("expected an uncached execution, got from_cache=",
                            r.from_cache(),
                            " backend_executions=", r.backend_executions()));
}

absl::Status CheckItemRow(const Result& r, int64_t id) {
  if (r.num_rows() != 1 || r.num_columns() != 3) {
    return absl::InternalError(absl::StrCat("id ", id, ": expected 1 row x 3 ",
                                            "columns, got ", r.num_rows(), "x",
                                            r.num_columns()));
  }
  return Check(AsInt(r.cell(0, 0)) == id,
               absl::StrCat("id ", id, ": the row has another id"));
}

Call MakeCall(const Flags& flags, Client& client, const Connection& conn) {
  const std::string& mode = flags.worker_mode;
  if (mode == "select1") {
    return [conn](bool, Samples& s) -> absl::Status {
      absl::StatusOr<Result> r = conn.Query("SELECT 1");
      if (!r.ok()) return r.status();
      s.server_micros += r->elapsed_micros();
      if (r->num_rows() != 1 || r->num_columns() != 1 ||
          AsInt(r->cell(0, 0)) != 1) {
        return absl::InternalError("SELECT 1 did not return 1");
      }
      return CheckUncached(*r);
    };
  }
  if (mode == "point") {
    // Seeded by worker index: each process looks up its own id sequence.
    auto rng = std::make_shared<std::mt19937_64>(flags.index * 7919 + 1);
    return [conn, rng](bool, Samples& s) -> absl::Status {
      std::uniform_int_distribution<int64_t> ids(1, kItemRows);
      int64_t id = ids(*rng);
      absl::StatusOr<Result> r = conn.Query(kPointSql, {.params = {id}});
      if (!r.ok()) return r.status();
      s.server_micros += r->elapsed_micros();
      if (absl::Status st = CheckItemRow(*r, id); !st.ok()) return st;
      return CheckUncached(*r);
    };
  }
  if (mode == "cached") {
    return [conn](bool warming_up, Samples& s) -> absl::Status {
      absl::StatusOr<Result> r = conn.Query(
          kPointSql, {.params = {kCachedId}, .ttl = absl::Seconds(600)});
      if (!r.ok()) return r.status();
      s.server_micros += r->elapsed_micros();
      if (absl::Status st = CheckItemRow(*r, kCachedId); !st.ok()) return st;
      // The first warm-up call may fill the cache; every timed one must hit.
      return Check(warming_up || r->from_cache(),
                   "a timed cached query missed the result cache");
    };
  }
  if (mode == "connect") {
    std::string handle = conn.handle();
    return [&client, name = flags.connection, handle](
               bool, Samples&) -> absl::Status {
      absl::StatusOr<Connection> c = client.Connect({.name = name});
      if (!c.ok()) return c.status();
      return Check(!c->created() && c->handle() == handle,
                   "Connect did not join the existing connection");
    };
  }
  if (mode == "insert") {
    // Distinct values per worker, so the rows can be told apart if needed.
    auto n = std::make_shared<int64_t>(int64_t{flags.index} * 1'000'000'000);
    return [conn, n](bool, Samples&) -> absl::Status {
      absl::StatusOr<ExecuteResult> r = conn.Execute(kInsertSql, {++*n});
      if (!r.ok()) return r.status();
      return Check(r->rows_affected == 1, "INSERT affected no row");
    };
  }
  Die("unknown worker mode " + mode);
}

// Protocol with the parent: stdout is the "ready" pipe (one byte: 'R' ready,
// 'E' failed), stdin the "go" pipe (the parent closes it, so every worker's
// read returns at once). Samples go to --out as raw int64s.
int RunWorker(const Flags& flags) {
  auto fail = [&](const absl::Status& status) {
    std::fprintf(stderr, "connbroker_bench worker %d (%s): %s\n", flags.index,
                 flags.worker_mode.c_str(), status.ToString().c_str());
    (void)!::write(STDOUT_FILENO, "E", 1);
    return 1;
  };
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = flags.target});
  if (!client.ok()) return fail(client.status());
  if (absl::Status st = (*client)->WaitForReady(absl::Seconds(10)); !st.ok()) {
    return fail(st);
  }
  absl::StatusOr<Connection> conn =
      (*client)->Connect({.name = flags.connection});
  if (!conn.ok()) return fail(conn.status());
  Call call = MakeCall(flags, **client, *conn);

  Samples samples;
  for (int i = 0; i < kWarmupCalls; ++i) {
    if (absl::Status st = call(true, samples); !st.ok()) return fail(st);
    ++samples.total_calls;
  }
  samples.server_micros = 0;
  samples.latencies_ns.reserve(1 << 20);

  if (::write(STDOUT_FILENO, "R", 1) != 1) return 1;
  char go;
  while (::read(STDIN_FILENO, &go, 1) > 0) {
  }

  const int64_t cpu_start = SelfCpuNanos();
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(flags.seconds));
  Clock::time_point now = start;
  while (now < end) {
    absl::Status st = call(false, samples);
    const Clock::time_point after = Clock::now();
    if (!st.ok()) return fail(st);
    samples.latencies_ns.push_back((after - now).count());
    ++samples.total_calls;
    now = after;
  }
  samples.elapsed_ns = (now - start).count();
  samples.cpu_ns = SelfCpuNanos() - cpu_start;

  std::ofstream out(flags.out, std::ios::binary);
  const int64_t header[5] = {static_cast<int64_t>(samples.latencies_ns.size()),
                             samples.elapsed_ns, samples.total_calls,
                             samples.server_micros, samples.cpu_ns};
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  out.write(reinterpret_cast<const char*>(samples.latencies_ns.data()),
            static_cast<std::streamsize>(samples.latencies_ns.size() *
                                         sizeof(int64_t)));
  out.close();
  return out ? 0 : 1;
}

Samples ReadSamples(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int64_t header[5] = {};
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  if (!in || header[0] < 0) Die("cannot read worker samples from " + path);
  Samples s;
  s.latencies_ns.resize(static_cast<size_t>(header[0]));
  s.elapsed_ns = header[1];
  s.total_calls = header[2];
  s.server_micros = header[3];
  s.cpu_ns = header[4];
  in.read(reinterpret_cast<char*>(s.latencies_ns.data()),
          static_cast<std::streamsize>(header[0] * sizeof(int64_t)));
  if (!in) Die("truncated worker samples in " + path);
  return s;
}

std::string SelfPath() {
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) Die("cannot find this program's path: " + error.message());
  return self.string();
}

// Starts `clients` worker processes for `mode`, releases them together once
// all have connected and warmed up, and merges what they measured.
Measurement RunWorkers(const Flags& flags, const std::string& scratch_dir,
                       const std::string& mode, int clients) {
  int ready[2], go[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) {
    Die("pipe2 failed");
  }
  const std::string self = SelfPath();
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  for (int i = 0; i < clients; ++i) {
    outs.push_back(absl::StrCat(scratch_dir, "/", mode, ".", i, ".samples"));
    std::vector<std::string> args = {self,
                                     "--worker",
                                     mode,
                                     "--index",
                                     std::to_string(i),
                                     "--out",
                                     outs.back(),
                                     "--target",
                                     flags.target,
                                     "--connection",
                                     flags.connection,
                                     "--seconds",
                                     absl::StrCat(flags.seconds)};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, go[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, ready[1], STDOUT_FILENO);
    pid_t pid = -1;
    int error = ::posix_spawn(&pid, self.c_str(), &actions, nullptr,
                              argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) Die(absl::StrCat("posix_spawn: ", std::strerror(error)));
    pids.push_back(pid);
  }
  ::close(go[0]);
  ::close(ready[1]);

  auto kill_all = [&](const std::string& why) {
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
    Die(absl::StrCat(mode, " x", clients, ": ", why));
  };
  // Connecting and warming up takes milliseconds; a minute means stuck. A
  // worker that crashed writes no 'E', and the others keep the pipe open,
  // so look for exited workers every second as well.
  int got = 0;
  for (int waited = 0; got < clients;) {
    pollfd p = {ready[0], POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) {
      for (pid_t pid : pids) {
        if (::waitpid(pid, nullptr, WNOHANG) == pid) {
          kill_all("a worker died before the run");
        }
      }
      if (++waited == 60) kill_all("workers did not get ready in 60 s");
      continue;
    }
    char c;
    ssize_t n = ::read(ready[0], &c, 1);
    if (n <= 0 || c != 'R') kill_all("a worker failed before the run");
    ++got;
  }
  // The daemon is idle now: every worker waits for "go".
  const int64_t daemon_cpu_start = ProcessCpuNanos(flags.daemon_pid);
  ::close(go[1]);  // go: every worker's read() sees end of file at once

  std::vector<Samples> all;
  for (int i = 0; i < clients; ++i) {
    int status = 0;
    ::waitpid(pids[i], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      pids.erase(pids.begin(), pids.begin() + i + 1);
      kill_all("a worker failed during the run (its error is above)");
    }
    all.push_back(ReadSamples(outs[i]));
    std::filesystem::remove(outs[i]);
  }
  ::close(ready[0]);
  const int64_t daemon_cpu_end = ProcessCpuNanos(flags.daemon_pid);
  Measurement m = Merge(all);
  if (daemon_cpu_start >= 0 && daemon_cpu_end >= 0) {
    m.daemon_cpu_us = static_cast<double>(daemon_cpu_end - daemon_cpu_start) /
                      1e3 / static_cast<double>(m.ops);
  }
  return m;
}

// ---------------------------------------------------------------------------
// The parent: set-up, in-process baselines, streaming

absl::StatusOr<int64_t> CountRows(const Connection& conn,
                                  const std::string& table) {
  absl::StatusOr<Result> r =
      conn.Query(absl::StrCat("SELECT count(*) FROM ", table));
  if (!r.ok()) return r.status();
  std::optional<int64_t> n =
      r->num_rows() == 1 ? AsInt(r->cell(0, 0)) : std::nullopt;
  if (!n) return absl::InternalError("count(*) returned no number");
  return *n;
}

// Creates the tables through the daemon (Execute), as an application would.
// Idempotent, so the program can run again on the same database file.
void SetUp(const Connection& conn) {
  auto fill = [](const std::string& insert, int64_t n,
                 const std::string& select) {
    return absl::StrCat(insert,
                        " WITH RECURSIVE s(x) AS (VALUES(1) UNION ALL "
                        "SELECT x + 1 FROM s WHERE x < ",
                        n, ") ", select);
  };
  const std::vector<std::string> statements = {
      "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, "
      "name TEXT NOT NULL, price REAL NOT NULL)",
      fill("INSERT OR IGNORE INTO items (id, name, price)", kItemRows,
           "SELECT x, printf('item-%06d', x), x * 0.25 FROM s"),
      "CREATE TABLE IF NOT EXISTS big (a INTEGER PRIMARY KEY, "
      "b REAL NOT NULL, c TEXT NOT NULL)",
      fill("INSERT OR IGNORE INTO big (a, b, c)", kStreamRows,
           "SELECT x, x * 0.5, printf('row-%012d', x) FROM s"),
      "CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, "
      "v INTEGER NOT NULL)",
  };
  for (const std::string& sql : statements) {
    absl::StatusOr<ExecuteResult> r = conn.Execute(sql);
    if (!r.ok()) Die("set-up: " + sql + ": " + r.status().ToString());
  }
  for (auto [table, want] :
       {std::pair<std::string, int64_t>{"items", kItemRows},
        {"big", kStreamRows}}) {
    absl::StatusOr<int64_t> n = CountRows(conn, table);
    if (!n.ok() || *n != want) {
      Die(absl::StrCat(
          "set-up: table ", table, " should hold ", want,
          " rows: ", n.ok() ? absl::StrCat(*n) : n.status().ToString()));
    }
  }
}

// The floor: a prepared SELECT 1 stepped in this process, no daemon.
Measurement DirectSelectOne(const Flags& flags) {
  SQLite::Database db(flags.db, SQLite::OPEN_READONLY);
  SQLite::Statement stmt(db, "SELECT 1");
  Samples s;
  // Reserved up front (a few million calls a second), so no reallocation
  // lands inside the timed loop.
  s.latencies_ns.reserve(static_cast<size_t>(flags.seconds * 5e6));
  auto one = [&] {
    if (!stmt.executeStep() || stmt.getColumn(0).getInt64() != 1) {
      Die("direct SELECT 1 did not return 1");
    }
    stmt.reset();
  };
  for (int i = 0; i < 1000; ++i) one();
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(flags.seconds));
  Clock::time_point now = start;
  while (now < end) {
    one();
    const Clock::time_point after = Clock::now();
    s.latencies_ns.push_back((after - now).count());
    now = after;
  }
  s.elapsed_ns = (now - start).count();
  std::vector<Samples> all = {std::move(s)};
  return Merge(all);
}

// Runs `one` (which returns the rows it read) at least twice and until
// `seconds` have passed; each run is one sample.
Measurement RepeatStream(const Flags& flags,
                         const std::function<int64_t()>& one) {
  Samples s;
  const Clock::time_point start = Clock::now();
  Clock::time_point now = start;
  while (s.latencies_ns.size() < 2 ||
         (now - start) < std::chrono::duration<double>(flags.seconds)) {
    if (int64_t rows = one(); rows != kStreamRows) {
      Die(absl::StrCat("the stream returned ", rows, " rows, not ",
                       kStreamRows));
    }
    const Clock::time_point after = Clock::now();
    s.latencies_ns.push_back((after - now).count());
    now = after;
  }
  s.elapsed_ns = (now - start).count();
  std::vector<Samples> all = {std::move(s)};
  return Merge(all);
}

// The same 1M-row query stepped in this process, every column read.
Measurement DirectStream(const Flags& flags) {
  SQLite::Database db(flags.db, SQLite::OPEN_READONLY);
  return RepeatStream(flags, [&]() -> int64_t {
    SQLite::Statement stmt(db, kStreamSql);
    int64_t rows = 0;
    size_t text_bytes = 0;
    double sum = 0;
    while (stmt.executeStep()) {
      ++rows;
      if (stmt.getColumn(0).getInt64() != rows) Die("direct stream: bad id");
      sum += stmt.getColumn(1).getDouble();
      text_bytes += static_cast<size_t>(stmt.getColumn(2).getBytes());
    }
    if (text_bytes != static_cast<size_t>(rows * 16) || sum <= 0) {
      Die("direct stream: unexpected text sizes or values");
    }
    return rows;
  });
}

// The same query through the daemon, batch by batch, as a reader of a big
// result would use it (memory stays bounded). Every id is checked; the text
// column on the first row of each batch.
Measurement BrokerStream(const Flags& flags, const Connection& conn,
                         int64_t* server_micros) {
  *server_micros = 0;
  int runs = 0;
  Measurement m = RepeatStream(flags, [&]() -> int64_t {
    int64_t next_id = 1;
    absl::StatusOr<QuerySummary> summary = conn.QueryBatches(
        kStreamSql, {.deadline = absl::Minutes(5)},
        [&](const Result& batch) -> absl::Status {
          if (batch.num_rows() == 0) return absl::OkStatus();
          if (batch.num_columns() != 3) {
            return absl::InternalError("the stream has not 3 columns");
          }
          const Value text = batch.cell(0, 2);
          const std::string* s = std::get_if<std::string>(&text);
          if (s == nullptr || s->size() != 16) {
            return absl::InternalError("the stream's text is not 16 bytes");
          }
          for (size_t r = 0; r < batch.num_rows(); ++r) {
            if (AsInt(batch.cell(r, 0)) != next_id++) {
              return absl::InternalError("the stream's ids are out of order");
            }
          }
          return absl::OkStatus();
        });
    if (!summary.ok()) Die("stream: " + summary.status().ToString());
    if (summary->row_count != next_id - 1 || summary->from_cache) {
      Die("stream: the summary disagrees with the rows received");
    }
    *server_micros += summary->elapsed_micros;
    ++runs;
    return summary->row_count;
  });
  *server_micros /= std::max(runs, 1);
  return m;
}

std::string StreamNotes(const Measurement& m) {
  const double seconds_per_query = 1.0 / m.ops_per_second;
  const double rows_per_second =
      static_cast<double>(kStreamRows) / seconds_per_query;
  return absl::StrFormat("%.2fM rows/s, %.0f MB/s payload (%d B/row), %d runs",
                         rows_per_second / 1e6,
                         rows_per_second * kStreamRowBytes / 1e6,
                         kStreamRowBytes, m.ops);
}

std::string Scaling(const Measurement& many, const Measurement& one) {
  return absl::StrFormat("x%.2f of 1 client",
                         many.ops_per_second / one.ops_per_second);
}

// Where a call's time goes: the daemon's own account of it (request to last
// message written), and CPU per call in the daemon and in the clients.
std::string CpuNote(const Measurement& m) {
  std::string daemon =
      m.daemon_cpu_us < 0 ? "?" : absl::StrFormat("%.0f", m.daemon_cpu_us);
  return absl::StrFormat("CPU/call: daemon %s us, client %.0f us", daemon,
                         m.client_cpu_us);
}

std::string ServerNote(const Measurement& m) {
  return absl::StrFormat("server-side %.0f us; %s", m.server_mean_us,
                         CpuNote(m));
}

int RunParent(const Flags& flags) {
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Create({.target = flags.target});
  if (!client.ok()) Die(client.status().ToString());
  if (absl::Status st = (*client)->WaitForReady(absl::Seconds(10)); !st.ok()) {
    Die("the daemon at " + flags.target + " is not serving: " + st.ToString());
  }
  absl::StatusOr<Connection> conn =
      (*client)->Connect({.name = flags.connection});
  if (!conn.ok()) Die("Connect: " + conn.status().ToString());
  Progress("set-up: creating items (100k rows), big (1M rows), log");
  SetUp(*conn);

  const std::string scratch =
      std::filesystem::path(flags.db).parent_path().string();
  const int n = flags.many_clients;
  std::vector<Row> rows;
  auto workers = [&](const std::string& mode, int clients) {
    Progress(absl::StrCat(mode, " x", clients));
    return RunWorkers(flags, scratch, mode, clients);
  };

  Progress("direct SELECT 1");
  Measurement direct = DirectSelectOne(flags);
  rows.push_back(MakeRow("1. direct SQLite `SELECT 1` (floor)", direct,
                         "in-process prepared statement, no daemon"));

  Measurement s1 = workers("select1", 1);
  Measurement sn = workers("select1", n);
  rows.push_back(MakeRow("2. broker `SELECT 1`, uncached", s1, ServerNote(s1)));
  rows.push_back(MakeRow("2. broker `SELECT 1`, uncached", sn,
                         absl::StrCat(ServerNote(sn), "; ", Scaling(sn, s1))));

  Measurement p1 = workers("point", 1);
  Measurement pn = workers("point", n);
  rows.push_back(MakeRow("3. broker point lookup, uncached", p1,
                         absl::StrCat(ServerNote(p1), "; random id of 100k")));
  rows.push_back(MakeRow("3. broker point lookup, uncached", pn,
                         absl::StrCat(ServerNote(pn), "; ", Scaling(pn, p1))));

  Measurement c1 = workers("cached", 1);
  Measurement cn = workers("cached", n);
  rows.push_back(MakeRow("4. broker point lookup, cached (ttl 600 s)", c1,
                         absl::StrCat(ServerNote(c1), "; every call a hit")));
  rows.push_back(MakeRow("4. broker point lookup, cached (ttl 600 s)", cn,
                         absl::StrCat(ServerNote(cn), "; ", Scaling(cn, c1))));

  Measurement k1 = workers("connect", 1);
  rows.push_back(MakeRow("5. Connect (join existing)", k1,
                         absl::StrCat(CpuNote(k1), "; joined, same handle")));

  Progress("stream through the daemon");
  int64_t server_micros = 0;
  const int64_t self_cpu_start = SelfCpuNanos();
  const int64_t daemon_cpu_start = ProcessCpuNanos(flags.daemon_pid);
  Measurement bs = BrokerStream(flags, *conn, &server_micros);
  const int64_t daemon_cpu_end = ProcessCpuNanos(flags.daemon_pid);
  bs.client_cpu_us = static_cast<double>(SelfCpuNanos() - self_cpu_start) /
                     1e3 / static_cast<double>(bs.ops);
  if (daemon_cpu_start >= 0 && daemon_cpu_end >= 0) {
    bs.daemon_cpu_us = static_cast<double>(daemon_cpu_end - daemon_cpu_start) /
                       1e3 / static_cast<double>(bs.ops);
  }
  Progress("stream in-process");
  Measurement ds = DirectStream(flags);
  rows.push_back(MakeRow(
      "6. broker stream 1M rows x 3 cols (QueryBatches)", bs,
      absl::StrFormat("%s; %.0f%% of direct; server-side %.2f s, CPU/query: "
                      "daemon %.2f s, client %.2f s",
                      StreamNotes(bs),
                      100 * bs.ops_per_second / ds.ops_per_second,
                      static_cast<double>(server_micros) / 1e6,
                      bs.daemon_cpu_us / 1e6, bs.client_cpu_us / 1e6)));
  rows.push_back(MakeRow("6. direct SQLite, same 1M-row query", ds,
                         StreamNotes(ds) + "; in-process"));

  absl::StatusOr<int64_t> before = CountRows(*conn, "log");
  if (!before.ok()) Die("count log: " + before.status().ToString());
  Measurement w1 = workers("insert", 1);
  Measurement wn = workers("insert", n);
  absl::StatusOr<int64_t> after = CountRows(*conn, "log");
  if (!after.ok()) Die("count log: " + after.status().ToString());
  if (*after - *before != w1.total_calls + wn.total_calls) {
    Die(absl::StrCat("log gained ", *after - *before, " rows but ",
                     w1.total_calls + wn.total_calls,
                     " inserts were acknowledged"));
  }
  rows.push_back(
      MakeRow("7. broker Execute single-row INSERT", w1,
              absl::StrCat(CpuNote(w1), "; rows checked by count(*)")));
  rows.push_back(MakeRow(
      "7. broker Execute single-row INSERT", wn,
      absl::StrCat(CpuNote(wn), "; ", Scaling(wn, w1), ": one writer")));

  PrintTable(flags, rows);
  return 0;
}

}  // namespace
}  // namespace connbroker::bench

int main(int argc, char** argv) {
  connbroker::bench::Flags flags = connbroker::bench::ParseFlags(argc, argv);
  if (!flags.worker_mode.empty()) return connbroker::bench::RunWorker(flags);
  return connbroker::bench::RunParent(flags);
}
