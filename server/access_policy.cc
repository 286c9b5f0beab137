// AccessPolicy: token files in, Callers out.
#include "server/access_policy.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "connbroker/config/token_file.h"
#include "server/listen_address.h"
#include "server/logging.h"

namespace connbroker::server {
namespace {

constexpr char kAuthorization[] = "authorization";

// Refuses calls AccessPolicy::Authenticate refuses, before the service.
class TokenProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenProcessor(const AccessPolicy* policy) : policy_(policy) {}

  // A digest and a short lock: fine on gRPC's own thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* /*context*/,
                       OutputMetadata* /*consumed_auth_metadata*/,
                       OutputMetadata* /*response_metadata*/) override {
    // Nothing is consumed: the service reads the token again for the Caller.
    absl::StatusOr<Caller> caller = policy_->Authenticate(auth_metadata, "");
    if (caller.ok()) return grpc::Status::OK;
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        std::string(caller.status().message()));
  }

 private:
  const AccessPolicy* const policy_;
};

}  // namespace

std::shared_ptr<grpc::AuthMetadataProcessor>
AccessPolicy::MakeAuthMetadataProcessor() const {
  return std::make_shared<TokenProcessor>(this);
}

absl::Status CheckListenerSecurity(const std::string& listen,
                                   const config::AccessSettings& access) {
  if (absl::StartsWith(listen, "unix:")) return absl::OkStatus();
  if (access.tls()) {
    if (access.token_files.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "listening on TCP ", listen,
          " requires bearer tokens: set [auth] token_files in broker.toml "
          "(TLS alone lets anyone who can reach the port in)"));
    }
    return absl::OkStatus();
  }
  if (!access.insecure_loopback) {
    return absl::FailedPreconditionError(absl::StrCat(
        "listening on TCP ", listen,
        " requires TLS and bearer tokens: set [tls] cert_file and key_file "
        "and [auth] token_files in broker.toml, or listen on a Unix socket "
        "(unix:/path); for a loopback address only, [broker] "
        "insecure_loopback = true permits plain TCP"));
  }
  if (!IsLoopbackAddress(listen)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "insecure_loopback permits plain TCP only on a loopback address "
        "(127.0.0.1, [::1], localhost), not on ",
        listen,
        "; set [tls] cert_file and key_file and [auth] token_files "
        "to listen there"));
  }
  return absl::OkStatus();
}

AccessPolicy::AccessPolicy(bool tcp, bool tokens_required,
                           std::vector<FileState> files)
    : tcp_(tcp), tokens_required_(tokens_required), files_(std::move(files)) {}

absl::StatusOr<std::unique_ptr<AccessPolicy>> AccessPolicy::Load(
    const config::AccessSettings& settings, bool tcp) {
  std::vector<FileState> files;
  std::set<std::string> paths;
  for (const std::string& path : settings.token_files) {
    if (!paths.insert(path).second) continue;  // listed twice: one token
    FileState file;
    file.path = path;
    file.seen = VersionOf(path);
    absl::StatusOr<Token> token = ReadToken(path);
    if (!token.ok()) return token.status();
    file.token = *std::move(token);
    files.push_back(std::move(file));
  }
  absl::StatusOr<std::shared_ptr<const TokenSet>> tokens = Collect(files);
  if (!tokens.ok()) return tokens.status();
  const bool tokens_required = tcp && !settings.token_files.empty();
  std::unique_ptr<AccessPolicy> policy(
      new AccessPolicy(tcp, tokens_required, std::move(files)));
  {
    // Nobody else can see the policy yet; the lock satisfies the analysis.
    absl::MutexLock lock(&policy->mu_);
    policy->tokens_ = *std::move(tokens);
  }
  return policy;
}

AccessPolicy::FileVersion AccessPolicy::VersionOf(const std::string& path) {
  struct stat info;
  FileVersion version;
  if (::stat(path.c_str(), &info) != 0) return version;
  version.exists = true;
  version.device = info.st_dev;
  version.inode = info.st_ino;
  version.size = info.st_size;
  version.mtime_ns = info.st_mtim.tv_sec * 1000000000ll + info.st_mtim.tv_nsec;
  version.ctime_ns = info.st_ctim.tv_sec * 1000000000ll + info.st_ctim.tv_nsec;
  version.mode = info.st_mode;
  return version;
}

AccessPolicy::Digest AccessPolicy::Hash(absl::string_view token) {
  Digest digest{};
  unsigned int length = 0;
  // SHA-256 cannot fail on memory input; a zero digest would match nothing
  // a real token hashes to.
  EVP_Digest(token.data(), token.size(), digest.data(), &length, EVP_sha256(),
             nullptr);
  return digest;
}

absl::StatusOr<AccessPolicy::Token> AccessPolicy::ReadToken(
    const std::string& path) {
  absl::StatusOr<config::TokenFile> file = config::LoadTokenFile(path);
  if (!file.ok()) return file.status();
  Token token;
  token.digest = Hash(file->token);
  OPENSSL_cleanse(file->token.data(), file->token.size());
  token.label = std::move(file->label);
  token.names = std::move(file->names);
  token.admin = file->admin;
  return token;
}

