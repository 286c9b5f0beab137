// sql_text: reading the start of a statement's text, shared by the drivers.
//
// Drivers decide a few things from a statement's first keyword -- whether a
// retry could double an effect, whether preparing it pays -- and must find
// that keyword past blanks, parentheses and comments, which each dialect
// writes a little differently.
#ifndef CONNBROKER_SERVER_DRIVERS_SQL_TEXT_H_
#define CONNBROKER_SERVER_DRIVERS_SQL_TEXT_H_

#include "absl/strings/string_view.h"

namespace connbroker::server {

// How a dialect writes comments.
struct SqlComments {
  bool hash_lines = false;        // MySQL: '#' starts a line comment
  bool dash_needs_blank = false;  // MySQL: "--" only before a blank (5--3)
  bool nested_blocks = false;     // PostgreSQL: /* */ comments nest
};

// The first word (letters) of `sql` after blanks, '(' and comments, as
// written; empty when there is none or a comment before it never ends.
absl::string_view LeadingKeyword(absl::string_view sql,
                                 const SqlComments& comments);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_SQL_TEXT_H_
