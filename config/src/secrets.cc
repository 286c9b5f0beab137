// Secrets: finding secrets.toml files as Streamlit does and merging them.
#include "connbroker/config/secrets.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "toml_internal.h"

namespace connbroker::config {
namespace {

std::string StreamlitSecretsIn(const std::string& directory) {
  if (directory.empty()) return ".streamlit/secrets.toml";
  if (directory.back() == '/') {
    return absl::StrCat(directory, ".streamlit/secrets.toml");
  }
  return absl::StrCat(directory, "/.streamlit/secrets.toml");
}

}  // namespace

std::vector<SecretsFile> SecretsFilePaths(const SecretsDiscovery& discovery) {
  std::vector<SecretsFile> files;
  // Explicit locations replace discovery entirely, and a typo in one must
  // fail loudly rather than silently fall back to another file.
  if (!discovery.flag_paths.empty()) {
    for (const std::string& path : discovery.flag_paths) {
      files.push_back({path, /*required=*/true});
    }
    return files;
  }
  if (discovery.env_value.has_value()) {
    for (absl::string_view path :
         absl::StrSplit(*discovery.env_value, ':', absl::SkipEmpty())) {
      files.push_back({std::string(path), /*required=*/true});
    }
    if (!files.empty()) return files;
  }
  // Streamlit reads the global file, then the project's, which wins.
  if (discovery.home.has_value() && !discovery.home->empty()) {
    files.push_back({StreamlitSecretsIn(*discovery.home), false});
  }
  const std::string project = StreamlitSecretsIn(discovery.working_directory);
  if (files.empty() || files.front().path != project) {
    files.push_back({project, false});
  }
  return files;
}

absl::StatusOr<Secrets> Secrets::Load(const std::vector<SecretsFile>& files) {
  Secrets secrets;
  for (const SecretsFile& file : files) {
    absl::StatusOr<std::map<std::string, Params>> sections =
        internal::LoadTomlSubtables(file.path, "connections");
    if (!sections.ok()) {
      if (absl::IsNotFound(sections.status())) {
        if (!file.required) continue;
        return absl::NotFoundError(
            absl::StrCat("secrets file ", file.path, " not found"));
      }
      return sections.status();
    }
    for (auto& [name, params] : *sections) {
      // Key by key: a later file overrides single keys of a section and
      // keeps the others.
      Params& merged = secrets.connections_[name];
      for (auto& [key, value] : params) merged[key] = std::move(value);
    }
    secrets.files_.push_back(file.path);
  }
  return secrets;
}

Secrets Secrets::FromSections(std::map<std::string, Params> sections,
                              std::vector<std::string> files) {
  Secrets secrets;
  secrets.connections_ = std::move(sections);
  secrets.files_ = std::move(files);
  return secrets;
}

const Params* Secrets::FindConnection(const std::string& name) const {
  auto it = connections_.find(name);
  return it == connections_.end() ? nullptr : &it->second;
}

std::vector<std::string> Secrets::ConnectionNames() const {
  std::vector<std::string> names;
  names.reserve(connections_.size());
  for (const auto& [name, params] : connections_) names.push_back(name);
  return names;
}

}  // namespace connbroker::config
