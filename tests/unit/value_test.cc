// Tests of Value helpers: text form, canonical encoding, secret keys.
#include "connbroker/config/value.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace connbroker::config {
namespace {

TEST(ValueToStringTest, EachKind) {
  EXPECT_EQ(ValueToString(Value{}), "null");
  EXPECT_EQ(ValueToString(Value{true}), "true");
  EXPECT_EQ(ValueToString(Value{false}), "false");
  EXPECT_EQ(ValueToString(Value{int64_t{42}}), "42");
  EXPECT_EQ(ValueToString(Value{int64_t{-7}}), "-7");
  EXPECT_EQ(ValueToString(Value{1.5}), "1.5");
  EXPECT_EQ(ValueToString(Value{0.1}), "0.1");
  EXPECT_EQ(ValueToString(Value{std::string("text as-is")}), "text as-is");
  EXPECT_EQ(ValueToString(Value{Blob{"\x01\x02\x03"}}), "<3 bytes>");
}

TEST(CanonicalParamsTest, IndependentOfInsertionOrder) {
  Params a;
  a["url"] = std::string("sqlite://");
  a["query.mode"] = std::string("ro");
  a["create_engine_kwargs.pool_size"] = int64_t{3};
  Params b;
  b["create_engine_kwargs.pool_size"] = int64_t{3};
  b["query.mode"] = std::string("ro");
  b["url"] = std::string("sqlite://");
  EXPECT_EQ(CanonicalParams(a), CanonicalParams(b));
}

TEST(CanonicalParamsTest, TypesAreTagged) {
  const std::string as_int = CanonicalParams({{"k", int64_t{1}}});
  const std::string as_double = CanonicalParams({{"k", 1.0}});
  const std::string as_text = CanonicalParams({{"k", std::string("1")}});
  const std::string as_bool = CanonicalParams({{"k", true}});
  const std::string as_blob = CanonicalParams({{"k", Blob{"1"}}});
  const std::string as_null = CanonicalParams({{"k", Value{}}});
  const std::string all[] = {as_int,  as_double, as_text,
                             as_bool, as_blob,   as_null};
  for (size_t i = 0; i < std::size(all); ++i) {
    for (size_t j = i + 1; j < std::size(all); ++j) {
      EXPECT_NE(all[i], all[j]) << i << " vs " << j;
    }
  }
}

TEST(CanonicalParamsTest, SeparatorsInsideTextCannotCollide) {
  // Crafted so that a naive "k=v;" join would give the same string.
  const Params one = {{"a", std::string("x;b=y")}};
  const Params two = {{"a", std::string("x")}, {"b", std::string("y")}};
  EXPECT_NE(CanonicalParams(one), CanonicalParams(two));
  const Params three = {{"a=b", std::string("c")}};
  const Params four = {{"a", std::string("b=c")}};
  EXPECT_NE(CanonicalParams(three), CanonicalParams(four));
  EXPECT_NE(CanonicalParams({}), CanonicalParams({{"", std::string()}}));
}

TEST(CanonicalParamsTest, AnyValueChangeChangesIt) {
  const Params base = {{"password", std::string("s3cret")},
                       {"port", int64_t{5432}}};
  Params changed = base;
  changed["password"] = std::string("s3cret2");
  EXPECT_NE(CanonicalParams(base), CanonicalParams(changed));
  changed = base;
  changed["port"] = int64_t{5433};
  EXPECT_NE(CanonicalParams(base), CanonicalParams(changed));
  EXPECT_EQ(CanonicalParams(base), CanonicalParams(Params(base)));
}

struct SecretKeyCase {
  const char* key;
  bool secret;
};

class IsSecretKeyTest : public ::testing::TestWithParam<SecretKeyCase> {};

TEST_P(IsSecretKeyTest, Classifies) {
  EXPECT_EQ(IsSecretKey(GetParam().key), GetParam().secret) << GetParam().key;
}

INSTANTIATE_TEST_SUITE_P(
    Keys, IsSecretKeyTest,
    ::testing::Values(
        SecretKeyCase{"password", true}, SecretKeyCase{"PASSWORD", true},
        SecretKeyCase{"passwd", true}, SecretKeyCase{"pwd", true},
        SecretKeyCase{"token", true}, SecretKeyCase{"secret", true},
        SecretKeyCase{"private_key", true},
        SecretKeyCase{"private_key_passphrase", true},
        SecretKeyCase{"api_key", true}, SecretKeyCase{"access_token", true},
        SecretKeyCase{"db_password", true},
        SecretKeyCase{"query.password", true},
        SecretKeyCase{"connect_args.Client_Secret", true},
        SecretKeyCase{"username", false}, SecretKeyCase{"host", false},
        SecretKeyCase{"port", false}, SecretKeyCase{"database", false},
        SecretKeyCase{"password.file_path", false},
        SecretKeyCase{"query.sslmode", false}, SecretKeyCase{"", false}));

}  // namespace
}  // namespace connbroker::config
