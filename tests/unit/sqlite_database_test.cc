// Tests of the SQLite driver (server/drivers/sqlite_database.cc) and of
// OpenDatabase, against real SQLite files in a fresh temporary directory.
#include <SQLiteCpp/Database.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/config/spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/drivers/cancel_signal.h"
#include "server/drivers/database.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/database_test_util.h"

namespace connbroker::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class SqliteDatabaseTest : public ::testing::Test {
 protected:
  std::string PathOf(const std::string& file) const { return dir_.Path(file); }

  static config::ConnectionSpec Spec(const std::string& database,
                                     int readers = 2) {
    config::ConnectionSpec spec;
    spec.name = "test";
    spec.type = "sql";
    spec.sql.dialect = "sqlite";
    spec.sql.database = database;
    spec.pool.pool_size = readers;
    spec.pool.acquire_timeout = absl::Seconds(5);
    spec.pool.busy_timeout = absl::Seconds(2);
    return spec;
  }

  std::unique_ptr<Database> Open(const config::ConnectionSpec& spec) {
    absl::StatusOr<std::unique_ptr<Database>> db = OpenDatabase(spec);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? std::move(*db) : nullptr;
  }

  std::unique_ptr<Database> OpenFile(const std::string& file = "app.db",
                                     int readers = 2) {
    return Open(Spec(PathOf(file), readers));
  }

  using Result = QueryOutput;

  static int64_t CountRows(Database& db, const std::string& table) {
    absl::StatusOr<Result> result =
        RunQuery(db, "SELECT count(*) FROM " + table);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return -1;
    return result->batches[0].columns(0).int64s().values(0);
  }

  testing::TempDir dir_;
};

template <typename Repeated>
std::vector<typename Repeated::value_type> ToVector(const Repeated& r) {
  return std::vector<typename Repeated::value_type>(r.begin(), r.end());
}

TEST_F(SqliteDatabaseTest, TypedColumnsAndNulls) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db,
       "CREATE TABLE t(id INTEGER NOT NULL, r REAL, s TEXT, b BLOB, z TEXT)");
  absl::StatusOr<ExecuteResult> inserted =
      ExecuteNow(*db,
                 "INSERT INTO t VALUES (1, 1.5, 'a', x'00ff', NULL),"
                 " (2, NULL, 'b', x'', NULL), (3, 3.25, 'c', x'01', NULL)",
                 {});
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 3);
  EXPECT_EQ(inserted->last_insert_id, 3);

  absl::StatusOr<Result> result = RunQuery(
      *db, "SELECT id, r, s, b, z, id * 2 AS twice FROM t ORDER BY id");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->batches.size(), 1u);
  EXPECT_THAT(result->more, ElementsAre(false));
  const v1::RowBatch& batch = result->batches[0];
  ASSERT_EQ(batch.row_count(), 3);
  ASSERT_EQ(batch.columns_size(), 6);

  const v1::Schema& schema = result->schema;
  ASSERT_EQ(schema.columns_size(), 6);
  EXPECT_EQ(schema.columns(0).name(), "id");
  EXPECT_EQ(schema.columns(0).database_type(), "INTEGER");
  EXPECT_EQ(schema.columns(0).kind(), v1::VALUE_KIND_INT64);
  EXPECT_FALSE(schema.columns(0).nullable());
  EXPECT_EQ(schema.columns(1).database_type(), "REAL");
  EXPECT_EQ(schema.columns(1).kind(), v1::VALUE_KIND_DOUBLE);
  EXPECT_TRUE(schema.columns(1).nullable());
  EXPECT_EQ(schema.columns(2).kind(), v1::VALUE_KIND_TEXT);
  EXPECT_EQ(schema.columns(3).kind(), v1::VALUE_KIND_BLOB);
  EXPECT_EQ(schema.columns(4).kind(), v1::VALUE_KIND_NULL);
  EXPECT_EQ(schema.columns(5).name(), "twice");
  EXPECT_EQ(schema.columns(5).database_type(), "");
  EXPECT_EQ(schema.columns(5).kind(), v1::VALUE_KIND_INT64);
  EXPECT_TRUE(schema.columns(5).nullable());

  const v1::ColumnVector& id = batch.columns(0);
  ASSERT_EQ(id.values_case(), v1::ColumnVector::kInt64S);
  EXPECT_THAT(ToVector(id.int64s().values()), ElementsAre(1, 2, 3));
  EXPECT_EQ(id.nulls_size(), 0);

  const v1::ColumnVector& r = batch.columns(1);
  ASSERT_EQ(r.values_case(), v1::ColumnVector::kDoubles);
  EXPECT_THAT(ToVector(r.doubles().values()), ElementsAre(1.5, 0.0, 3.25));
  EXPECT_THAT(ToVector(r.nulls()), ElementsAre(false, true, false));

  const v1::ColumnVector& s = batch.columns(2);
  ASSERT_EQ(s.values_case(), v1::ColumnVector::kTexts);
  EXPECT_THAT(ToVector(s.texts().values()), ElementsAre("a", "b", "c"));

  const v1::ColumnVector& b = batch.columns(3);
  ASSERT_EQ(b.values_case(), v1::ColumnVector::kBlobs);
  EXPECT_THAT(ToVector(b.blobs().values()),
              ElementsAre(std::string("\x00\xff", 2), "", "\x01"));
  EXPECT_EQ(b.nulls_size(), 0);

  const v1::ColumnVector& z = batch.columns(4);
  EXPECT_EQ(z.values_case(), v1::ColumnVector::VALUES_NOT_SET);
  EXPECT_THAT(ToVector(z.nulls()), ElementsAre(true, true, true));

  EXPECT_THAT(ToVector(batch.columns(5).int64s().values()),
              ElementsAre(2, 4, 6));
}

