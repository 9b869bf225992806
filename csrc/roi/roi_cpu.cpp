// CPU RoI pool / align. Layout choice: the input is read channels-last (NHWC), as given or copied
// once, so each bilinear tap or max-pool cell is a contiguous run of channels and the per-channel
// arithmetic (identical, operation for operation, to torchvision's) vectorises across channels.
// Work is split over (roi, channel block) in the forward passes and over channel blocks in the
// backward passes; every output element is written by exactly one chunk.
//
// Arrays of float16 / bfloat16 (S) are computed in float32 (T = compute_t<S>): the input converts in
// its channels-last copy, the output gradient where it is gathered, and the results where they are
// written out, so the result is the float32 kernel's on the same values, rounded once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "core/parallel.h"
#include "core/simd.h"
#include "core/transpose.h"
#include "core/workspace.h"
#include "roi/roi.h"

namespace convloc {
namespace {

// The input [B, C, HW] (nhwc: [B, HW, C] in memory) as [B, HW, C] in the compute type: the array
// itself when it is that already, else a copy.
template <typename S>
class ChannelsLast {
 public:
  using T = compute_t<S>;
  ChannelsLast(const S* input, bool nhwc, int64_t b, int64_t c, int64_t hw) {
    if (nhwc && std::is_same_v<S, T>) {
      data_ = reinterpret_cast<const T*>(input);
      return;
    }
    copy_.resize(b * c * hw);
    if (nhwc)
      copy_parallel(input, copy_.data(), b * hw * c);
    else
      transpose_batch(input, copy_.data(), b, c, hw);
    data_ = copy_.data();
  }
  const T* data() const { return data_; }

 private:
  WorkspaceVector<T> copy_;  // (fresh pages would cost a fault each)
  const T* data_;
};

// The rois [K, 5] in the compute type (a copy for the half types).
template <typename S>
class ComputeRois {
 public:
  using T = compute_t<S>;
  ComputeRois(const S* rois, int64_t k) {
    if constexpr (std::is_same_v<S, T>) {
      data_ = rois;
    } else {
      copy_.assign(rois, rois + 5 * k);
      data_ = copy_.data();
    }
  }
  const T* data() const { return data_; }

