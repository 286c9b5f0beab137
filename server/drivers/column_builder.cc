// ColumnBuilder: typed column vectors, switching to `mixed` when needed.
#include "server/drivers/column_builder.h"

#include <cstring>

namespace connbroker::server {
namespace {

// About what a cell costs on the wire: its payload plus a tag and a length.
constexpr size_t kCellOverhead = 2;

}  // namespace

bool IsValidUtf8(absl::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    // Fast path: eight ASCII bytes at a time.
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int length;
    uint32_t min;
    uint32_t code;
    if ((c & 0xe0) == 0xc0) {
      length = 2, min = 0x80, code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      length = 3, min = 0x800, code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      length = 4, min = 0x10000, code = c & 0x07;
    } else {
      return false;
    }
    if (i + length > n) return false;
    for (int k = 1; k < length; ++k) {
      unsigned char cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      code = (code << 6) | (cc & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

size_t ColumnBuilder::AppendNull(int row) {
  null_rows_.push_back(row);
  AppendPlaceholder();
  return 1;
}

size_t ColumnBuilder::AppendBool(int row, bool value) {
  if (Prepare(v1::VALUE_KIND_BOOL, row) == v1::VALUE_KIND_MIXED) {
    out_->mutable_mixed()->add_values()->set_bool_value(value);
  } else {
    out_->mutable_bools()->add_values(value);
  }
  return 1 + kCellOverhead;
}

size_t ColumnBuilder::AppendInt64(int row, int64_t value) {
  if (Prepare(v1::VALUE_KIND_INT64, row) == v1::VALUE_KIND_MIXED) {
    out_->mutable_mixed()->add_values()->set_int64_value(value);
  } else {
    out_->mutable_int64s()->add_values(value);
  }
  return 8 + kCellOverhead;
}

size_t ColumnBuilder::AppendDouble(int row, double value) {
  if (Prepare(v1::VALUE_KIND_DOUBLE, row) == v1::VALUE_KIND_MIXED) {
    out_->mutable_mixed()->add_values()->set_double_value(value);
  } else {
    out_->mutable_doubles()->add_values(value);
  }
  return 8 + kCellOverhead;
}

size_t ColumnBuilder::AppendText(int row, absl::string_view value) {
  if (!IsValidUtf8(value)) return AppendBlob(row, value);
  if (Prepare(v1::VALUE_KIND_TEXT, row) == v1::VALUE_KIND_MIXED) {
    out_->mutable_mixed()->add_values()->mutable_text_value()->assign(
        value.data(), value.size());
  } else {
    out_->mutable_texts()->add_values()->assign(value.data(), value.size());
  }
  return value.size() + kCellOverhead;
}

size_t ColumnBuilder::AppendBlob(int row, absl::string_view value) {
  if (Prepare(v1::VALUE_KIND_BLOB, row) == v1::VALUE_KIND_MIXED) {
    out_->mutable_mixed()->add_values()->mutable_blob_value()->assign(
        value.data(), value.size());
  } else {
    out_->mutable_blobs()->add_values()->assign(value.data(), value.size());
  }
  return value.size() + kCellOverhead;
}

void ColumnBuilder::Finish(int rows) {
  if (null_rows_.empty()) return;
  auto* nulls = out_->mutable_nulls();
  nulls->Resize(rows, false);
  for (int row : null_rows_) nulls->Set(row, true);
}

v1::ValueKind ColumnBuilder::Prepare(v1::ValueKind kind, int row) {
  if (kind_ == v1::VALUE_KIND_NULL) {
    StartTyped(kind, row);
  } else if (kind_ != kind && kind_ != v1::VALUE_KIND_MIXED) {
    ConvertToMixed(row);
  }
  return kind_;
}

void ColumnBuilder::AppendPlaceholder() {
  switch (kind_) {
    case v1::VALUE_KIND_MIXED:
      out_->mutable_mixed()->add_values()->set_null_value(v1::NULL_VALUE);
      break;
    case v1::VALUE_KIND_BOOL:
      out_->mutable_bools()->add_values(false);
      break;
    case v1::VALUE_KIND_INT64:
      out_->mutable_int64s()->add_values(0);
      break;
    case v1::VALUE_KIND_DOUBLE:
      out_->mutable_doubles()->add_values(0);
      break;
    case v1::VALUE_KIND_TEXT:
      out_->mutable_texts()->add_values();
      break;
    case v1::VALUE_KIND_BLOB:
      out_->mutable_blobs()->add_values();
      break;
    default:
      break;  // no vector yet: StartTyped fills the rows before it
  }
}

void ColumnBuilder::StartTyped(v1::ValueKind kind, int row) {
  kind_ = kind;
  switch (kind) {
    case v1::VALUE_KIND_BOOL:
      out_->mutable_bools()->mutable_values()->Resize(row, false);
      break;
    case v1::VALUE_KIND_INT64:
      out_->mutable_int64s()->mutable_values()->Resize(row, 0);
      break;
    case v1::VALUE_KIND_DOUBLE:
      out_->mutable_doubles()->mutable_values()->Resize(row, 0);
      break;
    case v1::VALUE_KIND_TEXT:
      out_->mutable_texts();
      for (int i = 0; i < row; ++i) out_->mutable_texts()->add_values();
      break;
    default:
      out_->mutable_blobs();
      for (int i = 0; i < row; ++i) out_->mutable_blobs()->add_values();
      break;
  }
}

void ColumnBuilder::ConvertToMixed(int row) {
  v1::ColumnVector typed;
  typed.Swap(out_);  // out_ is now empty; `typed` holds the old vector
  auto* values = out_->mutable_mixed()->mutable_values();
  values->Reserve(row + 1);
  size_t next_null = 0;
  for (int r = 0; r < row; ++r) {
    v1::Value* value = values->Add();
    if (next_null < null_rows_.size() && null_rows_[next_null] == r) {
      ++next_null;
      value->set_null_value(v1::NULL_VALUE);
      continue;
    }
    switch (kind_) {
      case v1::VALUE_KIND_BOOL:
        value->set_bool_value(typed.bools().values(r));
        break;
      case v1::VALUE_KIND_INT64:
        value->set_int64_value(typed.int64s().values(r));
        break;
      case v1::VALUE_KIND_DOUBLE:
        value->set_double_value(typed.doubles().values(r));
        break;
      case v1::VALUE_KIND_TEXT:
        value->set_text_value(
            std::move(*typed.mutable_texts()->mutable_values(r)));
        break;
      default:
        value->set_blob_value(
            std::move(*typed.mutable_blobs()->mutable_values(r)));
        break;
    }
  }
  kind_ = v1::VALUE_KIND_MIXED;
}

std::vector<ColumnBuilder> StartBatch(int columns, v1::RowBatch* batch) {
  batch->Clear();
  std::vector<ColumnBuilder> builders;
  builders.reserve(columns);
  for (int i = 0; i < columns; ++i) builders.emplace_back(batch->add_columns());
  return builders;
}

void SettleSchema(const std::vector<ColumnBuilder>& builders,
                  const std::vector<bool>& declared_not_null,
                  v1::Schema* schema) {
  for (size_t i = 0; i < builders.size(); ++i) {
    v1::Column* column = schema->mutable_columns(static_cast<int>(i));
    column->set_kind(builders[i].kind());
    const bool not_null = i < declared_not_null.size() && declared_not_null[i];
    column->set_nullable(!not_null || builders[i].has_null());
  }
}

}  // namespace connbroker::server
