// The data types of the connbroker C++ client: Value (a kwarg, a parameter or
// a cell), Column, the QuerySummary of a Query call, and Result, a decoded
// query result kept in columnar form. Also the one place where client values
// convert to and from the wire's connbroker.v1.Value.
#ifndef CONNBROKER_CLIENT_RESULT_H_
#define CONNBROKER_CLIENT_RESULT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "connbroker/v1/broker.pb.h"
#include "connbroker/v1/values.pb.h"

namespace connbroker {

// Bytes of a BLOB, kept apart from text so that a std::string in a Value
// always means text.
struct Blob {
  std::string bytes{};

  friend bool operator==(const Blob& a, const Blob& b) {
    return a.bytes == b.bytes;
  }
};

// One typed scalar: a kwarg, a query parameter or a result cell. The index
// order matches the wire's Value kinds: std::monostate is SQL NULL.
using Value =
    std::variant<std::monostate, bool, int64_t, double, std::string, Blob>;

// Converts between client values and the wire's connbroker.v1.Value. A wire
// Value with no kind set, or the null kind, becomes std::monostate.
v1::Value ValueToProto(const Value& value);
Value ValueFromProto(const v1::Value& value);

// The storage class a column's values travel as (mirrors v1::ValueKind).
enum class ValueKind {
  kUnspecified,
  kNull,  // every value seen so far was NULL
  kBool,
  kInt64,
  kDouble,
  kText,
  kBlob,
  kMixed,  // several storage classes in one column (SQLite)
};

// "int64", "text", "mixed", ...: the lower-case name used by the CLI output.
const char* ValueKindName(ValueKind kind);

// One result column, as the server's Schema describes it. `kind` starts as
// the schema's kind and is widened by decoding: set from the first typed
// batch when the schema said NULL, and kMixed once two batches disagree.
struct Column {
  std::string name{};
  std::string database_type{};  // e.g. "INTEGER", "numeric(10,2)"; may be empty
  ValueKind kind = ValueKind::kUnspecified;
  bool nullable = true;
};

// The closing part of a Query stream.
struct QuerySummary {
  int64_t row_count = 0;
  bool from_cache = false;
  int64_t elapsed_micros = 0;      // server time, request to last batch
  int32_t backend_executions = 0;  // 0 when served from the result cache
  std::string handle{};            // the connection that answered
};

// A query result: the columns, the rows and the summary. Rows stay in the
// columnar form they travel in (one typed vector per column plus a null
// mask), so a million-row result holds a few vectors, not a million objects;
// cell() builds a Value on demand. A Result is a value type (copyable,
// movable); like any standard container it is safe to read from many threads
// at once but must not be read while being decoded into.
//
// Decoding (used by Connection::Query and by tests with hand-built protos):
// SetSchema() once, AppendBatch() per batch, SetSummary() at the end.
class Result {
 public:
  Result() = default;

  size_t num_rows() const { return num_rows_; }
  size_t num_columns() const { return columns_.size(); }
  const std::vector<Column>& columns() const { return columns_; }
  // REQUIRES: i < num_columns().
  const Column& column(size_t i) const { return columns_[i]; }

  // REQUIRES: row < num_rows(), col < num_columns().
  bool is_null(size_t row, size_t col) const;
  Value cell(size_t row, size_t col) const;

  const QuerySummary& summary() const { return summary_; }
  bool from_cache() const { return summary_.from_cache; }
  int32_t backend_executions() const { return summary_.backend_executions; }
  int64_t elapsed_micros() const { return summary_.elapsed_micros; }
  const std::string& handle() const { return summary_.handle; }

  // Starts a result with the given columns and no rows.
  void SetSchema(const v1::Schema& schema);
  // Decodes one batch and appends its rows. Fails with INTERNAL (and leaves
  // the result unchanged) when the batch does not match the schema: wrong
  // column count, or a vector or null mask whose length is not row_count.
  absl::Status AppendBatch(const v1::RowBatch& batch);
  void SetSummary(const v1::QuerySummary& summary);
  // Drops the rows but keeps the columns: lets a streaming reader reuse one
  // Result per batch.
  void ClearRows();

 private:
  // The decoded values of one column. Exactly one of the typed vectors is in
  // use, chosen by `kind`; a NULL row holds a placeholder there and is marked
  // in `nulls`. `nulls` stays empty until the first NULL arrives. Text and
  // blob cells are packed end to end in `bytes` (row i is bytes[ends[i-1],
  // ends[i])): a batch's cells cost one copy each and no allocation.
  struct ColumnData {
    ValueKind kind = ValueKind::kNull;  // kNull: no typed value yet
    std::vector<bool> nulls;
    std::vector<bool> bools;
    std::vector<int64_t> int64s;
    std::vector<double> doubles;
    std::string bytes;         // text or blob cells, end to end
    std::vector<size_t> ends;  // where each row's cell ends in `bytes`
    std::vector<Value> mixed;

    // Row `row`'s text or blob cell.
    std::string_view bytes_of(size_t row) const {
      const size_t begin = row == 0 ? 0 : ends[row - 1];
      return std::string_view(bytes).substr(begin, ends[row] - begin);
    }
    // Forgets the rows, keeping the memory for the next batch's.
    void Clear();
  };

  static void AppendColumn(const v1::ColumnVector& vector, size_t rows,
                           size_t old_rows, ColumnData& data);
  static void AppendBytes(
      const google::protobuf::RepeatedPtrField<std::string>& cells,
      ColumnData& data);
  static void ConvertToMixed(ColumnData& data, size_t rows);
  static void PadTyped(ColumnData& data, size_t count);
  static Value TypedCell(const ColumnData& data, size_t row);

  std::vector<Column> columns_;
  std::vector<ColumnData> data_;
  size_t num_rows_ = 0;
  QuerySummary summary_;
};

}  // namespace connbroker

#endif  // CONNBROKER_CLIENT_RESULT_H_
