// TOML reading: toml11's values and exceptions become Params and absl::Status.
#include "connbroker/config/toml_loader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <toml.hpp>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "toml_internal.h"

namespace connbroker::config {
namespace {

template <typename T>
std::string StreamText(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

void Flatten(const toml::value& v, const std::string& key, Params& out) {
  auto child = [&key](const std::string& part) {
    return key.empty() ? part : absl::StrCat(key, ".", part);
  };
  switch (v.type()) {
    case toml::value_t::boolean:
      out[key] = v.as_boolean();
      break;
    case toml::value_t::integer:
      out[key] = static_cast<int64_t>(v.as_integer());
      break;
    case toml::value_t::floating:
      out[key] = static_cast<double>(v.as_floating());
      break;
    case toml::value_t::string:
      out[key] = v.as_string().str;
      break;
    case toml::value_t::offset_datetime:
      out[key] = StreamText(v.as_offset_datetime());
      break;
    case toml::value_t::local_datetime:
      out[key] = StreamText(v.as_local_datetime());
      break;
    case toml::value_t::local_date:
      out[key] = StreamText(v.as_local_date());
      break;
    case toml::value_t::local_time:
      out[key] = StreamText(v.as_local_time());
      break;
    case toml::value_t::array: {
      const auto& array = v.as_array();
      for (size_t i = 0; i < array.size(); ++i) {
        Flatten(array[i], child(absl::StrCat(i)), out);
      }
      break;
    }
    case toml::value_t::table:
      for (const auto& [k, item] : v.as_table()) Flatten(item, child(k), out);
      break;
    case toml::value_t::empty:
      break;
  }
}

// One location of toml11's error art:
//    12 | text of the line
//       |     ^--- comment
struct ArtLocation {
  int line = 0;
  int column = 0;
  std::string comment;
};

// Reads the locations out of toml11's message. The line's own text is
// skipped on purpose: it may hold a password.
std::vector<ArtLocation> ParseArt(const std::vector<std::string>& lines) {
  std::vector<ArtLocation> found;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    absl::string_view number_line = lines[i];
    const size_t bar = number_line.find(" | ");
    if (bar == absl::string_view::npos) continue;
    int line_number = 0;
    if (!absl::SimpleAtoi(
            absl::StripAsciiWhitespace(number_line.substr(0, bar)),
            &line_number)) {
      continue;
    }
    absl::string_view marker = lines[i + 1];
    // The marker's " | " sits at the same offset as the number line's.
    if (marker.size() < bar + 3 || marker.substr(bar, 3) != " | ") continue;
    marker.remove_prefix(bar + 3);
    const size_t start = marker.find_first_not_of(' ');
    if (start == absl::string_view::npos) continue;
    absl::string_view rest = marker.substr(start);
    if (!absl::ConsumePrefix(&rest, "^---")) {
      // An underline: ~~~~ comment.
      const size_t end = rest.find_first_not_of('~');
      if (end == 0) continue;
      rest = end == absl::string_view::npos ? absl::string_view()
                                            : rest.substr(end);
    }
    ArtLocation location;
    location.line = line_number;
    location.column = static_cast<int>(start) + 1;
    location.comment = std::string(absl::StripAsciiWhitespace(rest));
    found.push_back(std::move(location));
    ++i;
  }
  return found;
}

// "<source>:<line>:<column>: <description>" from toml11's multi-line message.
absl::Status SyntaxError(const toml::exception& e,
                         const std::string& source_name) {
  const std::vector<std::string> lines = absl::StrSplit(e.what(), '\n');
  std::string description = lines.empty() ? "" : lines.front();
  if (absl::StartsWith(description, "[error]")) description.erase(0, 7);
  description = std::string(absl::StripAsciiWhitespace(description));
  // "toml::parse_array: missing separator" -> "missing separator".
  if (absl::StartsWith(description, "toml::")) {
    if (size_t colon = description.find(": "); colon != std::string::npos) {
      description = description.substr(colon + 2);
    }
  }
  if (description.empty()) description = "syntax error";

  // toml11 throws with the parser's position, which can be the start of the
  // line; the art points at the offending token. Prefer the last art
  // location on the thrown line (for "defined twice" errors the art also
  // shows the first definition).
  int line = static_cast<int>(e.location().line());
  int column = static_cast<int>(e.location().column());
  std::string comment;
  const std::vector<ArtLocation> art = ParseArt(lines);
  const ArtLocation* chosen = nullptr;
  for (const ArtLocation& location : art) {
    if (location.line == line) chosen = &location;
  }
  if (chosen == nullptr && !art.empty()) chosen = &art.back();
  if (chosen != nullptr) {
    line = chosen->line;
    column = chosen->column;
    comment = chosen->comment;
  }
  // "expected newline, but got 'x'." quotes a character of the line: drop
  // the quote, keep the expectation.
  if (size_t got = comment.find(", but got"); got != std::string::npos) {
    comment.resize(got);
  }
  if (!comment.empty() && comment != "here" &&
      comment.find_first_of("'\"") == std::string::npos) {
    absl::StrAppend(&description, " (", comment, ")");
  }
  return absl::InvalidArgumentError(
      absl::StrCat(source_name, ":", line, ":", column, ": ", description));
}

// The offset of the first byte of `text` that does not belong to a
// well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), or npos when it is all UTF-8.
size_t FirstInvalidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = [&text](size_t at) {
      return static_cast<unsigned char>(text[at]);
    };
    const unsigned char lead = byte(i);
    size_t length = 0;
    unsigned char min = 0x80;  // bounds of the second byte
    unsigned char max = 0xbf;
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3;
      if (lead == 0xe0) min = 0xa0;  // overlong
      if (lead == 0xed) max = 0x9f;  // surrogates
    } else if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4;
      if (lead == 0xf0) min = 0x90;  // overlong
      if (lead == 0xf4) max = 0x8f;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + length > text.size()) return i;
    for (size_t k = 1; k < length; ++k) {
      const unsigned char c = byte(i + k);
      if (k == 1 ? (c < min || c > max) : (c < 0x80 || c > 0xbf)) return i;
    }
    i += length;
  }
  return absl::string_view::npos;
}

