#include <algorithm>
#include <memory>
#include <vector>

#include "core/parallel.h"
#include "crf/dense_crf.h"
#include "lattice/lattice.h"

namespace convloc {
namespace {

// Pixels per block of the fused update: a fixed split, so energies summed per block and then in
// block order do not depend on the thread count.
constexpr int64_t kBlock = 2048;

template <typename T>
struct KernelState {
  std::unique_ptr<PermutohedralLattice<T>> lattice;
  std::vector<T> pre, post;  // [N] scales around the filtering
  std::vector<T> in, out;    // [N, L] filter input (pre * Q) and output
  std::vector<T> diag;       // [L] compat diagonal when the compat matrix is diagonal, else empty
  const T* compat = nullptr;
};

template <typename T>
bool is_diagonal(const T* c, int64_t labels) {
  for (int64_t a = 0; a < labels; ++a)
    for (int64_t b = 0; b < labels; ++b)
      if (a != b && c[a * labels + b] != T(0)) return false;
  return true;
}

// Mean-field for one image. Every pass over the pixels is a parallel_for over fixed blocks.
template <typename T>
class ImageCrf {
 public:
  ImageCrf(const T* unary, int64_t labels, int64_t n, const std::vector<CrfKernel<T>>& kernels, int64_t image,
           bool exclude_self)
      : labels_(labels), n_(n), exclude_self_(exclude_self), neg_unary_(n * labels), ks_(kernels.size()) {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0 * kBlock; i < std::min(n, b1 * kBlock); ++i)
        for (int64_t l = 0; l < labels; ++l) neg_unary_[i * labels + l] = -unary[l * n + i];
    });
    for (size_t k = 0; k < kernels.size(); ++k) {
      const CrfKernel<T>& spec = kernels[k];
      KernelState<T>& s = ks_[k];
      s.lattice = std::make_unique<PermutohedralLattice<T>>(spec.features + image * n * spec.dim, n, spec.dim);
      std::vector<T> ones(n, T(1)), norm(n);
      s.lattice->filter(ones.data(), norm.data(), 1);
      if (exclude_self)
        for (T& v : norm) v = std::max(v - T(1), T(0));
      double total = 0;
      for (T v : norm) total += v;
      const T mean_scale = total > 0 ? T(double(n) / total) : T(0);
      s.pre.resize(n), s.post.resize(n);
      for (int64_t i = 0; i < n; ++i) crf_norm_scales(spec.norm, norm[i], mean_scale, &s.pre[i], &s.post[i]);
      s.in.resize(n * labels), s.out.resize(n * labels);
      s.compat = spec.compat;
      if (is_diagonal(spec.compat, labels)) {
        s.diag.resize(labels);
        for (int64_t l = 0; l < labels; ++l) s.diag[l] = spec.compat[l * labels + l];
      }
    }
  }

  int64_t lattice_bytes() const {
    int64_t b = 0;
    for (const auto& s : ks_) b += s.lattice->memory_bytes();
    return b;
  }

  // Runs the iterations; writes q [L, N], map [N] (nullable), energy [iterations + 1] (nullable).
  void run(int64_t iterations, T* q, int64_t* map, double* energy) {
    if (energy) q_.resize(n_ * labels_);
    // Q_0 = softmax(-U).
    update(false, energy ? q_.data() : nullptr, nullptr, iterations == 0 ? q : nullptr, map);
    for (int64_t it = 0; it < iterations; ++it) {
      filter_all();
      const bool last = it + 1 == iterations;
      update(true, energy ? q_.data() : nullptr, energy ? &energy[it] : nullptr, last ? q : nullptr,
             last ? map : nullptr);
    }
    if (energy) {
      filter_all();
      energy[iterations] = energy_only();
    }
  }

 private:
  void filter_all() {
    for (auto& s : ks_) s.lattice->filter(s.in.data(), s.out.data(), labels_);
  }

  // logits[l] = -U[l] - sum_k C_k (post_k * (out_k - self_k))[l] for pixel i.
  void message(int64_t i, T* z, T* tmp) const {
    const int64_t L = labels_;
    for (const auto& s : ks_) {
      const T post = s.post[i];
      const T* o = s.out.data() + i * L;
      const T* in = s.in.data() + i * L;
      for (int64_t l = 0; l < L; ++l) tmp[l] = post * (exclude_self_ ? o[l] - in[l] : o[l]);
      if (!s.diag.empty()) {
        for (int64_t l = 0; l < L; ++l) z[l] -= s.diag[l] * tmp[l];
      } else {
        for (int64_t a = 0; a < L; ++a) {
          const T* row = s.compat + a * L;
          T acc = 0;
          for (int64_t b = 0; b < L; ++b) acc += row[b] * tmp[b];
          z[a] -= acc;
        }
      }
    }
  }

  // One fused pass: logits from the unary (and the messages when with_message), softmax, the
  // filter inputs of the next iteration; optionally Q in [N, L] (q_nl, also read for the energy of
  // the previous iterate), Q in [L, N] and the argmax.
  void update(bool with_message, T* q_nl, double* energy_prev, T* q_ln, int64_t* map) {
    const int64_t L = labels_, n = n_;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(energy_prev ? blocks : 0);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> z(L), tmp(L);
      for (int64_t b = b0; b < b1; ++b) {
        double e = 0;
        for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
          const T* nu = neg_unary_.data() + i * L;
          std::copy(nu, nu + L, z.data());
          if (with_message) message(i, z.data(), tmp.data());
          if (energy_prev) e += pixel_energy(q_nl + i * L, nu, z.data());
          const int64_t best = softmax_row(z.data(), L);
          for (auto& s : ks_) {
            T* in = s.in.data() + i * L;
            const T pre = s.pre[i];
            for (int64_t l = 0; l < L; ++l) in[l] = pre * z[l];
          }
          if (q_nl) std::copy(z.begin(), z.end(), q_nl + i * L);
          if (q_ln)
            for (int64_t l = 0; l < L; ++l) q_ln[l * n + i] = z[l];
          if (map) map[i] = best;
        }
        if (energy_prev) partial[b] = e;
      }
    });
    if (energy_prev) *energy_prev = sum(partial);
  }

  // Energy of q at one pixel given its logits z = -U - message(q).
  static double pixel_energy(const T* q, const T* neg_unary, const T* z, int64_t L) {
    double e = 0;
    for (int64_t l = 0; l < L; ++l) {
      const double ql = q[l];
      const double msg = double(neg_unary[l]) - double(z[l]);
      e += ql * std::log(std::max(ql, 1e-20)) - ql * double(neg_unary[l]) + 0.5 * ql * msg;
    }
    return e;
  }
  double pixel_energy(const T* q, const T* neg_unary, const T* z) const { return pixel_energy(q, neg_unary, z, labels_); }

  double energy_only() {
    const int64_t L = labels_, n = n_;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(blocks);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> z(L), tmp(L);
      for (int64_t b = b0; b < b1; ++b) {
        double e = 0;
        for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i) {
          const T* nu = neg_unary_.data() + i * L;
          std::copy(nu, nu + L, z.data());
          message(i, z.data(), tmp.data());
          e += pixel_energy(q_.data() + i * L, nu, z.data());
        }
        partial[b] = e;
      }
    });
    return sum(partial);
  }

  static double sum(const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s;
  }

  int64_t labels_, n_;
  bool exclude_self_;
  std::vector<T> neg_unary_;  // [N, L]
  std::vector<KernelState<T>> ks_;
  std::vector<T> q_;  // [N, L], kept only for the energy
};

}  // namespace

