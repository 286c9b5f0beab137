// Unit tests of the C++ client without a daemon: decoding Query batches into
// a Result, Value conversion, status mapping, and the `connbroker` command's
// parsers and output writers.
#include "connbroker/result.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "absl/time/time.h"
#include "client/cli/format.h"
#include "connbroker/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace connbroker {
namespace {

using ::testing::HasSubstr;

v1::Schema MakeSchema(
    std::initializer_list<std::pair<const char*, v1::ValueKind>> columns) {
  v1::Schema schema;
  for (const auto& [name, kind] : columns) {
    v1::Column* c = schema.add_columns();
    c->set_name(name);
    c->set_kind(kind);
    c->set_database_type(kind == v1::VALUE_KIND_INT64 ? "INTEGER" : "");
    c->set_nullable(true);
  }
  return schema;
}

v1::ColumnVector Int64s(std::vector<int64_t> values,
                        std::vector<bool> nulls = {}) {
  v1::ColumnVector v;
  for (int64_t x : values) v.mutable_int64s()->add_values(x);
  for (bool n : nulls) v.add_nulls(n);
  return v;
}

v1::ColumnVector Texts(std::vector<std::string> values,
                       std::vector<bool> nulls = {}) {
  v1::ColumnVector v;
  for (const auto& x : values) v.mutable_texts()->add_values(x);
  for (bool n : nulls) v.add_nulls(n);
  return v;
}

v1::RowBatch Batch(int64_t rows, std::vector<v1::ColumnVector> columns) {
  v1::RowBatch batch;
  batch.set_row_count(rows);
  for (auto& c : columns) *batch.add_columns() = std::move(c);
  return batch;
}

// --------------------------------------------------------------------------
// Value conversion

TEST(ValueTest, RoundTripsEveryKind) {
  const std::vector<Value> values = {
      std::monostate{},  true,
      int64_t{-42},      2.5,
      std::string("hé"), Blob{std::string("\0\1", 2)}};
  for (const Value& v : values) {
    EXPECT_EQ(ValueFromProto(ValueToProto(v)), v) << v.index();
  }
  EXPECT_EQ(ValueToProto(std::monostate{}).kind_case(), v1::Value::kNullValue);
  EXPECT_EQ(ValueToProto(Blob{"x"}).kind_case(), v1::Value::kBlobValue);
  EXPECT_EQ(ValueToProto(std::string("x")).kind_case(), v1::Value::kTextValue);
}

TEST(ValueTest, UnsetProtoValueIsNull) {
  EXPECT_TRUE(
      std::holds_alternative<std::monostate>(ValueFromProto(v1::Value())));
}

// --------------------------------------------------------------------------
// Result decoding

TEST(ResultTest, DecodesTypedVectorsOfEveryKind) {
  Result result;
  result.SetSchema(MakeSchema({{"b", v1::VALUE_KIND_BOOL},
                               {"i", v1::VALUE_KIND_INT64},
                               {"d", v1::VALUE_KIND_DOUBLE},
                               {"t", v1::VALUE_KIND_TEXT},
                               {"x", v1::VALUE_KIND_BLOB}}));
  v1::ColumnVector b, d, x;
  b.mutable_bools()->add_values(true);
  b.mutable_bools()->add_values(false);
  d.mutable_doubles()->add_values(1.5);
  d.mutable_doubles()->add_values(-0.25);
  x.mutable_blobs()->add_values(std::string("\xff\0", 2));
  x.mutable_blobs()->add_values("");
  ASSERT_TRUE(
      result
          .AppendBatch(Batch(2, {b, Int64s({7, -8}), d, Texts({"a", "b"}), x}))
          .ok());
  ASSERT_EQ(result.num_rows(), 2u);
  ASSERT_EQ(result.num_columns(), 5u);
  EXPECT_EQ(result.column(1).name, "i");
  EXPECT_EQ(result.column(1).database_type, "INTEGER");
  EXPECT_EQ(result.column(1).kind, ValueKind::kInt64);
  EXPECT_EQ(result.cell(0, 0), Value(true));
  EXPECT_EQ(result.cell(1, 0), Value(false));
  EXPECT_EQ(result.cell(1, 1), Value(int64_t{-8}));
  EXPECT_EQ(result.cell(0, 2), Value(1.5));
  EXPECT_EQ(result.cell(1, 3), Value(std::string("b")));
  EXPECT_EQ(result.cell(0, 4), Value(Blob{std::string("\xff\0", 2)}));
  EXPECT_EQ(result.cell(1, 4), Value(Blob{""}));
  for (size_t c = 0; c < 5; ++c) EXPECT_FALSE(result.is_null(0, c));
}

TEST(ResultTest, NullMaskMarksRows) {
  Result result;
  result.SetSchema(MakeSchema({{"i", v1::VALUE_KIND_INT64}}));
  ASSERT_TRUE(
      result.AppendBatch(Batch(3, {Int64s({1, 0, 3}, {false, true, false})}))
          .ok());
  EXPECT_FALSE(result.is_null(0, 0));
  EXPECT_TRUE(result.is_null(1, 0));
  EXPECT_EQ(result.cell(1, 0), Value(std::monostate{}));
  EXPECT_EQ(result.cell(2, 0), Value(int64_t{3}));
}

TEST(ResultTest, UnsetVectorMeansAllNull) {
  Result result;
  result.SetSchema(
      MakeSchema({{"n", v1::VALUE_KIND_NULL}, {"i", v1::VALUE_KIND_INT64}}));
  ASSERT_TRUE(
      result.AppendBatch(Batch(2, {v1::ColumnVector(), Int64s({1, 2})})).ok());
  EXPECT_TRUE(result.is_null(0, 0));
  EXPECT_TRUE(result.is_null(1, 0));
  EXPECT_EQ(result.cell(1, 1), Value(int64_t{2}));
  EXPECT_EQ(result.column(0).kind, ValueKind::kNull);
}

TEST(ResultTest, MultipleBatchesAppendAndNullsCarryAcross) {
  Result result;
  result.SetSchema(
      MakeSchema({{"i", v1::VALUE_KIND_INT64}, {"t", v1::VALUE_KIND_TEXT}}));
  ASSERT_TRUE(
      result.AppendBatch(Batch(2, {Int64s({1, 2}), Texts({"a", "b"})})).ok());
  // An all-NULL batch of a typed column, then a batch with a mask.
  ASSERT_TRUE(
      result.AppendBatch(Batch(1, {v1::ColumnVector(), Texts({"c"})})).ok());
  ASSERT_TRUE(result
                  .AppendBatch(Batch(
                      2, {Int64s({4, 5}), Texts({"", "e"}, {true, false})}))
                  .ok());
  ASSERT_EQ(result.num_rows(), 5u);
  EXPECT_EQ(result.cell(1, 0), Value(int64_t{2}));
  EXPECT_TRUE(result.is_null(2, 0));
  EXPECT_EQ(result.cell(3, 0), Value(int64_t{4}));
  EXPECT_EQ(result.cell(2, 1), Value(std::string("c")));
  EXPECT_TRUE(result.is_null(3, 1));
  EXPECT_FALSE(result.is_null(0, 1));
  EXPECT_EQ(result.cell(4, 1), Value(std::string("e")));
}

TEST(ResultTest, LeadingNullBatchThenTypedBatch) {
  Result result;
  result.SetSchema(MakeSchema({{"x", v1::VALUE_KIND_NULL}}));
  ASSERT_TRUE(result.AppendBatch(Batch(2, {v1::ColumnVector()})).ok());
  ASSERT_TRUE(result.AppendBatch(Batch(1, {Texts({"late"})})).ok());
  EXPECT_TRUE(result.is_null(0, 0));
  EXPECT_TRUE(result.is_null(1, 0));
  EXPECT_EQ(result.cell(2, 0), Value(std::string("late")));
  EXPECT_EQ(result.column(0).kind, ValueKind::kText);
}

TEST(ResultTest, MixedVectorDecodesEachValue) {
  Result result;
  result.SetSchema(MakeSchema({{"m", v1::VALUE_KIND_MIXED}}));
  v1::ColumnVector m;
  *m.mutable_mixed()->add_values() = ValueToProto(int64_t{1});
  *m.mutable_mixed()->add_values() = ValueToProto(std::string("two"));
  *m.mutable_mixed()->add_values() = ValueToProto(std::monostate{});
  *m.mutable_mixed()->add_values() = ValueToProto(3.5);
  ASSERT_TRUE(result.AppendBatch(Batch(4, {m})).ok());
  EXPECT_EQ(result.cell(0, 0), Value(int64_t{1}));
  EXPECT_EQ(result.cell(1, 0), Value(std::string("two")));
  EXPECT_TRUE(result.is_null(2, 0));
  EXPECT_FALSE(result.is_null(3, 0));
  EXPECT_EQ(result.cell(3, 0), Value(3.5));
}

TEST(ResultTest, BatchesOfDifferentKindsWidenToMixed) {
  Result result;
  result.SetSchema(MakeSchema({{"c", v1::VALUE_KIND_INT64}}));
  ASSERT_TRUE(
      result.AppendBatch(Batch(2, {Int64s({1, 0}, {false, true})})).ok());
  ASSERT_TRUE(result.AppendBatch(Batch(1, {Texts({"x"})})).ok());
  EXPECT_EQ(result.column(0).kind, ValueKind::kMixed);
  EXPECT_EQ(result.cell(0, 0), Value(int64_t{1}));
  EXPECT_TRUE(result.is_null(1, 0));
  EXPECT_EQ(result.cell(2, 0), Value(std::string("x")));
}

TEST(ResultTest, RejectsMalformedBatchesAndKeepsRows) {
  Result result;
  result.SetSchema(
      MakeSchema({{"i", v1::VALUE_KIND_INT64}, {"t", v1::VALUE_KIND_TEXT}}));
  ASSERT_TRUE(result.AppendBatch(Batch(1, {Int64s({1}), Texts({"a"})})).ok());
  // Wrong column count.
  absl::Status s = result.AppendBatch(Batch(1, {Int64s({2})}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  // A vector shorter than row_count.
  s = result.AppendBatch(Batch(2, {Int64s({2}), Texts({"b", "c"})}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("column 0"));
  // A null mask of the wrong length.
  s = result.AppendBatch(Batch(1, {Int64s({2}, {true, false}), Texts({"b"})}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(result.num_rows(), 1u);
}

TEST(ResultTest, SummaryAndClearRows) {
  Result result;
  result.SetSchema(MakeSchema({{"i", v1::VALUE_KIND_INT64}}));
  ASSERT_TRUE(result.AppendBatch(Batch(2, {Int64s({1, 2})})).ok());
  v1::QuerySummary summary;
  summary.set_row_count(2);
  summary.set_from_cache(true);
  summary.set_backend_executions(0);
  summary.set_elapsed_micros(1234);
  summary.set_handle("h1");
  result.SetSummary(summary);
  EXPECT_TRUE(result.from_cache());
  EXPECT_EQ(result.elapsed_micros(), 1234);
  EXPECT_EQ(result.handle(), "h1");
  result.ClearRows();
  EXPECT_EQ(result.num_rows(), 0u);
  EXPECT_EQ(result.num_columns(), 1u);
  ASSERT_TRUE(result.AppendBatch(Batch(1, {Int64s({9})})).ok());
  EXPECT_EQ(result.cell(0, 0), Value(int64_t{9}));
}

TEST(ResultTest, EmptyBatchWithoutColumnsIsAccepted) {
  Result result;
  result.SetSchema(MakeSchema({{"i", v1::VALUE_KIND_INT64}}));
  EXPECT_TRUE(result.AppendBatch(Batch(0, {})).ok());
  EXPECT_EQ(result.num_rows(), 0u);
}

// --------------------------------------------------------------------------
// Client pieces that need no daemon

TEST(ClientTest, GrpcStatusMapsCodeAndMessage) {
  absl::Status s =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such");
  EXPECT_EQ(
      FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full"))
          .code(),
      absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(ClientTest, DefaultTargetFollowsEnvironment) {
  setenv("CONNBROKER_TARGET", "unix:/x/y.sock", 1);
  EXPECT_EQ(DefaultTarget(), "unix:/x/y.sock");
  unsetenv("CONNBROKER_TARGET");
  setenv("XDG_RUNTIME_DIR", "/run/user/7", 1);
  EXPECT_EQ(DefaultTarget(), "unix:/run/user/7/connbroker.sock");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(DefaultTarget(), "unix:/tmp/connbroker-" +
                                 std::to_string(getuid()) + "/connbroker.sock");
}

TEST(ClientTest, UnreachableDaemonIsUnavailableAndNamesTarget) {
  ClientOptions options;
  options.target = "unix:/nonexistent/connbroker-test.sock";
  options.default_deadline = absl::Seconds(5);
  options.session_id = "s1";
  auto client = Client::Create(options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->session_id(), "s1");
  absl::StatusOr<Connection> conn =
      (*client)->Connect(ConnectOptions{"x", "sql", {}, {}, {}});
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(conn.status().message(),
              HasSubstr("connbroker daemon at "
                        "unix:/nonexistent/connbroker-test.sock is not "
                        "reachable: "));
  EXPECT_EQ((*client)->WaitForReady(absl::Milliseconds(50)).code(),
            absl::StatusCode::kUnavailable);
}

TEST(ClientTest, RandomSessionIdsDiffer) {
  ClientOptions options;
  options.target = "unix:/nonexistent/a.sock";
  auto a = Client::Create(options);
  auto b = Client::Create(options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE((*a)->session_id().empty());
  EXPECT_NE((*a)->session_id(), (*b)->session_id());
  options.default_deadline = absl::ZeroDuration();
  EXPECT_FALSE(Client::Create(options).ok());
}

}  // namespace

// --------------------------------------------------------------------------
// The command's parsers and writers

namespace cli {
namespace {

TEST(CliValueTest, ParsesEachKind) {
  EXPECT_EQ(ParseCliValue("42"), Value(int64_t{42}));
  EXPECT_EQ(ParseCliValue("-7"), Value(int64_t{-7}));
  EXPECT_EQ(ParseCliValue("4.5"), Value(4.5));
  EXPECT_EQ(ParseCliValue("-.5"), Value(-0.5));
  EXPECT_EQ(ParseCliValue("1e3"), Value(1000.0));
  EXPECT_EQ(ParseCliValue("true"), Value(true));
  EXPECT_EQ(ParseCliValue("false"), Value(false));
  EXPECT_EQ(ParseCliValue("null"), Value(std::monostate{}));
  EXPECT_EQ(ParseCliValue("hello"), Value(std::string("hello")));
  EXPECT_EQ(ParseCliValue(""), Value(std::string("")));
}

TEST(CliValueTest, TextPrefixAndLookalikesStayText) {
  EXPECT_EQ(ParseCliValue("text:42"), Value(std::string("42")));
  EXPECT_EQ(ParseCliValue("text:null"), Value(std::string("null")));
  EXPECT_EQ(ParseCliValue("nan"), Value(std::string("nan")));
  EXPECT_EQ(ParseCliValue("inf"), Value(std::string("inf")));
  EXPECT_EQ(ParseCliValue("0x10"), Value(std::string("0x10")));
  EXPECT_EQ(ParseCliValue("1.2.3"), Value(std::string("1.2.3")));
  EXPECT_EQ(ParseCliValue("True"), Value(std::string("True")));
  EXPECT_EQ(ParseCliValue("99999999999999999999"),
            Value(std::string("99999999999999999999")));
}

TEST(CliValueTest, KeyValueSplitsAtFirstEquals) {
  auto kv = ParseKeyValue("query.mode=ro=1");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->first, "query.mode");
  EXPECT_EQ(kv->second, Value(std::string("ro=1")));
  kv = ParseKeyValue("port=5432");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->second, Value(int64_t{5432}));
  kv = ParseKeyValue("k=text:5");
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->second, Value(std::string("5")));
  EXPECT_FALSE(ParseKeyValue("novalue").ok());
  EXPECT_FALSE(ParseKeyValue("=5").ok());
}

TEST(CliDurationTest, ParsesForms) {
  EXPECT_EQ(*ParseDuration("30"), absl::Seconds(30));
  EXPECT_EQ(*ParseDuration("2.5"), absl::Milliseconds(2500));
  EXPECT_EQ(*ParseDuration("10m"), absl::Minutes(10));
  EXPECT_EQ(*ParseDuration("1h30m"), absl::Minutes(90));
  EXPECT_EQ(*ParseDuration("2.5s"), absl::Milliseconds(2500));
  EXPECT_EQ(*ParseDuration("500ms"), absl::Milliseconds(500));
  EXPECT_EQ(*ParseDuration("1d"), absl::Hours(24));
  EXPECT_EQ(*ParseDuration("0"), absl::ZeroDuration());
}

TEST(CliDurationTest, RejectsGarbage) {
  for (const char* bad :
       {"", "-5", "10x", "m", "1h30", "abc", "1..5s", "5 s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
}

TEST(CliFormatTest, ParseFormat) {
  EXPECT_EQ(*ParseFormat("csv"), Format::kCsv);
  EXPECT_EQ(*ParseFormat("json"), Format::kJson);
  EXPECT_EQ(*ParseFormat("table"), Format::kTable);
  EXPECT_FALSE(ParseFormat("xml").ok());
}

TEST(CliFormatTest, CsvQuoting) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(CsvField("cr\r"), "\"cr\r\"");
  EXPECT_EQ(CsvField(" padded"), "\" padded\"");
  EXPECT_EQ(CsvField(""), "");
}

TEST(CliFormatTest, JsonEscaping) {
  EXPECT_EQ(JsonString("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonString("\n\t\r\b\f"), R"("\n\t\r\b\f")");
  EXPECT_EQ(JsonString(std::string("\x01\x1f", 2)), R"("\u0001\u001f")");
  EXPECT_EQ(JsonString(std::string("a\0b", 3)), R"("a\u0000b")");
  // UTF-8 passes through untouched: 2, 3 and 4 byte sequences.
  EXPECT_EQ(JsonString("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  // Invalid bytes (a lone continuation, a truncated sequence, an overlong
  // form, a surrogate) become U+FFFD escapes, so the output stays JSON.
  EXPECT_EQ(JsonString("\x80"), R"("\ufffd")");
  EXPECT_EQ(JsonString("a\xc3"), R"("a\ufffd")");
  EXPECT_EQ(JsonString("\xc0\xaf"), R"("\ufffd\ufffd")");
  EXPECT_EQ(JsonString("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");
}

TEST(CliFormatTest, DoublesRoundTrip) {
  EXPECT_EQ(FormatDouble(0.1), "0.1");
  EXPECT_EQ(FormatDouble(1.5), "1.5");
  EXPECT_EQ(FormatDouble(-2), "-2");
  const double third = 1.0 / 3.0;
  EXPECT_EQ(std::strtod(FormatDouble(third).c_str(), nullptr), third);
  const double tiny = 5e-324;
  EXPECT_EQ(std::strtod(FormatDouble(tiny).c_str(), nullptr), tiny);
  EXPECT_EQ(JsonValue(std::numeric_limits<double>::quiet_NaN()), "\"NaN\"");
  EXPECT_EQ(JsonValue(-std::numeric_limits<double>::infinity()),
            "\"-Infinity\"");
}

TEST(CliFormatTest, JsonValues) {
  EXPECT_EQ(JsonValue(std::monostate{}), "null");
  EXPECT_EQ(JsonValue(true), "true");
  EXPECT_EQ(JsonValue(int64_t{-9007199254740993}), "-9007199254740993");
  EXPECT_EQ(JsonValue(Blob{"\x01\x02\x03"}), "\"AQID\"");
  EXPECT_EQ(JsonValue(std::string("x")), "\"x\"");
  EXPECT_EQ(PlainValue(Blob{"\x01\xab"}), "\\x01ab");
}

// A two-batch result: (id INTEGER, name TEXT) with a NULL name.
std::vector<Result> TwoBatches() {
  Result schema_only;
  v1::Schema schema =
      MakeSchema({{"id", v1::VALUE_KIND_INT64}, {"name", v1::VALUE_KIND_TEXT}});
  schema_only.SetSchema(schema);
  Result first = schema_only;
  EXPECT_TRUE(first
                  .AppendBatch(Batch(
                      2, {Int64s({1, 22}), Texts({"a,b", ""}, {false, true})}))
                  .ok());
  Result second = schema_only;
  EXPECT_TRUE(second.AppendBatch(Batch(1, {Int64s({333}), Texts({""})})).ok());
  return {schema_only, first, second};
}

std::string Render(Format format, const QuerySummary& summary,
                   size_t buffer_rows = 1000) {
  std::ostringstream out;
  auto writer = MakeResultWriter(format, out, buffer_rows);
  for (const Result& batch : TwoBatches()) writer->OnBatch(batch);
  writer->Finish(summary);
  return out.str();
}

TEST(CliWriterTest, Csv) {
  EXPECT_EQ(Render(Format::kCsv, {}),
            "id,name\n"
            "1,\"a,b\"\n"
            "22,\n"
            "333,\"\"\n");
}

TEST(CliWriterTest, Json) {
  QuerySummary summary;
  summary.row_count = 3;
  summary.from_cache = true;
  summary.elapsed_micros = 10;
  summary.handle = "h-1";
  EXPECT_EQ(Render(Format::kJson, summary),
            "{\"columns\":[{\"name\":\"id\",\"type\":\"INTEGER\",\"kind\":"
            "\"int64\"},{\"name\":\"name\",\"type\":\"\",\"kind\":\"text\"}],"
            "\"rows\":[\n[1,\"a,b\"],\n[22,null],\n[333,\"\"]\n],"
            "\"row_count\":3,\"from_cache\":true,\"backend_executions\":0,"
            "\"elapsed_micros\":10,\"handle\":\"h-1\"}\n");
}

TEST(CliWriterTest, TableAlignsAndSummarises) {
  QuerySummary summary;
  summary.elapsed_micros = 3200;
  EXPECT_EQ(Render(Format::kTable, summary),
            " id | name\n"
            "----+-----\n"
            "  1 | a,b\n"
            " 22 | NULL\n"
            "333 | \n"
            "(3 rows, 3.2 ms)\n");
  summary.from_cache = true;
  EXPECT_THAT(Render(Format::kTable, summary),
              HasSubstr("(3 rows, from cache)\n"));
}

TEST(CliWriterTest, TableStreamsPastItsBuffer) {
  // With a one-row buffer the widths come from the first row; later rows
  // are printed as they come.
  const std::string out = Render(Format::kTable, {}, 1);
  EXPECT_EQ(out,
            "id | name\n"
            "---+-----\n"
            " 1 | a,b\n"
            "22 | NULL\n"
            "333 | \n"
            "(3 rows, 0.0 ms)\n");
}

TEST(CliWriterTest, EmptyResultStillHasHeader) {
  Result schema_only;
  schema_only.SetSchema(MakeSchema({{"id", v1::VALUE_KIND_INT64}}));
  std::ostringstream csv, json, table;
  for (auto [format, out] :
       {std::pair{Format::kCsv, &csv}, std::pair{Format::kJson, &json},
        std::pair{Format::kTable, &table}}) {
    auto writer = MakeResultWriter(format, *out);
    writer->OnBatch(schema_only);
    writer->Finish({});
  }
  EXPECT_EQ(csv.str(), "id\n");
  EXPECT_THAT(json.str(), HasSubstr("\"rows\":[],\"row_count\":0"));
  EXPECT_EQ(table.str(), "id\n--\n(0 rows, 0.0 ms)\n");
}

TEST(CliWriterTest, TableEscapesControlCharacters) {
  Result batch;
  batch.SetSchema(MakeSchema({{"t", v1::VALUE_KIND_TEXT}}));
  ASSERT_TRUE(batch.AppendBatch(Batch(1, {Texts({"a\nb"})})).ok());
  std::ostringstream out;
  auto writer = MakeResultWriter(Format::kTable, out);
  writer->OnBatch(batch);
  writer->Finish({});
  EXPECT_THAT(out.str(), HasSubstr("a\\nb\n"));
}

TEST(CliWriterTest, StatsJsonHasEveryFieldAsPlainNumbers) {
  v1::GetStatsResponse stats;
  stats.set_connections_live(1);
  stats.set_backend_executions(3);
  const std::string json = ProtoToJson(stats);
  EXPECT_THAT(json, HasSubstr("\"connections_live\":1,"));
  EXPECT_THAT(json, HasSubstr("\"backend_executions\":3,"));
  EXPECT_THAT(json, HasSubstr("\"uptime_seconds\":0"));
  EXPECT_EQ(json.front(), '{');
  EXPECT_EQ(json.back(), '}');
  std::ostringstream table;
  WriteStats(Format::kTable, stats, table);
  EXPECT_THAT(table.str(),
              ::testing::ContainsRegex("\nbackend_executions +\\| 3\n"));
}

TEST(CliWriterTest, ConnectionsJsonNestsAndShowsUnsetOptionalAsNull) {
  v1::ListConnectionsResponse list;
  v1::ConnectionInfo* info = list.add_connections();
  info->set_handle("h1");
  info->set_name("db");
  info->set_live(true);
  info->set_ttl_seconds(600);
  info->mutable_pool()->set_max_size(5);
  const std::string json = ProtoToJson(list);
  EXPECT_THAT(json, HasSubstr("{\"connections\":[{\"handle\":\"h1\",\"name\":"
                              "\"db\""));
  EXPECT_THAT(json, HasSubstr("\"live\":true"));
  EXPECT_THAT(json, HasSubstr("\"max_entries\":null"));
  EXPECT_THAT(json, HasSubstr("\"ttl_seconds\":600"));
  EXPECT_THAT(json,
              HasSubstr("\"pool\":{\"open\":0,\"in_use\":0,\"max_size\":5"));
  std::ostringstream table;
  WriteConnections(Format::kTable, list, table);
  EXPECT_THAT(table.str(), HasSubstr("(1 connection)"));
  EXPECT_THAT(table.str(), HasSubstr("0/0/5"));
}

TEST(CliWriterTest, ExecuteOutputs) {
  ExecuteResult result{2, 7, "h"};
  std::ostringstream table, json;
  WriteExecute(Format::kTable, result, table);
  WriteExecute(Format::kJson, result, json);
  EXPECT_EQ(table.str(), "(2 rows affected, last insert id 7)\n");
  EXPECT_EQ(json.str(),
            "{\"rows_affected\":2,\"last_insert_id\":7,\"handle\":\"h\"}\n");
}

}  // namespace
}  // namespace cli
}  // namespace connbroker
