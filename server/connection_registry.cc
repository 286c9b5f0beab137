// ConnectionRegistry: the connection cache behind Connect -- one map of
// entries per CacheSettings, handles that survive eviction, TTL from creation,
// LRU eviction under max_entries, and one build per key however many callers
// race for it.
//
// Choices the header leaves open, made here:
//  - Expiry is checked lazily in the cache a Connect or Get touches (not in
//    every cache: that would make every query pay for every cache);
//    EvictExpired() sweeps all caches. Read paths (List, LiveConnections,
//    Stats) cannot evict, so they report an expired, not yet swept entry as
//    not live.
//  - LRU is a per-registry use counter stamped on each entry; eviction scans
//    the cache for the smallest stamp. Eviction happens only when max_entries
//    is set, so the scan is O(max_entries), and connection caches are small.
//  - When a build fails, the callers that were waiting for that build get its
//    error too (they asked the same question at the same moment), rather than
//    each retrying a backend that just refused. The next Connect retries.
//  - A handle is issued only when its first build succeeds, so a spec that
//    never connected leaves no handle behind. Handles pin the spec they were
//    issued with; a rebuild uses that spec.
//  - The clock is read once per lookup, under the lock, before a caller may
//    wait for another's build. Tests count clock reads to know that every
//    racing caller is inside the registry.
//
// Locking: one mutex, `mu`, guards everything reached from Impl (caches,
// their entries, builds and handle rows). The factory runs without it, and
// Connections are released only after it is unlocked: a Connection's last
// reference destroys its Database, which closes backends.
#include "server/connection_registry.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace connbroker::server {
namespace {

// Connections dropped from a cache while the lock is held. Declare one before
// the lock in a scope, so it is destroyed after the lock is released.
using Graveyard = std::vector<std::shared_ptr<Connection>>;

struct SettingsHash {
  size_t operator()(const CacheSettings& settings) const {
    // This abseil hashes absl::optional, not std::optional: spell it out.
    return absl::HashOf(
        settings.max_entries.has_value(), settings.max_entries.value_or(0),
        settings.ttl.has_value(), settings.ttl.value_or(absl::ZeroDuration()));
  }
};

absl::Status ValidateSettings(const CacheSettings& settings) {
  // Streamlit's None (unbounded) is an unset optional here; an explicit zero
  // or negative bound would make a cache that can hold nothing.
  if (settings.max_entries.has_value() && *settings.max_entries <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_entries must be positive (got ", *settings.max_entries, ")"));
  }
  if (settings.ttl.has_value() && *settings.ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl must be positive (got ",
                     absl::FormatDuration(*settings.ttl), ")"));
  }
  return absl::OkStatus();
}

// A factory is supposed to return errors as statuses; an exception escaping
// it must still not leave a build marked in progress forever.
absl::StatusOr<std::unique_ptr<Database>> CallFactory(
    const ConnectionRegistry::DatabaseFactory& factory,
    const config::ConnectionSpec& spec) {
  try {
    absl::StatusOr<std::unique_ptr<Database>> database = factory(spec);
    if (database.ok() && *database == nullptr) {
      return absl::InternalError(absl::StrCat(
          "the database factory returned no database for connection '",
          spec.name, "'"));
    }
    return database;
  } catch (...) {
    // what() is not reported: a driver's exception may quote its URL.
    return absl::InternalError(
        absl::StrCat("the database factory threw while opening connection '",
                     spec.name, "'"));
  }
}

}  // namespace

struct ConnectionRegistry::Impl {
  // One cached connection.
  struct Entry {
    std::shared_ptr<Connection> connection;
    absl::Time expires;  // created + ttl; InfiniteFuture() without a ttl
    uint64_t last_use;   // Impl::use_counter at the last Connect or Get
  };

  // A build in progress: callers of the same key wait until `done`.
  struct Build {
    bool done = false;
    absl::Status status;  // the factory's error, if it failed
  };

