// Durations as users write them: 30, 2.5, "10m", "1h30m", "2d", "500ms".
#ifndef CONNBROKER_CONFIG_DURATION_H_
#define CONNBROKER_CONFIG_DURATION_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "connbroker/config/value.h"

namespace connbroker::config {

// A number is seconds; text is a sequence of <number><unit> with units
// ms, s, m, h, d (and a bare number, seconds). Negative values and other
// kinds are INVALID_ARGUMENT naming `what` (e.g. "ttl").
absl::StatusOr<absl::Duration> ParseDuration(const Value& value,
                                             const std::string& what);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_DURATION_H_
