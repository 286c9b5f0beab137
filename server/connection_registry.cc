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
//    Making room under max_connections scans every cache for the least
//    recently used idle connection: O(max_connections), on builds only.
//  - A connection is idle when the registry holds its only reference: every
//    call in flight holds another.
//  - Each name has a generation, bumped by ForgetNamed. A build remembers
//    the generation it started under and is discarded if it changed, so a
//    rebuild racing a reload cannot bring a forgotten handle back.
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
// Connections are released only after it is unlocked. A Connection's last
// reference hands it to `releaser`, whose thread destroys it (and so closes
// its Database) wherever that reference was dropped.
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
#include "connbroker/config/shown.h"
#include "server/worker_pool.h"

namespace connbroker::server {
namespace {

// Connections dropped from a cache while the lock is held. Declare one before
// the lock in a scope, so it is destroyed after the lock is released.
using Graveyard = std::vector<std::shared_ptr<Connection>>;

absl::Status UnknownHandle(const std::string& handle) {
  return absl::NotFoundError(absl::StrCat(
      "unknown handle '", config::Shown(handle),
      "'; the daemon may have restarted, forgotten an unused handle, or its "
      "secrets section changed: Connect again"));
}

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

  // The cache of one CacheSettings; deleted when it holds nothing. Guarded by
  // Impl::mu.
  struct Cache {
    explicit Cache(const CacheSettings& s) : settings(s) {}
    bool Empty() const {
      return entries.empty() && handles.empty() && building.empty();
    }
    const CacheSettings settings;
    absl::flat_hash_map<std::string, Entry> entries;        // key -> entry
    absl::flat_hash_map<std::string, std::string> handles;  // key -> handle
    absl::flat_hash_map<std::string, std::shared_ptr<Build>> building;
  };

  // What a handle names. All but `joins` and `last_use` immutable; deleted
  // by ForgetNamed and by reclaiming, so read it under mu (or copy what is
  // needed).
  struct HandleRow {
    HandleRow(const CacheSettings& c, std::string k, config::ConnectionSpec s,
              std::string sess)
        : settings(c),
          key(std::move(k)),
          spec(std::move(s)),
          session(std::move(sess)) {}
    const CacheSettings settings;
    const std::string key;
    const config::ConnectionSpec spec;
    const std::string session;  // of a session-scoped connection, else ""
    int64_t joins = 0;          // guarded by Impl::mu
    absl::Time last_use;        // guarded by Impl::mu
  };

  Impl(const Clock* c, DatabaseFactory f, RegistryLimits l)
      : releaser(std::make_shared<WorkerPool>(1)),
        clock(c),
        factory(std::move(f)),
        limits(l) {}

  // The cache of `settings`, or null.
  Cache* FindCache(const CacheSettings& settings)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto it = caches.find(settings);
    return it == caches.end() ? nullptr : it->second.get();
  }