 private:
  std::vector<T> copy_;
  const T* data_;
};

// The forward outputs are fresh buffers of up to hundreds of MB: advise_huge_pages (core/workspace.h).

// Channels per forward work item: enough for long vector loops, few enough that one item's
// outputs ([PH * PW, block]) stay in L1.
int64_t forward_block(int64_t c) { return std::min<int64_t>(c, 128); }

// Channels per backward block: the block's private gradient ([B, HW, block]) should fit in L2,
// and there should be enough blocks (8 or more) to share among threads. The block size does not
// change any sum: each cell adds its contributions in the same order whatever the split.
int64_t backward_block(int64_t c, int64_t cells, int64_t elem_size) {
  constexpr int64_t kBudget = int64_t(512) << 10;
  const int64_t fit = kBudget / std::max<int64_t>(cells * elem_size, 1);
  const int64_t block = std::max<int64_t>(16, std::min<int64_t>(fit, c / 8) / 16 * 16);
  return std::min(block, std::max<int64_t>(c, 1));
}

// g[bin * n + ch] = grad(k, c0 + ch, bin): one roi's gradient for a channel block, channels last.
template <typename S, typename T>
CONVLOC_ALWAYS_INLINE void gather_grad(const GradView<S>& grad, int64_t k, int64_t c0, int64_t n, int ph, int pw,
                                       T* __restrict g) {
  const int64_t bins = int64_t(ph) * pw;
  const S* src = grad.data + k * grad.sk + c0 * grad.sc;
  if (grad.sc == 0 && grad.sh == 0 && grad.sw == 0) return std::fill(g, g + bins * n, T(*src));  // out.sum()
  if (grad.sw == 1 && grad.sh == pw) return transpose(src, grad.sc, g, n, n, bins);              // bins contiguous
  for (int64_t ch = 0; ch < n; ++ch)
    for (int i = 0; i < ph; ++i)
      for (int j = 0; j < pw; ++j) g[(i * pw + j) * n + ch] = grad(k, c0 + ch, i, j);
}

// `name` runs the inlined template `body` (work items or channels [p, q)) per storage type: in SIMD
// versions on vectors of kVectorBytes (common.h), and on vectors of kWideBytes for CPUs with AVX-512.
#define ROI_SIMD_ENTRY_FOR(name, Args, body, S, suffix)                                 \
  CONVLOC_SIMD_FN(void, name##_##suffix, (const Args<S>& a, int64_t p, int64_t q),      \
                  { body<S, kVectorBytes>(a, p, q); })                                  \
  CONVLOC_WIDE_SIMD void name##_wide_##suffix(const Args<S>& a, int64_t p, int64_t q) { \
    body<S, kWideBytes>(a, p, q);                                                       \
  }                                                                                     \
  void name(const Args<S>& a, int64_t p, int64_t q) {                                   \
    (wide_vectors() ? name##_wide_##suffix : name##_##suffix)(a, p, q);                 \
  }
#define ROI_SIMD_ENTRY(name, Args, body)            \
  ROI_SIMD_ENTRY_FOR(name, Args, body, float, f32)  \
  ROI_SIMD_ENTRY_FOR(name, Args, body, double, f64) \
  ROI_SIMD_ENTRY_FOR(name, Args, body, Half, f16)   \
  ROI_SIMD_ENTRY_FOR(name, Args, body, BFloat16, bf16)

// ---- roi_pool ----

template <typename S, typename T = compute_t<S>>
struct PoolArgs {
  const T* x;  // [B, HW, C]
  const T* rois;
  int64_t c, h, w, block, blocks;
  T scale;
  int ph, pw;
  S* out;
  int32_t* argmax;
};

// Max and argmax of one bin for `lanes` channels, at most one vector of VB bytes (kLanesIn<T, VB>;
// a compile-time constant after inlining, so the running maxima stay in registers). Strict >: the
// first maximum wins.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void pool_lanes(const T* __restrict img, int64_t stride, int64_t width, int hs, int he, int ws,
                                      int we, bool empty, T* __restrict best, int32_t* __restrict where, int lanes) {
  T m[kLanesIn<T, VB>];
  int32_t at[kLanesIn<T, VB>];
  for (int l = 0; l < lanes; ++l) m[l] = empty ? T(0) : pool_initial_max<T>(), at[l] = -1;
  for (int y = hs; y < he; ++y)
    for (int x = ws; x < we; ++x) {
      const int32_t p = int32_t(y * width + x);
      const T* __restrict v = img + p * stride;
      for (int l = 0; l < lanes; ++l) {
        const bool gt = v[l] > m[l];
        m[l] = gt ? v[l] : m[l];
        at[l] = gt ? p : at[l];
      }
    }
  for (int l = 0; l < lanes; ++l) best[l] = m[l], where[l] = at[l];
}

// The same for full vectors, written with vector extensions: GCC turns the scalar version's
// selects into branches and masked stores instead of blends.
template <typename T, int VB>
struct PoolVec {
  using V = VecIn<T, VB>;
  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // lanes as wide as T's
  using I = VecIn<Index, VB>;
};

// Max m and argmax `at` (offset y * width + x) of one bin for a full vector of channels, each lane starting
// from m = initial, at = -1. Strict >: the first maximum of the bin wins, as in torchvision.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void pool_vector_argmax(const T* img, int64_t stride, int64_t width, int hs, int he, int ws,
                                              int we, T initial, typename PoolVec<T, VB>::V& m,
                                              typename PoolVec<T, VB>::I& at) {
  using V = typename PoolVec<T, VB>::V;
  using I = typename PoolVec<T, VB>::I;
  m = V{} + initial;
  at = I{} - 1;
  for (int y = hs; y < he; ++y)
    for (int x = ws; x < we; ++x) {
      const int32_t p = int32_t(y * width + x);
      V v;
      std::memcpy(&v, img + p * stride, sizeof(V));
      const I gt = v > m;
      m = gt ? v : m;
      at = gt ? I{} + static_cast<typename PoolVec<T, VB>::Index>(p) : at;
    }
}

