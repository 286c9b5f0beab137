// Tests of the MySQL/MariaDB driver (server/drivers/mysql_database.cc)
// against the real MariaDB server that tests/servers/db-servers.sh starts
// (CONNBROKER_TEST_MYSQL_*; run through tests/run.sh). Every test works in
// tables named after its process and a counter, so tests run in parallel.
#include "server/drivers/mysql_database.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/config/spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/drivers/cancel_signal.h"
#include "server/drivers/database.h"
#include "tests/testing/db_servers.h"
#include "tests/unit/database_test_util.h"

namespace connbroker::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// A SELECT of the integers 1..count as column n, without recursion (the
// server bounds recursive CTEs by max_recursive_iterations).
std::string NumbersSql(int count) {
  const std::string digits =
      "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3"
      " UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL"
      " SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)";
  return absl::StrCat(
      "SELECT n FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d"
      " + 10000 * f.d + 100000 * g.d AS n FROM ",
      digits, " a, ", digits, " b, ", digits, " c, ", digits, " e, ", digits,
      " f, ", digits, " g) nums WHERE n <= ", count);
}

bool IsNull(const v1::RowBatch& batch, int column, int row) {
  const v1::ColumnVector& c = batch.columns(column);
  return row < c.nulls_size() && c.nulls(row);
}

class MysqlDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = connbroker::testing::MysqlServerFromEnv();
    if (!server_) FAIL() << connbroker::testing::kNoServersMessage;
  }

  void TearDown() override {
    if (!server_ || tables_.empty()) return;
    absl::StatusOr<std::unique_ptr<Database>> db = OpenMysqlDatabase(Spec());
    if (!db.ok()) return;
    for (const std::string& table : tables_) {
      (void)ExecuteNow(**db, "DROP TABLE IF EXISTS " + table);
    }
  }

  config::ConnectionSpec Spec() const {
    config::ConnectionSpec spec;
    spec.name = "test";
    spec.type = "sql";
    spec.sql.dialect = "mysql";
    spec.sql.host = server_->host;
    spec.sql.port = server_->port;
    spec.sql.username = server_->user;
    spec.sql.password = server_->password;
    spec.sql.database = server_->database;
    spec.pool.pool_size = 2;
    spec.pool.max_overflow = 2;
    spec.pool.acquire_timeout = absl::Seconds(10);
    spec.pool.connect_timeout = absl::Seconds(5);
    return spec;
  }

  std::unique_ptr<Database> Open(const config::ConnectionSpec& spec) {
    absl::StatusOr<std::unique_ptr<Database>> db = OpenMysqlDatabase(spec);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? std::move(*db) : nullptr;
  }
  std::unique_ptr<Database> Open() { return Open(Spec()); }

  // A table name no other test (or test process) uses; dropped at the end.
  std::string NewTable() {
    static std::atomic<int> counter{0};
    std::string name =
        absl::StrCat("cbt_", ::getpid(), "_", counter.fetch_add(1));
    tables_.push_back(name);
    return name;
  }

  using Result = QueryOutput;

  // The single integer a query answers.
  static int64_t Scalar(Database& db, const std::string& sql,
                        const v1::Params& params = {}) {
    absl::StatusOr<Result> result = RunQuery(db, sql, params);
    EXPECT_TRUE(result.ok()) << sql << ": " << result.status();
    if (!result.ok() || result->rows != 1) return -1;
    const v1::ColumnVector& column = result->batches[0].columns(0);
    if (column.int64s().values_size() != 1) {
      ADD_FAILURE() << sql
                    << ": not an integer: " << result->schema.ShortDebugString()
                    << " " << column.ShortDebugString();
      return -1;
    }
    return column.int64s().values(0);
  }

  std::optional<connbroker::testing::MysqlServer> server_;
  std::vector<std::string> tables_;
};

