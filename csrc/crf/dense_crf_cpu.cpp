#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/check.h"
#include "core/parallel.h"
#include "core/workspace.h"
#include "crf/dense_crf.h"
#include "crf/dense_crf_kernels.h"
#include "crf/dense_crf_rows.h"

namespace convloc {
namespace {

// Pixels per block of an update: a fixed split, so energies summed per block and then in block order
// do not depend on the thread count.
constexpr int64_t kBlock = 2048;

// dense_crf_cpu's arguments (see dense_crf.h), shared by the images of the batch.
template <typename T>
struct CrfArgs {
  const T* unary;  // [B, L, N]
  int64_t labels, n;
  const std::vector<int64_t>& spatial;
  const std::vector<CrfKernel<T>>& kernels;
  int64_t iterations;
  bool exclude_self;
  const T* init;        // [B, L, N] or null
  T* q;                 // [B, L, N]
  int64_t* map_labels;  // [B, N] or null
  double* energy;       // [B, iterations + 1] or null
};

// What one image's inference writes.
template <typename T>
struct ImageResult {
  T* q;             // [L, N] the marginals after the last update
  int64_t* labels;  // [N] their argmax, or null
  double* energy;   // [iterations + 1] the energy of each Q, or null
};

// What one update writes (each optional).
template <typename T>
struct UpdateOutputs {
  bool filter_inputs = false;         // the next filtering's inputs pre_k Q
  T* q = nullptr;                     // [L, N] Q
  int64_t* labels = nullptr;          // [N] argmax Q
  double* previous_energy = nullptr;  // the energy of the Q this update replaces (Logits::WithMessages)
};

double sum_in_order(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// Mean-field for one image. Every pass over the pixels is a parallel_for over fixed blocks. Rows of
// labels are padded to LP, a multiple of 8: the filters then move whole vectors, with no tails.
template <typename T>
class ImageCrf {
 public:
  ImageCrf(const CrfArgs<T>& args, int64_t image)
      : labels_(args.labels),
        padded_labels_((args.labels + 7) & ~int64_t(7)),
        pixels_(args.n),
        iterations_(args.iterations),
        exclude_self_(args.exclude_self),
        unary_(args.unary + image * args.labels * args.n),
        init_(args.init ? args.init + image * args.labels * args.n : nullptr),
        result_{args.q + image * args.labels * args.n, args.map_labels ? args.map_labels + image * args.n : nullptr,
                args.energy ? args.energy + image * (args.iterations + 1) : nullptr},
        neg_unary_(args.n * padded_labels_) {
    kernels_.reserve(args.kernels.size());
    for (const CrfKernel<T>& spec : args.kernels)
      kernels_.emplace_back(spec, image, pixels_, args.spatial, labels_, padded_labels_, exclude_self_);
    fused_ = fits_fused();
    for (PairwiseKernel<T>& k : kernels_)
      fused_ ? k.prepare_fused(pixels_, padded_labels_) : k.prepare_general(pixels_, padded_labels_);
    if (!fused_) gather_unary(0, pixels_);  // (the fused first update gathers block by block)
  }

  // The lattices' memory and the grid filters' scratch.
  int64_t lattice_bytes() const {
    int64_t bytes = 0;
    for (const PairwiseKernel<T>& k : kernels_) bytes += k.memory_bytes();
    return bytes;
  }

  // Q_0 = softmax(-U) (or init), then `iterations` updates Q_t = softmax(-U - sum_k message_k(Q_{t-1})).
  void run() {
    if (result_.energy) q_rows_.resize(pixels_ * padded_labels_);
    update(Logits::Unary, outputs_of_update(0));
    if (!unary_finite_) fail_value("unary: expected finite values, got NaN or inf");
    for (int64_t t = 1; t <= iterations_; ++t) {
      filter_all();
      update(Logits::WithMessages, outputs_of_update(t));
    }
    if (result_.energy) {
      filter_all();
      result_.energy[iterations_] = energy_of_q();
    }
  }

 private:
  class FusedWorker;

  // The fused update needs float rows of few labels, few kernels, all fused, and none of exclude_self,
  // energy or init.
  bool fits_fused() const {
    if (!std::is_same<T, float>::value || exclude_self_ || result_.energy || init_) return false;
    if (kernels_.size() > size_t(kMaxFusedKernels) || padded_labels_ > kMaxFusedLabels) return false;
    return std::all_of(kernels_.begin(), kernels_.end(),
                       [&](const PairwiseKernel<T>& k) { return k.fits_fused(padded_labels_); });
  }

  // What the update that computes Q_t writes: Q and its labels after the last one; the energy of
  // Q_{t-1} where asked for.
  UpdateOutputs<T> outputs_of_update(int64_t t) const {
    UpdateOutputs<T> out;
    const bool last = t == iterations_;
    out.filter_inputs = !last || result_.energy;  // (the energy of the last Q filters it too)
    if (last) out.q = result_.q, out.labels = result_.labels;
    if (t > 0 && result_.energy) out.previous_energy = result_.energy + t - 1;
    return out;
  }

  // -U of pixels [i0, i1) into neg_unary_ (padding lanes -1e30); a NaN or inf clears unary_finite_.
  void gather_unary(int64_t i0, int64_t i1) {
    parallel_for((i1 - i0 + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = i0 + b * kBlock, j1 = std::min(i1, j0 + kBlock);
        if (!gather_rows(unary_, pixels_, labels_, padded_labels_, j0, j1, T(-1), T(-1e30),
                         neg_unary_.data() + j0 * padded_labels_))
          unary_finite_.store(false, std::memory_order_relaxed);
      }
    });
  }

  // Every kernel's filtering. With no more threads than kernels, the kernels run side by side, one
  // thread each (a kernel's passes then need no barriers between them); otherwise one after the
  // other, each in parallel. Each kernel computes the same either way.
  void filter_all() {
    // The fused lattices' band sums first, on all threads: the lattice's blur, the longest of the
    // kernels' jobs below, then starts sooner.
    if (fused_)
      for (PairwiseKernel<T>& k : kernels_)
        if (auto* lattice = std::get_if<LatticeFilter<T>>(&k.filter)) lattice->add_band_sums(padded_labels_);
    const auto filter_one = [&](PairwiseKernel<T>& k) {
      fused_ ? k.filter_fused(padded_labels_) : k.filter_general(padded_labels_);
    };
    const int64_t count = kernels_.size();
    if (count > 1 && get_num_threads() <= count)
      parallel_for(count, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) filter_one(kernels_[k]);
      });
    else
      for (PairwiseKernel<T>& k : kernels_) filter_one(k);
  }