TEST_F(SqliteDatabaseTest, MixedStorageClassesTravelAsValues) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE m(v)");
  Exec(*db, "INSERT INTO m VALUES (NULL), (1), (2.5), ('x'), (x'01'), (7)");
  absl::StatusOr<Result> result =
      RunQuery(*db, "SELECT v FROM m ORDER BY rowid");
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::ColumnVector& v = result->batches[0].columns(0);
  ASSERT_EQ(v.values_case(), v1::ColumnVector::kMixed);
  ASSERT_EQ(v.mixed().values_size(), 6);
  EXPECT_EQ(v.mixed().values(0).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(v.mixed().values(1).int64_value(), 1);
  EXPECT_EQ(v.mixed().values(2).double_value(), 2.5);
  EXPECT_EQ(v.mixed().values(3).text_value(), "x");
  EXPECT_EQ(v.mixed().values(4).blob_value(), "\x01");
  EXPECT_EQ(v.mixed().values(5).int64_value(), 7);
  EXPECT_THAT(ToVector(v.nulls()),
              ElementsAre(true, false, false, false, false, false));
  EXPECT_EQ(result->schema.columns(0).kind(), v1::VALUE_KIND_MIXED);
  EXPECT_EQ(result->schema.columns(0).database_type(), "");

  // A batch holding one class of the same column is typed again.
  absl::StatusOr<Result> batched =
      RunQuery(*db, "SELECT v FROM m ORDER BY rowid", {}, /*max_rows=*/2);
  ASSERT_TRUE(batched.ok()) << batched.status();
  ASSERT_EQ(batched->batches.size(), 3u);
  EXPECT_EQ(batched->batches[0].columns(0).values_case(),
            v1::ColumnVector::kInt64S);
  EXPECT_THAT(ToVector(batched->batches[0].columns(0).nulls()),
              ElementsAre(true, false));
  EXPECT_EQ(batched->batches[2].columns(0).values_case(),
            v1::ColumnVector::kMixed);
  EXPECT_EQ(batched->schema.columns(0).kind(), v1::VALUE_KIND_INT64);
}

// A stream reuses one RowBatch for every Next(), which keeps the previous
// batch's vectors for their memory: each batch must still hold exactly its
// own rows, as a fresh one would, whatever kinds came before.
TEST_F(SqliteDatabaseTest, AReusedBatchHoldsOnlyItsOwnRows) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE r(v, w)");
  Exec(*db,
       "INSERT INTO r VALUES (1, 'x'), (2, 'y'), ('a', NULL), ('b', 'z'), "
       "(NULL, NULL), (NULL, NULL), (2.5, 'long enough to leave SSO'), "
       "(x'01', 'w'), ('c', NULL), (3, 'v'), (4, 'u')");
  constexpr char kSql[] = "SELECT v, w FROM r ORDER BY rowid";
  absl::StatusOr<Result> fresh = RunQuery(*db, kSql, {}, /*max_rows=*/2);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  ASSERT_EQ(fresh->batches.size(), 6u);

  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor = QueryNow(*db, kSql);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  v1::RowBatch reused;
  for (const v1::RowBatch& want : fresh->batches) {
    absl::StatusOr<bool> more = (*cursor)->Next(2, 1 << 20, &reused);
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_EQ(reused.DebugString(), want.DebugString());
  }
}

TEST_F(SqliteDatabaseTest, InvalidUtf8TextTravelsAsBlob) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Result> result =
      RunQuery(*db, "SELECT CAST(x'ff41' AS TEXT), 'h\xc3\xa9'");
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::RowBatch& batch = result->batches[0];
  ASSERT_EQ(batch.columns(0).values_case(), v1::ColumnVector::kBlobs);
  EXPECT_EQ(batch.columns(0).blobs().values(0), "\xff\x41");
  ASSERT_EQ(batch.columns(1).values_case(), v1::ColumnVector::kTexts);
  EXPECT_EQ(batch.columns(1).texts().values(0), "h\xc3\xa9");
}

constexpr char kCount2500[] =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
    "WHERE x < 2500) SELECT x FROM c";

TEST_F(SqliteDatabaseTest, BatchesByRows) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Result> result =
      RunQuery(*db, kCount2500, {}, /*max_rows=*/1000);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->batches.size(), 3u);
  EXPECT_EQ(result->batches[0].row_count(), 1000);
  EXPECT_EQ(result->batches[1].row_count(), 1000);
  EXPECT_EQ(result->batches[2].row_count(), 500);
  EXPECT_THAT(result->more, ElementsAre(true, true, false));
  // Rows arrive in order across batches.
  int64_t expected = 1;
  for (const v1::RowBatch& batch : result->batches) {
    ASSERT_EQ(batch.columns(0).int64s().values_size(), batch.row_count());
    for (int64_t v : batch.columns(0).int64s().values()) {
      ASSERT_EQ(v, expected++);
    }
  }
  EXPECT_EQ(expected, 2501);

  // An exact multiple ends with the last full batch, not an empty one.
  absl::StatusOr<Result> exact =
      RunQuery(*db,
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 2000) SELECT x FROM c",
               {}, 1000);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_THAT(exact->more, ElementsAre(true, false));
  EXPECT_EQ(exact->rows, 2000);

  // An empty result: one empty batch, columns present but without vectors.
  absl::StatusOr<Result> empty = RunQuery(*db, "SELECT 1 AS one WHERE 0");
  ASSERT_TRUE(empty.ok()) << empty.status();
  ASSERT_EQ(empty->batches.size(), 1u);
  EXPECT_EQ(empty->batches[0].row_count(), 0);
  EXPECT_EQ(empty->batches[0].columns_size(), 1);
  EXPECT_EQ(empty->schema.columns(0).kind(), v1::VALUE_KIND_NULL);
}