  // The cache of one CacheSettings. Never deleted (handle rows point here).
  // Guarded by Impl::mu.
  struct Cache {
    explicit Cache(const CacheSettings& s) : settings(s) {}
    const CacheSettings settings;
    absl::flat_hash_map<std::string, Entry> entries;        // key -> entry
    absl::flat_hash_map<std::string, std::string> handles;  // key -> handle
    absl::flat_hash_map<std::string, std::shared_ptr<Build>> building;
  };

  // What a handle names. All but `joins` immutable; deleted only by
  // ForgetNamed, so read it under mu (or copy what is needed).
  struct HandleRow {
    HandleRow(Cache* c, std::string k, config::ConnectionSpec s)
        : cache(c), key(std::move(k)), spec(std::move(s)) {}
    Cache* const cache;
    const std::string key;
    const config::ConnectionSpec spec;
    int64_t joins = 0;  // guarded by Impl::mu
  };

  Impl(const Clock* c, DatabaseFactory f) : clock(c), factory(std::move(f)) {}

  Cache* CacheFor(const CacheSettings& settings)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_ptr<Cache>& cache = caches[settings];
    if (cache == nullptr) cache = std::make_unique<Cache>(settings);
    return cache.get();
  }

  // Moves every entry of `cache` that expired by `now` into `graveyard`.
  void DropExpired(Cache& cache, absl::Time now, Graveyard* graveyard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (auto it = cache.entries.begin(); it != cache.entries.end();) {
      if (it->second.expires <= now) {
        graveyard->push_back(std::move(it->second.connection));
        cache.entries.erase(it++);
        ++evicted_ttl;
      } else {
        ++it;
      }
    }
  }

  // Moves the least recently used entry of `cache` into `graveyard`.
  void DropLeastRecentlyUsed(Cache& cache, Graveyard* graveyard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto oldest =
        std::min_element(cache.entries.begin(), cache.entries.end(),
                         [](const auto& a, const auto& b) {
                           return a.second.last_use < b.second.last_use;
                         });
    if (oldest == cache.entries.end()) return;
    graveyard->push_back(std::move(oldest->second.connection));
    cache.entries.erase(oldest);
    ++evicted_max_entries;
  }

  std::string NewHandle() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // 128 random bits: unguessable by another client, and never reused.
    std::string handle;
    do {
      handle = absl::StrCat(
          "h_", absl::Hex(absl::Uniform<uint64_t>(bitgen), absl::kZeroPad16),
          absl::Hex(absl::Uniform<uint64_t>(bitgen), absl::kZeroPad16));
    } while (handles.contains(handle));
    return handle;
  }

  // The live connection for `key` in `cache`, built from `spec` if there is
  // none. `count_join`: a Connect (counted in the handle's joins), not a Get.
  absl::StatusOr<std::shared_ptr<Connection>> Acquire(
      Cache* cache, const std::string& key, const config::ConnectionSpec& spec,
      bool count_join, bool* created) ABSL_LOCKS_EXCLUDED(mu);

  const Clock* const clock;
  const DatabaseFactory factory;

  mutable absl::Mutex mu;
  absl::flat_hash_map<CacheSettings, std::unique_ptr<Cache>, SettingsHash>
      caches ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::unique_ptr<HandleRow>> handles
      ABSL_GUARDED_BY(mu);
  absl::BitGen bitgen ABSL_GUARDED_BY(mu);
  uint64_t use_counter ABSL_GUARDED_BY(mu) = 0;
  int64_t created ABSL_GUARDED_BY(mu) = 0;
  int64_t evicted_ttl ABSL_GUARDED_BY(mu) = 0;
  int64_t evicted_max_entries ABSL_GUARDED_BY(mu) = 0;
};

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::Impl::Acquire(
    Cache* cache, const std::string& key, const config::ConnectionSpec& spec,
    bool count_join, bool* was_created) {
  Graveyard graveyard;  // declared before every lock below: released after
  std::shared_ptr<Build> build;
  std::string handle;
  {
    absl::MutexLock lock(&mu);
    while (true) {
      const absl::Time now = clock->Now();
      DropExpired(*cache, now, &graveyard);
      if (auto it = cache->entries.find(key); it != cache->entries.end()) {
        it->second.last_use = ++use_counter;
        if (count_join) ++handles.at(cache->handles.at(key))->joins;
        *was_created = false;
        return it->second.connection;
      }
      auto in_progress = cache->building.find(key);
      if (in_progress == cache->building.end()) break;
      // Someone is opening this connection: wait for it instead of opening a
      // second one. Hold the Build itself; the marker is erased when done.
      std::shared_ptr<Build> other = in_progress->second;
      mu.Await(absl::Condition(&other->done));
      if (!other->status.ok()) return other->status;
      // Built; look again (it may even have been evicted already).
    }
    build = std::make_shared<Build>();
    cache->building.emplace(key, build);
    auto known = cache->handles.find(key);
    handle = known != cache->handles.end() ? known->second : NewHandle();
  }

  // Opening a database may take seconds (network, TLS, authentication): never
  // under the lock.
  absl::StatusOr<std::unique_ptr<Database>> database =
      CallFactory(factory, spec);

  absl::MutexLock lock(&mu);
  cache->building.erase(key);
  build->done = true;  // wakes the waiters once mu is released
  if (!database.ok()) {
    build->status = database.status();
    return database.status();
  }
  const absl::Time now = clock->Now();
  DropExpired(*cache, now, &graveyard);
  const CacheSettings& settings = cache->settings;
  if (settings.max_entries.has_value()) {
    while (static_cast<int64_t>(cache->entries.size()) >=
           *settings.max_entries) {
      DropLeastRecentlyUsed(*cache, &graveyard);
    }
  }
  auto connection = std::make_shared<Connection>(handle, key, spec,
                                                 *std::move(database), now);
  const absl::Time expires =
      settings.ttl.has_value() ? now + *settings.ttl : absl::InfiniteFuture();
  cache->entries.emplace(key, Entry{connection, expires, ++use_counter});
  auto row = handles.find(handle);
  if (row == handles.end()) {
    row = handles.emplace(handle, std::make_unique<HandleRow>(cache, key, spec))
              .first;
    cache->handles.emplace(key, handle);
  }
  if (count_join) ++row->second->joins;
  ++created;
  *was_created = true;
  return connection;
}

