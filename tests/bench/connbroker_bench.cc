// connbroker_bench: measures a running connbrokerd against what an
// application would use instead -- SQLite in-process, libpq straight to
// PostgreSQL, libpq through PgBouncer, libmariadb straight to MariaDB -- and
// prints one markdown table. tests/bench/run.sh starts the daemon and the
// database servers and runs this; see tests/bench/README.md for the rows.
//
//   connbroker_bench --target unix:/tmp/x/b.sock --db /tmp/x/bench.db
//                    [--connection bench] [--seconds 3] [--clients 8]
//                    [--daemon-pid PID]   # CPU per call, RSS while streaming
//                    [--cli PATH]   # the connbroker command (session group)
//                    [--only sqlite,pg,mariadb,stream,rss,neighbour,session]
//
// The network databases come from the environment tests/servers/
// db-servers.sh writes to its env.sh (CONNBROKER_TEST_PG_{HOST,PORT,USER,
// PASSWORD,DATABASE}, CONNBROKER_TEST_MYSQL_{...}), and PgBouncer's port from
// CONNBROKER_BENCH_PGBOUNCER_PORT: no passwords on command lines, and the
// worker processes inherit them. The daemon must know the connections "pg",
// "pg_small" (pool_size 1) and "mariadb" pointing at the same servers.
// Rows whose server is not given are left out.
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
#include <libpq-fe.h>
#include <mysql.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "SQLiteCpp/SQLiteCpp.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "connbroker/result.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "connbroker/v1/session.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

extern char** environ;

namespace connbroker::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Data set sizes. The point-lookup table is big enough that lookups are not
// all served from one page; the stream is big enough that per-query costs
// vanish and only per-row and per-batch costs remain.
constexpr int64_t kItemRows = 100'000;
constexpr int64_t kStreamRows = 1'000'000;
// The memory check streams more rows than any buffer along the way could
// hold unnoticed: 5M rows are ~250 MB of payload.
constexpr int64_t kRssStreamRows = 5'000'000;
// Bytes of one streamed row as the application sees it: int64 + double + a
// 16-character text ('row-' and 12 digits, fixed width by construction).
constexpr int64_t kStreamRowBytes = 8 + 8 + 16;
// PostgreSQL and MariaDB add a timestamp, which both drivers deliver as its
// 19-character text ("2024-01-01 00:00:01").
constexpr int64_t kNetStreamRowBytes = kStreamRowBytes + 19;
constexpr int64_t kCachedId = 4242;
// Calls each worker makes before the clock starts: the first calls pay for
// the channel's connection and the server's first statement preparation.
constexpr int kWarmupCalls = 20;
// The busy neighbour: this many callers of a 50 ms statement on a
// connection with one backend, so 63 of them always wait in its queue.
constexpr int kNeighbourCallers = 64;
// Requests the pipelined bare Session client keeps in flight on its stream.
constexpr int kPipelineDepth = 16;

constexpr char kPointSql[] = "SELECT * FROM items WHERE id = ?";
constexpr char kStreamSql[] = "SELECT a, b, c FROM big";
constexpr char kInsertSql[] = "INSERT INTO log(v) VALUES (?)";
constexpr char kPgPointSql[] =
    "SELECT id, name, amount FROM items WHERE id = $1";
constexpr char kMyPointSql[] =
    "SELECT id, name, amount FROM items WHERE id = ?";
constexpr char kNetStreamSql[] = "SELECT a, b, c, d FROM stream";
// The same rows without the timestamp: the 3 columns of the SQLite stream
// (int, real, 16-character text), so the three databases compare alike.
constexpr char kNetStream3Sql[] = "SELECT a, b, c FROM stream";
// Rows made on the fly: no 5M-row table to create, and the server side
// (a function scan spilled to a tuplestore) is not what is measured here.
constexpr char kPgRssStreamSql[] =
    "SELECT g AS a, g * 0.5 AS b, 'row-' || lpad(g::text, 12, '0') AS c, "
    "timestamp '2024-01-01' + g * interval '1 second' AS d "
    "FROM generate_series(1, 5000000) g";
constexpr char kNeighbourSql[] = "SELECT pg_sleep(0.05)";

// Connection names run.sh puts in the daemon's secrets.
constexpr char kPgConnection[] = "pg";
constexpr char kPgSmallConnection[] = "pg_small";
// Same server, the broker's default pool (5 + 10 overflow).
constexpr char kPgDefaultConnection[] = "pg_default";
constexpr char kMariaConnection[] = "mariadb";

struct Flags {
  std::string target;
  std::string db;
  std::string connection = "bench";
  double seconds = 3;
  int many_clients = 8;
  // The daemon's process id, to charge it CPU time per call; 0: unknown.
  int daemon_pid = 0;
  // Groups of rows to run; empty: all.
  std::set<std::string> only;
  // The `connbroker` command, for the process-per-request rows; empty: next
  // to this program in the build tree (../../client/connbroker).
  std::string cli;
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

const std::set<std::string>& Groups() {
  static const auto* groups = new std::set<std::string>{
      "sqlite", "pg", "mariadb", "stream", "rss", "neighbour", "session"};
  return *groups;
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
    } else if (arg == "--cli") {
      flags.cli = next();
    } else if (arg == "--only") {
      for (absl::string_view g : absl::StrSplit(next(), ',')) {
        if (Groups().count(std::string(g)) == 0) {
          Die(absl::StrCat("--only: unknown group '", g, "'"));
        }
        flags.only.insert(std::string(g));
      }
    } else if (arg == "--worker") {
      flags.worker_mode = next();
    } else if (arg == "--out") {
      flags.out = next();
    } else if (arg == "--index") {
      flags.index = std::atoi(next().c_str());
    } else {
      Die("unknown argument " + arg +
          " (usage: --target T --db FILE [--connection NAME] [--seconds N] "
          "[--clients N] [--daemon-pid PID] [--cli PATH] "
          "[--only GROUP,...])");
    }
  }
  if (flags.target.empty()) Die("--target is required");
  if (flags.worker_mode.empty() && flags.db.empty()) Die("--db is required");
  if (flags.seconds <= 0) Die("--seconds must be positive");
  if (flags.many_clients < 1) Die("--clients must be at least 1");
  return flags;
}

bool Selected(const Flags& flags, const std::string& group) {
  return flags.only.empty() || flags.only.count(group) > 0;
}

std::optional<int64_t> AsInt(const Value& value) {
  if (const int64_t* v = std::get_if<int64_t>(&value)) return *v;
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Where the network databases are

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

struct Servers {
  std::string pg_host, pg_port, pg_user, pg_password, pg_database;
  std::string bouncer_port;
  std::string my_host, my_port, my_user, my_password, my_database;

  bool has_pg() const { return !pg_host.empty() && !pg_port.empty(); }
  bool has_bouncer() const { return has_pg() && !bouncer_port.empty(); }
  bool has_mysql() const { return !my_host.empty() && !my_port.empty(); }
};

Servers ServersFromEnv() {
  Servers s;
  s.pg_host = Env("CONNBROKER_TEST_PG_HOST");
  s.pg_port = Env("CONNBROKER_TEST_PG_PORT");
  s.pg_user = Env("CONNBROKER_TEST_PG_USER");
  s.pg_password = Env("CONNBROKER_TEST_PG_PASSWORD");
  s.pg_database = Env("CONNBROKER_TEST_PG_DATABASE");
  s.bouncer_port = Env("CONNBROKER_BENCH_PGBOUNCER_PORT");
  s.my_host = Env("CONNBROKER_TEST_MYSQL_HOST");
  s.my_port = Env("CONNBROKER_TEST_MYSQL_PORT");
  s.my_user = Env("CONNBROKER_TEST_MYSQL_USER");
  s.my_password = Env("CONNBROKER_TEST_MYSQL_PASSWORD");
  s.my_database = Env("CONNBROKER_TEST_MYSQL_DATABASE");
  return s;
}

// ---------------------------------------------------------------------------
// libpq and libmariadb, used straight

struct PgFinish {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgClear {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgConn = std::shared_ptr<PGconn>;
using PgResult = std::unique_ptr<PGresult, PgClear>;

// A kept libpq connection, straight to PostgreSQL or through PgBouncer.
absl::StatusOr<PgConn> ConnectPg(const Servers& s, bool via_bouncer) {
  const std::string& port = via_bouncer ? s.bouncer_port : s.pg_port;
  const char* keys[] = {
      "host", "port", "user", "dbname", "password", "connect_timeout", nullptr};
  const char* values[] = {s.pg_host.c_str(),
                          port.c_str(),
                          s.pg_user.c_str(),
                          s.pg_database.c_str(),
                          s.pg_password.c_str(),
                          "10",
                          nullptr};
  PgConn conn(PQconnectdbParams(keys, values, 0), PgFinish());
  if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(absl::StrCat(
        via_bouncer ? "PgBouncer" : "PostgreSQL", " at ", s.pg_host, ":", port,
        ": ", conn ? PQerrorMessage(conn.get()) : "out of memory"));
  }
  return conn;
}

absl::Status PgError(PGconn* conn, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", PQerrorMessage(conn)));
}

// Runs a statement for its effect; dies on error (set-up only).
void PgExec(PGconn* conn, const std::string& sql) {
  PgResult r(PQexec(conn, sql.c_str()));
  const ExecStatusType status = PQresultStatus(r.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    Die(absl::StrCat("PostgreSQL set-up: ", sql, ": ", PQerrorMessage(conn)));
  }
}

int64_t PgCount(PGconn* conn, const std::string& table) {
  PgResult r(
      PQexec(conn, absl::StrCat("SELECT count(*) FROM ", table).c_str()));
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
    Die(absl::StrCat("PostgreSQL count(", table, "): ", PQerrorMessage(conn)));
  }
  return std::atoll(PQgetvalue(r.get(), 0, 0));
}

// Connections PostgreSQL has seen opened to the database so far
// (pg_stat_database.sessions), read on a connection kept for the purpose. A
// new backend counts itself when it first goes idle, so a pool that opens
// backends shows at once.
std::function<int64_t()> PgSessionCounter(PgConn conn) {
  return [conn]() -> int64_t {
    PgResult r(PQexec(conn.get(),
                      "SELECT sessions FROM pg_stat_database "
                      "WHERE datname = current_database()"));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK || PQntuples(r.get()) != 1) {
      return -1;
    }
    return std::atoll(PQgetvalue(r.get(), 0, 0));
  };
}

