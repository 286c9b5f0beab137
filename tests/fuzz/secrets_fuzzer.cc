// Fuzzes secrets.toml: the bytes are written as a secrets file, loaded as the
// daemon loads it, and every connection in it is resolved. Errors are fine;
// a crash, a hang, an escaping exception (toml11 throws on bad input and
// config/ must catch it at its edge) or a sanitizer report is not.
//
// An input holding a line "#%" is split there into two files, the second
// merged over the first, so merging key by key is fuzzed too.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "connbroker/config/broker_settings.h"
#include "connbroker/config/secrets.h"
#include "connbroker/config/spec.h"
#include "tests/fuzz/fuzz_util.h"

namespace connbroker::fuzz {
namespace {

void WriteFile(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out) std::abort();  // the scratch directory is broken, not config/
}

std::optional<std::string> NoEnv(const std::string&) { return std::nullopt; }

}  // namespace
}  // namespace connbroker::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace connbroker;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  static const std::string first = fuzz::ScratchDir() + "/first.toml";
  static const std::string second = fuzz::ScratchDir() + "/second.toml";

  std::vector<config::SecretsFile> files = {{first, /*required=*/true}};
  constexpr std::string_view kSplit = "\n#%\n";
  if (const size_t split = input.find(kSplit); split != input.npos) {
    fuzz::WriteFile(first, input.substr(0, split));
    fuzz::WriteFile(second, input.substr(split + kSplit.size()));
    files.push_back({second, /*required=*/true});
  } else {
    fuzz::WriteFile(first, input);
  }

  absl::StatusOr<config::Secrets> secrets = config::Secrets::Load(files);
  if (!secrets.ok()) return 0;
  static const config::BrokerSettings settings;
  for (const std::string& name : secrets->ConnectionNames()) {
    // As a client names it, and once more with the type given by the
    // request, which reaches the sql part of sections without a type.
    for (const char* type : {"", "sql"}) {
      absl::StatusOr<config::ConnectionSpec> spec = config::ResolveSpec(
          {name, type, {}}, *secrets, fuzz::NoEnv, settings);
      if (spec.ok()) (void)spec->CanonicalKey();
    }
  }
  return 0;
}
