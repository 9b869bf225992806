#include "lattice/lattice_ops.h"

#include "core/dispatch.h"
#include "lattice/lattice.h"

namespace convloc::ops {
namespace {

// values / out: [N, C] or [B, N, C] matching the features' batch and points.
void check_values(const TensorView& v, const TensorView& f, int64_t batch, int64_t n) {
  check_same_dtype(f, v);
  check_same_device(f, v);
  if (f.dim() == 3)
    check_shape(v, {batch, n, -1}, "[B, N, C] (B, N from features)");
  else
    check_shape(v, {n, -1}, "[N, C] (N from features)");
}

}  // namespace

FeatureShape check_features(const TensorView& f) {
  if (f.dim() != 2 && f.dim() != 3) fail_value(f.name, ": expected shape [N, d] or [B, N, d], got ", f.shape_str());
  check_float(f);
  const int64_t d = f.size(-1);
  if (d < 1 || d > kLatticeMaxDim)
    fail_value(f.name, ": expected 1 <= d <= ", kLatticeMaxDim, " features per point, got shape ", f.shape_str());
  return {f.dim() == 3 ? f.size(0) : 1, f.size(-2), static_cast<int>(d)};
}

void permutohedral_filter(const TensorView& f, const TensorView& v, const TensorView& out, bool transpose,
                          bool exclude_self, void* stream) {
  check_cpu_or_cuda(f);
  const FeatureShape s = check_features(f);
  check_values(v, f, s.batch, s.n);
  check_same_dtype(v, out);
  check_same_device(v, out);
  if (out.shape != v.shape) fail_value("out: expected shape ", v.shape_str(), ", got ", out.shape_str());
  const int64_t c = v.size(-1);
  (void)stream;
  CONVLOC_DISPATCH_FLOAT(f, [&] {
    const auto* pf = f.ptr<scalar_t>();
    const auto* pv = v.ptr<scalar_t>();
    auto* po = out.ptr<scalar_t>();
    for (int64_t b = 0; b < s.batch; ++b) {
      const auto* fb = pf + b * s.n * s.d;
      const auto* vb = pv + b * s.n * c;
      auto* ob = po + b * s.n * c;
      CONVLOC_ON_DEVICE(f, permutohedral_filter_cpu(fb, s.n, s.d, vb, ob, c, transpose, exclude_self),
                        permutohedral_filter_cuda(fb, s.n, s.d, vb, ob, c, transpose, exclude_self, stream));
    }
  });
}

}  // namespace convloc::ops
