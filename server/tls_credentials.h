// The daemon's TLS server credentials, from broker.toml's [tls] section.
#ifndef CONNBROKER_SERVER_TLS_CREDENTIALS_H_
#define CONNBROKER_SERVER_TLS_CREDENTIALS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "connbroker/config/broker_settings.h"
#include "grpcpp/security/server_credentials.h"

namespace connbroker::server {

// How often the certificate files are checked for changes: a renewed
// certificate is served without a restart.
inline constexpr unsigned int kCertificateRefreshSeconds = 60;

// Checks that the [tls] files can be read and hold what they should (a
// certificate chain, a private key that matches it, CA certificates) --
// gRPC itself would only fail each handshake later -- then builds
// credentials that watch the files (grpc::experimental::
// FileWatcherCertificateProvider). With client_ca_file, client certificates
// are requested and verified (required with require_client_cert).
// FAILED_PRECONDITION naming the file and what is wrong with it.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsServerCredentials(
    const config::AccessSettings& access);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_TLS_CREDENTIALS_H_
