// Parsers and output writers of the `connbroker` command (see format.h).
#include "format.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"

namespace connbroker::cli {

namespace {

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// "42", "-7", "+3": an optional sign and digits.
bool LooksInteger(absl::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  return AllDigits(s);
}

// "4.5", "-.5", "1e3", "2.5E-3": digits with a point and/or an exponent.
// Stricter than strtod, which would also take "inf", "nan" and hex.
bool LooksDecimal(absl::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  bool digits = false;
  size_t i = 0;
  while (i < s.size() &&
         absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) {
    ++i;
    digits = true;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() &&
           absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
      digits = true;
    }
  }
  if (!digits) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (!AllDigits(s.substr(i))) return false;
    i = s.size();
  }
  return i == s.size();
}

bool IsNumericKind(ValueKind kind) {
  return kind == ValueKind::kInt64 || kind == ValueKind::kDouble;
}

// Characters a terminal would act on (newlines, tabs, escapes) are shown
// escaped so that one cell stays on one line of the table.
std::string DisplayText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    } else {
      out += c;
    }
  }
  return out;
}

// Width on a terminal, counting UTF-8 code points (wide East Asian
// characters count as one; good enough for aligning).
size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++width;
  }
  return width;
}

void AppendPadded(std::string& line, absl::string_view cell, size_t width,
                  bool right, bool last) {
  const size_t w = DisplayWidth(cell);
  const size_t pad = w < width ? width - w : 0;
  if (right) line.append(pad, ' ');
  line.append(cell.data(), cell.size());
  if (!right && !last) line.append(pad, ' ');
}

std::string TableLine(const std::vector<std::string>& cells,
                      const std::vector<size_t>& widths,
                      const std::vector<bool>& right_align) {
  std::string line;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (i > 0) line += " | ";
    AppendPadded(line, cells[i], widths[i],
                 i < right_align.size() && right_align[i],
                 i + 1 == cells.size());
  }
  return line;
}

std::string RuleLine(const std::vector<size_t>& widths) {
  std::string line;
  for (size_t i = 0; i < widths.size(); ++i) {
    if (i > 0) line += "-+-";
    line.append(widths[i], '-');
  }
  return line;
}

std::vector<size_t> Widths(const std::vector<std::string>& header,
                           const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size());
  for (size_t i = 0; i < header.size(); ++i) {
    widths[i] = DisplayWidth(header[i]);
  }
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  return widths;
}

std::string RowsLine(size_t rows, const QuerySummary& summary) {
  std::string line = absl::StrCat("(", rows, rows == 1 ? " row" : " rows");
  if (summary.from_cache) {
    absl::StrAppend(&line, ", from cache)");
  } else {
    absl::StrAppendFormat(&line, ", %.1f ms)", summary.elapsed_micros / 1e3);
  }
  return line;
}

// --------------------------------------------------------------------------
// Query result writers

class TableWriter : public ResultWriter {
 public:
  TableWriter(std::ostream& out, size_t buffer_rows)
      : out_(out), buffer_rows_(std::max<size_t>(buffer_rows, 1)) {}

  void OnBatch(const Result& batch) override {
    if (!started_) {
      started_ = true;
      for (const Column& column : batch.columns()) {
        header_.push_back(column.name);
        right_align_.push_back(IsNumericKind(column.kind));
      }
    }
    for (size_t r = 0; r < batch.num_rows(); ++r) {
      std::vector<std::string> cells;
      cells.reserve(batch.num_columns());
      for (size_t c = 0; c < batch.num_columns(); ++c) {
        cells.push_back(batch.is_null(r, c)
                            ? "NULL"
                            : DisplayText(PlainValue(batch.cell(r, c))));
      }
      ++rows_;
      if (flushed_) {
        out_ << TableLine(cells, widths_, right_align_) << '\n';
      } else {
        buffered_.push_back(std::move(cells));
        if (buffered_.size() >= buffer_rows_) Flush();
      }
    }
  }