TEST_F(SqliteDatabaseTest, BatchesByBytes) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  // 100 rows of 100 characters; about 102 bytes a row on the wire.
  absl::StatusOr<Result> result =
      RunQuery(*db,
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 100) SELECT printf('%0100d', x) FROM c",
               {}, /*max_rows=*/1000, /*max_bytes=*/1000);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows, 100);
  ASSERT_EQ(result->batches.size(), 10u);
  for (const v1::RowBatch& batch : result->batches) {
    EXPECT_EQ(batch.row_count(), 10);
    EXPECT_EQ(batch.columns(0).texts().values(0).size(), 100u);
  }
  EXPECT_FALSE(result->more.back());

  // A row bigger than max_bytes still travels, alone.
  absl::StatusOr<Result> big =
      RunQuery(*db, "SELECT zeroblob(5000) UNION ALL SELECT zeroblob(5000)", {},
               1000, 1000);
  ASSERT_TRUE(big.ok()) << big.status();
  ASSERT_EQ(big->batches.size(), 2u);
  EXPECT_EQ(big->batches[0].row_count(), 1);
}

TEST_F(SqliteDatabaseTest, PositionalAndNamedParams) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE p(id INTEGER PRIMARY KEY, name TEXT, flag, data)");
  v1::Params insert;
  *insert.add_positional() = Int(7);
  *insert.add_positional() = Text("seven");
  insert.add_positional()->set_bool_value(true);
  insert.add_positional()->set_blob_value(std::string("\0\1", 2));
  Exec(*db, "INSERT INTO p VALUES (?, ?, ?, ?)", insert);
  v1::Params insert2;
  *insert2.add_positional() = Int(8);
  *insert2.add_positional() = Text("eight");
  insert2.add_positional()->set_null_value(v1::NULL_VALUE);
  insert2.add_positional()->set_double_value(0.5);
  Exec(*db, "INSERT INTO p VALUES (?1, ?2, ?3, ?4)", insert2);

  v1::Params named;
  (*named.mutable_named())["id"] = Int(7);
  (*named.mutable_named())["@name"] = Text("seven");
  (*named.mutable_named())["unused"] = Int(0);  // ignored
  absl::StatusOr<Result> result = RunQuery(
      *db, "SELECT name, flag, data FROM p WHERE id = :id AND name = @name",
      named);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  EXPECT_EQ(result->batches[0].columns(0).texts().values(0), "seven");
  EXPECT_EQ(result->batches[0].columns(1).int64s().values(0), 1);
  EXPECT_EQ(result->batches[0].columns(2).blobs().values(0),
            std::string("\0\1", 2));

  v1::Params dollar;
  (*dollar.mutable_named())["id"] = Int(8);
  result =
      RunQuery(*db, "SELECT flag, data, $id FROM p WHERE id = $id", dollar);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  EXPECT_EQ(result->batches[0].columns(0).values_case(),
            v1::ColumnVector::VALUES_NOT_SET);
  EXPECT_EQ(result->batches[0].columns(1).doubles().values(0), 0.5);
  EXPECT_EQ(result->batches[0].columns(2).int64s().values(0), 8);

  v1::Params positional;
  *positional.add_positional() = Int(8);
  result = RunQuery(*db, "SELECT name FROM p WHERE id = ?", positional);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->batches[0].columns(0).texts().values(0), "eight");
}

TEST_F(SqliteDatabaseTest, WrongParamsAreInvalidArgument) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  v1::Params one;
  *one.add_positional() = Int(1);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELECT ?, ?", one);
  ASSERT_FALSE(cursor.ok());
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(),
              HasSubstr("statement has 2 parameters, 1 given"));

  cursor = QueryNow(*db, "SELECT 1", one);
  ASSERT_FALSE(cursor.ok());
  EXPECT_THAT(cursor.status().message(),
              HasSubstr("statement has 0 parameters, 1 given"));

  v1::Params named;
  (*named.mutable_named())["other"] = Int(1);
  cursor = QueryNow(*db, "SELECT :id", named);
  ASSERT_FALSE(cursor.ok());
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(),
              HasSubstr("no value for parameter :id"));

  absl::StatusOr<ExecuteResult> executed =
      ExecuteNow(*db, "CREATE TABLE x(a); INSERT INTO x VALUES (?)", one);
  ASSERT_FALSE(executed.ok());
  EXPECT_EQ(executed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(executed.status().message(), HasSubstr("one statement"));

  // Nothing of the refused script ran.
  EXPECT_FALSE(RunQuery(*db, "SELECT * FROM x").ok());

  // The pool is whole after the failures.
  EXPECT_EQ(db->Stats().in_use(), 0);
}

TEST_F(SqliteDatabaseTest, BadSqlCarriesSqliteMessage) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELECT * FROM nope", {});
  ASSERT_FALSE(cursor.ok());
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(), HasSubstr("no such table: nope"));

  cursor = QueryNow(*db, "SELEC 1", {});
  ASSERT_FALSE(cursor.ok());
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(), HasSubstr("syntax error"));

  cursor = QueryNow(*db, "SELECT 1; SELECT 2", {});
  ASSERT_FALSE(cursor.ok());
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);

  // A constraint failure shows at run time.
  Exec(*db, "CREATE TABLE u(a INTEGER UNIQUE)");
  Exec(*db, "INSERT INTO u VALUES (1)");
  absl::StatusOr<ExecuteResult> dup =
      ExecuteNow(*db, "INSERT INTO u VALUES (1)", {});
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.status().message(), HasSubstr("UNIQUE constraint failed"));
  // With the SQLSTATE a client maps to IntegrityError; a syntax error has
  // none.
  EXPECT_EQ(SqlStateOf(dup.status()), "23505");
  EXPECT_EQ(SqlStateOf(cursor.status()), "");
  Exec(*db, "CREATE TABLE nn(a INTEGER NOT NULL CHECK (a > 0))");
  EXPECT_EQ(
      SqlStateOf(ExecuteNow(*db, "INSERT INTO nn VALUES (NULL)", {}).status()),
      "23502");
  EXPECT_EQ(
      SqlStateOf(ExecuteNow(*db, "INSERT INTO nn VALUES (-1)", {}).status()),
      "23514");

  // Foreign keys are on.
  Exec(*db, "CREATE TABLE parent(id INTEGER PRIMARY KEY)");
  Exec(*db, "CREATE TABLE child(p INTEGER REFERENCES parent(id))");
  absl::StatusOr<ExecuteResult> orphan =
      ExecuteNow(*db, "INSERT INTO child VALUES (42)", {});
  ASSERT_FALSE(orphan.ok());
  EXPECT_THAT(orphan.status().message(), HasSubstr("FOREIGN KEY"));
  EXPECT_EQ(SqlStateOf(orphan.status()), "23503");
}