absl::StatusOr<std::shared_ptr<const AccessPolicy::TokenSet>>
AccessPolicy::Collect(const std::vector<FileState>& files) {
  auto tokens = std::make_shared<TokenSet>();
  std::map<std::string, const std::string*> labels;  // label -> path
  for (const FileState& file : files) {
    if (!file.token.has_value()) continue;
    for (const Token& other : *tokens) {
      if (CRYPTO_memcmp(other.digest.data(), file.token->digest.data(),
                        other.digest.size()) == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("token file ", file.path,
                         " holds the same token as the one "
                         "labelled '",
                         other.label,
                         "'; each token file needs its own "
                         "token"));
      }
    }
    if (auto [it, inserted] = labels.emplace(file.token->label, &file.path);
        !inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token files ", *it->second, " and ", file.path,
          " have the same label '", file.token->label,
          "'; labels tell tokens apart in logs, so give each its own"));
    }
    tokens->push_back(*file.token);
  }
  return std::shared_ptr<const TokenSet>(std::move(tokens));
}

std::shared_ptr<const AccessPolicy::TokenSet> AccessPolicy::Snapshot() const {
  absl::MutexLock lock(&mu_);
  return tokens_;
}

size_t AccessPolicy::token_count() const { return Snapshot()->size(); }

absl::Status AccessPolicy::Reload() {
  absl::MutexLock reload_lock(&reload_mu_);
  std::vector<FileState> next = files_;
  std::vector<bool> reread(next.size(), false);
  bool changed = false;
  absl::Status result;
  for (size_t i = 0; i < next.size(); ++i) {
    FileState& file = next[i];
    const FileVersion version = VersionOf(file.path);
    // A file with an error is read again on every pass (they are tiny), so
    // a fix elsewhere -- another file's duplicate token removed -- is seen.
    if (version == file.seen && file.error.ok()) continue;
    file.seen = version;
    absl::StatusOr<Token> token = ReadToken(file.path);
    if (token.ok()) {
      file.token = *std::move(token);
      file.error = absl::OkStatus();
      reread[i] = true;
      changed = true;
    } else if (absl::IsNotFound(token.status())) {
      // Deleting a token file is how a token is revoked without a restart.
      if (file.token.has_value()) {
        spdlog::warn("token file {} is gone: token '{}' is revoked", file.path,
                     file.token->label);
        changed = true;
      }
      file.token.reset();
      file.error = absl::OkStatus();
    } else {
      if (token.status() != file.error) {
        spdlog::error("{}; still using the token it held before{}",
                      token.status().message(),
                      file.token.has_value()
                          ? absl::StrCat(" ('", file.token->label, "')")
                          : std::string(" (none)"));
      }
      file.error = token.status();
      result = file.error;
    }
  }
  if (!changed) {
    files_ = std::move(next);
    return result;
  }
  absl::StatusOr<std::shared_ptr<const TokenSet>> tokens = Collect(next);
  if (!tokens.ok()) {
    // Keep every last good token; the files just read count as broken, so
    // the next pass reads them again. Logged once, not on every pass.
    if (tokens.status() != collect_error_) {
      spdlog::error("{}; keeping the previous tokens",
                    tokens.status().message());
      collect_error_ = tokens.status();
    }
    for (size_t i = 0; i < next.size(); ++i) {
      files_[i].seen = next[i].seen;
      files_[i].error = reread[i] ? tokens.status() : next[i].error;
    }
    return tokens.status();
  }
  collect_error_ = absl::OkStatus();
  for (size_t i = 0; i < next.size(); ++i) {
    if (reread[i]) {
      spdlog::info("token file {} re-read (label '{}')", next[i].path,
                   next[i].token->label);
    }
  }
  files_ = std::move(next);
  absl::MutexLock lock(&mu_);
  tokens_ = *std::move(tokens);
  return result;
}

absl::StatusOr<Caller> AccessPolicy::Authenticate(
    const grpc::ServerContextBase& context, std::string session) const {
  return Authenticate(context.client_metadata(), std::move(session));
}

absl::StatusOr<Caller> AccessPolicy::Authenticate(
    const Metadata& client_metadata, std::string session) const {
  auto [begin, end] = client_metadata.equal_range(kAuthorization);
  if (begin == end) {
    if (tokens_required_) {
      return absl::UnauthenticatedError(
          "this daemon requires a bearer token on TCP (authorization: Bearer "
          "...)");
    }
    Caller caller;
    caller.session = std::move(session);
    caller.who = tcp_ ? "loopback tcp" : "unix socket";
    return caller;
  }
  if (std::next(begin) != end) {
    return absl::UnauthenticatedError(
        "more than one authorization entry in the call's metadata");
  }
  absl::string_view value(begin->second.data(), begin->second.size());
  // RFC 6750: the scheme is case-insensitive.
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization metadata must read 'Bearer <token>'");
  }
  const Digest presented =
      Hash(absl::StripAsciiWhitespace(value.substr(kScheme.size())));
  std::shared_ptr<const TokenSet> tokens = Snapshot();
  // Every token is compared, without stopping at a match, so the time taken
  // says nothing about which token (or how much of one) was right.
  const Token* match = nullptr;
  for (const Token& token : *tokens) {
    const bool equal = CRYPTO_memcmp(token.digest.data(), presented.data(),
                                     presented.size()) == 0;
    if (equal) match = &token;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("unknown bearer token");
  }
  Caller caller;
  caller.session = std::move(session);
  caller.names = match->names;
  caller.admin = match->admin;
  caller.who = absl::StrCat("token '", match->label, "'");
  return caller;
}

}  // namespace connbroker::server