  void Finish(const QuerySummary& summary) override {
    if (!flushed_) Flush();
    out_ << RowsLine(rows_, summary) << '\n';
    out_.flush();
  }

 private:
  void Flush() {
    flushed_ = true;
    if (!header_.empty()) {
      widths_ = Widths(header_, buffered_);
      out_ << TableLine(header_, widths_, right_align_) << '\n'
           << RuleLine(widths_) << '\n';
      for (const auto& row : buffered_) {
        out_ << TableLine(row, widths_, right_align_) << '\n';
      }
    }
    buffered_.clear();
    buffered_.shrink_to_fit();
  }

  std::ostream& out_;
  const size_t buffer_rows_;
  bool started_ = false;
  bool flushed_ = false;
  size_t rows_ = 0;
  std::vector<std::string> header_;
  std::vector<bool> right_align_;
  std::vector<size_t> widths_;
  std::vector<std::vector<std::string>> buffered_;
};

class CsvWriter : public ResultWriter {
 public:
  explicit CsvWriter(std::ostream& out) : out_(out) {}

  void OnBatch(const Result& batch) override {
    if (!started_) {
      started_ = true;
      std::string line;
      for (size_t c = 0; c < batch.num_columns(); ++c) {
        if (c > 0) line += ',';
        line += CsvField(batch.column(c).name);
      }
      out_ << line << '\n';
    }
    std::string line;
    for (size_t r = 0; r < batch.num_rows(); ++r) {
      line.clear();
      for (size_t c = 0; c < batch.num_columns(); ++c) {
        if (c > 0) line += ',';
        if (batch.is_null(r, c)) continue;  // NULL: an empty field
        const Value value = batch.cell(r, c);
        const std::string text = PlainValue(value);
        // An empty string is quoted so that it reads back apart from NULL.
        line += text.empty() ? "\"\"" : CsvField(text);
      }
      out_ << line << '\n';
    }
  }

  void Finish(const QuerySummary&) override { out_.flush(); }

 private:
  std::ostream& out_;
  bool started_ = false;
};

class JsonWriter : public ResultWriter {
 public:
  explicit JsonWriter(std::ostream& out) : out_(out) {}

  void OnBatch(const Result& batch) override {
    if (!started_) WriteHead(batch.columns());
    std::string line;
    for (size_t r = 0; r < batch.num_rows(); ++r) {
      line.assign(rows_ == 0 ? "\n[" : ",\n[");
      for (size_t c = 0; c < batch.num_columns(); ++c) {
        if (c > 0) line += ',';
        line += JsonValue(batch.cell(r, c));
      }
      line += ']';
      out_ << line;
      ++rows_;
    }
  }

  void Finish(const QuerySummary& summary) override {
    if (!started_) WriteHead({});
    out_ << (rows_ == 0 ? "]" : "\n]") << ",\"row_count\":" << rows_
         << ",\"from_cache\":" << (summary.from_cache ? "true" : "false")
         << ",\"backend_executions\":" << summary.backend_executions
         << ",\"elapsed_micros\":" << summary.elapsed_micros
         << ",\"handle\":" << JsonString(summary.handle) << "}\n";
    out_.flush();
  }

 private:
  void WriteHead(const std::vector<Column>& columns) {
    started_ = true;
    std::string head = "{\"columns\":[";
    for (size_t c = 0; c < columns.size(); ++c) {
      if (c > 0) head += ',';
      absl::StrAppend(&head, "{\"name\":", JsonString(columns[c].name),
                      ",\"type\":", JsonString(columns[c].database_type),
                      ",\"kind\":", JsonString(ValueKindName(columns[c].kind)),
                      "}");
    }
    head += "],\"rows\":[";
    out_ << head;
  }

  std::ostream& out_;
  bool started_ = false;
  size_t rows_ = 0;
};

// --------------------------------------------------------------------------
// Protobuf messages as JSON, by reflection

