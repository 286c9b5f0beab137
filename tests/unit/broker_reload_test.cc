// Tests of Broker's secrets reloading: a reload happens when, and only when,
// a secrets file changed on disk. Real files; the database factory opens
// real SQLite (in memory).
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "server/broker.h"
#include "server/drivers/database.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::server {
namespace {

using ::connbroker::testing::TempDir;

class BrokerReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ =
        dir_.Write("secrets.toml",
                   "[connections.a]\ntype = \"sql\"\nurl = \"sqlite://\"\n");
    Broker::Options options;
    options.secrets_files = {{path_, /*required=*/true}};
    options.env = [](const std::string&) { return std::nullopt; };
    options.database_factory = OpenDatabase;
    // "other" below is an ad-hoc (in-memory) connection: no section.
    options.settings.allow_ad_hoc = true;
    broker_ = std::make_unique<Broker>(std::move(options), Clock::Real());
  }

  TempDir dir_;
  std::string path_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(BrokerReloadTest, ReloadsOnlyWhenAFileChanged) {
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  dir_.Write("secrets.toml",
             "[connections.a]\ntype = \"sql\"\nurl = \"sqlite://\"\n\n"
             "[connections.b]\ntype = \"sql\"\nurl = \"sqlite://\"\n");
  EXPECT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());  // once, not every tick
  v1::ConnectRequest request;
  request.set_name("b");
  EXPECT_TRUE(broker_->Connect(request, "").ok());
}

TEST_F(BrokerReloadTest, ABrokenEditIsReportedOnceAndKeepsTheLastGoodOnes) {
  dir_.Write("secrets.toml", "[connections.a]\nurl = = 1\n");
  EXPECT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_NE(broker_->Stats().config_error(), "");
  v1::ConnectRequest request;
  request.set_name("a");
  EXPECT_TRUE(broker_->Connect(request, "").ok());
}

TEST_F(BrokerReloadTest, AChangedSectionForgetsItsConnectionsOnly) {
  v1::ConnectRequest a;
  a.set_name("a");
  v1::ConnectRequest other;
  other.set_name("other");
  other.set_type("sql");
  (*other.mutable_kwargs())["url"].set_text_value("sqlite://");
  absl::StatusOr<v1::ConnectResponse> first = broker_->Connect(a, "");
  absl::StatusOr<v1::ConnectResponse> kept = broker_->Connect(other, "");
  ASSERT_TRUE(first.ok() && kept.ok());
  EXPECT_EQ(broker_->Stats().connections_live(), 2);

  dir_.Write("secrets.toml",
             "[connections.a]\ntype = \"sql\"\nurl = \"sqlite:///:memory:\"\n");
  ASSERT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_EQ(broker_->Stats().connections_live(), 1);
  v1::QueryRequest query;
  query.mutable_target()->set_handle(first->handle());
  query.set_sql("SELECT 1");
  absl::StatusOr<std::unique_ptr<QueryRun>> run =
      broker_->StartQuery(query, "", [] {});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kNotFound);
  query.mutable_target()->set_handle(kept->handle());
  EXPECT_TRUE(broker_->StartQuery(query, "", [] {}).ok());
}

}  // namespace
}  // namespace connbroker::server
