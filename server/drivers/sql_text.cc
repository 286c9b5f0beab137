// sql_text: the first keyword of a statement, past comments.
#include "server/drivers/sql_text.h"

#include <cstddef>

#include "absl/strings/ascii.h"

namespace connbroker::server {
namespace {

bool StartsLineComment(absl::string_view sql, size_t i,
                       const SqlComments& comments) {
  if (comments.hash_lines && sql[i] == '#') return true;
  if (sql.substr(i, 2) != "--") return false;
  return !comments.dash_needs_blank || i + 2 >= sql.size() ||
         static_cast<unsigned char>(sql[i + 2]) <= ' ';
}

// The end of the /* */ comment at sql[i], or npos when it never ends.
size_t BlockCommentEnd(absl::string_view sql, size_t i,
                       const SqlComments& comments) {
  int depth = 0;
  size_t j = i;
  while (j < sql.size()) {
    if (sql.substr(j, 2) == "/*" && (depth == 0 || comments.nested_blocks)) {
      ++depth;
      j += 2;
    } else if (sql.substr(j, 2) == "*/") {
      j += 2;
      if (--depth == 0) return j;
    } else {
      ++j;
    }
  }
  return absl::string_view::npos;
}

}  // namespace

absl::string_view LeadingKeyword(absl::string_view sql,
                                 const SqlComments& comments) {
  size_t i = 0;
  while (i < sql.size()) {
    if (absl::ascii_isspace(static_cast<unsigned char>(sql[i])) ||
        sql[i] == '(') {
      ++i;
    } else if (StartsLineComment(sql, i, comments)) {
      const size_t end = sql.find('\n', i);
      if (end == absl::string_view::npos) return {};
      i = end + 1;
    } else if (sql.substr(i, 2) == "/*") {
      i = BlockCommentEnd(sql, i, comments);
      if (i == absl::string_view::npos) return {};
    } else {
      break;
    }
  }
  size_t end = i;
  while (end < sql.size() &&
         absl::ascii_isalpha(static_cast<unsigned char>(sql[end]))) {
    ++end;
  }
  return sql.substr(i, end - i);
}

}  // namespace connbroker::server
