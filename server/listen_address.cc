// The default listen address, the preparation of a Unix socket path and the
// checks of its directory.
#include "server/listen_address.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

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

// "uid 65534 (nobody)", or just "uid 65534" when it has no name.
std::string DescribeUser(uid_t uid) {
  std::vector<char> buffer(16384);
  passwd entry;
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr) {
    return absl::StrCat("uid ", uid, " (", found->pw_name, ")");
  }
  return absl::StrCat("uid ", uid);
}

std::string DescribeGroup(gid_t gid) {
  std::vector<char> buffer(16384);
  group entry;
  group* found = nullptr;
  if (::getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr) {
    return absl::StrCat("gid ", gid, " (", found->gr_name, ")");
  }
  return absl::StrCat("gid ", gid);
}

std::string Mode(mode_t mode) { return absl::StrFormat("%04o", mode & 07777); }

// Makes the socket directory: 0700, or 0710 owned by `group`, whose members
// then reach the socket (0660) but cannot list or change the directory.
absl::Status CreateSocketDirectory(const std::filesystem::path& directory,
                                   const std::optional<SocketGroup>& group) {
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create socket directory ", directory.string(),
                     ": ", error.message()));
  }
  // chmod after chown: chown may clear set-id bits, and the group must not
  // get search rights before the directory is its own.
  if (::chmod(directory.c_str(), 0700) != 0 ||
      (group.has_value() &&
       (::chown(directory.c_str(), static_cast<uid_t>(-1), group->gid) != 0 ||
        ::chmod(directory.c_str(), 0710) != 0))) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot set up socket directory ", directory.string(),
                     ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// The rules of the socket directory (see PrepareListenAddress).
absl::Status CheckSocketDirectory(const std::string& dir,
                                  const std::optional<SocketGroup>& group) {
  struct stat info;
  if (::lstat(dir.c_str(), &info) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot inspect socket directory ", dir, ": ", std::strerror(errno)));
  }
  if (S_ISLNK(info.st_mode)) {
    // The link's target can change under the daemon: whoever controls the
    // link decides where clients' connections go.
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory ", dir,
        " is a symbolic link; listen on a path in the real directory, or in "
        "another directory the daemon's user owns with mode 0700"));
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("socket directory ", dir, " is not a directory"));
  }
  const uid_t euid = ::geteuid();
  if (info.st_uid != euid) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory ", dir, " is owned by ", DescribeUser(info.st_uid),
        ", not by the daemon's user, ", DescribeUser(euid),
        ": its owner could replace the socket. Listen in a directory of the "
        "daemon's own (--listen unix:/path/of/your/own/connbroker.sock), or "
        "run the daemon as that user"));
  }
  if ((info.st_mode & 022) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket directory ", dir, " has mode ", Mode(info.st_mode),
        ", so group or others may write to it and replace the socket. Run "
        "chmod ",
        group.has_value() ? "710 " : "700 ", dir,
        ", or listen in another directory"));
  }
  if (group.has_value() &&
      (info.st_gid != group->gid || (info.st_mode & 010) == 0)) {
    // Changing who reaches an existing directory ($XDG_RUNTIME_DIR, say) is
    // the administrator's decision, not the daemon's.
    return absl::FailedPreconditionError(absl::StrCat(
        "socket_group is '", group->name, "' but socket directory ", dir,
        " belongs to ", DescribeGroup(info.st_gid), " with mode ",
        Mode(info.st_mode), "; run chgrp ", group->name, " ", dir,
        " && chmod 710 ", dir,
        ", or listen in a directory that does not exist yet (the daemon "
        "then makes it)"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultListenAddress() {
  const char* runtime_dir = std::getenv("XDG_RUNTIME_DIR");
  if (runtime_dir != nullptr && runtime_dir[0] != '\0') {
    return absl::StrCat("unix:", runtime_dir, "/connbroker.sock");
  }
  return absl::StrCat("unix:/tmp/connbroker-", ::getuid(), "/connbroker.sock");
}

absl::StatusOr<std::optional<SocketGroup>> ResolveSocketGroup(
    const std::string& name) {
  if (name.empty()) return std::nullopt;
  std::vector<char> buffer(16384);
  group entry;
  group* found = nullptr;
  int error =
      ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (error != 0 || found == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "socket_group '", name, "' is not a group on this machine",
        error != 0 ? absl::StrCat(" (", std::strerror(error), ")") : ""));
  }
  return SocketGroup{name, found->gr_gid};
}

absl::StatusOr<std::string> PrepareListenAddress(
    const std::string& address, const std::optional<SocketGroup>& group) {
  if (absl::StartsWith(address, "unix-abstract:")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", address,
        "': abstract Unix sockets have no permissions (any local user could "
        "connect); use unix:/abs/path"));
  }
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
  const std::filesystem::path directory =
      std::filesystem::path(path).parent_path();
  struct stat existing;
  if (::lstat(directory.c_str(), &existing) != 0 && errno == ENOENT) {
    if (absl::Status s = CreateSocketDirectory(directory, group); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckSocketDirectory(directory.string(), group);
      !s.ok()) {
    return s;
  }
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

absl::Status ShareSocketWithGroup(const std::string& path,
                                  const SocketGroup& group) {
  if (::chown(path.c_str(), static_cast<uid_t>(-1), group.gid) != 0 ||
      ::chmod(path.c_str(), 0660) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot give socket ", path, " to group '", group.name,
                     "': ", std::strerror(errno),
                     " (the daemon's user must be a member of the group)"));
  }
  return absl::OkStatus();
}

bool IsLoopbackAddress(const std::string& address) {
  absl::string_view rest = address;
  // gRPC also takes these scheme prefixes for TCP addresses.
  for (absl::string_view scheme : {"dns:", "ipv4:", "ipv6:"}) {
    if (absl::ConsumePrefix(&rest, scheme)) break;
  }
  absl::ConsumePrefix(&rest, "//");
  std::string host;
  if (absl::ConsumePrefix(&rest, "[")) {
    const size_t close = rest.find(']');
    if (close == absl::string_view::npos) return false;
    host = std::string(rest.substr(0, close));
  } else {
    const size_t colon = rest.rfind(':');
    host = std::string(
        colon == absl::string_view::npos ? rest : rest.substr(0, colon));
  }
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  in_addr v4;
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6);
  }
  return false;
}

}  // namespace connbroker::server