// pool_lanes for a full vector.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void pool_vector(const T* img, int64_t stride, int64_t width, int hs, int he, int ws, int we,
                                       bool empty, T* best, int32_t* where) {
  typename PoolVec<T, VB>::V m;
  typename PoolVec<T, VB>::I at;
  pool_vector_argmax<T, VB>(img, stride, width, hs, he, ws, we, empty ? T(0) : pool_initial_max<T>(), m, at);
  std::memcpy(best, &m, sizeof(m));
  for (int l = 0; l < kLanesIn<T, VB>; ++l) where[l] = int32_t(at[l]);
}

// Backward of one non-empty bin for a full vector of channels: finds each channel's argmax
// (pool_vector_argmax), then adds the bin's gradient g to the cells that won (dst: channels last, row stride
// `row`). A masked add per cell of the bin, instead of a scalar scatter per channel.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void pool_vector_backward(const T* img, int64_t stride, int64_t width, int hs, int he, int ws,
                                                int we, const T* g, T* dst, int64_t row) {
  using V = typename PoolVec<T, VB>::V;
  V m;
  typename PoolVec<T, VB>::I at;
  pool_vector_argmax<T, VB>(img, stride, width, hs, he, ws, we, pool_initial_max<T>(), m, at);
  V gv;
  std::memcpy(&gv, g, sizeof(V));
  for (int y = hs; y < he; ++y)
    for (int x = ws; x < we; ++x) {
      const int32_t p = int32_t(y * width + x);
      V d;
      std::memcpy(&d, dst + p * row, sizeof(V));
      d = at == static_cast<typename PoolVec<T, VB>::Index>(p) ? d + gv : d;
      std::memcpy(dst + p * row, &d, sizeof(V));
    }
}

// Max and argmax of one bin for n channels.
template <typename T, int VB>
CONVLOC_ALWAYS_INLINE void pool_bin_channels(const T* img, int64_t stride, int64_t width, int hs, int he, int ws,
                                             int we, T* best, int32_t* where, int64_t n) {
  const bool empty = he <= hs || we <= ws;
  int64_t ch = 0;
  for (; ch + kLanesIn<T, VB> <= n; ch += kLanesIn<T, VB>)
    pool_vector<T, VB>(img + ch, stride, width, hs, he, ws, we, empty, best + ch, where + ch);
  if (ch < n) pool_lanes<T, VB>(img + ch, stride, width, hs, he, ws, we, empty, best + ch, where + ch, int(n - ch));
}

// Bin edges of one roi: rows [hs[i], he[i]), columns [ws[j], we[j]).
struct PoolBins {
  std::vector<int> hs, he, ws, we;
  template <typename T>
  void set(const PoolRoi<T>& r, int ph, int pw, int64_t h, int64_t w) {
    hs.resize(ph), he.resize(ph), ws.resize(pw), we.resize(pw);
    for (int i = 0; i < ph; ++i) pool_bin(i, r.bin_h, r.start_h, int(h), hs[i], he[i]);
    for (int j = 0; j < pw; ++j) pool_bin(j, r.bin_w, r.start_w, int(w), ws[j], we[j]);
  }
};

template <typename S, int VB>
CONVLOC_ALWAYS_INLINE void pool_forward_items(const PoolArgs<S>& a, int64_t lo, int64_t hi) {
  using T = compute_t<S>;
  const int64_t bins = int64_t(a.ph) * a.pw;
  std::vector<T> best(bins * a.block);
  std::vector<int32_t> where(bins * a.block);
  PoolBins e;
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t k = item / a.blocks, c0 = (item % a.blocks) * a.block, n = std::min(a.block, a.c - c0);
    const PoolRoi<T> r = pool_roi(a.rois + 5 * k, a.scale, a.ph, a.pw);
    e.set(r, a.ph, a.pw, a.h, a.w);
    const T* img = a.x + r.batch * a.h * a.w * a.c + c0;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j)
        pool_bin_channels<T, VB>(img, a.c, a.w, e.hs[i], e.he[i], e.ws[j], e.we[j], best.data() + (i * a.pw + j) * n,
                                 where.data() + (i * a.pw + j) * n, n);
    const int64_t o = (k * a.c + c0) * bins;
    transpose(best.data(), n, a.out + o, bins, bins, n);
    if (a.argmax) transpose(where.data(), n, a.argmax + o, bins, bins, n);
  }
}

