// The `connbroker` command: runs the daemon (serve) or talks to it through
// the C++ client (query, execute, shell, connect, connections, stats,
// reset).
//
// Exit status: 0 ok, 1 an error from the daemon (or the transport), printed
// as "connbroker: <CODE>: <message>", 2 a usage error.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "connbroker/client.h"
#include "format.h"

namespace connbroker::cli {
namespace {

constexpr char kUsage[] = R"(usage: connbroker <command> [arguments] [flags]

commands:
  serve [daemon args...]   run the daemon, connbrokerd, in the foreground
  query NAME SQL           run a statement that returns rows and print them
  execute NAME SQL         run a statement for its effect
  shell NAME               an interactive SQL prompt on one session: see below
  connect NAME             get or create the shared connection; print its handle
  connections              list the daemon's connections (global ones and
                           this session's; --all-sessions: every session's)
  stats                    print the daemon's counters
  reset NAME               drop a connection's backends and cached results
  reset --handle H         the same, for a handle
  (query, execute and reset take --handle H in place of NAME: a handle
   printed by `connect`, usable from any process)
  help                     print this text

shell: statements end with ';' and may span lines (a ';' inside quotes or
  comments does not count). Those whose first keyword returns rows (SELECT,
  WITH, VALUES, SHOW, PRAGMA, EXPLAIN, TABLE, DESCRIBE/DESC, or any with
  RETURNING) print their rows in --format; others print "OK, N rows
  affected". BEGIN ... COMMIT / ROLLBACK work across statements (the prompt
  shows NAME*> while a transaction is open); leaving the shell rolls back an
  open one. An error is printed and the shell goes on. \q or end of input
  quits. Reading a pipe (no prompt), the exit status is 1 if any statement
  failed.

connection flags (query, execute, shell, connect, reset NAME):
  --type T             connection type (sql, ...); default: the secrets
                       section's type, or NAME when it is a type
  --kwarg k=V          a connection parameter; wins over the secrets section
                       (repeatable; nested tables as dotted keys)
  --connect-ttl DUR    how long the daemon keeps the connection cached
  --max-entries N      bound on the connections cached with these settings
statement flags (query, execute):
  --param V            positional parameter: ?, ?1, $1 (repeatable)
  --named k=V          named parameter: :k, @k (repeatable)
  --ttl DUR            (query) cache the result this long
  --chunk-rows N       (query) rows per batch; 0: the daemon's default
common flags:
  --format F           table (default), csv (query, execute, shell only) or
                       json
  --target T           the daemon: unix:/path or host:port; default
                       $CONNBROKER_TARGET, else
                       unix:${XDG_RUNTIME_DIR:-/tmp/connbroker-$UID}/connbroker.sock
  --deadline DUR       deadline of each call (default 30s)
  --session ID         session id, for connections with scope = "session"
  --token-file FILE    a file holding the bearer token (required on TCP);
                       default $CONNBROKER_TOKEN_FILE. Never on the command
                       line itself, where other users can read it
  --ca FILE            TLS: CA certificates (PEM) the daemon's certificate is
                       checked against; default $CONNBROKER_CA. Given: TLS on
  --cert FILE, --key FILE
                       TLS: a client certificate and its key (PEM)

values:     42 is an int64, 4.5 a double, true/false a bool, null is NULL,
            anything else text; "text:" forces text (text:42)
durations:  30 (seconds), 2.5s, 500ms, 10m, 1h30m, 1d
exit status: 0 ok, 1 error from the daemon, 2 usage error
)";

// A usage error: exit status 2.
int Usage(absl::string_view message) {
  std::cerr << "connbroker: " << message
            << "\nrun 'connbroker help' for usage\n";
  return 2;
}

