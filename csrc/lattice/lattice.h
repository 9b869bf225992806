// Permutohedral lattice (Adams, Baek & Davis 2010): approximate high-dimensional Gaussian filtering
//   out_i = sum_j exp(-|f_i - f_j|^2 / 2) in_j
// by splatting each point onto the d+1 vertices of its enclosing simplex, blurring with [1 2 1]/2
// along the d+1 lattice directions, and slicing back with the same barycentric weights.
//
// The lattice is built once per feature set; filter() then only gathers through stored indices
// (no hashing), so a dense CRF can filter many times per build. The per-point math (embedding,
// simplex, weights, vertex keys) is the CONVLOC_HD lattice_simplex the CUDA path runs; the CPU build
// computes it 8 points at a time in vector lanes (same operations, same order: a test checks that
// both give the same bits) and hashes vertices with its own multiply-shift hash.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/common.h"
#include "core/workspace.h"

namespace convloc {

// Largest feature dimension (the per-point scratch lives on the stack).
constexpr int kLatticeMaxDim = 32;
// Lattice coordinates are stored as int32: features whose embedded coordinates exceed this are refused
// (a feature range about 10^8 / (d + 1) standard deviations; pydensecrf's int16 keys overflow at 32767).
constexpr double kLatticeMaxCoord = 1 << 29;

// Whether point f[0, d) lies within kLatticeMaxCoord once embedded (false for NaN or inf): sum_k |f_k scale_k|
// (d + 1), in double. The vectorised CPU build makes the same test lane by lane.
template <typename T>
CONVLOC_HD bool lattice_point_in_range(const T* f, int d, const T* scale) {
  double reach = 0;
  for (int j = 0; j < d; ++j) reach += fabs(double(f[j]) * double(scale[j]));
  return reach * double(d + 1) < kLatticeMaxCoord;
}

// Bands of points that splat by scattering into their own partial sums (see band_tables()); a fixed number,
// so that results do not depend on the thread count.
constexpr int64_t kLatticeSplatBands = 8;

// Lattice units per feature unit: the [1 2 1] blur along all d+1 directions then has a standard
// deviation close to 1 in feature units (Adams et al.; Krähenbühl's dense CRF uses the same value).
CONVLOC_HD double lattice_scale(int d) { return 0.816496580927726 * (d + 1); }  // sqrt(2/3) (d + 1)

// The most sum_k |f_k| may be for a point to lie within kLatticeMaxCoord at any dimension-d position
// (the first coordinate's elevation factor, lattice_scale(d) / sqrt(2), is the largest): what callers
// that derive features from their own arguments check, so that their error names those arguments.
CONVLOC_HD double lattice_max_feature_sum(int d) {
  return kLatticeMaxCoord / (double(d + 1) * lattice_scale(d) / 1.4142135623730951);
}

// Factor that turns splat-blur-slice into an approximation of the unnormalised Gaussian sum: each vertex
// stands for a cell of volume sqrt(d+1)^-1 (3/2)^(d/2) in feature units, the blur multiplies mass by 2^(d+1),
// and the Gaussian integrates to (2 pi)^(d/2).
CONVLOC_HD double lattice_amplitude(int d) {
  return std::sqrt(double(d + 1)) * std::pow(4.0 * 3.14159265358979323846 / 3.0, 0.5 * d) / std::ldexp(1.0, d + 1);
}

// Embeds features f[0..d) in the hyperplane sum(x) = 0 of R^(d+1), finds the enclosing simplex and writes
// its vertices' keys (the first d integer coordinates of each vertex; the last is minus their sum) to
// keys[k * d + i] and the barycentric weights to weights[k], k = 0..d; ranks (nullable) gets each
// coordinate's rank, which says along which directions the simplex's vertices differ.
template <typename T>
CONVLOC_HD void lattice_simplex(const T* f, int d, const T* scale, int32_t* keys, T* weights, uint8_t* ranks) {
  T elevated[kLatticeMaxDim + 1];
  int32_t rem0[kLatticeMaxDim + 1];
  int rank[kLatticeMaxDim + 1];
  T bary[kLatticeMaxDim + 2];
  // Elevation: an isometry (times lattice_scale) onto the hyperplane.
  T sm = 0;
  for (int i = d; i > 0; --i) {
    const T cf = f[i - 1] * scale[i - 1];
    elevated[i] = sm - T(i) * cf;
    sm += cf;
  }
  elevated[0] = sm;
  // Nearest remainder-0 point, coordinate by coordinate.
  const T down_factor = T(1) / T(d + 1);
  int sum = 0;
  for (int i = 0; i <= d; ++i) {
    // floor by conversion (coordinates are bounded by kLatticeMaxCoord): no libm call on baseline x86-64.
    const T v = elevated[i] * down_factor;
    int32_t fl = static_cast<int32_t>(v);
    fl -= T(fl) > v;
    const T down = T(fl) * T(d + 1);
    const bool round_up = down + T(d + 1) - elevated[i] < elevated[i] - down;
    rem0[i] = (fl + round_up) * (d + 1);
    sum += fl + round_up;
    rank[i] = 0;
  }
  // Rank the differences to find the simplex.
  for (int i = 0; i < d; ++i) {
    const T di = elevated[i] - T(rem0[i]);
    for (int j = i + 1; j <= d; ++j) {
      const int lt = di < elevated[j] - T(rem0[j]);  // branch-free: the comparisons are unpredictable
      rank[i] += lt;
      rank[j] += 1 - lt;
    }
  }
  // Move the point onto the plane if the rounding left it off.
  if (sum > 0) {
    for (int i = 0; i <= d; ++i) {
      if (rank[i] >= d + 1 - sum) {
        rem0[i] -= d + 1;
        rank[i] += sum - (d + 1);
      } else {
        rank[i] += sum;
      }
    }
  } else if (sum < 0) {
    for (int i = 0; i <= d; ++i) {
      if (rank[i] < -sum) {
        rem0[i] += d + 1;
        rank[i] += (d + 1) + sum;
      } else {
        rank[i] += sum;
      }
    }
  }
  // Barycentric coordinates.
  for (int i = 0; i <= d + 1; ++i) bary[i] = 0;
  for (int i = 0; i <= d; ++i) {
    const T v = (elevated[i] - T(rem0[i])) * down_factor;
    bary[d - rank[i]] += v;
    bary[d + 1 - rank[i]] -= v;
  }
  bary[0] += T(1) + bary[d + 1];
  // Vertex k of the simplex: rem0 + the canonical simplex point of remainder k, permuted by rank.
  for (int k = 0; k <= d; ++k) {
    for (int i = 0; i < d; ++i) keys[k * d + i] = rem0[i] + (rank[i] <= d - k ? k : k - (d + 1));
    weights[k] = bary[k];
  }
  if (ranks)
    for (int i = 0; i <= d; ++i) ranks[i] = static_cast<uint8_t>(rank[i]);
}

// 64-bit hash of a d-coordinate key (full int32 coordinates: no overflow for any accepted feature range).
CONVLOC_HD uint64_t lattice_hash(const int32_t* key, int d) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  h ^= h >> 29;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 32;
  return h;
}

