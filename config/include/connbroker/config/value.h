// Value and Params: the typed scalars configuration and kwargs are made of.
//
// A secrets section, a request's kwargs and a broker.toml table all flatten to
// Params: an ordered map from a dotted key ("query.mode",
// "create_engine_kwargs.pool_size") to a scalar. Flattening makes merging "key
// by key" exact at every depth, and the ordered map makes the canonical form
// (used in cache keys) independent of the order keys were written in.
#ifndef CONNBROKER_CONFIG_VALUE_H_
#define CONNBROKER_CONFIG_VALUE_H_

#include <cstdint>
#include <map>
#include <string>
#include <variant>

namespace connbroker::config {

// Raw bytes, kept apart from text so a blob never compares equal to a string.
struct Blob {
  std::string bytes;
  friend bool operator==(const Blob&, const Blob&) = default;
};

// null, bool, int64, double, text, blob: the wire's Value, without protobuf.
using Value =
    std::variant<std::monostate, bool, int64_t, double, std::string, Blob>;

// Dotted key -> value, sorted by key.
using Params = std::map<std::string, Value>;

// Human form for messages and descriptions: null, true, 42, 1.5, text as-is,
// blobs as <N bytes>.
std::string ValueToString(const Value& value);

// An unambiguous, deterministic encoding of `params` (type-tagged, escaped)
// for cache keys: equal iff the params are equal.
std::string CanonicalParams(const Params& params);

// Keys whose values are secrets: never logged, listed or returned.
// (password, token, private_key, secret, *_password, ... by suffix.)
bool IsSecretKey(const std::string& dotted_key);

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_VALUE_H_