ConnectionRegistry::ConnectionRegistry(const Clock* clock,
                                       DatabaseFactory factory)
    : impl_(std::make_unique<Impl>(clock, std::move(factory))) {}

ConnectionRegistry::~ConnectionRegistry() = default;

absl::StatusOr<ConnectOutcome> ConnectionRegistry::Connect(
    const config::ConnectionSpec& spec, const CacheSettings& settings,
    const std::string& session_id) {
  if (absl::Status valid = ValidateSettings(settings); !valid.ok()) {
    return valid;
  }
  std::string key = spec.CanonicalKey();
  if (spec.scope == config::Scope::kSession) {
    if (session_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "connection '", spec.name,
          "' has scope \"session\" but the call carries no session id"));
    }
    // Canonical keys are self-delimiting (length-prefixed fields), so a key
    // with this suffix never equals another spec's key with or without one.
    absl::StrAppend(&key, absl::string_view("\0session=", 9), session_id);
  }
  Impl::Cache* cache;
  {
    absl::MutexLock lock(&impl_->mu);
    cache = impl_->CacheFor(settings);
  }
  ConnectOutcome outcome;
  absl::StatusOr<std::shared_ptr<Connection>> connection =
      impl_->Acquire(cache, key, spec, /*count_join=*/true, &outcome.created);
  if (!connection.ok()) return connection.status();
  outcome.connection = *std::move(connection);
  return outcome;
}

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::Get(
    const std::string& handle) {
  Impl::Cache* cache;
  std::string key;
  config::ConnectionSpec spec;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->handles.find(handle);
    if (it == impl_->handles.end()) {
      return absl::NotFoundError(absl::StrCat(
          "unknown handle '", handle,
          "'; the daemon may have restarted or its secrets section changed: "
          "Connect again"));
    }
    // Copied: ForgetNamed may delete the row once the lock is released.
    cache = it->second->cache;
    key = it->second->key;
    spec = it->second->spec;
  }
  bool created = false;
  return impl_->Acquire(cache, key, spec, /*count_join=*/false, &created);
}

