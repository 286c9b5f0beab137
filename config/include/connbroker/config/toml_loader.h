// Reading TOML files into flat Params, with errors that name file:line:column.
//
// toml11 reports problems by exception; this is the one place they are caught
// and turned into absl::Status, so nothing above it sees toml11.
#ifndef CONNBROKER_CONFIG_TOML_LOADER_H_
#define CONNBROKER_CONFIG_TOML_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "connbroker/config/value.h"

namespace connbroker::config {

// Parses the TOML file at `path` and flattens every table into dotted keys:
// [connections.db] url = "x" becomes {"connections.db.url": "x"}. Integers,
// floats, booleans and strings map to Value; dates and times become their
// TOML text; arrays of scalars become "key.0", "key.1", ...
//
// Errors: NOT_FOUND when the file does not exist; INVALID_ARGUMENT for a
// syntax error, whose message starts with "<path>:<line>:<column>: " and
// carries toml11's description (never the offending line's text, which may
// hold a secret).
absl::StatusOr<Params> LoadTomlFile(const std::string& path);

// The same, for TOML text; `source_name` stands in for the path in errors.
absl::StatusOr<Params> ParseToml(const std::string& text,
                                 const std::string& source_name);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_TOML_LOADER_H_
