// Fuzzes kwargs canonicalisation: request kwargs (dotted keys, every value
// kind) are resolved against configured SQLite and PostgreSQL sections and
// as ad-hoc connections (allowed, inside a scratch directory), and
// ConnectionSpec::CanonicalKey -- the connection cache's key -- is checked:
//  - resolving is deterministic: the same kwargs, inserted in another order,
//    give the same outcome and the same key;
//  - the key is "equal for equal (name, type, params)", and injective: two
//    specs with equal keys have equal name, type, scope and params, and so
//    (same settings) the same target, pool and description. A key that
//    dropped something would hand one client's connection to another.
#include <fuzzer/FuzzedDataProvider.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "connbroker/config/broker_settings.h"
#include "connbroker/config/secrets.h"
#include "connbroker/config/spec.h"
#include "connbroker/config/value.h"
#include "tests/fuzz/fuzz_util.h"

namespace connbroker::fuzz {
namespace {

using config::Blob;
using config::ConnectionSpec;
using config::Params;
using config::Value;
using Entries = std::vector<std::pair<std::string, Value>>;

constexpr const char* kKeys[] = {
    "url",
    "dialect",
    "driver",
    "host",
    "port",
    "database",
    "username",
    "password",
    "query",
    "query.sslmode",
    "query.host",
    "query.unix_socket",
    "query.charset",
    "query.password",
    "query.hostaddr",
    "type",
    "scope",
    "allow_attach",
    "allow_client_kwargs.0",
    "create_engine_kwargs.pool_size",
    "create_engine_kwargs.max_overflow",
    "create_engine_kwargs.pool_timeout",
    "create_engine_kwargs.pool_recycle",
    "create_engine_kwargs.pool_pre_ping",
    "create_engine_kwargs.connect_args.timeout",
    "create_engine_kwargs.connect_args.connect_timeout",
    "create_engine_kwargs.min_idle",
    "create_engine_kwargs.idle_timeout",
    "create_engine_kwargs.max_waiting",
    "create_engine_kwargs.echo",
};

std::vector<std::string> Texts() {
  const std::string dir = ScratchDir();
  return {"sqlite",
          "postgresql",
          "postgres",
          "mysql+pymysql",
          "sql",
          "global",
          "session",
          "sqlite://",
          "sqlite:///:memory:",
          "sqlite:///local.db",
          "sqlite:///" + dir + "/a.db",
          "sqlite:///" + dir + "/../escape.db",
          dir + "/b.db",
          dir + "/sub/../c.db",
          "file:" + dir + "/d.db",
          "local.db",
          "postgresql://u:pw@db.internal:5432/app",
          "postgresql+psycopg2://app@/app?host=/run/postgresql",
          "mysql://u:pw@[::1]:3306/app?charset=utf8mb4",
          "db.internal",
          "DB.Internal",
          "::1",
          "[::1]",
          "/run/postgresql",
          "app",
          "require",
          "5",
          "5.0",
          "-1",
          "10m",
          "1h30m",
          "500ms",
          ""};
}

Value ConsumeValue(FuzzedDataProvider& in,
                   const std::vector<std::string>& texts) {
  switch (in.ConsumeIntegralInRange(0, 7)) {
    case 0:
      return std::monostate{};
    case 1:
      return in.ConsumeBool();
    case 2:
      return in.ConsumeIntegralInRange<int64_t>(-2, 70000);
    case 3:
      return in.ConsumeIntegral<int64_t>();
    case 4: {
      // Any bit pattern: NaNs, infinities, -0.0 and subnormals included.
      const uint64_t bits = in.ConsumeIntegral<uint64_t>();
      return in.ConsumeBool() ? std::bit_cast<double>(bits)
                              : static_cast<double>(bits % 70000) / 4;
    }
    case 5:
      return texts[in.ConsumeIntegralInRange<size_t>(0, texts.size() - 1)];
    case 6:
      return in.ConsumeRandomLengthString(64);
    default:
      return Blob{in.ConsumeRandomLengthString(16)};
  }
}

std::string ConsumeKey(FuzzedDataProvider& in) {
  if (in.ConsumeIntegralInRange(0, 7) == 0) {
    return in.ConsumeRandomLengthString(32);
  }
  return kKeys[in.ConsumeIntegralInRange<size_t>(0, std::size(kKeys) - 1)];
}

// First occurrence of a key wins, so the entries are a set and any order of
// inserting them gives the same Params.
Entries ConsumeEntries(FuzzedDataProvider& in,
                       const std::vector<std::string>& texts) {
  Entries entries;
  const int count = in.ConsumeIntegralInRange(0, 10);
  for (int i = 0; i < count; ++i) {
    std::string key = ConsumeKey(in);
    Value value = ConsumeValue(in, texts);
    bool seen = false;
    for (const auto& entry : entries) seen = seen || entry.first == key;
    if (!seen) entries.emplace_back(std::move(key), std::move(value));
  }
  return entries;
}

Params ToParams(const Entries& entries, bool reversed) {
  Params params;
  if (reversed) {
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      params.insert(*it);
    }
  } else {
    for (const auto& entry : entries) params.insert(entry);
  }
  return params;
}

// Value equality as a cache key must see it: every NaN is the same value
// (it is one "nan" to the encoding), while 0.0 and -0.0 are two.
bool SameValue(const Value& a, const Value& b) {
  const auto* x = std::get_if<double>(&a);
  const auto* y = std::get_if<double>(&b);
  if (x != nullptr && y != nullptr) {
    if (std::isnan(*x) || std::isnan(*y))
      return std::isnan(*x) && std::isnan(*y);
    return std::bit_cast<uint64_t>(*x) == std::bit_cast<uint64_t>(*y);
  }
  return a == b;
}

bool SameParams(const Params& a, const Params& b) {
  if (a.size() != b.size()) return false;
  for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j) {
    if (i->first != j->first || !SameValue(i->second, j->second)) return false;
  }
  return true;
}

