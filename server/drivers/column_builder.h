// ColumnBuilder: fills one column of a RowBatch cell by cell, for every
// driver.
//
// A column travels as one typed vector while the batch's non-NULL cells share
// a storage class, and switches to `mixed` (a Value per row, moving what it
// holds so far) when a second class appears -- SQLite's dynamic typing; the
// typed drivers never need it. NULLs keep a placeholder in the vector and a
// mark in the null mask. Text that is not valid UTF-8 travels as a blob,
// since protobuf strings must be UTF-8 or the client fails to parse the
// batch. Each Append returns about what the cell costs on the wire, so a
// driver can cut batches by bytes. A batch reused for the next one keeps its
// vectors' capacity and its text cells' buffers (StartBatch), so a stream
// stops allocating per batch and per cell once its first batch is built.
// Not thread-safe.
#ifndef CONNBROKER_SERVER_DRIVERS_COLUMN_BUILDER_H_
#define CONNBROKER_SERVER_DRIVERS_COLUMN_BUILDER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "connbroker/v1/values.pb.h"
#include "google/protobuf/repeated_field.h"

namespace connbroker::server {

class ColumnBuilder {
 public:
  // `out` must hold no cells (StartBatch's columns: a typed vector may be
  // set, empty, kept for its capacity) and outlive the builder.
  explicit ColumnBuilder(v1::ColumnVector* out) : out_(out) {}

  // Each appends the cell of row `row` (rows come in order, 0, 1, ...).
  size_t AppendNull(int row);
  size_t AppendBool(int row, bool value);
  size_t AppendInt64(int row, int64_t value);
  size_t AppendDouble(int row, double value);
  size_t AppendText(int row, absl::string_view value);
  size_t AppendBlob(int row, absl::string_view value);

  // Writes the null mask once the batch has `rows` rows.
  void Finish(int rows);

  // The kind this batch's column travels as (VALUE_KIND_NULL: only NULLs).
  v1::ValueKind kind() const { return kind_; }
  bool has_null() const { return !null_rows_.empty(); }

 private:
  // Makes room for a cell of `kind` at `row`: starts the typed vector or
  // converts to mixed. Returns the kind the cell is stored as.
  v1::ValueKind Prepare(v1::ValueKind kind, int row);
  void AppendPlaceholder();
  void StartTyped(v1::ValueKind kind, int row);
  void ConvertToMixed(int row);

  v1::ColumnVector* const out_;
  v1::ValueKind kind_ = v1::VALUE_KIND_NULL;
  // The vector of kind_, once started: saves finding it through the oneof
  // on every cell.
  google::protobuf::RepeatedField<bool>* bools_ = nullptr;
  google::protobuf::RepeatedField<int64_t>* int64s_ = nullptr;
  google::protobuf::RepeatedField<double>* doubles_ = nullptr;
  google::protobuf::RepeatedPtrField<std::string>* strings_ = nullptr;
  google::protobuf::RepeatedPtrField<v1::Value>* mixed_ = nullptr;
  std::vector<int> null_rows_;  // ascending
};

// Empties `batch` for `columns` columns and returns their builders. The
// columns' vectors are emptied, not freed: a batch reused for the next one
// refills them without reallocating (a column whose kind changes, or that
// ends up all NULL, drops its vector).
std::vector<ColumnBuilder> StartBatch(int columns, v1::RowBatch* batch);

// After the first batch: sets each column's kind and nullability in
// `schema` from what the batch held; `declared_not_null` (may be empty)
// says which columns the database guarantees are never NULL.
void SettleSchema(const std::vector<ColumnBuilder>& builders,
                  const std::vector<bool>& declared_not_null,
                  v1::Schema* schema);

// True when `bytes` is valid UTF-8 (no overlongs, no surrogates).
bool IsValidUtf8(absl::string_view bytes);

}  // namespace connbroker::server

#endif  // CONNBROKER_SERVER_DRIVERS_COLUMN_BUILDER_H_
