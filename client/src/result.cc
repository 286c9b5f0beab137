// Value conversion to and from the wire, and the decoding of Query batches
// into a columnar Result.
#include "connbroker/result.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace connbroker {

v1::Value ValueToProto(const Value& value) {
  v1::Value out;
  struct Visitor {
    v1::Value& out;
    void operator()(std::monostate) { out.set_null_value(v1::NULL_VALUE); }
    void operator()(bool b) { out.set_bool_value(b); }
    void operator()(int64_t i) { out.set_int64_value(i); }
    void operator()(double d) { out.set_double_value(d); }
    void operator()(const std::string& s) { out.set_text_value(s); }
    void operator()(const Blob& b) { out.set_blob_value(b.bytes); }
  };
  std::visit(Visitor{out}, value);
  return out;
}

Value ValueFromProto(const v1::Value& value) {
  switch (value.kind_case()) {
    case v1::Value::kBoolValue:
      return value.bool_value();
    case v1::Value::kInt64Value:
      return value.int64_value();
    case v1::Value::kDoubleValue:
      return value.double_value();
    case v1::Value::kTextValue:
      return value.text_value();
    case v1::Value::kBlobValue:
      return Blob{value.blob_value()};
    case v1::Value::kNullValue:
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return std::monostate{};
}

const char* ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kUnspecified:
      return "unspecified";
    case ValueKind::kNull:
      return "null";
    case ValueKind::kBool:
      return "bool";
    case ValueKind::kInt64:
      return "int64";
    case ValueKind::kDouble:
      return "double";
    case ValueKind::kText:
      return "text";
    case ValueKind::kBlob:
      return "blob";
    case ValueKind::kMixed:
      return "mixed";
  }
  return "unspecified";
}

namespace {

ValueKind KindFromProto(v1::ValueKind kind) {
  switch (kind) {
    case v1::VALUE_KIND_NULL:
      return ValueKind::kNull;
    case v1::VALUE_KIND_BOOL:
      return ValueKind::kBool;
    case v1::VALUE_KIND_INT64:
      return ValueKind::kInt64;
    case v1::VALUE_KIND_DOUBLE:
      return ValueKind::kDouble;
    case v1::VALUE_KIND_TEXT:
      return ValueKind::kText;
    case v1::VALUE_KIND_BLOB:
      return ValueKind::kBlob;
    case v1::VALUE_KIND_MIXED:
      return ValueKind::kMixed;
    default:
      return ValueKind::kUnspecified;
  }
}

// The kind a batch's column vector carries; kNull when no vector is set
// (every row of the batch is NULL).
ValueKind BatchKind(const v1::ColumnVector& vector) {
  switch (vector.values_case()) {
    case v1::ColumnVector::kBools:
      return ValueKind::kBool;
    case v1::ColumnVector::kInt64S:
      return ValueKind::kInt64;
    case v1::ColumnVector::kDoubles:
      return ValueKind::kDouble;
    case v1::ColumnVector::kTexts:
      return ValueKind::kText;
    case v1::ColumnVector::kBlobs:
      return ValueKind::kBlob;
    case v1::ColumnVector::kMixed:
      return ValueKind::kMixed;
    case v1::ColumnVector::VALUES_NOT_SET:
      break;
  }
  return ValueKind::kNull;
}

int VectorSize(const v1::ColumnVector& vector) {
  switch (vector.values_case()) {
    case v1::ColumnVector::kBools:
      return vector.bools().values_size();
    case v1::ColumnVector::kInt64S:
      return vector.int64s().values_size();
    case v1::ColumnVector::kDoubles:
      return vector.doubles().values_size();
    case v1::ColumnVector::kTexts:
      return vector.texts().values_size();
    case v1::ColumnVector::kBlobs:
      return vector.blobs().values_size();
    case v1::ColumnVector::kMixed:
      return vector.mixed().values_size();
    case v1::ColumnVector::VALUES_NOT_SET:
      break;
  }
  return -1;
}

bool IsNullProto(const v1::Value& value) {
  return value.kind_case() == v1::Value::kNullValue ||
         value.kind_case() == v1::Value::KIND_NOT_SET;
}

// The value of row `i` of a typed (non-mixed) batch vector.
Value BatchCell(const v1::ColumnVector& vector, int i) {
  switch (vector.values_case()) {
    case v1::ColumnVector::kBools:
      return vector.bools().values(i);
    case v1::ColumnVector::kInt64S:
      return vector.int64s().values(i);
    case v1::ColumnVector::kDoubles:
      return vector.doubles().values(i);
    case v1::ColumnVector::kTexts:
      return vector.texts().values(i);
    case v1::ColumnVector::kBlobs:
      return Blob{vector.blobs().values(i)};
    case v1::ColumnVector::kMixed:
      return ValueFromProto(vector.mixed().values(i));
    case v1::ColumnVector::VALUES_NOT_SET:
      break;
  }
  return std::monostate{};
}

}  // namespace

