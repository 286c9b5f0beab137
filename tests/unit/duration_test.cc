// Tests of ParseDuration: numbers as seconds, unit strings, rejections.
#include "connbroker/config/duration.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace connbroker::config {
namespace {

using ::testing::HasSubstr;

struct DurationCase {
  Value value;
  absl::Duration expected;
};

class ParseDurationOkTest : public ::testing::TestWithParam<DurationCase> {};

TEST_P(ParseDurationOkTest, Parses) {
  absl::StatusOr<absl::Duration> d = ParseDuration(GetParam().value, "ttl");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, GetParam().expected) << ValueToString(GetParam().value);
}

INSTANTIATE_TEST_SUITE_P(
    Forms, ParseDurationOkTest,
    ::testing::Values(
        DurationCase{int64_t{30}, absl::Seconds(30)},
        DurationCase{int64_t{0}, absl::ZeroDuration()},
        DurationCase{2.5, absl::Milliseconds(2500)},
        DurationCase{std::string("30"), absl::Seconds(30)},
        DurationCase{std::string("2.5"), absl::Milliseconds(2500)},
        DurationCase{std::string("10m"), absl::Minutes(10)},
        DurationCase{std::string("1h30m"), absl::Minutes(90)},
        DurationCase{std::string("2d"), absl::Hours(48)},
        DurationCase{std::string("500ms"), absl::Milliseconds(500)},
        DurationCase{std::string("1.5h"), absl::Minutes(90)},
        DurationCase{std::string("45s"), absl::Seconds(45)},
        DurationCase{std::string("1m30s"), absl::Seconds(90)},
        DurationCase{std::string(" 1h 5m "), absl::Minutes(65)}));

TEST(ParseDurationTest, NegativeNamesWhat) {
  for (const Value& v :
       {Value{int64_t{-1}}, Value{-0.5}, Value{std::string("-10m")},
        Value{std::string("-3")}}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(v, "pool_timeout");
    ASSERT_FALSE(d.ok()) << ValueToString(v);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(d.status().message(), HasSubstr("pool_timeout"));
    EXPECT_THAT(d.status().message(), HasSubstr("negative"));
  }
}

TEST(ParseDurationTest, RejectsGarbageAndOtherKinds) {
  for (const Value& v :
       {Value{std::string("")}, Value{std::string("ten minutes")},
        Value{std::string("10x")}, Value{std::string("1h30")},
        Value{std::string("m")}, Value{true}, Value{}, Value{Blob{"1"}}}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(v, "ttl");
    ASSERT_FALSE(d.ok()) << ValueToString(v);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(d.status().message(), HasSubstr("ttl"));
  }
}

}  // namespace
}  // namespace connbroker::config
