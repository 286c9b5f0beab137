// SQL targets: SQLAlchemy-style URLs and parts, parsed and described safely.
#include "connbroker/config/sql_url.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace connbroker::config {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX -> byte; a '%' not followed by two hex digits stays as it is, as
// Python's urllib.parse.unquote leaves it.
std::string PercentDecode(absl::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      const int hi = HexDigit(in[i + 1]);
      const int lo = HexDigit(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && in[i] == '+' ? ' ' : in[i]);
  }
  return out;
}

// Escapes what would change the URL's structure when described.
std::string PercentEncode(absl::string_view in, absl::string_view reserved) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : in) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u >= 0x7f || c == '%' ||
        reserved.find(c) != absl::string_view::npos) {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xf]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string NormalizeDialect(absl::string_view dialect) {
  std::string d = absl::AsciiStrToLower(dialect);
  // SQLAlchemy 1.4 dropped the "postgres" alias; users still write it.
  if (d == "postgres") d = "postgresql";
  return d;
}

// mysql and mariadb stay as written: the server speaks one protocol to both,
// and the name the user chose is what Describe() should show.
bool IsKnownDialect(const std::string& dialect) {
  return dialect == "sqlite" || dialect == "postgresql" || dialect == "mysql" ||
         dialect == "mariadb";
}

std::string UnknownDialectMessage(const std::string& dialect) {
  // Parts are any text a client sent: quote a bounded prefix.
  constexpr size_t kMaxShown = 32;
  return absl::StrCat(
      "unknown SQL dialect '", dialect.substr(0, kMaxShown),
      dialect.size() > kMaxShown ? "..." : "",
      "'; known: sqlite, postgresql (or postgres), mysql, mariadb, each "
      "optionally with a driver as SQLAlchemy spells it "
      "(postgresql+psycopg2, mysql+pymysql, sqlite+pysqlite, ...)");
}

// The driver names the Python DBAPI SQLAlchemy would load; the broker speaks
// each protocol itself and keeps the name only to describe the connection.
// A name outside [A-Za-z0-9_] would make that description ambiguous.
bool IsValidDriver(absl::string_view driver) {
  if (driver.empty()) return false;
  for (char c : driver) {
    if (!absl::ascii_isalnum(c) && c != '_') return false;
  }
  return true;
}

bool NeedsHostAndDatabase(const std::string& dialect) {
  return dialect == "postgresql" || dialect == "mysql" || dialect == "mariadb";
}

// The query option that names a Unix socket in place of a network host:
// libpq's `host` (a directory), MySQL's `unix_socket` (the socket file).
const char* SocketOption(const std::string& dialect) {
  if (dialect == "postgresql") return "host";
  if (dialect == "mysql" || dialect == "mariadb") return "unix_socket";
  return nullptr;
}

// The port text is not quoted in errors: in a URL missing its '@', what sits
// after the ':' is the password.
absl::StatusOr<int> ParsePort(absl::string_view text) {
  int port = 0;
  if (!absl::SimpleAtoi(text, &port) || port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        "the port must be a number from 1 to 65535");
  }
  return port;
}

absl::StatusOr<std::string> PartToString(const std::string& name,
                                         const std::string& key,
                                         const Value& value) {
  if (std::holds_alternative<Blob>(value)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sql connection '", name, "': '", key, "' must be text, not bytes"));
  }
  return ValueToString(value);
}

}  // namespace

std::string SqlTarget::Describe() const {
  std::string out = dialect;
  if (!driver.empty()) absl::StrAppend(&out, "+", driver);
  out += "://";
  if (dialect == "sqlite") {
    // sqlite:///rel.db, sqlite:////abs.db; memory is plain "sqlite://".
    if (!IsSqliteMemory()) absl::StrAppend(&out, "/", database);
  } else {
    if (!username.empty() || !password.empty()) {
      out += PercentEncode(username, ":@/?#[]");
      if (!password.empty()) out += ":***";
      out += "@";
    }
    if (absl::StrContains(host, ':')) {
      absl::StrAppend(&out, "[", host, "]");
    } else {
      out += PercentEncode(host, "@/?#");
    }
    if (port.has_value()) absl::StrAppend(&out, ":", *port);
    if (!database.empty()) absl::StrAppend(&out, "/", database);
  }
  if (!query.empty()) {
    out += "?";
    out += absl::StrJoin(query, "&", [](std::string* s, const auto& entry) {
      const std::string value = IsSecretKey(entry.first)
                                    ? "***"
                                    : PercentEncode(entry.second, "&=+#");
      absl::StrAppend(s, PercentEncode(entry.first, "&=+#"), "=", value);
    });
  }
  return out;
}

