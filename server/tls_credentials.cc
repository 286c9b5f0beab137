// TLS server credentials: the files checked with OpenSSL, then watched by
// gRPC's FileWatcherCertificateProvider.
#include "server/tls_credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace connbroker::server {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

absl::Status Unusable(const std::string& key, const std::string& path,
                      const std::string& why) {
  ERR_clear_error();
  return absl::FailedPreconditionError(
      absl::StrCat("[tls] ", key, " ", path, ": ", why));
}

absl::StatusOr<Bio> Open(const std::string& key, const std::string& path) {
  Bio bio(BIO_new_file(path.c_str(), "r"));
  if (bio == nullptr) {
    return Unusable(key, path, "cannot be read (missing, or no permission)");
  }
  return bio;
}

// The first certificate of a PEM file (the server's own, or the first CA).
absl::StatusOr<std::unique_ptr<X509, X509Deleter>> FirstCertificate(
    const std::string& key, const std::string& path) {
  absl::StatusOr<Bio> bio = Open(key, path);
  if (!bio.ok()) return bio.status();
  std::unique_ptr<X509, X509Deleter> cert(
      PEM_read_bio_X509(bio->get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return Unusable(key, path, "holds no PEM certificate");
  }
  return cert;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsServerCredentials(
    const config::AccessSettings& access) {
  absl::StatusOr<std::unique_ptr<X509, X509Deleter>> cert =
      FirstCertificate("cert_file", access.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<Bio> key_bio = Open("key_file", access.tls_key_file);
  if (!key_bio.ok()) return key_bio.status();
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(key_bio->get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return Unusable("key_file", access.tls_key_file,
                    "holds no unencrypted PEM private key");
  }
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return Unusable("key_file", access.tls_key_file,
                    absl::StrCat("is not the key of the certificate in ",
                                 access.tls_cert_file));
  }
  if (!access.tls_client_ca_file.empty()) {
    absl::StatusOr<std::unique_ptr<X509, X509Deleter>> ca =
        FirstCertificate("client_ca_file", access.tls_client_ca_file);
    if (!ca.ok()) return ca.status();
  }
  ERR_clear_error();

  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          access.tls_key_file, access.tls_cert_file, access.tls_client_ca_file,
          kCertificateRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (access.tls_client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(
        access.tls_require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace connbroker::server
