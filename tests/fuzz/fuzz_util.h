// Helpers shared by the fuzzers: a scratch directory removed at exit.
#ifndef CONNBROKER_TESTS_FUZZ_FUZZ_UTIL_H_
#define CONNBROKER_TESTS_FUZZ_FUZZ_UTIL_H_

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace connbroker::fuzz {

// A fresh directory under $TMPDIR (else /tmp) for this process, removed when
// it exits through exit(); libFuzzer often ends with _Exit instead, so
// run.sh points TMPDIR into its own output directory. libFuzzer runs many
// processes side by side (-jobs), so the name is unique per process rather than
// fixed.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
        "/connbroker-fuzz.XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    auto* path = new std::string(pattern);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(ScratchDir(), ignored);
    });
    return path;
  }();
  return *dir;
}

}  // namespace connbroker::fuzz

#endif  // CONNBROKER_TESTS_FUZZ_FUZZ_UTIL_H_