// An error from the daemon or the transport: exit status 1.
int Failure(const absl::Status& status) {
  std::cout.flush();
  std::cerr << "connbroker: " << absl::StatusCodeToString(status.code()) << ": "
            << status.message();
  std::optional<v1::ErrorDetail> detail = ErrorDetailOf(status);
  if (detail.has_value() && !detail->sqlstate().empty()) {
    // PostgreSQL's messages may end in a caret line under the SQL.
    std::cerr << (absl::StrContains(status.message(), '\n') ? "\n" : " ")
              << "(SQLSTATE " << detail->sqlstate() << ")";
  }
  std::cerr << "\n";
  return 1;
}

// The arguments after the command word: positional ones and --flag values
// (every flag takes a value, as "--flag V" or "--flag=V").
struct Args {
  std::vector<std::string> positional{};
  std::map<std::string, std::vector<std::string>> flags{};
  bool help = false;

  std::optional<std::string> Get(const std::string& name) const {
    auto it = flags.find(name);
    if (it == flags.end()) return std::nullopt;
    return it->second.back();  // the last one wins
  }
  const std::vector<std::string>& All(const std::string& name) const {
    static const std::vector<std::string> kNone;
    auto it = flags.find(name);
    return it == flags.end() ? kNone : it->second;
  }
};

const std::set<std::string> kCommonFlags = {"format",  "target",     "deadline",
                                            "session", "token-file", "ca",
                                            "cert",    "key"};
const std::set<std::string> kConnectFlags = {"type", "kwarg", "connect-ttl",
                                             "max-entries"};
const std::set<std::string> kRepeatable = {"param", "named", "kwarg"};
// Flags that take no value.
const std::set<std::string> kSwitches = {"all-sessions"};

absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv,
                               std::set<std::string> allowed) {
  allowed.insert(kCommonFlags.begin(), kCommonFlags.end());
  Args args;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg == "--") {
      args.positional.insert(args.positional.end(), argv.begin() + i + 1,
                             argv.end());
      break;
    }
    if (arg == "-h" || arg == "--help") {
      args.help = true;
      continue;
    }
    if (!absl::StartsWith(arg, "--")) {
      args.positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (kSwitches.count(name) != 0) {
      value = "true";
    } else if (i + 1 < argv.size()) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " needs a value"));
    }
    if (allowed.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    auto& values = args.flags[name];
    if (!values.empty() && kRepeatable.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " given twice"));
    }
    values.push_back(std::move(value));
  }
  return args;
}

absl::StatusOr<Format> FormatOf(const Args& args, bool csv_allowed) {
  absl::StatusOr<Format> format =
      ParseFormat(args.Get("format").value_or("table"));
  if (format.ok() && *format == Format::kCsv && !csv_allowed) {
    return absl::InvalidArgumentError(
        "--format csv is for query and execute; use table or json");
  }
  return format;
}

absl::StatusOr<int64_t> ParseInt(const std::string& flag,
                                 const std::string& text, int64_t min) {
  int64_t n;
  if (!absl::SimpleAtoi(text, &n) || n < min) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " wants an integer of at least ", min,
                     ", got '", text, "'"));
  }
  return n;
}

absl::StatusOr<std::map<std::string, Value>> KeyValues(
    const std::vector<std::string>& items) {
  std::map<std::string, Value> out;
  for (const std::string& item : items) {
    absl::StatusOr<std::pair<std::string, Value>> kv = ParseKeyValue(item);
    if (!kv.ok()) return kv.status();
    out[kv->first] = std::move(kv->second);
  }
  return out;
}

