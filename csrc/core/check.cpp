#include "core/check.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/common.h"
#include "core/parallel.h"

namespace convloc {

void check_ndim(const TensorView& t, int64_t ndim, const char* pattern) {
  if (t.dim() != ndim) fail_value(t.name, ": expected a ", ndim, "-D array ", pattern, ", got shape ", t.shape_str());
}

void check_shape(const TensorView& t, std::initializer_list<int64_t> dims, const char* pattern) {
  bool ok = t.dim() == static_cast<int64_t>(dims.size());
  int64_t i = 0;
  for (int64_t d : dims) {
    if (ok && d >= 0 && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) fail_value(t.name, ": expected shape ", pattern, ", got ", t.shape_str());
}

void check_float(const TensorView& t) {
  if (t.dtype != DType::Float32 && t.dtype != DType::Float64)
    fail_type(t.name, ": expected float32 or float64, got ", dtype_name(t.dtype));
}

void check_float_or_half(const TensorView& t) {
  if (t.dtype == DType::Float32 || t.dtype == DType::Float64) return;
  if (t.dtype != DType::Float16 && t.dtype != DType::BFloat16)
    fail_type(t.name, ": expected float32, float64, float16 or bfloat16, got ", dtype_name(t.dtype));
  if (t.is_cuda())
    fail_type(t.name, ": expected float32 or float64 for CUDA arrays here, got ", dtype_name(t.dtype),
              " (convloc's Python functions convert CUDA half arrays to float32 first)");
}

void check_dtype(const TensorView& t, DType dtype) {
  if (t.dtype != dtype) fail_type(t.name, ": expected ", dtype_name(dtype), ", got ", dtype_name(t.dtype));
}

void check_same_dtype(const TensorView& a, const TensorView& b) {
  if (a.dtype != b.dtype)
    fail_type(b.name, ": expected the dtype of ", a.name, " (", dtype_name(a.dtype), "), got ", dtype_name(b.dtype));
}

void check_same_device(const TensorView& a, const TensorView& b) {
  if (a.device != b.device || a.device_id != b.device_id)
    fail_value(b.name, ": expected an array on ", a.name, "'s device (", a.device_str(), "), got ", b.device_str());
}

void check_contiguous(const TensorView& t) {
  if (!t.is_contiguous()) fail_value(t.name, ": expected a C-contiguous array");
}

void check_writable(const TensorView& t) {
  if (t.readonly) fail_value(t.name, ": expected a writable array, got a read-only one");
}

void check_cpu_or_cuda(const TensorView& t) {
  if (t.device == DeviceType::Other) fail_value(t.name, ": expected a CPU or CUDA array");
#ifndef CONVLOC_WITH_CUDA
  if (t.device == DeviceType::CUDA)
    fail_value(t.name,
               ": got a CUDA array, but this convloc build has no CUDA kernels "
               "(convloc.info()['compiled_with_cuda'] is False)");
#endif
}

// The largest exponent field among p[0, n) (all ones: an inf or NaN is there). On the bits, as a max
// that vectorises; a float test does not.
template <typename T, typename U>
CONVLOC_ALWAYS_INLINE U max_exponent(const T* p, int64_t n, U mask) {
  U top = 0;
  for (int64_t i = 0; i < n; ++i) {
    U bits;
    std::memcpy(&bits, p + i, sizeof bits);
    top = std::max(top, U(bits & mask));
  }
  return top;
}
CONVLOC_SIMD_FN(uint32_t, max_exponent_f32, (const float* p, int64_t n), { return max_exponent(p, n, 0x7f800000u); })
CONVLOC_SIMD_FN(uint64_t, max_exponent_f64, (const double* p, int64_t n),
                { return max_exponent(p, n, uint64_t(0x7ff0000000000000ull)); })

template <typename T>
static bool all_finite(const T* p, int64_t n) {
  constexpr int64_t kChunk = int64_t(1) << 16;
  std::vector<uint8_t> bad((n + kChunk - 1) / kChunk, 0);
  parallel_for(static_cast<int64_t>(bad.size()), 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t count = std::min(n - c * kChunk, kChunk);
      if constexpr (sizeof(T) == 4)
        bad[c] = max_exponent_f32(p + c * kChunk, count) == 0x7f800000u;
      else
        bad[c] = max_exponent_f64(p + c * kChunk, count) == 0x7ff0000000000000ull;
    }
  });
  return std::find(bad.begin(), bad.end(), 1) == bad.end();
}

void check_finite(const TensorView& t) {
  if (t.device != DeviceType::CPU) return;
  const int64_t n = t.numel();
  bool ok = true;
  if (t.dtype == DType::Float32)
    ok = all_finite(t.ptr<float>(), n);
  else if (t.dtype == DType::Float64)
    ok = all_finite(t.ptr<double>(), n);
  if (!ok) fail_value(t.name, ": expected finite values, got NaN or inf");
}

void check_same_size(const TensorView& a, int64_t dim_a, const TensorView& b, int64_t dim_b) {
  if (a.size(dim_a) != b.size(dim_b))
    fail_value(b.name, ": expected ", a.size(dim_a), " entries along dimension ", dim_b, " (as ", a.name, " has), got ",
               b.size(dim_b));
}

int64_t checked_numel(std::initializer_list<int64_t> sizes, const char* what) {
  int64_t n = 1;
  for (int64_t s : sizes) {
    if (s < 0) fail_value(what, ": sizes must be non-negative, got ", s);
    if (s != 0 && n > std::numeric_limits<int64_t>::max() / s)
      fail_value(what, ": the requested size overflows 64-bit indexing");
    n *= s;
  }
  return n;
}

}  // namespace convloc