// Arrays and tables nested deeper than this are refused. toml11 parses
// arrays and inline tables by recursion, and Flatten walks every table the
// same way, so a file of a few kilobytes of '[' overflowed the stack
// (tests/fuzz/regressions/secrets_fuzzer); a real secrets file nests a
// handful of levels.
constexpr int kMaxNesting = 100;

// "<source>:<line>:<column>: <what>" for byte `offset` of `text`.
absl::Status ErrorAt(absl::string_view text, size_t offset,
                     const std::string& source_name, absl::string_view what) {
  const absl::string_view before = text.substr(0, offset);
  const size_t line_start = before.rfind('\n');
  const size_t line = 1 + std::count(before.begin(), before.end(), '\n');
  const size_t column =
      line_start == absl::string_view::npos ? offset + 1 : offset - line_start;
  return absl::InvalidArgumentError(
      absl::StrCat(source_name, ":", line, ":", column, ": ", what));
}

// The offset of the first '[' or '{' (array, inline table or table header)
// that opens more than kMaxNesting levels, outside strings and comments; npos
// when there is none. Only a bound, not a parser: a malformed file that it
// misreads is refused by toml11 anyway.
size_t FirstTooDeep(absl::string_view text) {
  int depth = 0;
  size_t i = 0;
  const auto at = [&text, &i](absl::string_view token) {
    return text.substr(i, token.size()) == token;
  };
  while (i < text.size()) {
    const char c = text[i];
    if (c == '#') {  // a comment, to the end of its line
      i = text.find('\n', i);
      if (i == absl::string_view::npos) break;
    } else if (at("\"\"\"") || at("'''")) {  // multi-line string
      const char quote = c;
      for (i += 3; i < text.size(); ++i) {
        if (quote == '"' && text[i] == '\\') {
          ++i;
        } else if (at(quote == '"' ? "\"\"\"" : "'''")) {
          i += 2;
          // Up to two quotes just before the closing ones belong to the text.
          while (i + 1 < text.size() && text[i + 1] == quote) ++i;
          break;
        }
      }
    } else if (c == '"' || c == '\'') {  // a string ends with its line
      for (++i; i < text.size() && text[i] != c && text[i] != '\n'; ++i) {
        if (c == '"' && text[i] == '\\') ++i;
      }
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxNesting) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
    ++i;
  }
  return absl::string_view::npos;
}

