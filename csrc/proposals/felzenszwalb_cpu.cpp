#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "core/check.h"
#include "core/common.h"
#include "core/parallel.h"
#include "proposals/proposals.h"

namespace convloc {

std::vector<float> gaussian_taps(double sigma, bool derivative) {
  if (!(sigma > 0)) return {derivative ? 0.f : 1.f};
  const int r = static_cast<int>(std::ceil(4.0 * sigma));
  std::vector<double> g(2 * r + 1);
  double sum = 0;
  for (int i = -r; i <= r; ++i) {
    g[i + r] = std::exp(-0.5 * (i / sigma) * (i / sigma));
    sum += g[i + r];
  }
  std::vector<float> taps(2 * r + 1);
  for (int i = -r; i <= r; ++i) {
    const double v = g[i + r] / sum;
    taps[i + r] = static_cast<float>(derivative ? -i / (sigma * sigma) * v : v);
  }
  return taps;
}

namespace {

// o[j] += k * p[j]: multiply and add rounded separately (no FMA), so every ISA gives the same bits.
CONVLOC_SIMD_FN(void, axpy, (float* __restrict o, const float* __restrict p, float k, int64_t n), {
  for (int64_t j = 0; j < n; ++j) o[j] += k * p[j];
})

// An uninitialised buffer: these are fully overwritten, so zeroing them would be wasted traffic.
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(n)]);
}

}  // namespace

void separable_filter_cpu(const float* image, int64_t h, int64_t w, int64_t c, const std::vector<float>& kx,
                          const std::vector<float>& ky, float* out) {
  const int64_t rx = static_cast<int64_t>(kx.size()) / 2, ry = static_cast<int64_t>(ky.size()) / 2;
  const int64_t row = w * c;
  const auto tmp = scratch<float>(h * row);
  // Along x: each row is copied with replicated borders, then taps are accumulated in order.
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    std::vector<float> pad((w + 2 * rx) * c);
    for (int64_t y = lo; y < hi; ++y) {
      const float* src = image + y * row;
      for (int64_t x = -rx; x < w + rx; ++x) {
        const float* s = src + std::clamp<int64_t>(x, 0, w - 1) * c;
        std::copy(s, s + c, pad.data() + (x + rx) * c);
      }
      float* o = tmp.get() + y * row;
      std::fill(o, o + row, 0.f);
      for (size_t i = 0; i < kx.size(); ++i) axpy(o, pad.data() + i * c, kx[i], row);
    }
  });
  // Along y, rows clamped at the borders.
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t y = lo; y < hi; ++y) {
      float* o = out + y * row;
      std::fill(o, o + row, 0.f);
      for (size_t i = 0; i < ky.size(); ++i)
        axpy(o, tmp.get() + std::clamp<int64_t>(y - ry + int64_t(i), 0, h - 1) * row, ky[i], row);
    }
  });
}

namespace {

// Stable LSD radix sort of 64-bit items by their upper 32 bits (non-negative float weights,
// whose bit patterns order like the values); the lower 32 bits carry the edge index. Only the
// key bits that vary between items are sorted on, in passes of at most 11 bits, with every
// pass's digit counts taken in one read.
void sort_by_upper_bits(std::unique_ptr<uint64_t[]>& items, int64_t n) {
  if (n == 0) return;
  uint32_t all_or = 0, all_and = ~0u;
  for (int64_t i = 0; i < n; ++i) all_or |= uint32_t(items[i] >> 32), all_and &= uint32_t(items[i] >> 32);
  const uint32_t varying = all_or ^ all_and;
  if (varying == 0) return;
  const int lo_bit = __builtin_ctz(varying), hi_bit = 32 - __builtin_clz(varying);
  const int passes = (hi_bit - lo_bit + 10) / 11, bits = (hi_bit - lo_bit + passes - 1) / passes;
  const uint32_t mask = (1u << bits) - 1;
  std::vector<int64_t> count(size_t(passes) << bits, 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t key = uint32_t(items[i] >> 32) >> lo_bit;
    for (int p = 0; p < passes; ++p) ++count[(size_t(p) << bits) + ((key >> (p * bits)) & mask)];
  }
  auto buf = scratch<uint64_t>(n);
  constexpr int kLine = 8;
  std::vector<uint64_t> stage(size_t(kLine) << bits);
  std::vector<uint8_t> fill(size_t(1) << bits, 0);
  for (int p = 0; p < passes; ++p) {
    int64_t* c = &count[size_t(p) << bits];
    int64_t offset = 0;
    for (uint32_t b = 0; b <= mask; ++b) {
      const int64_t v = c[b];
      c[b] = offset;
      offset += v;
    }
    const int shift = 32 + lo_bit + p * bits;
    // Items go through a cache-line buffer per digit, written out 8 at a time: the scatter
    // then touches whole lines instead of one word in each of up to 2048 lines.
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t v = items[i];
      const uint32_t d = (v >> shift) & mask;
      uint64_t* line = &stage[size_t(d) * kLine];
      line[fill[d]++] = v;
      if (fill[d] == kLine) {
        std::memcpy(&buf[c[d]], line, sizeof(uint64_t) * kLine);
        c[d] += kLine;
        fill[d] = 0;
      }
    }
    for (uint32_t d = 0; d <= mask; ++d) {
      std::memcpy(&buf[c[d]], &stage[size_t(d) * kLine], sizeof(uint64_t) * fill[d]);
      c[d] += fill[d];
      fill[d] = 0;
    }
    items.swap(buf);
  }
}

