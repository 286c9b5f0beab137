// Tests of LeadingKeyword: the first word of a statement past blanks,
// parentheses and each dialect's comments.
#include "server/drivers/sql_text.h"

#include "gtest/gtest.h"

namespace connbroker::server {
namespace {

constexpr SqlComments kMysql{.hash_lines = true, .dash_needs_blank = true};
constexpr SqlComments kPostgres{.nested_blocks = true};

TEST(LeadingKeywordTest, SkipsBlanksParenthesesAndComments) {
  EXPECT_EQ(LeadingKeyword("  (SELECT 1)", kPostgres), "SELECT");
  EXPECT_EQ(
      LeadingKeyword("-- note\n/* block */ with x AS (SELECT 1)", kPostgres),
      "with");
  EXPECT_EQ(LeadingKeyword("# note\nSHOW TABLES", kMysql), "SHOW");
  EXPECT_EQ(LeadingKeyword("/*!40101 SET x */ DELETE FROM t", kMysql),
            "DELETE");
}

TEST(LeadingKeywordTest, FollowsEachDialectsCommentRules) {
  // MySQL: "--" needs a blank after it; '#' is a comment.
  EXPECT_EQ(LeadingKeyword("--x\nSELECT", kMysql), "");
  EXPECT_EQ(LeadingKeyword("-- x\nSELECT", kMysql), "SELECT");
  EXPECT_EQ(LeadingKeyword("#x\nSELECT", kPostgres), "");
  // PostgreSQL's block comments nest; MySQL's end at the first "*/".
  EXPECT_EQ(LeadingKeyword("/* a /* b */ c */ UPDATE t", kPostgres), "UPDATE");
  EXPECT_EQ(LeadingKeyword("/* a /* b */ INSERT", kMysql), "INSERT");
}

TEST(LeadingKeywordTest, NoKeywordWhenACommentNeverEnds) {
  EXPECT_EQ(LeadingKeyword("-- only a comment", kPostgres), "");
  EXPECT_EQ(LeadingKeyword("/* open SELECT", kMysql), "");
  EXPECT_EQ(LeadingKeyword("/* /* */ SELECT", kPostgres), "");
  EXPECT_EQ(LeadingKeyword("", kMysql), "");
  EXPECT_EQ(LeadingKeyword("42", kMysql), "");
}

}  // namespace
}  // namespace connbroker::server