template <typename T>
void dense_crf_cpu(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<CrfKernel<T>>& kernels,
                   int64_t iterations, bool exclude_self, T* q, int64_t* map_labels, double* energy,
                   int64_t* lattice_bytes) {
  std::vector<int64_t> bytes(batch, 0);
  auto one = [&](int64_t b) {
    ImageCrf<T> crf(unary + b * labels * n, labels, n, kernels, b, exclude_self);
    bytes[b] = crf.lattice_bytes();
    crf.run(iterations, q + b * labels * n, map_labels ? map_labels + b * n : nullptr,
            energy ? energy + b * (iterations + 1) : nullptr);
  };
  if (batch == 1) {
    one(0);  // parallel inside
  } else {
    // Whole images per thread: lattices are built in parallel; the nested loops run inline.
    parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b);
    });
  }
  if (lattice_bytes) *lattice_bytes = batch ? *std::max_element(bytes.begin(), bytes.end()) : 0;
}

template void dense_crf_cpu<float>(const float*, int64_t, int64_t, int64_t, const std::vector<CrfKernel<float>>&,
                                   int64_t, bool, float*, int64_t*, double*, int64_t*);
template void dense_crf_cpu<double>(const double*, int64_t, int64_t, int64_t, const std::vector<CrfKernel<double>>&,
                                    int64_t, bool, double*, int64_t*, double*, int64_t*);

}  // namespace convloc
