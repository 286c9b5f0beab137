// TempDir: a fresh directory for one test, removed with everything in it when
// the object dies. Shared by the unit and integration tests.
#ifndef CONNBROKER_TESTS_TESTING_TEMP_DIR_H_
#define CONNBROKER_TESTS_TESTING_TEMP_DIR_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace connbroker::testing {

class TempDir {
 public:
  // mkdtemp under the system temp directory; the name stays short because
  // Unix socket paths inside it must fit in 108 bytes.
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "cbtest.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed for " + pattern);
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  // The full path of `name` inside the directory.
  std::string Path(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

  // Writes `text` to `name` (making its parent directories) and returns the
  // full path.
  std::string Write(const std::string& name, const std::string& text) const {
    const std::filesystem::path file = Path(name);
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
    return file.string();
  }

 private:
  std::string path_;
};

}  // namespace connbroker::testing

#endif  // CONNBROKER_TESTS_TESTING_TEMP_DIR_H_
