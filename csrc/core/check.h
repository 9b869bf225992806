// Argument validation at the Python boundary. Every failure throws
// ValueError or TypeError with the argument's name, what was expected and what came.
#pragma once

#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <string>

#include "core/tensor.h"

namespace convloc {

// Mapped to Python's ValueError / TypeError by the bindings.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}

template <typename... Args>
[[noreturn]] void fail_value(const Args&... args) {
  throw ValueError(cat(args...));
}
template <typename... Args>
[[noreturn]] void fail_type(const Args&... args) {
  throw TypeError(cat(args...));
}

// Shape pattern: -1 matches any size. `pattern` is how the message spells it, e.g. "[N, 4]".
void check_shape(const TensorView& t, std::initializer_list<int64_t> dims, const char* pattern);
void check_ndim(const TensorView& t, int64_t ndim, const char* pattern);
void check_float(const TensorView& t);  // float32 or float64
// float32 or float64, or (CPU arrays) float16 or bfloat16.
void check_float_or_half(const TensorView& t);
void check_dtype(const TensorView& t, DType dtype);
void check_same_dtype(const TensorView& a, const TensorView& b);
void check_same_device(const TensorView& a, const TensorView& b);
void check_contiguous(const TensorView& t);
void check_writable(const TensorView& t);  // not read-only
void check_finite(const TensorView& t);    // no NaN or inf (CPU scan; CUDA arrays checked on device)
void check_same_size(const TensorView& a, int64_t dim_a, const TensorView& b, int64_t dim_b);
// Product of sizes with overflow check: refuses absurd declared sizes before anything is allocated.
int64_t checked_numel(std::initializer_list<int64_t> sizes, const char* what);
void check_cpu_or_cuda(const TensorView& t);

}  // namespace convloc
