// AccessPolicy: who may call the daemon, decided per call from the listener
// (Unix socket or TCP) and the call's `authorization: Bearer <token>`
// metadata, against the token files broker.toml's [auth] names.
//
// On TCP a known bearer token is required (unless [broker]
// insecure_loopback opened a loopback port with no token files). On the
// Unix socket, whose directory permissions already limit who connects, a
// call without a token is the daemon's own user (admin, every name); a call
// that does carry one gets that token's limits, so admins and tests can
// drop privileges. The service calls Authenticate at the start of each
// call and hands the Caller to the broker.
#ifndef CONNBROKER_SERVER_ACCESS_POLICY_H_
#define CONNBROKER_SERVER_ACCESS_POLICY_H_

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "connbroker/config/broker_settings.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/string_ref.h"
#include "server/caller.h"

namespace connbroker::server {

// Refuses (FAILED_PRECONDITION, saying what to configure) a TCP listen
// address the access settings leave unprotected: TCP needs [tls] and
// [auth] token_files, or insecure_loopback on a loopback address. Unix
// socket addresses always pass.
absl::Status CheckListenerSecurity(const std::string& listen,
                                   const config::AccessSettings& access);

class AccessPolicy {
 public:
  using Metadata = std::multimap<grpc::string_ref, grpc::string_ref>;

  // Reads every token file; any that is missing, readable by others,
  // malformed, or that repeats another's token (or label) is an error
  // naming the file. `tcp`: the daemon listens on TCP, so calls without a
  // token are refused whenever token files are configured.
  static absl::StatusOr<std::unique_ptr<AccessPolicy>> Load(
      const config::AccessSettings& settings, bool tcp);

  AccessPolicy(const AccessPolicy&) = delete;
  AccessPolicy& operator=(const AccessPolicy&) = delete;

  // The Caller making this call, or UNAUTHENTICATED: a missing token where
  // one is required, a malformed authorization entry, or an unknown token.
  // `session` is the call's connbroker-session id, copied into the Caller.
  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context,
                                      std::string session) const;
  // The same from the call's metadata (what the above reads).
  absl::StatusOr<Caller> Authenticate(const Metadata& client_metadata,
                                      std::string session) const;

  // For a TLS listener: checks every call's token before any service sees
  // it, so health and reflection on the port need a token too and a refused
  // call costs no service work. The calls' Callers still come from
  // Authenticate. Must not outlive this policy. (gRPC 1.51 crashes with a
  // processor on insecure credentials: plain TCP relies on the service.)
  std::shared_ptr<grpc::AuthMetadataProcessor> MakeAuthMetadataProcessor()
      const;

  // Re-reads the token files that changed on disk (cheap when none did).
  // A file that is now missing is dropped: deleting a token file revokes
  // its token. A file that is broken (malformed, readable by others) keeps
  // its last good token, and the error is logged once and returned.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(reload_mu_);

  // Whether calls without a token are refused.
  bool tokens_required() const { return tokens_required_; }
  // Tokens currently accepted.
  size_t token_count() const;

 private:
  using Digest = std::array<uint8_t, 32>;  // SHA-256

  // One accepted token: only its digest is kept, so the comparison is
  // constant-time and of fixed length whatever was presented.
  struct Token {
    Digest digest;
    std::string label;
    std::vector<std::string> names;
    bool admin = false;
  };
  using TokenSet = std::vector<Token>;

  // What identifies one version of a file on disk.
  struct FileVersion {
    bool exists = false;
    dev_t device = 0;
    ino_t inode = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    mode_t mode = 0;
    friend bool operator==(const FileVersion&, const FileVersion&) = default;
  };
  struct FileState {
    std::string path;
    FileVersion seen;            // the version last read (or tried)
    std::optional<Token> token;  // the last good one; none: missing
    absl::Status error;          // of the last read, logged when it happened
  };

  AccessPolicy(bool tcp, bool tokens_required, std::vector<FileState> files);

  static FileVersion VersionOf(const std::string& path);
  static absl::StatusOr<Token> ReadToken(const std::string& path);
  static Digest Hash(absl::string_view token);
  // Every file's token, or an error when two share a token or a label.
  static absl::StatusOr<std::shared_ptr<const TokenSet>> Collect(
      const std::vector<FileState>& files);

  std::shared_ptr<const TokenSet> Snapshot() const ABSL_LOCKS_EXCLUDED(mu_);

  const bool tcp_;
  const bool tokens_required_;
  // Serialises Reload; never held by Authenticate.
  absl::Mutex reload_mu_;
  std::vector<FileState> files_ ABSL_GUARDED_BY(reload_mu_);
  // Why the last Reload could not combine the files (two share a token).
  absl::Status collect_error_ ABSL_GUARDED_BY(reload_mu_);
  // Held only to copy or replace the pointer, so a call pays one short lock.
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenSet> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_ACCESS_POLICY_H_
