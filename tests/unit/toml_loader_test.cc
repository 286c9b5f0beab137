// Tests of the TOML loader: flattening, and errors that name file:line:column.
#include "connbroker/config/toml_loader.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace connbroker::config {
namespace {

using ::connbroker::testing::TempDir;

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(ParseTomlTest, FlattensTablesIntoDottedKeys) {
  absl::StatusOr<Params> p = ParseToml(R"(
top = "t"
[connections.db]
url = "sqlite:///a.db"
[connections.db.create_engine_kwargs]
pool_size = 3
[connections.db.create_engine_kwargs.connect_args]
timeout = 2.5
)",
                                       "mem");
  ASSERT_TRUE(p.ok()) << p.status();
  const Params expected = {
      {"top", std::string("t")},
      {"connections.db.url", std::string("sqlite:///a.db")},
      {"connections.db.create_engine_kwargs.pool_size", int64_t{3}},
      {"connections.db.create_engine_kwargs.connect_args.timeout", 2.5},
  };
  EXPECT_EQ(*p, expected);
}

TEST(ParseTomlTest, ScalarsArraysInlineTablesAndDates) {
  absl::StatusOr<Params> p = ParseToml(R"(
b = true
i = -12
f = 0.25
s = 'lit'
arr = [10, 20, "x"]
inline = { a = 1, nested = { b = "c" } }
dotted.key = 5
odt = 1979-05-27T07:32:00Z
ld = 1979-05-27
lt = 07:32:00
)",
                                       "mem");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->at("b"), Value{true});
  EXPECT_EQ(p->at("i"), Value{int64_t{-12}});
  EXPECT_EQ(p->at("f"), Value{0.25});
  EXPECT_EQ(p->at("s"), Value{std::string("lit")});
  EXPECT_EQ(p->at("arr.0"), Value{int64_t{10}});
  EXPECT_EQ(p->at("arr.1"), Value{int64_t{20}});
  EXPECT_EQ(p->at("arr.2"), Value{std::string("x")});
  EXPECT_FALSE(p->contains("arr"));
  EXPECT_EQ(p->at("inline.a"), Value{int64_t{1}});
  EXPECT_EQ(p->at("inline.nested.b"), Value{std::string("c")});
  EXPECT_EQ(p->at("dotted.key"), Value{int64_t{5}});
  EXPECT_EQ(p->at("odt"), Value{std::string("1979-05-27T07:32:00Z")});
  EXPECT_EQ(p->at("ld"), Value{std::string("1979-05-27")});
  EXPECT_EQ(p->at("lt"), Value{std::string("07:32:00")});
  EXPECT_EQ(p->size(), 13u);
}

struct SyntaxCase {
  const char* text;
  int line;
  int column;
};

class SyntaxErrorTest : public ::testing::TestWithParam<SyntaxCase> {};

TEST_P(SyntaxErrorTest, NamesLineAndColumnWithoutTheLine) {
  TempDir dir;
  const std::string path = dir.Write("bad.toml", GetParam().text);
  absl::StatusOr<Params> p = LoadTomlFile(path);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string prefix = path + ":" + std::to_string(GetParam().line) +
                             ":" + std::to_string(GetParam().column) + ": ";
  EXPECT_THAT(std::string(p.status().message()), StartsWith(prefix));
  // The message is one line, and has none of the file's secrets.
  EXPECT_THAT(std::string(p.status().message()), Not(HasSubstr("\n")));
  EXPECT_THAT(std::string(p.status().message()), Not(HasSubstr("hunter2")));
  EXPECT_GT(p.status().message().size(), prefix.size());
}

