// Token files: permission check, then the TOML keys one by one.
#include "connbroker/config/token_file.h"

#include <errno.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "connbroker/config/toml_loader.h"

namespace connbroker::config {

absl::StatusOr<TokenFile> LoadTokenFile(const std::string& path) {
  // stat, not lstat: a secret mounted as a symbolic link (Kubernetes does
  // that) is fine; what matters is who may read the file it points to.
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    const std::string why = std::strerror(errno);
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("token file ", path, " does not exist"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read token file ", path, ": ", why));
  }
  if (!S_ISREG(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("token file ", path, " is not a regular file"));
  }
  if ((info.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "token file %s has mode %04o: group and others must have no access "
        "to a token; run chmod 600 %s",
        path, info.st_mode & 07777, path));
  }
  absl::StatusOr<Params> params = LoadTomlFile(path);
  if (!params.ok()) return params.status();

  TokenFile file;
  file.path = path;
  file.label = std::filesystem::path(path).filename().string();
  bool has_token = false;
  bool has_names = false;
  std::map<size_t, std::string> names;
  auto error = [&path](const std::string& key, absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": '", key, "' ", what));
  };
  for (const auto& [key, value] : *params) {
    const auto* text = std::get_if<std::string>(&value);
    if (key == "token") {
      // The message never quotes the value: it is the secret.
      if (text == nullptr || text->size() < kMinTokenLength) {
        return error(key, absl::StrCat("must be a string of at least ",
                                       kMinTokenLength, " characters"));
      }
      file.token = *text;
      has_token = true;
    } else if (key == "label") {
      if (text == nullptr || text->empty()) {
        return error(key, "must be a non-empty string");
      }
      file.label = *text;
    } else if (key == "admin") {
      const auto* flag = std::get_if<bool>(&value);
      if (flag == nullptr) return error(key, "must be true or false");
      file.admin = *flag;
    } else if (key == "names" || absl::StartsWith(key, "names.")) {
      size_t index = 0;
      if (key != "names" && !absl::SimpleAtoi(key.substr(6), &index)) {
        return error(key, "is not a key of token files");
      }
      if (text == nullptr || text->empty()) {
        return error("names", "must be a list of non-empty strings");
      }
      const size_t star = text->find('*');
      if (star != std::string::npos && star != text->size() - 1) {
        return error("names",
                     absl::StrCat("holds '", *text,
                                  "': '*' may only end a name (a prefix)"));
      }
      names[index] = *text;
      has_names = true;
    } else {
      return error(key,
                   "is not a key of token files (token, names, admin, "
                   "label)");
    }
  }
  if (!has_token) return error("token", "is missing");
  // An empty array has no entries to flatten, so it reads as missing too:
  // a token that may use nothing is a mistake either way.
  if (!has_names) {
    return error("names",
                 "is missing: list the connection names this token may use "
                 "(\"*\" for every name)");
  }
  for (auto& [index, name] : names) file.names.push_back(std::move(name));
  return file;
}

}  // namespace connbroker::config
