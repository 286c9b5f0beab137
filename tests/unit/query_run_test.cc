// QueryRun against real SQLite files: how a reply is produced (shared cached
// messages, the in-flight memory budget) and which failures are retried.
#include "server/query_run.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/clock.h"
#include "server/connection.h"
#include "server/drivers/database.h"
#include "server/memory_budget.h"
#include "server/result_cache.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/database_test_util.h"

namespace connbroker::server {
namespace {

using ::testing::HasSubstr;

// The message `out` hands out, decoded if it came encoded.
v1::QueryResponse MessageOf(const QueryRun::Outgoing& out) {
  if (out.message != nullptr) return *out.message;
  v1::QueryResponse message;
  EXPECT_TRUE(message.ParseFromString(*out.wire));
  return message;
}

// What a whole run produced, copied out message by message.
struct Reply {
  absl::Status status;
  std::vector<v1::QueryResponse> messages;
  // Where each message lived when Next() handed it out: the run's own
  // message, or a cached result's encoded bytes.
  std::vector<const void*> addresses;
  // The budget's use after each Next().
  std::vector<int64_t> in_use;

  const v1::QuerySummary& summary() const { return messages.back().summary(); }
  int64_t rows() const {
    int64_t rows = 0;
    for (const v1::QueryResponse& message : messages) {
      if (message.has_batch()) rows += message.batch().row_count();
    }
    return rows;
  }
};

class QueryRunTest : public ::testing::Test {
 protected:
  static config::ConnectionSpec Spec(const std::string& path) {
    config::ConnectionSpec spec;
    spec.name = "test";
    spec.type = "sql";
    spec.sql.dialect = "sqlite";
    spec.sql.database = path;
    spec.pool.pool_size = 2;
    spec.pool.acquire_timeout = absl::Seconds(5);
    spec.pool.busy_timeout = absl::Seconds(2);
    return spec;
  }

  std::shared_ptr<Connection> Open(const config::ConnectionSpec& spec) {
    absl::StatusOr<std::unique_ptr<Database>> db = OpenDatabase(spec);
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return nullptr;
    return std::make_shared<Connection>("h1", "key1", spec, *std::move(db),
                                        absl::Now());
  }

  // A file holding table t with `rows` rows of about 100 bytes each.
  std::string MakeTable(const std::string& file, int rows) {
    const std::string path = dir_.Path(file);
    absl::StatusOr<std::unique_ptr<Database>> db = OpenDatabase(Spec(path));
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return path;
    Exec(**db,
         absl::StrCat("CREATE TABLE t(id INTEGER, s TEXT);"
                      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                      "FROM n WHERE i < ",
                      rows,
                      ") INSERT INTO t SELECT i, printf('%0100d', i) FROM n"));
    return path;  // closing the last backend checkpoints the WAL away
  }

  std::unique_ptr<QueryRun> Start(std::shared_ptr<Connection> connection,
                                  const std::string& sql, absl::Duration ttl,
                                  int chunk_rows = 10) {
    QueryLimits limits;
    limits.chunk_rows = chunk_rows;
    limits.inflight = &budget_;
    return std::make_unique<QueryRun>(std::move(connection), sql, v1::Params(),
                                      ttl, limits, &cache_, &counters_,
                                      Clock::Real(), [] {});
  }

  // Runs to the end on this thread (SQLite pools answer at once here).
  Reply Drain(QueryRun& run) {
    Reply reply;
    while (true) {
      QueryRun::Outgoing out;
      absl::StatusOr<QueryRun::Progress> progress = run.Next(&out);
      reply.in_use.push_back(budget_.in_use());
      if (!progress.ok()) {
        reply.status = progress.status();
        return reply;
      }
      EXPECT_NE(*progress, QueryRun::Progress::kWaiting);
      if (*progress != QueryRun::Progress::kMessage) return reply;
      reply.messages.push_back(MessageOf(out));
      reply.addresses.push_back(out.message != nullptr
                                    ? static_cast<const void*>(out.message)
                                    : out.wire->data());
    }
  }

