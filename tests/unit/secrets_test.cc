// Tests of secrets discovery and of merging [connections.*] across files.
#include "connbroker/config/secrets.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::config {
namespace {

using ::connbroker::testing::TempDir;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

MATCHER_P2(IsFile, path, required, "") {
  return arg.path == path && arg.required == required;
}

TEST(SecretsFilePathsTest, FlagsWinOverEnvAndDefaults) {
  SecretsDiscovery d;
  d.flag_paths = {"/etc/a.toml", "/etc/b.toml"};
  d.env_value = "/env/x.toml";
  d.home = "/home/u";
  d.working_directory = "/srv/app";
  EXPECT_THAT(SecretsFilePaths(d), ElementsAre(IsFile("/etc/a.toml", true),
                                               IsFile("/etc/b.toml", true)));
}

TEST(SecretsFilePathsTest, EnvWinsOverDefaultsInItsOrder) {
  SecretsDiscovery d;
  d.env_value = "/env/x.toml::/env/y.toml";
  d.home = "/home/u";
  d.working_directory = "/srv/app";
  EXPECT_THAT(SecretsFilePaths(d), ElementsAre(IsFile("/env/x.toml", true),
                                               IsFile("/env/y.toml", true)));
}

TEST(SecretsFilePathsTest, DefaultsHomeThenProjectOptional) {
  SecretsDiscovery d;
  d.home = "/home/u";
  d.working_directory = "/srv/app";
  EXPECT_THAT(SecretsFilePaths(d),
              ElementsAre(IsFile("/home/u/.streamlit/secrets.toml", false),
                          IsFile("/srv/app/.streamlit/secrets.toml", false)));
}

TEST(SecretsFilePathsTest, EmptyEnvFallsBackToDefaults) {
  SecretsDiscovery d;
  d.env_value = "";
  d.working_directory = "/srv/app";
  EXPECT_THAT(SecretsFilePaths(d),
              ElementsAre(IsFile("/srv/app/.streamlit/secrets.toml", false)));
}

TEST(SecretsFilePathsTest, HomeAsWorkingDirectoryIsReadOnce) {
  SecretsDiscovery d;
  d.home = "/home/u";
  d.working_directory = "/home/u";
  EXPECT_THAT(SecretsFilePaths(d),
              ElementsAre(IsFile("/home/u/.streamlit/secrets.toml", false)));
}

TEST(SecretsLoadTest, MergesKeyByKeyLaterWins) {
  TempDir dir;
  const std::string home = dir.Write("home/.streamlit/secrets.toml", R"(
top_level = "ignored"
[connections.db]
dialect = "postgresql"
host = "global-host"
username = "global-user"
password = "global-pw"
[connections.db.create_engine_kwargs]
pool_size = 2
[connections.only_home]
url = "sqlite://"
[other]
x = 1
)");
  const std::string project = dir.Write("app/.streamlit/secrets.toml", R"(
[connections.db]
host = "project-host"
database = "sales"
[connections.db.create_engine_kwargs]
pool_timeout = "30s"
[connections."dotted.name"]
url = "sqlite:///d.db"
)");
  SecretsDiscovery d;
  d.home = dir.Path("home");
  d.working_directory = dir.Path("app");
  absl::StatusOr<Secrets> s = Secrets::Load(SecretsFilePaths(d));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->files(), ElementsAre(home, project));
  EXPECT_THAT(s->ConnectionNames(),
              ElementsAre("db", "dotted.name", "only_home"));
  const Params* db = s->FindConnection("db");
  ASSERT_NE(db, nullptr);
  const Params expected = {
      {"dialect", std::string("postgresql")},
      {"host", std::string("project-host")},
      {"username", std::string("global-user")},
      {"password", std::string("global-pw")},
      {"database", std::string("sales")},
      {"create_engine_kwargs.pool_size", int64_t{2}},
      {"create_engine_kwargs.pool_timeout", std::string("30s")},
  };
  EXPECT_EQ(*db, expected);
  ASSERT_NE(s->FindConnection("dotted.name"), nullptr);
  EXPECT_EQ(s->FindConnection("dotted.name")->at("url"),
            Value{std::string("sqlite:///d.db")});
  EXPECT_EQ(s->FindConnection("other"), nullptr);
  EXPECT_EQ(s->FindConnection("x"), nullptr);
}

TEST(SecretsLoadTest, OrderDecidesTheWinner) {
  TempDir dir;
  const std::string a = dir.Write("a.toml", "[connections.c]\nurl = 'A'\n");
  const std::string b = dir.Write("b.toml", "[connections.c]\nurl = 'B'\n");
  absl::StatusOr<Secrets> ab = Secrets::Load({{a, true}, {b, true}});
  absl::StatusOr<Secrets> ba = Secrets::Load({{b, true}, {a, true}});
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_EQ(ab->FindConnection("c")->at("url"), Value{std::string("B")});
  EXPECT_EQ(ba->FindConnection("c")->at("url"), Value{std::string("A")});
}

TEST(SecretsLoadTest, EmptySectionStillExists) {
  TempDir dir;
  const std::string a = dir.Write("a.toml", "[connections.empty]\n");
  absl::StatusOr<Secrets> s = Secrets::Load({{a, true}});
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_NE(s->FindConnection("empty"), nullptr);
  EXPECT_TRUE(s->FindConnection("empty")->empty());
}

TEST(SecretsLoadTest, MissingOptionalFilesAreSkipped) {
  TempDir dir;
  const std::string a = dir.Write("a.toml", "[connections.c]\nurl = 'A'\n");
  absl::StatusOr<Secrets> s =
      Secrets::Load({{dir.Path("nope.toml"), false}, {a, false}});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->files(), ElementsAre(a));
  absl::StatusOr<Secrets> none =
      Secrets::Load({{dir.Path("nope.toml"), false}});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->files().empty());
  EXPECT_TRUE(none->ConnectionNames().empty());
}

TEST(SecretsLoadTest, MissingRequiredFileIsNotFoundNamingIt) {
  TempDir dir;
  const std::string missing = dir.Path("required.toml");
  absl::StatusOr<Secrets> s = Secrets::Load({{missing, true}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr(missing));
}

TEST(SecretsLoadTest, SyntaxErrorNamesFileLineColumn) {
  TempDir dir;
  const std::string good = dir.Write("good.toml", "[connections.a]\nx = 1\n");
  const std::string bad = dir.Write(
      "bad.toml", "[connections.db]\nurl = \"sqlite://\"\npassword = s3cr3t\n");
  absl::StatusOr<Secrets> s = Secrets::Load({{good, true}, {bad, false}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), StartsWith(bad + ":3:12: "));
  EXPECT_THAT(std::string(s.status().message()), Not(HasSubstr("s3cr3t")));
}

TEST(SecretsTest, FromSections) {
  Secrets s = Secrets::FromSections(
      {{"b", {{"url", std::string("sqlite://")}}}, {"a", {}}}, {"/x.toml"});
  EXPECT_THAT(s.ConnectionNames(), ElementsAre("a", "b"));
  EXPECT_THAT(s.files(), ElementsAre("/x.toml"));
  ASSERT_NE(s.FindConnection("b"), nullptr);
  EXPECT_EQ(s.FindConnection("b")->size(), 1u);
  EXPECT_EQ(s.FindConnection("c"), nullptr);
}

}  // namespace
}  // namespace connbroker::config