template <typename S, typename T = compute_t<S>>
struct PoolBackwardArgs {
  const T* x;  // [B, HW, C]
  GradView<S> grad;
  const T* rois;
  int64_t k, b, c, h, w, block;
  T scale;
  int ph, pw;
  S* grad_input;
};

// Owner computes: a chunk owns channels [c0, c0 + n) of every image, recomputes each bin's
// argmax for them (cheaper than storing [K, C, PH, PW] indices and reading them back) and adds
// the bin's gradient there, rois and bins in torchvision's order, in private channels-last memory.
template <typename S, int VB>
CONVLOC_ALWAYS_INLINE void pool_backward_block(const PoolBackwardArgs<S>& a, int64_t c0, int64_t n) {
  using T = compute_t<S>;
  const int64_t bins = int64_t(a.ph) * a.pw, hw = a.h * a.w;
  std::vector<T> acc(a.b * hw * n, T(0)), g(bins * n), best(kLanesIn<T, VB>);
  std::vector<int32_t> where(kLanesIn<T, VB>);
  PoolBins e;
  for (int64_t k = 0; k < a.k; ++k) {
    const PoolRoi<T> r = pool_roi(a.rois + 5 * k, a.scale, a.ph, a.pw);
    e.set(r, a.ph, a.pw, a.h, a.w);
    if (k == 0 || a.grad.sk != 0) gather_grad(a.grad, k, c0, n, a.ph, a.pw, g.data());  // sk == 0: same for all rois
    const T* img = a.x + r.batch * hw * a.c + c0;
    T* __restrict dst = acc.data() + r.batch * hw * n;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j) {
        if (e.he[i] <= e.hs[i] || e.we[j] <= e.ws[j]) continue;
        const T* gb = g.data() + (i * a.pw + j) * n;
        int64_t ch = 0;
        for (; ch + kLanesIn<T, VB> <= n; ch += kLanesIn<T, VB>)
          pool_vector_backward<T, VB>(img + ch, a.c, a.w, e.hs[i], e.he[i], e.ws[j], e.we[j], gb + ch, dst + ch, n);
        if (ch == n) continue;
        pool_lanes<T, VB>(img + ch, a.c, a.w, e.hs[i], e.he[i], e.ws[j], e.we[j], false, best.data(), where.data(),
                          int(n - ch));
        for (int64_t l = 0; l < n - ch; ++l)
          if (where[l] >= 0) dst[where[l] * n + ch + l] += gb[ch + l];
      }
  }
  for (int64_t i = 0; i < a.b; ++i)
    transpose(acc.data() + i * hw * n, n, a.grad_input + (i * a.c + c0) * hw, hw, hw, n);
}

ROI_SIMD_ENTRY(pool_backward, PoolBackwardArgs, pool_backward_block)

ROI_SIMD_ENTRY(pool_forward, PoolArgs, pool_forward_items)

// ---- roi_align ----

template <typename T>
struct AlignArgs {
  const T* rois;
  int64_t c, h, w;
  T scale;
  int ph, pw, sampling_ratio;
  bool aligned;
};

// Per-axis sample taps of one RoI: ys[ph * grid_h + iy], xs[pw * grid_w + ix].
template <typename T>
CONVLOC_ALWAYS_INLINE void align_axes(const AlignArgs<T>& a, const AlignRoi<T>& r, std::vector<AlignAxis<T>>& ys,
                                      std::vector<AlignAxis<T>>& xs) {
  ys.resize(size_t(a.ph) * r.grid_h);
  xs.resize(size_t(a.pw) * r.grid_w);
  for (int i = 0; i < a.ph; ++i)
    for (int s = 0; s < r.grid_h; ++s)
      ys[i * r.grid_h + s] = align_axis(align_sample(r.start_h, r.bin_h, i, s, r.grid_h), int(a.h));
  for (int j = 0; j < a.pw; ++j)
    for (int s = 0; s < r.grid_w; ++s)
      xs[j * r.grid_w + s] = align_axis(align_sample(r.start_w, r.bin_w, j, s, r.grid_w), int(a.w));
}

