// connbrokerd: the connection broker daemon.
//
// Serves the ConnectionBroker gRPC service (plus health and reflection) on a
// Unix socket by default. SIGHUP reloads the secrets; SIGTERM or SIGINT
// drains in-flight calls, then closes every backend.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "connbroker/config/broker_settings.h"
#include "connbroker/config/secrets.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "connbroker/v1/service.pb.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/access_policy.h"
#include "server/broker.h"
#include "server/broker_service.h"
#include "server/drivers/backend_budget.h"
#include "server/drivers/database.h"
#include "server/janitor.h"
#include "server/listen_address.h"
#include "server/logging.h"
#include "server/tls_credentials.h"
#include "server/worker_pool.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace connbroker::server {
namespace {

// The ConnectionBroker service's descriptor, which server reflection serves.
// service.pb.cc defines no message, so nothing in the daemon referred to it
// and the linker left it out of the static proto library: reflection listed
// the service by name (from the registered methods) but answered "Symbol not
// found" for its file, and reflection-driven tools could not call it. Taking
// the address of its descriptor table links it in; null means it still is
// not there.
const google::protobuf::ServiceDescriptor* BrokerServiceDescriptor() {
  static const void* volatile linked_in =
      &descriptor_table_connbroker_2fv1_2fservice_2eproto;
  (void)linked_in;
  return google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
      v1::ConnectionBroker::service_full_name());
}

constexpr char kUsage[] =
    R"(usage: connbrokerd [options]

Serves cached, shared database connections configured from secrets.toml.

  --listen ADDR      unix:/abs/path (default: $XDG_RUNTIME_DIR/connbroker.sock,
                     else /tmp/connbroker-<uid>/connbroker.sock) or host:port
                     (TCP needs [tls] and [auth] in broker.toml)
  --secrets FILE     a secrets file; repeatable, later files win key by key
                     (default: $CONNBROKER_SECRETS, else
                     ~/.streamlit/secrets.toml and ./.streamlit/secrets.toml)
  --config FILE      broker.toml: cache defaults, pool sizes, limits
  --log-level LEVEL  trace, debug, info, warn, error (default info)
  --workers N        threads for database work (default 16)
  --help

Secrets and token files are re-read when a file changes on disk (checked
every second) and on SIGHUP. SIGTERM/SIGINT shut down gracefully.
)";

struct Flags {
  std::optional<std::string> listen;
  std::vector<std::string> secrets;
  std::optional<std::string> config;
  std::optional<std::string> log_level;
  std::optional<int> workers;
};

// Parses argv; on error prints to stderr and exits 2.
Flags ParseFlags(int argc, char** argv) {
  Flags flags;
  auto fail = [](const std::string& message) {
    std::cerr << "connbrokerd: " << message << "\n\n" << kUsage;
    std::exit(2);
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    std::string value;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      fail(absl::StrCat(arg, " needs a value"));
    }
    if (arg == "--listen") {
      flags.listen = value;
    } else if (arg == "--secrets") {
      flags.secrets.push_back(value);
    } else if (arg == "--config") {
      flags.config = value;
    } else if (arg == "--log-level") {
      flags.log_level = value;
    } else if (arg == "--workers") {
      int workers;
      if (!absl::SimpleAtoi(value, &workers) || workers < 1 || workers > 1024) {
        fail("--workers takes a number from 1 to 1024");
      }
      flags.workers = workers;
    } else {
      fail(absl::StrCat("unknown option ", arg));
    }
  }
  return flags;
}

std::vector<config::SecretsFile> SecretsFiles(
    const Flags& flags, const config::BrokerSettings& settings) {
  config::SecretsDiscovery discovery;
  discovery.flag_paths =
      flags.secrets.empty() ? settings.secrets : flags.secrets;
  if (const char* env = std::getenv("CONNBROKER_SECRETS")) {
    discovery.env_value = env;
  }
  char cwd[4096];
  discovery.working_directory = ::getcwd(cwd, sizeof(cwd)) ? cwd : ".";
  if (const char* home = std::getenv("HOME")) discovery.home = home;
  return config::SecretsFilePaths(discovery);
}