void AppendProtoJson(const google::protobuf::Message& message,
                     std::string& out);

void AppendFieldValue(const google::protobuf::Message& message,
                      const google::protobuf::FieldDescriptor* field, int index,
                      std::string& out) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = message.GetReflection();
  const bool rep = field->is_repeated();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      absl::StrAppend(&out, rep ? r->GetRepeatedInt32(message, field, index)
                                : r->GetInt32(message, field));
      break;
    case FieldDescriptor::CPPTYPE_INT64:
      absl::StrAppend(&out, rep ? r->GetRepeatedInt64(message, field, index)
                                : r->GetInt64(message, field));
      break;
    case FieldDescriptor::CPPTYPE_UINT32:
      absl::StrAppend(&out, rep ? r->GetRepeatedUInt32(message, field, index)
                                : r->GetUInt32(message, field));
      break;
    case FieldDescriptor::CPPTYPE_UINT64:
      absl::StrAppend(&out, rep ? r->GetRepeatedUInt64(message, field, index)
                                : r->GetUInt64(message, field));
      break;
    case FieldDescriptor::CPPTYPE_DOUBLE:
      out += JsonValue(rep ? r->GetRepeatedDouble(message, field, index)
                           : r->GetDouble(message, field));
      break;
    case FieldDescriptor::CPPTYPE_FLOAT:
      out += JsonValue(
          static_cast<double>(rep ? r->GetRepeatedFloat(message, field, index)
                                  : r->GetFloat(message, field)));
      break;
    case FieldDescriptor::CPPTYPE_BOOL:
      out += (rep ? r->GetRepeatedBool(message, field, index)
                  : r->GetBool(message, field))
                 ? "true"
                 : "false";
      break;
    case FieldDescriptor::CPPTYPE_ENUM:
      out += JsonString((rep ? r->GetRepeatedEnum(message, field, index)
                             : r->GetEnum(message, field))
                            ->name());
      break;
    case FieldDescriptor::CPPTYPE_STRING: {
      const std::string s = rep ? r->GetRepeatedString(message, field, index)
                                : r->GetString(message, field);
      out += field->type() == FieldDescriptor::TYPE_BYTES
                 ? absl::StrCat("\"", absl::Base64Escape(s), "\"")
                 : JsonString(s);
      break;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      AppendProtoJson(rep ? r->GetRepeatedMessage(message, field, index)
                          : r->GetMessage(message, field),
                      out);
      break;
  }
}

void AppendProtoJson(const google::protobuf::Message& message,
                     std::string& out) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  out += '{';
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (i > 0) out += ',';
    absl::StrAppend(&out, JsonString(field->name()), ":");
    if (field->is_map() || field->is_repeated()) {
      // Maps print as arrays of {key, value} entries: rare here (no map in
      // the listing or stats replies) and still valid JSON.
      out += '[';
      const int n = reflection->FieldSize(message, field);
      for (int j = 0; j < n; ++j) {
        if (j > 0) out += ',';
        AppendFieldValue(message, field, j, out);
      }
      out += ']';
    } else if (field->has_presence() && !reflection->HasField(message, field)) {
      out += "null";
    } else {
      AppendFieldValue(message, field, 0, out);
    }
  }
  out += '}';
}

}  // namespace

// --------------------------------------------------------------------------
// Parsers

absl::StatusOr<Format> ParseFormat(absl::string_view text) {
  if (text == "table") return Format::kTable;
  if (text == "csv") return Format::kCsv;
  if (text == "json") return Format::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format '", text, "': use table, csv or json"));
}

Value ParseCliValue(absl::string_view text) {
  if (absl::ConsumePrefix(&text, "text:")) return std::string(text);
  if (text == "null") return std::monostate{};
  if (text == "true") return true;
  if (text == "false") return false;
  if (LooksInteger(text)) {
    int64_t i;
    if (absl::SimpleAtoi(text, &i)) return i;
    return std::string(text);  // out of int64 range: keep every digit
  }
  if (LooksDecimal(text)) {
    double d;
    if (absl::SimpleAtod(text, &d) && std::isfinite(d)) return d;
  }
  return std::string(text);
}

