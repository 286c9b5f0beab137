// Access to a real connbrokerd: the socket directory rules, TCP with TLS and
// bearer tokens, and the refusals of unprotected TCP. Certificates are made
// with the openssl command for each run.
#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "connbroker/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kDashToken[] = "dash-token-0123456789abcdef0123";
constexpr char kSalesToken[] = "sales-token-0123456789abcdef012";

// A TCP port on 127.0.0.1 that nothing listens on right now.
int FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string Mode(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) return "missing";
  return absl::StrCat(std::to_string((info.st_mode >> 6) & 7),
                      std::to_string((info.st_mode >> 3) & 7),
                      std::to_string(info.st_mode & 7));
}

gid_t GroupOf(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 ? info.st_gid : gid_t(-1);
}

// A CA, a server certificate for localhost and 127.0.0.1, and a client
// certificate, made once for the whole suite.
class Certificates {
 public:
  Certificates() {
    const std::string script = dir_.Write("make-certs.sh", R"(set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=connbroker-test-ca
key server.key
openssl req -new -key server.key -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
key client.key
openssl req -new -key client.key -out client.csr -subj /CN=test-client
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem
)");
    const std::string command =
        absl::StrCat("cd '", dir_.path(), "' && bash make-certs.sh >'",
                     dir_.Path("openssl.log"), "' 2>&1");
    ok_ = std::system(command.c_str()) == 0;
  }
  bool ok() const { return ok_; }
  std::string Path(const std::string& name) const { return dir_.Path(name); }
  std::string Pem(const std::string& name) const {
    return ReadFile(dir_.Path(name));
  }
  std::string Log() const { return ReadFile(dir_.Path("openssl.log")); }

 private:
  TempDir dir_;
  bool ok_ = false;
};

class AccessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = new Certificates(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }

  // A token file (mode 0600) and its path.
  std::string TokenFile(const std::string& name, const std::string& token,
                        const std::string& names, bool admin) {
    const std::string path = dir_.Write(
        name, absl::StrCat("token = \"", token, "\"\nnames = ", names,
                           "\nadmin = ", admin ? "true" : "false", "\n"));
    ::chmod(path.c_str(), 0600);
    return path;
  }
  std::string Config(const std::string& text) {
    return dir_.Write("broker.toml", text);
  }
  std::string Secrets() {
    return dir_.Write(
        "secrets.toml",
        "[connections.sales]\ntype = \"sql\"\nurl = \"sqlite://\"\n"
        "[connections.hr]\ntype = \"sql\"\nurl = \"sqlite://\"\n");
  }
  // broker.toml for TLS on `listen` with the dashboards and sales tokens.
  std::string TlsConfig(const std::string& extra_tls = "") {
    return Config(absl::StrCat(
        "[tls]\ncert_file = \"", certs_->Path("server.pem"),
        "\"\nkey_file = \"", certs_->Path("server.key"), "\"\n", extra_tls,
        "[auth]\ntoken_files = [\"",
        TokenFile("dash.toml", kDashToken, "[\"*\"]", true), "\", \"",
        TokenFile("sales.toml", kSalesToken, "[\"sales\"]", false), "\"]\n"));
  }
  std::unique_ptr<Daemon> StartTls(const std::string& config,
                                   bool client_cert = false) {
    Daemon::Options options;
    if (client_cert) {
      options.client_cert_pem = certs_->Pem("client.pem");
      options.client_key_pem = certs_->Pem("client.key");
    }
    options.secrets_files = {Secrets()};
    options.extra_args = {"--config", config};
    options.listen = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
    options.root_certs_pem = certs_->Pem("ca.pem");
    options.bearer_token = kDashToken;
    return Daemon::Start(options);
  }
  std::unique_ptr<Client> MakeClient(const Daemon& daemon,
                                     ClientOptions options) {
    options.target = daemon.target();
    options.default_deadline = absl::Seconds(10);
    absl::StatusOr<std::unique_ptr<Client>> client =
        Client::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  ProcessResult Refused(const std::string& listen,
                        const std::vector<std::string>& extra_args = {}) {
    Daemon::Options options;
    options.listen = listen;
    options.extra_args = extra_args;
    return Daemon::RunExpectingExit(options);
  }

  static Certificates* certs_;
  TempDir dir_;
};

Certificates* AccessTest::certs_ = nullptr;

// --- The Unix socket's directory --------------------------------------------