bool Result::is_null(size_t row, size_t col) const {
  const ColumnData& data = data_[col];
  if (data.kind == ValueKind::kNull) return true;
  return !data.nulls.empty() && data.nulls[row];
}

Value Result::cell(size_t row, size_t col) const {
  if (is_null(row, col)) return std::monostate{};
  return TypedCell(data_[col], row);
}

Value Result::TypedCell(const ColumnData& data, size_t row) {
  switch (data.kind) {
    case ValueKind::kBool:
      return static_cast<bool>(data.bools[row]);
    case ValueKind::kInt64:
      return data.int64s[row];
    case ValueKind::kDouble:
      return data.doubles[row];
    case ValueKind::kText:
      return std::string(data.bytes_of(row));
    case ValueKind::kBlob:
      return Blob{std::string(data.bytes_of(row))};
    case ValueKind::kMixed:
      return data.mixed[row];
    case ValueKind::kNull:
    case ValueKind::kUnspecified:
      break;
  }
  return std::monostate{};
}

void Result::SetSchema(const v1::Schema& schema) {
  columns_.clear();
  columns_.reserve(schema.columns_size());
  for (const v1::Column& c : schema.columns()) {
    columns_.push_back(Column{c.name(), c.database_type(),
                              KindFromProto(c.kind()), c.nullable()});
  }
  data_.assign(columns_.size(), ColumnData{});
  num_rows_ = 0;
  summary_ = QuerySummary{};
}

void Result::SetSummary(const v1::QuerySummary& summary) {
  summary_.row_count = summary.row_count();
  summary_.from_cache = summary.from_cache();
  summary_.elapsed_micros = summary.elapsed_micros();
  summary_.backend_executions = summary.backend_executions();
  summary_.handle = summary.handle();
}

void Result::ColumnData::Clear() {
  kind = ValueKind::kNull;
  nulls.clear();
  bools.clear();
  int64s.clear();
  doubles.clear();
  bytes.clear();
  ends.clear();
  mixed.clear();
}

void Result::ClearRows() {
  // Cleared, not replaced: a streaming reader's next batch reuses the
  // vectors' memory instead of growing them again from nothing.
  for (ColumnData& data : data_) data.Clear();
  num_rows_ = 0;
}

absl::Status Result::AppendBatch(const v1::RowBatch& batch) {
  // Validate everything first so that a bad batch leaves no partial rows.
  if (batch.row_count() < 0) {
    return absl::InternalError(
        absl::StrCat("malformed batch: row_count ", batch.row_count()));
  }
  const size_t rows = static_cast<size_t>(batch.row_count());
  if (rows == 0 && batch.columns_size() == 0) return absl::OkStatus();
  if (static_cast<size_t>(batch.columns_size()) != columns_.size()) {
    return absl::InternalError(
        absl::StrCat("malformed batch: ", batch.columns_size(),
                     " columns, schema has ", columns_.size()));
  }
  for (int c = 0; c < batch.columns_size(); ++c) {
    const v1::ColumnVector& vector = batch.columns(c);
    if (vector.nulls_size() != 0 &&
        static_cast<size_t>(vector.nulls_size()) != rows) {
      return absl::InternalError(
          absl::StrCat("malformed batch: column ", c, " has ",
                       vector.nulls_size(), " null flags for ", rows, " rows"));
    }
    const int size = VectorSize(vector);
    if (size >= 0 && static_cast<size_t>(size) != rows) {
      return absl::InternalError(absl::StrCat("malformed batch: column ", c,
                                              " has ", size, " values for ",
                                              rows, " rows"));
    }
  }
  for (size_t c = 0; c < columns_.size(); ++c) {
    AppendColumn(batch.columns(static_cast<int>(c)), rows, num_rows_, data_[c]);
    if (data_[c].kind != ValueKind::kNull) columns_[c].kind = data_[c].kind;
  }
  num_rows_ += rows;
  return absl::OkStatus();
}

void Result::PadTyped(ColumnData& data, size_t count) {
  switch (data.kind) {
    case ValueKind::kBool:
      data.bools.resize(data.bools.size() + count);
      break;
    case ValueKind::kInt64:
      data.int64s.resize(data.int64s.size() + count);
      break;
    case ValueKind::kDouble:
      data.doubles.resize(data.doubles.size() + count);
      break;
    case ValueKind::kText:
    case ValueKind::kBlob:
      // Empty cells: each ends where the previous one did.
      data.ends.resize(data.ends.size() + count, data.bytes.size());
      break;
    case ValueKind::kMixed:
      data.mixed.resize(data.mixed.size() + count);
      break;
    case ValueKind::kNull:
    case ValueKind::kUnspecified:
      break;
  }
}