TEST_F(MysqlDatabaseTest, TypesRoundTrip) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t +
                " (id INT NOT NULL PRIMARY KEY, ti TINYINT, si SMALLINT,"
                " mi MEDIUMINT, i INT, bi BIGINT, bu BIGINT UNSIGNED,"
                " b1 TINYINT(1), f FLOAT, d DOUBLE, dc DECIMAL(30,10),"
                " vc VARCHAR(50), tx TEXT, bl BLOB, vb VARBINARY(10),"
                " dt DATE, tm TIME, dtm DATETIME(6), ts TIMESTAMP NULL,"
                " yr YEAR, js JSON, en ENUM('a','b'), st SET('x','y'),"
                " bt BIT(10), ch CHAR(3))");
  const std::string long_text(5000, 'L');
  v1::Params params;
  *params.add_positional() = Text(long_text);
  *params.add_positional() = Blob(std::string("\0\1\0\xff", 4));
  *params.add_positional() = Blob(std::string("\0a\0", 3));
  Exec(
      *db,
      "INSERT INTO " + t +
          " VALUES (1, -128, -32768, -8388608, -2147483648,"
          " -9223372036854775808, 18446744073709551615, 1, 1.5, -2.25e300,"
          " '12345678901234567890.0123456789', 'h\xc3\xa9llo \xf0\x9f\x98\x80',"
          " ?, ?, ?, '2024-01-02', '-25:14:15', '2024-01-02 13:14:15.123456',"
          " '2024-01-02 13:14:15', 2024, '{\"a\": [1, 2]}', 'b', 'x,y',"
          " b'1010000001', 'abc')",
      params);
  Exec(*db, "INSERT INTO " + t +
                " VALUES (2, 127, 32767, 8388607, 2147483647,"
                " 9223372036854775807, 0, 0, -0.25, 0.1, '-0.0000000001',"
                " '', 'short', X'', X'', '1000-01-01', '838:59:59',"
                " '2024-01-02 13:14:15', '2038-01-19 03:14:07', 1901, '[]',"
                " 'a', '', b'0', 'x')");
  Exec(*db, "INSERT INTO " + t + " (id) VALUES (3)");

  absl::StatusOr<Result> result =
      RunQuery(*db, "SELECT * FROM " + t + " ORDER BY id");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 3);
  ASSERT_EQ(result->batches.size(), 1u);
  const v1::RowBatch& b = result->batches[0];
  const v1::Schema& s = result->schema;
  ASSERT_EQ(s.columns_size(), 25);

  struct Expect {
    const char* name;
    const char* type;
    v1::ValueKind kind;
  };
  const std::vector<Expect> expected = {
      {"id", "int", v1::VALUE_KIND_INT64},
      {"ti", "tinyint", v1::VALUE_KIND_INT64},
      {"si", "smallint", v1::VALUE_KIND_INT64},
      {"mi", "mediumint", v1::VALUE_KIND_INT64},
      {"i", "int", v1::VALUE_KIND_INT64},
      {"bi", "bigint", v1::VALUE_KIND_INT64},
      {"bu", "bigint unsigned", v1::VALUE_KIND_TEXT},
      {"b1", "tinyint", v1::VALUE_KIND_INT64},
      {"f", "float", v1::VALUE_KIND_DOUBLE},
      {"d", "double", v1::VALUE_KIND_DOUBLE},
      {"dc", "decimal", v1::VALUE_KIND_TEXT},
      {"vc", "varchar", v1::VALUE_KIND_TEXT},
      {"tx", "text", v1::VALUE_KIND_TEXT},
      {"bl", "blob", v1::VALUE_KIND_BLOB},
      {"vb", "varbinary", v1::VALUE_KIND_BLOB},
      {"dt", "date", v1::VALUE_KIND_TEXT},
      {"tm", "time", v1::VALUE_KIND_TEXT},
      {"dtm", "datetime", v1::VALUE_KIND_TEXT},
      {"ts", "timestamp", v1::VALUE_KIND_TEXT},
      {"yr", "year", v1::VALUE_KIND_INT64},
      {"js", "json", v1::VALUE_KIND_TEXT},
      {"en", "enum", v1::VALUE_KIND_TEXT},
      {"st", "set", v1::VALUE_KIND_TEXT},
      {"bt", "bit", v1::VALUE_KIND_BLOB},
      {"ch", "char", v1::VALUE_KIND_TEXT},
  };
  for (int i = 0; i < s.columns_size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(s.columns(i).name(), expected[i].name);
    EXPECT_EQ(s.columns(i).database_type(), expected[i].type);
    EXPECT_EQ(s.columns(i).kind(), expected[i].kind);
    // Row 3 holds NULL everywhere but in the primary key.
    EXPECT_EQ(s.columns(i).nullable(), i != 0);
    EXPECT_EQ(IsNull(b, i, 2), i != 0);
    EXPECT_FALSE(IsNull(b, i, 0));
  }

  auto ints = [&](int column) {
    const auto& v = b.columns(column).int64s().values();
    return std::vector<int64_t>(v.begin(), v.begin() + 2);
  };
  auto texts = [&](int column) {
    const auto& v = b.columns(column).texts().values();
    return std::vector<std::string>(v.begin(), v.begin() + 2);
  };
  auto blobs = [&](int column) {
    const auto& v = b.columns(column).blobs().values();
    return std::vector<std::string>(v.begin(), v.begin() + 2);
  };
  auto doubles = [&](int column) {
    const auto& v = b.columns(column).doubles().values();
    return std::vector<double>(v.begin(), v.begin() + 2);
  };
  EXPECT_THAT(ints(0), ElementsAre(1, 2));
  EXPECT_THAT(ints(1), ElementsAre(-128, 127));
  EXPECT_THAT(ints(2), ElementsAre(-32768, 32767));
  EXPECT_THAT(ints(3), ElementsAre(-8388608, 8388607));
  EXPECT_THAT(ints(4), ElementsAre(-2147483648LL, 2147483647));
  EXPECT_THAT(ints(5), ElementsAre(INT64_MIN, INT64_MAX));
  EXPECT_THAT(texts(6), ElementsAre("18446744073709551615", "0"));
  EXPECT_THAT(ints(7), ElementsAre(1, 0));
  EXPECT_THAT(doubles(8), ElementsAre(1.5, -0.25));
  EXPECT_THAT(doubles(9), ElementsAre(-2.25e300, 0.1));
  EXPECT_THAT(texts(10),
              ElementsAre("12345678901234567890.0123456789", "-0.0000000001"));
  EXPECT_THAT(texts(11), ElementsAre("h\xc3\xa9llo \xf0\x9f\x98\x80", ""));
  EXPECT_THAT(texts(12), ElementsAre(long_text, "short"));
  EXPECT_THAT(blobs(13), ElementsAre(std::string("\0\1\0\xff", 4), ""));
  EXPECT_THAT(blobs(14), ElementsAre(std::string("\0a\0", 3), ""));
  EXPECT_THAT(texts(15), ElementsAre("2024-01-02", "1000-01-01"));
  EXPECT_THAT(texts(16), ElementsAre("-25:14:15", "838:59:59"));
  EXPECT_THAT(texts(17), ElementsAre("2024-01-02 13:14:15.123456",
                                     "2024-01-02 13:14:15.000000"));
  EXPECT_THAT(texts(18),
              ElementsAre("2024-01-02 13:14:15", "2038-01-19 03:14:07"));
  EXPECT_THAT(ints(19), ElementsAre(2024, 1901));
  EXPECT_THAT(texts(20), ElementsAre("{\"a\": [1, 2]}", "[]"));
  EXPECT_THAT(texts(21), ElementsAre("b", "a"));
  EXPECT_THAT(texts(22), ElementsAre("x,y", ""));
  EXPECT_THAT(blobs(23),
              ElementsAre(std::string("\x02\x81", 2), std::string("\0\0", 2)));
  EXPECT_THAT(texts(24), ElementsAre("abc", "x"));
}