bool SameInputs(const ConnectionSpec& a, const ConnectionSpec& b) {
  return a.name == b.name && a.type == b.type && a.scope == b.scope &&
         SameParams(a.params, b.params);
}

[[noreturn]] void Fail(const char* what, const ConnectionSpec& a,
                       const ConnectionSpec& b) {
  std::fprintf(stderr, "kwargs_fuzzer: %s\n  a: %s %s [%s]\n  b: %s %s [%s]\n",
               what, a.name.c_str(), a.type.c_str(), a.description.c_str(),
               b.name.c_str(), b.type.c_str(), b.description.c_str());
  std::abort();
}

[[noreturn]] void Fail(const char* what, const absl::Status& a,
                       const absl::Status& b) {
  std::fprintf(stderr, "kwargs_fuzzer: %s\n  a: %s\n  b: %s\n", what,
               a.ToString().c_str(), b.ToString().c_str());
  std::abort();
}

void CheckPair(const absl::StatusOr<ConnectionSpec>& a,
               const absl::StatusOr<ConnectionSpec>& b) {
  if (!a.ok() || !b.ok()) return;
  const bool same_key = a->CanonicalKey() == b->CanonicalKey();
  const bool same_inputs = SameInputs(*a, *b);
  if (same_inputs && !same_key) Fail("equal specs, different keys", *a, *b);
  if (same_key && !same_inputs) Fail("different specs, equal keys", *a, *b);
  if (same_key && (!(a->sql == b->sql) || !(a->pool == b->pool) ||
                   a->description != b->description)) {
    Fail("equal keys, different targets or pools", *a, *b);
  }
}

// Another set of kwargs close to `entries`, so that equal keys are likely:
// one entry dropped, a value respelled as another kind (5, 5.0, "5"), or a
// key that ResolveSpec removes (type, scope) added.
Entries Mutate(FuzzedDataProvider& in, Entries entries,
               const std::vector<std::string>& texts) {
  const size_t pick = entries.empty() ? 0
                                      : in.ConsumeIntegralInRange<size_t>(
                                            0, entries.size() - 1);
  switch (in.ConsumeIntegralInRange(0, 4)) {
    case 0:
      if (!entries.empty()) entries.erase(entries.begin() + pick);
      break;
    case 1:
      if (!entries.empty()) {
        Value& v = entries[pick].second;
        if (const auto* i = std::get_if<int64_t>(&v)) {
          v = static_cast<double>(*i);
        } else if (const auto* d = std::get_if<double>(&v)) {
          v = config::ValueToString(*d);
        } else if (const auto* s = std::get_if<std::string>(&v)) {
          v = Blob{*s};
        }
      }
      break;
    case 2:
      entries.emplace(entries.begin(), "type", std::string("sql"));
      break;
    case 3:
      entries.emplace(entries.begin(), "scope", std::string("global"));
      break;
    default:
      entries.emplace_back(ConsumeKey(in), ConsumeValue(in, texts));
      break;
  }
  // Keep the first of duplicate keys, as ConsumeEntries does.
  Entries unique;
  for (auto& entry : entries) {
    bool seen = false;
    for (const auto& u : unique) seen = seen || u.first == entry.first;
    if (!seen) unique.push_back(std::move(entry));
  }
  return unique;
}