  void update(Logits logits, const UpdateOutputs<T>& out) {
    if (fused_)
      update_fused(logits, out);
    else
      update_general(logits, out);
  }

  // The general update, block by block: logits (or the given Q_0), the energy of the previous Q,
  // softmax, the outputs.
  void update_general(Logits logits, const UpdateOutputs<T>& out) {
    const int64_t blocks = (pixels_ + kBlock - 1) / kBlock;
    std::vector<double> block_energy(out.previous_energy ? blocks : 0);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> q(kBlock * padded_labels_), scratch(labels_);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlock, i1 = std::min(pixels_, i0 + kBlock);
        if (init_ && logits == Logits::Unary) {
          gather_rows(init_, pixels_, labels_, padded_labels_, i0, i1, T(1), T(0), q.data());
        } else {
          block_logits(logits, i0, i1, q.data(), scratch.data());
          if (out.previous_energy) block_energy[b] = energy_of_block(i0, i1, q.data());
          softmax_rows(q.data(), i1 - i0, labels_, padded_labels_);
        }
        write_block_outputs(q.data(), i0, i1, out);
      }
    });
    if (out.previous_energy) *out.previous_energy = sum_in_order(block_energy);
  }

  // The fused update (float): workers take whole bands of pixels (each band splats into its own
  // partial sums), and the blocks of a band in order.
  void update_fused(Logits logits, const UpdateOutputs<T>& out) {
    if constexpr (std::is_same<T, float>::value) {
      parallel_for(kPixelBands, 1, [&](int64_t band0, int64_t band1) {
        FusedWorker worker(*this, logits, out);
        for (int64_t band = band0; band < band1; ++band) worker.update_band(band);
      });
    }
  }

  // z = the logits of pixels [i0, i1): -U, minus the messages with Logits::WithMessages.
  void block_logits(Logits logits, int64_t i0, int64_t i1, T* z, T* scratch) const {
    std::copy(neg_unary_.data() + i0 * padded_labels_, neg_unary_.data() + i1 * padded_labels_, z);
    if (logits == Logits::WithMessages) subtract_messages(i0, i1, z, scratch);
  }

  // Q of pixels [i0, i1) (rows q) wherever `out` and the energy ask for it.
  void write_block_outputs(const T* q, int64_t i0, int64_t i1, const UpdateOutputs<T>& out) {
    const int64_t count = i1 - i0;
    // (the labels from Q itself: rounding in exp can make distinct logits equal probabilities)
    if (out.labels) argmax_rows(q, count, labels_, padded_labels_, out.labels + i0);
    if (out.filter_inputs)
      for (PairwiseKernel<T>& k : kernels_)
        scale_rows(q, k.pre.data() + i0, count, padded_labels_, k.in.data() + i0 * padded_labels_);
    if (!q_rows_.empty()) std::copy(q, q + count * padded_labels_, q_rows_.data() + i0 * padded_labels_);
    if (out.q) scatter_rows(q, pixels_, labels_, padded_labels_, i0, i1, out.q);
  }

  // z[i - i0, :] -= C_k (post_k[i] * (out_k - self_k in_k)[i, :]) over the kernels, for pixels [i0, i1)
  // (self_k only with exclude_self).
  void subtract_messages(int64_t i0, int64_t i1, T* z, T* scratch) const {
    for (const PairwiseKernel<T>& k : kernels_) {
      if (!k.compat_diagonal.empty())
        subtract_diagonal_message(k, i0, i1, z);
      else
        subtract_dense_message(k, i0, i1, z, scratch);
    }
  }
  void subtract_diagonal_message(const PairwiseKernel<T>& k, int64_t i0, int64_t i1, T* z) const {
    const T* __restrict out = k.out.data();
    const T* __restrict in = k.in.data();
    const T* __restrict c = k.compat_diagonal.data();
    for (int64_t i = i0; i < i1; ++i) {
      const T post = k.post[i];
      T* __restrict zi = z + (i - i0) * padded_labels_;
      const T* oi = out + i * padded_labels_;
      for (int64_t l = 0; l < labels_; ++l) zi[l] -= post * (c[l] * oi[l]);
      if (exclude_self_) {
        const T* ii = in + i * padded_labels_;
        const T ps = post * k.self_weight[i];
        for (int64_t l = 0; l < labels_; ++l) zi[l] += ps * (c[l] * ii[l]);
      }
    }
  }
  void subtract_dense_message(const PairwiseKernel<T>& k, int64_t i0, int64_t i1, T* z, T* scratch) const {
    const int64_t L = labels_;
    for (int64_t i = i0; i < i1; ++i) {
      const T post = k.post[i];
      T* zi = z + (i - i0) * padded_labels_;
      const T* oi = k.out.data() + i * padded_labels_;
      const T* ii = k.in.data() + i * padded_labels_;
      for (int64_t l = 0; l < L; ++l) scratch[l] = post * (exclude_self_ ? oi[l] - k.self_weight[i] * ii[l] : oi[l]);
      for (int64_t a = 0; a < L; ++a) {
        const T* row = k.compat + a * L;
        T acc = 0;
        for (int64_t b = 0; b < L; ++b) acc += row[b] * scratch[b];
        zi[a] -= acc;
      }
    }
  }

  // The energy of Q (q_rows_) over pixels [i0, i1), from its logits z = -U - message(Q) there:
  // sum Q log Q + sum U Q + 1/2 sum Q·message(Q).
  double energy_of_block(int64_t i0, int64_t i1, const T* z) const {
    double e = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const T* q = q_rows_.data() + i * padded_labels_;
      const T* neg_unary = neg_unary_.data() + i * padded_labels_;
      const T* zi = z + (i - i0) * padded_labels_;
      double pixel = 0;
      for (int64_t l = 0; l < labels_; ++l) {
        const double ql = q[l];
        const double message = double(neg_unary[l]) - double(zi[l]);
        pixel += ql * std::log(std::max(ql, 1e-20)) - ql * double(neg_unary[l]) + 0.5 * ql * message;
      }
      e += pixel;
    }
    return e;
  }

  // The energy of Q (q_rows_), after its filtering.
  double energy_of_q() {
    const int64_t blocks = (pixels_ + kBlock - 1) / kBlock;
    std::vector<double> block_energy(blocks);
    parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) {
      std::vector<T> z(kBlock * padded_labels_), scratch(labels_);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t i0 = b * kBlock, i1 = std::min(pixels_, i0 + kBlock);
        block_logits(Logits::WithMessages, i0, i1, z.data(), scratch.data());
        block_energy[b] = energy_of_block(i0, i1, z.data());
      }
    });
    return sum_in_order(block_energy);
  }

  int64_t labels_, padded_labels_, pixels_, iterations_;
  bool exclude_self_, fused_ = false;
  const T* unary_;  // [L, N]
  const T* init_;   // [L, N] Q_0, or null
  ImageResult<T> result_;
  std::atomic<bool> unary_finite_{true};  // (checked while the unary is gathered: all of it by Q_0)
  WorkspaceVector<T> neg_unary_;          // [N, LP], padding lanes -1e30
  std::vector<PairwiseKernel<T>> kernels_;
  WorkspaceVector<T> q_rows_;  // [N, LP] Q, kept for the energy
};

