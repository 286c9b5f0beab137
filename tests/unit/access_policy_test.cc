// Tests of token files, AccessPolicy (who a call's metadata makes the
// caller) and the listen-address checks that go with it.
#include "server/access_policy.h"

#include <sys/stat.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "connbroker/config/token_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/listen_address.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kSalesToken[] = "sales-token-0123456789abcdef";
constexpr char kAdminToken[] = "admin-token-fedcba9876543210";

class AccessPolicyTest : public ::testing::Test {
 protected:
  // Writes a token file with mode 0600 (or `mode`) and returns its path.
  std::string TokenFile(const std::string& name, const std::string& text,
                        mode_t mode = 0600) {
    std::string path = dir_.Write(name, text);
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string SalesFile() {
    return TokenFile("sales.toml",
                     absl::StrCat("token = \"", kSalesToken, "\"\n",
                                  "names = [\"sales\", \"analytics_*\"]\n"));
  }
  std::string AdminFile() {
    return TokenFile("admin.toml",
                     absl::StrCat("token = \"", kAdminToken, "\"\n",
                                  "names = [\"*\"]\nadmin = true\n",
                                  "label = \"operators\"\n"));
  }

  std::unique_ptr<AccessPolicy> Load(std::vector<std::string> files, bool tcp) {
    config::AccessSettings settings;
    settings.token_files = std::move(files);
    absl::StatusOr<std::unique_ptr<AccessPolicy>> policy =
        AccessPolicy::Load(settings, tcp);
    EXPECT_TRUE(policy.ok()) << policy.status();
    return policy.ok() ? *std::move(policy) : nullptr;
  }

  // Authenticate with `authorization` as the call's only such entry ("":
  // none).
  static absl::StatusOr<Caller> Call(const AccessPolicy& policy,
                                     const std::string& authorization) {
    AccessPolicy::Metadata metadata;
    metadata.emplace("connbroker-session", "s1");
    if (!authorization.empty())
      metadata.emplace("authorization", authorization);
    return policy.Authenticate(metadata, "s1");
  }

  testing::TempDir dir_;
};

TEST_F(AccessPolicyTest, TokenFileIsRead) {
  absl::StatusOr<config::TokenFile> file = config::LoadTokenFile(SalesFile());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->token, kSalesToken);
  EXPECT_THAT(file->names, ElementsAre("sales", "analytics_*"));
  EXPECT_FALSE(file->admin);
  EXPECT_EQ(file->label, "sales.toml");  // the file's name by default
  file = config::LoadTokenFile(AdminFile());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->admin);
  EXPECT_EQ(file->label, "operators");
}

TEST_F(AccessPolicyTest, TokenFileOthersMayReadIsRefused) {
  for (mode_t mode : {0644, 0640, 0604, 0620}) {
    const std::string path = TokenFile(
        "open.toml",
        absl::StrCat("token = \"", kSalesToken, "\"\nnames = [\"a\"]\n"), mode);
    absl::StatusOr<config::TokenFile> file = config::LoadTokenFile(path);
    ASSERT_FALSE(file.ok()) << mode;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(file.status().message()), HasSubstr("chmod 600"));
    EXPECT_THAT(std::string(file.status().message()),
                Not(HasSubstr(kSalesToken)));
  }
}

TEST_F(AccessPolicyTest, MalformedTokenFilesAreNamedWithoutTheToken) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"token = \"short\"\nnames = [\"a\"]\n", "at least 16"},
      {"names = [\"a\"]\n", "'token' is missing"},
      {absl::StrCat("token = \"", kSalesToken, "\"\n"), "'names' is missing"},
      {absl::StrCat("token = \"", kSalesToken, "\"\nnames = [\"a*b\"]\n"),
       "'*' may only end"},
      {absl::StrCat("token = \"", kSalesToken, "\"\nnames = [\"a\"]\n",
                    "admin = \"yes\"\n"),
       "'admin'"},
      {absl::StrCat("token = \"", kSalesToken, "\"\nnames = [\"a\"]\n",
                    "expires = 3\n"),
       "'expires' is not a key"},
  };
  for (const auto& [text, message] : cases) {
    const std::string path = TokenFile("bad.toml", text);
    absl::StatusOr<config::TokenFile> file = config::LoadTokenFile(path);
    ASSERT_FALSE(file.ok()) << text;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(path));
    EXPECT_THAT(std::string(file.status().message()), HasSubstr(message));
    EXPECT_THAT(std::string(file.status().message()),
                Not(HasSubstr(kSalesToken)));
  }
  // A syntax error names file:line:column, as every TOML file's does.
  const std::string path =
      TokenFile("syntax.toml", "names = [\"a\"]\ntoken = \n");
  absl::StatusOr<config::TokenFile> file = config::LoadTokenFile(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(std::string(file.status().message()), StartsWith(path + ":2:"));
}

TEST_F(AccessPolicyTest, LoadRefusesABadTokenFile) {
  config::AccessSettings settings;
  settings.token_files = {SalesFile(), dir_.Path("missing.toml")};
  absl::StatusOr<std::unique_ptr<AccessPolicy>> policy =
      AccessPolicy::Load(settings, /*tcp=*/true);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(policy.status().message()),
              HasSubstr("missing.toml"));
}