TEST_F(SqliteDatabaseTest, WritingQueryRunsOnTheWriter) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE w(id INTEGER PRIMARY KEY, v TEXT)");
  v1::Params params;
  *params.add_positional() = Text("hello");
  absl::StatusOr<Result> result =
      RunQuery(*db, "INSERT INTO w(v) VALUES (?) RETURNING id, v", params);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  EXPECT_EQ(result->batches[0].columns(0).int64s().values(0), 1);
  EXPECT_EQ(result->batches[0].columns(1).texts().values(0), "hello");
  EXPECT_EQ(CountRows(*db, "w"), 1);
}

TEST_F(SqliteDatabaseTest, ReadersSeeCommittedWritesInWal) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Result> mode = RunQuery(*db, "PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok()) << mode.status();
  EXPECT_EQ(mode->batches[0].columns(0).texts().values(0), "wal");

  Exec(*db, "CREATE TABLE t(a)");
  EXPECT_EQ(CountRows(*db, "t"), 0);
  // The count ran on a reader: writer + one reader are open.
  EXPECT_EQ(db->Stats().open(), 2);
  Exec(*db, "INSERT INTO t VALUES (1), (2)");
  EXPECT_EQ(CountRows(*db, "t"), 2);

  // A reader in the middle of a result keeps its snapshot while the writer
  // commits, and the next query sees the new rows.
  absl::StatusOr<std::unique_ptr<ResultCursor>> open =
      QueryNow(*db, "SELECT a FROM t", {});
  ASSERT_TRUE(open.ok()) << open.status();
  v1::RowBatch batch;
  ASSERT_TRUE((*open)->Next(1, 1 << 20, &batch).ok());
  Exec(*db, "INSERT INTO t VALUES (3)");
  EXPECT_EQ(CountRows(*db, "t"), 3);
  open->reset();
}

TEST_F(SqliteDatabaseTest, ConcurrentQueriesNeverShareABackend) {
  std::unique_ptr<Database> db = OpenFile("c.db", /*readers=*/2);
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a)");
  Exec(*db,
       "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
       "WHERE x < 200) INSERT INTO t SELECT x FROM c");
  std::atomic<int> failures{0};
  std::atomic<int> over_limit{0};
  std::atomic<int> queries{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 40; ++i) {
        absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
            QueryNow(*db, "SELECT a FROM t ORDER BY a", {});
        if (!cursor.ok()) {
          ++failures;
          continue;
        }
        int64_t rows = 0;
        while (true) {
          v1::RowBatch batch;
          absl::StatusOr<bool> more = (*cursor)->Next(50, 1 << 20, &batch);
          if (!more.ok()) {
            ++failures;
            break;
          }
          v1::PoolStats stats = db->Stats();
          if (stats.in_use() > stats.max_size() ||
              stats.open() > stats.max_size()) {
            ++over_limit;
          }
          rows += batch.row_count();
          if (!*more) break;
        }
        if (rows != 200) ++failures;
        ++queries;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(over_limit.load(), 0);
  EXPECT_EQ(queries.load(), 320);
  v1::PoolStats stats = db->Stats();
  EXPECT_EQ(stats.max_size(), 3);
  EXPECT_EQ(stats.in_use(), 0);
  EXPECT_LE(stats.opened_total(), 3);
  EXPECT_EQ(stats.acquire_timeouts(), 0);
}

TEST_F(SqliteDatabaseTest, AcquireTimeoutIsResourceExhausted) {
  config::ConnectionSpec spec = Spec(PathOf("t.db"), /*readers=*/1);
  spec.pool.acquire_timeout = absl::Milliseconds(50);
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a)");
  Exec(*db, "INSERT INTO t VALUES (1), (2), (3)");

  absl::StatusOr<std::unique_ptr<ResultCursor>> held =
      QueryNow(*db, "SELECT a FROM t", {});
  ASSERT_TRUE(held.ok()) << held.status();
  v1::RowBatch batch;
  absl::StatusOr<bool> more = (*held)->Next(1, 1 << 20, &batch);
  ASSERT_TRUE(more.ok());
  ASSERT_TRUE(*more);
  EXPECT_EQ(db->Stats().in_use(), 1);

  absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ResultCursor>> second =
      QueryNow(*db, "SELECT a FROM t", {});
  absl::Duration waited = absl::Now() - start;
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(),
              HasSubstr("no free reader for connection test within 50ms"));
  EXPECT_GE(waited, absl::Milliseconds(45));
  EXPECT_EQ(db->Stats().acquire_timeouts(), 1);

  // The writer is a pool of its own and still free.
  Exec(*db, "INSERT INTO t VALUES (4)");

  held->reset();
  EXPECT_EQ(CountRows(*db, "t"), 4);
}

TEST_F(SqliteDatabaseTest, CancelInterruptsARunningQuery) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  CancelSignal cancel;
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db,
               "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 1000000000) SELECT count(*) FROM c",
               {}, &cancel);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  ResultCursor* raw = cursor->get();
  absl::Notification started;
  std::thread canceller([&] {
    started.WaitForNotification();
    absl::SleepFor(absl::Milliseconds(100));
    cancel.Cancel();
  });
  absl::Time start = absl::Now();
  started.Notify();
  v1::RowBatch batch;
  absl::StatusOr<bool> more = raw->Next(1000, 1 << 20, &batch);
  absl::Duration took = absl::Now() - start;
  canceller.join();
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(took, absl::Seconds(10));
  // The backend went back to the pool as the query failed.
  EXPECT_EQ(db->Stats().in_use(), 0);
  cursor->reset();

  // The interrupted backend serves the next query.
  absl::StatusOr<Result> next = RunQuery(*db, "SELECT 42");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->batches[0].columns(0).int64s().values(0), 42);

  // Cancelled before the first Next: CANCELLED too, and stays so.
  CancelSignal early_cancel;
  absl::StatusOr<std::unique_ptr<ResultCursor>> early =
      QueryNow(*db, "SELECT 1", {}, &early_cancel);
  ASSERT_TRUE(early.ok());
  early_cancel.Cancel();
  more = (*early)->Next(10, 1 << 20, &batch);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kCancelled);
  more = (*early)->Next(10, 1 << 20, &batch);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kCancelled);
}

