// Logging for the daemon: spdlog (Debian's package; abseil 20220623 has no
// absl/log), plus what it needs to print abseil's own string_view, which here
// is not std::string_view. Never log a secret: log a spec's description,
// never its params.
#ifndef CONNBROKER_SERVER_LOGGING_H_
#define CONNBROKER_SERVER_LOGGING_H_

#include "absl/strings/string_view.h"
#include "spdlog/fmt/fmt.h"
#include "spdlog/spdlog.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  auto format(absl::string_view text, fmt::format_context& context) const {
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(text.data(), text.size()), context);
  }
};

#endif  // CONNBROKER_SERVER_LOGGING_H_