// The whole of a file the user named with `flag`.
absl::StatusOr<std::string> ReadFlagFile(const std::string& flag,
                                         const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A flag's value, else the environment variable's (empty counts as unset).
std::optional<std::string> FlagOrEnv(const Args& args, const std::string& flag,
                                     const char* env) {
  if (std::optional<std::string> value = args.Get(flag)) return value;
  const char* value = std::getenv(env);
  if (value != nullptr && *value != '\0') return std::string(value);
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<Client>> MakeClient(const Args& args) {
  ClientOptions options;
  options.target = args.Get("target").value_or("");
  options.session_id = args.Get("session").value_or("");
  if (std::optional<std::string> path =
          FlagOrEnv(args, "token-file", "CONNBROKER_TOKEN_FILE")) {
    absl::StatusOr<std::string> token = ReadFlagFile("token-file", *path);
    if (!token.ok()) return token.status();
    options.bearer_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.bearer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file: ", *path, " is empty"));
    }
  }
  if (std::optional<std::string> path =
          FlagOrEnv(args, "ca", "CONNBROKER_CA")) {
    absl::StatusOr<std::string> pem = ReadFlagFile("ca", *path);
    if (!pem.ok()) return pem.status();
    options.tls = true;
    options.root_certs_pem = *std::move(pem);
  }
  if (args.Get("cert").has_value() != args.Get("key").has_value()) {
    return absl::InvalidArgumentError("--cert and --key go together");
  }
  if (std::optional<std::string> path = args.Get("cert")) {
    absl::StatusOr<std::string> cert = ReadFlagFile("cert", *path);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFlagFile("key", *args.Get("key"));
    if (!key.ok()) return key.status();
    options.tls = true;
    options.client_cert_pem = *std::move(cert);
    options.client_key_pem = *std::move(key);
  }
  if (std::optional<std::string> d = args.Get("deadline")) {
    absl::StatusOr<absl::Duration> deadline = ParseDuration(*d);
    if (!deadline.ok()) return deadline.status();
    if (*deadline <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--deadline must be positive");
    }
    options.default_deadline = *deadline;
  }
  return Client::Create(std::move(options));
}

absl::StatusOr<ConnectOptions> ConnectOptionsOf(const Args& args,
                                                const std::string& name) {
  ConnectOptions options;
  options.name = name;
  options.type = args.Get("type").value_or("");
  if (std::optional<std::string> ttl = args.Get("connect-ttl")) {
    absl::StatusOr<absl::Duration> d = ParseDuration(*ttl);
    if (!d.ok()) return d.status();
    options.ttl = *d;
  }
  if (std::optional<std::string> n = args.Get("max-entries")) {
    absl::StatusOr<int64_t> max = ParseInt("max-entries", *n, 1);
    if (!max.ok()) return max.status();
    options.max_entries = *max;
  }
  absl::StatusOr<std::map<std::string, Value>> kwargs =
      KeyValues(args.All("kwarg"));
  if (!kwargs.ok()) return kwargs.status();
  options.kwargs = *std::move(kwargs);
  return options;
}

absl::StatusOr<QueryOptions> QueryOptionsOf(const Args& args) {
  QueryOptions options;
  for (const std::string& p : args.All("param")) {
    options.params.push_back(ParseCliValue(p));
  }
  absl::StatusOr<std::map<std::string, Value>> named =
      KeyValues(args.All("named"));
  if (!named.ok()) return named.status();
  options.named_params = *std::move(named);
  if (std::optional<std::string> ttl = args.Get("ttl")) {
    absl::StatusOr<absl::Duration> d = ParseDuration(*ttl);
    if (!d.ok()) return d.status();
    options.ttl = *d;
  }
  if (std::optional<std::string> n = args.Get("chunk-rows")) {
    absl::StatusOr<int64_t> rows = ParseInt("chunk-rows", *n, 0);
    if (!rows.ok()) return rows.status();
    if (*rows > INT32_MAX)
      return absl::InvalidArgumentError("--chunk-rows too large");
    options.chunk_rows = static_cast<int>(*rows);
  }
  return options;
}

// What the commands share: parsed flags, a client, and which connection to
// use (a name and its ConnectOptions, or a bare --handle).
struct Prepared {
  Args args;
  Format format = Format::kTable;
  std::unique_ptr<Client> client{};
  ConnectOptions connect;
  std::optional<std::string> handle{};
  // The positionals after NAME (or all of them with --handle).
  std::vector<std::string> rest{};

  absl::StatusOr<Connection> Open() const {
    if (handle.has_value()) return client->Attach(*handle);
    return client->Connect(connect);
  }
};

bool HasHandleFlag(const std::vector<std::string>& argv) {
  return std::any_of(argv.begin(), argv.end(), [](const std::string& a) {
    return a == "--handle" || absl::StartsWith(a, "--handle=");
  });
}

// What a command accepts: its own flags besides the common ones, how many
// positionals follow the connection's NAME, and whether NAME may be replaced
// by --handle H.
struct CommandSpec {
  const char* synopsis = "";
  std::set<std::string> flags{};
  bool takes_name = true;
  size_t more_positionals = 0;
  bool handle_form = false;
  bool csv_allowed = false;
};

// Returns nullopt, with the exit status in `exit_code`, when the command
// must stop here (usage error or --help).
std::optional<Prepared> Prepare(const std::vector<std::string>& argv,
                                const CommandSpec& spec, int* exit_code) {
  const bool by_handle = spec.handle_form && HasHandleFlag(argv);
  std::set<std::string> allowed = spec.flags;
  if (spec.takes_name && !by_handle) {
    allowed.insert(kConnectFlags.begin(), kConnectFlags.end());
  }
  if (by_handle) allowed.insert("handle");
  absl::StatusOr<Args> args = ParseArgs(argv, std::move(allowed));
  if (!args.ok()) {
    *exit_code = Usage(args.status().message());
    return std::nullopt;
  }
  if (args->help) {
    std::cout << "usage: connbroker " << spec.synopsis << "\n\n" << kUsage;
    *exit_code = 0;
    return std::nullopt;
  }
  const bool needs_name = spec.takes_name && !by_handle;
  if (args->positional.size() != spec.more_positionals + (needs_name ? 1 : 0)) {
    *exit_code = Usage(absl::StrCat("usage: connbroker ", spec.synopsis));
    return std::nullopt;
  }
  Prepared prepared;
  absl::StatusOr<Format> format = FormatOf(*args, spec.csv_allowed);
  if (!format.ok()) {
    *exit_code = Usage(format.status().message());
    return std::nullopt;
  }
  prepared.format = *format;
  if (needs_name) {
    absl::StatusOr<ConnectOptions> connect =
        ConnectOptionsOf(*args, args->positional[0]);
    if (!connect.ok()) {
      *exit_code = Usage(connect.status().message());
      return std::nullopt;
    }
    prepared.connect = *std::move(connect);
  }
  if (by_handle) prepared.handle = args->Get("handle");
  prepared.rest.assign(args->positional.begin() + (needs_name ? 1 : 0),
                       args->positional.end());
  absl::StatusOr<std::unique_ptr<Client>> client = MakeClient(*args);
  if (!client.ok()) {
    *exit_code = Usage(client.status().message());
    return std::nullopt;
  }
  prepared.client = *std::move(client);
  prepared.args = *std::move(args);
  return prepared;
}

int RunQuery(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv,
              {.synopsis = "query NAME SQL [flags] | query --handle H SQL",
               .flags = {"param", "named", "ttl", "chunk-rows"},
               .more_positionals = 1,
               .handle_form = true,
               .csv_allowed = true},
              &code);
  if (!p) return code;
  absl::StatusOr<QueryOptions> options = QueryOptionsOf(p->args);
  if (!options.ok()) return Usage(options.status().message());

  absl::StatusOr<Connection> conn = p->Open();
  if (!conn.ok()) return Failure(conn.status());
  std::unique_ptr<ResultWriter> writer = MakeResultWriter(p->format, std::cout);
  absl::StatusOr<QuerySummary> summary =
      conn->QueryBatches(p->rest[0], *options, [&](const Result& batch) {
        writer->OnBatch(batch);
        // A closed pipe (| head): stop the query instead of reading it all.
        if (!std::cout) return absl::CancelledError("standard output closed");
        return absl::OkStatus();
      });
  if (!summary.ok()) return Failure(summary.status());
  writer->Finish(*summary);
  return 0;
}