TEST_F(SqliteDatabaseTest, CancelRemovesAQueuedWaiterAtOnce) {
  config::ConnectionSpec spec = Spec(PathOf("t.db"), /*readers=*/1);
  spec.pool.acquire_timeout = absl::Seconds(60);
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a); INSERT INTO t VALUES (1), (2)");
  absl::StatusOr<std::unique_ptr<ResultCursor>> held =
      QueryNow(*db, "SELECT a FROM t");
  ASSERT_TRUE(held.ok());

  // The only reader is held: this caller queues, holding no thread.
  CancelSignal cancel;
  absl::Notification answered;
  absl::Status answer;
  db->Reserve(Access::kRead, &cancel, [&](absl::StatusOr<Reservation> slot) {
    answer = slot.status();
    answered.Notify();
  });
  EXPECT_FALSE(answered.HasBeenNotified());
  EXPECT_EQ(db->Stats().waiting(), 1);
  cancel.Cancel();
  // Answered by Cancel itself, not after the 60 s acquire timeout.
  ASSERT_TRUE(answered.HasBeenNotified());
  EXPECT_EQ(answer.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(db->Stats().waiting(), 0);
}

TEST_F(SqliteDatabaseTest, WaitersAreServedInArrivalOrder) {
  config::ConnectionSpec spec = Spec(PathOf("t.db"), /*readers=*/1);
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<ResultCursor>> held =
      QueryNow(*db, "SELECT 1 UNION ALL SELECT 2");
  ASSERT_TRUE(held.ok());
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<Reservation> slots;
  for (int i = 0; i < 5; ++i) {
    db->Reserve(Access::kRead, nullptr,
                [&, i](absl::StatusOr<Reservation> slot) {
                  ASSERT_TRUE(slot.ok()) << slot.status();
                  absl::MutexLock lock(&mu);
                  order.push_back(i);
                  slots.push_back(*std::move(slot));
                });
  }
  EXPECT_EQ(db->Stats().waiting(), 5);
  held->reset();  // frees the reader: the first waiter gets it
  for (int next = 1; next < 5; ++next) {
    Reservation done;
    {
      absl::MutexLock lock(&mu);
      ASSERT_EQ(order.size(), static_cast<size_t>(next));
      done = std::move(slots.back());
    }
    // Dropping an unclaimed reservation hands the slot to the next waiter.
  }
  absl::MutexLock lock(&mu);
  EXPECT_THAT(order, ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(SqliteDatabaseTest, QueuedCallsAreBounded) {
  config::ConnectionSpec spec = Spec(PathOf("t.db"), /*readers=*/1);
  spec.pool.max_waiting = 2;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<ResultCursor>> held =
      QueryNow(*db, "SELECT 1 UNION ALL SELECT 2");
  ASSERT_TRUE(held.ok());
  std::vector<absl::Status> answers;
  for (int i = 0; i < 3; ++i) {
    db->Reserve(Access::kRead, nullptr, [&](absl::StatusOr<Reservation> slot) {
      answers.push_back(slot.status());
    });
  }
  // The third is refused at once; the first two still wait.
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(answers[0].message(), HasSubstr("2 calls already wait"));
  held->reset();
}

TEST_F(SqliteDatabaseTest, ResetClosesBackendsAndTheNextQueryReconnects) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a)");
  Exec(*db, "INSERT INTO t VALUES (1)");
  EXPECT_EQ(CountRows(*db, "t"), 1);
  ASSERT_EQ(db->Stats().open(), 2);

  EXPECT_EQ(db->Reset(), 2);
  EXPECT_EQ(db->Stats().open(), 0);
  // A reader opens read-only on a file whose writer is closed.
  EXPECT_EQ(CountRows(*db, "t"), 1);
  Exec(*db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(CountRows(*db, "t"), 2);
  EXPECT_EQ(db->Stats().opened_total(), 4);

  // A backend in use is counted, and closed when its cursor ends.
  absl::StatusOr<std::unique_ptr<ResultCursor>> held =
      QueryNow(*db, "SELECT a FROM t", {});
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(db->Reset(), 2);  // the idle writer and the held reader
  EXPECT_EQ(db->Stats().open(), 1);
  held->reset();
  EXPECT_EQ(db->Stats().open(), 0);
  EXPECT_EQ(CountRows(*db, "t"), 2);
}

TEST_F(SqliteDatabaseTest, CloseIdleClosesReadersOnly) {
  config::ConnectionSpec spec = Spec(PathOf("i.db"));
  spec.pool.idle_timeout = absl::ZeroDuration();
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountRows(*db, "sqlite_schema"), 0);
  EXPECT_EQ(db->Stats().open(), 2);
  db->Maintain();
  EXPECT_EQ(db->Stats().open(), 1);

  spec.pool.idle_timeout = absl::Hours(1);
  std::unique_ptr<Database> kept = Open(spec);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(CountRows(*kept, "sqlite_schema"), 0);
  kept->Maintain();
  EXPECT_EQ(kept->Stats().open(), 2);
}

