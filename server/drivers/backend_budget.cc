// BackendBudget: the daemon-wide bounds on backends and open files.
#include "server/drivers/backend_budget.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace connbroker::server {
namespace {

// The soft RLIMIT_NOFILE, or -1 when unknown or unlimited.
int SoftOpenFilesLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 ||
      limit.rlim_cur == RLIM_INFINITY) {
    return -1;
  }
  return static_cast<int>(std::min<rlim_t>(limit.rlim_cur, 1 << 30));
}

}  // namespace

BackendBudget::BackendBudget(Limits limits,
                             std::function<int()> count_open_files)
    : limits_(limits),
      count_open_files_(count_open_files ? std::move(count_open_files)
                                         : &CountOpenFiles) {}

absl::Status BackendBudget::TryAcquire(Unit* unit) {
  absl::Status status = TryOnce(unit);
  if (status.ok() || !reclaim_) {
    if (!status.ok()) {
      absl::MutexLock lock(&mu_);
      ++refused_;
    }
    return status;
  }
  bool reclaim = false;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    if (now - last_reclaim_ >= absl::Milliseconds(100)) {
      last_reclaim_ = now;
      reclaim = true;
    }
  }
  if (reclaim) {
    reclaim_();  // closes idle backends; their units come back at once
    status = TryOnce(unit);
  }
  if (!status.ok()) {
    absl::MutexLock lock(&mu_);
    ++refused_;
  }
  return status;
}

absl::Status BackendBudget::TryOnce(Unit* unit) {
  // Counted outside the lock: concurrent opens need not wait for each
  // other's directory read; reserved_files absorbs the overlap.
  const int files = count_open_files_();
  if (files >= 0) {
    // The process cannot use more than its soft limit, whatever broker.toml
    // says (RaiseOpenFilesLimit may have been held back by the hard limit).
    const int soft = SoftOpenFilesLimit();
    const int usable = soft > 0 ? std::min(limits_.max_open_files, soft)
                                : limits_.max_open_files;
    if (files >= usable - limits_.reserved_files) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many open files in the daemon (", files,
          " open; limits.max_open_files = ", limits_.max_open_files,
          usable < limits_.max_open_files
              ? absl::StrCat(", held to ", usable, " by RLIMIT_NOFILE")
              : "",
          ", ", limits_.reserved_files,
          " kept for client sockets); retry later or raise it in broker.toml"));
    }
  }
  absl::MutexLock lock(&mu_);
  if (open_ >= limits_.max_backends) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "daemon-wide backend limit reached (limits.max_backends = ",
        limits_.max_backends,
        " open backends); retry later or raise it in broker.toml"));
  }
  ++open_;
  *unit = Unit(this);
  return absl::OkStatus();
}

int BackendBudget::open() const {
  absl::MutexLock lock(&mu_);
  return open_;
}

int64_t BackendBudget::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

void BackendBudget::Release() {
  absl::MutexLock lock(&mu_);
  --open_;
}

int CountOpenFiles() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int count = 0;
  while (const struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  // The directory's own descriptor was counted while it was open.
  return std::max(0, count - 1);
}

absl::Status RaiseOpenFilesLimit(int max_open_files) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read RLIMIT_NOFILE: ", std::strerror(errno)));
  }
  rlim_t wanted = static_cast<rlim_t>(std::max(max_open_files, 0));
  if (limit.rlim_max != RLIM_INFINITY)
    wanted = std::min(wanted, limit.rlim_max);
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur >= wanted) {
    return absl::OkStatus();  // never lowered
  }
  if (limit.rlim_cur == RLIM_INFINITY) return absl::OkStatus();
  limit.rlim_cur = wanted;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot raise RLIMIT_NOFILE to ", wanted, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace connbroker::server
