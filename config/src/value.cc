// Value helpers: human text, the canonical encoding of Params, secret keys.
#include "connbroker/config/value.h"

#include <charconv>
#include <cmath>
#include <string>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace connbroker::config {
namespace {

// Shortest text that reads back as the same double, so that equal doubles
// always encode the same way and different ones never do.
std::string DoubleToText(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), d);
  if (ec != std::errc()) return absl::StrCat(d);
  return std::string(buf, end);
}

// Length-prefixed, so no content can be mistaken for a separator.
void AppendField(std::string& out, absl::string_view text) {
  absl::StrAppend(&out, text.size(), ":", text);
}

}  // namespace

std::string ValueToString(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          return "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return absl::StrCat(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return DoubleToText(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else {
          return absl::StrCat("<", v.bytes.size(), " bytes>");
        }
      },
      value);
}

std::string CanonicalParams(const Params& params) {
  // Each entry is <key>=<tag><payload>; keys and text payloads carry their
  // length, so the encoding is injective whatever bytes they contain.
  std::string out = absl::StrCat("{", params.size(), "}");
  for (const auto& [key, value] : params) {
    AppendField(out, key);
    out.push_back('=');
    std::visit(
        [&out](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::monostate>) {
            out.append("n");
          } else if constexpr (std::is_same_v<T, bool>) {
            out.append(v ? "b1" : "b0");
          } else if constexpr (std::is_same_v<T, int64_t>) {
            absl::StrAppend(&out, "i", v, ";");
          } else if constexpr (std::is_same_v<T, double>) {
            absl::StrAppend(&out, "d", DoubleToText(v), ";");
          } else if constexpr (std::is_same_v<T, std::string>) {
            out.push_back('s');
            AppendField(out, v);
          } else {
            out.push_back('x');
            AppendField(out, v.bytes);
          }
        },
        value);
  }
  return out;
}

bool IsSecretKey(const std::string& dotted_key) {
  // Suffixes catch the many spellings drivers use: db_password,
  // client_secret, refresh_token, ...
  static constexpr const char* kSecretSuffixes[] = {
      "password", "passwd",      "pwd",        "token",
      "secret",   "private_key", "passphrase", "api_key",
      "apikey",   "access_key",  "credentials"};
  absl::string_view key(dotted_key);
  if (auto dot = key.rfind('.'); dot != absl::string_view::npos) {
    key.remove_prefix(dot + 1);
  }
  const std::string last = absl::AsciiStrToLower(key);
  for (const char* suffix : kSecretSuffixes) {
    if (absl::EndsWith(last, suffix)) return true;
  }
  return false;
}

}  // namespace connbroker::config