  testing::TempDir dir_;
  MemoryBudget budget_{1 << 20};
  ResultCache cache_{Clock::Real(), 64 << 20, 8 << 20};
  BrokerCounters counters_;
};

TEST_F(QueryRunTest, AHitHandsOutTheCachedMessagesWithoutCopying) {
  std::shared_ptr<Connection> connection = Open(Spec(MakeTable("hit.db", 100)));
  ASSERT_NE(connection, nullptr);
  const std::string sql = "SELECT id, s FROM t ORDER BY id";

  std::unique_ptr<QueryRun> first = Start(connection, sql, absl::Minutes(1));
  Reply led = Drain(*first);
  ASSERT_TRUE(led.status.ok()) << led.status;
  ASSERT_EQ(led.messages.size(), 12u);  // schema, 10 batches, summary
  EXPECT_EQ(led.rows(), 100);
  EXPECT_FALSE(led.summary().from_cache());

  for (int i = 0; i < 2; ++i) {
    std::unique_ptr<QueryRun> hit = Start(connection, sql, absl::Minutes(1));
    Reply replayed = Drain(*hit);
    ASSERT_TRUE(replayed.status.ok()) << replayed.status;
    EXPECT_TRUE(replayed.summary().from_cache());
    EXPECT_EQ(replayed.summary().row_count(), 100);
    EXPECT_EQ(replayed.summary().backend_executions(), 0);
    // The schema and every batch are the very messages the leader produced
    // from the shared result; only the summary is the run's own.
    for (size_t m = 0; m + 1 < replayed.addresses.size(); ++m) {
      EXPECT_EQ(replayed.addresses[m], led.addresses[m]) << "message " << m;
      EXPECT_EQ(replayed.messages[m].SerializeAsString(),
                led.messages[m].SerializeAsString());
    }
    EXPECT_NE(replayed.addresses.back(), led.addresses.back());
  }
  // A published result counts in the cache's bytes, and in the result
  // memory for as long as it lives.
  EXPECT_GT(cache_.Stats().bytes, 0);
  EXPECT_EQ(budget_.in_use(), cache_.Stats().bytes);
  EXPECT_EQ(counters_.backend_executions.load(), 1);
  first.reset();
  EXPECT_EQ(cache_.DropOwner(connection->key()), 1);
  EXPECT_EQ(budget_.in_use(), 0);
}

// Issue 11, found by the abuse run: results evicted while slow readers still
// streamed them were counted nowhere, so RSS grew far past both budgets.
TEST_F(QueryRunTest, AnEvictedResultStillReadCountsUntilItsLastReaderEnds) {
  std::shared_ptr<Connection> connection =
      Open(Spec(MakeTable("held.db", 100)));
  ASSERT_NE(connection, nullptr);
  const std::string sql = "SELECT id, s FROM t ORDER BY id";
  std::unique_ptr<QueryRun> leader = Start(connection, sql, absl::Minutes(1));
  ASSERT_TRUE(Drain(*leader).status.ok());
  leader.reset();
  // A slow reader takes the schema and one batch of the cached result...
  std::unique_ptr<QueryRun> reader = Start(connection, sql, absl::Minutes(1));
  QueryRun::Outgoing out;
  ASSERT_TRUE(reader->Next(&out).ok());
  ASSERT_TRUE(reader->Next(&out).ok());
  EXPECT_NE(out.wire, nullptr);  // a cached batch, shared
  const int64_t held = budget_.in_use();
  EXPECT_GT(held, 0);
  // ... and the result leaves the cache meanwhile.
  EXPECT_EQ(cache_.DropOwner(connection->key()), 1);
  EXPECT_EQ(cache_.Stats().bytes, 0);
  EXPECT_EQ(budget_.in_use(), held);
  EXPECT_EQ(cache_.ShedUnreferenced(1 << 30), 0);  // nothing unreferenced
  reader.reset();
  EXPECT_EQ(budget_.in_use(), held);  // the batch handed out is still held
  out = QueryRun::Outgoing();         // as gRPC lets go of a written slice
  EXPECT_EQ(budget_.in_use(), 0);
}

// A full budget sheds cached results nobody reads before it gives up
// caching a new one.
TEST_F(QueryRunTest, ANewResultShedsUnreadCachedOnesToFitTheBudget) {
  std::shared_ptr<Connection> connection =
      Open(Spec(MakeTable("shed.db", 100)));
  ASSERT_NE(connection, nullptr);
  std::unique_ptr<QueryRun> a =
      Start(connection, "SELECT id, s FROM t ORDER BY id", absl::Minutes(1));
  ASSERT_TRUE(Drain(*a).status.ok());
  a.reset();
  const int64_t one_result = budget_.in_use();
  ASSERT_GT(one_result, 0);
  // Fill the rest of the budget, so the next result only fits by shedding.
  ASSERT_TRUE(budget_.TryReserve(budget_.limit() - one_result));
  std::unique_ptr<QueryRun> b = Start(
      connection, "SELECT id, s FROM t ORDER BY id DESC", absl::Minutes(1));
  Reply second = Drain(*b);
  ASSERT_TRUE(second.status.ok());
  b.reset();
  EXPECT_EQ(cache_.Stats().entries, 1);  // the new one replaced the old
  EXPECT_EQ(counters_.inflight_budget_refusals.load(), 0);
  budget_.Release(budget_.limit() - one_result);
}

TEST_F(QueryRunTest, AnUncachedQueryStreamsWithoutTheBudget) {
  std::shared_ptr<Connection> connection = Open(Spec(MakeTable("live.db", 50)));
  ASSERT_NE(connection, nullptr);
  std::unique_ptr<QueryRun> run =
      Start(connection, "SELECT id, s FROM t", absl::ZeroDuration());
  Reply reply = Drain(*run);
  ASSERT_TRUE(reply.status.ok()) << reply.status;
  EXPECT_EQ(reply.rows(), 50);
  EXPECT_EQ(reply.summary().row_count(), 50);
  for (int64_t used : reply.in_use) EXPECT_EQ(used, 0);
}

TEST_F(QueryRunTest, AFullBudgetStreamsTheResultUncachedAndReleasesAsItGoes) {
  std::shared_ptr<Connection> connection =
      Open(Spec(MakeTable("budget.db", 200)));
  ASSERT_NE(connection, nullptr);
  // Room for about a third of the result (each batch of 10 rows is a bit
  // over 1 KiB).
  MemoryBudget small(8 << 10);
  QueryLimits limits;
  limits.chunk_rows = 10;
  limits.inflight = &small;
  auto run = std::make_unique<QueryRun>(
      connection, "SELECT id, s FROM t ORDER BY id", v1::Params(),
      absl::Minutes(1), limits, &cache_, &counters_, Clock::Real(), [] {});

  std::vector<int64_t> in_use;
  std::vector<int64_t> ids;
  bool summary = false;
  while (true) {
    QueryRun::Outgoing out;
    absl::StatusOr<QueryRun::Progress> progress = run->Next(&out);
    ASSERT_TRUE(progress.ok()) << progress.status();
    if (*progress == QueryRun::Progress::kDone) break;
    const v1::QueryResponse decoded = MessageOf(out);
    const v1::QueryResponse* message = &decoded;
    in_use.push_back(small.in_use());
    EXPECT_LE(small.in_use(), small.limit());
    if (message->has_batch()) {
      for (int64_t id : message->batch().columns(0).int64s().values()) {
        ids.push_back(id);
      }
    }
    if (message->has_summary()) {
      summary = true;
      EXPECT_FALSE(message->summary().from_cache());
      EXPECT_EQ(message->summary().row_count(), 200);
    }
  }
  ASSERT_TRUE(summary);
  ASSERT_EQ(ids.size(), 200u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], int64_t(i) + 1);
  // The collected prefix was held, then given back a batch at a time as
  // each was produced, down to nothing.
  ASSERT_GT(in_use.size(), 3u);
  EXPECT_GT(in_use[1], 0);
  for (size_t i = 1; i < in_use.size(); ++i)
    EXPECT_LE(in_use[i], in_use[i - 1]);
  EXPECT_EQ(in_use.back(), 0);
  EXPECT_EQ(counters_.inflight_budget_refusals.load(), 1);
  EXPECT_EQ(cache_.Stats().entries, 0);
  run.reset();
  EXPECT_EQ(small.in_use(), 0);
}

TEST_F(QueryRunTest, AResultPastMaxEntryBytesStreamsAndReleases) {
  std::shared_ptr<Connection> connection = Open(Spec(MakeTable("big.db", 200)));
  ASSERT_NE(connection, nullptr);
  ResultCache tiny_entries(Clock::Real(), 64 << 20, 4 << 10);
  QueryLimits limits;
  limits.chunk_rows = 10;
  limits.inflight = &budget_;
  QueryRun run(connection, "SELECT id, s FROM t", v1::Params(),
               absl::Minutes(1), limits, &tiny_entries, &counters_,
               Clock::Real(), [] {});
  Reply reply = Drain(run);
  ASSERT_TRUE(reply.status.ok()) << reply.status;
  EXPECT_EQ(reply.rows(), 200);
  EXPECT_FALSE(reply.summary().from_cache());
  EXPECT_EQ(tiny_entries.Stats().entries, 0);
  EXPECT_EQ(counters_.inflight_budget_refusals.load(), 0);
  EXPECT_LE(reply.in_use.front(), 4 << 10);
  EXPECT_EQ(reply.in_use.back(), 0);
}

TEST_F(QueryRunTest, AnAbandonedFlightLetsTheNextCallerLead) {
  std::shared_ptr<Connection> connection =
      Open(Spec(MakeTable("again.db", 100)));
  ASSERT_NE(connection, nullptr);
  MemoryBudget none(0);
  QueryLimits limits;
  limits.chunk_rows = 10;
  limits.inflight = &none;
  QueryRun refused(connection, "SELECT id FROM t", v1::Params(),
                   absl::Minutes(1), limits, &cache_, &counters_, Clock::Real(),
                   [] {});
  Reply streamed = Drain(refused);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status;
  EXPECT_EQ(streamed.rows(), 100);
  // Budget again: the next identical query leads and caches.
  std::unique_ptr<QueryRun> next =
      Start(connection, "SELECT id FROM t", absl::Minutes(1));
  Reply cached = Drain(*next);
  ASSERT_TRUE(cached.status.ok()) << cached.status;
  EXPECT_EQ(cache_.Stats().entries, 1);
}

// Overwrites `length` bytes of `path` at `offset` with `byte`.
void Scribble(const std::string& path, std::streamoff offset, size_t length,
              char byte) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.is_open()) << path;
  file.seekp(offset);
  const std::string junk(length, byte);
  file.write(junk.data(), static_cast<std::streamsize>(junk.size()));
}