TEST_F(MysqlDatabaseTest, ExpressionsAndTimeFractions) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<Result> result = RunQuery(
      *db,
      "SELECT CAST('12:00:01.5' AS TIME(1)) AS t1,"
      " TIMEDIFF('2024-01-03 00:00:00', '2024-01-01 00:00:00.25') AS diff,"
      " CAST('2024-01-02 03:04:05.000100' AS DATETIME(6)) AS dt6,"
      " 1.50 AS num, NULL AS n, X'00ff' AS bin, 'text' AS txt");
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::RowBatch& b = result->batches[0];
  EXPECT_EQ(b.columns(0).texts().values(0), "12:00:01.5");
  // TIMEDIFF's decimals come from its arguments (2 here), as the server
  // prints it.
  EXPECT_EQ(b.columns(1).texts().values(0), "47:59:59.75");
  EXPECT_EQ(b.columns(2).texts().values(0), "2024-01-02 03:04:05.000100");
  EXPECT_EQ(b.columns(3).texts().values(0), "1.50");
  EXPECT_EQ(result->schema.columns(3).database_type(), "decimal");
  EXPECT_TRUE(IsNull(b, 4, 0));
  EXPECT_EQ(result->schema.columns(4).kind(), v1::VALUE_KIND_NULL);
  EXPECT_EQ(b.columns(5).blobs().values(0), std::string("\0\xff", 2));
  EXPECT_EQ(b.columns(6).texts().values(0), "text");
}

TEST_F(MysqlDatabaseTest, PositionalAndNamedParams) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);

  v1::Params positional;
  *positional.add_positional() = Int(41);
  *positional.add_positional() = Bool(true);
  *positional.add_positional() = Null();
  *positional.add_positional() = Double(2.5);
  *positional.add_positional() = Text("t\xc3\xa9xt");
  *positional.add_positional() = Blob(std::string("\0b", 2));
  absl::StatusOr<Result> result =
      RunQuery(*db, "SELECT ? + 1, ?, ?, ?, ?, ?", positional);
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::RowBatch& b = result->batches[0];
  EXPECT_EQ(b.columns(0).int64s().values(0), 42);
  EXPECT_EQ(b.columns(1).int64s().values(0), 1);
  EXPECT_TRUE(IsNull(b, 2, 0));
  EXPECT_EQ(b.columns(3).doubles().values(0), 2.5);
  EXPECT_EQ(b.columns(4).texts().values(0), "t\xc3\xa9xt");
  EXPECT_EQ(b.columns(5).blobs().values(0), std::string("\0b", 2));

  // SQLAlchemy's :name and pymysql's %(name)s; a name may repeat; markers
  // inside strings, identifiers and comments stay as they are.
  v1::Params named;
  (*named.mutable_named())["a"] = Int(5);
  (*named.mutable_named())["b"] = Text("bee");
  (*named.mutable_named())["unused"] = Int(0);
  result =
      RunQuery(*db,
               "SELECT :a AS `:a`, ':a' AS s, %(b)s AS b, :a * 2 AS twice, "
               "'100%%' AS pct /* :b */ -- :b\n",
               named);
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::RowBatch& n = result->batches[0];
  EXPECT_EQ(result->schema.columns(0).name(), ":a");
  EXPECT_EQ(n.columns(0).int64s().values(0), 5);
  EXPECT_EQ(n.columns(1).texts().values(0), ":a");
  EXPECT_EQ(n.columns(2).texts().values(0), "bee");
  EXPECT_EQ(n.columns(3).int64s().values(0), 10);
  EXPECT_EQ(n.columns(4).texts().values(0), "100%");  // pyformat's %%
}

TEST_F(MysqlDatabaseTest, InjectionAttemptsStayData) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY, name TEXT)");
  const std::vector<std::string> evil = {
      "x'); DROP TABLE " + t + "; --",
      "\\'; DROP TABLE " + t + "; #",
      "\" OR 1=1 -- ",
      ":a %(b)s ? /* */",
  };
  for (size_t i = 0; i < evil.size(); ++i) {
    v1::Params params;
    (*params.mutable_named())["id"] = Int(static_cast<int64_t>(i));
    (*params.mutable_named())["name"] = Text(evil[i]);
    Exec(*db, "INSERT INTO " + t + " VALUES (:id, :name)", params);
  }
  for (size_t i = 0; i < evil.size(); ++i) {
    v1::Params params;
    *params.add_positional() = Text(evil[i]);
    absl::StatusOr<Result> result =
        RunQuery(*db, "SELECT id FROM " + t + " WHERE name = ?", params);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->rows, 1) << evil[i];
    EXPECT_EQ(result->batches[0].columns(0).int64s().values(0),
              static_cast<int64_t>(i));
  }
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 4);
}

TEST_F(MysqlDatabaseTest, WrongParamsAreInvalidArgument) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  v1::Params one;
  *one.add_positional() = Int(1);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELECT ?, ?", one);
  ASSERT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(), HasSubstr("2 parameters, 1 given"));

  v1::Params named;
  (*named.mutable_named())["a"] = Int(1);
  cursor = QueryNow(*db, "SELECT :a, :missing", named);
  ASSERT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(),
              HasSubstr("no value for parameter :missing"));

  cursor = QueryNow(*db, "SELECT :a, ?", named);
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);

  v1::Params both = named;
  *both.add_positional() = Int(1);
  cursor = QueryNow(*db, "SELECT ?", both);
  ASSERT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(), HasSubstr("both"));

  // The backend is still fine.
  EXPECT_EQ(Scalar(*db, "SELECT 7"), 7);
}