absl::StatusOr<std::pair<std::string, Value>> ParseKeyValue(
    absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected key=value, got '", text, "'"));
  }
  return std::make_pair(std::string(text.substr(0, eq)),
                        ParseCliValue(text.substr(eq + 1)));
}

absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text) {
  const auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid duration '", text,
        "': use seconds (30, 2.5) or units such as 500ms, 10m, 1h30m"));
  };
  absl::string_view rest = text;
  if (rest.empty()) return bad();
  double seconds = 0;
  bool first = true;
  while (!rest.empty()) {
    size_t i = 0;
    while (i < rest.size() &&
           (absl::ascii_isdigit(static_cast<unsigned char>(rest[i])) ||
            rest[i] == '.')) {
      ++i;
    }
    double number;
    if (i == 0 || !absl::SimpleAtod(rest.substr(0, i), &number)) return bad();
    rest.remove_prefix(i);
    if (first && rest.empty()) {
      seconds = number;  // a bare number: seconds
      break;
    }
    first = false;
    double unit;
    if (absl::ConsumePrefix(&rest, "ms")) {
      unit = 1e-3;
    } else if (absl::ConsumePrefix(&rest, "us")) {
      unit = 1e-6;
    } else if (absl::ConsumePrefix(&rest, "s")) {
      unit = 1;
    } else if (absl::ConsumePrefix(&rest, "m")) {
      unit = 60;
    } else if (absl::ConsumePrefix(&rest, "h")) {
      unit = 3600;
    } else if (absl::ConsumePrefix(&rest, "d")) {
      unit = 86400;
    } else {
      return bad();
    }
    seconds += number * unit;
  }
  if (!std::isfinite(seconds)) return bad();
  // Rounded to microseconds so that "0.1" is exactly 100ms.
  return absl::Microseconds(std::llround(seconds * 1e6));
}

// --------------------------------------------------------------------------
// Value text

std::string FormatDouble(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, value);
    if (precision == 17 || std::strtod(buf, nullptr) == value) break;
  }
  return buf;
}

std::string CsvField(absl::string_view text) {
  const bool quote =
      text.find_first_of(",\"\r\n") != absl::string_view::npos ||
      (!text.empty() && (text.front() == ' ' || text.back() == ' '));
  if (!quote) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string JsonString(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  auto cont = [&](size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i + k < n && s[i + k] >= lo && s[i + k] <= hi;
  };
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20) {
            absl::StrAppendFormat(&out, "\\u%04x", c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // The length of a well-formed UTF-8 sequence starting here, or 0
    // (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF).
    size_t len = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      len = cont(1) ? 2 : 0;
    } else if (c == 0xE0) {
      len = cont(1, 0xA0) && cont(2) ? 3 : 0;
    } else if (c == 0xED) {
      len = cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    } else if (c >= 0xE1 && c <= 0xEF) {
      len = cont(1) && cont(2) ? 3 : 0;
    } else if (c == 0xF0) {
      len = cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    } else if (c >= 0xF1 && c <= 0xF3) {
      len = cont(1) && cont(2) && cont(3) ? 4 : 0;
    } else if (c == 0xF4) {
      len = cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    }
    if (len == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(text.data() + i, len);
      i += len;
    }
  }
  out += '"';
  return out;
}

std::string JsonValue(const Value& value) {
  struct Visitor {
    std::string operator()(std::monostate) { return "null"; }
    std::string operator()(bool b) { return b ? "true" : "false"; }
    std::string operator()(int64_t i) { return absl::StrCat(i); }
    std::string operator()(double d) {
      return std::isfinite(d) ? FormatDouble(d)
                              : absl::StrCat("\"", FormatDouble(d), "\"");
    }
    std::string operator()(const std::string& s) { return JsonString(s); }
    std::string operator()(const Blob& b) {
      return absl::StrCat("\"", absl::Base64Escape(b.bytes), "\"");
    }
  };
  return std::visit(Visitor{}, value);
}

