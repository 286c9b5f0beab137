// Integration tests of what a daemon offers beyond its own service: gRPC's
// standard health and reflection services, a 0600 socket, and a graceful
// drain on SIGTERM that lets an in-flight query finish.
#include <signal.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "integration/proto/reflection_subset.grpc.pb.h"
#include "integration/proto/standard_services.grpc.pb.h"
#include "tests/integration/daemon_fixture.h"

namespace connbroker::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

std::shared_ptr<grpc::Channel> ChannelTo(const Daemon& daemon) {
  return grpc::CreateChannel(daemon.target(),
                             grpc::InsecureChannelCredentials());
}

TEST(StandardServicesTest, HealthServiceReportsServing) {
  std::unique_ptr<Daemon> daemon = Daemon::Start({});
  ASSERT_NE(daemon, nullptr);
  auto health = grpc::health::v1::Health::NewStub(ChannelTo(*daemon));
  for (const std::string service : {"", "connbroker.v1.ConnectionBroker"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING)
        << "service '" << service << "'";
  }
}

TEST(StandardServicesTest, ReflectionListsTheBrokerService) {
  std::unique_ptr<Daemon> daemon = Daemon::Start({});
  ASSERT_NE(daemon, nullptr);
  auto reflection =
      grpc::reflection::v1alpha::ServerReflection::NewStub(ChannelTo(*daemon));
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service()) {
    names.push_back(service.name());
  }
  EXPECT_THAT(names, Contains("connbroker.v1.ConnectionBroker"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(StandardServicesTest, SocketIsPrivateToTheDaemonsUser) {
  std::unique_ptr<Daemon> daemon = Daemon::Start({});
  ASSERT_NE(daemon, nullptr);
  struct stat socket_stat;
  std::string path = daemon->target().substr(5);  // after "unix:"
  ASSERT_EQ(::stat(path.c_str(), &socket_stat), 0);
  EXPECT_TRUE(S_ISSOCK(socket_stat.st_mode));
  EXPECT_EQ(socket_stat.st_mode & 0777, 0600);
}

TEST(StandardServicesTest, SecondDaemonOnTheSameSocketIsRefused) {
  std::unique_ptr<Daemon> daemon = Daemon::Start({});
  ASSERT_NE(daemon, nullptr);
  ChildProcess second({CONNBROKERD_PATH, "--listen", daemon->target()}, {},
                      daemon->dir().path(), "");
  ProcessResult result = second.Wait();
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_THAT(result.err, HasSubstr("another daemon is already serving"));
  // The first one is undisturbed.
  EXPECT_EQ(daemon->Cli({"stats"}).exit_code, 0);
}

TEST(StandardServicesTest, SigtermLetsAnInFlightQueryFinish) {
  TempDir data;
  std::string secrets =
      data.Write("secrets.toml",
                 "[connections.mem]\ntype = \"sql\"\nurl = \"sqlite://\"\n");
  std::unique_ptr<Daemon> daemon = Daemon::Start({.secrets_files = {secrets}});
  ASSERT_NE(daemon, nullptr);
  ChildProcess query(
      {CONNBROKER_CLI_PATH, "query", "mem",
       "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
       "WHERE i < 3000000) SELECT count(*) AS c FROM n",
       "--format", "csv"},
      {{"CONNBROKER_TARGET", daemon->target()}}, data.path(), "");
  // Wait (bounded) until the daemon has the query in hand, then stop it.
  double queries = 0;
  absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (queries == 0 && absl::Now() < give_up) {
    queries = Number(daemon->Stats(), "queries");
  }
  ASSERT_EQ(queries, 1);
  daemon->Signal(SIGTERM);
  ProcessResult result = query.Wait();
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "c\n3000000\n");
  EXPECT_EQ(daemon->Stop(), 0);
  EXPECT_THAT(daemon->Log(), HasSubstr("draining in-flight calls"));
}

TEST(StandardServicesTest, ShippedExampleConfigsWork) {
  // deploy/examples/ is what users copy: it must load and serve as is.
  const std::string examples =
      std::string(CONNBROKER_SOURCE_DIR) + "/deploy/examples/";
  TempDir work;  // sqlite:///demo.db is relative to the daemon's directory
  std::unique_ptr<Daemon> daemon =
      Daemon::Start({.secrets_files = {examples + "secrets.toml"},
                     .extra_args = {"--config", examples + "broker.toml"},
                     .working_dir = work.path()});
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(Text(daemon->Stats(), "config_error"), "");
  ProcessResult demo = daemon->Cli({"query", "demo", "SELECT 1 AS one"});
  EXPECT_EQ(demo.exit_code, 0) << demo.err;
  ProcessResult by_type = daemon->Cli({"query", "sql", "SELECT 2 AS two"});
  EXPECT_EQ(by_type.exit_code, 0) << by_type.err;
  ProcessResult warehouse = daemon->Cli({"connect", "warehouse"});
  EXPECT_EQ(warehouse.exit_code, 1);
  // Its host does not exist here: the driver's own word, retryable.
  EXPECT_THAT(warehouse.err, HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(warehouse.err, ::testing::Not(HasSubstr("change-me")));
}

}  // namespace
}  // namespace connbroker::testing