// A permanent fault is answered once: FAILED_PRECONDITION with SQLite's
// message, one backend execution, no retry, and no backend closed.
void ExpectPermanent(const Reply& reply, const BrokerCounters& counters,
                     const std::string& what) {
  EXPECT_EQ(reply.status.code(), absl::StatusCode::kFailedPrecondition)
      << reply.status;
  EXPECT_THAT(std::string(reply.status.message()), HasSubstr(what));
  EXPECT_EQ(counters.backend_executions.load(), 1);
  EXPECT_EQ(counters.retries.load(), 0);
}

TEST_F(QueryRunTest, ACorruptFileIsAPermanentFaultNotRetried) {
  const std::string path = MakeTable("corrupt.db", 2000);
  // Page 1 (the header and schema) stays; the table's pages are garbage.
  Scribble(path, 4096, 4 * 4096, '\xff');
  std::shared_ptr<Connection> connection = Open(Spec(path));
  ASSERT_NE(connection, nullptr);
  const v1::PoolStats before = connection->database().Stats();

  std::unique_ptr<QueryRun> run =
      Start(connection, "SELECT sum(id) FROM t", absl::ZeroDuration());
  Reply reply = Drain(*run);
  ExpectPermanent(reply, counters_, "malformed");
  run.reset();
  // The writer (open since Connect) was not closed by a reset; the reader
  // that met the fault went back to its pool.
  const v1::PoolStats after = connection->database().Stats();
  EXPECT_GE(after.open(), before.open());
  EXPECT_EQ(after.opened_total(), before.opened_total() + 1);
  EXPECT_EQ(counters_.resets.load(), 0);
}