template <typename S, typename T = compute_t<S>>
struct AlignForwardArgs : AlignArgs<T> {
  const T* x;  // [B, HW, C]
  int64_t block, blocks;
  S* out;
};

// Samples a bin's mean is built from at a time: the scratch stays bounded however many samples a bin has (up to
// kMaxAlignGrid² with an explicit sampling_ratio), while any common grid is one piece.
constexpr int64_t kAlignSampleChunk = 4096;

// Part of one output bin for `lanes` channels: `count` bilinear samples, each summed as
// ((w1 v1 + w2 v2) + w3 v3) + w4 v4 and accumulated in sample order, as torchvision does, onto the running sums in
// out (0 when kFirst); the mean (the sums / divisor) when kLast. (Compile-time flags: a bin of one piece, the common
// case, runs the loop without them.)
template <typename T, int VB, bool kFirst, bool kLast>
CONVLOC_ALWAYS_INLINE void align_lanes(const T* __restrict img, int64_t stride, const AlignSample<T>* samples,
                                       int64_t count, T divisor, T* __restrict out, int lanes) {
  T acc[kLanesIn<T, VB>];
  for (int l = 0; l < lanes; ++l) acc[l] = kFirst ? T(0) : out[l];
  for (int64_t i = 0; i < count; ++i) {
    const AlignSample<T>& s = samples[i];
    const T* __restrict v1 = img + s.p1 * stride, * __restrict v2 = img + s.p2 * stride, * __restrict v3 = img + s.p3 * stride, * __restrict v4 = img + s.p4 * stride;
    for (int l = 0; l < lanes; ++l) acc[l] = acc[l] + (((s.w1 * v1[l] + s.w2 * v2[l]) + s.w3 * v3[l]) + s.w4 * v4[l]);
  }
  for (int l = 0; l < lanes; ++l) out[l] = kLast ? acc[l] / divisor : acc[l];
}

// align_lanes over the n channels of one bin, in vectors of kLanesIn.
template <typename T, int VB, bool kFirst, bool kLast>
CONVLOC_ALWAYS_INLINE void align_channels(const T* img, int64_t stride, const AlignSample<T>* samples, int64_t count,
                                          T divisor, T* out, int64_t n) {
  int64_t ch = 0;
  for (; ch + kLanesIn<T, VB> <= n; ch += kLanesIn<T, VB>)
    align_lanes<T, VB, kFirst, kLast>(img + ch, stride, samples, count, divisor, out + ch, kLanesIn<T, VB>);
  if (ch < n) align_lanes<T, VB, kFirst, kLast>(img + ch, stride, samples, count, divisor, out + ch, int(n - ch));
}

template <typename S, int VB>
CONVLOC_ALWAYS_INLINE void align_forward_items(const AlignForwardArgs<S>& a, int64_t lo, int64_t hi) {
  using T = compute_t<S>;
  const int64_t bins = int64_t(a.ph) * a.pw;
  std::vector<T> acc(bins * a.block);
  std::vector<AlignAxis<T>> ys, xs;
  std::vector<AlignSample<T>> samples;
  for (int64_t item = lo; item < hi; ++item) {
    const int64_t k = item / a.blocks, c0 = (item % a.blocks) * a.block, n = std::min(a.block, a.c - c0);
    const AlignRoi<T> r = align_roi(a.rois + 5 * k, a.scale, a.ph, a.pw, a.sampling_ratio, a.aligned);
    align_axes(a, r, ys, xs);
    const int grid_w = std::max(r.grid_w, 0);
    const int rows = int(std::max<int64_t>(1, kAlignSampleChunk / std::max(grid_w, 1)));  // sample rows per piece
    samples.resize(size_t(std::min(rows, std::max(r.grid_h, 0))) * grid_w);
    const T* img = a.x + r.batch * a.h * a.w * a.c + c0;
    for (int i = 0; i < a.ph; ++i) {
      poll_interrupt();
      for (int j = 0; j < a.pw; ++j) {
        T* o = acc.data() + (i * a.pw + j) * n;
        int sy = 0;
        do {  // (once for an empty grid: the bin's mean is then 0)
          const int end = std::min(r.grid_h, sy + rows);
          int64_t count = 0;
          for (int y = sy; y < end; ++y)
            for (int sx = 0; sx < grid_w; ++sx)
              samples[count++] = align_sample_at(ys[i * r.grid_h + y], xs[j * r.grid_w + sx], a.w);
          const bool first = sy == 0, last = end >= r.grid_h;
          if (first && last)
            align_channels<T, VB, true, true>(img, a.c, samples.data(), count, r.count, o, n);
          else if (first)
            align_channels<T, VB, true, false>(img, a.c, samples.data(), count, r.count, o, n);
          else if (last)
            align_channels<T, VB, false, true>(img, a.c, samples.data(), count, r.count, o, n);
          else
            align_channels<T, VB, false, false>(img, a.c, samples.data(), count, r.count, o, n);
          sy = end;
        } while (sy < r.grid_h);
      }
    }
    transpose(acc.data(), n, a.out + (k * a.c + c0) * bins, bins, bins, n);
  }
}

