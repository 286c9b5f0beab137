// Fuzzes ParseSqlUrl on arbitrary bytes and checks what sql_url.h promises:
//  - the password is never in Describe() nor in an error: changing it
//    (keeping the URL's structure) changes neither; the same holds for the
//    values of secret query options (IsSecretKey), which Describe() masks;
//  - a parsed target has a known dialect, a driver of [A-Za-z0-9_] and a
//    port from 1 to 65535;
//  - Describe() is "the URL with the password replaced by ***": for a target
//    whose parts need no escaping it parses back to the same target, with
//    the masked values as "***".
// Parts with characters Describe() must escape are not round-tripped: their
// description is for people, and sql_url.h promises no more.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "connbroker/config/sql_url.h"
#include "connbroker/config/value.h"

namespace connbroker::fuzz {
namespace {

using config::SqlTarget;

[[noreturn]] void Fail(const char* what, const std::string& url,
                       const std::string& detail) {
  std::fprintf(stderr, "sql_url_fuzzer: %s\n  url: %s\n  %s\n", what,
               url.c_str(), detail.c_str());
  std::abort();
}

// Where SQLAlchemy's pattern (and ParseSqlUrl) finds the password: after
// "scheme://", a user without ':' or '/', then ':' and up to the first '@'.
// Returns [begin, end) in `url`, or begin == end when there is none.
std::pair<size_t, size_t> PasswordSpan(std::string_view url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return {0, 0};
  const size_t start = scheme_end + 3;
  const size_t colon = url.find_first_of(":/", start);
  if (colon == std::string_view::npos || url[colon] != ':') return {0, 0};
  const size_t at = url.find('@', colon + 1);
  if (at == std::string_view::npos) return {0, 0};
  return {colon + 1, at};
}

// The same length of other harmless bytes: the parse keeps its structure.
std::string OtherPassword(size_t size, std::string_view current) {
  std::string other(size, 'x');
  if (other == current) other.assign(size, 'y');
  return other;
}

bool Plain(std::string_view text, std::string_view extra) {
  for (char c : text) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' &&
        extra.find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// True when Describe() writes every part of `t` as it is, so that parsing
// it back must give `t` again.
bool RoundTrips(const SqlTarget& t) {
  for (const auto& [key, value] : t.query) {
    if (key.empty() || !Plain(key, "") || !Plain(value, "/")) return false;
  }
  if (t.dialect == "sqlite") {
    // "sqlite://" is memory whichever spelling ("", ":memory:") was parsed.
    return !t.IsSqliteMemory() && Plain(t.database, "/");
  }
  const bool host_ok = t.host.find(':') != std::string::npos
                           ? Plain(t.host, ":")  // written as [ipv6]
                           : Plain(t.host, "");
  return host_ok && Plain(t.username, "") && Plain(t.database, "/");
}

void CheckTarget(const std::string& url, const SqlTarget& t) {
  if (t.dialect != "sqlite" && t.dialect != "postgresql" &&
      t.dialect != "mysql" && t.dialect != "mariadb") {
    Fail("unknown dialect accepted", url, t.dialect);
  }
  for (char c : t.driver) {
    if (!absl::ascii_isalnum(c) && c != '_') Fail("bad driver", url, t.driver);
  }
  if (t.port.has_value() && (*t.port < 1 || *t.port > 65535)) {
    Fail("port out of range", url, std::to_string(*t.port));
  }

  const std::string description = t.Describe();
  // Describe() must not depend on any secret's value, only on whether the
  // password is there at all. (Stronger than "the password is not a
  // substring", which a short password shared with the host would break.)
  SqlTarget masked = t;
  if (!masked.password.empty()) {
    masked.password = OtherPassword(t.password.size() + 1, t.password);
  }
  for (auto& [key, value] : masked.query) {
    if (config::IsSecretKey(key))
      value = OtherPassword(value.size() + 1, value);
  }
  if (masked.Describe() != description) {
    Fail("Describe() depends on a secret", url, description);
  }

  if (RoundTrips(t)) {
    absl::StatusOr<SqlTarget> again = config::ParseSqlUrl(description);
    if (!again.ok()) {
      Fail("Describe() does not parse back", url,
           description + " -> " + std::string(again.status().message()));
    }
    SqlTarget expected = t;
    if (!expected.password.empty()) expected.password = "***";
    for (auto& [key, value] : expected.query) {
      if (config::IsSecretKey(key)) value = "***";
    }
    if (!(*again == expected)) {
      Fail("Describe() parses back to another target", url,
           description + " -> " + again->Describe());
    }
  }
}

}  // namespace
}  // namespace connbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace connbroker;
  const std::string url(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<config::SqlTarget> target = config::ParseSqlUrl(url);
  if (target.ok()) fuzz::CheckTarget(url, *target);

  // The same URL with another password: the outcome must not tell them
  // apart, success or error.
  const auto [begin, end] = fuzz::PasswordSpan(url);
  if (begin == end) return 0;
  std::string other_url = url;
  other_url.replace(
      begin, end - begin,
      fuzz::OtherPassword(end - begin,
                          std::string_view(url).substr(begin, end - begin)));
  absl::StatusOr<config::SqlTarget> other = config::ParseSqlUrl(other_url);
  if (target.ok() != other.ok()) {
    fuzz::Fail("the password decides whether the URL parses", url,
               std::string(target.ok() ? other.status().message()
                                       : target.status().message()));
  }
  if (!target.ok()) {
    if (target.status() != other.status()) {
      fuzz::Fail("an error depends on the password", url,
                 std::string(target.status().message()));
    }
    return 0;
  }
  if (target->Describe() != other->Describe()) {
    fuzz::Fail("Describe() depends on the password", url, target->Describe());
  }
  return 0;
}