TEST_F(AccessPolicyTest, TwoFilesWithOneTokenAreRefused) {
  const std::string copy = TokenFile(
      "copy.toml",
      absl::StrCat("token = \"", kSalesToken, "\"\nnames = [\"x\"]\n"));
  config::AccessSettings settings;
  settings.token_files = {SalesFile(), copy};
  absl::StatusOr<std::unique_ptr<AccessPolicy>> policy =
      AccessPolicy::Load(settings, /*tcp=*/true);
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(std::string(policy.status().message()), HasSubstr(copy));
  EXPECT_THAT(std::string(policy.status().message()),
              Not(HasSubstr(kSalesToken)));
}

TEST_F(AccessPolicyTest, TokenGivesItsNamesAndAdminFlag) {
  std::unique_ptr<AccessPolicy> policy =
      Load({SalesFile(), AdminFile()}, /*tcp=*/true);
  ASSERT_NE(policy, nullptr);
  EXPECT_TRUE(policy->tokens_required());
  EXPECT_EQ(policy->token_count(), 2u);

  absl::StatusOr<Caller> sales =
      Call(*policy, absl::StrCat("Bearer ", kSalesToken));
  ASSERT_TRUE(sales.ok()) << sales.status();
  EXPECT_EQ(sales->who, "token 'sales.toml'");
  EXPECT_EQ(sales->session, "s1");
  EXPECT_FALSE(sales->admin);
  EXPECT_TRUE(sales->MayUse("sales"));
  EXPECT_TRUE(sales->MayUse("analytics_eu"));
  EXPECT_FALSE(sales->MayUse("salesforce"));
  EXPECT_FALSE(sales->MayUse("hr"));

  // The scheme is case-insensitive (RFC 6750).
  absl::StatusOr<Caller> admin =
      Call(*policy, absl::StrCat("bearer ", kAdminToken));
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_EQ(admin->who, "token 'operators'");
  EXPECT_TRUE(admin->admin);
  EXPECT_TRUE(admin->MayUse("hr"));
}

TEST_F(AccessPolicyTest, TcpRequiresAToken) {
  std::unique_ptr<AccessPolicy> policy = Load({SalesFile()}, /*tcp=*/true);
  ASSERT_NE(policy, nullptr);
  absl::StatusOr<Caller> caller = Call(*policy, "");
  ASSERT_FALSE(caller.ok());
  EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(caller.status().message()),
              HasSubstr("requires a bearer token on TCP"));
}