ROI_SIMD_ENTRY(align_forward, AlignForwardArgs, align_forward_items)

template <typename S, typename T = compute_t<S>>
struct AlignBackwardArgs : AlignArgs<T> {
  GradView<S> grad;
  int64_t k, b, block;
  S* grad_input;  // [B, C, H, W]
};

// dst[c] += g[c] w / count, with the division done as torchvision does it; a power-of-two count
// is a multiplication by its exact reciprocal, which rounds to the same value.
template <typename T>
CONVLOC_ALWAYS_INLINE void add_tap(T* __restrict dst, const T* __restrict g, T w, T count, bool pow2, int64_t n) {
  if (pow2) {
    const T inv = T(1) / count;
    for (int64_t ch = 0; ch < n; ++ch) dst[ch] += (g[ch] * w) * inv;
  } else {
    for (int64_t ch = 0; ch < n; ++ch) dst[ch] += (g[ch] * w) / count;
  }
}

// Owner computes: a chunk owns channels [c0, c0 + n) of every image and accumulates their
// gradient channels-last in private memory, visiting rois, bins, samples and taps in
// torchvision's order, then writes them out NCHW.
template <typename S, int VB>
CONVLOC_ALWAYS_INLINE void align_backward_block(const AlignBackwardArgs<S>& a, int64_t c0, int64_t n) {
  using T = compute_t<S>;
  const int64_t bins = int64_t(a.ph) * a.pw, hw = a.h * a.w;
  std::vector<T> acc(a.b * hw * n, T(0)), g(bins * n);
  std::vector<AlignAxis<T>> ys, xs;
  for (int64_t k = 0; k < a.k; ++k) {
    poll_interrupt();
    const AlignRoi<T> r = align_roi(a.rois + 5 * k, a.scale, a.ph, a.pw, a.sampling_ratio, a.aligned);
    if (r.grid_h <= 0 || r.grid_w <= 0) continue;
    align_axes(a, r, ys, xs);
    gather_grad(a.grad, k, c0, n, a.ph, a.pw, g.data());
    T* img = acc.data() + r.batch * hw * n;
    const bool pow2 = std::ilogb(r.count) >= 0 && std::scalbn(T(1), std::ilogb(r.count)) == r.count;
    for (int i = 0; i < a.ph; ++i)
      for (int j = 0; j < a.pw; ++j) {
        const T* gb = g.data() + (i * a.pw + j) * n;
        for (int sy = 0; sy < r.grid_h; ++sy)
          for (int sx = 0; sx < r.grid_w; ++sx) {
            const AlignSample<T> s = align_sample_at(ys[i * r.grid_h + sy], xs[j * r.grid_w + sx], a.w);
            if (!s.valid) continue;
            add_tap(img + s.p1 * n, gb, s.w1, r.count, pow2, n);
            add_tap(img + s.p2 * n, gb, s.w2, r.count, pow2, n);
            add_tap(img + s.p3 * n, gb, s.w3, r.count, pow2, n);
            add_tap(img + s.p4 * n, gb, s.w4, r.count, pow2, n);
          }
      }
  }
  for (int64_t i = 0; i < a.b; ++i)
    transpose(acc.data() + i * hw * n, n, a.grad_input + (i * a.c + c0) * hw, hw, hw, n);
}