// Branch-free: keys that differ usually differ anywhere.
CONVLOC_HD bool lattice_key_equal(const int32_t* a, const int32_t* b, int d) {
  int32_t diff = 0;
  for (int i = 0; i < d; ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

// Neighbour of `key` one step along lattice direction j (sign +1 or -1): every coordinate moves by
// -sign, coordinate j by +sign * d (the (d+1)-th, implicit coordinate keeps the sum at zero).
CONVLOC_HD void lattice_neighbour(const int32_t* key, int d, int j, int sign, int32_t* out) {
  for (int i = 0; i < d; ++i) out[i] = key[i] - sign;
  if (j < d) out[j] = key[j] + sign * d;
}

// The lattice's own weight of one point, (A)_ii / amplitude = sum_{a,b} w_a w_b (blur)[v_a, v_b], from its
// simplex (vertex ids off[0..d], weights w, coordinate ranks) and the blur neighbours (vertex v's along direction
// j: nb[(v * vertex_step + j * direction_step) * 2 + side], absent ones = absent). Simplex vertex a lies at vertex b
// minus the lattice directions j with d - a < rank_j <= d - b (a > b; the mirror for a < b); since the d + 1 directions
// sum to zero, the blur reaches it by exactly two step patterns (s and s + 1 within {-1, 0, 1}; a == b: all 0, all +1,
// all -1). A pattern weighs 1/2 per step and counts only if every vertex on its way exists.
template <typename T>
CONVLOC_HD double lattice_self_weight(const int32_t* off, const T* w, const uint8_t* rank, const int32_t* nb,
                                      int64_t vertex_step, int64_t direction_step, int64_t absent, int d) {
  const int k1 = d + 1;
  double total = 0;
  for (int a = 0; a < k1; ++a)
    for (int b = 0; b < k1; ++b) {
      const double wab = double(w[a]) * double(w[b]);
      if (wab == 0) continue;
      const int lo = a > b ? d - a : d - b, hi = a > b ? d - b : d - a;
      const int base = a > b ? -1 : 1;
      for (int shift = -1; shift <= 1; ++shift) {
        bool ok = true;
        for (int j = 0; j < k1; ++j) {
          const int s = (rank[j] > lo && rank[j] <= hi ? base : 0) + shift;
          ok &= s >= -1 && s <= 1;
        }
        if (!ok) continue;
        int64_t cur = off[b];
        int steps = 0;
        for (int j = 0; j < k1 && cur != absent; ++j) {
          const int s = (rank[j] > lo && rank[j] <= hi ? base : 0) + shift;
          if (s == 0) continue;
          cur = nb[(cur * vertex_step + j * direction_step) * 2 + (s > 0)];
          ++steps;
        }
        if (cur != absent) total += wab * std::ldexp(1.0, -steps);
      }
    }
  return total;
}

// Per-coordinate factors of the elevation, times lattice_scale(d).
template <typename T>
CONVLOC_HD void lattice_scale_factors(int d, T* scale) {
  const double s = lattice_scale(d);
  for (int i = 0; i < d; ++i) scale[i] = static_cast<T>(s / std::sqrt(double(i + 1) * double(i + 2)));
}

template <typename T>  // float or double
class PermutohedralLattice {
 public:
  // features [n, d] row-major, already divided by the kernel's standard deviations; 1 <= d <= kLatticeMaxDim.
  // Throws ValueError for NaN/inf features or coordinates beyond kLatticeMaxCoord.
  PermutohedralLattice(const T* features, int64_t n, int d);
  int64_t num_points() const { return n_; }
  int dim() const { return d_; }
  int64_t num_vertices() const { return num_vertices_; }
  // Bytes held now: the structure and band tables, plus the splat lists once a filter() has built them.
  int64_t memory_bytes() const;
  // out[i, :] ≈ sum_j exp(-|f_i - f_j|^2 / 2) in[j, :]   (transpose=true: the exact adjoint of that linear map)
  // in, out: [n, channels] row-major (channels innermost); must not alias. No hashing here (neighbours are
  // stored at build time); runs on convloc::parallel_for; results independent of the thread count.
  void filter(const T* in, T* out, int64_t channels, bool transpose = false) const;
  // out[i] = the lattice's own weight of point i, (A)_ii: what filter() adds of in[i] to out[i]. Subtracting
  // diagonal[i] * in[i] excludes each point's own contribution (j != i) without ever going negative.
  // Computed on demand by walking the stored blur neighbours (no hashing); costs about one filtering.
  void diagonal(T* out) const;
  // The blur step of filter(), for callers that splat and slice themselves (the dense CRF's fused
  // update, with slice_offsets()/slice_weights()/amplitude()): a and b hold num_vertices() + 1 rows of
  // `stride` values (1 or a multiple of 8), the last row zero; blurs a (b is scratch) and returns the one of
  // the two that holds the result.
  T* blur(T* a, T* b, int64_t stride, bool transpose = false) const;

  // The structure, for learned filters built on the lattice (convloc.nn.PermutohedralConv): point i's
  // simplex vertices slice_offsets()[i*(d+1)+k] with barycentric weights slice_weights()[...]; vertex v's
  // neighbours along direction j, blur_neighbours()[(j*(V+1)+v)*2 + {0: minus, 1: plus}] (V = num_vertices()
  // when absent; row V, the always-zero row, is its own neighbour); amplitude(): the factor splat-blur-slice
  // carries to approximate the Gaussian sum.
  // The points split into kLatticeSplatBands fixed bands (band b: points [n b / bands, n (b + 1) / bands)),
  // each numbering the vertices its points use in order of first use: offsets[i * (d+1) + k] is the
  // band-local id of point i's vertex k, and vertices[first[b] + j] the global id of band b's vertex j.
  // A band of an image touches a fraction of the lattice, so per-band splat sums stay in cache.
  struct BandTables {
    WorkspaceVector<int32_t> offsets, vertices;
    std::vector<int64_t> first;  // [bands + 1]
    // The inverse, for add_band_sums(): vertex v's band rows are rows[row_start[v] .. row_start[v + 1]),
    // in band order.
    WorkspaceVector<int64_t> row_start;
    WorkspaceVector<int32_t> rows;
  };
  const BandTables& band_tables() const { return bands_; }
  // Whether the bands touch at most num_points() vertices in all: their partial sums then stay compact
  // enough for a splat by scattering (filter() and the dense CRF's fused update).
  bool band_sums_fit() const { return band_tables().first.back() <= n_; }
  // vertices[v, :] = sum over the bands, in band order, of partial[first[b] + j, :] for the band vertices j
  // of global id v (rows of `stride` values; num_vertices() rows written).
  void add_band_sums(const T* partial, int64_t stride, T* vertices) const;
  const WorkspaceVector<int32_t>& slice_offsets() const { return offset_; }
  const WorkspaceVector<T>& slice_weights() const { return weight_; }
  const WorkspaceVector<int32_t>& blur_neighbours() const { return blur_; }
  T amplitude() const { return amplitude_; }

 private:
  int64_t n_ = 0;
  int d_ = 0;
  int64_t num_vertices_ = 0;
  T amplitude_ = 0;
  // Slice: point i reads vertices offset_[i*(d+1)+k] with weights weight_[i*(d+1)+k].
  WorkspaceVector<int32_t> offset_;
  WorkspaceVector<T> weight_;
  // Splat as a gather: vertex v sums in[point[e]] * weight[e], e in [start[v], start[v+1]); built on the first
  // filter() (the dense CRF's fused update splats by scattering and never needs them).
  struct SplatLists {
    std::once_flag once;
    WorkspaceVector<int64_t> start;
    WorkspaceVector<int32_t> point;
    WorkspaceVector<T> weight;
  };
  std::unique_ptr<SplatLists> splat_ = std::make_unique<SplatLists>();
  BandTables bands_;  // (built with the lattice: from the chunks' tables it costs little)
  const SplatLists& splat_lists() const;
  // Blur: neighbours of vertex v along direction j are blur_[(j*(V+1)+v)*2 + {0, 1}] (direction-major: a blur
  // pass reads one direction's table from end to end); absent ones point at the always-zero row V.
  WorkspaceVector<int32_t> blur_;
  // Ranks of each point's coordinates (for diagonal()).
  WorkspaceVector<uint8_t> rank_;
};

// One-shot filtering (build + filter): features [n, d], in/out [n, channels]; exclude_self subtracts each
// point's own lattice weight (diagonal()) times its value.
template <typename T>
void permutohedral_filter_cpu(const T* features, int64_t n, int d, const T* in, T* out, int64_t channels,
                              bool transpose, bool exclude_self);
// The simplices of features [n, d] as the CPU build computes them (vectorised: 8 points at a time in vector lanes)
// or as the scalar lattice_simplex computes them (vectorised = false): keys [n, d+1, d], weights and ranks
// [n, d+1]. The two must agree bitwise (a test checks it; both compiled without FMA contraction). Throws
// ValueError for out-of-range or non-finite features.
template <typename T>
void lattice_simplices_cpu(const T* features, int64_t n, int d, bool vectorised, int32_t* keys, T* weights,
                           uint8_t* ranks);
#ifdef CONVLOC_WITH_CUDA
// The same on the GPU, on the caller's stream.
template <typename T>
void permutohedral_filter_cuda(const T* features, int64_t n, int d, const T* in, T* out, int64_t channels,
                               bool transpose, bool exclude_self, void* stream);
#endif

}  // namespace convloc