// One worker's share of the fused update: whole bands of pixels, a band's blocks in order, and a
// block image row by image row where coarse grid kernels slice and splat rows.
template <typename T>
class ImageCrf<T>::FusedWorker {
 public:
  FusedWorker(ImageCrf& crf, Logits logits, const UpdateOutputs<T>& out) : crf_(crf), logits_(logits), out_(out) {
    const int64_t lp = crf.padded_labels_;
    int64_t shared_rows_size = 0;  // the largest [shared rows, coarse columns, LP] of the coarse terms
    for (PairwiseKernel<T>& k : crf.kernels_) {
      if (auto* lattice = std::get_if<LatticeFilter<T>>(&k.filter)) {
        lattice_filter_[lattice_count_] = lattice;
        lattice_[lattice_count_++] = lattice->fused_term(k.pre.data(), k.post.data());
      } else if (auto* coarse = std::get_if<CoarseGridFilter<T>>(&k.filter)) {
        const CoarseGaussian<T>& g = coarse->gaussian();
        shared_rows_size = std::max(shared_rows_size, g.max_shared_rows() * g.cols().nodes * lp);
        width_ = g.width();
        coarse_filter_[coarse_count_] = coarse;
        coarse_[coarse_count_++] = coarse->fused_term(k.pre.data(), k.post.data());
      } else {
        exact_[exact_count_++] =
            ExactGridTerm{k.out.data(), k.post.data(), k.compat_diagonal.data(), k.pre.data(), k.in.data()};
      }
    }
    shared_rows_buffer_.resize(2 * coarse_count_ * shared_rows_size);  // (zeros: splat sums start at 0)
    for (int k = 0; k < coarse_count_; ++k) {
      shared_[k].slices = shared_rows_buffer_.data() + 2 * k * shared_rows_size;
      shared_[k].splat_sums = shared_[k].slices + shared_rows_size;
    }
    if (out.q || out.labels) q_block_.resize(kBlock * lp);  // (otherwise Q only goes to the filters)
    terms_ = FusedTerms{exact_.data(), exact_count_, lattice_.data(), lattice_count_, coarse_.data(), coarse_count_, 0};
    pixel_update_ = fused_pixel_update_for(lp, terms_);
  }