TEST_F(QueryRunTest, AFileThatIsNotADatabaseIsAPermanentFault) {
  const std::string path =
      dir_.Write("garbage.db", std::string(8192, 'x') + "not sqlite");
  // Opening it read-write fails at Connect (switching to WAL reads it).
  absl::StatusOr<std::unique_ptr<Database>> rw = OpenDatabase(Spec(path));
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().code(), absl::StatusCode::kFailedPrecondition)
      << rw.status();
  EXPECT_THAT(std::string(rw.status().message()),
              HasSubstr("file is not a database"));

  // Read-only (mode=ro), nothing reads it before the first query.
  config::ConnectionSpec spec = Spec(path);
  spec.sql.query["mode"] = "ro";
  std::shared_ptr<Connection> connection = Open(spec);
  ASSERT_NE(connection, nullptr);
  const v1::PoolStats before = connection->database().Stats();
  std::unique_ptr<QueryRun> run =
      Start(connection, "SELECT 1 FROM sqlite_master", absl::ZeroDuration());
  Reply reply = Drain(*run);
  ExpectPermanent(reply, counters_, "file is not a database");
  run.reset();
  const v1::PoolStats after = connection->database().Stats();
  EXPECT_GE(after.open(), before.open());
  EXPECT_EQ(after.opened_total(), before.opened_total() + 1);
}

TEST_F(QueryRunTest, AWriteToAReadOnlyDatabaseIsAPermanentFault) {
  // As root, chmod 0444 does not stop a write; mode=ro opens the file with
  // SQLITE_OPEN_READONLY, which does, for any user.
  config::ConnectionSpec spec = Spec(MakeTable("ro.db", 10));
  spec.sql.query["mode"] = "ro";
  std::shared_ptr<Connection> connection = Open(spec);
  ASSERT_NE(connection, nullptr);
  // A writing statement through Query (RETURNING) runs on the writer, which
  // mode=ro opened read-only too.
  std::unique_ptr<QueryRun> run =
      Start(connection, "INSERT INTO t VALUES (11, 'x') RETURNING id",
            absl::ZeroDuration());
  Reply reply = Drain(*run);
  ExpectPermanent(reply, counters_, "readonly database");
}

}  // namespace
}  // namespace connbroker::server
