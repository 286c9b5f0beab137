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
    mixed_->Add()->set_bool_value(value);
  } else {
    bools_->Add(value);
  }
  return 1 + kCellOverhead;
}

size_t ColumnBuilder::AppendInt64(int row, int64_t value) {
  if (Prepare(v1::VALUE_KIND_INT64, row) == v1::VALUE_KIND_MIXED) {
    mixed_->Add()->set_int64_value(value);
  } else {
    int64s_->Add(value);
  }
  return 8 + kCellOverhead;
}

size_t ColumnBuilder::AppendDouble(int row, double value) {
  if (Prepare(v1::VALUE_KIND_DOUBLE, row) == v1::VALUE_KIND_MIXED) {
    mixed_->Add()->set_double_value(value);
  } else {
    doubles_->Add(value);
  }
  return 8 + kCellOverhead;
}

size_t ColumnBuilder::AppendText(int row, absl::string_view value) {
  if (!IsValidUtf8(value)) return AppendBlob(row, value);
  if (Prepare(v1::VALUE_KIND_TEXT, row) == v1::VALUE_KIND_MIXED) {
    mixed_->Add()->mutable_text_value()->assign(value.data(), value.size());
  } else {
    // Add() hands back a string a previous batch left (cleared, its buffer
    // kept) when there is one: no allocation per cell.
    strings_->Add()->assign(value.data(), value.size());
  }
  return value.size() + kCellOverhead;
}

size_t ColumnBuilder::AppendBlob(int row, absl::string_view value) {
  if (Prepare(v1::VALUE_KIND_BLOB, row) == v1::VALUE_KIND_MIXED) {
    mixed_->Add()->mutable_blob_value()->assign(value.data(), value.size());
  } else {
    strings_->Add()->assign(value.data(), value.size());
  }
  return value.size() + kCellOverhead;
}

void ColumnBuilder::Finish(int rows) {
  // No typed cell: the wire says "all NULL" by carrying no vector, so drop
  // the one a previous batch left.
  if (kind_ == v1::VALUE_KIND_NULL) out_->clear_values();
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
      mixed_->Add()->set_null_value(v1::NULL_VALUE);
      break;
    case v1::VALUE_KIND_BOOL:
      bools_->Add(false);
      break;
    case v1::VALUE_KIND_INT64:
      int64s_->Add(0);
      break;
    case v1::VALUE_KIND_DOUBLE:
      doubles_->Add(0);
      break;
    case v1::VALUE_KIND_TEXT:
    case v1::VALUE_KIND_BLOB:
      strings_->Add();
      break;
    default:
      break;  // no vector yet: StartTyped fills the rows before it
  }
}

void ColumnBuilder::StartTyped(v1::ValueKind kind, int row) {
  // mutable_*() keeps the vector StartBatch emptied when it is of this kind,
  // and replaces it otherwise.
  kind_ = kind;
  switch (kind) {
    case v1::VALUE_KIND_BOOL:
      bools_ = out_->mutable_bools()->mutable_values();
      bools_->Resize(row, false);
      break;
    case v1::VALUE_KIND_INT64:
      int64s_ = out_->mutable_int64s()->mutable_values();
      int64s_->Resize(row, 0);
      break;
    case v1::VALUE_KIND_DOUBLE:
      doubles_ = out_->mutable_doubles()->mutable_values();
      doubles_->Resize(row, 0);
      break;
    case v1::VALUE_KIND_TEXT:
      strings_ = out_->mutable_texts()->mutable_values();
      for (int i = 0; i < row; ++i) strings_->Add();
      break;
    default:
      strings_ = out_->mutable_blobs()->mutable_values();
      for (int i = 0; i < row; ++i) strings_->Add();
      break;
  }
}

void ColumnBuilder::ConvertToMixed(int row) {
  v1::ColumnVector typed;
  typed.Swap(out_);  // out_ is now empty; `typed` holds the old vector
  mixed_ = out_->mutable_mixed()->mutable_values();
  mixed_->Reserve(row + 1);
  size_t next_null = 0;
  for (int r = 0; r < row; ++r) {
    v1::Value* value = mixed_->Add();
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

namespace {

// Empties `column`'s cells but keeps its vector, and with it the vector's
// capacity and, for text and blobs, the strings and their buffers.
void EmptyColumn(v1::ColumnVector* column) {
  column->mutable_nulls()->Clear();
  switch (column->values_case()) {
    case v1::ColumnVector::kBools:
      column->mutable_bools()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::kInt64S:
      column->mutable_int64s()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::kDoubles:
      column->mutable_doubles()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::kTexts:
      column->mutable_texts()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::kBlobs:
      column->mutable_blobs()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::kMixed:
      column->mutable_mixed()->mutable_values()->Clear();
      break;
    case v1::ColumnVector::VALUES_NOT_SET:
      break;
  }
}

}  // namespace

std::vector<ColumnBuilder> StartBatch(int columns, v1::RowBatch* batch) {
  // Clear() would free the columns' vectors (a oneof is cleared by deleting
  // it): set the columns aside, clear whatever else the batch holds, and
  // empty them in place instead.
  google::protobuf::RepeatedPtrField<v1::ColumnVector> kept;
  kept.Swap(batch->mutable_columns());
  batch->Clear();
  batch->mutable_columns()->Swap(&kept);
  auto* vectors = batch->mutable_columns();
  if (vectors->size() > columns) {
    vectors->DeleteSubrange(columns, vectors->size() - columns);
  }
  while (vectors->size() < columns) vectors->Add();
  std::vector<ColumnBuilder> builders;
  builders.reserve(columns);
  for (v1::ColumnVector& column : *vectors) {
    EmptyColumn(&column);
    builders.emplace_back(&column);
  }
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
