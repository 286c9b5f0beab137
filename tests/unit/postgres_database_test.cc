// Tests of the PostgreSQL driver (server/drivers/postgres_database.cc),
// against the real PostgreSQL server tests/servers/db-servers.sh starts (run
// through tests/run.sh, or source its env.sh). Each test works in a schema
// of its own, set as search_path through the `options` query option, so the
// tests can run in parallel.
#include "server/drivers/postgres_database.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "connbroker/config/spec.h"
#include "connbroker/config/sql_url.h"
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

// One cell of a batch as a Value (null_value for NULL).
v1::Value Cell(const v1::RowBatch& batch, int column, int row) {
  const v1::ColumnVector& vector = batch.columns(column);
  v1::Value value;
  if (vector.nulls_size() > 0 && vector.nulls(row)) {
    value.set_null_value(v1::NULL_VALUE);
    return value;
  }
  switch (vector.values_case()) {
    case v1::ColumnVector::kBools:
      value.set_bool_value(vector.bools().values(row));
      break;
    case v1::ColumnVector::kInt64S:
      value.set_int64_value(vector.int64s().values(row));
      break;
    case v1::ColumnVector::kDoubles:
      value.set_double_value(vector.doubles().values(row));
      break;
    case v1::ColumnVector::kTexts:
      value.set_text_value(vector.texts().values(row));
      break;
    case v1::ColumnVector::kBlobs:
      value.set_blob_value(vector.blobs().values(row));
      break;
    case v1::ColumnVector::kMixed:
      value = vector.mixed().values(row);
      break;
    case v1::ColumnVector::VALUES_NOT_SET:
      value.set_null_value(v1::NULL_VALUE);
      break;
  }
  return value;
}

// A TCP port on 127.0.0.1 nobody listens on (bound, then released).
int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

class PostgresDatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::optional<testing::PgServer> server = testing::PgServerFromEnv();
    if (!server) GTEST_FAIL() << testing::kNoServersMessage;
    server_ = *server;
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    schema_ = absl::AsciiStrToLower(
        absl::StrCat("cbt_", info->name(), "_", getpid()).substr(0, 60));
    // The schema must exist before a backend with it as search_path creates
    // anything; a plain connection makes it.
    std::unique_ptr<Database> admin = Open(BaseSpec());
    ASSERT_NE(admin, nullptr);
    Exec(*admin, "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    Exec(*admin, "CREATE SCHEMA " + schema_);
    db_ = Open(Spec());
    ASSERT_NE(db_, nullptr);
  }

  void TearDown() override {
    db_.reset();
    if (schema_.empty() || server_.port == 0) return;
    std::unique_ptr<Database> admin = Open(BaseSpec());
    if (admin != nullptr) {
      Exec(*admin, "DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
    }
  }

  // A spec for the test server, from its URL as a user would write it.
  config::ConnectionSpec BaseSpec() const {
    config::ConnectionSpec spec;
    spec.name = "pgtest";
    spec.type = "sql";
    absl::StatusOr<config::SqlTarget> target =
        config::ParseSqlUrl(server_.Url());
    EXPECT_TRUE(target.ok()) << target.status();
    if (target.ok()) spec.sql = *target;
    spec.pool.pool_size = 2;
    spec.pool.max_overflow = 2;
    spec.pool.acquire_timeout = absl::Seconds(10);
    spec.pool.connect_timeout = absl::Seconds(5);
    return spec;
  }

  // BaseSpec working in this test's schema, with UTC times.
  config::ConnectionSpec Spec() const {
    config::ConnectionSpec spec = BaseSpec();
    spec.sql.query["options"] =
        absl::StrCat("-c search_path=", schema_, " -c TimeZone=UTC");
    return spec;
  }

  static std::unique_ptr<Database> Open(const config::ConnectionSpec& spec) {
    absl::StatusOr<std::unique_ptr<Database>> db = OpenPostgresDatabase(spec);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? std::move(*db) : nullptr;
  }

  using Result = QueryOutput;

  // The single value of a one-row, one-column query.
  static absl::StatusOr<v1::Value> Scalar(Database& db, const std::string& sql,
                                          const v1::Params& params = {}) {
    absl::StatusOr<Result> result = RunQuery(db, sql, params);
    if (!result.ok()) return result.status();
    if (result->rows != 1 || result->batches[0].columns_size() != 1) {
      return absl::InternalError("not one row of one column");
    }
    return Cell(result->batches[0], 0, 0);
  }

  static int64_t Count(Database& db, const std::string& sql) {
    absl::StatusOr<v1::Value> value = Scalar(db, sql);
    EXPECT_TRUE(value.ok()) << sql << ": " << value.status();
    return value.ok() ? value->int64_value() : -1;
  }

  // The texts of the statements `db`'s backend has prepared (one backend:
  // pool_size 1). The probe's text changes each time, so it never becomes
  // a prepared statement itself.
  std::vector<std::string> Prepared(Database& db) {
    absl::StatusOr<Result> result = RunQuery(
        db, absl::StrCat("SELECT statement FROM pg_prepared_statements "
                         "ORDER BY statement /* probe ",
                         ++probes_, " */"));
    EXPECT_TRUE(result.ok()) << result.status();
    std::vector<std::string> texts;
    if (!result.ok()) return texts;
    for (const v1::RowBatch& batch : result->batches) {
      for (int row = 0; row < batch.row_count(); ++row) {
        texts.push_back(Cell(batch, 0, row).text_value());
      }
    }
    return texts;
  }

  // A database of one backend, whose prepared statements Prepared() sees.
  std::unique_ptr<Database> OpenSingle() const {
    config::ConnectionSpec spec = Spec();
    spec.pool.pool_size = 1;
    spec.pool.max_overflow = 0;
    return Open(spec);
  }

  testing::PgServer server_;
  std::string schema_;
  std::unique_ptr<Database> db_;
  int probes_ = 0;
};

// ---------------------------------------------------------------------------
// Types

struct TypeCase {
  std::string expression;
  std::string database_type;
  v1::Value expected;
};

