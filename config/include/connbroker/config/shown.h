// Shown: a client's text, cut short for an error message.
//
// Errors quote what the caller sent (a name, a key, a handle) so that a
// person can see what was wrong. A shared daemon must bound what it echoes:
// a 1 MB name would otherwise make the reply's status message larger than
// gRPC's metadata limit and turn a clear NOT_FOUND into a transport error.
#ifndef CONNBROKER_CONFIG_SHOWN_H_
#define CONNBROKER_CONFIG_SHOWN_H_

#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace connbroker::config {

// How many bytes of a client's text a message quotes.
inline constexpr size_t kShownBytes = 64;

// `text` if it is at most kShownBytes long, else its first bytes (never
// splitting a UTF-8 sequence) followed by "... (N bytes)".
inline std::string Shown(absl::string_view text) {
  if (text.size() <= kShownBytes) return std::string(text);
  size_t cut = kShownBytes;
  // Back off continuation bytes (10xxxxxx) so the prefix stays valid UTF-8.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return absl::StrCat(text.substr(0, cut), "... (", text.size(), " bytes)");
}

}  // namespace connbroker::config

#endif  // CONNBROKER_CONFIG_SHOWN_H_