// A crash (SIGSEGV, SIGABRT, ...) writes the faulting thread's stack to
// stderr, the daemon's log, before the process dies as it would have: a
// daemon that vanished otherwise leaves nothing to go on. SIGTERM, which
// absl's handler also takes, stays the drain's: it is blocked and taken by
// the sigwait loop.
void InstallCrashReporter(const char* argv0) {
  absl::InitializeSymbolizer(argv0);
  absl::FailureSignalHandlerOptions options;
  options.call_previous_handler = true;
  absl::InstallFailureSignalHandler(options);
  ::signal(SIGTERM, SIG_DFL);
}

int Run(int argc, char** argv) {
  InstallCrashReporter(argv[0]);
  Flags flags = ParseFlags(argc, argv);
  // glibc gives each thread that allocates its own arena (up to 8 per core),
  // and freed memory stays in them: with gRPC's threads and the workers a
  // burst leaves RSS far above what is in use. A few arenas suffice here.
  mallopt(M_ARENA_MAX, 2);
  // Debian builds abseil without NDEBUG, which leaves absl::Mutex's deadlock
  // detection on: measurable on every lock of a hot path. The tests keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  auto logger = spdlog::stderr_color_mt("connbrokerd");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  // Protobuf reports a client's malformed request (a string that is not
  // UTF-8) on stderr at ERROR level; the client gets INVALID_ARGUMENT for
  // it, and a client sending many must not flood the daemon's log.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level,
                                     const char* file, int line,
                                     const std::string& message) {
    if (level >= google::protobuf::LOGLEVEL_FATAL) {
      spdlog::critical("protobuf {}:{}: {}", file, line, message);
    } else {
      spdlog::debug("protobuf {}:{}: {}", file, line, message);
    }
  });

  config::BrokerSettings settings;
  if (flags.config) {
    absl::StatusOr<config::BrokerSettings> loaded =
        config::LoadBrokerSettings(*flags.config);
    if (!loaded.ok()) {
      spdlog::critical("{}", loaded.status().message());
      return 1;
    }
    settings = *std::move(loaded);
  }
  if (flags.listen) settings.listen = *flags.listen;
  if (flags.log_level) settings.log_level = *flags.log_level;
  if (flags.workers) settings.worker_threads = *flags.workers;
  spdlog::level::level_enum level = spdlog::level::from_str(settings.log_level);
  if (level == spdlog::level::off && settings.log_level != "off") {
    spdlog::critical("unknown log level '{}'", settings.log_level);
    return 2;
  }
  spdlog::set_level(level);
  if (settings.listen.empty()) settings.listen = DefaultListenAddress();

  // Signals are taken by a sigwait loop below, never by handlers, so every
  // thread started from here on inherits the block.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::optional<SocketGroup>> socket_group =
      ResolveSocketGroup(settings.access.socket_group);
  if (!socket_group.ok()) {
    spdlog::critical("{}", socket_group.status().message());
    return 1;
  }
  if (absl::Status s = CheckListenerSecurity(settings.listen, settings.access);
      !s.ok()) {
    spdlog::critical("{}", s.message());
    return 1;
  }
  absl::StatusOr<std::string> socket_path =
      PrepareListenAddress(settings.listen, *socket_group);
  if (!socket_path.ok()) {
    spdlog::critical("{}", socket_path.status().message());
    return 1;
  }
  const bool tcp = socket_path->empty();
  absl::StatusOr<std::unique_ptr<AccessPolicy>> access_policy =
      AccessPolicy::Load(settings.access, tcp);
  if (!access_policy.ok()) {
    spdlog::critical("{}", access_policy.status().message());
    return 1;
  }
  AccessPolicy& policy = **access_policy;
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (tcp && settings.access.tls()) {
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tls =
        TlsServerCredentials(settings.access);
    if (!tls.ok()) {
      spdlog::critical("{}", tls.status().message());
      return 1;
    }
    credentials = *std::move(tls);
    credentials->SetAuthMetadataProcessor(policy.MakeAuthMetadataProcessor());
  } else if (tcp) {
    // CheckListenerSecurity let it through: insecure_loopback on loopback.
    spdlog::warn(
        "insecure_loopback: plain TCP on {}; every local user can connect{}",
        settings.listen,
        policy.tokens_required() ? " (bearer tokens still required)"
                                 : " with full access (no token_files)");
  } else if (settings.access.tls()) {
    spdlog::warn("[tls] is not used on a Unix socket ({})", settings.listen);
  }
  if (tcp && socket_group->has_value()) {
    spdlog::warn("socket_group is not used on TCP ({})", settings.listen);
  }

  Broker::Options options;
  options.settings = settings;
  options.secrets_files = SecretsFiles(flags, settings);
  options.env = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  if (absl::Status raised = RaiseOpenFilesLimit(settings.limits.max_open_files);
      !raised.ok()) {
    spdlog::warn("{}", raised.message());
  }
  // Made before the broker: cursors may keep a pool alive until the last
  // call ends, and every pool holds units of it.
  BackendBudget backends({.max_backends = settings.limits.max_backends,
                          .max_open_files = settings.limits.max_open_files,
                          .reserved_files = settings.limits.reserved_files});
  options.backends = &backends;
  options.database_factory = [&backends](const config::ConnectionSpec& spec) {
    return OpenDatabaseWith(spec, DriverContext{&backends});
  };
  // Made before the broker, which hands it work, and emptied before the
  // broker goes (see the end of Run).
  auto workers = std::make_unique<WorkerPool>(settings.worker_threads);
  options.run_on_worker = [pool = workers.get()](std::function<void()> work) {
    pool->Submit(std::move(work));
  };
  Broker broker(std::move(options), Clock::Real());
  backends.SetReclaimer([&broker] { broker.ShedIdleBackends(); });
  BrokerService service(&broker, workers.get(),
                        [&policy](const grpc::CallbackServerContext& context,
                                  std::string session) {
                          return policy.Authenticate(context,
                                                     std::move(session));
                        });

  grpc::EnableDefaultHealthCheckService(true);
  if (BrokerServiceDescriptor() == nullptr) {
    spdlog::critical("the {} descriptor is not linked into connbrokerd",
                     v1::ConnectionBroker::service_full_name());
    return 1;
  }
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  grpc::ResourceQuota quota("connbrokerd");
  quota.Resize(static_cast<size_t>(settings.limits.max_transport_bytes));
  builder.SetResourceQuota(quota);
  builder.AddListeningPort(settings.listen, credentials);
  builder.RegisterService(&service);
  // The socket is created with the process umask: make it 0600 (0660 for a
  // socket_group) from the start rather than chmod it after clients could
  // already connect. Until the chgrp below it has the daemon's own group,
  // but only the socket_group can search its directory (0710).
  mode_t old_umask = ::umask(socket_group->has_value() ? 0117 : 0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ::umask(old_umask);
  if (server == nullptr) {
    spdlog::critical("cannot listen on {}", settings.listen);
    return 1;
  }
  if (!tcp && socket_group->has_value()) {
    if (absl::Status s = ShareSocketWithGroup(*socket_path, **socket_group);
        !s.ok()) {
      spdlog::critical("{}", s.message());
      server->Shutdown();
      ::unlink(socket_path->c_str());
      return 1;
    }
  }
  // Health checks may name the service (as Kubernetes probes do) or not.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(v1::ConnectionBroker::service_full_name(), true);
  health->SetServingStatus(true);
  Janitor janitor(absl::Seconds(1), [&broker, &policy] {
    broker.Upkeep();
    policy.Reload().IgnoreError();  // logged by Reload
  });
  spdlog::info(
      "serving on {} ({}{} token(s), {} worker threads)", settings.listen,
      tcp ? (settings.access.tls() ? "TLS, " : "plain TCP, ") : "unix socket, ",
      policy.token_count(), settings.worker_threads);

  while (true) {
    int signal_number = 0;
    if (sigwait(&signals, &signal_number) != 0) continue;
    if (signal_number == SIGHUP) {
      spdlog::info("SIGHUP: reloading secrets and token files");
      broker.ReloadSecrets().IgnoreError();  // logged by ReloadSecrets
      policy.Reload().IgnoreError();         // logged by Reload
      continue;
    }
    spdlog::info("{}: draining in-flight calls", strsignal(signal_number));
    break;
  }
  health->SetServingStatus(false);  // probes see the drain at once
  // Session streams kept between calls are not calls in flight: they end
  // once their requests are answered, so the grace period below is not
  // spent waiting for idle clients.
  service.EndSessions();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  server->Wait();
  // Runs what is still queued (the last calls' clean-up) while the broker
  // and its connections are alive.
  workers.reset();
  backends.SetReclaimer(nullptr);  // nothing opens now; the broker goes next
  if (!socket_path->empty()) ::unlink(socket_path->c_str());
  spdlog::info("stopped");
  return 0;
}

}  // namespace
}  // namespace connbroker::server

int main(int argc, char** argv) { return connbroker::server::Run(argc, argv); }