int RunExecute(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv,
              {.synopsis = "execute NAME SQL [flags] | execute --handle H SQL",
               .flags = {"param", "named"},
               .more_positionals = 1,
               .handle_form = true,
               .csv_allowed = true},
              &code);
  if (!p) return code;
  absl::StatusOr<QueryOptions> options = QueryOptionsOf(p->args);
  if (!options.ok()) return Usage(options.status().message());

  absl::StatusOr<Connection> conn = p->Open();
  if (!conn.ok()) return Failure(conn.status());
  absl::StatusOr<ExecuteResult> result =
      conn->Execute(p->rest[0], options->params, options->named_params);
  if (!result.ok()) return Failure(result.status());
  WriteExecute(p->format, *result, std::cout);
  return 0;
}

int RunConnect(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv, {.synopsis = "connect NAME [flags]"}, &code);
  if (!p) return code;
  absl::StatusOr<Connection> conn = p->Open();
  if (!conn.ok()) return Failure(conn.status());
  v1::ConnectResponse response;
  response.set_handle(conn->handle());
  response.set_name(conn->name());
  response.set_type(conn->type());
  response.set_description(conn->description());
  response.set_created(conn->created());
  response.set_scope(conn->scope());
  WriteConnect(p->format, response, std::cout);
  return 0;
}