  void update_band(int64_t band) {
    const int64_t n = crf_.pixels_, p0 = n * band / kPixelBands, p1 = n * (band + 1) / kPixelBands;
    start_band(band);
    for (int64_t i0 = p0; i0 < p1; i0 += kBlock) update_block(band, i0, std::min(p1, i0 + kBlock), p1);
  }

 private:
  // A coarse grid term's image rows that share their coarse rows: rows [first, end) of the current
  // band, their slices of the blurred grid and their splat sums ([rows, coarse columns, LP] each;
  // the slices taken when the first row starts, the sums spread into the band's when the last ends).
  struct SharedRows {
    int64_t first = 0, end = -1;
    T* slices = nullptr;
    T* splat_sums = nullptr;
    T* band_sums = nullptr;
  };

  // The band's splat sums zeroed, the blurred lattice vertices it reads copied.
  void start_band(int64_t band) {
    const int64_t lp = crf_.padded_labels_;
    for (int k = 0; k < lattice_count_; ++k) {
      if (out_.filter_inputs) lattice_[k].splat_sums = lattice_filter_[k]->clear_band_sums(band, lp);
      if (logits_ == Logits::WithMessages) lattice_[k].blurred = lattice_filter_[k]->copy_band_blurred(band, lp);
    }
    for (int k = 0; k < coarse_count_; ++k) {
      shared_[k].end = -1;
      if (out_.filter_inputs) shared_[k].band_sums = coarse_filter_[k]->clear_band_sums(band, lp);
    }
  }

  // Pixels [i0, i1) of the band that ends at band_end.
  void update_block(int64_t band, int64_t i0, int64_t i1, int64_t band_end) {
    const int64_t lp = crf_.padded_labels_;
    T* q = q_block_.empty() ? nullptr : q_block_.data();
    if (logits_ == Logits::Unary) crf_.gather_unary(i0, i1);  // (in L2 for the update that follows)
    // Runs of pixels [run_begin, run_end): the block's part of one image row (the whole block without
    // coarse terms).
    for (int64_t run_begin = i0, run_end; run_begin < i1; run_begin = run_end) {
      run_end = coarse_count_ == 0 ? i1 : std::min(i1, (run_begin / width_ + 1) * width_);
      enter_image_row(run_begin, band_end);
      const FusedOutputs run_out{out_.filter_inputs, q ? q + (run_begin - i0) * lp : nullptr,
                                 out_.labels ? out_.labels + run_begin : nullptr};
      pixel_update_(crf_.neg_unary_.data(), run_begin, run_end, terms_, logits_, run_out);
      leave_image_row(band, run_end, band_end);
    }
    if (out_.q) scatter_rows(q, crf_.pixels_, crf_.labels_, lp, i0, i1, out_.q);
  }