TEST_F(PostgresDatabaseTest, TypesRoundTripWithTheirNames) {
  Exec(*db_, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
  const std::string unicode =
      "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80";
  const std::vector<TypeCase> cases = {
      {"32767::int2", "int2", Int(32767)},
      {"(-32768)::int2", "int2", Int(-32768)},
      {"2147483647::int4", "int4", Int(2147483647)},
      {"(-2147483648)::int4", "int4", Int(-2147483648LL)},
      {"9223372036854775807::int8", "int8",
       Int(std::numeric_limits<int64_t>::max())},
      {"(-9223372036854775808)::int8", "int8",
       Int(std::numeric_limits<int64_t>::min())},
      {"4294967295::oid", "oid", Int(4294967295LL)},
      {"1.5::float4", "float4", Double(1.5)},
      {"'Infinity'::float4", "float4",
       Double(std::numeric_limits<double>::infinity())},
      {"0.1::float8", "float8", Double(0.1)},
      {"1.7976931348623157e308::float8", "float8",
       Double(std::numeric_limits<double>::max())},
      {"'-Infinity'::float8", "float8",
       Double(-std::numeric_limits<double>::infinity())},
      {"12345678901234567890.0123456789::numeric(30,10)", "numeric",
       Text("12345678901234567890.0123456789")},
      {"'0.1000000000000000000000000001'::numeric", "numeric",
       Text("0.1000000000000000000000000001")},
      {"'" + unicode + "'::text", "text", Text(unicode)},
      {"'abc'::varchar(10)", "varchar", Text("abc")},
      {"'ab'::char(4)", "bpchar", Text("ab  ")},
      {"'\\x00ff0001'::bytea", "bytea", Blob(std::string("\0\xff\0\x01", 4))},
      {"''::bytea", "bytea", Blob("")},
      {"true", "bool", Bool(true)},
      {"false", "bool", Bool(false)},
      {"'2024-02-29'::date", "date", Text("2024-02-29")},
      {"'13:45:30.123456'::time", "time", Text("13:45:30.123456")},
      {"'2024-02-29 13:45:30.5'::timestamp", "timestamp",
       Text("2024-02-29 13:45:30.5")},
      {"'2024-02-29 13:45:30+02'::timestamptz", "timestamptz",
       Text("2024-02-29 11:45:30+00")},
      {"'1 day 02:03:04'::interval", "interval", Text("1 day 02:03:04")},
      {"'{\"a\": [1, 2]}'::json", "json", Text("{\"a\": [1, 2]}")},
      {"'{\"b\": 1, \"a\": [1, 2]}'::jsonb", "jsonb",
       Text("{\"a\": [1, 2], \"b\": 1}")},
      {"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid", "uuid",
       Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")},
      {"'happy'::mood", "mood", Text("happy")},
      {"ARRAY['ok', 'sad']::mood[]", "mood[]", Text("{ok,sad}")},
      {"ARRAY[1, NULL, -3]::int4[]", "int4[]", Text("{1,NULL,-3}")},
      {"ARRAY['a', 'b c']::text[]", "text[]", Text("{a,\"b c\"}")},
      {"'192.168.0.1/24'::inet", "inet", Text("192.168.0.1/24")},
      {"B'101'::bit(3)", "bit", Text("101")},
  };
  for (const TypeCase& c : cases) {
    SCOPED_TRACE(c.expression);
    absl::StatusOr<Result> result =
        RunQuery(*db_, "SELECT " + c.expression + " AS v");
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_EQ(result->rows, 1);
    ASSERT_EQ(result->schema.columns_size(), 1);
    const v1::Column& column = result->schema.columns(0);
    EXPECT_EQ(column.name(), "v");
    EXPECT_EQ(column.database_type(), c.database_type);
    const v1::Value cell = Cell(result->batches[0], 0, 0);
    EXPECT_EQ(cell.kind_case(), c.expected.kind_case()) << cell.DebugString();
    EXPECT_EQ(cell.SerializeAsString(), c.expected.SerializeAsString())
        << "got " << cell.DebugString();

    // The same type's NULL: a null cell, the same name.
    const std::string null_sql = "SELECT NULL::" + c.database_type + " AS v";
    absl::StatusOr<Result> null_result = RunQuery(*db_, null_sql);
    ASSERT_TRUE(null_result.ok()) << null_result.status();
    EXPECT_EQ(null_result->schema.columns(0).database_type(), c.database_type);
    EXPECT_EQ(null_result->schema.columns(0).kind(), v1::VALUE_KIND_NULL);
    EXPECT_TRUE(null_result->schema.columns(0).nullable());
    EXPECT_EQ(Cell(null_result->batches[0], 0, 0).kind_case(),
              v1::Value::kNullValue);
  }

  // NaN compares unequal to itself: checked apart.
  absl::StatusOr<v1::Value> nan = Scalar(*db_, "SELECT 'NaN'::float8");
  ASSERT_TRUE(nan.ok()) << nan.status();
  EXPECT_TRUE(std::isnan(nan->double_value()));
}

TEST_F(PostgresDatabaseTest, TableColumnsSettleKindAndNullability) {
  Exec(*db_,
       "CREATE TABLE t(id int8 NOT NULL, price numeric(10,2), note text, "
       "data bytea, ok bool)");
  Exec(*db_,
       "INSERT INTO t VALUES (1, 9.99, 'a', '\\x01', true), "
       "(2, NULL, NULL, NULL, NULL), (3, 0.5, 'c', '\\x', false)");
  absl::StatusOr<Result> result =
      RunQuery(*db_, "SELECT id, price, note, data, ok FROM t ORDER BY id");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 3);
  const v1::Schema& schema = result->schema;
  EXPECT_EQ(schema.columns(0).kind(), v1::VALUE_KIND_INT64);
  EXPECT_EQ(schema.columns(1).kind(), v1::VALUE_KIND_TEXT);
  EXPECT_EQ(schema.columns(1).database_type(), "numeric");
  EXPECT_EQ(schema.columns(2).kind(), v1::VALUE_KIND_TEXT);
  EXPECT_EQ(schema.columns(3).kind(), v1::VALUE_KIND_BLOB);
  EXPECT_EQ(schema.columns(4).kind(), v1::VALUE_KIND_BOOL);
  EXPECT_TRUE(schema.columns(1).nullable());
  const v1::RowBatch& batch = result->batches[0];
  EXPECT_EQ(Cell(batch, 1, 0).text_value(), "9.99");
  EXPECT_EQ(Cell(batch, 1, 1).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(Cell(batch, 1, 2).text_value(), "0.50");
  EXPECT_EQ(Cell(batch, 3, 2).blob_value(), "");
  EXPECT_EQ(Cell(batch, 4, 2).bool_value(), false);
}

// The built-in OIDs the driver names by heart are the server's.
TEST_F(PostgresDatabaseTest, BuiltinTypeNamesMatchTheServer) {
  absl::StatusOr<Result> result =
      RunQuery(*db_,
               "SELECT t.oid::int8, t.typname::text, e.typname::text "
               "FROM pg_type t LEFT JOIN pg_type e "
               "ON e.oid = t.typelem AND t.typname = '_' || e.typname "
               "WHERE t.oid < 16384",
               {}, 100000);
  ASSERT_TRUE(result.ok()) << result.status();
  int checked = 0;
  for (const v1::RowBatch& batch : result->batches) {
    for (int row = 0; row < batch.row_count(); ++row) {
      const uint32_t oid =
          static_cast<uint32_t>(Cell(batch, 0, row).int64_value());
      const std::string known = postgres_internal::BuiltinTypeName(oid);
      if (known.empty()) continue;
      const v1::Value element = Cell(batch, 2, row);
      const std::string expected = element.has_text_value()
                                       ? element.text_value() + "[]"
                                       : Cell(batch, 1, row).text_value();
      EXPECT_EQ(known, expected) << "oid " << oid;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

// ---------------------------------------------------------------------------
// Parameters

TEST_F(PostgresDatabaseTest, PositionalParametersAreData) {
  Exec(*db_,
       "CREATE TABLE p(i int8, f float8, s text, b bytea, ok bool, d date, "
       "small int2)");
  const std::string injection = "'; DROP TABLE p; --";
  const std::string bytes("\0\x01\xff'\\", 5);
  v1::Params params;
  *params.add_positional() = Int(std::numeric_limits<int64_t>::min());
  *params.add_positional() = Double(0.1);
  *params.add_positional() = Text(injection);
  *params.add_positional() = Blob(bytes);
  *params.add_positional() = Bool(true);
  *params.add_positional() = Text("2024-01-31");
  *params.add_positional() = Int(7);
  absl::StatusOr<ExecuteResult> inserted = ExecuteNow(
      *db_, "INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7)", params);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 1);
  EXPECT_EQ(inserted->last_insert_id, 0);

  v1::Params nulls;
  for (int i = 0; i < 7; ++i) *nulls.add_positional() = Null();
  Exec(*db_, "INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7)", nulls);

  absl::StatusOr<Result> result = RunQuery(
      *db_, "SELECT i, f, s, b, ok, d, small FROM p ORDER BY i NULLS LAST");
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 2);
  const v1::RowBatch& batch = result->batches[0];
  EXPECT_EQ(Cell(batch, 0, 0).int64_value(),
            std::numeric_limits<int64_t>::min());
  EXPECT_EQ(Cell(batch, 1, 0).double_value(), 0.1);
  EXPECT_EQ(Cell(batch, 2, 0).text_value(), injection);
  EXPECT_EQ(Cell(batch, 3, 0).blob_value(), bytes);
  EXPECT_EQ(Cell(batch, 4, 0).bool_value(), true);
  EXPECT_EQ(Cell(batch, 5, 0).text_value(), "2024-01-31");
  EXPECT_EQ(Cell(batch, 6, 0).int64_value(), 7);
  for (int column = 0; column < 7; ++column) {
    EXPECT_EQ(Cell(batch, column, 1).kind_case(), v1::Value::kNullValue);
  }
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM p"), 2);  // the table is there

  // Doubles the server must read back exactly, and its spellings of the
  // non-finite ones.
  for (double value : {0.1, 1.0 / 3, -0.0, 1e-310, 1.7976931348623157e308,
                       std::numeric_limits<double>::infinity(),
                       -std::numeric_limits<double>::infinity()}) {
    v1::Params one;
    *one.add_positional() = Double(value);
    absl::StatusOr<v1::Value> back = Scalar(*db_, "SELECT $1", one);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->double_value(), value);
    EXPECT_EQ(std::signbit(back->double_value()), std::signbit(value));
  }
  v1::Params nan;
  *nan.add_positional() = Double(std::nan(""));
  absl::StatusOr<v1::Value> back = Scalar(*db_, "SELECT $1", nan);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(std::isnan(back->double_value()));

  // An int that fits int4 is int4, so functions taking int4 resolve.
  v1::Params small;
  *small.add_positional() = Int(5);
  absl::StatusOr<v1::Value> repeated =
      Scalar(*db_, "SELECT repeat('x', $1)", small);
  ASSERT_TRUE(repeated.ok()) << repeated.status();
  EXPECT_EQ(repeated->text_value(), "xxxxx");
}

TEST_F(PostgresDatabaseTest, NamedParametersAreRewrittenAndBound) {
  Exec(*db_, "CREATE TABLE n(id int4, name text)");
  const std::string injection = "x'); DROP TABLE n; --";
  v1::Params params;
  (*params.mutable_named())["id"] = Int(1);
  (*params.mutable_named())["name"] = Text(injection);
  Exec(*db_, "INSERT INTO n VALUES (:id, :name)", params);

  // The same name twice, a cast after a parameter, casts and look-alikes in
  // strings, comments and dollar quotes that are not parameters.
  v1::Params query;
  (*query.mutable_named())["id"] = Int(1);
  absl::StatusOr<Result> result = RunQuery(
      *db_,
      "SELECT name, :id::int8 + 1 AS next, '10:30'::time AS t, ':id' AS s, "
      "$$ :id $$ AS d, $tag$ it's :id $tag$ AS e, \"n\".id::text AS c "
      "/* :nope */ FROM n -- :nope\n"
      "WHERE id = :id AND id = (:id)",
      query);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  const v1::RowBatch& batch = result->batches[0];
  EXPECT_EQ(Cell(batch, 0, 0).text_value(), injection);
  EXPECT_EQ(Cell(batch, 1, 0).int64_value(), 2);
  EXPECT_EQ(Cell(batch, 2, 0).text_value(), "10:30:00");
  EXPECT_EQ(Cell(batch, 3, 0).text_value(), ":id");
  EXPECT_EQ(Cell(batch, 4, 0).text_value(), " :id ");
  EXPECT_EQ(Cell(batch, 5, 0).text_value(), " it's :id ");
  EXPECT_EQ(Cell(batch, 6, 0).text_value(), "1");
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM n"), 1);

  // psycopg2's pyformat, with %% as a percent sign.
  v1::Params pyformat;
  (*pyformat.mutable_named())["pattern"] = Text("x%");
  absl::StatusOr<Result> like = RunQuery(
      *db_,
      "SELECT count(*) AS c, 7 %% 4 AS m FROM n WHERE name LIKE %(pattern)s",
      pyformat);
  ASSERT_TRUE(like.ok()) << like.status();
  EXPECT_EQ(Cell(like->batches[0], 0, 0).int64_value(), 1);
  EXPECT_EQ(Cell(like->batches[0], 1, 0).int64_value(), 3);

  v1::Params missing;
  (*missing.mutable_named())["id"] = Int(1);
  absl::StatusOr<Result> failed = RunQuery(*db_, "SELECT :id, :other", missing);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(failed.status().message(),
              HasSubstr("no value for parameter :other"));

  v1::Params both = missing;
  *both.add_positional() = Int(1);
  failed = RunQuery(*db_, "SELECT $1", both);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PostgresRewriteTest, RewritesOnlyRealPlaceholders) {
  using postgres_internal::RewriteNamedParameters;
  auto rewritten = RewriteNamedParameters(
      "SELECT :a, :b, :a, x::int, E'it\\'s :c', \"q:d\", U&'\\0041 :e', "
      "a$b, $q$ :f $q$ /* :g /* nested :h */ :i */ -- :j\n :k, arr[1:2], "
      "\\:l, %(m)s");
  ASSERT_TRUE(rewritten.ok()) << rewritten.status();
  EXPECT_EQ(rewritten->sql,
            "SELECT $1, $2, $1, x::int, E'it\\'s :c', \"q:d\", U&'\\0041 :e', "
            "a$b, $q$ :f $q$ /* :g /* nested :h */ :i */ -- :j\n $3, "
            "arr[1:2], :l, $4");
  EXPECT_THAT(rewritten->names, ElementsAre("a", "b", "k", "m"));

  // Without pyformat placeholders %% is left alone.
  rewritten = RewriteNamedParameters("SELECT 7 %% 4, :x");
  ASSERT_TRUE(rewritten.ok());
  EXPECT_EQ(rewritten->sql, "SELECT 7 %% 4, $1");
  rewritten = RewriteNamedParameters("SELECT '%%', %(x)s");
  ASSERT_TRUE(rewritten.ok());
  EXPECT_EQ(rewritten->sql, "SELECT '%', $1");

  EXPECT_EQ(RewriteNamedParameters("SELECT $1, :x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(postgres_internal::HighestPlaceholder(
                "SELECT $2, '$9', $$ $8 $$, \"$7\", a$5, -- $6\n $10"),
            10);
  EXPECT_EQ(postgres_internal::HighestPlaceholder("SELECT ':x', $f$ $1 $f$"),
            0);

  // Unterminated quotes run to the end (the server reports them).
  rewritten = RewriteNamedParameters("SELECT ':x");
  ASSERT_TRUE(rewritten.ok());
  EXPECT_EQ(rewritten->sql, "SELECT ':x");
}

// ---------------------------------------------------------------------------
// Errors

TEST_F(PostgresDatabaseTest, SqlErrorsCarryMessageAndSqlState) {
  absl::StatusOr<Result> syntax = RunQuery(*db_, "SELEC 1");
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(syntax.status().message(), HasSubstr("syntax error"));
  EXPECT_EQ(SqlStateOf(syntax.status()), "42601");

  absl::StatusOr<ExecuteResult> missing =
      ExecuteNow(*db_, "INSERT INTO no_such_table VALUES (1)");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(missing.status()), "42P01");

  Exec(*db_, "CREATE TABLE u(id int PRIMARY KEY)");
  Exec(*db_, "INSERT INTO u VALUES (1)");
  absl::StatusOr<ExecuteResult> duplicate =
      ExecuteNow(*db_, "INSERT INTO u VALUES (1)");
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(duplicate.status()), "23505");
  EXPECT_THAT(duplicate.status().message(), HasSubstr("duplicate key"));

  // Too many positional values is the statement's fault, not the link's.
  v1::Params extra;
  *extra.add_positional() = Int(1);
  *extra.add_positional() = Int(2);
  absl::StatusOr<Result> mismatch = RunQuery(*db_, "SELECT $1", extra);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(), HasSubstr("2 given"));
  mismatch = RunQuery(*db_, "SELECT $1, $2, $3", extra);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);

  // An error after some rows were sent: the rows, then the error; the
  // backend stays usable.
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db_, "SELECT 10 / (3 - g) FROM generate_series(1, 5) g");
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  v1::RowBatch batch;
  absl::StatusOr<bool> more = (*cursor)->Next(1, 1 << 20, &batch);
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(batch.row_count(), 1);
  absl::StatusOr<bool> rest = (*cursor)->Next(100, 1 << 20, &batch);
  EXPECT_EQ(rest.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(rest.status()), "22012");
  cursor->reset();
  EXPECT_EQ(Count(*db_, "SELECT 1::int8"), 1);

  // A Query is one statement.
  absl::StatusOr<Result> two = RunQuery(*db_, "SELECT 1; SELECT 2");
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PostgresDatabaseTest, BadPasswordIsPermissionDeniedWithoutThePassword) {
  config::ConnectionSpec spec = Spec();
  spec.sql.password = "Wrong-Secret-4711";
  absl::StatusOr<std::unique_ptr<Database>> db = OpenPostgresDatabase(spec);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kPermissionDenied)
      << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("authentication failed"));
  EXPECT_THAT(std::string(db.status().message()),
              Not(HasSubstr("Wrong-Secret-4711")));
  EXPECT_THAT(std::string(db.status().message()),
              Not(HasSubstr(server_.password)));
  EXPECT_EQ(SqlStateOf(db.status()), "28P01");
}