  // The cache of `settings`, made if needed (deleting empty caches when
  // max_caches is reached).
  absl::StatusOr<Cache*> CacheFor(const CacheSettings& settings)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (Cache* cache = FindCache(settings)) return cache;
    if (static_cast<int64_t>(caches.size()) >= limits.max_caches) {
      DeleteEmptyCaches();
    }
    if (static_cast<int64_t>(caches.size()) >= limits.max_caches) {
      ++refused;
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many distinct (ttl, max_entries) connection caches in use "
          "(limits.max_connection_caches = ",
          limits.max_caches,
          "); connect with settings another client already uses"));
    }
    auto made = std::make_unique<Cache>(settings);
    Cache* cache = made.get();
    caches.emplace(settings, std::move(made));
    return cache;
  }

  void DeleteEmptyCaches() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    absl::erase_if(caches,
                   [](const auto& item) { return item.second->Empty(); });
  }

  int64_t LiveCount() const ABSL_SHARED_LOCKS_REQUIRED(mu) {
    int64_t live = 0;
    for (const auto& [settings, cache] : caches) {
      live +=
          static_cast<int64_t>(cache->entries.size() + cache->building.size());
    }
    return live;
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

  // Moves the least recently used idle connection of any cache into
  // `graveyard`. False when every live connection has a call running.
  bool DropIdle(Graveyard* graveyard) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Cache* victim_cache = nullptr;
    std::string victim_key;
    uint64_t oldest = UINT64_MAX;
    for (auto& [settings, cache] : caches) {
      for (const auto& [key, entry] : cache->entries) {
        // use_count is exact enough here: only the registry makes new
        // references of a cached connection, and it holds mu.
        if (entry.connection.use_count() == 1 && entry.last_use < oldest) {
          oldest = entry.last_use;
          victim_cache = cache.get();
          victim_key = key;
        }
      }
    }
    if (victim_cache == nullptr) return false;
    auto entry = victim_cache->entries.find(victim_key);
    graveyard->push_back(std::move(entry->second.connection));
    victim_cache->entries.erase(entry);
    ++evicted_for_room;
    return true;
  }

  // Makes room for one more live connection. RESOURCE_EXHAUSTED when
  // max_connections are live and none is idle.
  absl::Status RoomForOneMore(Graveyard* graveyard)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    while (LiveCount() >= limits.max_connections) {
      if (!DropIdle(graveyard)) {
        ++refused;
        return absl::ResourceExhaustedError(absl::StrCat(
            "daemon-wide connection limit reached (limits.max_connections = ",
            limits.max_connections,
            " live connections, every one with a call running); retry "
            "later, share a connection with other clients, or raise it in "
            "broker.toml"));
      }
    }
    return absl::OkStatus();
  }

  // Forgets handle rows whose connection is not live (nor being built) and
  // that were unused since `idle_before`; with `at_least_one`, the least
  // recently used such row even if it is younger.
  void ReclaimHandles(absl::Time idle_before, bool at_least_one)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::vector<std::string> idle;
    std::string youngest_candidate;
    absl::Time candidate_use = absl::InfiniteFuture();
    for (const auto& [handle, row] : handles) {
      const Cache* cache = FindCache(row->settings);
      if (cache != nullptr && (cache->entries.contains(row->key) ||
                               cache->building.contains(row->key))) {
        continue;
      }
      if (row->last_use < idle_before) {
        idle.push_back(handle);
      } else if (row->last_use < candidate_use) {
        candidate_use = row->last_use;
        youngest_candidate = handle;
      }
    }
    if (idle.empty() && at_least_one && !youngest_candidate.empty()) {
      idle.push_back(youngest_candidate);
    }
    for (const std::string& handle : idle) {
      auto row = handles.find(handle);
      if (Cache* cache = FindCache(row->second->settings)) {
        cache->handles.erase(row->second->key);
      }
      handles.erase(row);
      ++handles_reclaimed;
    }
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

  // Wraps a new Connection so that its last reference, wherever dropped,
  // destroys it on the releaser's thread.
  std::shared_ptr<Connection> Adopt(std::unique_ptr<Connection> connection) {
    std::weak_ptr<WorkerPool> weak = releaser;
    return std::shared_ptr<Connection>(
        connection.release(), [weak](Connection* dying) {
          if (std::shared_ptr<WorkerPool> pool = weak.lock()) {
            pool->Submit([dying] { delete dying; });
          } else {
            delete dying;  // the registry is gone: nothing left to block
          }
        });
  }

  // What Acquire is asked for: a Connect (which may make a handle and counts
  // a join) or a Get of a known handle.
  struct Want {
    CacheSettings settings;
    std::string key;
    config::ConnectionSpec spec;
    std::string session;     // of a session-scoped spec
    std::string handle;      // Get: the handle asked for; Connect: ""
    bool only_live = false;  // GetIfLive: null rather than build or wait
  };

  // The live connection for `want`, built if there is none.
  absl::StatusOr<std::shared_ptr<Connection>> Acquire(const Want& want,
                                                      bool* created)
      ABSL_LOCKS_EXCLUDED(mu);

  // Declared first, destroyed last: connections released by the members
  // below as they go are still handed to its thread, which it drains.
  std::shared_ptr<WorkerPool> releaser;
  const Clock* const clock;
  const DatabaseFactory factory;
  const RegistryLimits limits;

  mutable absl::Mutex mu;
  absl::flat_hash_map<CacheSettings, std::unique_ptr<Cache>, SettingsHash>
      caches ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::unique_ptr<HandleRow>> handles
      ABSL_GUARDED_BY(mu);
  // Bumped by ForgetNamed; see the file comment.
  absl::flat_hash_map<std::string, uint64_t> generations ABSL_GUARDED_BY(mu);
  absl::BitGen bitgen ABSL_GUARDED_BY(mu);
  uint64_t use_counter ABSL_GUARDED_BY(mu) = 0;
  int64_t created ABSL_GUARDED_BY(mu) = 0;
  int64_t evicted_ttl ABSL_GUARDED_BY(mu) = 0;
  int64_t evicted_max_entries ABSL_GUARDED_BY(mu) = 0;
  int64_t evicted_for_room ABSL_GUARDED_BY(mu) = 0;
  int64_t handles_reclaimed ABSL_GUARDED_BY(mu) = 0;
  int64_t refused ABSL_GUARDED_BY(mu) = 0;
};

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::Impl::Acquire(
    const Want& want, bool* was_created) {
  const bool is_get = !want.handle.empty();
  Graveyard graveyard;  // declared before every lock below: released after
  std::shared_ptr<Build> build;
  std::string handle;
  uint64_t generation = 0;
  {
    absl::MutexLock lock(&mu);
    while (true) {
      const absl::Time now = clock->Now();
      if (is_get && !handles.contains(want.handle)) {
        return UnknownHandle(want.handle);  // forgotten while we waited
      }
      Cache* cache = FindCache(want.settings);
      if (cache != nullptr) {
        DropExpired(*cache, now, &graveyard);
        if (auto it = cache->entries.find(want.key);
            it != cache->entries.end()) {
          it->second.last_use = ++use_counter;
          HandleRow& row = *handles.at(cache->handles.at(want.key));
          if (!is_get) ++row.joins;
          row.last_use = now;
          *was_created = false;
          return it->second.connection;
        }
      }
      if (want.only_live) return std::shared_ptr<Connection>();
      if (cache != nullptr) {
        auto in_progress = cache->building.find(want.key);
        if (in_progress != cache->building.end()) {
          // Someone is opening this connection: wait for it instead of
          // opening a second one. Hold the Build itself; the marker is
          // erased when done.
          std::shared_ptr<Build> other = in_progress->second;
          mu.Await(absl::Condition(&other->done));
          if (!other->status.ok()) return other->status;
          continue;  // built; look again (it may even be evicted already)
        }
      }
      absl::StatusOr<Cache*> made = CacheFor(want.settings);
      if (!made.ok()) return made.status();
      cache = *made;
      if (absl::Status room = RoomForOneMore(&graveyard); !room.ok()) {
        return room;
      }
      auto known = cache->handles.find(want.key);
      if (known != cache->handles.end()) {
        handle = known->second;
      } else {
        if (static_cast<int64_t>(handles.size()) >= limits.max_handles) {
          ReclaimHandles(now - limits.handle_idle_timeout,
                         /*at_least_one=*/true);
        }
        if (static_cast<int64_t>(handles.size()) >= limits.max_handles) {
          ++refused;
          return absl::ResourceExhaustedError(absl::StrCat(
              "daemon-wide handle limit reached (limits.max_handles = ",
              limits.max_handles, ", every one in use)"));
        }
        handle = NewHandle();
      }
      build = std::make_shared<Build>();
      cache->building.emplace(want.key, build);
      generation = generations[want.spec.name];
      break;
    }
  }

  // Opening a database may take seconds (network, TLS, authentication): never
  // under the lock.
  absl::StatusOr<std::unique_ptr<Database>> database =
      CallFactory(factory, want.spec);
  std::unique_ptr<Connection> discarded;  // destroyed after the lock below

  absl::MutexLock lock(&mu);
  // The cache is not empty while the build is marked, so it still exists.
  Cache* cache = FindCache(want.settings);
  cache->building.erase(want.key);
  build->done = true;  // wakes the waiters once mu is released
  if (!database.ok()) {
    build->status = database.status();
    return database.status();
  }
  const absl::Time now = clock->Now();
  if (generations[want.spec.name] != generation) {
    // ForgetNamed ran meanwhile: what was built follows the old section.
    discarded = std::make_unique<Connection>(handle, want.key, want.spec,
                                             *std::move(database), now);
    build->status =
        is_get ? UnknownHandle(want.handle)
               : absl::AbortedError(absl::StrCat(
                     "the secrets section of connection '", want.spec.name,
                     "' changed while it was being opened; connect again"));
    return build->status;
  }
  DropExpired(*cache, now, &graveyard);
  const CacheSettings& settings = cache->settings;
  if (settings.max_entries.has_value()) {
    while (static_cast<int64_t>(cache->entries.size()) >=
           *settings.max_entries) {
      DropLeastRecentlyUsed(*cache, &graveyard);
    }
  }
  std::shared_ptr<Connection> connection = Adopt(std::make_unique<Connection>(
      handle, want.key, want.spec, *std::move(database), now));
  const absl::Time expires =
      settings.ttl.has_value() ? now + *settings.ttl : absl::InfiniteFuture();
  cache->entries.emplace(want.key, Entry{connection, expires, ++use_counter});
  auto row = handles.find(handle);
  if (row == handles.end()) {
    row = handles
              .emplace(handle, std::make_unique<HandleRow>(
                                   settings, want.key, want.spec, want.session))
              .first;
    cache->handles.emplace(want.key, handle);
  }
  if (!is_get) ++row->second->joins;
  row->second->last_use = now;
  ++created;
  *was_created = true;
  return connection;
}