absl::StatusOr<SqlTarget> ParseSqlUrl(const std::string& url) {
  // Follows SQLAlchemy's URL pattern:
  //   name://[user[:password]@][host|[ipv6]][:port][/database][?query]
  SqlTarget target;
  absl::string_view rest(url);
  const size_t scheme_end = rest.find("://");
  if (scheme_end == absl::string_view::npos || scheme_end == 0) {
    return absl::InvalidArgumentError(
        "not a database URL: expected dialect[+driver]://...");
  }
  absl::string_view scheme = rest.substr(0, scheme_end);
  for (char c : scheme) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '+') {
      return absl::InvalidArgumentError(
          "not a database URL: the scheme must be dialect[+driver]");
    }
  }
  rest.remove_prefix(scheme_end + 3);
  std::vector<absl::string_view> name_parts = absl::StrSplit(scheme, '+');
  if (name_parts.size() > 2 || name_parts[0].empty() ||
      (name_parts.size() == 2 && name_parts[1].empty())) {
    return absl::InvalidArgumentError(
        "not a database URL: the scheme must be dialect[+driver]");
  }
  target.dialect = NormalizeDialect(name_parts[0]);
  if (!IsKnownDialect(target.dialect)) {
    return absl::InvalidArgumentError(UnknownDialectMessage(target.dialect));
  }
  if (name_parts.size() == 2) {
    if (!IsValidDriver(name_parts[1])) {
      return absl::InvalidArgumentError(
          "not a database URL: the driver after '+' must be letters, digits "
          "or '_'");
    }
    target.driver = std::string(name_parts[1]);
  }

  // user[:password]@, as SQLAlchemy's pattern matches it: the user is a
  // run without ':' or '/', the password runs to the first '@' after it.
  {
    const size_t user_end = std::min(rest.find_first_of(":/"), rest.size());
    const size_t at_after_colon =
        user_end < rest.size() && rest[user_end] == ':'
            ? rest.find('@', user_end + 1)
            : absl::string_view::npos;
    if (at_after_colon != absl::string_view::npos) {
      target.username = PercentDecode(rest.substr(0, user_end), false);
      target.password = PercentDecode(
          rest.substr(user_end + 1, at_after_colon - user_end - 1), false);
      rest.remove_prefix(at_after_colon + 1);
    } else if (const size_t at = rest.substr(0, user_end).rfind('@');
               at != absl::string_view::npos) {
      target.username = PercentDecode(rest.substr(0, at), false);
      rest.remove_prefix(at + 1);
    }
  }

  // host: [ipv6] or a run without '/', ':', '?'.
  if (absl::StartsWith(rest, "[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos ||
        rest.substr(1, close - 1).find_first_of("/?") !=
            absl::string_view::npos) {
      return absl::InvalidArgumentError(
          "malformed database URL: unterminated [ipv6] host");
    }
    target.host = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
  } else {
    const size_t host_end = std::min(rest.find_first_of("/:?"), rest.size());
    target.host = PercentDecode(rest.substr(0, host_end), false);
    rest.remove_prefix(host_end);
  }
  if (absl::ConsumePrefix(&rest, ":")) {
    const size_t port_end = std::min(rest.find_first_of("/?"), rest.size());
    absl::string_view port_text = rest.substr(0, port_end);
    rest.remove_prefix(port_end);
    // "host:" with nothing after is no port, as in SQLAlchemy.
    if (!port_text.empty()) {
      absl::StatusOr<int> port = ParsePort(port_text);
      if (!port.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("malformed database URL: ", port.status().message()));
      }
      target.port = *port;
    }
  }
  if (!rest.empty() && rest.front() != '/' && rest.front() != '?') {
    return absl::InvalidArgumentError(
        "malformed database URL: unexpected text after the host");
  }
  if (absl::ConsumePrefix(&rest, "/")) {
    const size_t db_end = std::min(rest.find('?'), rest.size());
    target.database = std::string(rest.substr(0, db_end));
    rest.remove_prefix(db_end);
  }
  if (absl::ConsumePrefix(&rest, "?")) {
    for (absl::string_view pair :
         absl::StrSplit(rest, '&', absl::SkipEmpty())) {
      const size_t eq = pair.find('=');
      const absl::string_view key = pair.substr(0, eq);
      const absl::string_view value = eq == absl::string_view::npos
                                          ? absl::string_view()
                                          : pair.substr(eq + 1);
      target.query[PercentDecode(key, true)] = PercentDecode(value, true);
    }
  }

  if (target.dialect == "sqlite" &&
      (!target.host.empty() || target.port.has_value() ||
       !target.username.empty() || !target.password.empty())) {
    return absl::InvalidArgumentError(
        "malformed sqlite URL: sqlite has no host, user or port; use "
        "sqlite:///relative.db, sqlite:////absolute.db or sqlite:// (memory)");
  }
  return target;
}