// True when `v` holds arrays or tables more than `levels` deep. Recurses at
// most levels + 1 deep itself.
bool DeeperThan(const toml::value& v, int levels) {
  if (!v.is_array() && !v.is_table()) return false;
  if (levels == 0) return true;
  if (v.is_array()) {
    for (const toml::value& item : v.as_array()) {
      if (DeeperThan(item, levels - 1)) return true;
    }
  } else {
    for (const auto& [key, item] : v.as_table()) {
      if (DeeperThan(item, levels - 1)) return true;
    }
  }
  return false;
}

absl::StatusOr<toml::value> ParseTomlValue(const std::string& text,
                                           const std::string& source_name) {
  // TOML files are UTF-8 (Streamlit decodes secrets.toml as UTF-8 too).
  // Checked here rather than left to toml11: 3.7 reports invalid UTF-8 in a
  // string by rewinding the token's copy with an iterator into the file's
  // buffer, reading out of bounds (tests/fuzz/regressions/secrets_fuzzer).
  if (const size_t bad = FirstInvalidUtf8(text);
      bad != absl::string_view::npos) {
    return ErrorAt(text, bad, source_name,
                   "invalid UTF-8 (a TOML file must be UTF-8 text)");
  }
  if (const size_t deep = FirstTooDeep(text); deep != absl::string_view::npos) {
    return ErrorAt(text, deep, source_name,
                   absl::StrCat("arrays and tables nested more than ",
                                kMaxNesting, " levels deep"));
  }
  std::istringstream stream(text);
  try {
    toml::value value = toml::parse(stream, source_name);
    // Dotted keys ("a.b.c = 1") and table headers nest tables without
    // brackets.
    if (DeeperThan(value, kMaxNesting)) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_name, ": arrays and tables nested more than ",
                       kMaxNesting, " levels deep"));
    }
    return value;
  } catch (const toml::exception& e) {
    return SyntaxError(e, source_name);
  } catch (const std::exception& e) {
    // Not expected from an in-memory stream; keep what toml11 said without
    // any source text.
    const std::string what = e.what();
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, ": cannot parse TOML: ", what.substr(0, what.find('\n'))));
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  if (std::filesystem::is_directory(status)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": is a directory, not a TOML file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": read error"));
  }
  return text.str();
}

absl::StatusOr<toml::value> LoadTomlValue(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseTomlValue(*text, path);
}

}  // namespace

absl::StatusOr<Params> ParseToml(const std::string& text,
                                 const std::string& source_name) {
  absl::StatusOr<toml::value> value = ParseTomlValue(text, source_name);
  if (!value.ok()) return value.status();
  Params params;
  Flatten(*value, "", params);
  return params;
}

absl::StatusOr<Params> LoadTomlFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseToml(*text, path);
}

namespace internal {

absl::StatusOr<std::map<std::string, Params>> LoadTomlSubtables(
    const std::string& path, const std::string& table) {
  absl::StatusOr<toml::value> value = LoadTomlValue(path);
  if (!value.ok()) return value.status();
  std::map<std::string, Params> sections;
  if (!value->is_table()) return sections;
  const auto& root = value->as_table();
  auto it = root.find(table);
  if (it == root.end() || !it->second.is_table()) return sections;
  for (const auto& [name, section] : it->second.as_table()) {
    // Scalars directly under [connections] are not connections.
    if (!section.is_table()) continue;
    Params& params = sections[name];
    Flatten(section, "", params);
  }
  return sections;
}

}  // namespace internal
}  // namespace connbroker::config