TEST_F(PostgresDatabaseTest, AMissingDatabaseIsAFailedPreconditionNotRetried) {
  config::ConnectionSpec spec = Spec();
  spec.sql.database = "no_such_database_4711";
  absl::StatusOr<std::unique_ptr<Database>> db = OpenPostgresDatabase(spec);
  ASSERT_FALSE(db.ok());
  // Not UNAVAILABLE: the broker would reset the pool and retry a fault no
  // reconnect can mend.
  EXPECT_EQ(db.status().code(), absl::StatusCode::kFailedPrecondition)
      << db.status();
  EXPECT_THAT(db.status().message(), HasSubstr("does not exist"));
  EXPECT_EQ(SqlStateOf(db.status()), "3D000");
}

TEST_F(PostgresDatabaseTest, UnreachableServerIsUnavailable) {
  config::ConnectionSpec spec = Spec();
  spec.sql.port = UnusedPort();
  spec.pool.connect_timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Database>> db = OpenPostgresDatabase(spec);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.status().code(), absl::StatusCode::kUnavailable) << db.status();
  EXPECT_THAT(std::string(db.status().message()),
              Not(HasSubstr(server_.password)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(PostgresDatabaseTest, ConnectsThroughTheUnixSocket) {
  config::ConnectionSpec spec = Spec();
  spec.sql.host = server_.socket_dir;
  std::unique_ptr<Database> by_host = Open(spec);
  ASSERT_NE(by_host, nullptr);
  EXPECT_EQ(Count(*by_host, "SELECT 1::int8"), 1);

  // SQLAlchemy's spelling: no host in the URL, ?host=/dir.
  spec = Spec();
  spec.sql.host.clear();
  spec.sql.query["host"] = server_.socket_dir;
  spec.sql.query["sqlalchemy_only_option"] = "ignored";
  std::unique_ptr<Database> by_query = Open(spec);
  ASSERT_NE(by_query, nullptr);
  absl::StatusOr<v1::Value> application =
      Scalar(*by_query, "SELECT current_setting('application_name')");
  ASSERT_TRUE(application.ok()) << application.status();
  EXPECT_EQ(application->text_value(), "connbroker");
}

// ---------------------------------------------------------------------------
// Streaming

TEST_F(PostgresDatabaseTest, LargeResultsStreamInBatches) {
  absl::StatusOr<Result> result = RunQuery(
      *db_, "SELECT g, repeat('x', 20) AS pad FROM generate_series(1, 50000) g",
      {}, 4096);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->rows, 50000);
  EXPECT_GT(result->batches.size(), 1u);
  EXPECT_FALSE(result->more.back());
  int64_t expected = 1;
  for (const v1::RowBatch& batch : result->batches) {
    EXPECT_LE(batch.row_count(), 4096);
    for (int row = 0; row < batch.row_count(); ++row) {
      ASSERT_EQ(batch.columns(0).int64s().values(row), expected++);
    }
  }

  // Cut by bytes as well: about 64 KiB a batch.
  absl::StatusOr<Result> by_bytes =
      RunQuery(*db_, "SELECT repeat('y', 1000) FROM generate_series(1, 1000)",
               {}, 100000, 64 << 10);
  ASSERT_TRUE(by_bytes.ok()) << by_bytes.status();
  EXPECT_EQ(by_bytes->rows, 1000);
  EXPECT_GE(by_bytes->batches.size(), 10u);

  // A statement without rows: no columns, no rows.
  absl::StatusOr<Result> command =
      RunQuery(*db_, "CREATE TABLE empty_one(x int)");
  ASSERT_TRUE(command.ok()) << command.status();
  EXPECT_EQ(command->rows, 0);
  EXPECT_EQ(command->schema.columns_size(), 0);
}

TEST_F(PostgresDatabaseTest, AbandonedCursorLeavesTheBackendReusable) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  {
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
        QueryNow(*db, "SELECT g FROM generate_series(1, 2000000) g");
    ASSERT_TRUE(cursor.ok()) << cursor.status();
    v1::RowBatch batch;
    ASSERT_TRUE((*cursor)->Next(100, 1 << 20, &batch).ok());
  }  // dropped mid-result
  EXPECT_EQ(Count(*db, "SELECT 41::int8 + 1"), 42);
  const PoolStats stats = db->Stats();
  EXPECT_EQ(stats.opened_total(), 1);  // the same backend, kept
  EXPECT_EQ(stats.open(), 1);
  EXPECT_EQ(stats.idle(), 1);
  EXPECT_EQ(stats.in_use(), 0);
  EXPECT_EQ(stats.max_size(), 1);
}