struct MysqlClose {
  void operator()(MYSQL* m) const { mysql_close(m); }
};
using MyConn = std::shared_ptr<MYSQL>;

absl::StatusOr<MyConn> ConnectMysql(const Servers& s) {
  MyConn conn(mysql_init(nullptr), MysqlClose());
  if (conn == nullptr) return absl::ResourceExhaustedError("mysql_init");
  unsigned int timeout = 10;
  mysql_optionsv(conn.get(), MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  if (mysql_real_connect(conn.get(), s.my_host.c_str(), s.my_user.c_str(),
                         s.my_password.c_str(), s.my_database.c_str(),
                         static_cast<unsigned>(std::atoi(s.my_port.c_str())),
                         nullptr, 0) == nullptr) {
    return absl::UnavailableError(absl::StrCat("MariaDB at ", s.my_host, ":",
                                               s.my_port, ": ",
                                               mysql_error(conn.get())));
  }
  return conn;
}

void MyExec(MYSQL* conn, const std::string& sql) {
  if (mysql_real_query(conn, sql.data(), sql.size()) != 0) {
    Die(absl::StrCat("MariaDB set-up: ", sql, ": ", mysql_error(conn)));
  }
  // A statement that returned rows must have them read before the next one.
  if (MYSQL_RES* res = mysql_store_result(conn)) mysql_free_result(res);
}

int64_t MyCount(MYSQL* conn, const std::string& table) {
  const std::string sql = absl::StrCat("SELECT count(*) FROM ", table);
  if (mysql_real_query(conn, sql.data(), sql.size()) != 0) {
    Die(absl::StrCat("MariaDB count(", table, "): ", mysql_error(conn)));
  }
  MYSQL_RES* res = mysql_store_result(conn);
  MYSQL_ROW row = res != nullptr ? mysql_fetch_row(res) : nullptr;
  if (row == nullptr || row[0] == nullptr) Die("MariaDB count(*): no row");
  const int64_t n = std::atoll(row[0]);
  mysql_free_result(res);
  return n;
}

// Connections MariaDB has seen (the Connections status counter), read on a
// connection kept for the purpose.
std::function<int64_t()> MyConnectionCounter(MyConn conn) {
  return [conn]() -> int64_t {
    const std::string sql = "SHOW GLOBAL STATUS LIKE 'Connections'";
    if (mysql_real_query(conn.get(), sql.data(), sql.size()) != 0) return -1;
    MYSQL_RES* res = mysql_store_result(conn.get());
    MYSQL_ROW row = res != nullptr ? mysql_fetch_row(res) : nullptr;
    const int64_t n =
        row != nullptr && row[1] != nullptr ? std::atoll(row[1]) : -1;
    if (res != nullptr) mysql_free_result(res);
    return n;
  };
}

// A prepared statement with its connection; closed before the connection.
struct MyStatement {
  MyConn conn;
  MYSQL_STMT* stmt = nullptr;

  MyStatement() = default;
  MyStatement(const MyStatement&) = delete;
  MyStatement& operator=(const MyStatement&) = delete;
  ~MyStatement() {
    if (stmt != nullptr) mysql_stmt_close(stmt);
  }
};

absl::StatusOr<std::shared_ptr<MyStatement>> PrepareMysql(MyConn conn,
                                                          const char* sql) {
  auto s = std::make_shared<MyStatement>();
  s->conn = std::move(conn);
  s->stmt = mysql_stmt_init(s->conn.get());
  if (s->stmt == nullptr) return absl::ResourceExhaustedError("stmt_init");
  if (mysql_stmt_prepare(s->stmt, sql, std::strlen(sql)) != 0) {
    return absl::InternalError(
        absl::StrCat("prepare ", sql, ": ", mysql_stmt_error(s->stmt)));
  }
  return s;
}

absl::Status MyStmtError(MYSQL_STMT* stmt, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", mysql_stmt_error(stmt)));
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
  // Set by calls that time requests themselves (a pipelined stream, where a
  // request's latency is not the time of the call that completed it): one
  // entry per call, replacing the call times once the run is over.
  std::vector<int64_t> request_latencies_ns;
};

// Calls `one` back to back for `seconds`, recording each call's time and
// the loop's wall time in `s`.
template <typename Call>
void TimeFor(double seconds, Call& one, Samples* s) {
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(seconds));
  Clock::time_point now = start;
  while (now < end) {
    one();
    const Clock::time_point after = Clock::now();
    s->latencies_ns.push_back((after - now).count());
    now = after;
  }
  s->elapsed_ns = (now - start).count();
}

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

// Resident set size of process `pid` in KiB (VmRSS), -1 when unknown.
int64_t ProcessRssKib(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::atoll(line.c_str() + std::strlen("VmRSS:"));
    }
  }
  return -1;
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
  // Backends the database saw opened during the timed run; -1: not counted.
  int64_t backends_opened = -1;
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
  // False: the scenario could not run; the notes say why.
  bool measured = true;
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