ROI_SIMD_ENTRY(align_backward, AlignBackwardArgs, align_backward_block)

}  // namespace

template <typename S>
bool rois_valid_cpu(const S* rois_s, int64_t k, int64_t batch) {
  using T = compute_t<S>;
  const ComputeRois<S> converted(rois_s, k);
  const T* rois = converted.data();
  bool ok = true;
  for (int64_t i = 0; i < k; ++i) {
    const T* r = rois + 5 * i;
    ok &= std::isfinite(r[0]) & std::isfinite(r[1]) & std::isfinite(r[2]) & std::isfinite(r[3]) & std::isfinite(r[4]) &
          (r[0] >= 0) & (r[0] < T(batch)) & (r[0] == std::floor(r[0])) & (r[3] >= r[1]) & (r[4] >= r[2]);
  }
  return ok;
}

template <typename S>
void roi_pool_forward_cpu(const S* input, bool nhwc, int64_t b, int64_t c, int64_t h, int64_t w, const S* rois,
                          int64_t k, compute_t<S> scale, int pooled_h, int pooled_w, S* out, int32_t* argmax) {
  if (k == 0 || c == 0) return;
  advise_huge_pages(out, k * c * pooled_h * pooled_w * int64_t(sizeof(S)));
  if (argmax) advise_huge_pages(argmax, k * c * pooled_h * pooled_w * int64_t(sizeof(int32_t)));
  const ChannelsLast<S> x(input, nhwc, b, c, h * w);
  const ComputeRois<S> r(rois, k);
  PoolArgs<S> a{x.data(), r.data(), c, h, w, forward_block(c), 0, scale, pooled_h, pooled_w, out, argmax};
  a.blocks = (c + a.block - 1) / a.block;
  parallel_for(k * a.blocks, 1, [&](int64_t lo, int64_t hi) { pool_forward(a, lo, hi); });
}

template <typename S>
void roi_pool_backward_cpu(GradView<S> grad, const S* input, bool nhwc, const S* rois, int64_t k, int64_t b, int64_t c,
                           int64_t h, int64_t w, compute_t<S> scale, int pooled_h, int pooled_w, S* grad_input) {
  using T = compute_t<S>;
  if (c == 0) return;
  const ChannelsLast<S> x(input, nhwc, b, c, h * w);
  const ComputeRois<S> r(rois, k);
  const PoolBackwardArgs<S> a{
      x.data(), grad,     r.data(), k,         b, c, h, w, backward_block(c, b * h * w, sizeof(T)),
      scale,    pooled_h, pooled_w, grad_input};
  const int64_t blocks = (c + a.block - 1) / a.block;
  parallel_for(blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) pool_backward(a, i * a.block, std::min(a.block, c - i * a.block));
  });
}

template <typename S>
void roi_align_forward_cpu(const S* input, bool nhwc, int64_t b, int64_t c, int64_t h, int64_t w, const S* rois,
                           int64_t k, compute_t<S> scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned,
                           S* out) {
  using T = compute_t<S>;
  if (k == 0 || c == 0) return;
  advise_huge_pages(out, k * c * pooled_h * pooled_w * int64_t(sizeof(S)));
  const ChannelsLast<S> x(input, nhwc, b, c, h * w);
  const ComputeRois<S> r(rois, k);
  AlignForwardArgs<S> a;
  static_cast<AlignArgs<T>&>(a) = {r.data(), c, h, w, scale, pooled_h, pooled_w, sampling_ratio, aligned};
  a.x = x.data();
  a.block = forward_block(c);
  a.blocks = (c + a.block - 1) / a.block;
  a.out = out;
  parallel_for(k * a.blocks, 1, [&](int64_t lo, int64_t hi) { align_forward(a, lo, hi); });
}