TEST_F(SqliteDatabaseTest, InMemoryDatabaseSharesStateAcrossCalls) {
  for (const std::string& database :
       {std::string(""), std::string(":memory:")}) {
    std::unique_ptr<Database> db = Open(Spec(database, /*readers=*/4));
    ASSERT_NE(db, nullptr);
    Exec(*db, "CREATE TABLE t(a)");
    Exec(*db, "INSERT INTO t VALUES (1), (2)");
    EXPECT_EQ(CountRows(*db, "t"), 2);
    absl::StatusOr<Result> returning =
        RunQuery(*db, "INSERT INTO t VALUES (3) RETURNING a");
    ASSERT_TRUE(returning.ok()) << returning.status();
    EXPECT_EQ(CountRows(*db, "t"), 3);
    v1::PoolStats stats = db->Stats();
    EXPECT_EQ(stats.max_size(), 1);
    EXPECT_EQ(stats.opened_total(), 1);
  }
}

TEST_F(SqliteDatabaseTest,
       MissingFileIsCreatedMissingDirectoryIsAFailedPrecondition) {
  std::string path = PathOf("new.db");
  ASSERT_FALSE(std::filesystem::exists(path));
  std::unique_ptr<Database> db = Open(Spec(path));
  ASSERT_NE(db, nullptr);
  EXPECT_TRUE(std::filesystem::exists(path));

  std::string missing = PathOf("no/such/dir/app.db");
  absl::StatusOr<std::unique_ptr<Database>> bad = OpenDatabase(Spec(missing));
  ASSERT_FALSE(bad.ok());
  // Permanent: reopening would meet the same missing directory.
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("unable to open database file"));
  EXPECT_THAT(bad.status().message(), HasSubstr(missing));
}

TEST_F(SqliteDatabaseTest, RelativePathIsRelativeToTheWorkingDirectory) {
  std::filesystem::path before = std::filesystem::current_path();
  std::filesystem::current_path(dir_.path());
  {
    std::unique_ptr<Database> db = Open(Spec("rel.db"));
    ASSERT_NE(db, nullptr);
    Exec(*db, "CREATE TABLE t(a)");
  }
  std::filesystem::current_path(before);
  EXPECT_TRUE(std::filesystem::exists(PathOf("rel.db")));
}

TEST_F(SqliteDatabaseTest, ModeReadOnlyRefusesWrites) {
  {
    std::unique_ptr<Database> db = OpenFile("ro.db");
    ASSERT_NE(db, nullptr);
    Exec(*db, "CREATE TABLE t(a); INSERT INTO t VALUES (1)");
  }
  config::ConnectionSpec spec = Spec(PathOf("ro.db"));
  spec.sql.query["mode"] = "ro";
  spec.sql.query["check_same_thread"] = "false";  // unknown: ignored
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(CountRows(*db, "t"), 1);
  absl::StatusOr<ExecuteResult> write =
      ExecuteNow(*db, "INSERT INTO t VALUES (2)", {});
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(write.status().message(), HasSubstr("readonly database"));

  // mode=ro never creates a file.
  config::ConnectionSpec absent = Spec(PathOf("absent.db"));
  absent.sql.query["mode"] = "ro";
  absl::StatusOr<std::unique_ptr<Database>> none = OpenDatabase(absent);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(PathOf("absent.db")));
}

TEST_F(SqliteDatabaseTest, ExecuteRunsScriptsAndCounts) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<ExecuteResult> script =
      ExecuteNow(*db,
                 "CREATE TABLE t(id INTEGER PRIMARY KEY, v);\n"
                 "-- a comment\n"
                 "INSERT INTO t(v) VALUES ('a'), ('b');\n"
                 "INSERT INTO t(v) VALUES ('c'); /* trailing */ ",
                 {});
  ASSERT_TRUE(script.ok()) << script.status();
  EXPECT_EQ(script->rows_affected, 3);
  EXPECT_EQ(script->last_insert_id, 3);

  absl::StatusOr<ExecuteResult> update =
      ExecuteNow(*db, "UPDATE t SET v = 'z' WHERE id > 1", {});
  ASSERT_TRUE(update.ok());
  EXPECT_EQ(update->rows_affected, 2);

  // A DDL statement reports no changes, not the last DML's count.
  absl::StatusOr<ExecuteResult> ddl = ExecuteNow(*db, "CREATE TABLE u(a)", {});
  ASSERT_TRUE(ddl.ok());
  EXPECT_EQ(ddl->rows_affected, 0);

  // A failing statement in a script names its position.
  absl::StatusOr<ExecuteResult> failing = ExecuteNow(
      *db, "INSERT INTO u VALUES (1); INSERT INTO nope VALUES (1)", {});
  ASSERT_FALSE(failing.ok());
  EXPECT_THAT(failing.status().message(), HasSubstr("statement 2"));
  EXPECT_THAT(failing.status().message(), HasSubstr("no such table: nope"));
  EXPECT_EQ(CountRows(*db, "u"), 1);  // the first ran (autocommit)
}

TEST_F(SqliteDatabaseTest, TransactionLeftOpenIsRolledBackAndRefused) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a)");
  // Acknowledging this and rolling it back later would lose the write.
  absl::StatusOr<ExecuteResult> open_tx =
      ExecuteNow(*db, "BEGIN; INSERT INTO t VALUES (1)");
  ASSERT_FALSE(open_tx.ok());
  EXPECT_EQ(open_tx.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(open_tx.status().message(), HasSubstr("rolled back"));
  EXPECT_EQ(CountRows(*db, "t"), 0);
  // The writer is usable (not stuck in a transaction, not locked).
  Exec(*db, "INSERT INTO t VALUES (2)");
  Exec(*db, "BEGIN; INSERT INTO t VALUES (3); COMMIT");
  EXPECT_EQ(CountRows(*db, "t"), 2);
}