std::string PlainValue(const Value& value) {
  struct Visitor {
    std::string operator()(std::monostate) { return ""; }
    std::string operator()(bool b) { return b ? "true" : "false"; }
    std::string operator()(int64_t i) { return absl::StrCat(i); }
    std::string operator()(double d) { return FormatDouble(d); }
    std::string operator()(const std::string& s) { return s; }
    std::string operator()(const Blob& b) {
      return absl::StrCat("\\x", absl::BytesToHexString(b.bytes));
    }
  };
  return std::visit(Visitor{}, value);
}

std::string ProtoToJson(const google::protobuf::Message& message) {
  std::string out;
  AppendProtoJson(message, out);
  return out;
}

// --------------------------------------------------------------------------
// Writers

std::unique_ptr<ResultWriter> MakeResultWriter(Format format, std::ostream& out,
                                               size_t table_buffer_rows) {
  switch (format) {
    case Format::kCsv:
      return std::make_unique<CsvWriter>(out);
    case Format::kJson:
      return std::make_unique<JsonWriter>(out);
    case Format::kTable:
      break;
  }
  return std::make_unique<TableWriter>(out, table_buffer_rows);
}

void WriteTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows,
                const std::vector<bool>& right_align, std::ostream& out) {
  const std::vector<size_t> widths = Widths(header, rows);
  out << TableLine(header, widths, right_align) << '\n'
      << RuleLine(widths) << '\n';
  for (const auto& row : rows) {
    out << TableLine(row, widths, right_align) << '\n';
  }
}

void WriteExecute(Format format, const ExecuteResult& result,
                  std::ostream& out) {
  switch (format) {
    case Format::kJson:
      out << "{\"rows_affected\":" << result.rows_affected
          << ",\"last_insert_id\":" << result.last_insert_id
          << ",\"handle\":" << JsonString(result.handle) << "}\n";
      return;
    case Format::kCsv:
      out << "rows_affected,last_insert_id,handle\n"
          << result.rows_affected << ',' << result.last_insert_id << ','
          << CsvField(result.handle) << '\n';
      return;
    case Format::kTable:
      out << "(" << result.rows_affected
          << (result.rows_affected == 1 ? " row" : " rows") << " affected";
      if (result.last_insert_id != 0) {
        out << ", last insert id " << result.last_insert_id;
      }
      out << ")\n";
      return;
  }
}

void WriteConnect(Format format, const v1::ConnectResponse& response,
                  std::ostream& out) {
  if (format == Format::kJson) {
    out << ProtoToJson(response) << '\n';
    return;
  }
  WriteTable({"field", "value"},
             {{"handle", response.handle()},
              {"name", response.name()},
              {"type", response.type()},
              {"scope", response.scope()},
              {"created", response.created() ? "true" : "false"},
              {"description", DisplayText(response.description())}},
             {}, out);
}

void WriteReset(Format format, const ResetResult& result, std::ostream& out) {
  if (format == Format::kJson) {
    out << "{\"handle\":" << JsonString(result.handle)
        << ",\"backends_closed\":" << result.backends_closed
        << ",\"cached_results_dropped\":" << result.cached_results_dropped
        << "}\n";
    return;
  }
  out << "reset " << result.handle << ": " << result.backends_closed
      << " backend connections closed, " << result.cached_results_dropped
      << " cached results dropped\n";
}

