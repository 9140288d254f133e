// Non-owning tensor views. Shapes are row-major, outermost first, as in safetensors / PyTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "elastic/dtype.h"

namespace elastic {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[4, 777, 64]"

struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  const void* data = nullptr;

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  // Copy converted to fp32 (float dtypes only).
  std::vector<float> to_f32() const;
  // Integer tensors widened to int64 (i64/i32/i16/i8/u8/bool).
  std::vector<int64_t> to_i64() const;
};

}  // namespace elastic