TEST_F(MysqlDatabaseTest, ServerErrorsCarryMessageAndSqlState) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELEC 1");
  ASSERT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(),
              HasSubstr("You have an error in your SQL syntax"));
  EXPECT_EQ(SqlStateOf(cursor.status()), "42000");

  cursor = QueryNow(*db, "SELECT * FROM no_such_table_here");
  ASSERT_EQ(cursor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cursor.status().message(), HasSubstr("doesn't exist"));
  EXPECT_EQ(SqlStateOf(cursor.status()), "42S02");

  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY)");
  Exec(*db, "INSERT INTO " + t + " VALUES (1)");
  absl::StatusOr<ExecuteResult> dup =
      ExecuteNow(*db, "INSERT INTO " + t + " VALUES (1)");
  ASSERT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.status().message(), HasSubstr("Duplicate entry"));
  EXPECT_EQ(SqlStateOf(dup.status()), "23000");

  v1::Params one;
  *one.add_positional() = Int(1);
  dup = ExecuteNow(*db, "INSERT INTO " + t + " VALUES (?)", one);
  ASSERT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(dup.status()), "23000");

  // A script stops at the failing statement, and says which.
  dup = ExecuteNow(*db, "INSERT INTO " + t + " VALUES (2); INSERT INTO " + t +
                            " VALUES (2)");
  ASSERT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.status().message(), HasSubstr("statement 2"));
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 2);
}

TEST_F(MysqlDatabaseTest, ExecuteCountsRowsAndInsertIds) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t +
                " (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)");
  absl::StatusOr<ExecuteResult> result = ExecuteNow(
      *db, "INSERT INTO " + t + " (v) VALUES (1), (2); INSERT INTO " + t +
               " (v) VALUES (3); SELECT 1; UPDATE " + t + " SET v = v + 10");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows_affected, 2 + 1 + 3);
  EXPECT_EQ(result->last_insert_id, 3);

  v1::Params params;
  *params.add_positional() = Int(99);
  result = ExecuteNow(*db, "INSERT INTO " + t + " (v) VALUES (?)", params);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows_affected, 1);
  EXPECT_EQ(result->last_insert_id, 4);

  // An UPDATE counts the rows it matched (FOUND_ROWS, as SQLAlchemy).
  result = ExecuteNow(*db, "UPDATE " + t + " SET v = v");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows_affected, 4);

  // A statement without a result set through Query: no columns, no rows.
  absl::StatusOr<Result> rows =
      RunQuery(*db, "INSERT INTO " + t + " (v) VALUES (5)");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->schema.columns_size(), 0);
  EXPECT_EQ(rows->rows, 0);
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 5);
}

TEST_F(MysqlDatabaseTest, TransactionLeftOpenIsRolledBack) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY) ENGINE=InnoDB");
  absl::StatusOr<ExecuteResult> result =
      ExecuteNow(*db, "BEGIN; INSERT INTO " + t + " VALUES (1)");
  ASSERT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("rolled back"));
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 0);

  // A committed transaction in one script is fine.
  Exec(*db, "BEGIN; INSERT INTO " + t + " VALUES (2); COMMIT");
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 1);

  // autocommit turned off is turned back on before the next user.
  Exec(*db, "SET autocommit = 0");
  Exec(*db, "INSERT INTO " + t + " VALUES (3)");
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 2);
}

TEST_F(MysqlDatabaseTest, BackendReturnsWithoutATransaction) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY) ENGINE=InnoDB");
  const int64_t backend = Scalar(*db, "SELECT CONNECTION_ID()");
  // Through Query, which has no transaction check of its own: the pool's
  // recycle hook rolls back as the backend comes back.
  absl::StatusOr<Result> begun = RunQuery(*db, "START TRANSACTION");
  ASSERT_TRUE(begun.ok()) << begun.status();
  EXPECT_EQ(Scalar(*db, "SELECT CAST(@@in_transaction AS SIGNED)"), 0);
  ASSERT_TRUE(RunQuery(*db, "START TRANSACTION").ok());
  ASSERT_TRUE(RunQuery(*db, "INSERT INTO " + t + " VALUES (1)").ok());
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 1);  // autocommitted
  EXPECT_EQ(Scalar(*db, "SELECT CONNECTION_ID()"), backend);
}