  // Points the coarse grid terms at the slices and splat sums of pixel p's image row, slicing the rows
  // that share their coarse rows when p's row is the first of them.
  void enter_image_row(int64_t p, int64_t band_end) {
    if (coarse_count_ == 0) return;
    const int64_t lp = crf_.padded_labels_, y = p / width_;
    terms_.row_start = y * width_;
    for (int k = 0; k < coarse_count_; ++k) {
      const CoarseGaussian<T>& g = coarse_filter_[k]->gaussian();
      const int64_t row = g.cols().nodes * lp;
      SharedRows& rows = shared_[k];
      if (y >= rows.end) {
        rows.first = y, rows.end = g.shared_rows_end(y, (band_end - 1) / width_ + 1);
        if (logits_ == Logits::WithMessages)
          g.slice_rows(coarse_filter_[k]->blurred(lp), y, rows.end, 0, g.cols().nodes, lp, rows.slices, row);
      }
      coarse_[k].slice = rows.slices + (y - rows.first) * row;
      coarse_[k].splat_sums = rows.splat_sums + (y - rows.first) * row;
    }
  }

  // After the pixels before p: where they complete the rows that share their coarse rows, spreads those
  // rows' splat sums into the band's.
  void leave_image_row(int64_t band, int64_t p, int64_t band_end) {
    if (!out_.filter_inputs) return;
    const int64_t lp = crf_.padded_labels_;
    for (int k = 0; k < coarse_count_; ++k) {
      const CoarseGaussian<T>& g = coarse_filter_[k]->gaussian();
      const SharedRows& rows = shared_[k];
      if (p == std::min(band_end, rows.end * width_))
        g.flush_rows(rows.splat_sums, g.cols().nodes * lp, rows.first, rows.end, band, 0, g.cols().nodes, lp,
                     rows.band_sums);
    }
  }

  ImageCrf& crf_;
  const Logits logits_;
  const UpdateOutputs<T>& out_;
  std::array<ExactGridTerm, kMaxFusedKernels> exact_{};
  std::array<LatticeTerm, kMaxFusedKernels> lattice_{};
  std::array<CoarseGridTerm, kMaxFusedKernels> coarse_{};
  int exact_count_ = 0, lattice_count_ = 0, coarse_count_ = 0;
  std::array<LatticeFilter<T>*, kMaxFusedKernels> lattice_filter_{};
  std::array<CoarseGridFilter<T>*, kMaxFusedKernels> coarse_filter_{};
  std::array<SharedRows, kMaxFusedKernels> shared_{};
  int64_t width_ = 0;  // of the image (coarse terms)
  std::vector<T> shared_rows_buffer_, q_block_;
  FusedTerms terms_{};
  FusedPixelUpdate pixel_update_ = nullptr;
};

}  // namespace

template <typename T>
void dense_crf_cpu(const T* unary, int64_t batch, int64_t labels, int64_t n, const std::vector<int64_t>& spatial,
                   const std::vector<CrfKernel<T>>& kernels, int64_t iterations, bool exclude_self, const T* init, T* q,
                   int64_t* map_labels, double* energy, int64_t* lattice_bytes) {
  const CrfArgs<T> args{unary, labels, n, spatial, kernels, iterations, exclude_self, init, q, map_labels, energy};
  std::vector<int64_t> bytes(batch, 0);
  const auto one = [&](int64_t b) {
    ImageCrf<T> crf(args, b);
    bytes[b] = crf.lattice_bytes();
    crf.run();
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

template void dense_crf_cpu<float>(const float*, int64_t, int64_t, int64_t, const std::vector<int64_t>&,
                                   const std::vector<CrfKernel<float>>&, int64_t, bool, const float*, float*, int64_t*,
                                   double*, int64_t*);
template void dense_crf_cpu<double>(const double*, int64_t, int64_t, int64_t, const std::vector<int64_t>&,
                                    const std::vector<CrfKernel<double>>&, int64_t, bool, const double*, double*,
                                    int64_t*, double*, int64_t*);

}  // namespace convloc
