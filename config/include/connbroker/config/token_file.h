// Token files: one bearer token per file, with what a client presenting it
// may do. The daemon reads the files named by broker.toml's
// [auth] token_files, so a token never appears on a command line or in
// broker.toml itself.
//
//   token = "6f1c...e2"              # at least 16 characters
//   names = ["sales", "analytics_*"] # connection names: exact, or prefix*
//   admin = false                    # list every session, stats, reset
//   label = "dashboards"             # for logs; default: the file's name
#ifndef CONNBROKER_CONFIG_TOKEN_FILE_H_
#define CONNBROKER_CONFIG_TOKEN_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace connbroker::config {

// Tokens shorter than this are refused: a bearer token is the whole secret.
inline constexpr size_t kMinTokenLength = 16;

struct TokenFile {
  std::string path;
  std::string label;  // safe to log; never the token
  std::string token;
  // Connection names the token may use: exact names, or prefixes ending in
  // '*' ("*" alone: every name).
  std::vector<std::string> names;
  bool admin = false;
};

// Reads a token file. Refused (FAILED_PRECONDITION, naming the file) when
// group or others may read or write it (mode & 077); INVALID_ARGUMENT for an
// unknown key, a missing or short token, a missing `names`, or a '*' that is
// not at the end of a name; NOT_FOUND when the file does not exist. Syntax
// errors name file:line:column. No message ever holds the token.
absl::StatusOr<TokenFile> LoadTokenFile(const std::string& path);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_TOKEN_FILE_H_