ConnectionRegistry::ConnectionRegistry(const Clock* clock,
                                       DatabaseFactory factory,
                                       RegistryLimits limits)
    : impl_(std::make_unique<Impl>(clock, std::move(factory), limits)) {}

ConnectionRegistry::~ConnectionRegistry() = default;

absl::StatusOr<ConnectOutcome> ConnectionRegistry::Connect(
    const config::ConnectionSpec& spec, const CacheSettings& settings,
    const std::string& session_id) {
  if (absl::Status valid = ValidateSettings(settings); !valid.ok()) {
    return valid;
  }
  Impl::Want want{settings, spec.CanonicalKey(), spec, "", ""};
  if (spec.scope == config::Scope::kSession) {
    if (session_id.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "connection '", spec.name,
          "' has scope \"session\" but the call carries no session id"));
    }
    // Canonical keys are self-delimiting (length-prefixed fields), so a key
    // with this suffix never equals another spec's key with or without one.
    absl::StrAppend(&want.key, absl::string_view("\0session=", 9), session_id);
    want.session = session_id;
  }
  ConnectOutcome outcome;
  absl::StatusOr<std::shared_ptr<Connection>> connection =
      impl_->Acquire(want, &outcome.created);
  if (!connection.ok()) return connection.status();
  outcome.connection = *std::move(connection);
  return outcome;
}

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::Get(
    const std::string& handle, const std::string& session_id) {
  return GetByHandle(handle, session_id, /*only_live=*/false);
}

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::GetIfLive(
    const std::string& handle, const std::string& session_id) {
  return GetByHandle(handle, session_id, /*only_live=*/true);
}