template <typename S>
void roi_align_backward_cpu(GradView<S> grad, const S* rois, int64_t k, int64_t b, int64_t c, int64_t h, int64_t w,
                            compute_t<S> scale, int pooled_h, int pooled_w, int sampling_ratio, bool aligned,
                            S* grad_input) {
  using T = compute_t<S>;
  if (c == 0) return;
  const ComputeRois<S> r(rois, k);
  AlignBackwardArgs<S> a;
  static_cast<AlignArgs<T>&>(a) = {r.data(), c, h, w, scale, pooled_h, pooled_w, sampling_ratio, aligned};
  a.grad = grad;
  a.k = k;
  a.b = b;
  a.block = backward_block(c, b * h * w, sizeof(T));
  a.grad_input = grad_input;
  const int64_t blocks = (c + a.block - 1) / a.block;
  parallel_for(blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) align_backward(a, i * a.block, std::min(a.block, c - i * a.block));
  });
}

template <typename T>
void roi_backward_gather_cpu(GradView<T> grad, const T* input, const T* rois, int64_t k, int64_t b, int64_t c,
                             int64_t h, int64_t w, T scale, int pooled_h, int pooled_w, int sampling_ratio,
                             bool aligned, T* grad_input) {
  const int64_t bins = k * c * pooled_h * pooled_w;
  std::vector<int32_t> argmax;
  std::vector<PoolGather<T>> pool;
  std::vector<AlignGather<T>> align;
  if (input) {
    std::vector<T> out(bins);
    argmax.resize(bins);
    roi_pool_forward_cpu(input, false, b, c, h, w, rois, k, scale, pooled_h, pooled_w, out.data(), argmax.data());
    for (int64_t i = 0; i < k; ++i) pool.push_back(pool_gather(rois + 5 * i, scale, pooled_h, pooled_w));
  } else {
    for (int64_t i = 0; i < k; ++i)
      align.push_back(align_gather(rois + 5 * i, scale, pooled_h, pooled_w, sampling_ratio, aligned));
  }
  parallel_for(b * c * h * w, 1024, [&](int64_t lo, int64_t hi) {
    for (int64_t idx = lo; idx < hi; ++idx) {
      const int x = int(idx % w), y = int((idx / w) % h);
      const int64_t ch = (idx / (h * w)) % c, bi = idx / (c * h * w);
      grad_input[idx] =
          input ? roi_pool_grad_at(grad, argmax.data(), pool.data(), k, bi, ch, c, y, x, int(h), int(w), pooled_h,
                                   pooled_w)
                : roi_align_grad_at(grad, align.data(), k, bi, ch, y, x, int(h), int(w), pooled_h, pooled_w);
    }
  });
}

template void roi_backward_gather_cpu<float>(GradView<float>, const float*, const float*, int64_t, int64_t, int64_t,
                                             int64_t, int64_t, float, int, int, int, bool, float*);
template void roi_backward_gather_cpu<double>(GradView<double>, const double*, const double*, int64_t, int64_t, int64_t,
                                              int64_t, int64_t, double, int, int, int, bool, double*);
#define CONVLOC_INSTANTIATE(S)                                                                                      \
  template bool rois_valid_cpu<S>(const S*, int64_t, int64_t);                                                      \
  template void roi_pool_forward_cpu<S>(const S*, bool, int64_t, int64_t, int64_t, int64_t, const S*, int64_t,      \
                                        compute_t<S>, int, int, S*, int32_t*);                                      \
  template void roi_pool_backward_cpu<S>(GradView<S>, const S*, bool, const S*, int64_t, int64_t, int64_t, int64_t, \
                                         int64_t, compute_t<S>, int, int, S*);                                      \
  template void roi_align_forward_cpu<S>(const S*, bool, int64_t, int64_t, int64_t, int64_t, const S*, int64_t,     \
                                         compute_t<S>, int, int, int, bool, S*);                                    \
  template void roi_align_backward_cpu<S>(GradView<S>, const S*, int64_t, int64_t, int64_t, int64_t, int64_t,       \
                                          compute_t<S>, int, int, int, bool, S*);
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
CONVLOC_INSTANTIATE(Half)
CONVLOC_INSTANTIATE(BFloat16)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