TEST_F(SqliteDatabaseTest, AttachAndVacuumIntoAreRefusedUnlessAllowed) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  const std::string other = PathOf("other.db");
  absl::StatusOr<ExecuteResult> attach =
      ExecuteNow(*db, "ATTACH DATABASE '" + other + "' AS o");
  ASSERT_FALSE(attach.ok());
  EXPECT_EQ(attach.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(attach.status().message(), HasSubstr("allow_attach"));
  absl::StatusOr<ExecuteResult> vacuum =
      ExecuteNow(*db, "VACUUM INTO '" + PathOf("copy.db") + "'");
  ASSERT_FALSE(vacuum.ok());
  EXPECT_EQ(vacuum.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_FALSE(std::filesystem::exists(PathOf("copy.db")));

  config::ConnectionSpec spec = Spec(PathOf("app2.db"));
  spec.params["allow_attach"] = true;
  std::unique_ptr<Database> allowed = Open(spec);
  ASSERT_NE(allowed, nullptr);
  Exec(*allowed, "VACUUM INTO '" + PathOf("copy.db") + "'");
  EXPECT_TRUE(std::filesystem::exists(PathOf("copy.db")));
}

TEST_F(SqliteDatabaseTest, LockContentionIsAbortedAndKeepsThePool) {
  config::ConnectionSpec spec = Spec(PathOf("busy.db"));
  spec.pool.busy_timeout = absl::Milliseconds(50);
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(a)");
  const int64_t opened = db->Stats().opened_total();
  // Another process (here: another handle on the file) holds the write lock.
  SQLite::Database locker(PathOf("busy.db"), SQLite::OPEN_READWRITE);
  locker.exec("BEGIN IMMEDIATE");
  absl::StatusOr<ExecuteResult> write =
      ExecuteNow(*db, "INSERT INTO t VALUES (1)");
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(write.status().message(), HasSubstr("locked"));
  locker.exec("ROLLBACK");
  // The writer was not closed: the next write runs on the same backend.
  Exec(*db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(db->Stats().opened_total(), opened);
}

TEST_F(SqliteDatabaseTest, CursorMayOutliveTheDatabase) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, kCount2500, {});
  ASSERT_TRUE(cursor.ok());
  db.reset();
  v1::RowBatch batch;
  int64_t rows = 0;
  while (true) {
    absl::StatusOr<bool> more = (*cursor)->Next(1000, 1 << 20, &batch);
    ASSERT_TRUE(more.ok()) << more.status();
    rows += batch.row_count();
    if (!*more) break;
  }
  EXPECT_EQ(rows, 2500);
}

// ---------------------------------------------------------------------------
// Pinned backends (a session's transactions)

TEST_F(SqliteDatabaseTest, PinnedTransactionIsSeenOnlyOnceCommitted) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  EXPECT_FALSE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  absl::Status again = pinned->Begin({}, nullptr);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
  EXPECT_THAT(again.message(), HasSubstr("already open"));

  absl::StatusOr<ExecuteResult> inserted =
      pinned->Execute("INSERT INTO t VALUES (7)", {}, nullptr);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 1);
  EXPECT_EQ(inserted->last_insert_id, 7);
  EXPECT_EQ(CountRows(*db, "t"), 0);  // a reader, outside the transaction
  EXPECT_EQ(db->Stats().in_use(), 1);

  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(CountRows(*db, "t"), 1);
  pinned.reset();
  EXPECT_EQ(db->Stats().in_use(), 0);
}

TEST_F(SqliteDatabaseTest, PinnedRollbackAndDestructionDiscardWrites) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  const int64_t opened = db->Stats().opened_total();
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("INSERT INTO t VALUES (1)", {}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(CountRows(*db, "t"), 0);

  // Plain SQL opens and ends transactions too; InTransaction follows.
  ASSERT_TRUE(pinned->Execute("BEGIN", {}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Execute("INSERT INTO t VALUES (2)", {}, nullptr).ok());
  EXPECT_FALSE(pinned->broken());
  pinned.reset();  // with the transaction open
  EXPECT_EQ(db->Stats().in_use(), 0);
  EXPECT_EQ(CountRows(*db, "t"), 0);
  // The writer came back rolled back and was kept: a one-shot write works
  // on it without reopening.
  Exec(*db, "INSERT INTO t VALUES (3)");
  EXPECT_EQ(CountRows(*db, "t"), 1);
  EXPECT_EQ(db->Stats().opened_total(), opened + 1);  // + one reader
}

TEST_F(SqliteDatabaseTest, PinnedCursorSeesItsTransactionAndKeepsThePin) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      pinned->Execute("INSERT INTO t VALUES (1), (2)", {}, nullptr).ok());
  absl::StatusOr<int64_t> seen = PinnedInt(*pinned, "SELECT count(*) FROM t");
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, 2);
  // The cursor ended; the backend and its transaction stay with the pin.
  EXPECT_TRUE(pinned->InTransaction());
  EXPECT_EQ(db->Stats().in_use(), 1);
  // A cursor dropped before its end leaves the transaction alone too.
  AbandonAfterOneRow(*pinned, "SELECT id FROM t ORDER BY id");
  EXPECT_TRUE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Execute("INSERT INTO t VALUES (3)", {}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_EQ(CountRows(*db, "t"), 3);
}

