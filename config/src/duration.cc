// Durations as users write them in TOML and kwargs: seconds or "1h30m".
#include "connbroker/config/duration.h"

#include <charconv>
#include <cmath>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace connbroker::config {
namespace {

absl::Status Invalid(const std::string& what, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": ", detail,
      "; expected seconds (30, 2.5) or a duration such as \"500ms\", \"10m\", "
      "\"1h30m\", \"2d\""));
}

absl::StatusOr<absl::Duration> FromSeconds(double seconds,
                                           const std::string& what) {
  if (!std::isfinite(seconds)) return Invalid(what, "not a finite number");
  if (seconds < 0) return Invalid(what, "must not be negative");
  const absl::Duration d = absl::Seconds(seconds);
  if (d == absl::InfiniteDuration()) return Invalid(what, "too large");
  return d;
}

// Parses an unsigned decimal number at the front of `text`.
bool ConsumeNumber(absl::string_view& text, double& number) {
  size_t end = 0;
  while (end < text.size() &&
         (absl::ascii_isdigit(text[end]) || text[end] == '.')) {
    ++end;
  }
  if (end == 0) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + end, number);
  if (ec != std::errc() || ptr != text.data() + end) return false;
  text.remove_prefix(end);
  return true;
}

absl::StatusOr<absl::Duration> ParseText(const std::string& raw,
                                         const std::string& what) {
  absl::string_view text = absl::StripAsciiWhitespace(raw);
  const std::string quoted = absl::StrCat("\"", raw, "\"");
  if (text.empty()) return Invalid(what, "empty duration");
  if (text.front() == '-') {
    return Invalid(what, absl::StrCat(quoted, " must not be negative"));
  }
  if (text.front() == '+') text.remove_prefix(1);

  // A bare number is seconds, as a TOML number would be.
  {
    absl::string_view rest = text;
    double seconds = 0;
    if (ConsumeNumber(rest, seconds) && rest.empty()) {
      return FromSeconds(seconds, what);
    }
  }

  double total_seconds = 0;
  while (!text.empty()) {
    double number = 0;
    if (!ConsumeNumber(text, number)) {
      return Invalid(what, absl::StrCat(quoted, " is not a duration"));
    }
    // Units: longest first so "ms" is not read as "m" then "s".
    double unit = 0;
    if (absl::ConsumePrefix(&text, "ms")) {
      unit = 1e-3;
    } else if (absl::ConsumePrefix(&text, "s")) {
      unit = 1;
    } else if (absl::ConsumePrefix(&text, "m")) {
      unit = 60;
    } else if (absl::ConsumePrefix(&text, "h")) {
      unit = 3600;
    } else if (absl::ConsumePrefix(&text, "d")) {
      unit = 86400;
    } else {
      return Invalid(what, absl::StrCat(quoted,
                                        " has a number without a unit (ms, s, "
                                        "m, h, d)"));
    }
    total_seconds += number * unit;
    text = absl::StripLeadingAsciiWhitespace(text);
  }
  return FromSeconds(total_seconds, what);
}

}  // namespace

absl::StatusOr<absl::Duration> ParseDuration(const Value& value,
                                             const std::string& what) {
  return std::visit(
      [&what](const auto& v) -> absl::StatusOr<absl::Duration> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          if (v < 0) return Invalid(what, "must not be negative");
          return absl::Seconds(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return FromSeconds(v, what);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return ParseText(v, what);
        } else if constexpr (std::is_same_v<T, bool>) {
          return Invalid(what, "a boolean is not a duration");
        } else if constexpr (std::is_same_v<T, std::monostate>) {
          return Invalid(what, "null is not a duration");
        } else {
          return Invalid(what, "bytes are not a duration");
        }
      },
      value);
}

}  // namespace connbroker::config
