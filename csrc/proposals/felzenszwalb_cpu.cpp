#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
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

void separable_filter_cpu(const float* image, int64_t h, int64_t w, int64_t c, const std::vector<float>& kx,
                          const std::vector<float>& ky, float* out) {
  const int64_t rx = static_cast<int64_t>(kx.size()) / 2, ry = static_cast<int64_t>(ky.size()) / 2;
  const int64_t row = w * c;
  std::vector<float> tmp(h * row);
  // Along x: each row is copied with replicated borders, then taps are accumulated in order.
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    std::vector<float> pad((w + 2 * rx) * c);
    for (int64_t y = lo; y < hi; ++y) {
      const float* src = image + y * row;
      for (int64_t x = -rx; x < w + rx; ++x) {
        const float* s = src + std::clamp<int64_t>(x, 0, w - 1) * c;
        std::copy(s, s + c, pad.data() + (x + rx) * c);
      }
      float* __restrict o = tmp.data() + y * row;
      std::fill(o, o + row, 0.f);
      for (size_t i = 0; i < kx.size(); ++i) {
        const float k = kx[i];
        const float* __restrict p = pad.data() + i * c;
        for (int64_t j = 0; j < row; ++j) o[j] += k * p[j];
      }
    }
  });
  // Along y, rows clamped at the borders.
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t y = lo; y < hi; ++y) {
      float* __restrict o = out + y * row;
      std::fill(o, o + row, 0.f);
      for (size_t i = 0; i < ky.size(); ++i) {
        const float k = ky[i];
        const float* __restrict p = tmp.data() + std::clamp<int64_t>(y - ry + int64_t(i), 0, h - 1) * row;
        for (int64_t j = 0; j < row; ++j) o[j] += k * p[j];
      }
    }
  });
}

namespace {

// Stable LSD radix sort of 64-bit items by their upper 32 bits (non-negative float weights,
// whose bit patterns order like the values); the lower 32 bits carry the edge index.
void sort_by_upper_bits(std::vector<uint64_t>& items) {
  std::vector<uint64_t> buf(items.size());
  constexpr int kBits[3] = {11, 11, 10};
  int shift = 32;
  for (int pass = 0; pass < 3; ++pass) {
    const int bins = 1 << kBits[pass];
    std::vector<int64_t> count(bins + 1, 0);
    for (uint64_t v : items) ++count[((v >> shift) & (bins - 1)) + 1];
    if (std::any_of(count.begin(), count.end(), [&](int64_t n) { return n == int64_t(items.size()); })) {
      shift += kBits[pass];
      continue;  // every item has the same digit: this pass would not move anything
    }
    for (int b = 0; b < bins; ++b) count[b + 1] += count[b];
    for (uint64_t v : items) buf[count[(v >> shift) & (bins - 1)]++] = v;
    items.swap(buf);
    shift += kBits[pass];
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
  std::vector<float> smooth(n * c);
  const std::vector<float> g = gaussian_taps(sigma);
  separable_filter_cpu(image, h, w, c, g, g, smooth.data());

  // Edge e = 4 p + d to the right, down, down-right and up-right neighbour of pixel p.
  const int64_t dx[4] = {1, 0, 1, 1}, dy[4] = {0, 1, 1, -1};
  std::vector<float> weight(4 * n, -1.f);
  parallel_for(h, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t y = lo; y < hi; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const float* a = smooth.data() + (y * w + x) * c;
        for (int d = 0; d < 4; ++d) {
          const int64_t qx = x + dx[d], qy = y + dy[d];
          if (qx >= w || qy < 0 || qy >= h) continue;
          const float* b = smooth.data() + (qy * w + qx) * c;
          float acc = 0.f;
          for (int64_t k = 0; k < c; ++k) {
            const float diff = a[k] - b[k];
            acc += diff * diff;
          }
          weight[4 * (y * w + x) + d] = std::sqrt(acc);
        }
      }
  });
  std::vector<uint64_t> edges;
  edges.reserve(4 * n);
  for (int64_t e = 0; e < 4 * n; ++e) {
    if (weight[e] < 0) continue;
    uint32_t bits;
    std::memcpy(&bits, &weight[e], 4);
    edges.push_back((uint64_t(bits) << 32) | uint64_t(e));
  }
  std::vector<float>().swap(weight);
  sort_by_upper_bits(edges);

  auto endpoints = [&](uint64_t item, float& wt, int32_t& p, int32_t& q) {
    const uint32_t bits = static_cast<uint32_t>(item >> 32);
    std::memcpy(&wt, &bits, 4);
    const int64_t e = static_cast<int64_t>(item & 0xffffffffu), d = e & 3;
    p = static_cast<int32_t>(e >> 2);
    q = static_cast<int32_t>(p + dy[d] * w + dx[d]);
  };
  DisjointSets sets(n);
  std::vector<float> threshold(n, static_cast<float>(scale));
  for (uint64_t item : edges) {
    float wt;
    int32_t p, q;
    endpoints(item, wt, p, q);
    const int32_t a = sets.find(p), b = sets.find(q);
    if (a == b || wt > threshold[a] || wt > threshold[b]) continue;
    const int32_t r = sets.join(a, b);
    threshold[r] = wt + static_cast<float>(scale / sets.size[r]);
  }
  for (uint64_t item : edges) {
    float wt;
    int32_t p, q;
    endpoints(item, wt, p, q);
    const int32_t a = sets.find(p), b = sets.find(q);
    if (a != b && (sets.size[a] < min_size || sets.size[b] < min_size)) sets.join(a, b);
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
