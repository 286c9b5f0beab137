// Real processes for integration tests: a connbrokerd daemon on a temporary
// Unix socket, and connbroker client processes run beside it.
//
// Nothing here is a stand-in: the daemon and the clients are the shipped
// binaries, started with posix_spawn and talking over a real socket. Output
// goes to files in the test's temporary directory, so many children can run
// at once without pipes filling up.
#ifndef CONNBROKER_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
#define CONNBROKER_TESTS_INTEGRATION_DAEMON_FIXTURE_H_

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "google/protobuf/struct.pb.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::testing {

std::string ReadFile(const std::string& path);

// What a finished process left.
struct ProcessResult {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out;
  std::string err;
};

// A child process whose stdout and stderr go to files.
class ChildProcess {
 public:
  // Starts `argv` with `env` added to (or replacing entries of) this
  // process's environment, in `working_dir` (empty: unchanged).
  ChildProcess(const std::vector<std::string>& argv,
               const std::map<std::string, std::string>& env,
               const std::string& output_dir, const std::string& working_dir);
  ~ChildProcess();  // kills the child if it still runs

  pid_t pid() const { return pid_; }
  void Signal(int signal_number) const;
  // Waits for the child to exit.
  ProcessResult Wait();
  // Waits up to `timeout_ms` for the child to exit; if it is still running
  // then, kills it and returns exit_code -1 (a test failure to report).
  ProcessResult WaitAtMost(int timeout_ms);
  std::string StderrSoFar() const;
  std::string StdoutSoFar() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_path_;
  std::string err_path_;
};

// Runs the connbroker command against `target` to completion.
ProcessResult RunCli(const std::string& target, const TempDir& dir,
                     const std::vector<std::string>& args);

// Parses JSON printed by the CLI; fails the test (and returns an empty
// Struct) if it is not a JSON object.
google::protobuf::Struct ParseJson(const std::string& json);

// A connbrokerd process serving on a socket in its own temporary directory.
class Daemon {
 public:
  struct Options {
    std::vector<std::string> secrets_files = {};
    std::vector<std::string> extra_args = {};
    std::string working_dir = "";  // default: the daemon's temporary directory
    // Where to listen instead of the Unix socket in the temporary directory
    // ("127.0.0.1:PORT", "unix:/other/dir/broker.sock").
    std::string listen = "";
    // How the readiness check (only it) reaches a TLS daemon: the CA
    // certificates, a client certificate and key, and a bearer token.
    std::string root_certs_pem = "";
    std::string client_cert_pem = "";
    std::string client_key_pem = "";
    std::string bearer_token = "";
  };

  // Starts the daemon and waits until it answers on its socket.
  // On failure, fails the test and returns nullptr.
  static std::unique_ptr<Daemon> Start(const Options& options);
  // Starts a daemon on the socket in `socket_dir` (another daemon's, for a
  // restart); empty: in its own temporary directory.
  static std::unique_ptr<Daemon> StartOn(const std::string& socket_dir,
                                         const Options& options);
  // Runs a daemon that is expected to refuse to start, and returns how it
  // exited (exit_code -1 if it was still running after 20 s).
  static ProcessResult RunExpectingExit(const Options& options);
  ~Daemon();  // SIGTERM if still running

  const std::string& target() const { return target_; }
  const TempDir& dir() const { return *dir_; }
  const std::string& socket_dir() const { return socket_dir_; }
  pid_t pid() const { return process_->pid(); }

  // Sends SIGTERM and waits; returns the exit code.
  int Stop();
  void Signal(int signal_number) const { process_->Signal(signal_number); }
  // Everything the daemon logged so far.
  std::string Log() const { return process_->StderrSoFar(); }

  // Runs the connbroker command against this daemon.
  ProcessResult Cli(const std::vector<std::string>& args) const {
    return RunCli(target_, *dir_, args);
  }
  // `connbroker stats --format json`, parsed.
  google::protobuf::Struct Stats() const;

 private:
  Daemon() = default;
  // Starts the process; `socket_dir` as for StartOn.
  static std::unique_ptr<Daemon> Launch(const std::string& socket_dir,
                                        const Options& options);
  bool WaitUntilServing(const Options& options);

  std::unique_ptr<TempDir> dir_;
  std::string socket_dir_;
  std::string target_;
  std::unique_ptr<ChildProcess> process_;
};

// A number field of a parsed JSON object (NaN and a test failure if absent).
double Number(const google::protobuf::Struct& object, const std::string& field);
// Cell (row, column) of the "rows" of `connbroker query --format json`
// output, parsed (a null Value and a test failure if absent).
const google::protobuf::Value& Cell(const google::protobuf::Struct& result,
                                    int row, int column);

// A string field (empty and a test failure if absent).
std::string Text(const google::protobuf::Struct& object,
                 const std::string& field);

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