// ---------------------------------------------------------------------------
// Cancellation

TEST_F(PostgresDatabaseTest, CancelStopsARunningStatement) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const std::string marker = absl::StrCat("cancel_marker_", schema_);
  const std::string active = absl::StrCat(
      "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
      "query LIKE '%",
      marker, "%' AND pid <> pg_backend_pid()");

  CancelSignal cancel;
  std::thread canceller([&] {
    // Cancel once the server runs the statement (bounded wait).
    const absl::Time give_up = absl::Now() + absl::Seconds(8);
    while (absl::Now() < give_up && Count(*db_, active) < 1) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::Status status;
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, "SELECT pg_sleep(10) /* " + marker + " */", {}, &cancel);
  if (cursor.ok()) {
    v1::RowBatch batch;
    status = (*cursor)->Next(100, 1 << 20, &batch).status();
  } else {
    status = cursor.status();
  }
  canceller.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  cursor = absl::CancelledError();  // drop the cursor, if any

  // The same (only) backend answers the next statement, and the server runs
  // no sleep any more.
  EXPECT_EQ(Count(*db, "SELECT 1::int8"), 1);
  EXPECT_EQ(db->Stats().opened_total(), 1);
  EXPECT_EQ(Count(*db_, active), 0);
}

TEST_F(PostgresDatabaseTest, CancelBetweenBatchesAndDuringExecute) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  {
    // Wide rows: the server flushes its output every 8 KiB, so narrow ones
    // would arrive only seconds apart.
    CancelSignal cancel;
    absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
        QueryNow(*db,
                 "SELECT g, repeat('x', 4000), pg_sleep(0.01) "
                 "FROM generate_series(1, 3000) g",
                 {}, &cancel);
    ASSERT_TRUE(cursor.ok()) << cursor.status();
    v1::RowBatch batch;
    ASSERT_TRUE((*cursor)->Next(2, 1 << 20, &batch).ok());
    cancel.Cancel();
    const absl::Time start = absl::Now();
    absl::StatusOr<bool> more = (*cursor)->Next(100, 1 << 20, &batch);
    EXPECT_EQ(more.status().code(), absl::StatusCode::kCancelled);
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  }
  EXPECT_EQ(Count(*db, "SELECT 2::int8"), 2);

  CancelSignal cancel;
  std::thread canceller([&] {
    const absl::Time give_up = absl::Now() + absl::Seconds(8);
    while (absl::Now() < give_up &&
           Count(*db_,
                 "SELECT count(*) FROM pg_stat_activity WHERE state = "
                 "'active' AND query LIKE '%pg_sleep(20)%' AND pid <> "
                 "pg_backend_pid() AND query LIKE '%" +
                     schema_ + "%'") < 1) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<ExecuteResult> executed =
      ExecuteNow(*db, "SELECT pg_sleep(20) /* " + schema_ + " */", {}, &cancel);
  canceller.join();
  EXPECT_EQ(executed.status().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(Count(*db, "SELECT 3::int8"), 3);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

// ---------------------------------------------------------------------------
// Transactions and Execute

TEST_F(PostgresDatabaseTest, ExecuteRefusesAnOpenTransaction) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  absl::StatusOr<ExecuteResult> open =
      ExecuteNow(*db_, "BEGIN; INSERT INTO tx VALUES (1)");
  EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(open.status().message(), HasSubstr("rolled back"));
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 0);

  // A script in one transaction of its own commits.
  absl::StatusOr<ExecuteResult> script =
      ExecuteNow(*db_,
                 "INSERT INTO tx VALUES (1), (2); UPDATE tx SET id = id + 10; "
                 "BEGIN; INSERT INTO tx VALUES (3); COMMIT");
  ASSERT_TRUE(script.ok()) << script.status();
  EXPECT_EQ(script->rows_affected, 5);
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 3);

  // A BEGIN through Query is rolled back when the backend goes back.
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(RunQuery(*db, "BEGIN").ok());
  absl::StatusOr<ExecuteResult> after =
      ExecuteNow(*db, "INSERT INTO tx VALUES (4)");
  EXPECT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 4);

  // A failing statement inside a script's transaction: its error, and the
  // backend comes back clean.
  absl::StatusOr<ExecuteResult> failing = ExecuteNow(
      *db, "BEGIN; INSERT INTO tx VALUES (5); INSERT INTO tx VALUES ('x')");
  EXPECT_EQ(failing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(failing.status()), "22P02");
  EXPECT_TRUE(ExecuteNow(*db, "INSERT INTO tx VALUES (6)").ok());
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 5);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

