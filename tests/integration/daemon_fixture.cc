// Real daemon and client processes for the integration tests.
#include "tests/integration/daemon_fixture.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "connbroker/v1/service.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

extern char** environ;

namespace connbroker::testing {
namespace {

std::vector<std::string> MergedEnvironment(
    const std::map<std::string, std::string>& extra) {
  std::vector<std::string> merged;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string text = *entry;
    std::string key = text.substr(0, text.find('='));
    if (extra.count(key) == 0) merged.push_back(text);
  }
  for (const auto& [key, value] : extra) merged.push_back(key + "=" + value);
  return merged;
}

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

int next_output_id = 0;

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::map<std::string, std::string>& env,
                           const std::string& output_dir,
                           const std::string& working_dir) {
  int id = __atomic_fetch_add(&next_output_id, 1, __ATOMIC_RELAXED);
  out_path_ = output_dir + "/proc" + std::to_string(id) + ".out";
  err_path_ = output_dir + "/proc" + std::to_string(id) + ".err";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!working_dir.empty()) {
    posix_spawn_file_actions_addchdir_np(&actions, working_dir.c_str());
  }
  std::vector<std::string> args = argv;
  std::vector<std::string> environment = MergedEnvironment(env);
  std::vector<char*> c_args = CStrings(args);
  std::vector<char*> c_env = CStrings(environment);
  int error = ::posix_spawn(&pid_, c_args[0], &actions, nullptr, c_args.data(),
                            c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(error, 0) << "cannot start " << argv[0];
  if (error != 0) {
    pid_ = -1;
    reaped_ = true;
  }
}

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void ChildProcess::Signal(int signal_number) const {
  if (!reaped_) ::kill(pid_, signal_number);
}

ProcessResult ChildProcess::Wait() {
  ProcessResult result;
  if (!reaped_) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    result.exit_code =
        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  result.out = ReadFile(out_path_);
  result.err = ReadFile(err_path_);
  return result;
}

ProcessResult ChildProcess::WaitAtMost(int timeout_ms) {
  // A bounded wait for an exit the test expects, not a sleep hiding a race:
  // if the child never exits, the test fails instead of hanging.
  for (int waited = 0; !reaped_ && waited < timeout_ms; waited += 10) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      ProcessResult result;
      result.exit_code =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      result.out = ReadFile(out_path_);
      result.err = ReadFile(err_path_);
      return result;
    }
    ::usleep(10 * 1000);
  }
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    ProcessResult result = Wait();
    result.exit_code = -1;
    return result;
  }
  return Wait();
}

std::string ChildProcess::StderrSoFar() const { return ReadFile(err_path_); }

std::string ChildProcess::StdoutSoFar() const { return ReadFile(out_path_); }

