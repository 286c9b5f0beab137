// Secrets: the [connections.<name>] sections of one or more secrets.toml files.
//
// Files are found as Streamlit finds them (see SecretsFilePaths) and merged
// key by key, a later file winning over an earlier one. A Secrets object is an
// immutable snapshot: safe to share between threads.
#ifndef CONNBROKER_CONFIG_SECRETS_H_
#define CONNBROKER_CONFIG_SECRETS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "connbroker/config/value.h"

namespace connbroker::config {

// One file to read. A required file that is missing is an error; optional
// ones (the default locations) are skipped when absent.
struct SecretsFile {
  std::string path;
  bool required = false;
};

// Where to look, as given to the daemon.
struct SecretsDiscovery {
  std::vector<std::string> flag_paths;   // --secrets, repeatable, in order
  std::optional<std::string> env_value;  // $CONNBROKER_SECRETS, ':'-separated
  std::string working_directory;         // for ./.streamlit/secrets.toml
  std::optional<std::string> home;       // for ~/.streamlit/secrets.toml
};

// The files to read, lowest precedence first: the --secrets files if any
// (required), else those in $CONNBROKER_SECRETS (required), else
// ~/.streamlit/secrets.toml then ./.streamlit/secrets.toml (optional; the
// project file wins key by key).
std::vector<SecretsFile> SecretsFilePaths(const SecretsDiscovery& discovery);

class Secrets {
 public:
  Secrets() = default;

  // Reads and merges `files`, later winning key by key. Errors name the file
  // (and line:column for a syntax error): see LoadTomlFile. A required file
  // that is missing is NOT_FOUND naming it.
  static absl::StatusOr<Secrets> Load(const std::vector<SecretsFile>& files);

  // Builds a snapshot from already-flattened sections (tests, embedding).
  static Secrets FromSections(std::map<std::string, Params> sections,
                              std::vector<std::string> files = {});

  // The section [connections.<name>] with keys relative to it ("url",
  // "query.mode"), or nullptr when there is none.
  const Params* FindConnection(const std::string& name) const;

  // Names of every [connections.*] section, sorted.
  std::vector<std::string> ConnectionNames() const;

  // The files that were actually read, in precedence order.
  const std::vector<std::string>& files() const { return files_; }

 private:
  std::map<std::string, Params> connections_;
  std::vector<std::string> files_;
};

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SECRETS_H_