TEST_F(PostgresDatabaseTest, ALostConnectionIsUnavailableThenRecovers) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const int64_t pid = Count(*db, "SELECT pg_backend_pid()::int8");
  ASSERT_GT(pid, 0);
  EXPECT_EQ(Count(*db_, absl::StrCat("SELECT count(*) FROM (SELECT "
                                     "pg_terminate_backend(",
                                     pid, ", 5000)) t")),
            1);
  absl::StatusOr<Result> lost = RunQuery(*db, "SELECT 1");
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable)
      << lost.status();
  // The broken backend was closed; the next statement opens a new one.
  const int64_t again = Count(*db, "SELECT pg_backend_pid()::int8");
  EXPECT_GT(again, 0);
  EXPECT_NE(again, pid);
  EXPECT_EQ(db->Stats().opened_total(), 2);
}

TEST_F(PostgresDatabaseTest, PrePingReplacesADeadBackendUnseen) {
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  spec.pool.pre_ping = true;
  spec.pool.pre_ping_after = absl::ZeroDuration();
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  const int64_t pid = Count(*db, "SELECT pg_backend_pid()::int8");
  ASSERT_EQ(Count(*db_, absl::StrCat("SELECT count(*) FROM (SELECT "
                                     "pg_terminate_backend(",
                                     pid, ", 5000)) t")),
            1);
  // The ping finds the backend dead and a new one runs the statement.
  const int64_t again = Count(*db, "SELECT pg_backend_pid()::int8");
  EXPECT_NE(again, pid);
  EXPECT_EQ(db->Stats().pre_ping_failures(), 1);
}