TEST_F(AccessTest, SocketDirectoryOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown to nobody";
  const std::string dir = dir_.Path("theirs");
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(dir.c_str(), 65534, 65534), 0);
  ProcessResult result = Refused("unix:" + dir + "/broker.sock");
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("socket directory " + dir));
  EXPECT_THAT(result.err, HasSubstr("owned by uid 65534 (nobody)"));
  EXPECT_THAT(result.err, HasSubstr("--listen unix:"));
}

TEST_F(AccessTest, WritableSocketDirectoryIsRefused) {
  for (mode_t mode : {0777, 0770, 0702}) {
    const std::string dir = dir_.Path(absl::StrCat("open", mode));
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(dir.c_str(), mode), 0);
    ProcessResult result = Refused("unix:" + dir + "/broker.sock");
    EXPECT_EQ(result.exit_code, 1) << result.err;
    EXPECT_THAT(result.err, HasSubstr(absl::StrCat("socket directory ", dir,
                                                   " has mode 0")));
    EXPECT_THAT(result.err, HasSubstr("chmod 700 " + dir));
  }
}

TEST_F(AccessTest, SymlinkedSocketDirectoryIsRefused) {
  const std::string real = dir_.Path("real");
  const std::string link = dir_.Path("link");
  ASSERT_EQ(::mkdir(real.c_str(), 0700), 0);
  ASSERT_EQ(::symlink(real.c_str(), link.c_str()), 0);
  ProcessResult result = Refused("unix:" + link + "/broker.sock");
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr(link + " is a symbolic link"));
}

TEST_F(AccessTest, DaemonMakesItsSocketDirectoryPrivate) {
  Daemon::Options options;
  options.listen = "unix:" + dir_.Path("made") + "/broker.sock";
  std::unique_ptr<Daemon> daemon = Daemon::Start(options);
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(Mode(dir_.Path("made")), "700");
  EXPECT_EQ(Mode(dir_.Path("made/broker.sock")), "600");
}

TEST_F(AccessTest, SocketGroupGetsTheDirectoryAndTheSocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chgrp to nogroup";
  group* nogroup = ::getgrnam("nogroup");
  if (nogroup == nullptr) GTEST_SKIP() << "no group 'nogroup'";
  const gid_t gid = nogroup->gr_gid;
  Daemon::Options options;
  options.listen = "unix:" + dir_.Path("shared") + "/broker.sock";
  options.extra_args = {"--config",
                        Config("[broker]\nsocket_group = \"nogroup\"\n")};
  std::unique_ptr<Daemon> daemon = Daemon::Start(options);
  ASSERT_NE(daemon, nullptr);
  EXPECT_EQ(Mode(dir_.Path("shared")), "710");
  EXPECT_EQ(GroupOf(dir_.Path("shared")), gid);
  EXPECT_EQ(Mode(dir_.Path("shared/broker.sock")), "660");
  EXPECT_EQ(GroupOf(dir_.Path("shared/broker.sock")), gid);
  daemon.reset();

  // An existing directory of another group is the administrator's to change.
  const std::string mine = dir_.Path("mine");
  ASSERT_EQ(::mkdir(mine.c_str(), 0700), 0);
  ProcessResult result = Refused("unix:" + mine + "/broker.sock",
                                 {"--config", dir_.Path("broker.toml")});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("chgrp nogroup " + mine));
}

TEST_F(AccessTest, UnknownSocketGroupIsRefused) {
  ProcessResult result = Refused(
      "unix:" + dir_.Path("s") + "/broker.sock",
      {"--config", Config("[broker]\nsocket_group = \"no-such-group-cb\"\n")});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("socket_group 'no-such-group-cb'"));
}

// --- TCP ---------------------------------------------------------------------

TEST_F(AccessTest, PlainTcpIsRefused) {
  ProcessResult result =
      Refused(absl::StrCat("127.0.0.1:", FreeLoopbackPort()));
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("requires TLS and bearer tokens"));
  EXPECT_THAT(result.err, HasSubstr("[tls] cert_file and key_file"));
}

