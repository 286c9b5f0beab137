// Name patterns: the allow-lists of broker.toml and token files.
//
// [security] env_names and a token's `names` list what a client may name:
// exact names, or prefixes ending in '*' ("APP_*", "sales_*", "*").
#ifndef CONNBROKER_CONFIG_NAME_PATTERN_H_
#define CONNBROKER_CONFIG_NAME_PATTERN_H_

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace connbroker::config {

// Whether `name` matches one of `patterns`.
inline bool MatchesAnyPattern(absl::string_view name,
                              const std::vector<std::string>& patterns) {
  for (const std::string& pattern : patterns) {
    if (!pattern.empty() && pattern.back() == '*') {
      if (absl::StartsWith(
              name, absl::string_view(pattern).substr(0, pattern.size() - 1))) {
        return true;
      }
    } else if (name == pattern) {
      return true;
    }
  }
  return false;
}

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_NAME_PATTERN_H_