TEST_F(MysqlDatabaseTest, LockWaitTimeoutIsAborted) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v INT) ENGINE=InnoDB");
  Exec(*db, "INSERT INTO " + t + " VALUES (1, 0), (2, 0)");

  // One backend holds the row locks of a locking read that sleeps on its
  // second row; the other waits for them past its lock wait timeout.
  CancelSignal cancel;
  std::thread reader([&] {
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
        QueryNow(*db,
                 "SELECT id, SLEEP(IF(id = 2, 20, 0)) FROM " + t +
                     " WHERE id IN (1, 2) ORDER BY id FOR UPDATE",
                 {}, &cancel);
    if (cursor.ok()) {
      v1::RowBatch batch;
      absl::StatusOr<bool> more = (*cursor)->Next(100, 1 << 20, &batch);
      EXPECT_EQ(more.status().code(), absl::StatusCode::kCancelled);
    } else {
      EXPECT_EQ(cursor.status().code(), absl::StatusCode::kCancelled);
    }
  });
  bool sleeping = false;
  v1::Params pattern;
  *pattern.add_positional() = Text("SELECT id, SLEEP% FROM " + t + " %");
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);
       !sleeping && absl::Now() < deadline;) {
    absl::StatusOr<Result> state = RunQuery(
        *db,
        "SELECT COUNT(*) FROM information_schema.processlist WHERE id <> "
        "CONNECTION_ID() AND info LIKE ?",
        pattern);
    sleeping =
        state.ok() && state->batches[0].columns(0).int64s().values(0) > 0;
    if (!sleeping) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(sleeping);
  absl::StatusOr<ExecuteResult> update =
      ExecuteNow(*db, "SET SESSION innodb_lock_wait_timeout = 1; UPDATE " + t +
                          " SET v = 1 WHERE id = 1");
  EXPECT_EQ(update.status().code(), absl::StatusCode::kAborted)
      << update.status();
  EXPECT_EQ(SqlStateOf(update.status()), "HY000");
  cancel.Cancel();
  reader.join();
  Exec(*db, "UPDATE " + t + " SET v = 2 WHERE id = 1");
}

TEST_F(MysqlDatabaseTest, LargeResultStreamsInBatches) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v VARCHAR(40))");
  Exec(*db, "INSERT INTO " + t + " SELECT n, CONCAT('row ', n) FROM (" +
                NumbersSql(50000) + ") numbers");
  absl::StatusOr<Result> result =
      RunQuery(*db, "SELECT id, v FROM " + t + " ORDER BY id", {}, 4096);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows, 50000);
  ASSERT_EQ(result->batches.size(), 13u);  // 12 x 4096 + 848
  int64_t expected = 1;
  for (size_t i = 0; i < result->batches.size(); ++i) {
    const v1::RowBatch& batch = result->batches[i];
    EXPECT_EQ(result->more[i], i + 1 < result->batches.size());
    EXPECT_LE(batch.row_count(), 4096);
    for (int row = 0; row < batch.row_count(); ++row, ++expected) {
      ASSERT_EQ(batch.columns(0).int64s().values(row), expected);
      ASSERT_EQ(batch.columns(1).texts().values(row),
                absl::StrCat("row ", expected));
    }
  }
  EXPECT_EQ(result->schema.columns(0).nullable(), false);
  EXPECT_EQ(result->schema.columns(1).nullable(), true);

  // Cut by bytes as well.
  result = RunQuery(*db, "SELECT id, v FROM " + t + " ORDER BY id", {}, 100000,
                    64 * 1024);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows, 50000);
  EXPECT_GT(result->batches.size(), 5u);
}

TEST_F(MysqlDatabaseTest, AbandonedCursorLeavesTheBackendUsable) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const int64_t backend = Scalar(*db, "SELECT CONNECTION_ID()");
  {
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor = QueryNow(
        *db, "SELECT n, REPEAT('x', 100) FROM (" + NumbersSql(500000) + ") s");
    ASSERT_TRUE(cursor.ok()) << cursor.status();
    v1::RowBatch batch;
    absl::StatusOr<bool> more = (*cursor)->Next(10, 1 << 20, &batch);
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_TRUE(*more);
    EXPECT_EQ(batch.row_count(), 10);
  }
  // The same backend (pool_size 1), and nothing left of the old result.
  EXPECT_EQ(Scalar(*db, "SELECT CONNECTION_ID()"), backend);
  EXPECT_EQ(Scalar(*db, "SELECT 5"), 5);
}

TEST_F(MysqlDatabaseTest, CancelKillsTheQueryAndKeepsTheBackend) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  std::unique_ptr<Database> watcher = Open();
  ASSERT_NE(watcher, nullptr);
  const int64_t backend = Scalar(*db, "SELECT CONNECTION_ID()");
  ASSERT_GT(backend, 0);

  CancelSignal cancel;
  std::atomic<bool> seen{false};
  std::thread canceller([&] {
    // Cancel once the server shows the statement running, within a bound.
    const absl::Time deadline = absl::Now() + absl::Seconds(8);
    v1::Params id;
    *id.add_positional() = Int(backend);
    while (absl::Now() < deadline) {
      absl::StatusOr<Result> running = RunQuery(
          *watcher,
          "SELECT COUNT(*) FROM information_schema.processlist WHERE id = "
          "? AND info LIKE 'SELECT SLEEP%'",
          id);
      if (running.ok() && running->rows == 1 &&
          running->batches[0].columns(0).int64s().values(0) == 1) {
        seen = true;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::Status status;
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELECT SLEEP(10)", {}, &cancel);
  if (!cursor.ok()) {
    status = cursor.status();
  } else {
    v1::RowBatch batch;
    status = (*cursor)->Next(100, 1 << 20, &batch).status();
  }
  const absl::Duration elapsed = absl::Now() - start;
  canceller.join();
  EXPECT_TRUE(seen) << "the statement never showed in the processlist";
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(elapsed, absl::Seconds(8));
  cursor = absl::CancelledError("dropped");  // the cursor goes first

  // The backend survived the KILL QUERY and runs the next statement.
  EXPECT_EQ(Scalar(*db, "SELECT CONNECTION_ID()"), backend);
  EXPECT_EQ(Scalar(*db, "SELECT 3"), 3);
}

TEST_F(MysqlDatabaseTest, CancelledBeforeStartRunsNothing) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY)");
  CancelSignal cancel;
  cancel.Cancel();
  absl::StatusOr<ExecuteResult> result =
      ExecuteNow(*db, "INSERT INTO " + t + " VALUES (1)", {}, &cancel);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 0);
}