TEST_F(AccessTest, InsecureLoopbackOnlyOnLoopback) {
  const std::string config = Config("[broker]\ninsecure_loopback = true\n");
  ProcessResult result = Refused(absl::StrCat("0.0.0.0:", FreeLoopbackPort()),
                                 {"--config", config});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("only on a loopback address"));

  Daemon::Options options;
  options.listen = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  options.extra_args = {"--config", config};
  std::unique_ptr<Daemon> daemon = Daemon::Start(options);
  ASSERT_NE(daemon, nullptr);
  EXPECT_THAT(daemon->Log(), HasSubstr("insecure_loopback"));
  std::unique_ptr<Client> client = MakeClient(*daemon, {});
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Stats().ok());
}

TEST_F(AccessTest, TlsWithoutTokensIsRefused) {
  const std::string config = Config(
      absl::StrCat("[tls]\ncert_file = \"", certs_->Path("server.pem"),
                   "\"\nkey_file = \"", certs_->Path("server.key"), "\"\n"));
  ProcessResult result = Refused(absl::StrCat("127.0.0.1:", FreeLoopbackPort()),
                                 {"--config", config});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("requires bearer tokens"));
}

TEST_F(AccessTest, MismatchedKeyIsRefused) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  const std::string config = Config(absl::StrCat(
      "[tls]\ncert_file = \"", certs_->Path("server.pem"), "\"\nkey_file = \"",
      certs_->Path("client.key"), "\"\n[auth]\ntoken_files = [\"",
      TokenFile("dash.toml", kDashToken, "[\"*\"]", true), "\"]\n"));
  ProcessResult result = Refused(absl::StrCat("127.0.0.1:", FreeLoopbackPort()),
                                 {"--config", config});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is not the key of the certificate"));
}

TEST_F(AccessTest, TokenFileOthersCanReadIsRefused) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  const std::string config = TlsConfig();
  ASSERT_EQ(::chmod(dir_.Path("sales.toml").c_str(), 0644), 0);
  ProcessResult result = Refused(absl::StrCat("127.0.0.1:", FreeLoopbackPort()),
                                 {"--config", config});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("token file " + dir_.Path("sales.toml")));
  EXPECT_THAT(result.err, Not(HasSubstr(kSalesToken)));
}

TEST_F(AccessTest, TlsWithATokenServes) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  std::unique_ptr<Daemon> daemon = StartTls(TlsConfig());
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> client = MakeClient(
      *daemon,
      {.root_certs_pem = certs_->Pem("ca.pem"), .bearer_token = kDashToken});
  ASSERT_NE(client, nullptr);
  absl::StatusOr<v1::GetStatsResponse> stats = client->Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();

  // The command, with the token in a file and the CA by flag.
  const std::string token_file =
      dir_.Write("token", kDashToken + std::string("\n"));
  ProcessResult cli =
      daemon->Cli({"stats", "--format", "json", "--ca", certs_->Path("ca.pem"),
                   "--token-file", token_file});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
}

TEST_F(AccessTest, TlsRefusesMissingAndWrongTokens) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  std::unique_ptr<Daemon> daemon = StartTls(TlsConfig());
  ASSERT_NE(daemon, nullptr);

  std::unique_ptr<Client> anonymous =
      MakeClient(*daemon, {.root_certs_pem = certs_->Pem("ca.pem")});
  absl::Status status = anonymous->Stats().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("requires a bearer token on TCP"));
  // Other services on the port too.
  EXPECT_EQ(anonymous->Connect({.name = "sales"}).status().code(),
            absl::StatusCode::kUnauthenticated);

  std::unique_ptr<Client> wrong =
      MakeClient(*daemon, {.root_certs_pem = certs_->Pem("ca.pem"),
                           .bearer_token = "wrong-token-0123456789abcdef"});
  status = wrong->Stats().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
  EXPECT_EQ(status.message(), "unknown bearer token");

  ProcessResult cli = daemon->Cli({"stats", "--ca", certs_->Path("ca.pem")});
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_THAT(cli.err, HasSubstr("UNAUTHENTICATED"));
  EXPECT_THAT(daemon->Log(), Not(HasSubstr("wrong-token")));
}