absl::StatusOr<std::shared_ptr<Connection>> ConnectionRegistry::GetByHandle(
    const std::string& handle, const std::string& session_id, bool only_live) {
  Impl::Want want;
  {
    absl::MutexLock lock(&impl_->mu);
    auto it = impl_->handles.find(handle);
    if (it == impl_->handles.end()) return UnknownHandle(handle);
    const Impl::HandleRow& row = *it->second;
    if (row.spec.scope == config::Scope::kSession &&
        row.session != session_id) {
      return UnknownHandle(handle);
    }
    // Copied: the row may be deleted once the lock is released.
    want = Impl::Want{row.settings, row.key, row.spec,
                      row.session,  handle,  only_live};
  }
  bool created = false;
  return impl_->Acquire(want, &created);
}

std::vector<std::string> ConnectionRegistry::ForgetNamed(
    const std::string& name) {
  Graveyard graveyard;  // before the lock: released after it
  std::vector<std::string> keys;
  absl::MutexLock lock(&impl_->mu);
  ++impl_->generations[name];
  for (auto it = impl_->handles.begin(); it != impl_->handles.end();) {
    const Impl::HandleRow& row = *it->second;
    if (row.spec.name != name) {
      ++it;
      continue;
    }
    if (Impl::Cache* cache = impl_->FindCache(row.settings)) {
      if (auto entry = cache->entries.find(row.key);
          entry != cache->entries.end()) {
        graveyard.push_back(std::move(entry->second.connection));
        cache->entries.erase(entry);
      }
      cache->handles.erase(row.key);
    }
    keys.push_back(row.key);
    impl_->handles.erase(it++);
  }
  impl_->DeleteEmptyCaches();
  return keys;
}

