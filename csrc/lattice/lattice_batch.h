// A batch of CPU permutohedral lattices of one precision: one per item of features [B, N, d], built once
// and filtered any number of times (convloc's PermutohedralLattice).
#pragma once

#include <cstdint>
#include <memory>
#include <tuple>
#include <vector>

#include "lattice/lattice.h"

namespace convloc {

class LatticeBatch {
 public:
  // features [batch, n, d] (T float or double), already divided by the standard deviations; batched: whether
  // they came as [B, N, d] rather than as one set [N, d] (batch 1). Builds the items in parallel. Throws
  // ValueError for NaN/inf features or coordinates beyond kLatticeMaxCoord.
  template <typename T>
  LatticeBatch(const T* features, int64_t batch, int64_t n, int d, bool batched);

  int64_t batch() const { return batch_; }
  int64_t num_points() const { return n_; }
  int dim() const { return d_; }
  bool batched() const { return batched_; }
  bool is_double() const { return double_; }
  // Per item.
  std::vector<int64_t> num_vertices() const;
  std::vector<int64_t> memory_bytes() const;

  // Item b's lattice; T is the features' type.
  template <typename T>
  const PermutohedralLattice<T>& item(int64_t b) const {
    return *std::get<Items<T>>(items_)[b];
  }
  // in, out [batch, n, channels] of the features' type: each item filtered by its lattice
  // (PermutohedralLattice::filter).
  template <typename T>
  void filter(const T* in, T* out, int64_t channels, bool transpose) const;
  // out [batch, n] of the features' type: each item's PermutohedralLattice::diagonal.
  template <typename T>
  void diagonal(T* out) const;
  // Item b's blur neighbours vertex by vertex: out [V, d + 1, 2] (V = its vertex count, also marking absent
  // neighbours), where blur_neighbours() stores them direction by direction.
  void neighbours_by_vertex(int64_t b, int32_t* out) const;

 private:
  template <typename T>
  using Items = std::vector<std::unique_ptr<PermutohedralLattice<T>>>;
  // fn(the items), of the features' type.
  template <typename F>
  auto each(F&& fn) const {
    return double_ ? fn(std::get<Items<double>>(items_)) : fn(std::get<Items<float>>(items_));
  }
  // value(lattice) of each item.
  template <typename F>
  std::vector<int64_t> per_item(F&& value) const;

  int64_t batch_ = 0, n_ = 0;
  int d_ = 0;
  bool batched_ = false, double_ = false;
  std::tuple<Items<float>, Items<double>> items_;
};

}  // namespace convloc