absl::StatusOr<SqlTarget> SqlTargetFromParams(const std::string& name,
                                              const Params& params) {
  SqlTarget target;
  if (auto it = params.find("url"); it != params.end()) {
    const auto* url = std::get_if<std::string>(&it->second);
    if (url == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("sql connection '", name, "': 'url' must be text"));
    }
    absl::StatusOr<SqlTarget> parsed = ParseSqlUrl(*url);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sql connection '", name, "': ", parsed.status().message()));
    }
    target = *std::move(parsed);
  }

  // Parts given beside the url override it, one by one.
  struct TextPart {
    const char* key;
    std::string* field;
  };
  const TextPart text_parts[] = {
      {"dialect", &target.dialect},   {"driver", &target.driver},
      {"username", &target.username}, {"password", &target.password},
      {"host", &target.host},         {"database", &target.database},
  };
  for (const TextPart& part : text_parts) {
    auto it = params.find(part.key);
    if (it == params.end() ||
        std::holds_alternative<std::monostate>(it->second))
      continue;
    absl::StatusOr<std::string> text = PartToString(name, part.key, it->second);
    if (!text.ok()) return text.status();
    *part.field = *std::move(text);
  }
  // Streamlit hands `dialect` and `driver` to SQLAlchemy as
  // drivername = "dialect+driver", so dialect = "postgresql+psycopg2" works
  // there, and must here.
  if (const size_t plus = target.dialect.find('+'); plus != std::string::npos) {
    const std::string driver = target.dialect.substr(plus + 1);
    if (params.contains("driver") && target.driver != driver) {
      return absl::InvalidArgumentError(
          absl::StrCat("sql connection '", name,
                       "': 'dialect' names one driver after its '+' and "
                       "'driver' another; give the driver once"));
    }
    target.driver = driver;
    target.dialect.resize(plus);
  }
  target.dialect = NormalizeDialect(target.dialect);
  if (!target.dialect.empty() && !IsKnownDialect(target.dialect)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sql connection '", name,
                     "': ", UnknownDialectMessage(target.dialect)));
  }
  if (!target.driver.empty() && !IsValidDriver(target.driver)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sql connection '", name,
                     "': 'driver' must be letters, digits or '_' (e.g. "
                     "psycopg2, pymysql)"));
  }

  if (auto it = params.find("port");
      it != params.end() &&
      !std::holds_alternative<std::monostate>(it->second)) {
    absl::StatusOr<int> port = absl::InvalidArgumentError("");
    if (const auto* i = std::get_if<int64_t>(&it->second)) {
      port = (*i >= 1 && *i <= 65535)
                 ? absl::StatusOr<int>(static_cast<int>(*i))
                 : ParsePort("");
    } else if (const auto* s = std::get_if<std::string>(&it->second)) {
      port = ParsePort(absl::StripAsciiWhitespace(*s));
    } else if (const auto* d = std::get_if<double>(&it->second);
               d != nullptr && std::floor(*d) == *d && *d >= 1 && *d <= 65535) {
      port = static_cast<int>(*d);
    } else {
      port = ParsePort("");
    }
    if (!port.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sql connection '", name, "': 'port': ", port.status().message()));
    }
    target.port = *port;
  }

  for (auto it = params.lower_bound("query.");
       it != params.end() && absl::StartsWith(it->first, "query."); ++it) {
    const std::string key = it->first.substr(6);
    if (key.empty() || std::holds_alternative<std::monostate>(it->second)) {
      continue;
    }
    absl::StatusOr<std::string> text =
        PartToString(name, it->first, it->second);
    if (!text.ok()) return text.status();
    target.query[key] = *std::move(text);
  }

  if (target.dialect.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sql connection '", name, "' needs 'dialect' (or a 'url')"));
  }
  // The C client libraries stop at a NUL ("%00" in a URL): "/ok/x.db\0/../.."
  // would be checked as one path and opened as another.
  const std::pair<const char*, const std::string*> text_fields[] = {
      {"username", &target.username},
      {"password", &target.password},
      {"host", &target.host},
      {"database", &target.database}};
  for (const auto& [key, field] : text_fields) {
    if (field->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sql connection '", name, "': '", key, "' holds a NUL character"));
    }
  }
  for (const auto& [key, value] : target.query) {
    if (key.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sql connection '", name, "': a query option holds a NUL character"));
    }
  }
  if (NeedsHostAndDatabase(target.dialect)) {
    // A Unix socket given as a query option stands in for the host, as in
    // postgresql://u:p@/db?host=/run/postgresql.
    const char* socket = SocketOption(target.dialect);
    auto socket_it = target.query.find(socket);
    const bool has_socket =
        socket_it != target.query.end() && !socket_it->second.empty();
    if (target.host.empty() && !has_socket) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sql connection '", name, "' needs 'host' (dialect ", target.dialect,
          "), or a Unix socket as 'query.", socket, "'"));
    }
    if (target.database.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sql connection '", name, "' needs 'database' (dialect ",
                       target.dialect, ")"));
    }
  }
  return target;
}

}  // namespace connbroker::config