TEST_F(PostgresDatabaseTest, OddStatements) {
  // COPY to or from the client is refused; the backend is replaced.
  absl::StatusOr<Result> copy = RunQuery(*db_, "COPY (SELECT 1) TO STDOUT");
  EXPECT_EQ(copy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(copy.status().message(), HasSubstr("COPY"));
  absl::StatusOr<ExecuteResult> copy_in =
      ExecuteNow(*db_, "CREATE TABLE c(x int); COPY c FROM STDIN");
  EXPECT_EQ(copy_in.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Count(*db_, "SELECT 5::int8"), 5);

  // Blank SQL: no columns, no rows.
  absl::StatusOr<Result> blank = RunQuery(*db_, "  ");
  ASSERT_TRUE(blank.ok()) << blank.status();
  EXPECT_EQ(blank->schema.columns_size(), 0);

  // Execute with parameters runs one statement.
  v1::Params one;
  *one.add_positional() = Int(1);
  absl::StatusOr<ExecuteResult> two =
      ExecuteNow(*db_, "SELECT $1; SELECT 2", one);
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);

  // Execute of a SELECT drops its rows and counts them, as psycopg2 does.
  absl::StatusOr<ExecuteResult> select =
      ExecuteNow(*db_, "SELECT g FROM generate_series(1, 1000) g");
  ASSERT_TRUE(select.ok()) << select.status();
  EXPECT_EQ(select->rows_affected, 1000);
}

TEST_F(PostgresDatabaseTest, ResetAndMaintain) {
  EXPECT_EQ(Count(*db_, "SELECT 1::int8"), 1);
  EXPECT_GE(db_->Reset(), 1);
  EXPECT_EQ(db_->Stats().open(), 0);
  EXPECT_EQ(Count(*db_, "SELECT 1::int8"), 1);
  db_->Maintain();
  EXPECT_EQ(db_->Stats().open(), 1);
}

// ---------------------------------------------------------------------------
// Prepared statements

constexpr char kPointLookup[] = "SELECT id, name, amount FROM t WHERE id = $1";

// Creates t(id, name, amount) with rows 1..100: name "n<id>", amount id * 2.
void CreatePointTable(Database& db) {
  absl::StatusOr<ExecuteResult> created = ExecuteNow(
      db,
      "CREATE TABLE t(id int4 PRIMARY KEY, name text, amount int8); "
      "INSERT INTO t SELECT g, 'n' || g, g * 2 FROM generate_series(1, 100) "
      "g");
  ASSERT_TRUE(created.ok()) << created.status();
}

// Runs kPointLookup for `id` and checks its one row.
void ExpectPointRow(Database& db, int id) {
  v1::Params params;
  *params.add_positional() = Int(id);
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(db, kPointLookup, params);
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  v1::RowBatch batch;
  absl::StatusOr<bool> more = (*cursor)->Next(100, 1 << 20, &batch);
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_FALSE(*more);
  ASSERT_EQ(batch.row_count(), 1);
  EXPECT_EQ(Cell(batch, 0, 0).int64_value(), id);
  EXPECT_EQ(Cell(batch, 1, 0).text_value(), absl::StrCat("n", id));
  const v1::Value amount = Cell(batch, 2, 0);
  // int8, or text after the column changed type.
  if (amount.kind_case() == v1::Value::kTextValue) {
    EXPECT_EQ(amount.text_value(), absl::StrCat(id * 2));
  } else {
    EXPECT_EQ(amount.int64_value(), id * 2);
  }
}

TEST_F(PostgresDatabaseTest, RepeatedStatementsArePreparedOnTheirSecondRun) {
  std::unique_ptr<Database> db = OpenSingle();
  ASSERT_NE(db, nullptr);
  CreatePointTable(*db);
  ExpectPointRow(*db, 1);
  EXPECT_THAT(Prepared(*db), ::testing::IsEmpty());  // one run: not yet
  ExpectPointRow(*db, 2);
  EXPECT_THAT(Prepared(*db), ElementsAre(kPointLookup));
  for (int id = 3; id <= 12; ++id) ExpectPointRow(*db, id);
  EXPECT_THAT(Prepared(*db), ElementsAre(kPointLookup));

  // Named parameters: the rewritten text is what gets prepared.
  v1::Params named;
  (*named.mutable_named())["id"] = Int(7);
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<v1::Value> name =
        Scalar(*db, "SELECT name FROM t WHERE id = :id", named);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_EQ(name->text_value(), "n7");
  }
  // Other parameter types make another statement: text is sent untyped.
  v1::Params text;
  *text.add_positional() = Text("8");
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<v1::Value> name =
        Scalar(*db, "SELECT name FROM t WHERE id = $1", text);
    ASSERT_TRUE(name.ok()) << name.status();
    EXPECT_EQ(name->text_value(), "n8");
  }
  // Execute with parameters, too.
  v1::Params update;
  *update.add_positional() = Int(5);
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<ExecuteResult> updated = ExecuteNow(
        *db, "UPDATE t SET amount = amount + 1 WHERE id <= $1", update);
    ASSERT_TRUE(updated.ok()) << updated.status();
    EXPECT_EQ(updated->rows_affected, 5);
  }
  EXPECT_EQ(Count(*db, "SELECT sum(amount)::int8 FROM t WHERE id <= 5"),
            30 + 10);
  EXPECT_THAT(Prepared(*db),
              ElementsAre(kPointLookup, "SELECT name FROM t WHERE id = $1",
                          "SELECT name FROM t WHERE id = $1",
                          "UPDATE t SET amount = amount + 1 WHERE id <= $1"));

  // Scripts and utility statements are never prepared.
  for (int i = 0; i < 2; ++i) {
    Exec(*db, "UPDATE t SET amount = amount WHERE id = 1; SELECT 1");
    ASSERT_TRUE(RunQuery(*db, "SET application_name = 'cbtest'").ok());
  }
  EXPECT_EQ(Prepared(*db).size(), 4);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