struct World {
  config::Secrets secrets;
  config::BrokerSettings settings;
  config::EnvLookup env;
  std::vector<std::string> texts;
};

const World& TheWorld() {
  static const World* world = [] {
    auto* w = new World;
    w->secrets = config::Secrets::FromSections({
        {"local",
         {{"type", std::string("sql")},
          {"url", std::string("sqlite:///local.db")}}},
        {"parts",
         {{"type", std::string("sql")},
          {"dialect", std::string("sqlite")},
          {"database", std::string("parts.db")},
          {"scope", std::string("session")},
          {"create_engine_kwargs.pool_size", int64_t{2}}}},
        {"shared",
         {{"type", std::string("sql")},
          {"url", std::string("sqlite:///shared.db")},
          {"allow_client_kwargs.0", std::string("database")},
          {"allow_client_kwargs.1", std::string("query")}}},
        {"warehouse",
         {{"type", std::string("sql")},
          {"url", std::string("postgresql://analyst:pw@db.internal:5432/wh")}}},
    });
    w->settings.allow_ad_hoc = true;
    w->settings.ad_hoc_sqlite_dirs = {ScratchDir()};
    w->settings.ad_hoc_hosts = {"db.internal", "[::1]:3306", "/run/postgresql"};
    w->env = [](const std::string& var) -> std::optional<std::string> {
      if (var == "CB_NAME") return "local";
      return std::nullopt;
    };
    w->texts = Texts();
    return w;
  }();
  return *world;
}

}  // namespace
}  // namespace connbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace connbroker;
  using namespace connbroker::fuzz;
  const World& world = TheWorld();
  FuzzedDataProvider in(data, size);

  static constexpr const char* kNames[] = {
      "local", "parts", "shared", "warehouse", "sql", "adhoc", "env:CB_NAME"};
  static constexpr const char* kTypes[] = {
      "", "sql", "streamlit.connections.SQLConnection", "snowflake"};
  config::ConnectArgs args;
  args.name =
      in.ConsumeBool()
          ? kNames[in.ConsumeIntegralInRange<size_t>(0, std::size(kNames) - 1)]
          : in.ConsumeRandomLengthString(16);
  args.type =
      kTypes[in.ConsumeIntegralInRange<size_t>(0, std::size(kTypes) - 1)];
  const Entries entries = ConsumeEntries(in, world.texts);
  const Entries other = Mutate(in, entries, world.texts);

  auto resolve = [&](const Params& kwargs) {
    config::ConnectArgs a = args;
    a.kwargs = kwargs;
    return config::ResolveSpec(a, world.secrets, world.env, world.settings);
  };
  const absl::StatusOr<ConnectionSpec> forward =
      resolve(ToParams(entries, false));
  const absl::StatusOr<ConnectionSpec> backward =
      resolve(ToParams(entries, true));
  if (forward.ok() != backward.ok() ||
      (!forward.ok() && forward.status() != backward.status())) {
    Fail("insertion order changed the outcome", forward.status(),
         backward.status());
  }
  if (forward.ok()) {
    if (forward->CanonicalKey() != backward->CanonicalKey()) {
      Fail("insertion order changed the key", *forward, *backward);
    }
    if (forward->CanonicalKey() != forward->CanonicalKey()) {
      Fail("CanonicalKey is not deterministic", *forward, *forward);
    }
  }
  CheckPair(forward, resolve(ToParams(other, in.ConsumeBool())));
  return 0;
}
