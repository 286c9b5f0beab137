// The default listen address and the preparation of a Unix socket path.
#include "server/listen_address.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace connbroker::server {
namespace {

// True when something accepts connections on the socket at `path`.
bool SocketAnswers(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  bool answers = ::connect(fd, reinterpret_cast<sockaddr*>(&address),
                           sizeof(address)) == 0;
  ::close(fd);
  return answers;
}

}  // namespace

std::string DefaultListenAddress() {
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && runtime_dir[0] != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/connbroker.sock");
  }
  return absl::StrCat("unix:/tmp/connbroker-", ::getuid(), "/connbroker.sock");
}

absl::StatusOr<std::string> PrepareListenAddress(const std::string& address) {
  if (!absl::StartsWith(address, "unix:")) return std::string();
  std::string path = address.substr(5);
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", address, "' needs an absolute path: unix:/..."));
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path '", path, "' is longer than ",
                     sizeof(sockaddr_un::sun_path) - 1, " characters"));
  }
  std::filesystem::path directory = std::filesystem::path(path).parent_path();
  std::error_code error;
  if (!std::filesystem::exists(directory, error)) {
    // Only the daemon's user may reach a socket in a directory it made.
    std::filesystem::create_directories(directory, error);
    if (error || ::chmod(directory.c_str(), 0700) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create socket directory ", directory.string(),
                       ": ", error ? error.message() : std::strerror(errno)));
    }
  }
  struct stat existing;
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; not replacing it"));
    }
    if (SocketAnswers(path)) {
      return absl::FailedPreconditionError(
          absl::StrCat("another daemon is already serving on ", path));
    }
    ::unlink(path.c_str());  // stale: its daemon is gone
  }
  return path;
}

}  // namespace connbroker::server