constexpr int64_t kDx[4] = {1, 0, 1, 1}, kDy[4] = {0, 1, 1, -1};

// Packed (weight bits, edge index) items of the edges leaving row y, in edge order. C: the
// channel count when known at compile time (0: use c).
template <int C>
void row_edges(const float* smooth, int64_t h, int64_t w, int64_t c, int64_t y, uint64_t* out) {
  if (C > 0) c = C;
  for (int64_t x = 0; x < w; ++x) {
    const float* a = smooth + (y * w + x) * c;
    for (int d = 0; d < 4; ++d) {
      const int64_t qx = x + kDx[d], qy = y + kDy[d];
      if (qx >= w || qy < 0 || qy >= h) continue;
      const float* b = smooth + (qy * w + qx) * c;
      float acc = 0.f;
      for (int64_t k = 0; k < c; ++k) {
        const float diff = a[k] - b[k];
        acc += diff * diff;
      }
      const float wt = std::sqrt(acc);
      uint32_t bits;
      std::memcpy(&bits, &wt, 4);
      *out++ = (uint64_t(bits) << 32) | uint64_t(4 * (y * w + x) + d);
    }
  }
}

struct DisjointSets {
  std::vector<int32_t> parent, size;
  explicit DisjointSets(int64_t n) : parent(n), size(n, 1) {
    for (int64_t i = 0; i < n; ++i) parent[i] = static_cast<int32_t>(i);
  }
  int32_t find(int32_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  }
  // Joins two roots, returns the new root.
  int32_t join(int32_t a, int32_t b) {
    if (size[a] < size[b]) std::swap(a, b);
    parent[b] = a;
    size[a] += size[b];
    return a;
  }
};

}  // namespace

int64_t felzenszwalb_cpu(const float* image, int64_t h, int64_t w, int64_t c, double scale, double sigma,
                         int64_t min_size, int32_t* labels) {
  const int64_t n = h * w;
  if (n == 0) return 0;
  if (n > (int64_t(1) << 29)) fail_value("image: at most 2^29 pixels, got ", n);
  const auto smooth = scratch<float>(n * c);
  const std::vector<float> g = gaussian_taps(sigma);
  separable_filter_cpu(image, h, w, c, g, g, smooth.get());

  // Edge e = 4 p + d to the right, down, down-right and up-right neighbour of pixel p; edges
  // are listed in e order, row y starting at a known offset.
  auto row_start = [&](int64_t y) {
    // Rows above y: (w - 1) right edges each, plus down and down-right edges for all but the
    // last row, plus up-right edges for all but the first.
    return y * (w - 1) + std::min(y, h - 1) * (2 * w - 1) + std::max<int64_t>(y - 1, 0) * (w - 1);
  };
  const int64_t m = row_start(h);
  auto edges = scratch<uint64_t>(m);
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t y = lo; y < hi; ++y) {
      uint64_t* out = edges.get() + row_start(y);
      if (c == 3)
        row_edges<3>(smooth.get(), h, w, c, y, out);
      else if (c == 1)
        row_edges<1>(smooth.get(), h, w, c, y, out);
      else
        row_edges<0>(smooth.get(), h, w, c, y, out);
    }
  });
  sort_by_upper_bits(edges, m);

  auto endpoints = [&](uint64_t item, float& wt, int32_t& p, int32_t& q) {
    const uint32_t bits = static_cast<uint32_t>(item >> 32);
    std::memcpy(&wt, &bits, 4);
    const int64_t e = static_cast<int64_t>(item & 0xffffffffu), d = e & 3;
    p = static_cast<int32_t>(e >> 2);
    q = static_cast<int32_t>(p + kDy[d] * w + kDx[d]);
  };
  DisjointSets sets(n);
  std::vector<float> threshold(n, static_cast<float>(scale));
  for (int64_t i = 0; i < m; ++i) {
    const uint64_t item = edges[i];
    float wt;
    int32_t p, q;
    endpoints(item, wt, p, q);
    const int32_t a = sets.find(p), b = sets.find(q);
    if (a == b || wt > threshold[a] || wt > threshold[b]) continue;
    const int32_t r = sets.join(a, b);
    threshold[r] = wt + static_cast<float>(scale / sets.size[r]);
  }
  // Small components: merged along the sorted edges; stops once none is left.
  int64_t small = 0;
  for (int64_t p = 0; p < n; ++p) small += sets.parent[p] == p && sets.size[p] < min_size;
  for (int64_t i = 0; i < m && small > 0; ++i) {
    float wt;
    int32_t p, q;
    endpoints(edges[i], wt, p, q);
    const int32_t a = sets.find(p), b = sets.find(q);
    if (a == b || (sets.size[a] >= min_size && sets.size[b] >= min_size)) continue;
    small -= (sets.size[a] < min_size) + (sets.size[b] < min_size);
    const int32_t r = sets.join(a, b);
    small += sets.size[r] < min_size;
  }
  std::vector<int32_t> id(n, -1);
  int32_t count = 0;
  for (int64_t p = 0; p < n; ++p) {
    const int32_t r = sets.find(static_cast<int32_t>(p));
    if (id[r] < 0) id[r] = count++;
    labels[p] = id[r];
  }
  return count;
}

}  // namespace convloc
