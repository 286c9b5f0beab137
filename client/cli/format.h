// The `connbroker` command's parsers (values, k=V pairs, durations, output
// formats) and output writers (table, CSV, JSON). Kept apart from main.cc so
// the unit tests can check them without a daemon.
#ifndef CONNBROKER_CLIENT_CLI_FORMAT_H_
#define CONNBROKER_CLIENT_CLI_FORMAT_H_

#include <cstddef>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "connbroker/client.h"
#include "connbroker/result.h"
#include "google/protobuf/message.h"

namespace connbroker::cli {

enum class Format { kTable, kCsv, kJson };

// "table", "csv" or "json".
absl::StatusOr<Format> ParseFormat(absl::string_view text);

// A command-line value: "42" is int64, "4.5" / "1e3" double, "true" /
// "false" bool, "null" NULL, anything else text; a "text:" prefix forces
// text ("text:42"). An integer too large for int64 stays text, so no digit
// is lost.
Value ParseCliValue(absl::string_view text);

// "key=V" with V as ParseCliValue reads it; splits at the first '='.
absl::StatusOr<std::pair<std::string, Value>> ParseKeyValue(
    absl::string_view text);

// "30" and "2.5" are seconds; otherwise a sequence of number+unit with units
// d, h, m, s, ms, us: "10m", "1h30m", "2.5s", "500ms". Negative durations
// are refused.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

// The shortest decimal text that reads back as exactly `value`
// (at most 17 significant digits).
std::string FormatDouble(double value);

// One CSV field, RFC 4180: quoted (with doubled quotes) when it holds a
// comma, a quote, CR or LF, or leading/trailing spaces.
std::string CsvField(absl::string_view text);

// A JSON string literal with its quotes: '"' and '\' escaped, control
// characters as \n, \t, ... or \u00XX, valid UTF-8 passed through, and each
// byte of an invalid UTF-8 sequence replaced by U+FFFD.
std::string JsonString(absl::string_view text);

// A cell as JSON: null, true/false, a number, a string, blobs in base64.
// Non-finite doubles become the strings "NaN", "Infinity", "-Infinity"
// (proto3's JSON mapping), since JSON has no literal for them.
std::string JsonValue(const Value& value);

// A non-NULL cell as plain text for table and CSV output: bools as
// true/false, blobs as \x followed by hex.
std::string PlainValue(const Value& value);

// Every field of a message by its proto name, as JSON: integers as plain
// numbers (not strings, unlike MessageToJsonString), unset optional fields
// as null, nested messages as objects.
std::string ProtoToJson(const google::protobuf::Message& message);

// Writes a streamed query result. OnBatch is called as
// Connection::QueryBatches calls its callback (first with zero rows when the
// schema arrives); Finish after the last batch. CSV and JSON write each batch
// as it comes; the table buffers up to `table_buffer_rows` rows to size its
// columns, then prints the rest with those widths, so memory stays bounded.
class ResultWriter {
 public:
  virtual ~ResultWriter() = default;
  virtual void OnBatch(const Result& batch) = 0;
  virtual void Finish(const QuerySummary& summary) = 0;
};

std::unique_ptr<ResultWriter> MakeResultWriter(Format format, std::ostream& out,
                                               size_t table_buffer_rows = 1000);

// Column-aligned text: a header, a rule, the rows. `right_align[i]` puts
// column i's cells flush right (numbers).
void WriteTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows,
                const std::vector<bool>& right_align, std::ostream& out);

// The other commands' outputs. CSV is accepted for execute only; callers
// reject it for the others.
void WriteExecute(Format format, const ExecuteResult& result,
                  std::ostream& out);
void WriteConnect(Format format, const v1::ConnectResponse& response,
                  std::ostream& out);
void WriteReset(Format format, const ResetResult& result, std::ostream& out);
void WriteConnections(Format format, const v1::ListConnectionsResponse& list,
                      std::ostream& out);
void WriteStats(Format format, const v1::GetStatsResponse& stats,
                std::ostream& out);

// Splits the SQL that `connbroker shell` reads into statements: each ends at
// a `;` outside quotes ('...', "...", `...`), dollar quotes ($$...$$,
// $tag$...$tag$) and comments (-- to the end of the line, /* ... */).
// Backslashes are plain characters, as in standard SQL. Text may be fed in
// pieces (lines); a statement cut between them waits for the rest.
class StatementSplitter {
 public:
  // Appends `text`; returns the statements it completed, without their `;`
  // and trimmed, skipping those that hold only blanks and comments.
  std::vector<std::string> Feed(absl::string_view text);
  // True while an unfinished statement is buffered (a continuation is due).
  bool pending() const;
  // At the end of input: the unfinished statement (trimmed), or empty.
  std::string TakeRest();

 private:
  std::string buffer_;
  size_t scanned_ = 0;  // buffer_ is lexed up to here
  int state_ = 0;       // the lexer's state at scanned_
  std::string tag_;     // the dollar quote's tag, in a dollar quote
};

// Whether the shell sends `sql` as a query, for the rows it returns: its
// first keyword (past blanks, comments and opening parentheses) is SELECT,
// WITH, VALUES, SHOW, PRAGMA, EXPLAIN, TABLE, DESCRIBE or DESC, or it says
// RETURNING outside quotes and comments. Otherwise it is executed.
bool ReturnsRows(absl::string_view sql);

}  // namespace connbroker::cli

#endif  // CONNBROKER_CLIENT_CLI_FORMAT_H_