TEST_F(SqliteDatabaseTest, PinnedOptionsSqliteHasAndHasNot) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  TransactionOptions deferrable;
  deferrable.deferrable = true;
  EXPECT_EQ(pinned->Begin(deferrable, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(pinned->InTransaction());
  // Every level is served by SQLite's serializable transactions.
  for (TransactionOptions::Isolation level :
       {TransactionOptions::Isolation::kReadUncommitted,
        TransactionOptions::Isolation::kReadCommitted,
        TransactionOptions::Isolation::kRepeatableRead,
        TransactionOptions::Isolation::kSerializable}) {
    TransactionOptions options;
    options.isolation = level;
    ASSERT_TRUE(pinned->Begin(options, nullptr).ok());
    ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  }
  pinned.reset();

  // A reader is pinned for read-only transactions only.
  std::unique_ptr<PinnedBackend> reader = MustPin(*db, Access::kRead);
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->Begin({}, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteDatabaseTest, ReadOnlyTransactionOnAReaderKeepsItsSnapshot) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  Exec(*db, "INSERT INTO t VALUES (1)");
  std::unique_ptr<PinnedBackend> reader = MustPin(*db, Access::kRead);
  ASSERT_NE(reader, nullptr);
  TransactionOptions read_only;
  read_only.read_only = true;
  ASSERT_TRUE(reader->Begin(read_only, nullptr).ok());
  absl::StatusOr<int64_t> before = PinnedInt(*reader, "SELECT count(*) FROM t");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(*before, 1);
  // The writer is free: the reader does not hold it.
  Exec(*db, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(CountRows(*db, "t"), 2);
  absl::StatusOr<int64_t> during = PinnedInt(*reader, "SELECT count(*) FROM t");
  ASSERT_TRUE(during.ok()) << during.status();
  EXPECT_EQ(*during, 1);  // the snapshot of the transaction's first read

  // A write on the reader fails with SQLite's own error; no move to the
  // writer.
  absl::StatusOr<ExecuteResult> write =
      reader->Execute("INSERT INTO t VALUES (3)", {}, nullptr);
  ASSERT_FALSE(write.ok());
  EXPECT_THAT(write.status().message(), HasSubstr("readonly"));
  absl::StatusOr<std::unique_ptr<ResultCursor>> returning =
      reader->Query("INSERT INTO t VALUES (4) RETURNING id", {}, nullptr);
  if (returning.ok()) {
    v1::RowBatch batch;
    EXPECT_FALSE((*returning)->Next(10, 1 << 20, &batch).ok());
  }
  returning = absl::CancelledError("dropped");
  EXPECT_FALSE(reader->broken());

  ASSERT_TRUE(reader->Execute("COMMIT", {}, nullptr).ok());
  absl::StatusOr<int64_t> after = PinnedInt(*reader, "SELECT count(*) FROM t");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, 2);
}

TEST_F(SqliteDatabaseTest, ReadOnlyTransactionOnTheWriterRefusesWrites) {
  std::unique_ptr<Database> db = Open(Spec(":memory:"));
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kRead);
  ASSERT_NE(pinned, nullptr);  // the writer: in memory there is no reader
  TransactionOptions read_only;
  read_only.read_only = true;
  ASSERT_TRUE(pinned->Begin(read_only, nullptr).ok());
  absl::StatusOr<ExecuteResult> write =
      pinned->Execute("INSERT INTO t VALUES (1)", {}, nullptr);
  ASSERT_FALSE(write.ok());
  EXPECT_THAT(write.status().message(), HasSubstr("readonly"));
  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  // Outside the read-only transaction the pinned writer writes again.
  ASSERT_TRUE(pinned->Execute("INSERT INTO t VALUES (2)", {}, nullptr).ok());

  // Dropped inside a read-only transaction, the writer still comes back
  // writable.
  ASSERT_TRUE(pinned->Begin(read_only, nullptr).ok());
  pinned.reset();
  Exec(*db, "INSERT INTO t VALUES (3)");
  EXPECT_EQ(CountRows(*db, "t"), 2);
}

TEST_F(SqliteDatabaseTest, WriteTransactionHoldsTheWriter) {
  config::ConnectionSpec spec = Spec(PathOf("held.db"));
  spec.pool.acquire_timeout = absl::Milliseconds(200);
  spec.pool.busy_timeout = absl::Milliseconds(100);
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());

  // This database's one writer is pinned: a one-shot write waits for it
  // past the acquire timeout.
  absl::StatusOr<ExecuteResult> queued =
      ExecuteNow(*db, "INSERT INTO t VALUES (1)");
  EXPECT_EQ(queued.status().code(), absl::StatusCode::kResourceExhausted)
      << queued.status();
  // Another connection to the file meets BEGIN IMMEDIATE's write lock past
  // its busy timeout, before the transaction wrote anything.
  std::unique_ptr<Database> other = Open(spec);
  ASSERT_NE(other, nullptr);
  absl::StatusOr<ExecuteResult> locked =
      ExecuteNow(*other, "INSERT INTO t VALUES (2)");
  EXPECT_EQ(locked.status().code(), absl::StatusCode::kAborted)
      << locked.status();
  // ... and a BEGIN IMMEDIATE there too.
  std::unique_ptr<PinnedBackend> second = MustPin(*other, Access::kWrite);
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->Begin({}, nullptr).code(), absl::StatusCode::kAborted);
  EXPECT_FALSE(second->InTransaction());

  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_TRUE(second->Begin({}, nullptr).ok());
}

TEST_F(SqliteDatabaseTest, CancelInterruptsAPinnedStatement) {
  std::unique_ptr<Database> db = OpenFile();
  ASSERT_NE(db, nullptr);
  Exec(*db, "CREATE TABLE t(id INTEGER PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("INSERT INTO t VALUES (1)", {}, nullptr).ok());
  CancelSignal cancel;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(100));
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<ExecuteResult> run = pinned->Execute(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
      "WHERE x < 1000000000) SELECT count(*) FROM c",
      {}, &cancel);
  canceller.join();
  EXPECT_EQ(run.status().code(), absl::StatusCode::kCancelled) << run.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  // The interrupted statement alone is undone: the transaction goes on.
  EXPECT_FALSE(pinned->broken());
  EXPECT_TRUE(pinned->InTransaction());
  absl::StatusOr<int64_t> rows = PinnedInt(*pinned, "SELECT count(*) FROM t");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, 1);
}

TEST(OpenDatabaseTest, UnknownDialectsAndTypesAreRefused) {
  config::ConnectionSpec spec;
  spec.name = "db";
  spec.type = "sql";
  spec.sql.dialect = "oracle";
  spec.sql.host = "localhost";
  spec.sql.database = "app";
  absl::StatusOr<std::unique_ptr<Database>> db = OpenDatabase(spec);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(db.status().message(), HasSubstr("oracle"));
  EXPECT_THAT(db.status().message(), HasSubstr("postgresql"));

  spec.type = "snowflake";
  db = OpenDatabase(spec);
  EXPECT_EQ(db.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace connbroker::server