TEST_F(MysqlDatabaseTest, CancelInterruptsAnExecute) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  CancelSignal cancel;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<ExecuteResult> result =
      ExecuteNow(*db, "DO SLEEP(10)", {}, &cancel);
  canceller.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled)
      << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  EXPECT_EQ(Scalar(*db, "SELECT 1"), 1);
}

TEST_F(MysqlDatabaseTest, StoredProcedureResults) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string proc = NewTable();  // a unique name serves as well
  Exec(*db, "CREATE PROCEDURE " + proc + "(IN x INT) SELECT x + 1 AS y");
  v1::Params params;
  *params.add_positional() = Int(41);
  absl::StatusOr<Result> result = RunQuery(*db, "CALL " + proc + "(?)", params);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  EXPECT_EQ(result->batches[0].columns(0).int64s().values(0), 42);
  // The CALL's trailing status was read: the backend is ready.
  EXPECT_EQ(Scalar(*db, "SELECT 2"), 2);
  EXPECT_TRUE(ExecuteNow(*db, "CALL " + proc + "(1)").ok());
  EXPECT_EQ(Scalar(*db, "SELECT 4"), 4);
  Exec(*db, "DROP PROCEDURE " + proc);
}

TEST_F(MysqlDatabaseTest, BadPasswordIsPermissionDenied) {
  config::ConnectionSpec spec = Spec();
  spec.sql.password = "wrong-Pa55word-zq81";
  absl::StatusOr<std::unique_ptr<Database>> db = OpenMysqlDatabase(spec);
  ASSERT_EQ(db.status().code(), absl::StatusCode::kPermissionDenied)
      << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("Access denied"));
  EXPECT_THAT(db.status().message(), Not(HasSubstr("wrong-Pa55word-zq81")));
  EXPECT_EQ(SqlStateOf(db.status()), "28000");
}

TEST_F(MysqlDatabaseTest, AMissingDatabaseIsAFailedPreconditionNotRetried) {
  config::ConnectionSpec spec = Spec();
  spec.sql.database = "no_such_database_4711";
  absl::StatusOr<std::unique_ptr<Database>> db = OpenMysqlDatabase(spec);
  // Not UNAVAILABLE: the broker would reset the pool and retry a fault no
  // reconnect can mend.
  ASSERT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition)
      << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("Unknown database"));
  EXPECT_THAT(db.status().message(), HasSubstr("1049"));
}

TEST_F(MysqlDatabaseTest, UnreachableServerIsUnavailable) {
  // A port nobody listens on: bound, then closed.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t length = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length), 0);
  ::close(fd);

  config::ConnectionSpec spec = Spec();
  spec.sql.host = "127.0.0.1";
  spec.sql.port = ntohs(addr.sin_port);
  spec.pool.connect_timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Database>> db = OpenMysqlDatabase(spec);
  ASSERT_EQ(db.status().code(), absl::StatusCode::kUnavailable) << db.status();
  EXPECT_THAT(db.status().message(), Not(HasSubstr(spec.sql.password)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(MysqlDatabaseTest, UnixSocket) {
  config::ConnectionSpec spec = Spec();
  spec.sql.query["unix_socket"] = server_->socket;
  spec.sql.query["client_flag"] = "ignored";  // not on the allowlist
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Scalar(*db, "SELECT 1"), 1);

  spec = Spec();
  spec.sql.host = server_->socket;  // a host starting with '/'
  db = Open(spec);
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(Scalar(*db, "SELECT 2"), 2);
}

TEST_F(MysqlDatabaseTest, OpenDatabaseDispatchesBothDialects) {
  for (const char* dialect : {"mysql", "mariadb"}) {
    config::ConnectionSpec spec = Spec();
    spec.sql.dialect = dialect;
    absl::StatusOr<std::unique_ptr<Database>> db = OpenDatabase(spec);
    ASSERT_TRUE(db.ok()) << dialect << ": " << db.status();
    EXPECT_EQ(Scalar(**db, "SELECT 6"), 6);
  }
}

TEST_F(MysqlDatabaseTest, ResetStatsAndMaintain) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  spec.pool.min_idle = 1;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  PoolStats stats = db->Stats();
  EXPECT_EQ(stats.open(), 1);
  EXPECT_EQ(stats.idle(), 1);
  EXPECT_EQ(stats.max_size(), 1);
  EXPECT_EQ(stats.opened_total(), 1);

  const int64_t before = Scalar(*db, "SELECT CONNECTION_ID()");
  EXPECT_EQ(db->Reset(), 1);
  EXPECT_EQ(db->Stats().open(), 0);
  db->Maintain();  // min_idle 1: opens one
  EXPECT_EQ(db->Stats().idle(), 1);
  const int64_t after = Scalar(*db, "SELECT CONNECTION_ID()");
  EXPECT_NE(before, after);
  EXPECT_EQ(db->Stats().opened_total(), 2);
}

TEST_F(MysqlDatabaseTest, PreparedStatementCacheSurvivesManyStatements) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  // More distinct statements than the cache holds, then the first again.
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(Scalar(*db, absl::StrCat("SELECT ", i)), i);
  }
  for (int i = 0; i < 3; ++i) {
    v1::Params params;
    *params.add_positional() = Int(i);
    ASSERT_EQ(Scalar(*db, "SELECT ? * 2", params), 2 * i);
  }
  // A table changed under a cached statement.
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (a INT)");
  Exec(*db, "INSERT INTO " + t + " VALUES (1)");
  absl::StatusOr<Result> result = RunQuery(*db, "SELECT * FROM " + t);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->schema.columns_size(), 1);
  Exec(*db, "ALTER TABLE " + t + " ADD COLUMN b VARCHAR(5) DEFAULT 'bb'");
  result = RunQuery(*db, "SELECT * FROM " + t);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->schema.columns_size(), 2);
  EXPECT_EQ(result->batches[0].columns(1).texts().values(0), "bb");
}

