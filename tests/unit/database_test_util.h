// Helpers the driver tests share: parameter values, running a statement to
// completion, or a query to its end with every batch kept, through the blocking
// helpers of the Database contract (ExecuteNow, QueryNow, PinNow).
#ifndef CONNBROKER_TESTS_UNIT_DATABASE_TEST_UTIL_H_
#define CONNBROKER_TESTS_UNIT_DATABASE_TEST_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "server/drivers/database.h"

namespace connbroker::server {

// Parameter values, one of each kind.
inline v1::Value Int(int64_t v) {
  v1::Value value;
  value.set_int64_value(v);
  return value;
}
inline v1::Value Double(double v) {
  v1::Value value;
  value.set_double_value(v);
  return value;
}
inline v1::Value Text(const std::string& v) {
  v1::Value value;
  value.set_text_value(v);
  return value;
}
inline v1::Value Blob(const std::string& v) {
  v1::Value value;
  value.set_blob_value(v);
  return value;
}
inline v1::Value Bool(bool v) {
  v1::Value value;
  value.set_bool_value(v);
  return value;
}
inline v1::Value Null() {
  v1::Value value;
  value.set_null_value(v1::NULL_VALUE);
  return value;
}

// Runs `sql`; fails the test (naming the SQL) when it fails.
inline void Exec(Database& db, const std::string& sql,
                 const v1::Params& params = {}) {
  absl::StatusOr<ExecuteResult> result = ExecuteNow(db, sql, params);
  ASSERT_TRUE(result.ok()) << sql << ": " << result.status();
}

// Everything a query returned: the batches, each Next's "more", the schema.
struct QueryOutput {
  std::vector<v1::RowBatch> batches;
  std::vector<bool> more;
  v1::Schema schema;
  int64_t rows = 0;
};

// Reads `cursor` to the end in batches of `max_rows` / `max_bytes`.
inline absl::StatusOr<QueryOutput> ReadAll(
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor, int max_rows,
    size_t max_bytes) {
  if (!cursor.ok()) return cursor.status();
  QueryOutput output;
  while (true) {
    v1::RowBatch batch;
    absl::StatusOr<bool> more = (*cursor)->Next(max_rows, max_bytes, &batch);
    if (!more.ok()) return more.status();
    output.rows += batch.row_count();
    output.batches.push_back(std::move(batch));
    output.more.push_back(*more);
    if (!*more) break;
    if (output.batches.size() > 100000) return absl::InternalError("loop");
  }
  output.schema = (*cursor)->schema();
  return output;
}

// Runs `sql` to the end in batches of `max_rows` / `max_bytes`.
inline absl::StatusOr<QueryOutput> RunQuery(Database& db,
                                            const std::string& sql,
                                            const v1::Params& params = {},
                                            int max_rows = 1000,
                                            size_t max_bytes = 1 << 20) {
  return ReadAll(QueryNow(db, sql, params), max_rows, max_bytes);
}

// RunQuery on a pinned backend (the cursor is gone when this returns).
inline absl::StatusOr<QueryOutput> RunQuery(PinnedBackend& pinned,
                                            const std::string& sql,
                                            const v1::Params& params = {}) {
  return ReadAll(pinned.Query(sql, params, nullptr), 1000, 1 << 20);
}

// The single integer `sql` answers on a pinned backend.
inline absl::StatusOr<int64_t> PinnedInt(PinnedBackend& pinned,
                                         const std::string& sql) {
  absl::StatusOr<QueryOutput> output = RunQuery(pinned, sql);
  if (!output.ok()) return output.status();
  if (output->rows != 1 ||
      output->batches[0].columns(0).int64s().values_size() != 1) {
    return absl::InternalError(sql + ": not one integer");
  }
  return output->batches[0].columns(0).int64s().values(0);
}

// Starts `sql` on `pinned`, reads one row of it and drops the cursor with
// more rows to come (a result abandoned mid-way).
inline void AbandonAfterOneRow(PinnedBackend& pinned, const std::string& sql) {
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      pinned.Query(sql, {}, nullptr);
  ASSERT_TRUE(cursor.ok()) << sql << ": " << cursor.status();
  v1::RowBatch batch;
  absl::StatusOr<bool> more = (*cursor)->Next(1, 1 << 20, &batch);
  ASSERT_TRUE(more.ok()) << sql << ": " << more.status();
  EXPECT_TRUE(*more) << sql << ": no more rows after the first";
}

// Pins a backend of `db` for `access`; fails the test when it cannot.
inline std::unique_ptr<PinnedBackend> MustPin(Database& db, Access access) {
  absl::StatusOr<std::unique_ptr<PinnedBackend>> pinned = PinNow(db, access);
  EXPECT_TRUE(pinned.ok()) << pinned.status();
  return pinned.ok() ? *std::move(pinned) : nullptr;
}

}  // namespace connbroker::server

#endif  // CONNBROKER_TESTS_UNIT_DATABASE_TEST_UTIL_H_
