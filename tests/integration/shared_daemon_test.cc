// Integration tests of issue 11, "safe to share": one careless or hostile
// client must not hurt the others. A real daemon, real client processes and
// raw gRPC calls that no well-behaved client would send.
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "connbroker/client.h"
#include "connbroker/v1/service.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr const char* kMethods[] = {"Connect", "Query",           "Execute",
                                    "Reset",   "ListConnections", "GetStats"};

std::string SecretsToml(const std::string& dir) {
  return absl::StrCat(R"([connections.app]
type = "sql"
url = "sqlite:///)",
                      dir, R"(/app.db"

[connections.private]
type = "sql"
url = "sqlite:///)",
                      dir, R"(/private.db"
scope = "session"
)");
}

class SharedDaemonTest : public ::testing::Test {
 protected:
  // Starts the daemon with `broker_toml` (empty: none) as --config.
  void StartDaemon(const std::string& broker_toml = "") {
    secrets_dir_ = std::make_unique<TempDir>();
    Daemon::Options options;
    options.secrets_files = {
        secrets_dir_->Write("secrets.toml", SecretsToml(secrets_dir_->path()))};
    if (!broker_toml.empty()) {
      options.extra_args = {"--config",
                            secrets_dir_->Write("broker.toml", broker_toml)};
    }
    daemon_ = Daemon::Start(options);
    ASSERT_NE(daemon_, nullptr);
  }

  std::unique_ptr<Client> NewClient(const std::string& session) {
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create({.target = daemon_->target(), .session_id = session});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  std::shared_ptr<grpc::Channel> Channel() {
    return grpc::CreateChannel(daemon_->target(),
                               grpc::InsecureChannelCredentials());
  }

  // Sends `bytes` as the request of `method`, as any gRPC client could.
  grpc::Status CallRaw(const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(Channel());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    absl::Notification done;
    stub.UnaryCall(
        &context, absl::StrCat("/connbroker.v1.ConnectionBroker/", method),
        grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
          status = std::move(s);
          done.Notify();
        });
    done.WaitForNotification();
    return status;
  }

  // `SELECT 1` through the configured connection, from a client process.
  void ExpectAppServes() {
    ProcessResult result = daemon_->Cli({"query", "app", "SELECT 1 AS one"});
    EXPECT_EQ(result.exit_code, 0) << result.err;
  }

  std::unique_ptr<TempDir> secrets_dir_;
  std::unique_ptr<Daemon> daemon_;
};

// Defect 9: requests that do not decode were UNIMPLEMENTED with no message.
TEST_F(SharedDaemonTest, UndecodableRequestsAreInvalidArgumentOnEveryMethod) {
  StartDaemon();
  std::mt19937 random(11);
  // Bytes no message type decodes (fields of the wrong wire type would be
  // kept as unknown fields, which is fine for a reader).
  std::vector<std::string> garbage = {
      std::string("\xff\xff\xff\xff\xff", 5),  // a tag that never ends
      std::string("\x0a\x7f", 2),              // a length past the end
  };
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(random());
  noise[0] = '\xff';  // field number 0 is never valid
  garbage.push_back(noise);
  for (const char* method : kMethods) {
    for (const std::string& bytes : garbage) {
      grpc::Status status = CallRaw(method, bytes);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << method << ": " << status.error_message();
      EXPECT_THAT(status.error_message(), HasSubstr("could not be decoded"))
          << method;
    }
  }
  // ConnectRequest.name is a string: proto3 wants it valid UTF-8.
  grpc::Status status = CallRaw("Connect", std::string("\x0a\x02\xff\xfe", 4));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("UTF-8"));
  ExpectAppServes();
}