TEST_F(PostgresDatabaseTest, DeallocatedStatementsArePreparedAgain) {
  std::unique_ptr<Database> db = OpenSingle();
  ASSERT_NE(db, nullptr);
  CreatePointTable(*db);
  v1::Params update;
  *update.add_positional() = Int(3);
  const std::string kUpdate = "UPDATE t SET name = name WHERE id <= $1";
  auto expect_update = [&] {
    absl::StatusOr<ExecuteResult> updated = ExecuteNow(*db, kUpdate, update);
    ASSERT_TRUE(updated.ok()) << updated.status();
    EXPECT_EQ(updated->rows_affected, 3);
  };
  auto prepare_both = [&] {
    for (int id = 1; id <= 2; ++id) {
      ExpectPointRow(*db, id);
      expect_update();
    }
    EXPECT_EQ(Prepared(*db).size(), 2);
  };

  // A DEALLOCATE ALL the driver sees (its command tag).
  prepare_both();
  Exec(*db, "DEALLOCATE ALL");
  EXPECT_THAT(Prepared(*db), ::testing::IsEmpty());
  ExpectPointRow(*db, 3);
  expect_update();
  EXPECT_EQ(Prepared(*db).size(), 2);

  // One it cannot see: the next runs fail with 26000 and are run again.
  Exec(*db, "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$");
  EXPECT_THAT(Prepared(*db), ::testing::IsEmpty());
  ExpectPointRow(*db, 4);
  expect_update();
  EXPECT_EQ(Prepared(*db).size(), 2);

  // DISCARD ALL, and a DEALLOCATE of the driver's own names.
  Exec(*db, "DISCARD ALL");
  ExpectPointRow(*db, 5);
  expect_update();
  absl::StatusOr<Result> names = RunQuery(
      *db, "SELECT name FROM pg_prepared_statements /* names */ ORDER BY 1");
  ASSERT_TRUE(names.ok()) << names.status();
  ASSERT_EQ(names->rows, 2);
  for (int row = 0; row < 2; ++row) {
    const std::string name = Cell(names->batches[0], 0, row).text_value();
    EXPECT_THAT(name, ::testing::StartsWith("cb_"));
    Exec(*db, "DEALLOCATE " + name);
  }
  ExpectPointRow(*db, 6);
  expect_update();
  EXPECT_EQ(Prepared(*db).size(), 2);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

TEST_F(PostgresDatabaseTest, ChangedTablesArePreparedAgain) {
  std::unique_ptr<Database> db = OpenSingle();
  ASSERT_NE(db, nullptr);
  CreatePointTable(*db);
  v1::Params returning;
  *returning.add_positional() = Int(9);
  const std::string kReturning =
      "UPDATE t SET name = name WHERE id = $1 RETURNING amount";
  for (int id = 1; id <= 2; ++id) {
    ExpectPointRow(*db, id);
    absl::StatusOr<ExecuteResult> updated =
        ExecuteNow(*db, kReturning, returning);
    ASSERT_TRUE(updated.ok()) << updated.status();
  }
  ASSERT_EQ(Prepared(*db).size(), 2);

  // Both statements' result types change: "cached plan must not change
  // result type" (0A000) the first time, unseen by the client.
  Exec(*db, "ALTER TABLE t ALTER COLUMN amount TYPE text");
  absl::StatusOr<Result> result = RunQuery(*db, kPointLookup, [] {
    v1::Params params;
    *params.add_positional() = Int(3);
    return params;
  }());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->rows, 1);
  EXPECT_EQ(result->schema.columns(2).database_type(), "text");
  EXPECT_EQ(Cell(result->batches[0], 2, 0).text_value(), "6");
  absl::StatusOr<ExecuteResult> updated =
      ExecuteNow(*db, kReturning, returning);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->rows_affected, 1);
  ExpectPointRow(*db, 4);
  // The stale statements were deallocated.
  EXPECT_EQ(Prepared(*db).size(), 2);

  // A change that leaves the result type alone needs no new statement.
  Exec(*db, "CREATE INDEX ON t(name)");
  ExpectPointRow(*db, 5);
  EXPECT_EQ(Prepared(*db).size(), 2);
}

TEST_F(PostgresDatabaseTest, PreparedStatementsAreBounded) {
  std::unique_ptr<Database> db = OpenSingle();
  ASSERT_NE(db, nullptr);
  auto statement = [](int i) { return absl::StrCat("SELECT $1::int8 + ", i); };
  v1::Params one;
  *one.add_positional() = Int(1);
  for (int i = 0; i < 70; ++i) {
    for (int run = 0; run < 2; ++run) {
      absl::StatusOr<v1::Value> sum = Scalar(*db, statement(i), one);
      ASSERT_TRUE(sum.ok()) << sum.status();
      EXPECT_EQ(sum->int64_value(), i + 1);
    }
  }
  std::vector<std::string> prepared = Prepared(*db);
  EXPECT_EQ(prepared.size(), 64);
  // The least recently used went first.
  EXPECT_THAT(prepared, ::testing::Contains(statement(69)));
  EXPECT_THAT(prepared, ::testing::Contains(statement(6)));
  EXPECT_THAT(prepared, Not(::testing::Contains(statement(5))));
  // Using one keeps it over the others.
  absl::StatusOr<v1::Value> sum = Scalar(*db, statement(6), one);
  ASSERT_TRUE(sum.ok()) << sum.status();
  sum = Scalar(*db, statement(0), one);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->int64_value(), 1);
  prepared = Prepared(*db);
  EXPECT_EQ(prepared.size(), 64);
  EXPECT_THAT(prepared, ::testing::Contains(statement(0)));
  EXPECT_THAT(prepared, ::testing::Contains(statement(6)));
  EXPECT_THAT(prepared, Not(::testing::Contains(statement(7))));
}

TEST_F(PostgresDatabaseTest, CancelStopsAWaitingPrepare) {
  std::unique_ptr<Database> db = OpenSingle();
  ASSERT_NE(db, nullptr);
  CreatePointTable(*db);
  const std::string marker = absl::StrCat("prepare_marker_", schema_);
  const std::string sql =
      absl::StrCat("SELECT count(*) FROM t WHERE id > $1 /* ", marker, " */");
  v1::Params params;
  *params.add_positional() = Int(90);
  absl::StatusOr<v1::Value> count = Scalar(*db, sql, params);  // the first run
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->int64_value(), 10);

  // Another session locks the table: the PREPARE of the second run waits
  // for the lock (parse analysis takes one).
  std::thread locker([&] {
    Exec(*db_,
         "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); "
         "COMMIT");
  });
  const std::string waiting = absl::StrCat(
      "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
      "AND query LIKE '%",
      marker, "%' AND pid <> pg_backend_pid()");
  CancelSignal cancel;
  std::thread canceller([&] {
    const absl::Time give_up = absl::Now() + absl::Seconds(3);
    while (absl::Now() < give_up && Count(*db_, waiting) < 1) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    cancel.Cancel();
  });
  // Let the lock be taken first.
  const absl::Time lock_deadline = absl::Now() + absl::Seconds(5);
  while (absl::Now() < lock_deadline &&
         Count(*db_,
               "SELECT count(*) FROM pg_locks WHERE mode = "
               "'AccessExclusiveLock' AND granted AND relation = '" +
                   schema_ + ".t'::regclass") < 1) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ResultCursor>> cursor =
      QueryNow(*db, sql, params, &cancel);
  canceller.join();
  EXPECT_EQ(cursor.status().code(), absl::StatusCode::kCancelled)
      << cursor.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));  // before the lock goes
  cursor = absl::CancelledError();
  locker.join();

  // The backend is fine, and the next run prepares the statement.
  count = Scalar(*db, sql, params);
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->int64_value(), 10);
  EXPECT_THAT(Prepared(*db), ElementsAre(sql));
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

// ---------------------------------------------------------------------------
// Pinned backends (a session's transactions)

// The text a one-row, one-column query answers on a pinned backend.
std::string PinnedText(PinnedBackend& pinned, const std::string& sql) {
  absl::StatusOr<QueryOutput> output = RunQuery(pinned, sql);
  EXPECT_TRUE(output.ok()) << sql << ": " << output.status();
  if (!output.ok() || output->rows != 1) return "";
  return Cell(output->batches[0], 0, 0).text_value();
}