ProcessResult RunCli(const std::string& target, const TempDir& dir,
                     const std::vector<std::string>& args) {
  std::vector<std::string> argv = {CONNBROKER_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildProcess child(argv, {{"CONNBROKER_TARGET", target}}, dir.path(), "");
  return child.Wait();
}

google::protobuf::Struct ParseJson(const std::string& json) {
  google::protobuf::Struct parsed;
  auto status = google::protobuf::util::JsonStringToMessage(json, &parsed);
  EXPECT_TRUE(status.ok()) << "not a JSON object: " << json;
  return parsed;
}

double Number(const google::protobuf::Struct& object,
              const std::string& field) {
  auto it = object.fields().find(field);
  if (it == object.fields().end() ||
      it->second.kind_case() != google::protobuf::Value::kNumberValue) {
    ADD_FAILURE() << "no number field '" << field << "' in "
                  << object.DebugString();
    return std::nan("");
  }
  return it->second.number_value();
}

const google::protobuf::Value& Cell(const google::protobuf::Struct& result,
                                    int row, int column) {
  static const google::protobuf::Value* const kMissing =
      new google::protobuf::Value();
  auto rows = result.fields().find("rows");
  if (rows == result.fields().end() ||
      rows->second.list_value().values_size() <= row ||
      rows->second.list_value().values(row).list_value().values_size() <=
          column) {
    ADD_FAILURE() << "no cell (" << row << ", " << column << ") in "
                  << result.DebugString();
    return *kMissing;
  }
  return rows->second.list_value().values(row).list_value().values(column);
}

std::string Text(const google::protobuf::Struct& object,
                 const std::string& field) {
  auto it = object.fields().find(field);
  if (it == object.fields().end() ||
      it->second.kind_case() != google::protobuf::Value::kStringValue) {
    ADD_FAILURE() << "no string field '" << field << "' in "
                  << object.DebugString();
    return "";
  }
  return it->second.string_value();
}

std::unique_ptr<Daemon> Daemon::Start(const Options& options) {
  return StartOn("", options);
}

std::unique_ptr<Daemon> Daemon::Launch(const std::string& socket_dir,
                                       const Options& options) {
  // A daemon shutting down waits for each connected client to answer a
  // ping, and an idle gRPC C++ client only polls its socket every 5 s by
  // default. Poll often, so a restart does not cost the test 5 s.
  ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", 0);
  std::unique_ptr<Daemon> daemon(new Daemon());
  daemon->dir_ = std::make_unique<TempDir>();
  daemon->socket_dir_ = socket_dir.empty() ? daemon->dir_->path() : socket_dir;
  daemon->target_ = options.listen.empty()
                        ? "unix:" + daemon->socket_dir_ + "/broker.sock"
                        : options.listen;
  std::vector<std::string> argv = {CONNBROKERD_PATH, "--listen",
                                   daemon->target_, "--log-level", "debug"};
  for (const std::string& file : options.secrets_files) {
    argv.push_back("--secrets");
    argv.push_back(file);
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  std::string working_dir =
      options.working_dir.empty() ? daemon->dir_->path() : options.working_dir;
  // HOME and the working directory point at empty places, so secrets come
  // only from the files the test names.
  daemon->process_ = std::make_unique<ChildProcess>(
      argv,
      std::map<std::string, std::string>{{"HOME", daemon->dir_->path()},
                                         {"CONNBROKER_SECRETS", ""}},
      daemon->dir_->path(), working_dir);
  return daemon;
}

std::unique_ptr<Daemon> Daemon::StartOn(const std::string& socket_dir,
                                        const Options& options) {
  std::unique_ptr<Daemon> daemon = Launch(socket_dir, options);
  if (!daemon->WaitUntilServing(options)) {
    ADD_FAILURE() << "connbrokerd did not start serving; its log:\n"
                  << daemon->Log();
    return nullptr;
  }
  return daemon;
}

ProcessResult Daemon::RunExpectingExit(const Options& options) {
  std::unique_ptr<Daemon> daemon = Launch("", options);
  ProcessResult result = daemon->process_->WaitAtMost(20000);
  daemon->process_.reset();
  return result;
}

bool Daemon::WaitUntilServing(const Options& options) {
  // wait_for_ready makes the call wait for the socket to accept, so no
  // polling: it returns as soon as the daemon serves, or at the deadline.
  // The socket appears a moment after the process starts; retry connecting
  // every 20 ms instead of after gRPC's default 1 s backoff.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (!options.root_certs_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.root_certs_pem;
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
    credentials = grpc::SslCredentials(ssl);
  }
  auto channel = grpc::CreateCustomChannel(target_, credentials, args);
  auto stub = v1::ConnectionBroker::NewStub(channel);
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  if (!options.bearer_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options.bearer_token);
  }
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(20));
  v1::GetStatsResponse stats;
  grpc::Status status = stub->GetStats(&context, v1::GetStatsRequest(), &stats);
  return status.ok();
}

Daemon::~Daemon() {
  if (process_ != nullptr) {
    process_->Signal(SIGTERM);
    process_->Wait();
  }
}

int Daemon::Stop() {
  process_->Signal(SIGTERM);
  return process_->Wait().exit_code;
}

google::protobuf::Struct Daemon::Stats() const {
  ProcessResult result = Cli({"stats", "--format", "json"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  return ParseJson(result.out);
}

}  // namespace connbroker::testing