TEST(MysqlRewriteTest, NamedMarkersBecomeQuestionMarks) {
  using mysql_internal::RewriteNamedParams;
  mysql_internal::RewrittenSql r =
      RewriteNamedParams("SELECT :a, %(b)s, :a FROM t WHERE x = :c_1");
  EXPECT_EQ(r.sql, "SELECT ?, ?, ? FROM t WHERE x = ?");
  EXPECT_THAT(r.names, ElementsAre("a", "b", "a", "c_1"));
  EXPECT_THAT(r.spellings, ElementsAre(":a", "%(b)s", ":a", ":c_1"));
  EXPECT_EQ(r.question_marks, 0);

  // Strings (with escapes and doubled quotes), identifiers and comments.
  r = RewriteNamedParams(
      "SELECT ':a', 'it''s :b', 'x\\':c', \":d\", `:e``:f`, ? -- :g\n"
      "# :h\n/* :i */ :j");
  EXPECT_THAT(r.names, ElementsAre("j"));
  EXPECT_EQ(r.question_marks, 1);

  // Not markers: assignment, labels, a time in a string, arithmetic.
  r = RewriteNamedParams("SET @x:=1, @y := 2; lbl: LOOP; SELECT 5--3, '12:30'");
  EXPECT_TRUE(r.names.empty());
  EXPECT_EQ(r.sql, "SET @x:=1, @y := 2; lbl: LOOP; SELECT 5--3, '12:30'");

  // pyformat: %% is a percent sign once markers are rewritten.
  r = RewriteNamedParams("SELECT '5%%', %(p)s, 10 %% 3");
  EXPECT_EQ(r.sql, "SELECT '5%', ?, 10 % 3");
  r = RewriteNamedParams("SELECT '5%%', :p");
  EXPECT_EQ(r.sql, "SELECT '5%%', ?");
}

// ---------------------------------------------------------------------------
// Pinned backends (a session's transactions)

TEST_F(MysqlDatabaseTest, PinnedTransactionIsSeenOnlyOnceCommitted) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY AUTO_INCREMENT)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  EXPECT_FALSE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  absl::Status again = pinned->Begin({}, nullptr);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;

  v1::Params params;
  *params.add_positional() = Int(41);
  absl::StatusOr<ExecuteResult> inserted =
      pinned->Execute("INSERT INTO " + t + " VALUES (?)", params, nullptr);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 1);
  inserted = pinned->Execute("INSERT INTO " + t + " VALUES ()", {}, nullptr);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->last_insert_id, 42);
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 0);  // another backend
  EXPECT_EQ(db->Stats().in_use(), 1);
  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 2);

  // Plain SQL opens and ends transactions too; InTransaction follows.
  ASSERT_TRUE(pinned->Execute("BEGIN", {}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Execute("DELETE FROM " + t, {}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 2);
  pinned.reset();
  EXPECT_EQ(db->Stats().in_use(), 0);
}

TEST_F(MysqlDatabaseTest, DroppingAPinnedTransactionRollsItBack) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  absl::StatusOr<int64_t> id = PinnedInt(*pinned, "SELECT CONNECTION_ID()");
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      pinned->Execute("INSERT INTO " + t + " VALUES (1)", {}, nullptr).ok());
  pinned.reset();
  EXPECT_EQ(db->Stats().in_use(), 0);
  // The same backend runs the next call, outside any transaction: it would
  // see the row had the transaction not been rolled back.
  EXPECT_EQ(Scalar(*db, "SELECT CONNECTION_ID()"), *id);
  EXPECT_EQ(Scalar(*db, "SELECT CAST(@@in_transaction AS SIGNED)"), 0);
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 0);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

TEST_F(MysqlDatabaseTest, PinnedCursorSeesItsTransactionAndKeepsThePin) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      pinned->Execute("INSERT INTO " + t + " VALUES (1), (2)", {}, nullptr)
          .ok());
  for (int run = 0; run < 2; ++run) {  // the second from the statement cache
    absl::StatusOr<int64_t> seen =
        PinnedInt(*pinned, "SELECT COUNT(*) FROM " + t);
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(*seen, 2);
  }
  EXPECT_TRUE(pinned->InTransaction());
  EXPECT_EQ(db->Stats().in_use(), 1);
  // A cursor dropped mid-result is stopped (KILL QUERY) and flushed; the
  // transaction goes on.
  AbandonAfterOneRow(*pinned, NumbersSql(100000));
  EXPECT_FALSE(pinned->broken());
  EXPECT_TRUE(pinned->InTransaction());
  absl::StatusOr<int64_t> still =
      PinnedInt(*pinned, "SELECT COUNT(*) FROM " + t);
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(*still, 2);
  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 2);
}

