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
  // A change is read once it has settled: the same at two checks in a row.
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());  // once, not every tick
  v1::ConnectRequest request;
  request.set_name("b");
  EXPECT_TRUE(broker_->Connect(request, Caller{}).ok());
}

TEST_F(BrokerReloadTest, ABrokenEditIsReportedOnceAndKeepsTheLastGoodOnes) {
  dir_.Write("secrets.toml", "[connections.a]\nurl = = 1\n");
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_NE(broker_->Stats(Caller{})->config_error(), "");
  v1::ConnectRequest request;
  request.set_name("a");
  EXPECT_TRUE(broker_->Connect(request, Caller{}).ok());
}

TEST_F(BrokerReloadTest, AChangedSectionForgetsItsConnectionsOnly) {
  v1::ConnectRequest a;
  a.set_name("a");
  v1::ConnectRequest other;
  other.set_name("other");
  other.set_type("sql");
  (*other.mutable_kwargs())["url"].set_text_value("sqlite://");
  absl::StatusOr<v1::ConnectResponse> first = broker_->Connect(a, Caller{});
  absl::StatusOr<v1::ConnectResponse> kept = broker_->Connect(other, Caller{});
  ASSERT_TRUE(first.ok() && kept.ok());
  EXPECT_EQ(broker_->Stats(Caller{})->connections_live(), 2);

  dir_.Write("secrets.toml",
             "[connections.a]\ntype = \"sql\"\nurl = \"sqlite:///:memory:\"\n");
  ASSERT_FALSE(broker_->ReloadSecretsIfChanged());
  ASSERT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_EQ(broker_->Stats(Caller{})->connections_live(), 1);
  v1::QueryRequest query;
  query.mutable_target()->set_handle(first->handle());
  query.set_sql("SELECT 1");
  absl::StatusOr<std::unique_ptr<QueryRun>> run =
      broker_->StartQuery(query, Caller{}, [] {});
  EXPECT_EQ(run.status().code(), absl::StatusCode::kNotFound);
  query.mutable_target()->set_handle(kept->handle());
  EXPECT_TRUE(broker_->StartQuery(query, Caller{}, [] {}).ok());
}

// Defect 5 of issue 11: a file rewritten in place was read half-written, so
// its section vanished (and its connections were dropped) until the next
// check. Each Write below is what a check could see mid-rewrite.
TEST_F(BrokerReloadTest, AFileBeingRewrittenIsNotReadUntilItSettles) {
  v1::ConnectRequest a;
  a.set_name("a");
  absl::StatusOr<v1::ConnectResponse> before = broker_->Connect(a, Caller{});
  ASSERT_TRUE(before.ok()) << before.status();

  const std::string full =
      "[connections.a]\ntype = \"sql\"\nurl = \"sqlite://\"\n\n"
      "[connections.b]\ntype = \"sql\"\nurl = \"sqlite://\"\n";
  for (size_t written : {size_t{0}, full.size() / 3, full.size() / 2}) {
    dir_.Write("secrets.toml", full.substr(0, written));
    EXPECT_FALSE(broker_->ReloadSecretsIfChanged()) << written;
    absl::StatusOr<v1::ConnectResponse> during = broker_->Connect(a, Caller{});
    ASSERT_TRUE(during.ok()) << during.status();
    EXPECT_EQ(during->handle(), before->handle());
  }
  dir_.Write("secrets.toml", full);
  EXPECT_FALSE(broker_->ReloadSecretsIfChanged());
  EXPECT_TRUE(broker_->ReloadSecretsIfChanged());
  EXPECT_EQ(broker_->Stats(Caller{})->config_error(), "");
  absl::StatusOr<v1::ConnectResponse> after = broker_->Connect(a, Caller{});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->handle(), before->handle());  // section a never changed
}

}  // namespace
}  // namespace connbroker::server