TEST_F(AccessPolicyTest, WrongTokensAreUnknownAndNeverEchoed) {
  std::unique_ptr<AccessPolicy> policy = Load({SalesFile()}, /*tcp=*/true);
  ASSERT_NE(policy, nullptr);
  const std::string token = kSalesToken;
  // A prefix, an extension, and a last character off: every byte counts.
  for (const std::string& wrong :
       {token.substr(0, token.size() - 1), token + "0",
        token.substr(0, token.size() - 1) + "X", std::string("x")}) {
    absl::StatusOr<Caller> caller = Call(*policy, "Bearer " + wrong);
    ASSERT_FALSE(caller.ok()) << wrong;
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(caller.status().message(), "unknown bearer token");
  }
  for (const std::string& malformed :
       {std::string("Basic dXNlcjpwYXNz"), token, std::string("Bearer ")}) {
    absl::StatusOr<Caller> caller = Call(*policy, malformed);
    ASSERT_FALSE(caller.ok()) << malformed;
    EXPECT_EQ(caller.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_THAT(std::string(caller.status().message()), Not(HasSubstr(token)));
  }
  AccessPolicy::Metadata two;
  two.emplace("authorization", "Bearer " + token);
  two.emplace("authorization", "Bearer " + token);
  EXPECT_EQ(policy->Authenticate(two, "").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AccessPolicyTest, UnixSocketNeedsNoTokenButChecksOneGiven) {
  std::unique_ptr<AccessPolicy> policy = Load({SalesFile()}, /*tcp=*/false);
  ASSERT_NE(policy, nullptr);
  EXPECT_FALSE(policy->tokens_required());
  absl::StatusOr<Caller> owner = Call(*policy, "");
  ASSERT_TRUE(owner.ok()) << owner.status();
  EXPECT_EQ(owner->who, "unix socket");
  EXPECT_TRUE(owner->admin);
  EXPECT_FALSE(owner->names.has_value());
  // A token drops privileges to the token's.
  absl::StatusOr<Caller> limited =
      Call(*policy, absl::StrCat("Bearer ", kSalesToken));
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_FALSE(limited->admin);
  EXPECT_FALSE(limited->MayUse("hr"));
  EXPECT_EQ(Call(*policy, "Bearer not-a-token-at-all-000").status().code(),
            absl::StatusCode::kUnauthenticated);
  // With no token files at all, any token is unknown.
  std::unique_ptr<AccessPolicy> open = Load({}, /*tcp=*/false);
  ASSERT_NE(open, nullptr);
  EXPECT_EQ(Call(*open, absl::StrCat("Bearer ", kSalesToken)).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AccessPolicyTest, ReloadReadsChangedFilesAndKeepsTheLastGood) {
  const std::string path = SalesFile();
  std::unique_ptr<AccessPolicy> policy = Load({path}, /*tcp=*/true);
  ASSERT_NE(policy, nullptr);
  const std::string old_auth = absl::StrCat("Bearer ", kSalesToken);
  EXPECT_TRUE(policy->Reload().ok());  // nothing changed

  // Broken: the last good token stays valid, and the error names the file.
  TokenFile("sales.toml", "token = \n");
  absl::Status reload = policy->Reload();
  EXPECT_EQ(reload.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(reload.message()), HasSubstr(path));
  EXPECT_TRUE(Call(*policy, old_auth).ok());
  // Readable by others: refused the same way.
  TokenFile("sales.toml",
            "token = \"new-token-0123456789abcdef\"\nnames = [\"a\"]\n", 0644);
  EXPECT_EQ(policy->Reload().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Call(*policy, old_auth).ok());

  // Fixed: the new token replaces the old one.
  TokenFile("sales.toml",
            "token = \"new-token-0123456789abcdef\"\nnames = [\"a\"]\n");
  EXPECT_TRUE(policy->Reload().ok());
  EXPECT_EQ(Call(*policy, old_auth).status().code(),
            absl::StatusCode::kUnauthenticated);
  absl::StatusOr<Caller> caller =
      Call(*policy, "Bearer new-token-0123456789abcdef");
  ASSERT_TRUE(caller.ok()) << caller.status();
  EXPECT_THAT(*caller->names, ElementsAre("a"));

  // Deleted: the token is revoked.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_TRUE(policy->Reload().ok());
  EXPECT_EQ(policy->token_count(), 0u);
  EXPECT_EQ(Call(*policy, "Bearer new-token-0123456789abcdef").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(AccessPolicyTest, ReloadKeepsTokensWhenTwoFilesCollide) {
  const std::string sales = SalesFile();
  const std::string admin = AdminFile();
  std::unique_ptr<AccessPolicy> policy = Load({sales, admin}, /*tcp=*/true);
  ASSERT_NE(policy, nullptr);
  TokenFile("admin.toml", absl::StrCat("token = \"", kSalesToken,
                                       "\"\nnames = [\"*\"]\nadmin = true\n"));
  EXPECT_FALSE(policy->Reload().ok());
  EXPECT_TRUE(Call(*policy, absl::StrCat("Bearer ", kAdminToken))->admin);
  // Fixing the other file is enough: the colliding one is read again.
  TokenFile("sales.toml",
            "token = \"another-token-0123456789\"\n"
            "names = [\"sales\"]\n");
  EXPECT_TRUE(policy->Reload().ok());
  EXPECT_TRUE(Call(*policy, absl::StrCat("Bearer ", kSalesToken))->admin);
  EXPECT_EQ(Call(*policy, absl::StrCat("Bearer ", kAdminToken)).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(ListenerSecurityTest, TcpNeedsTlsAndTokensOrLoopback) {
  config::AccessSettings none;
  EXPECT_TRUE(CheckListenerSecurity("unix:/run/x.sock", none).ok());
  absl::Status s = CheckListenerSecurity("0.0.0.0:7000", none);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("[tls] cert_file"));

  config::AccessSettings tls;
  tls.tls_cert_file = "/c.pem";
  tls.tls_key_file = "/k.pem";
  s = CheckListenerSecurity("0.0.0.0:7000", tls);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token_files"));
  tls.token_files = {"/t.toml"};
  EXPECT_TRUE(CheckListenerSecurity("0.0.0.0:7000", tls).ok());

  config::AccessSettings loopback;
  loopback.insecure_loopback = true;
  for (const char* address : {"127.0.0.1:7000", "127.3.2.1:1", "[::1]:7000",
                              "localhost:7000", "LocalHost:1"}) {
    EXPECT_TRUE(CheckListenerSecurity(address, loopback).ok()) << address;
  }
  for (const char* address :
       {"0.0.0.0:7000", "[::]:7000", "10.0.0.1:7000", "db.internal:7000",
        "128.0.0.1:7000", "[::ffff:127.0.0.1]:7000"}) {
    s = CheckListenerSecurity(address, loopback);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << address;
    EXPECT_THAT(std::string(s.message()), HasSubstr("loopback")) << address;
  }
}

TEST(ListenAddressTest, UnknownSocketGroupIsNamed) {
  absl::StatusOr<std::optional<SocketGroup>> group =
      ResolveSocketGroup("no-such-group-connbroker");
  ASSERT_FALSE(group.ok());
  EXPECT_THAT(std::string(group.status().message()),
              HasSubstr("'no-such-group-connbroker'"));
  group = ResolveSocketGroup("");
  ASSERT_TRUE(group.ok());
  EXPECT_FALSE(group->has_value());
}

TEST(ListenAddressTest, AbstractSocketsAreRefused) {
  EXPECT_FALSE(PrepareListenAddress("unix-abstract:connbroker").ok());
}

}  // namespace
}  // namespace connbroker::server