TEST_F(MysqlDatabaseTest, PinnedTransactionOptionsAreApplied) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY) ENGINE=InnoDB");
  std::unique_ptr<PinnedBackend> writer = MustPin(*db, Access::kWrite);
  ASSERT_NE(writer, nullptr);
  std::unique_ptr<PinnedBackend> reader = MustPin(*db, Access::kRead);
  ASSERT_NE(reader, nullptr);

  TransactionOptions deferrable;
  deferrable.deferrable = true;
  EXPECT_EQ(reader->Begin(deferrable, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(reader->InTransaction());

  // An uncommitted row of another transaction: READ UNCOMMITTED sees it,
  // the default REPEATABLE READ does not.
  ASSERT_TRUE(writer->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      writer->Execute("INSERT INTO " + t + " VALUES (1)", {}, nullptr).ok());
  TransactionOptions dirty;
  dirty.isolation = TransactionOptions::Isolation::kReadUncommitted;
  ASSERT_TRUE(reader->Begin(dirty, nullptr).ok());
  absl::StatusOr<int64_t> seen =
      PinnedInt(*reader, "SELECT COUNT(*) FROM " + t);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, 1);
  ASSERT_TRUE(reader->Execute("COMMIT", {}, nullptr).ok());
  ASSERT_TRUE(reader->Begin({}, nullptr).ok());  // the next is the default
  seen = PinnedInt(*reader, "SELECT COUNT(*) FROM " + t);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*seen, 0);
  ASSERT_TRUE(reader->Execute("COMMIT", {}, nullptr).ok());
  ASSERT_TRUE(writer->Execute("ROLLBACK", {}, nullptr).ok());

  // READ ONLY: the server refuses a write with its own error.
  TransactionOptions read_only;
  read_only.read_only = true;
  read_only.isolation = TransactionOptions::Isolation::kSerializable;
  ASSERT_TRUE(reader->Begin(read_only, nullptr).ok());
  EXPECT_TRUE(reader->InTransaction());
  absl::StatusOr<ExecuteResult> write =
      reader->Execute("INSERT INTO " + t + " VALUES (2)", {}, nullptr);
  EXPECT_EQ(write.status().code(), absl::StatusCode::kInvalidArgument)
      << write.status();
  EXPECT_EQ(SqlStateOf(write.status()), "25006");
  EXPECT_FALSE(reader->broken());
  ASSERT_TRUE(reader->Execute("ROLLBACK", {}, nullptr).ok());
  EXPECT_FALSE(reader->InTransaction());
}

TEST_F(MysqlDatabaseTest, ADeadlockEndsThePinnedTransaction) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY, v INT) ENGINE=InnoDB");
  Exec(*db, "INSERT INTO " + t + " VALUES (1, 0), (2, 0)");
  std::unique_ptr<PinnedBackend> first = MustPin(*db, Access::kWrite);
  std::unique_ptr<PinnedBackend> second = MustPin(*db, Access::kWrite);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(first->Begin({}, nullptr).ok());
  ASSERT_TRUE(second->Begin({}, nullptr).ok());
  const std::string update = "UPDATE " + t + " SET v = v + 1 WHERE id = ";
  ASSERT_TRUE(first->Execute(update + "1", {}, nullptr).ok());
  ASSERT_TRUE(second->Execute(update + "2", {}, nullptr).ok());
  // Each now waits for the other's row: InnoDB picks one to roll back,
  // whichever order the two requests reach it in.
  absl::StatusOr<ExecuteResult> crossed_first;
  std::thread other(
      [&] { crossed_first = first->Execute(update + "2", {}, nullptr); });
  absl::StatusOr<ExecuteResult> crossed_second =
      second->Execute(update + "1", {}, nullptr);
  other.join();
  ASSERT_NE(crossed_first.ok(), crossed_second.ok())
      << crossed_first.status() << " / " << crossed_second.status();
  PinnedBackend& victim = crossed_first.ok() ? *second : *first;
  PinnedBackend& survivor = crossed_first.ok() ? *first : *second;
  const absl::Status lost =
      crossed_first.ok() ? crossed_second.status() : crossed_first.status();
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  // The deadlock rolled back the victim's whole transaction, though its
  // error packet said nothing of the transaction's state.
  EXPECT_FALSE(victim.InTransaction());
  EXPECT_FALSE(victim.broken());
  EXPECT_TRUE(survivor.InTransaction());
  ASSERT_TRUE(survivor.Execute("COMMIT", {}, nullptr).ok());
  EXPECT_EQ(Scalar(*db, "SELECT CAST(SUM(v) AS SIGNED) FROM " + t), 2);
}

TEST_F(MysqlDatabaseTest, KilledPinnedBackendIsUnavailableAndBroken) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  const std::string t = NewTable();
  Exec(*db, "CREATE TABLE " + t + " (id INT PRIMARY KEY) ENGINE=InnoDB");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      pinned->Execute("INSERT INTO " + t + " VALUES (1)", {}, nullptr).ok());
  absl::StatusOr<int64_t> id = PinnedInt(*pinned, "SELECT CONNECTION_ID()");
  ASSERT_TRUE(id.ok()) << id.status();
  Exec(*db, absl::StrCat("KILL ", *id));
  absl::StatusOr<ExecuteResult> lost =
      pinned->Execute("INSERT INTO " + t + " VALUES (2)", {}, nullptr);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable)
      << lost.status();
  EXPECT_TRUE(pinned->broken());
  EXPECT_FALSE(pinned->InTransaction());
  const int open = db->Stats().open();
  pinned.reset();
  EXPECT_EQ(db->Stats().open(), open - 1);  // closed, not pooled
  EXPECT_EQ(db->Stats().in_use(), 0);
  EXPECT_EQ(Scalar(*db, "SELECT COUNT(*) FROM " + t), 0);
}

TEST_F(MysqlDatabaseTest, CancelInterruptsAPinnedStatement) {
  std::unique_ptr<Database> db = Open();
  ASSERT_NE(db, nullptr);
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  CancelSignal cancel;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(300));
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<ExecuteResult> slept =
      pinned->Execute("DO SLEEP(10)", {}, &cancel);
  canceller.join();
  EXPECT_EQ(slept.status().code(), absl::StatusCode::kCancelled)
      << slept.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  EXPECT_FALSE(pinned->broken());
  absl::StatusOr<int64_t> one = PinnedInt(*pinned, "SELECT 1");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
}

}  // namespace
}  // namespace connbroker::server