void Result::ConvertToMixed(ColumnData& data, size_t rows) {
  // Only happens when batches of one column disagree (SQLite's dynamic
  // typing); the column pays one Value per row from then on.
  std::vector<Value> mixed;
  mixed.reserve(rows);
  for (size_t r = 0; r < rows; ++r) {
    const bool null = !data.nulls.empty() && data.nulls[r];
    mixed.push_back(null ? Value{} : TypedCell(data, r));
  }
  data.bools.clear();
  data.int64s.clear();
  data.doubles.clear();
  data.bytes.clear();
  data.ends.clear();
  data.mixed = std::move(mixed);
  data.kind = ValueKind::kMixed;
}

void Result::AppendBytes(
    const google::protobuf::RepeatedPtrField<std::string>& cells,
    ColumnData& data) {
  size_t total = data.bytes.size();
  for (const std::string& cell : cells) total += cell.size();
  // One allocation at most for the batch (none once a reused Result has
  // grown to the batch's size), doubling so that a whole result collected
  // batch by batch is copied a bounded number of times.
  if (total > data.bytes.capacity()) {
    data.bytes.reserve(std::max(total, 2 * data.bytes.capacity()));
  }
  for (const std::string& cell : cells) {
    data.bytes.append(cell);
    data.ends.push_back(data.bytes.size());
  }
}

void Result::AppendColumn(const v1::ColumnVector& vector, size_t rows,
                          size_t old_rows, ColumnData& data) {
  if (rows == 0) return;
  const ValueKind kind = BatchKind(vector);

  // Which rows of this batch are NULL: the mask, or a null Value in a mixed
  // vector (the server may mark those either way).
  auto row_null = [&](size_t i) {
    if (vector.nulls_size() != 0 && vector.nulls(static_cast<int>(i))) {
      return true;
    }
    return kind == ValueKind::kMixed &&
           IsNullProto(vector.mixed().values(static_cast<int>(i)));
  };
  auto append_nulls = [&](bool all_null) {
    bool any = all_null;
    for (size_t i = 0; !any && i < rows; ++i) any = row_null(i);
    // An empty mask means "no NULL so far" (rows > 0 here, so a mask in use
    // is never empty after this).
    if (!any && data.nulls.empty()) return;
    if (data.nulls.empty()) data.nulls.assign(old_rows, false);
    for (size_t i = 0; i < rows; ++i) {
      data.nulls.push_back(all_null || row_null(i));
    }
  };

  if (kind == ValueKind::kNull) {
    // No vector: the whole batch is NULL. A column with no typed value yet
    // needs no storage at all; otherwise pad with placeholders.
    if (data.kind == ValueKind::kNull) return;
    append_nulls(/*all_null=*/true);
    PadTyped(data, rows);
    return;
  }

  if (data.kind == ValueKind::kNull) {
    // First typed batch: earlier rows (if any) were all NULL.
    data.kind = kind;
    if (old_rows > 0) {
      data.nulls.assign(old_rows, true);
      PadTyped(data, old_rows);
    }
  } else if (data.kind != kind && data.kind != ValueKind::kMixed) {
    ConvertToMixed(data, old_rows);
  }
  append_nulls(/*all_null=*/false);

  const int n = static_cast<int>(rows);
  if (data.kind == ValueKind::kMixed) {
    data.mixed.reserve(data.mixed.size() + rows);
    for (int i = 0; i < n; ++i) {
      data.mixed.push_back(row_null(i) ? Value{} : BatchCell(vector, i));
    }
    return;
  }
  switch (kind) {
    case ValueKind::kBool:
      data.bools.insert(data.bools.end(), vector.bools().values().begin(),
                        vector.bools().values().end());
      break;
    case ValueKind::kInt64:
      data.int64s.insert(data.int64s.end(), vector.int64s().values().begin(),
                         vector.int64s().values().end());
      break;
    case ValueKind::kDouble:
      data.doubles.insert(data.doubles.end(), vector.doubles().values().begin(),
                          vector.doubles().values().end());
      break;
    case ValueKind::kText:
      AppendBytes(vector.texts().values(), data);
      break;
    case ValueKind::kBlob:
      AppendBytes(vector.blobs().values(), data);
      break;
    default:
      break;
  }
}

}  // namespace connbroker