std::vector<std::string> ConnectionRegistry::ForgetNamed(
    const std::string& name) {
  Graveyard graveyard;  // before the lock: released after it
  std::vector<std::string> keys;
  absl::MutexLock lock(&impl_->mu);
  for (auto it = impl_->handles.begin(); it != impl_->handles.end();) {
    const Impl::HandleRow& row = *it->second;
    if (row.spec.name != name) {
      ++it;
      continue;
    }
    Impl::Cache& cache = *row.cache;
    if (auto entry = cache.entries.find(row.key);
        entry != cache.entries.end()) {
      graveyard.push_back(std::move(entry->second.connection));
      cache.entries.erase(entry);
    }
    cache.handles.erase(row.key);
    keys.push_back(row.key);
    impl_->handles.erase(it++);
  }
  return keys;
}

void ConnectionRegistry::EvictExpired() {
  Graveyard graveyard;
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = impl_->clock->Now();
  for (auto& [settings, cache] : impl_->caches) {
    impl_->DropExpired(*cache, now, &graveyard);
  }
}

std::vector<ConnectionSnapshot> ConnectionRegistry::List() const {
  std::vector<ConnectionSnapshot> rows;
  // Live connections, parallel to `rows`, kept so Stats() can be read after
  // unlocking: a pool's Stats takes the pool's own lock.
  std::vector<std::shared_ptr<Connection>> live;
  {
    absl::MutexLock lock(&impl_->mu);
    const absl::Time now = impl_->clock->Now();
    rows.reserve(impl_->handles.size());
    live.reserve(impl_->handles.size());
    for (const auto& [handle, row] : impl_->handles) {
      ConnectionSnapshot snapshot;
      snapshot.handle = handle;
      snapshot.name = row->spec.name;
      snapshot.type = row->spec.type;
      snapshot.description = row->spec.description;
      snapshot.scope = row->spec.scope;
      snapshot.settings = row->cache->settings;
      snapshot.joins = row->joins;
      std::shared_ptr<Connection> connection;
      auto entry = row->cache->entries.find(row->key);
      if (entry != row->cache->entries.end() && entry->second.expires > now) {
        snapshot.live = true;
        if (row->cache->settings.ttl.has_value()) {
          snapshot.expires = entry->second.expires;
        }
        connection = entry->second.connection;
      }
      rows.push_back(std::move(snapshot));
      live.push_back(std::move(connection));
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (live[i] == nullptr) continue;
    rows[i].created = live[i]->created();
    rows[i].queries = live[i]->queries();
    rows[i].pool = live[i]->database().Stats();
  }
  std::sort(rows.begin(), rows.end(),
            [](const ConnectionSnapshot& a, const ConnectionSnapshot& b) {
              if (a.name != b.name) return a.name < b.name;
              return a.handle < b.handle;
            });
  return rows;  // `live` dies here, unlocked
}

std::vector<std::shared_ptr<Connection>> ConnectionRegistry::LiveConnections()
    const {
  std::vector<std::shared_ptr<Connection>> live;
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = impl_->clock->Now();
  for (const auto& [settings, cache] : impl_->caches) {
    for (const auto& [key, entry] : cache->entries) {
      if (entry.expires > now) live.push_back(entry.connection);
    }
  }
  return live;
}

RegistryStats ConnectionRegistry::Stats() const {
  RegistryStats stats;
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = impl_->clock->Now();
  for (const auto& [settings, cache] : impl_->caches) {
    for (const auto& [key, entry] : cache->entries) {
      if (entry.expires > now) ++stats.live;
    }
  }
  stats.handles = static_cast<int64_t>(impl_->handles.size());
  stats.created = impl_->created;
  stats.evicted_ttl = impl_->evicted_ttl;
  stats.evicted_max_entries = impl_->evicted_max_entries;
  return stats;
}

}  // namespace connbroker::server