void WriteConnections(Format format, const v1::ListConnectionsResponse& list,
                      std::ostream& out) {
  if (format == Format::kJson) {
    out << ProtoToJson(list) << '\n';
    return;
  }
  std::vector<std::vector<std::string>> rows;
  for (const v1::ConnectionInfo& c : list.connections()) {
    rows.push_back({c.handle(), DisplayText(c.name()), c.type(), c.scope(),
                    c.live() ? "yes" : "no", absl::StrCat(c.queries()),
                    absl::StrCat(c.clients()),
                    absl::StrCat(c.pool().in_use(), "/", c.pool().idle(), "/",
                                 c.pool().open(), "/", c.pool().max_size()),
                    absl::StrCat(c.pool().waiting()),
                    absl::StrCat(c.cached_results()),
                    DisplayText(c.description())});
  }
  WriteTable(
      {"handle", "name", "type", "scope", "live", "queries", "clients",
       "pool used/idle/open/max", "waiting", "cached", "description"},
      rows,
      {false, false, false, false, false, true, true, true, true, true, false},
      out);
  out << "(" << rows.size()
      << (rows.size() == 1 ? " connection)" : " connections)") << '\n';
}

void WriteStats(Format format, const v1::GetStatsResponse& stats,
                std::ostream& out) {
  if (format == Format::kJson) {
    out << ProtoToJson(stats) << '\n';
    return;
  }
  // By reflection, so a counter added to the proto shows up here unchanged.
  const google::protobuf::Descriptor* descriptor = stats.GetDescriptor();
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    const google::protobuf::Reflection* reflection = stats.GetReflection();
    std::string value;
    if (field->cpp_type() ==
        google::protobuf::FieldDescriptor::CPPTYPE_STRING) {
      // Text plainly, not as JSON literals; a list joined by commas.
      if (!field->is_repeated()) {
        value = reflection->GetString(stats, field);
      }
      for (int j = 0;
           field->is_repeated() && j < reflection->FieldSize(stats, field);
           ++j) {
        if (j > 0) value += ", ";
        value += reflection->GetRepeatedString(stats, field, j);
      }
      value = DisplayText(value);
    } else if (field->is_repeated()) {
      for (int j = 0; j < reflection->FieldSize(stats, field); ++j) {
        if (j > 0) value += ", ";
        AppendFieldValue(stats, field, j, value);
      }
    } else {
      AppendFieldValue(stats, field, 0, value);
    }
    rows.push_back({field->name(), value});
  }
  WriteTable({"stat", "value"}, rows, {}, out);
}

// ---------------------------------------------------------------------------
// The shell's SQL

namespace {

// The lexer's states between characters.
enum LexState {
  kCode,
  kSingleQuote,
  kDoubleQuote,
  kBacktick,
  kLineComment,
  kBlockComment,
  kDollarQuote,
};

bool IsWordChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
}

// Lexes the character at text[i] from `state` (with `tag`, in a dollar
// quote). Returns how many characters the token took, and sets `code` when
// the character is SQL proper (outside quotes and comments).
size_t LexStep(absl::string_view text, size_t i, int& state, std::string& tag,
               bool& code) {
  const char c = text[i];
  const char next = i + 1 < text.size() ? text[i + 1] : '\0';
  code = false;
  switch (state) {
    case kCode:
      if (c == '\'') {
        state = kSingleQuote;
      } else if (c == '"') {
        state = kDoubleQuote;
      } else if (c == '`') {
        state = kBacktick;
      } else if (c == '-' && next == '-') {
        state = kLineComment;
        return 2;
      } else if (c == '/' && next == '*') {
        state = kBlockComment;
        return 2;
      } else if (c == '$' && (i == 0 || !IsWordChar(text[i - 1]))) {
        // $$ or $tag$ opens a dollar quote; $1 (a parameter) does not.
        size_t end = i + 1;
        while (end < text.size() && IsWordChar(text[end]) &&
               !absl::ascii_isdigit(static_cast<unsigned char>(text[i + 1]))) {
          ++end;
        }
        if (end < text.size() && text[end] == '$') {
          tag = std::string(text.substr(i, end + 1 - i));
          state = kDollarQuote;
          return tag.size();
        }
        code = true;
      } else {
        code = true;
      }
      return 1;
    case kSingleQuote:
      if (c == '\'') state = kCode;  // '' reopens at once: same effect
      return 1;
    case kDoubleQuote:
      if (c == '"') state = kCode;
      return 1;
    case kBacktick:
      if (c == '`') state = kCode;
      return 1;
    case kLineComment:
      if (c == '\n') state = kCode;
      return 1;
    case kBlockComment:
      if (c == '*' && next == '/') {
        state = kCode;
        return 2;
      }
      return 1;
    case kDollarQuote:
      if (absl::StartsWith(text.substr(i), tag)) {
        state = kCode;
        return tag.size();
      }
      return 1;
  }
  return 1;
}