void ConnectionRegistry::EvictExpired() {
  Graveyard graveyard;
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = impl_->clock->Now();
  for (auto& [settings, cache] : impl_->caches) {
    impl_->DropExpired(*cache, now, &graveyard);
  }
  impl_->ReclaimHandles(now - impl_->limits.handle_idle_timeout,
                        /*at_least_one=*/false);
  impl_->DeleteEmptyCaches();
}

std::vector<ConnectionSnapshot> ConnectionRegistry::List(
    const ListFilter& filter) const {
  std::vector<ConnectionSnapshot> rows;
  // Live connections, parallel to `rows`, kept so Stats() can be read after
  // unlocking: a pool's Stats takes the pool's own lock.
  std::vector<std::shared_ptr<Connection>> live;
  {
    absl::MutexLock lock(&impl_->mu);
    const absl::Time now = impl_->clock->Now();
    for (const auto& [handle, row] : impl_->handles) {
      if (row->spec.scope == config::Scope::kSession && !filter.all_sessions &&
          row->session != filter.session) {
        continue;
      }
      ConnectionSnapshot snapshot;
      snapshot.handle = handle;
      snapshot.name = row->spec.name;
      snapshot.type = row->spec.type;
      snapshot.description = row->spec.description;
      snapshot.scope = row->spec.scope;
      snapshot.settings = row->settings;
      snapshot.joins = row->joins;
      std::shared_ptr<Connection> connection;
      const Impl::Cache* cache = impl_->FindCache(row->settings);
      const Impl::Entry* entry = nullptr;
      if (cache != nullptr) {
        auto it = cache->entries.find(row->key);
        if (it != cache->entries.end()) entry = &it->second;
      }
      if (entry != nullptr && entry->expires > now) {
        snapshot.live = true;
        if (row->settings.ttl.has_value()) snapshot.expires = entry->expires;
        connection = entry->connection;
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
  stats.evicted_for_room = impl_->evicted_for_room;
  stats.handles_reclaimed = impl_->handles_reclaimed;
  stats.caches = static_cast<int64_t>(impl_->caches.size());
  stats.refused = impl_->refused;
  return stats;
}

}  // namespace connbroker::server