int RunConnections(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv,
              {.synopsis = "connections [--all-sessions] [flags]",
               .flags = {"all-sessions"},
               .takes_name = false},
              &code);
  if (!p) return code;
  absl::StatusOr<v1::ListConnectionsResponse> list =
      p->client->ListConnections(p->args.Get("all-sessions").has_value());
  if (!list.ok()) return Failure(list.status());
  WriteConnections(p->format, *list, std::cout);
  return 0;
}

int RunStats(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv, {.synopsis = "stats [flags]", .takes_name = false}, &code);
  if (!p) return code;
  absl::StatusOr<v1::GetStatsResponse> stats = p->client->Stats();
  if (!stats.ok()) return Failure(stats.status());
  WriteStats(p->format, *stats, std::cout);
  return 0;
}

int RunReset(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p =
      Prepare(argv,
              {.synopsis = "reset NAME [flags] | reset --handle H",
               .handle_form = true},
              &code);
  if (!p) return code;
  ResetResult result;
  if (p->handle.has_value()) {
    // One call, and the daemon's own answer if it does not know the handle.
    absl::StatusOr<ResetResult> reset = p->client->ResetHandle(*p->handle);
    if (!reset.ok()) return Failure(reset.status());
    result = *std::move(reset);
  } else {
    absl::StatusOr<Connection> conn = p->Open();
    if (!conn.ok()) return Failure(conn.status());
    absl::Status status = conn->Reset(&result);
    if (!status.ok()) return Failure(status);
  }
  WriteReset(p->format, result, std::cout);
  return 0;
}

// Runs one statement of the shell; false when it failed (the error is
// printed).
bool RunShellStatement(Session& session, const Connection& connection,
                       const std::string& sql, Format format) {
  absl::Status status;
  if (ReturnsRows(sql)) {
    std::unique_ptr<ResultWriter> writer = MakeResultWriter(format, std::cout);
    absl::StatusOr<QuerySummary> summary =
        session.QueryBatches(connection, sql, {}, [&](const Result& batch) {
          writer->OnBatch(batch);
          if (!std::cout) return absl::CancelledError("standard output closed");
          return absl::OkStatus();
        });
    if (summary.ok()) writer->Finish(*summary);
    status = summary.status();
  } else {
    absl::StatusOr<ExecuteResult> result = session.Execute(connection, sql);
    if (result.ok()) {
      if (format == Format::kTable) {
        std::cout << "OK, " << result->rows_affected
                  << (result->rows_affected == 1 ? " row" : " rows")
                  << " affected\n";
      } else {
        WriteExecute(format, *result, std::cout);
      }
    }
    status = result.status();
  }
  if (!status.ok()) Failure(status);
  // The daemon rolled the transaction back on its own while we waited.
  if (absl::Status notice = session.TakeNotice(); !notice.ok()) {
    Failure(notice);
  }
  std::cout.flush();
  return status.ok();
}