Row NotMeasured(std::string scenario, int clients, std::string why) {
  Row row;
  row.scenario = std::move(scenario);
  row.clients = clients;
  row.notes = "not measured: " + std::move(why);
  row.measured = false;
  return row;
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
    if (!r.measured) {
      std::printf("| %s | %d | - | - | - | %s |\n", r.scenario.c_str(),
                  r.clients, r.notes.c_str());
      continue;
    }
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

// Modes that talk to a database straight, without the daemon.
bool IsDirectMode(const std::string& mode) {
  return absl::StartsWith(mode, "libpq_") ||
         absl::StartsWith(mode, "bouncer_") ||
         absl::StartsWith(mode, "libmariadb_");
}

// Ids to look up: seeded by worker index, so each process looks up its own
// sequence, and the broker and the direct runs look up the same ones.
std::function<int64_t()> IdSource(int index) {
  auto rng = std::make_shared<std::mt19937_64>(index * 7919 + 1);
  return [rng]() {
    std::uniform_int_distribution<int64_t> ids(1, kItemRows);
    return ids(*rng);
  };
}

// Whether Connection's calls go over the daemon's Session streams: the
// client library that does has Connection::Begin (transactions), the one
// before it sent one Query RPC per call. Only a label for the rows.
template <typename C>
constexpr bool kHasBegin = requires(const C& c) {
  c.Begin();
};
constexpr bool kLibraryUsesSessions = kHasBegin<Connection>;

std::string LibraryLabel() {
  return kLibraryUsesSessions ? "library (Session stream)"
                              : "library (one-shot Query RPC)";
}

// The value of a one-row, one-column batch's only cell when it is an
// integer: an int64 column, or SQLite's mixed one.
std::optional<int64_t> OnlyInt(const v1::RowBatch& batch) {
  if (batch.row_count() != 1 || batch.columns_size() != 1) return std::nullopt;
  const v1::ColumnVector& column = batch.columns(0);
  if (column.nulls_size() > 0 && column.nulls(0)) return std::nullopt;
  if (column.has_int64s() && column.int64s().values_size() == 1) {
    return column.int64s().values(0);
  }
  if (column.has_mixed() && column.mixed().values_size() == 1 &&
      column.mixed().values(0).kind_case() == v1::Value::kInt64Value) {
    return column.mixed().values(0).int64_value();
  }
  return std::nullopt;
}

// The floor the client library is compared with: one Session stream opened
// with the generated stub (sync ClientReaderWriter) on a channel of its own,
// `SELECT 1` sent as a bare SessionRequest on the connection's handle and
// its answer read and checked, nothing else. `depth` requests are kept in
// flight (1: each request waits for the previous answer).
class BareSession {
 public:
  BareSession(const std::string& target, const std::string& handle, int depth)
      : depth_(depth) {
    channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    stub_ = v1::ConnectionBroker::NewStub(channel_);
    stream_ = stub_->Session(&context_);
    request_.mutable_query()->mutable_target()->set_handle(handle);
    request_.mutable_query()->set_sql("SELECT 1");
  }
  BareSession(const BareSession&) = delete;
  BareSession& operator=(const BareSession&) = delete;
  // Closes the stream the orderly way: the answers still in flight are read,
  // then the daemon ends the call.
  ~BareSession() {
    if (finished_) return;
    stream_->WritesDone();
    while (stream_->Read(&response_)) {
    }
    (void)stream_->Finish();
  }

  // One request answered: fills the pipeline on the first call, then reads
  // the oldest request's answer, checks it and sends the next request. Its
  // latency (written to answer read) goes to request_latencies_ns when more
  // than one is in flight; with one, the call's own time is that latency.
  absl::Status Call(Samples& s) {
    while (static_cast<int>(in_flight_.size()) < depth_) {
      if (absl::Status st = Send(); !st.ok()) return st;
    }
    const auto [id, sent] = in_flight_.front();
    in_flight_.pop_front();
    int64_t value = 0;
    bool got_value = false;
    for (;;) {
      if (!stream_->Read(&response_)) {
        finished_ = true;
        return absl::UnavailableError(absl::StrCat(
            "the Session stream ended: ", stream_->Finish().error_message()));
      }
      if (response_.id() != id) {
        return absl::InternalError(absl::StrCat(
            "an answer for request ", response_.id(), ", expected ", id));
      }
      if (response_.has_error()) {
        return absl::InternalError(
            absl::StrCat("SELECT 1 failed: ", response_.error().message()));
      }
      if (response_.has_batch() && response_.batch().row_count() > 0) {
        std::optional<int64_t> v = OnlyInt(response_.batch());
        if (!v || got_value) {
          return absl::InternalError("SELECT 1 did not return one integer");
        }
        value = *v;
        got_value = true;
      }
      if (response_.has_summary()) break;
    }
    if (depth_ > 1) {
      s.request_latencies_ns.push_back((Clock::now() - sent).count());
    }
    s.server_micros += response_.summary().elapsed_micros();
    if (!got_value || value != 1 || response_.summary().row_count() != 1 ||
        response_.summary().from_cache()) {
      return absl::InternalError("SELECT 1 did not return 1, uncached");
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Send() {
    request_.set_id(next_id_);
    if (!stream_->Write(request_)) {
      return absl::UnavailableError("the Session stream refused a write");
    }
    in_flight_.emplace_back(next_id_++, Clock::now());
    return absl::OkStatus();
  }

  const int depth_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConnectionBroker::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionResponse>>
      stream_;
  v1::SessionRequest request_;  // reused: only its id changes
  v1::SessionResponse response_;
  uint64_t next_id_ = 1;
  bool finished_ = false;  // Finish() was called
  std::deque<std::pair<uint64_t, Clock::time_point>> in_flight_;
};

Call MakeBrokerCall(const Flags& flags, Client& client,
                    const Connection& conn) {
  const std::string& mode = flags.worker_mode;
  if (mode == "bare_select1" || mode == "bare_pipelined") {
    auto bare = std::make_shared<BareSession>(
        flags.target, conn.handle(),
        mode == "bare_pipelined" ? kPipelineDepth : 1);
    return [bare](bool, Samples& s) { return bare->Call(s); };
  }
  if (mode == "cached_select1") {
    return [conn](bool warming_up, Samples& s) -> absl::Status {
      absl::StatusOr<Result> r =
          conn.Query("SELECT 1", {.ttl = absl::Seconds(600)});
      if (!r.ok()) return r.status();
      s.server_micros += r->elapsed_micros();
      if (r->num_rows() != 1 || r->num_columns() != 1 ||
          AsInt(r->cell(0, 0)) != 1) {
        return absl::InternalError("SELECT 1 did not return 1");
      }
      return Check(warming_up || r->from_cache(),
                   "a timed cached SELECT 1 missed the result cache");
    };
  }
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
  if (mode == "point" || mode == "pg_point" || mode == "my_point") {
    const std::string sql = mode == "point"      ? kPointSql
                            : mode == "pg_point" ? kPgPointSql
                                                 : kMyPointSql;
    return [conn, sql, next_id = IdSource(flags.index)](
               bool, Samples& s) -> absl::Status {
      const int64_t id = next_id();
      absl::StatusOr<Result> r = conn.Query(sql, {.params = {id}});
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

// libpq: SELECT 1 or the point lookup, with PQexecParams (an unnamed
// statement parsed on every call, parameters as text: what the broker's
// driver sends, PQsendQueryParams) or, for "libpq_prepared_point", with
// PQexecPrepared on a statement prepared once.
absl::StatusOr<Call> MakePgCall(const std::string& mode, int index) {
  const bool via_bouncer = absl::StartsWith(mode, "bouncer_");
  absl::StatusOr<PgConn> conn = ConnectPg(ServersFromEnv(), via_bouncer);
  if (!conn.ok()) return conn.status();
  if (absl::EndsWith(mode, "_select1")) {
    return [conn = *conn](bool, Samples&) -> absl::Status {
      PgResult r(PQexecParams(conn.get(), "SELECT 1", 0, nullptr, nullptr,
                              nullptr, nullptr, 0));
      if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
        return PgError(conn.get(), "SELECT 1");
      }
      return Check(PQntuples(r.get()) == 1 && PQnfields(r.get()) == 1 &&
                       std::strcmp(PQgetvalue(r.get(), 0, 0), "1") == 0,
                   "SELECT 1 did not return 1");
    };
  }
  const bool prepared = mode == "libpq_prepared_point";
  if (prepared) {
    PgResult r(PQprepare(conn->get(), "point", kPgPointSql, 1, nullptr));
    if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      return PgError(conn->get(), "PQprepare");
    }
  }
  return [conn = *conn, prepared, next_id = IdSource(index)](
             bool, Samples&) -> absl::Status {
    const int64_t id = next_id();
    const std::string text = absl::StrCat(id);
    const char* values[1] = {text.c_str()};
    PgResult r(prepared ? PQexecPrepared(conn.get(), "point", 1, values,
                                         nullptr, nullptr, 0)
                        : PQexecParams(conn.get(), kPgPointSql, 1, nullptr,
                                       values, nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      return PgError(conn.get(), "point lookup");
    }
    return Check(PQntuples(r.get()) == 1 && PQnfields(r.get()) == 3 &&
                     std::atoll(PQgetvalue(r.get(), 0, 0)) == id,
                 absl::StrCat("id ", id, ": no such row"));
  };
}

// libmariadb: the binary protocol on a statement prepared once, results
// bound once and read unbuffered -- what the broker's driver does.
absl::StatusOr<Call> MakeMysqlCall(const std::string& mode, int index) {
  absl::StatusOr<MyConn> conn = ConnectMysql(ServersFromEnv());
  if (!conn.ok()) return conn.status();
  const bool point = mode == "libmariadb_point";
  absl::StatusOr<std::shared_ptr<MyStatement>> prepared =
      PrepareMysql(*conn, point ? kMyPointSql : "SELECT 1");
  if (!prepared.ok()) return prepared.status();

  // Buffers the binds point at; they live as long as the call.
  struct Buffers {
    int64_t param = 0;
    int64_t id = 0;
    char name[64] = {};
    char amount[64] = {};
    unsigned long name_length = 0;
    unsigned long amount_length = 0;
    MYSQL_BIND params[1] = {};
    MYSQL_BIND results[3] = {};
  };
  auto b = std::make_shared<Buffers>();
  MYSQL_STMT* stmt = (*prepared)->stmt;
  b->results[0].buffer_type = MYSQL_TYPE_LONGLONG;
  b->results[0].buffer = &b->id;
  if (point) {
    b->params[0].buffer_type = MYSQL_TYPE_LONGLONG;
    b->params[0].buffer = &b->param;
    if (mysql_stmt_bind_param(stmt, b->params) != 0) {
      return MyStmtError(stmt, "bind_param");
    }
    b->results[1].buffer_type = MYSQL_TYPE_STRING;
    b->results[1].buffer = b->name;
    b->results[1].buffer_length = sizeof(b->name);
    b->results[1].length = &b->name_length;
    b->results[2].buffer_type = MYSQL_TYPE_STRING;
    b->results[2].buffer = b->amount;
    b->results[2].buffer_length = sizeof(b->amount);
    b->results[2].length = &b->amount_length;
  }
  if (mysql_stmt_bind_result(stmt, b->results) != 0) {
    return MyStmtError(stmt, "bind_result");
  }
  return [s = *prepared, b, point, next_id = IdSource(index)](
             bool, Samples&) -> absl::Status {
    const int64_t want = point ? next_id() : 1;
    b->param = want;
    b->id = 0;
    if (mysql_stmt_execute(s->stmt) != 0) {
      return MyStmtError(s->stmt, "execute");
    }
    int rows = 0;
    int rc;
    while ((rc = mysql_stmt_fetch(s->stmt)) == 0) ++rows;
    if (rc != MYSQL_NO_DATA) return MyStmtError(s->stmt, "fetch");
    return Check(rows == 1 && b->id == want,
                 absl::StrCat("expected one row with ", want, ", got ", rows,
                              " rows, first value ", b->id));
  };
}

absl::StatusOr<Call> MakeDirectCall(const Flags& flags) {
  const std::string& mode = flags.worker_mode;
  if (absl::StartsWith(mode, "libmariadb_")) {
    return MakeMysqlCall(mode, flags.index);
  }
  if (mode == "libpq_select1" || mode == "libpq_point" ||
      mode == "libpq_prepared_point" || mode == "bouncer_select1" ||
      mode == "bouncer_point") {
    return MakePgCall(mode, flags.index);
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
  // Kept for the whole run: the broker modes' calls use them.
  std::unique_ptr<Client> client;
  std::optional<Connection> conn;
  Call call;
  if (IsDirectMode(flags.worker_mode)) {
    absl::StatusOr<Call> direct = MakeDirectCall(flags);
    if (!direct.ok()) return fail(direct.status());
    call = *std::move(direct);
  } else {
    absl::StatusOr<std::unique_ptr<Client>> created =
        Client::Create({.target = flags.target});
    if (!created.ok()) return fail(created.status());
    client = *std::move(created);
    if (absl::Status st = client->WaitForReady(absl::Seconds(10)); !st.ok()) {
      return fail(st);
    }
    absl::StatusOr<Connection> joined =
        client->Connect({.name = flags.connection});
    if (!joined.ok()) return fail(joined.status());
    conn = *std::move(joined);
    call = MakeBrokerCall(flags, *client, *conn);
  }

  Samples samples;
  for (int i = 0; i < kWarmupCalls; ++i) {
    if (absl::Status st = call(true, samples); !st.ok()) return fail(st);
    ++samples.total_calls;
  }
  samples.server_micros = 0;
  samples.request_latencies_ns.clear();
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
  if (!samples.request_latencies_ns.empty()) {
    if (samples.request_latencies_ns.size() != samples.latencies_ns.size()) {
      return fail(absl::InternalError("calls and timed requests disagree"));
    }
    samples.latencies_ns.swap(samples.request_latencies_ns);
  }

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

// Starts `clients` worker processes for `mode` (on the daemon's connection
// `connection`, unless the mode goes straight to a database), releases them
// together once all have connected and warmed up, and merges what they
// measured. `connections_opened`, when given, reads the database's count of
// connections opened so far: read at "go" and at the end, it tells whether
// the broker kept its backends or opened new ones during the timed run.
Measurement RunWorkers(
    const Flags& flags, const std::string& scratch_dir, const std::string& mode,
    int clients, const std::string& connection,
    const std::function<int64_t()>& connections_opened = nullptr) {
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
                                     connection,
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
  // The daemon is idle now: every worker waits for "go". Direct modes do
  // not use it, so it is charged nothing.
  const bool direct = IsDirectMode(mode);
  const int64_t daemon_cpu_start =
      direct ? -1 : ProcessCpuNanos(flags.daemon_pid);
  const int64_t opened_start = connections_opened ? connections_opened() : -1;
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
  const int64_t daemon_cpu_end =
      direct ? -1 : ProcessCpuNanos(flags.daemon_pid);
  const int64_t opened_end = connections_opened ? connections_opened() : -1;
  Measurement m = Merge(all);
  if (opened_start >= 0 && opened_end >= 0) {
    m.backends_opened = opened_end - opened_start;
  }
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

// The PostgreSQL tables, made with libpq rather than through the daemon, so
// the direct rows can be measured even when the broker's driver cannot run.
// Refilled only when a count is off, so a second run on the same server
// starts at once.
void SetUpPostgres(const Servers& servers) {
  absl::StatusOr<PgConn> conn = ConnectPg(servers, /*via_bouncer=*/false);
  if (!conn.ok()) Die("PostgreSQL set-up: " + conn.status().ToString());
  PGconn* c = conn->get();
  PgExec(c,
         "CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, "
         "name text NOT NULL, amount numeric(12,2) NOT NULL)");
  PgExec(c,
         "CREATE TABLE IF NOT EXISTS stream (a bigint NOT NULL, "
         "b float8 NOT NULL, c text NOT NULL, d timestamp NOT NULL)");
  if (PgCount(c, "items") != kItemRows) {
    PgExec(c, "TRUNCATE items");
    PgExec(c, absl::StrCat("INSERT INTO items SELECT g, 'item-' || "
                           "lpad(g::text, 6, '0'), g * 0.25 "
                           "FROM generate_series(1, ",
                           kItemRows, ") g"));
  }
  if (PgCount(c, "stream") != kStreamRows) {
    PgExec(c, "TRUNCATE stream");
    PgExec(c,
           absl::StrCat("INSERT INTO stream SELECT g, g * 0.5, 'row-' || "
                        "lpad(g::text, 12, '0'), timestamp '2024-01-01' + g * "
                        "interval '1 second' FROM generate_series(1, ",
                        kStreamRows, ") g"));
  }
  // Sets the hint bits and the visibility map now, so no timed scan is the
  // first to read (and write back) the freshly loaded pages.
  PgExec(c, "VACUUM ANALYZE items");
  PgExec(c, "VACUUM ANALYZE stream");
}

// The same tables on MariaDB, from the SEQUENCE engine's seq_1_to_N (built
// into MariaDB; a recursive CTE of a million rows is much slower).
void SetUpMysql(const Servers& servers) {
  absl::StatusOr<MyConn> conn = ConnectMysql(servers);
  if (!conn.ok()) Die("MariaDB set-up: " + conn.status().ToString());
  MYSQL* c = conn->get();
  MyExec(c,
         "CREATE TABLE IF NOT EXISTS items (id BIGINT PRIMARY KEY, "
         "name VARCHAR(32) NOT NULL, amount DECIMAL(12,2) NOT NULL)");
  MyExec(c,
         "CREATE TABLE IF NOT EXISTS stream (a BIGINT NOT NULL, "
         "b DOUBLE NOT NULL, c VARCHAR(16) NOT NULL, d DATETIME NOT NULL)");
  if (MyCount(c, "items") != kItemRows) {
    MyExec(c, "TRUNCATE items");
    MyExec(c, absl::StrCat("INSERT INTO items SELECT seq, CONCAT('item-', "
                           "LPAD(seq, 6, '0')), seq * 0.25 FROM seq_1_to_",
                           kItemRows));
  }
  if (MyCount(c, "stream") != kStreamRows) {
    MyExec(c, "TRUNCATE stream");
    MyExec(c, absl::StrCat("INSERT INTO stream SELECT seq, seq * 0.5, "
                           "CONCAT('row-', LPAD(seq, 12, '0')), "
                           "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq "
                           "SECOND FROM seq_1_to_",
                           kStreamRows));
  }
  MyExec(c, "ANALYZE TABLE items, stream");
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
  TimeFor(flags.seconds, one, &s);
  std::vector<Samples> all = {std::move(s)};
  return Merge(all);
}

// Runs `one` (which returns the rows it read) at least twice and until
// `seconds` have passed; each run is one sample. Charges this process's CPU
// (client_cpu_us) and the daemon's, when `daemon_pid` is given, per run.
Measurement RepeatStream(const Flags& flags, int64_t want_rows,
                         const std::function<int64_t()>& one,
                         int daemon_pid = 0) {
  Samples s;
  const int64_t self_cpu_start = SelfCpuNanos();
  const int64_t daemon_cpu_start = ProcessCpuNanos(daemon_pid);
  const Clock::time_point start = Clock::now();
  Clock::time_point now = start;
  while (s.latencies_ns.size() < 2 ||
         (now - start) < std::chrono::duration<double>(flags.seconds)) {
    if (int64_t rows = one(); rows != want_rows) {
      Die(absl::StrCat("the stream returned ", rows, " rows, not ", want_rows));
    }
    const Clock::time_point after = Clock::now();
    s.latencies_ns.push_back((after - now).count());
    now = after;
  }
  s.elapsed_ns = (now - start).count();
  s.cpu_ns = SelfCpuNanos() - self_cpu_start;
  const int64_t daemon_cpu_end = ProcessCpuNanos(daemon_pid);
  std::vector<Samples> all = {std::move(s)};
  Measurement m = Merge(all);
  if (daemon_cpu_start >= 0 && daemon_cpu_end >= 0) {
    m.daemon_cpu_us = static_cast<double>(daemon_cpu_end - daemon_cpu_start) /
                      1e3 / static_cast<double>(m.ops);
  }
  return m;
}

// The same 1M-row query stepped in this process, every column read.
Measurement DirectStream(const Flags& flags) {
  SQLite::Database db(flags.db, SQLite::OPEN_READONLY);
  return RepeatStream(flags, kStreamRows, [&]() -> int64_t {
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
  Measurement m = RepeatStream(
      flags, kStreamRows,
      [&]() -> int64_t {
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
                  return absl::InternalError(
                      "the stream's ids are out of order");
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
      },
      flags.daemon_pid);
  *server_micros /= std::max(runs, 1);
  return m;
}

// Sum of 1..n: the stream check for servers that need not return rows in
// insertion order (a PostgreSQL sequential scan may start mid-table when
// another one is running).
constexpr int64_t SumTo(int64_t n) { return n * (n + 1) / 2; }

// The SQL of a `stream` read of `columns` (3: a, b, c; 4: a, b, c, d).
const char* NetStreamSql(int columns) {
  return columns == 3 ? kNetStream3Sql : kNetStreamSql;
}

// Payload bytes of one such row.
int64_t NetStreamRowBytes(int columns) {
  return columns == 3 ? kStreamRowBytes : kNetStreamRowBytes;
}

// A PostgreSQL or MariaDB stream (`sql`, a, b, c[, d] as in `stream`)
// through the daemon. Checks the row count, the sum of the ids, and the text
// columns' widths on the first row of every batch.
int64_t BrokerNetStreamOnce(const Connection& conn, const std::string& sql,
                            int64_t want_rows, int64_t* server_micros,
                            int columns = 4) {
  int64_t rows = 0, id_sum = 0;
  absl::StatusOr<QuerySummary> summary = conn.QueryBatches(
      sql, {.deadline = absl::Minutes(10)},
      [&](const Result& batch) -> absl::Status {
        if (batch.num_rows() == 0) return absl::OkStatus();
        if (batch.num_columns() != static_cast<size_t>(columns)) {
          return absl::InternalError(
              absl::StrCat("the stream has not ", columns, " columns"));
        }
        const Value c = batch.cell(0, 2);
        const Value d = columns == 4 ? batch.cell(0, 3) : Value();
        const std::string* cs = std::get_if<std::string>(&c);
        const std::string* ds = std::get_if<std::string>(&d);
        if (cs == nullptr || cs->size() != 16 ||
            (columns == 4 && (ds == nullptr || ds->size() != 19))) {
          return absl::InternalError(
              "the stream's text is not 16 bytes or its timestamp not the "
              "19-character text");
        }
        for (size_t r = 0; r < batch.num_rows(); ++r) {
          std::optional<int64_t> id = AsInt(batch.cell(r, 0));
          if (!id) return absl::InternalError("the stream's id is no int");
          id_sum += *id;
        }
        rows += static_cast<int64_t>(batch.num_rows());
        return absl::OkStatus();
      });
  if (!summary.ok()) Die("stream: " + summary.status().ToString());
  if (summary->row_count != rows || summary->from_cache ||
      id_sum != SumTo(want_rows)) {
    Die(absl::StrCat("stream: ", rows, " rows (summary ", summary->row_count,
                     "), id sum ", id_sum, ", want ", SumTo(want_rows)));
  }
  *server_micros += summary->elapsed_micros;
  return rows;
}

Measurement BrokerNetStream(const Flags& flags, const Connection& conn,
                            int columns, int64_t* server_micros) {
  *server_micros = 0;
  int runs = 0;
  Measurement m = RepeatStream(
      flags, kStreamRows,
      [&]() -> int64_t {
        ++runs;
        return BrokerNetStreamOnce(conn, NetStreamSql(columns), kStreamRows,
                                   server_micros, columns);
      },
      flags.daemon_pid);
  *server_micros /= std::max(runs, 1);
  return m;
}

// What an application does with a row of `stream` it reads as text: the
// numbers parsed, the texts' lengths taken. `id_sum` checks the ids.
// `d_len` is 0 for a 3-column read.
struct RowCheck {
  int columns = 4;
  int64_t rows = 0, id_sum = 0, text_bytes = 0;
  double b_sum = 0;

  void Add(const char* a, const char* b, int64_t c_len, int64_t d_len) {
    ++rows;
    id_sum += std::strtoll(a, nullptr, 10);
    b_sum += std::strtod(b, nullptr);
    text_bytes += c_len + d_len;
  }
  int64_t Verify(const char* who) const {
    const int64_t width = columns == 4 ? 16 + 19 : 16;
    if (id_sum != SumTo(rows) || text_bytes != rows * width || b_sum <= 0) {
      Die(absl::StrCat(who, ": wrong ids, values or text widths"));
    }
    return rows;
  }
};

// libpq straight, in single-row mode: the streaming a careful libpq
// application does for a big result, and what the broker's driver does.
Measurement LibpqSingleRowStream(const Flags& flags, PGconn* conn,
                                 int columns) {
  return RepeatStream(flags, kStreamRows, [&]() -> int64_t {
    if (PQsendQueryParams(conn, NetStreamSql(columns), 0, nullptr, nullptr,
                          nullptr, nullptr, 0) == 0 ||
        PQsetSingleRowMode(conn) == 0) {
      Die(absl::StrCat("libpq stream: ", PQerrorMessage(conn)));
    }
    RowCheck check{columns};
    while (PGresult* raw = PQgetResult(conn)) {
      PgResult r(raw);
      const ExecStatusType status = PQresultStatus(r.get());
      if (status == PGRES_SINGLE_TUPLE) {
        check.Add(PQgetvalue(r.get(), 0, 0), PQgetvalue(r.get(), 0, 1),
                  PQgetlength(r.get(), 0, 2),
                  columns == 4 ? PQgetlength(r.get(), 0, 3) : 0);
      } else if (status != PGRES_TUPLES_OK) {
        Die(absl::StrCat("libpq stream: ", PQerrorMessage(conn)));
      }
    }
    return check.Verify("libpq stream");
  });
}

// libpq straight, the whole result in one PGresult: what most applications
// do (PQexec, psycopg2's default cursor), memory growing with the result.
Measurement LibpqWholeResult(const Flags& flags, PGconn* conn, int columns) {
  return RepeatStream(flags, kStreamRows, [&]() -> int64_t {
    PgResult r(PQexecParams(conn, NetStreamSql(columns), 0, nullptr, nullptr,
                            nullptr, nullptr, 0));
    if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
      Die(absl::StrCat("libpq whole result: ", PQerrorMessage(conn)));
    }
    RowCheck check{columns};
    const int n = PQntuples(r.get());
    for (int i = 0; i < n; ++i) {
      check.Add(PQgetvalue(r.get(), i, 0), PQgetvalue(r.get(), i, 1),
                PQgetlength(r.get(), i, 2),
                columns == 4 ? PQgetlength(r.get(), i, 3) : 0);
    }
    return check.Verify("libpq whole result");
  });
}

// libmariadb straight, text protocol, rows read off the socket as they come
// (mysql_use_result; pymysql's SSCursor).
Measurement MysqlUseResultStream(const Flags& flags, MYSQL* conn, int columns) {
  const char* sql = NetStreamSql(columns);
  return RepeatStream(flags, kStreamRows, [&]() -> int64_t {
    if (mysql_real_query(conn, sql, std::strlen(sql))) {
      Die(absl::StrCat("mysql_use_result stream: ", mysql_error(conn)));
    }
    MYSQL_RES* res = mysql_use_result(conn);
    if (res == nullptr) Die("mysql_use_result: no result");
    RowCheck check{columns};
    while (MYSQL_ROW row = mysql_fetch_row(res)) {
      const unsigned long* lengths = mysql_fetch_lengths(res);
      check.Add(row[0], row[1], static_cast<int64_t>(lengths[2]),
                columns == 4 ? static_cast<int64_t>(lengths[3]) : 0);
    }
    if (mysql_errno(conn) != 0) {
      Die(absl::StrCat("mysql_use_result stream: ", mysql_error(conn)));
    }
    mysql_free_result(res);
    return check.Verify("mysql_use_result stream");
  });
}

// libmariadb straight, binary protocol, a prepared statement read unbuffered
// (no mysql_stmt_store_result): what the broker's driver does.
Measurement MysqlStatementStream(const Flags& flags, const MyConn& conn,
                                 int columns) {
  absl::StatusOr<std::shared_ptr<MyStatement>> s =
      PrepareMysql(conn, NetStreamSql(columns));
  if (!s.ok()) Die(s.status().ToString());
  MYSQL_STMT* stmt = (*s)->stmt;
  int64_t a = 0;
  double b = 0;
  char c[32];
  unsigned long c_length = 0;
  MYSQL_TIME d = {};
  MYSQL_BIND results[4] = {};
  results[0].buffer_type = MYSQL_TYPE_LONGLONG;
  results[0].buffer = &a;
  results[1].buffer_type = MYSQL_TYPE_DOUBLE;
  results[1].buffer = &b;
  results[2].buffer_type = MYSQL_TYPE_STRING;
  results[2].buffer = c;
  results[2].buffer_length = sizeof(c);
  results[2].length = &c_length;
  results[3].buffer_type = MYSQL_TYPE_DATETIME;
  results[3].buffer = &d;
  if (mysql_stmt_bind_result(stmt, results) != 0) {
    Die(MyStmtError(stmt, "bind_result").ToString());
  }
  return RepeatStream(flags, kStreamRows, [&]() -> int64_t {
    if (mysql_stmt_execute(stmt) != 0) {
      Die(MyStmtError(stmt, "stream execute").ToString());
    }
    int64_t rows = 0, id_sum = 0, text_bytes = 0;
    double b_sum = 0;
    int rc;
    while ((rc = mysql_stmt_fetch(stmt)) == 0) {
      ++rows;
      id_sum += a;
      b_sum += b;
      text_bytes += static_cast<int64_t>(c_length);
      if (columns == 4 && d.year != 2024) {
        Die("mysql_stmt stream: wrong timestamp");
      }
    }
    if (rc != MYSQL_NO_DATA) Die(MyStmtError(stmt, "stream fetch").ToString());
    if (id_sum != SumTo(rows) || text_bytes != rows * 16 || b_sum <= 0) {
      Die("mysql_stmt stream: wrong ids, values or text widths");
    }
    return rows;
  });
}

std::string StreamNotes(const Measurement& m,
                        int64_t row_bytes = kStreamRowBytes) {
  const double seconds_per_query = 1.0 / m.ops_per_second;
  const double rows_per_second =
      static_cast<double>(kStreamRows) / seconds_per_query;
  return absl::StrFormat("%.2fM rows/s, %.0f MB/s payload (%d B/row), %d runs",
                         rows_per_second / 1e6,
                         rows_per_second * row_bytes / 1e6, row_bytes, m.ops);
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
  std::string note =
      absl::StrFormat("server-side %.0f us; %s", m.server_mean_us, CpuNote(m));
  if (m.backends_opened >= 0) {
    absl::StrAppend(&note,
                    "; backends opened in the timed run: ", m.backends_opened);
  }
  return note;
}

// "0.62x libpq": the broker's rate over an alternative's.
std::string Ratio(const Measurement& broker, const Measurement& other,
                  const std::string& name) {
  return absl::StrFormat("%.2fx %s",
                         broker.ops_per_second / other.ops_per_second, name);
}

std::string StreamCpuNote(const Measurement& m) {
  if (m.daemon_cpu_us < 0) {
    return absl::StrFormat("CPU/query: client %.2f s", m.client_cpu_us / 1e6);
  }
  return absl::StrFormat("CPU/query: daemon %.2f s, client %.2f s",
                         m.daemon_cpu_us / 1e6, m.client_cpu_us / 1e6);
}

// A connection of the daemon, or why it could not be had.
absl::StatusOr<Connection> Join(const Client& client, const std::string& name) {
  absl::StatusOr<Connection> conn = client.Connect({.name = name});
  if (!conn.ok()) return conn.status();
  // A driver that cannot run fails here rather than in every worker.
  absl::StatusOr<Result> r = conn->Query("SELECT 1");
  if (!r.ok()) return r.status();
  if (r->num_rows() != 1 || AsInt(r->cell(0, 0)) != 1) {
    return absl::InternalError("SELECT 1 did not return 1");
  }
  return conn;
}

// Keeps a status short enough for a table cell.
std::string Short(const absl::Status& status) {
  std::string s = status.ToString();
  if (s.size() > 160) s = s.substr(0, 157) + "...";
  for (char& ch : s) {
    if (ch == '|' || ch == '\n') ch = ' ';
  }
  return s;
}

// ---------------------------------------------------------------------------
// Scenario groups

struct Context {
  const Flags& flags;
  const Servers& servers;
  const Client& client;
  std::string scratch;
  std::vector<Row>& rows;

  Measurement Workers(
      const std::string& mode, int clients, const std::string& connection,
      const std::function<int64_t()>& connections_opened = nullptr) const {
    Progress(absl::StrCat(mode, " on ", connection, " x", clients));
    return RunWorkers(flags, scratch, mode, clients, connection,
                      connections_opened);
  }
  Measurement Direct(const std::string& mode, int clients) const {
    Progress(absl::StrCat(mode, " x", clients));
    return RunWorkers(flags, scratch, mode, clients, "");
  }
};

// Row 6: the SQLite stream through the daemon against stepping it
// in-process. Part of the sqlite group, and of the stream group run alone.
void SqliteStreamRows(const Context& ctx, const Connection& conn) {
  const Flags& flags = ctx.flags;
  Progress("stream through the daemon");
  int64_t server_micros = 0;
  Measurement bs = BrokerStream(flags, conn, &server_micros);
  Progress("stream in-process");
  Measurement ds = DirectStream(flags);
  ctx.rows.push_back(MakeRow(
      "6. broker stream 1M rows x 3 cols (QueryBatches)", bs,
      absl::StrFormat(
          "%s; %.0f%% of direct; server-side %.2f s, %s", StreamNotes(bs),
          100 * bs.ops_per_second / ds.ops_per_second,
          static_cast<double>(server_micros) / 1e6, StreamCpuNote(bs))));
  ctx.rows.push_back(MakeRow("6. direct SQLite, same 1M-row query", ds,
                             StreamNotes(ds) + "; in-process"));
}

void SqliteRows(const Context& ctx, const Connection& conn) {
  const Flags& flags = ctx.flags;
  const int n = flags.many_clients;
  std::vector<Row>& rows = ctx.rows;
  const std::string& bench = flags.connection;

  Progress("direct SELECT 1");
  Measurement direct = DirectSelectOne(flags);
  rows.push_back(MakeRow("1. direct SQLite `SELECT 1` (floor)", direct,
                         "in-process prepared statement, no daemon"));

  Measurement s1 = ctx.Workers("select1", 1, bench);
  Measurement sn = ctx.Workers("select1", n, bench);
  rows.push_back(MakeRow("2. broker `SELECT 1`, uncached", s1, ServerNote(s1)));
  rows.push_back(MakeRow("2. broker `SELECT 1`, uncached", sn,
                         absl::StrCat(ServerNote(sn), "; ", Scaling(sn, s1))));

  Measurement p1 = ctx.Workers("point", 1, bench);
  Measurement pn = ctx.Workers("point", n, bench);
  rows.push_back(MakeRow("3. broker point lookup, uncached", p1,
                         absl::StrCat(ServerNote(p1), "; random id of 100k")));
  rows.push_back(MakeRow("3. broker point lookup, uncached", pn,
                         absl::StrCat(ServerNote(pn), "; ", Scaling(pn, p1))));

  Measurement c1 = ctx.Workers("cached", 1, bench);
  Measurement cn = ctx.Workers("cached", n, bench);
  rows.push_back(MakeRow("4. broker point lookup, cached (ttl 600 s)", c1,
                         absl::StrCat(ServerNote(c1), "; every call a hit")));
  rows.push_back(MakeRow("4. broker point lookup, cached (ttl 600 s)", cn,
                         absl::StrCat(ServerNote(cn), "; ", Scaling(cn, c1))));

  Measurement k1 = ctx.Workers("connect", 1, bench);
  rows.push_back(MakeRow("5. Connect (join existing)", k1,
                         absl::StrCat(CpuNote(k1), "; joined, same handle")));

  SqliteStreamRows(ctx, conn);

  absl::StatusOr<int64_t> before = CountRows(conn, "log");
  if (!before.ok()) Die("count log: " + before.status().ToString());
  Measurement w1 = ctx.Workers("insert", 1, bench);
  Measurement wn = ctx.Workers("insert", n, bench);
  absl::StatusOr<int64_t> after = CountRows(conn, "log");
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
}

// PostgreSQL small calls: the broker on a kept handle against libpq on a
// kept connection, straight and through PgBouncer, 1 and N processes each.
void PostgresRows(const Context& ctx, const absl::StatusOr<Connection>& pg) {
  const int n = ctx.flags.many_clients;
  absl::StatusOr<PgConn> stats = ConnectPg(ctx.servers, /*via_bouncer=*/false);
  if (!stats.ok()) Die(stats.status().ToString());
  const std::function<int64_t()> sessions = PgSessionCounter(*stats);
  for (const bool point : {false, true}) {
    const std::string title =
        point ? "PostgreSQL point lookup" : "PostgreSQL `SELECT 1`";
    const std::string number = point ? "9. " : "8. ";
    for (const int clients : {1, n}) {
      std::optional<Measurement> broker;
      if (pg.ok()) {
        broker = ctx.Workers(point ? "pg_point" : "select1", clients,
                             kPgConnection, sessions);
      }
      const Measurement libpq =
          ctx.Direct(point ? "libpq_point" : "libpq_select1", clients);
      std::optional<Measurement> prepared;
      if (point) prepared = ctx.Direct("libpq_prepared_point", clients);
      std::optional<Measurement> bouncer;
      if (ctx.servers.has_bouncer()) {
        bouncer =
            ctx.Direct(point ? "bouncer_point" : "bouncer_select1", clients);
      }
      if (broker) {
        std::string notes = absl::StrCat(
            Ratio(*broker, libpq, "libpq"),
            bouncer ? ", " + Ratio(*broker, *bouncer, "PgBouncer") : "",
            prepared ? ", " + Ratio(*broker, *prepared, "libpq prepared") : "",
            "; ", ServerNote(*broker));
        ctx.rows.push_back(
            MakeRow(number + "broker " + title, *broker, std::move(notes)));
      } else {
        ctx.rows.push_back(NotMeasured(number + "broker " + title, clients,
                                       Short(pg.status())));
      }
      ctx.rows.push_back(MakeRow(
          number + "libpq straight, " + title, libpq,
          absl::StrFormat("PQexecParams, kept connection; client CPU/call "
                          "%.0f us",
                          libpq.client_cpu_us)));
      if (prepared) {
        ctx.rows.push_back(MakeRow(
            number + "libpq straight, prepared, " + title, *prepared,
            absl::StrFormat("PQprepare once, PQexecPrepared; client CPU/call "
                            "%.0f us",
                            prepared->client_cpu_us)));
      }
      if (bouncer) {
        ctx.rows.push_back(MakeRow(
            number + "PgBouncer (transaction pooling), " + title, *bouncer,
            absl::StrFormat("libpq PQexecParams, kept connection; client "
                            "CPU/call %.0f us",
                            bouncer->client_cpu_us)));
      }
      // What the default pool does with more concurrent callers than its
      // pool_size: backends beyond it are closed as they come back while
      // pool_size others are idle, and opened again on the next burst.
      if (!point && clients == n && clients > 5) {
        const std::string scenario =
            number + "broker " + title + ", default pool (5 + 10 overflow)";
        absl::StatusOr<Connection> dflt =
            pg.ok() ? Join(ctx.client, kPgDefaultConnection) : pg;
        if (dflt.ok() && broker) {
          const Measurement d =
              ctx.Workers("select1", clients, kPgDefaultConnection, sessions);
          ctx.rows.push_back(MakeRow(
              scenario, d,
              absl::StrCat(Ratio(d, *broker, "the pool of 10"), ", ",
                           Ratio(d, libpq, "libpq"), "; ", ServerNote(d))));
        } else {
          ctx.rows.push_back(
              NotMeasured(scenario, clients, Short(dflt.status())));
        }
      }
    }
  }
}

// MariaDB small calls: the broker against libmariadb's prepared statements.
void MariaRows(const Context& ctx, const absl::StatusOr<Connection>& maria) {
  const int n = ctx.flags.many_clients;
  absl::StatusOr<MyConn> stats = ConnectMysql(ctx.servers);
  if (!stats.ok()) Die(stats.status().ToString());
  const std::function<int64_t()> connections = MyConnectionCounter(*stats);
  for (const bool point : {false, true}) {
    const std::string title =
        point ? "MariaDB point lookup" : "MariaDB `SELECT 1`";
    const std::string number = point ? "11. " : "10. ";
    for (const int clients : {1, n}) {
      std::optional<Measurement> broker;
      if (maria.ok()) {
        broker = ctx.Workers(point ? "my_point" : "select1", clients,
                             kMariaConnection, connections);
      }
      const Measurement direct = ctx.Direct(
          point ? "libmariadb_point" : "libmariadb_select1", clients);
      if (broker) {
        ctx.rows.push_back(
            MakeRow(number + "broker " + title, *broker,
                    absl::StrCat(Ratio(*broker, direct, "libmariadb"), "; ",
                                 ServerNote(*broker))));
      } else {
        ctx.rows.push_back(NotMeasured(number + "broker " + title, clients,
                                       Short(maria.status())));
      }
      ctx.rows.push_back(MakeRow(
          number + "libmariadb straight, " + title, direct,
          absl::StrFormat("mysql_stmt_execute on a statement prepared once; "
                          "client CPU/call %.0f us",
                          direct.client_cpu_us)));
    }
  }
}

// 1M rows through the broker against reading them straight: 4 columns
// (with the timestamp) and 3 (the SQLite stream's shape).
void NetStreamRows(const Context& ctx, const absl::StatusOr<Connection>& pg,
                   const absl::StatusOr<Connection>& maria) {
  const Flags& flags = ctx.flags;
  auto broker_row =
      [&](const std::string& scenario, const absl::StatusOr<Connection>& conn,
          int columns,
          const std::vector<std::pair<std::string, Measurement>>& others) {
        if (!conn.ok()) {
          ctx.rows.push_back(NotMeasured(scenario, 1, Short(conn.status())));
          return;
        }
        Progress(scenario);
        int64_t server_micros = 0;
        Measurement m = BrokerNetStream(flags, *conn, columns, &server_micros);
        std::string ratios;
        for (const auto& [name, other] : others) {
          absl::StrAppend(&ratios, ratios.empty() ? "" : ", ",
                          Ratio(m, other, name));
        }
        ctx.rows.push_back(
            MakeRow(scenario, m,
                    absl::StrFormat("%s; %s; server-side %.2f s, %s", ratios,
                                    StreamNotes(m, NetStreamRowBytes(columns)),
                                    static_cast<double>(server_micros) / 1e6,
                                    StreamCpuNote(m))));
      };
  auto direct_row = [&](const std::string& scenario, const Measurement& m,
                        int columns, const std::string& how) {
    ctx.rows.push_back(
        MakeRow(scenario, m,
                absl::StrCat(StreamNotes(m, NetStreamRowBytes(columns)), "; ",
                             how, "; ", StreamCpuNote(m))));
  };

  if (ctx.servers.has_pg()) {
    absl::StatusOr<PgConn> conn = ConnectPg(ctx.servers, /*via_bouncer=*/false);
    if (!conn.ok()) Die(conn.status().ToString());
    for (int columns : {4, 3}) {
      const std::string shape = absl::StrCat(columns, " cols");
      Progress(absl::StrCat("PostgreSQL stream, ", shape,
                            ": libpq single-row mode"));
      Measurement single = LibpqSingleRowStream(flags, conn->get(), columns);
      Progress(
          absl::StrCat("PostgreSQL stream, ", shape, ": libpq whole result"));
      Measurement whole = LibpqWholeResult(flags, conn->get(), columns);
      broker_row(absl::StrCat("12. broker PostgreSQL stream 1M rows x ", shape),
                 pg, columns,
                 {{"libpq single-row", single}, {"libpq whole result", whole}});
      direct_row(absl::StrCat("12. libpq straight, single-row mode, ", shape),
                 single, columns,
                 "PQsetSingleRowMode, values parsed from text");
      direct_row(
          absl::StrCat("12. libpq straight, whole result (PQexecParams), ",
                       shape),
          whole, columns, "all rows in one PGresult, values parsed from text");
    }
  }
  if (ctx.servers.has_mysql()) {
    absl::StatusOr<MyConn> conn = ConnectMysql(ctx.servers);
    if (!conn.ok()) Die(conn.status().ToString());
    for (int columns : {4, 3}) {
      const std::string shape = absl::StrCat(columns, " cols");
      Progress(absl::StrCat("MariaDB stream, ", shape, ": mysql_use_result"));
      Measurement text = MysqlUseResultStream(flags, conn->get(), columns);
      Progress(absl::StrCat("MariaDB stream, ", shape,
                            ": prepared statement, unbuffered"));
      Measurement binary = MysqlStatementStream(flags, *conn, columns);
      broker_row(absl::StrCat("13. broker MariaDB stream 1M rows x ", shape),
                 maria, columns,
                 {{"mysql_use_result", text}, {"mysql_stmt", binary}});
      direct_row(
          absl::StrCat("13. libmariadb straight, mysql_use_result, ", shape),
          text, columns, "text protocol, values parsed");
      direct_row(absl::StrCat(
                     "13. libmariadb straight, mysql_stmt unbuffered, ", shape),
                 binary, columns, "binary protocol, prepared, no store_result");
    }
  }
}

// Streams 5M rows from PostgreSQL through the daemon while sampling the
// daemon's VmRSS every 100 ms: a stream must not collect its result.
void RssRow(const Context& ctx, const absl::StatusOr<Connection>& pg) {
  const std::string scenario =
      "14. daemon RSS while streaming 5M rows from PostgreSQL";
  if (!pg.ok()) {
    ctx.rows.push_back(NotMeasured(scenario, 1, Short(pg.status())));
    return;
  }
  if (ctx.flags.daemon_pid <= 0) {
    ctx.rows.push_back(NotMeasured(scenario, 1, "no --daemon-pid"));
    return;
  }
  Progress(scenario);
  const int pid = ctx.flags.daemon_pid;
  const int64_t baseline = ProcessRssKib(pid);
  std::atomic<bool> done{false};
  std::vector<int64_t> samples;
  std::thread sampler([&] {
    while (!done.load()) {
      samples.push_back(ProcessRssKib(pid));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  int64_t server_micros = 0;
  const Clock::time_point start = Clock::now();
  BrokerNetStreamOnce(*pg, kPgRssStreamSql, kRssStreamRows, &server_micros);
  const int64_t elapsed_ns = (Clock::now() - start).count();
  done = true;
  sampler.join();
  const int64_t right_after = ProcessRssKib(pid);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int64_t later = ProcessRssKib(pid);
  const int64_t peak = *std::max_element(samples.begin(), samples.end());

  std::vector<Samples> all(1);
  all[0].latencies_ns = {elapsed_ns};
  all[0].elapsed_ns = elapsed_ns;
  Measurement m = Merge(all);
  auto mib = [](int64_t kib) { return static_cast<double>(kib) / 1024; };
  ctx.rows.push_back(MakeRow(
      scenario, m,
      absl::StrFormat(
          "VmRSS peak - baseline **%+.1f MiB** (baseline %.1f, "
          "peak %.1f, right after %.1f, 1 s later %.1f MiB; %d "
          "samples); %.2fM rows/s, ~%.0f MB of payload",
          mib(peak - baseline), mib(baseline), mib(peak), mib(right_after),
          mib(later), static_cast<int>(samples.size()),
          static_cast<double>(kRssStreamRows) /
              (static_cast<double>(elapsed_ns) / 1e9) / 1e6,
          static_cast<double>(kRssStreamRows * kNetStreamRowBytes) / 1e6)));
}

// One connection with a single backend kept busy by 64 slow callers while
// another connection's SELECT 1 and a result-cache hit are timed: one busy
// database must not stall the others.
void NeighbourRows(const Context& ctx) {
  const std::string& bench = ctx.flags.connection;
  absl::StatusOr<Connection> small = Join(ctx.client, kPgSmallConnection);
  if (!small.ok()) {
    ctx.rows.push_back(
        NotMeasured("15. busy neighbour", 1, Short(small.status())));
    return;
  }
  Measurement idle_select = ctx.Workers("select1", 1, bench);
  Measurement idle_cached = ctx.Workers("cached", 1, bench);

  Progress(absl::StrCat("neighbour: ", kNeighbourCallers, " callers of `",
                        kNeighbourSql, "` on ", kPgSmallConnection));
  std::atomic<bool> stop{false};
  std::atomic<int64_t> completed{0};
  std::mutex error_mu;
  std::string error;
  std::vector<std::thread> callers;
  for (int i = 0; i < kNeighbourCallers; ++i) {
    callers.emplace_back([&] {
      while (!stop.load()) {
        // The queue is 63 calls of 50 ms deep: ~3.2 s of waiting each.
        absl::StatusOr<Result> r =
            small->Query(kNeighbourSql, {.deadline = absl::Minutes(2)});
        if (!r.ok() || r->num_rows() != 1 || r->backend_executions() != 1) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (error.empty()) {
            error = r.ok() ? "pg_sleep did not return one row"
                           : r.status().ToString();
          }
          return;
        }
        ++completed;
      }
    });
  }
  // Long enough for every caller to be queued behind the single backend.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const int64_t done_before = completed.load();
  const Clock::time_point busy_start = Clock::now();
  Measurement busy_select = ctx.Workers("select1", 1, bench);
  Measurement busy_cached = ctx.Workers("cached", 1, bench);
  const double busy_seconds =
      std::chrono::duration<double>(Clock::now() - busy_start).count();
  const int64_t done_during = completed.load() - done_before;
  stop = true;
  Progress("neighbour: waiting for the queued callers to finish");
  for (std::thread& t : callers) t.join();
  if (!error.empty()) Die("neighbour: " + error);

  const double neighbour_rate = static_cast<double>(done_during) / busy_seconds;
  const std::string load = absl::StrFormat(
      "%s busy: %d callers, %.1f calls/s done (1 backend x 50 ms: at most 20)",
      kPgSmallConnection, kNeighbourCallers, neighbour_rate);
  auto ratio_note = [&](const Measurement& busy, const Measurement& idle) {
    return absl::StrFormat("busy/idle: p50 %.2fx, p99 %.2fx, ops/s %.2fx; %s",
                           busy.p50_us / idle.p50_us, busy.p99_us / idle.p99_us,
                           busy.ops_per_second / idle.ops_per_second, load);
  };
  ctx.rows.push_back(MakeRow("15. sqlite `SELECT 1`, neighbour idle",
                             idle_select, ServerNote(idle_select)));
  ctx.rows.push_back(MakeRow("15. sqlite `SELECT 1`, neighbour busy",
                             busy_select,
                             ratio_note(busy_select, idle_select)));
  ctx.rows.push_back(MakeRow("15. cache hit, neighbour idle", idle_cached,
                             ServerNote(idle_cached)));
  ctx.rows.push_back(MakeRow("15. cache hit, neighbour busy", busy_cached,
                             ratio_note(busy_cached, idle_cached)));
}

// CPU time (user + system) of this process's waited-for children so far.
int64_t ChildrenCpuNanos() {
  struct rusage u;
  ::getrusage(RUSAGE_CHILDREN, &u);
  auto ns = [](const timeval& t) {
    return int64_t{t.tv_sec} * 1'000'000'000 + int64_t{t.tv_usec} * 1000;
  };
  return ns(u.ru_utime) + ns(u.ru_stime);
}

// This process's environment with `extra` ("NAME=value") set on top.
std::vector<std::string> EnvironmentWith(
    const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('=') + 1);
    if (std::none_of(extra.begin(), extra.end(), [&](const std::string& x) {
          return absl::StartsWith(x, name);
        })) {
      env.push_back(entry);
    }
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

// Runs `args` once as a child process, its standard input /dev/null, and
// returns what it wrote on standard output; dies unless it exits with 0.
std::string RunProcessOnce(const std::vector<std::string>& args,
                           const std::vector<std::string>& env) {
  std::vector<char*> argv, envp;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) Die("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  pid_t pid = -1;
  const int error =
      ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (error != 0) {
    Die(absl::StrCat("posix_spawn ", args[0], ": ", std::strerror(error)));
  }
  std::string output;
  char buffer[4096];
  for (ssize_t n; (n = ::read(out[0], buffer, sizeof(buffer))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Die("reading a child's output failed");
    output.append(buffer, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Die(absl::StrCat(absl::StrJoin(args, " "), " failed (status ", status,
                     "); its error is above"));
  }
  return output;
}

// Whole processes, one per request, one after another for the scenario's
// time: fork + exec + connect + query + exit + wait, what a CGI script, a
// cron job or a shell loop pays. Each run's output must end in the line
// "1". client_cpu_us is the children's CPU a run; the daemon's is charged
// when `daemon_pid` is given.
Measurement RunProcesses(const Flags& flags,
                         const std::vector<std::string>& args,
                         const std::vector<std::string>& env, int daemon_pid) {
  auto one = [&] {
    const std::string output = RunProcessOnce(args, env);
    std::vector<absl::string_view> lines =
        absl::StrSplit(output, '\n', absl::SkipWhitespace());
    if (lines.empty() || absl::StripAsciiWhitespace(lines.back()) != "1") {
      Die(absl::StrCat(absl::StrJoin(args, " "), " printed '", output,
                       "', not 1"));
    }
  };
  for (int i = 0; i < 3; ++i) one();  // the binaries' pages in the cache
  Samples s;
  const int64_t children_start = ChildrenCpuNanos();
  const int64_t daemon_start = ProcessCpuNanos(daemon_pid);
  TimeFor(flags.seconds, one, &s);
  s.cpu_ns = ChildrenCpuNanos() - children_start;
  const int64_t daemon_end = ProcessCpuNanos(daemon_pid);
  std::vector<Samples> all = {std::move(s)};
  Measurement m = Merge(all);
  if (daemon_start >= 0 && daemon_end >= 0) {
    m.daemon_cpu_us = static_cast<double>(daemon_end - daemon_start) / 1e3 /
                      static_cast<double>(m.ops);
  }
  return m;
}

// "1.12x PgBouncer (target >= 1: met)".
std::string TargetRatio(const Measurement& m, const Measurement& other,
                        const std::string& name, double target) {
  const double ratio = m.ops_per_second / other.ops_per_second;
  return absl::StrFormat("%.2fx %s (target >= %.2g: %s)", ratio, name, target,
                         ratio >= target ? "met" : "**missed**");
}

// Issue 12's targets. Small calls on a kept handle, 1 and N processes:
// PgBouncer's kept-connection SELECT 1 as the reference, the bare generic
// gRPC client on a Session stream as the floor of the library, a
// result-cache hit, the bare client pipelining; then a whole client
// process per request, the CLI against psql through PgBouncer.
void SessionRows(const Context& ctx, const absl::StatusOr<Connection>& pg) {
  const Flags& flags = ctx.flags;
  const int n = flags.many_clients;
  const std::string& bench = flags.connection;
  const std::string lib = LibraryLabel();
  for (const int clients : {1, n}) {
    std::optional<Measurement> bouncer;
    if (ctx.servers.has_bouncer()) {
      bouncer = ctx.Direct("bouncer_select1", clients);
      ctx.rows.push_back(
          MakeRow("16. PgBouncer (transaction pooling), PostgreSQL `SELECT 1`",
                  *bouncer,
                  absl::StrFormat("libpq PQexecParams, kept connection; client "
                                  "CPU/call %.0f us",
                                  bouncer->client_cpu_us)));
    }
    // The library against the bare stream and PgBouncer, on one database.
    auto pair = [&](const std::string& number, const std::string& title,
                    const std::string& connection) {
      const Measurement bare = ctx.Workers("bare_select1", clients, connection);
      const Measurement library = ctx.Workers("select1", clients, connection);
      ctx.rows.push_back(
          MakeRow(number + "bare gRPC Session stream, " + title, bare,
                  absl::StrCat("generated stub, one request in flight; ",
                               ServerNote(bare))));
      ctx.rows.push_back(MakeRow(
          number + lib + ", " + title, library,
          absl::StrCat(
              TargetRatio(library, bare, "bare gRPC", 0.85),
              bouncer ? ", " + TargetRatio(library, *bouncer, "PgBouncer", 1)
                      : "",
              "; ", ServerNote(library))));
      return bare;
    };
    const Measurement bare_sqlite = pair("16. ", "SQLite `SELECT 1`", bench);
    std::optional<Measurement> bare_pg;
    if (pg.ok()) {
      bare_pg = pair("17. ", "PostgreSQL `SELECT 1`", kPgConnection);
    } else {
      ctx.rows.push_back(NotMeasured("17. PostgreSQL `SELECT 1`", clients,
                                     Short(pg.status())));
    }

    // A hit needs no database: on PostgreSQL's handle when there is one.
    const std::string cache_on = pg.ok() ? kPgConnection : bench;
    const Measurement hit = ctx.Workers("cached_select1", clients, cache_on);
    ctx.rows.push_back(MakeRow(
        absl::StrCat("18. ", lib, ", result-cache hit `SELECT 1` (ttl 600 s, ",
                     cache_on, ")"),
        hit,
        absl::StrCat(
            bouncer ? TargetRatio(hit, *bouncer, "PgBouncer", 1.2) + ", " : "",
            Ratio(hit, bare_pg ? *bare_pg : bare_sqlite, "bare gRPC uncached"),
            "; ", ServerNote(hit), "; every timed call a hit")));

    auto pipelined = [&](const std::string& title,
                         const std::string& connection,
                         const Measurement& bare) {
      const Measurement m = ctx.Workers("bare_pipelined", clients, connection);
      ctx.rows.push_back(MakeRow(
          absl::StrCat("19. bare gRPC Session stream, ", kPipelineDepth,
                       " in flight, ", title),
          m,
          absl::StrCat(Ratio(m, bare, "one in flight"),
                       "; p50/p99: request written to its answer read; ",
                       ServerNote(m))));
    };
    pipelined("SQLite `SELECT 1`", bench, bare_sqlite);
    if (bare_pg) pipelined("PostgreSQL `SELECT 1`", kPgConnection, *bare_pg);
  }

  // A whole client process per request, one after another.
  std::string cli = flags.cli;
  if (cli.empty()) {
    cli = (std::filesystem::path(SelfPath()).parent_path() /
           "../../client/connbroker")
              .lexically_normal()
              .string();
  }
  const std::string psql = Env("CONNBROKER_TEST_PG_BIN").empty()
                               ? ""
                               : Env("CONNBROKER_TEST_PG_BIN") + "/psql";
  std::optional<Measurement> psql_rate;
  if (ctx.servers.has_bouncer() && !psql.empty()) {
    Progress("psql -c through PgBouncer, a process per request");
    psql_rate =
        RunProcesses(flags,
                     {psql, "-X", "-A", "-t", "-h", "127.0.0.1", "-p",
                      ctx.servers.bouncer_port, "-U", ctx.servers.pg_user, "-d",
                      ctx.servers.pg_database, "-c", "SELECT 1"},
                     EnvironmentWith({"PGPASSWORD=" + ctx.servers.pg_password}),
                     /*daemon_pid=*/0);
  }
  auto cli_row = [&](const std::string& connection, const std::string& what) {
    const std::string scenario =
        absl::StrCat("20. `connbroker query ", connection,
                     " \"SELECT 1\"`, a process a "
                     "request (",
                     what, ")");
    if (!std::filesystem::exists(cli)) {
      ctx.rows.push_back(NotMeasured(scenario, 1, "no " + cli));
      return;
    }
    Progress(scenario);
    const Measurement m = RunProcesses(
        flags, {cli, "query", connection, "SELECT 1", "--format", "csv"},
        EnvironmentWith({"CONNBROKER_TARGET=" + flags.target}),
        flags.daemon_pid);
    ctx.rows.push_back(MakeRow(
        scenario, m,
        absl::StrCat(
            psql_rate
                ? TargetRatio(m, *psql_rate, "psql -c via PgBouncer", 3) + "; "
                : "",
            absl::StrFormat("fork/exec/wait sequentially; CPU/process: "
                            "daemon %.0f us, client %.0f us",
                            m.daemon_cpu_us, m.client_cpu_us))));
  };
  if (pg.ok()) cli_row(kPgConnection, "PostgreSQL");
  cli_row(bench, "SQLite");
  if (psql_rate) {
    ctx.rows.push_back(MakeRow(
        "20. `psql -X -A -t -c \"SELECT 1\"` via PgBouncer, a process a "
        "request",
        *psql_rate,
        absl::StrFormat("fork/exec/wait sequentially, SCRAM to PgBouncer "
                        "each time; client CPU/process %.0f us",
                        psql_rate->client_cpu_us)));
  }
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

  const Servers servers = ServersFromEnv();
  const bool want_pg = Selected(flags, "pg") || Selected(flags, "stream") ||
                       Selected(flags, "rss") || Selected(flags, "neighbour") ||
                       Selected(flags, "session");
  const bool want_mysql =
      Selected(flags, "mariadb") || Selected(flags, "stream");
  absl::Status no_server = absl::FailedPreconditionError("no server given");
  absl::StatusOr<Connection> pg = no_server;
  absl::StatusOr<Connection> maria = no_server;
  if (servers.has_pg() && want_pg) {
    Progress("set-up: PostgreSQL items (100k rows), stream (1M rows)");
    SetUpPostgres(servers);
    pg = Join(**client, kPgConnection);
    if (!pg.ok()) Progress("broker on PostgreSQL: " + pg.status().ToString());
  } else if (want_pg) {
    Progress(
        "no PostgreSQL given (CONNBROKER_TEST_PG_*): its rows are left out");
  }
  if (servers.has_mysql() && want_mysql) {
    Progress("set-up: MariaDB items (100k rows), stream (1M rows)");
    SetUpMysql(servers);
    maria = Join(**client, kMariaConnection);
    if (!maria.ok())
      Progress("broker on MariaDB: " + maria.status().ToString());
  } else if (want_mysql) {
    Progress(
        "no MariaDB given (CONNBROKER_TEST_MYSQL_*): its rows are left out");
  }

  std::vector<Row> rows;
  const Context ctx{flags, servers, **client,
                    std::filesystem::path(flags.db).parent_path().string(),
                    rows};
  if (Selected(flags, "sqlite")) SqliteRows(ctx, *conn);
  if (Selected(flags, "pg") && servers.has_pg()) PostgresRows(ctx, pg);
  if (Selected(flags, "mariadb") && servers.has_mysql()) MariaRows(ctx, maria);
  if (Selected(flags, "stream")) {
    if (!Selected(flags, "sqlite")) SqliteStreamRows(ctx, *conn);
    NetStreamRows(ctx, pg, maria);
  }
  if (Selected(flags, "rss") && servers.has_pg()) RssRow(ctx, pg);
  if (Selected(flags, "neighbour") && servers.has_pg()) NeighbourRows(ctx);
  if (Selected(flags, "session")) SessionRows(ctx, pg);

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