TEST_F(AccessTest, PlainTextClientCannotTalkToTheTlsPort) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  std::unique_ptr<Daemon> daemon = StartTls(TlsConfig());
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> plain =
      MakeClient(*daemon, {.bearer_token = kDashToken});
  absl::Status status = plain->Stats().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  // Nor one that trusts another CA (its own server certificate as a CA).
  std::unique_ptr<Client> other_ca =
      MakeClient(*daemon, {.root_certs_pem = certs_->Pem("client.pem"),
                           .bearer_token = kDashToken});
  EXPECT_EQ(other_ca->Stats().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(AccessTest, RequiredClientCertificate) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  std::unique_ptr<Daemon> daemon = StartTls(
      TlsConfig(absl::StrCat("client_ca_file = \"", certs_->Path("ca.pem"),
                             "\"\nrequire_client_cert = true\n")),
      /*client_cert=*/true);
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> with_cert =
      MakeClient(*daemon, {.root_certs_pem = certs_->Pem("ca.pem"),
                           .client_cert_pem = certs_->Pem("client.pem"),
                           .client_key_pem = certs_->Pem("client.key"),
                           .bearer_token = kDashToken});
  absl::Status status = with_cert->Stats().status();
  EXPECT_TRUE(status.ok()) << status;
  std::unique_ptr<Client> without_cert = MakeClient(
      *daemon,
      {.root_certs_pem = certs_->Pem("ca.pem"), .bearer_token = kDashToken});
  EXPECT_EQ(without_cert->Stats().status().code(),
            absl::StatusCode::kUnavailable);
}

// --- Per-call limits of a token
// ------------------------------------------------
//
// What a token's limits mean for each call:
//   - a call with a wrong token on the Unix socket: UNAUTHENTICATED
//   - Connect to a name the token does not list: PERMISSION_DENIED
//   - GetStats and Reset with a non-admin token: PERMISSION_DENIED
//   - ListConnections with a non-admin token: OK, showing only the names the
//     token may use (here not "hr", opened by the socket's owner).

class TokenLimits : public AccessTest {
 protected:
  // A daemon on its Unix socket that also knows the non-admin "sales"
  // token (limited to the connection named sales).
  std::unique_ptr<Daemon> StartOnSocketWithSalesToken() {
    Daemon::Options options;
    options.secrets_files = {Secrets()};
    options.extra_args = {
        "--config", Config(absl::StrCat("[auth]\ntoken_files = [\"",
                                        TokenFile("sales.toml", kSalesToken,
                                                  "[\"sales\"]", false),
                                        "\"]\n"))};
    return Daemon::Start(options);
  }
};

TEST_F(TokenLimits, WrongTokenOnTheUnixSocketIsRefused) {
  std::unique_ptr<Daemon> daemon = StartOnSocketWithSalesToken();
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> wrong =
      MakeClient(*daemon, {.bearer_token = "wrong-token-0123456789abcdef"});
  EXPECT_EQ(wrong->Stats().status().code(), absl::StatusCode::kUnauthenticated);
  // No token: the socket's owner, with every right.
  std::unique_ptr<Client> owner = MakeClient(*daemon, {});
  EXPECT_TRUE(owner->Stats().ok());
}

TEST_F(TokenLimits, TokenLimitedToNamesOverTls) {
  ASSERT_TRUE(certs_->ok()) << certs_->Log();
  std::unique_ptr<Daemon> daemon = StartTls(TlsConfig());
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> sales = MakeClient(
      *daemon,
      {.root_certs_pem = certs_->Pem("ca.pem"), .bearer_token = kSalesToken});
  absl::StatusOr<Connection> mine = sales->Connect({.name = "sales"});
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_TRUE(mine->Query("SELECT 1").ok());
  absl::StatusOr<Connection> theirs = sales->Connect({.name = "hr"});
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kPermissionDenied)
      << theirs.status();
}

TEST_F(TokenLimits, NonAdminTokenOnTheUnixSocket) {
  std::unique_ptr<Daemon> daemon = StartOnSocketWithSalesToken();
  ASSERT_NE(daemon, nullptr);
  std::unique_ptr<Client> owner = MakeClient(*daemon, {.session_id = "owner"});
  ASSERT_TRUE(owner->Connect({.name = "hr"}).ok());

  std::unique_ptr<Client> sales =
      MakeClient(*daemon, {.session_id = "sales", .bearer_token = kSalesToken});
  absl::StatusOr<Connection> mine = sales->Connect({.name = "sales"});
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(sales->Connect({.name = "hr"}).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(sales->Stats().status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(mine->Reset().code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::ListConnectionsResponse> listed = sales->ListConnections();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_THAT(listed->DebugString(), Not(HasSubstr("\"hr\"")));
  EXPECT_THAT(listed->DebugString(), HasSubstr("\"sales\""));
}

}  // namespace
}  // namespace connbroker::testing