// Defect 9: a 1 MB name came back inside NOT_FOUND, whose message then no
// longer fitted gRPC's metadata limit.
TEST_F(SharedDaemonTest, AMegabyteNameGetsAShortClearError) {
  StartDaemon();
  std::unique_ptr<Client> client = NewClient("s");
  ASSERT_NE(client, nullptr);
  absl::StatusOr<Connection> connection =
      client->Connect({.name = std::string(1 << 20, 'x')});
  ASSERT_FALSE(connection.ok());
  EXPECT_EQ(connection.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(connection.status().message(), HasSubstr("too long"));
  EXPECT_LT(connection.status().message().size(), 400u);
  ExpectAppServes();
}

// Defect 1: a different harmless kwarg each call made a new connection.
TEST_F(SharedDaemonTest, AKwargsFloodCannotExhaustTheDaemon) {
  StartDaemon("[limits]\nmax_connections = 8\n");
  std::unique_ptr<Client> client = NewClient("flood");
  ASSERT_NE(client, nullptr);
  std::string handle;
  for (int i = 0; i < 300; ++i) {
    absl::StatusOr<Connection> connection = client->Connect(
        {.name = "app",
         .kwargs = {{"create_engine_kwargs.echo", int64_t{i}},
                    {"some_library_option", absl::StrCat("v", i)}}});
    ASSERT_TRUE(connection.ok()) << connection.status();
    if (i == 0) handle = connection->handle();
    EXPECT_EQ(connection->handle(), handle);
  }
  // Kwargs the pool does read make connections of their own: bounded.
  for (int i = 1; i <= 40; ++i) {
    absl::StatusOr<Connection> connection = client->Connect(
        {.name = "app",
         .kwargs = {{"create_engine_kwargs.pool_size", int64_t{i}}}});
    ASSERT_TRUE(connection.ok()) << connection.status();
  }
  google::protobuf::Struct stats = daemon_->Stats();
  EXPECT_LE(Number(stats, "connections_live"), 8);
  EXPECT_GE(Number(stats, "evicted_for_room"), 32);
  ExpectAppServes();
}

// Defect 2: Connect{name: "env:VAR"} answered NOT_FOUND quoting VAR's value.
TEST_F(SharedDaemonTest, EnvNamesNeverEchoTheDaemonsEnvironment) {
  const char* path = std::getenv("PATH");  // the daemon inherits it
  ASSERT_NE(path, nullptr);
  for (const std::string& config :
       {std::string(""), std::string("[security]\nenv_names = [\"PATH\"]\n")}) {
    StartDaemon(config);
    ProcessResult result = daemon_->Cli({"connect", "env:PATH"});
    EXPECT_EQ(result.exit_code, 1);
    EXPECT_THAT(result.err, HasSubstr("env:PATH"));
    EXPECT_THAT(result.err, Not(HasSubstr(path)));
    EXPECT_THAT(result.err,
                HasSubstr(config.empty() ? "PERMISSION_DENIED" : "NOT_FOUND"));
    daemon_.reset();
  }
}

// Defect 3: a session-scoped handle worked from any session, and every
// client saw every session's handles.
TEST_F(SharedDaemonTest, SessionScopedConnectionsArePrivateToTheirSession) {
  StartDaemon();
  std::unique_ptr<Client> alice = NewClient("alice");
  std::unique_ptr<Client> bob = NewClient("bob");
  ASSERT_NE(alice, nullptr);
  ASSERT_NE(bob, nullptr);
  absl::StatusOr<Connection> mine = alice->Connect({.name = "private"});
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->scope(), "session");

  // Another session, holding the handle, cannot use it.
  for (const char* session_id : {"bob", ""}) {
    const std::string session = session_id;
    std::vector<std::string> args = {"query", "--handle", mine->handle(),
                                     "SELECT 1"};
    if (!session.empty()) {
      args.push_back("--session");
      args.push_back(session);
    }
    ProcessResult result = daemon_->Cli(args);
    EXPECT_EQ(result.exit_code, 1) << session;
    EXPECT_THAT(result.err, HasSubstr("NOT_FOUND")) << session;
  }
  ProcessResult own = daemon_->Cli(
      {"query", "--handle", mine->handle(), "--session", "alice", "SELECT 1"});
  EXPECT_EQ(own.exit_code, 0) << own.err;

  auto listed = [&](const Client& client, bool all_sessions) {
    absl::StatusOr<v1::ListConnectionsResponse> list =
        client.ListConnections(all_sessions);
    EXPECT_TRUE(list.ok()) << list.status();
    bool seen = false;
    for (const v1::ConnectionInfo& info : list->connections()) {
      if (info.handle() == mine->handle()) seen = true;
    }
    return seen;
  };
  EXPECT_TRUE(listed(*alice, false));
  EXPECT_FALSE(listed(*bob, false));
  EXPECT_TRUE(listed(*bob, true));  // the Unix socket's caller is an admin
}

// Defect 4: an Execute leaving a transaction open was acknowledged, then
// rolled back when its backend went back to the pool.
TEST_F(SharedDaemonTest, AStatementLeavingATransactionOpenIsRefusedNotLost) {
  StartDaemon();
  ASSERT_EQ(
      daemon_->Cli({"execute", "app", "CREATE TABLE t (x INTEGER)"}).exit_code,
      0);
  ProcessResult open =
      daemon_->Cli({"execute", "app", "BEGIN; INSERT INTO t VALUES (1)"});
  EXPECT_EQ(open.exit_code, 1);
  EXPECT_THAT(open.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(open.err, HasSubstr("transaction"));
  ProcessResult count = daemon_->Cli(
      {"query", "app", "SELECT count(*) AS n FROM t", "--format", "json"});
  ASSERT_EQ(count.exit_code, 0) << count.err;
  EXPECT_EQ(Cell(ParseJson(count.out), 0, 0).number_value(), 0);
  // What a client was told succeeded is there.
  ASSERT_EQ(
      daemon_
          ->Cli({"execute", "app", "BEGIN; INSERT INTO t VALUES (2); COMMIT"})
          .exit_code,
      0);
  count = daemon_->Cli(
      {"query", "app", "SELECT count(*) AS n FROM t", "--format", "json"});
  EXPECT_EQ(Cell(ParseJson(count.out), 0, 0).number_value(), 1);
}

// Defect 7: a connection cache per distinct (ttl, max_entries) a client
// sent, never deleted.
TEST_F(SharedDaemonTest, ConnectionCachesAreBoundedAndReclaimed) {
  StartDaemon("[limits]\nmax_connection_caches = 3\nhandle_idle_timeout = 1\n");
  std::unique_ptr<Client> client = NewClient("c");
  ASSERT_NE(client, nullptr);
  for (int i = 1; i <= 3; ++i) {
    absl::StatusOr<Connection> connection =
        client->Connect({.name = "app", .ttl = absl::Milliseconds(100 * i)});
    ASSERT_TRUE(connection.ok()) << connection.status();
  }
  absl::StatusOr<Connection> fourth =
      client->Connect({.name = "app", .ttl = absl::Seconds(60)});
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(fourth.status().message(),
              HasSubstr("limits.max_connection_caches"));

  // The janitor expires them, forgets their idle handles and deletes the
  // emptied caches; wait for that (a condition with a deadline).
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  double caches = -1;
  while (absl::Now() < deadline) {
    caches = Number(daemon_->Stats(), "connection_caches");
    if (caches == 0) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(caches, 0);
  EXPECT_GE(Number(daemon_->Stats(), "handles_reclaimed"), 3);
  EXPECT_TRUE(client->Connect({.name = "app", .ttl = absl::Seconds(60)}).ok());
}

}  // namespace
}  // namespace connbroker::testing