// The words of `sql` outside quotes and comments, upper-cased, in order;
// `(` counts as a word so the caller can skip it.
std::vector<std::string> CodeWords(absl::string_view sql) {
  std::vector<std::string> words;
  int state = kCode;
  std::string tag;
  std::string word;
  auto flush = [&] {
    if (!word.empty()) words.push_back(absl::AsciiStrToUpper(word));
    word.clear();
  };
  for (size_t i = 0; i < sql.size();) {
    bool code = false;
    const size_t n = LexStep(sql, i, state, tag, code);
    if (code && IsWordChar(sql[i])) {
      word.push_back(sql[i]);
    } else {
      flush();
      if (code && sql[i] == '(') words.push_back("(");
    }
    i += n;
  }
  flush();
  return words;
}

bool IsBlankSql(absl::string_view sql) {
  int state = kCode;
  std::string tag;
  for (size_t i = 0; i < sql.size();) {
    bool code = false;
    const size_t n = LexStep(sql, i, state, tag, code);
    if (state != kCode && state != kLineComment && state != kBlockComment) {
      return false;  // a quote opened
    }
    if (code && !absl::ascii_isspace(static_cast<unsigned char>(sql[i]))) {
      return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

std::vector<std::string> StatementSplitter::Feed(absl::string_view text) {
  buffer_.append(text.data(), text.size());
  std::vector<std::string> statements;
  size_t start = 0;
  size_t i = scanned_;
  while (i < buffer_.size()) {
    bool code = false;
    const size_t n = LexStep(buffer_, i, state_, tag_, code);
    if (code && buffer_[i] == ';') {
      absl::string_view statement(buffer_.data() + start, i - start);
      if (!IsBlankSql(statement)) {
        statements.emplace_back(absl::StripAsciiWhitespace(statement));
      }
      start = i + 1;
    }
    i += n;
  }
  buffer_.erase(0, start);
  scanned_ = buffer_.size();
  return statements;
}

bool StatementSplitter::pending() const {
  return state_ != kCode || !IsBlankSql(buffer_);
}

std::string StatementSplitter::TakeRest() {
  std::string rest = IsBlankSql(buffer_) && state_ == kCode
                         ? std::string()
                         : std::string(absl::StripAsciiWhitespace(buffer_));
  buffer_.clear();
  scanned_ = 0;
  state_ = kCode;
  tag_.clear();
  return rest;
}

bool ReturnsRows(absl::string_view sql) {
  static const char* const kRowKeywords[] = {"SELECT", "WITH",     "VALUES",
                                             "SHOW",   "PRAGMA",   "EXPLAIN",
                                             "TABLE",  "DESCRIBE", "DESC"};
  const std::vector<std::string> words = CodeWords(sql);
  for (const std::string& word : words) {
    if (word == "(") continue;
    bool rows = false;
    for (const char* keyword : kRowKeywords) rows = rows || word == keyword;
    if (rows) return true;
    break;  // the first keyword decides, unless RETURNING follows
  }
  for (const std::string& word : words) {
    if (word == "RETURNING") return true;
  }
  return false;
}

}  // namespace connbroker::cli