int RunShell(const std::vector<std::string>& argv) {
  int code = 0;
  std::optional<Prepared> p = Prepare(
      argv, {.synopsis = "shell NAME [flags]", .csv_allowed = true}, &code);
  if (!p) return code;
  absl::StatusOr<Connection> conn = p->Open();
  if (!conn.ok()) return Failure(conn.status());

  const bool interactive = isatty(STDIN_FILENO) != 0;
  const std::string& name = p->connect.name;
  Session session = p->client->OpenSession();
  StatementSplitter splitter;
  int failures = 0;
  auto run = [&](const std::string& sql) {
    if (!RunShellStatement(session, *conn, sql, p->format)) ++failures;
    if (session.broken()) {
      // The daemon went away (or restarted): go on with a new stream. Its
      // transaction, if one was open, is gone: the daemon rolled it back.
      std::cerr << "connbroker: the session ended; a new one is opened "
                   "(a transaction left open was rolled back)\n";
      session = p->client->OpenSession();
    }
  };
  std::string line;
  for (;;) {
    if (interactive) {
      std::cout << name << (session.transaction_open() ? "*" : "")
                << (splitter.pending() ? "-> " : "> ");
      std::cout.flush();
    }
    if (!std::getline(std::cin, line)) break;
    if (!splitter.pending() && absl::StripAsciiWhitespace(line) == "\\q") {
      break;
    }
    line.push_back('\n');
    for (const std::string& sql : splitter.Feed(line)) run(sql);
  }
  // A last statement without its ';'.
  if (std::string rest = splitter.TakeRest(); !rest.empty()) run(rest);
  if (interactive) std::cout << "\n";
  return failures > 0 && !interactive ? 1 : 0;
}

// The directory of this executable, from /proc/self/exe.
std::string ExecutableDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

int RunServe(const std::vector<std::string>& argv) {
  // Installed, the daemon sits beside this command; in the build tree it is
  // client/../server/connbrokerd.
  const std::string dir = ExecutableDir();
  const std::vector<std::string> candidates = {dir + "/connbrokerd",
                                               dir + "/../server/connbrokerd"};
  for (const std::string& path : candidates) {
    if (access(path.c_str(), X_OK) != 0) continue;
    std::vector<char*> exec_argv;
    exec_argv.push_back(const_cast<char*>(path.c_str()));
    for (const std::string& arg : argv) {
      exec_argv.push_back(const_cast<char*>(arg.c_str()));
    }
    exec_argv.push_back(nullptr);
    execv(path.c_str(), exec_argv.data());
    std::cerr << "connbroker: cannot run " << path << ": "
              << std::strerror(errno) << "\n";
    return 1;
  }
  std::cerr << "connbroker: cannot find connbrokerd (looked for "
            << candidates[0] << " and " << candidates[1] << ")\n";
  return 1;
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  if (command == "serve") return RunServe(rest);
  if (command == "query") return RunQuery(rest);
  if (command == "execute") return RunExecute(rest);
  if (command == "shell") return RunShell(rest);
  if (command == "connect") return RunConnect(rest);
  if (command == "connections") return RunConnections(rest);
  if (command == "stats") return RunStats(rest);
  if (command == "reset") return RunReset(rest);
  return Usage(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace
}  // namespace connbroker::cli

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  return connbroker::cli::Main(argc, argv);
}