TEST_F(PostgresDatabaseTest, PinnedTransactionIsSeenOnlyOnceCommitted) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db_, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  EXPECT_FALSE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  absl::Status again = pinned->Begin({}, nullptr);
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;

  v1::Params params;
  *params.add_positional() = Int(1);
  absl::StatusOr<ExecuteResult> inserted =
      pinned->Execute("INSERT INTO tx VALUES ($1), (2)", params, nullptr);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(inserted->rows_affected, 2);
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 0);  // another backend
  EXPECT_EQ(db_->Stats().in_use(), 1);
  ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 2);

  // Plain SQL opens and ends transactions too; InTransaction follows.
  ASSERT_TRUE(pinned->Execute("BEGIN", {}, nullptr).ok());
  EXPECT_TRUE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Execute("DELETE FROM tx", {}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 2);
  pinned.reset();
  EXPECT_EQ(db_->Stats().in_use(), 0);
}

TEST_F(PostgresDatabaseTest, DroppingAPinnedTransactionRollsItBack) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  config::ConnectionSpec spec = Spec();
  spec.pool.pool_size = 1;
  spec.pool.max_overflow = 0;
  std::unique_ptr<Database> db = Open(spec);
  ASSERT_NE(db, nullptr);
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  absl::StatusOr<int64_t> pid =
      PinnedInt(*pinned, "SELECT pg_backend_pid()::int8");
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("INSERT INTO tx VALUES (1)", {}, nullptr).ok());
  pinned.reset();
  EXPECT_EQ(db->Stats().in_use(), 0);
  // The same backend runs the next call, outside any transaction: it would
  // see the row had the transaction not been rolled back.
  EXPECT_EQ(Count(*db, "SELECT pg_backend_pid()::int8"), *pid);
  EXPECT_EQ(Count(*db, "SELECT count(*) FROM tx"), 0);
  EXPECT_EQ(db->Stats().opened_total(), 1);
}

TEST_F(PostgresDatabaseTest, PinnedCursorSeesItsTransactionAndKeepsThePin) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db_, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(
      pinned->Execute("INSERT INTO tx VALUES (1), (2)", {}, nullptr).ok());
  // Three runs: the second and third go out prepared, inside the
  // transaction.
  for (int run = 0; run < 3; ++run) {
    absl::StatusOr<int64_t> seen =
        PinnedInt(*pinned, "SELECT count(*) FROM tx");
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(*seen, 2);
  }
  EXPECT_TRUE(pinned->InTransaction());
  EXPECT_EQ(db_->Stats().in_use(), 1);
  // A cursor abandoned mid-result is drained; the transaction goes on.
  AbandonAfterOneRow(*pinned, "SELECT generate_series(1, 100000)");
  EXPECT_TRUE(pinned->InTransaction());
  EXPECT_FALSE(pinned->broken());

  // A failed statement leaves the transaction open but aborted.
  absl::StatusOr<ExecuteResult> bad =
      pinned->Execute("INSERT INTO tx VALUES ('x')", {}, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(pinned->InTransaction());
  absl::StatusOr<QueryOutput> aborted = RunQuery(*pinned, "SELECT 1");
  EXPECT_EQ(SqlStateOf(aborted.status()), "25P02") << aborted.status();
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  EXPECT_FALSE(pinned->InTransaction());
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 0);
}

TEST_F(PostgresDatabaseTest, PinnedTransactionOptionsAreApplied) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db_, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  TransactionOptions options;
  options.isolation = TransactionOptions::Isolation::kSerializable;
  options.read_only = true;
  options.deferrable = true;
  ASSERT_TRUE(pinned->Begin(options, nullptr).ok());
  EXPECT_EQ(PinnedText(*pinned, "SHOW transaction_isolation"), "serializable");
  EXPECT_EQ(PinnedText(*pinned, "SHOW transaction_read_only"), "on");
  EXPECT_EQ(PinnedText(*pinned, "SHOW transaction_deferrable"), "on");
  absl::StatusOr<ExecuteResult> write =
      pinned->Execute("INSERT INTO tx VALUES (1)", {}, nullptr);
  EXPECT_EQ(write.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlStateOf(write.status()), "25006");
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());

  for (const auto& [level, name] :
       std::vector<std::pair<TransactionOptions::Isolation, std::string>>{
           {TransactionOptions::Isolation::kReadUncommitted,
            "read uncommitted"},
           {TransactionOptions::Isolation::kReadCommitted, "read committed"},
           {TransactionOptions::Isolation::kRepeatableRead,
            "repeatable read"}}) {
    TransactionOptions isolation;
    isolation.isolation = level;
    ASSERT_TRUE(pinned->Begin(isolation, nullptr).ok());
    EXPECT_EQ(PinnedText(*pinned, "SHOW transaction_isolation"), name);
    EXPECT_EQ(PinnedText(*pinned, "SHOW transaction_read_only"), "off");
    ASSERT_TRUE(pinned->Execute("COMMIT", {}, nullptr).ok());
  }
}

TEST_F(PostgresDatabaseTest, TerminatedPinnedBackendIsUnavailableAndBroken) {
  Exec(*db_, "CREATE TABLE tx(id int)");
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db_, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  ASSERT_TRUE(pinned->Execute("INSERT INTO tx VALUES (1)", {}, nullptr).ok());
  absl::StatusOr<int64_t> pid =
      PinnedInt(*pinned, "SELECT pg_backend_pid()::int8");
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_EQ(Count(*db_, absl::StrCat("SELECT count(*) FROM (SELECT "
                                     "pg_terminate_backend(",
                                     *pid, ", 5000)) t")),
            1);
  absl::StatusOr<ExecuteResult> lost =
      pinned->Execute("INSERT INTO tx VALUES (2)", {}, nullptr);
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable)
      << lost.status();
  EXPECT_TRUE(pinned->broken());
  EXPECT_FALSE(pinned->InTransaction());
  const int open = db_->Stats().open();
  pinned.reset();
  EXPECT_EQ(db_->Stats().open(), open - 1);  // closed, not pooled
  EXPECT_EQ(db_->Stats().in_use(), 0);
  EXPECT_EQ(Count(*db_, "SELECT count(*) FROM tx"), 0);
}

TEST_F(PostgresDatabaseTest, CancelInterruptsAPinnedStatement) {
  std::unique_ptr<PinnedBackend> pinned = MustPin(*db_, Access::kWrite);
  ASSERT_NE(pinned, nullptr);
  ASSERT_TRUE(pinned->Begin({}, nullptr).ok());
  CancelSignal cancel;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(200));
    cancel.Cancel();
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<ExecuteResult> slept =
      pinned->Execute("SELECT pg_sleep(10)", {}, &cancel);
  canceller.join();
  EXPECT_EQ(slept.status().code(), absl::StatusCode::kCancelled)
      << slept.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
  EXPECT_FALSE(pinned->broken());
  // PostgreSQL aborts the transaction with the statement; it stays open
  // until ROLLBACK.
  EXPECT_TRUE(pinned->InTransaction());
  ASSERT_TRUE(pinned->Execute("ROLLBACK", {}, nullptr).ok());
  absl::StatusOr<int64_t> one = PinnedInt(*pinned, "SELECT 1::int8");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 1);
}

}  // namespace
}  // namespace connbroker::server
