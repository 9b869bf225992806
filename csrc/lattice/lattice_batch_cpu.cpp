#include <type_traits>

#include "core/parallel.h"
#include "lattice/lattice_batch.h"

namespace convloc {

template <typename T>
LatticeBatch::LatticeBatch(const T* features, int64_t batch, int64_t n, int d, bool batched)
    : batch_(batch), n_(n), d_(d), batched_(batched), double_(std::is_same_v<T, double>) {
  auto& lat = std::get<Items<T>>(items_);
  lat.resize(batch);
  // Several items: one per thread (each builds inline); one item: threads within its build.
  parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) lat[b] = std::make_unique<PermutohedralLattice<T>>(features + b * n * d, n, d);
  });
}

template <typename F>
std::vector<int64_t> LatticeBatch::per_item(F&& value) const {
  return each([&](const auto& lat) {
    std::vector<int64_t> r;
    for (const auto& l : lat) r.push_back(value(*l));
    return r;
  });
}

std::vector<int64_t> LatticeBatch::num_vertices() const {
  return per_item([](const auto& l) { return l.num_vertices(); });
}
std::vector<int64_t> LatticeBatch::memory_bytes() const {
  return per_item([](const auto& l) { return l.memory_bytes(); });
}

template <typename T>
void LatticeBatch::filter(const T* in, T* out, int64_t channels, bool transpose) const {
  const auto& lat = std::get<Items<T>>(items_);
  auto one = [&](int64_t b) { lat[b]->filter(in + b * n_ * channels, out + b * n_ * channels, channels, transpose); };
  // As many items as threads: one per thread; fewer: threads within each item's filtering.
  if (batch_ >= get_num_threads()) {
    parallel_for(batch_, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) one(b);
    });
  } else {
    for (int64_t b = 0; b < batch_; ++b) one(b);
  }
}

template <typename T>
void LatticeBatch::diagonal(T* out) const {
  const auto& lat = std::get<Items<T>>(items_);
  for (int64_t b = 0; b < batch_; ++b) lat[b]->diagonal(out + b * n_);
}

void LatticeBatch::neighbours_by_vertex(int64_t b, int32_t* out) const {
  each([&](const auto& lat) {
    const int64_t v = lat[b]->num_vertices(), k1 = d_ + 1;
    const int32_t* src = lat[b]->blur_neighbours().data();
    for (int64_t u = 0; u < v; ++u)
      for (int64_t j = 0; j < k1; ++j)
        for (int side = 0; side < 2; ++side) out[(u * k1 + j) * 2 + side] = src[(j * (v + 1) + u) * 2 + side];
    return 0;
  });
}

#define CONVLOC_INSTANTIATE(T)                                                \
  template LatticeBatch::LatticeBatch(const T*, int64_t, int64_t, int, bool); \
  template void LatticeBatch::filter<T>(const T*, T*, int64_t, bool) const;   \
  template void LatticeBatch::diagonal<T>(T*) const;
CONVLOC_INSTANTIATE(float)
CONVLOC_INSTANTIATE(double)
#undef CONVLOC_INSTANTIATE

}  // namespace convloc