INSTANTIATE_TEST_SUITE_P(
    Crafted, SyntaxErrorTest,
    ::testing::Values(
        // An unquoted password: the error points at its first character.
        SyntaxCase{"[connections.db]\nurl = \"x\"\npassword = hunter2pw\n", 3,
                   12},
        // Missing '=' where it belongs (column 9, after the key).
        SyntaxCase{"a = 1\npassword hunter2\n", 2, 9},
        // A key defined twice: the second definition.
        SyntaxCase{"password = 'hunter2'\npassword = 'hunter2b'\n", 2, 12},
        // Trailing text after a value.
        SyntaxCase{"x = 1\n  pw = 'hunter2' trailing\n", 2, 18},
        // Invalid UTF-8 in a string, found by tests/fuzz/secrets_fuzzer
        // (toml11 read out of bounds reporting it): the bad byte's place.
        SyntaxCase{"a = 1\npassword = 'hunter2\xff'\n", 2, 20},
        SyntaxCase{"pw = \"hunter2\xc3\"\n", 1, 14},
        // An overlong '/' and a UTF-16 surrogate are not UTF-8 either.
        SyntaxCase{"pw = '''hunter2\xc0\xaf'''\n", 1, 16},
        SyntaxCase{"# \xed\xa0\x80\npw = 'hunter2'\n", 1, 3}));

TEST(ParseTomlTest, KeepsUtf8Text) {
  absl::StatusOr<Params> p =
      ParseToml("s = \"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\"\n", "mem");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->at("s"),
            Value{std::string("h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80")});
}

// Deep nesting overflowed toml11's recursive parser (found by
// tests/fuzz/secrets_fuzzer); a bound refuses it with the place it starts.
TEST(ParseTomlTest, RefusesDeepNestingNamingWhere) {
  const std::string deep_array =
      "pw = 'hunter2'\na = " + std::string(20000, '[') + "\n";
  absl::StatusOr<Params> p = ParseToml(deep_array, "mem");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()),
              StartsWith("mem:2:105: arrays and tables nested more than 100"));

  std::string deep_inline = "a = ";
  for (int i = 0; i < 5000; ++i) deep_inline += "{b = ";
  p = ParseToml(deep_inline, "mem");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), StartsWith("mem:1:"));

  // Dotted keys nest tables without brackets.
  std::string dotted;
  for (int i = 0; i < 150; ++i) dotted += "a.";
  p = ParseToml(dotted + "a = 1\n", "mem");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()),
              HasSubstr("nested more than 100 levels"));
}

TEST(ParseTomlTest, BracketsInStringsAndCommentsAreNotNesting) {
  const std::string many(300, '[');
  const std::string text = "a = \"" + many + "\"\nb = '" + many +
                           "'\nc = \"\"\"" + many + "\n\\\"\"\"" + many +
                           "\"\"\"\nd = '''" + many + "''''\n# " + many +
                           "\ne = [[1], {f = [2]}]\n";
  absl::StatusOr<Params> p = ParseToml(text, "mem");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->at("a"), Value{many});
  EXPECT_EQ(p->at("d"), Value{many + "'"});
  EXPECT_EQ(p->at("e.1.f.0"), Value{int64_t{2}});

  // Nesting up to the bound is fine.
  p = ParseToml("a = " + std::string(99, '[') + std::string(99, ']') + "\n",
                "mem");
  EXPECT_TRUE(p.ok()) << p.status();
}

TEST(LoadTomlFileTest, MissingFileIsNotFoundNamingIt) {
  TempDir dir;
  const std::string path = dir.Path("absent.toml");
  absl::StatusOr<Params> p = LoadTomlFile(path);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr(path));
}

TEST(LoadTomlFileTest, ReadsAFile) {
  TempDir dir;
  const std::string path = dir.Write("ok.toml", "[a]\nb = \"c\"\n");
  absl::StatusOr<Params> p = LoadTomlFile(path);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, (Params{{"a.b", std::string("c")}}));
}

TEST(ParseTomlTest, SourceNameStandsInForThePath) {
  absl::StatusOr<Params> p = ParseToml("a = \n", "kwargs.toml");
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), StartsWith("kwargs.toml:1:"));
}

}  // namespace
}  // namespace connbroker::config
