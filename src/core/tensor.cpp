#include "elastic/tensor.h"

#include <cstring>

#include "elastic/error.h"

namespace elastic {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}

std::vector<float> TensorView::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_to_f32(out.data(), data, dtype, out.size());
  return out;
}

std::vector<int64_t> TensorView::to_i64() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < out.size(); ++i) {
    switch (dtype) {
      case DType::i64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = v; break; }
      case DType::i32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
      case DType::i16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
      case DType::i8: out[i] = static_cast<int8_t>(p[i]); break;
      case DType::u8: case DType::boolean: out[i] = p[i]; break;
      default: throw Error("tensor '" + name + "': dtype " + std::string(dtype_name(dtype)) +
                           " is not an integer type");
    }
  }
  return out;
}

}  // namespace elastic
