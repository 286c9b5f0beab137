// Internal to config/: TOML access that keeps table boundaries.
#ifndef CONNBROKER_CONFIG_SRC_TOML_INTERNAL_H_
#define CONNBROKER_CONFIG_SRC_TOML_INTERNAL_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "connbroker/config/value.h"

namespace connbroker::config::internal {

// Reads the TOML file at `path` and returns each sub-table of the top-level
// table `table`, flattened, keyed by its own name. Unlike splitting dotted
// keys, this keeps quoted names with dots ([connections."a.b"]) and empty
// tables ([connections.x] with no keys). Errors as LoadTomlFile's.
absl::StatusOr<std::map<std::string, Params>> LoadTomlSubtables(
    const std::string& path, const std::string& table);

}  // namespace connbroker::config::internal

#endif  // CONNBROKER_CONFIG_SRC_TOML_INTERNAL_H_
