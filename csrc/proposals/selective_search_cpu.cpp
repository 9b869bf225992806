// Selective search (Uijlings et al., IJCV 2013): hierarchical grouping of Felzenszwalb regions,
// diversified over colour spaces, segmentation thresholds and similarity measures.
#include <algorithm>
#include <climits>
#include <queue>
#include <tuple>
#include <vector>

#include "core/parallel.h"
#include "proposals/proposals.h"

namespace convloc {
namespace {

struct Features {
  ColourSpace space;
  int c = 0;
  bool bins = false;  // colour and texture bins wanted
  std::vector<float> image;
  std::vector<uint8_t> colour, texture;
};

struct Segmentation {
  ColourSpace space;
  double k;
  int64_t min_size;
  std::vector<int32_t> labels;
  int64_t count = 0;
};

struct Candidate {
  double sim;
  int32_t a, b;
  // Highest similarity first; ties go to the lower pair of region ids, for determinism.
  bool operator<(const Candidate& o) const {
    return sim != o.sim ? sim < o.sim : std::tie(a, b) > std::tie(o.a, o.b);
  }
};

class Grouping {
 public:
  Grouping(const Segmentation& seg, const Features& f, const SelectiveSearchStrategy& s, int64_t h, int64_t w)
      : s_(s), n0_(seg.count), image_size_(double(h) * double(w)) {
    const int64_t total = 2 * n0_ - 1;
    const int c = f.c;
    dc_ = s.colour ? c * kColourBins : 0;
    dim_ = dc_ + (s.texture ? c * kOrientations * kTextureBins : 0);
    hist_.assign(total * dim_, 0.f);
    size_.assign(total, 0);
    box_.resize(4 * total);
    for (int64_t r = 0; r < n0_; ++r) box_[4 * r] = box_[4 * r + 1] = INT32_MAX, box_[4 * r + 2] = box_[4 * r + 3] = -1;
    const int32_t* lab = seg.labels.data();
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t p = y * w + x, r = lab[p];
        ++size_[r];
        int32_t* b = &box_[4 * r];
        b[0] = std::min<int32_t>(b[0], x), b[1] = std::min<int32_t>(b[1], y);
        b[2] = std::max<int32_t>(b[2], x + 1), b[3] = std::max<int32_t>(b[3], y + 1);
        float* hr = &hist_[r * dim_];
        if (s.colour)
          for (int k = 0; k < c; ++k) hr[k * kColourBins + f.colour[p * c + k]] += 1.f;
        if (s.texture)
          for (int j = 0; j < c * kOrientations; ++j)
            hr[dc_ + j * kTextureBins + f.texture[p * c * kOrientations + j]] += 1.f;
      }
    // L1-normalised descriptors.
    for (int64_t r = 0; r < n0_; ++r) {
      float* hr = &hist_[r * dim_];
      const float cn = 1.f / (size_[r] * c), tn = cn / kOrientations;
      for (int64_t j = 0; j < dim_; ++j) hr[j] *= j < dc_ ? cn : tn;
    }
    // Regions touching horizontally or vertically are neighbours.
    std::vector<uint64_t> pairs;
    auto touch = [&](int32_t a, int32_t b) {
      if (a != b) pairs.push_back(uint64_t(std::min(a, b)) << 32 | uint32_t(std::max(a, b)));
    };
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        if (x + 1 < w) touch(lab[y * w + x], lab[y * w + x + 1]);
        if (y + 1 < h) touch(lab[y * w + x], lab[(y + 1) * w + x]);
      }
    std::sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
    neighbours_.resize(total);
    alive_.assign(total, 0);
    std::fill(alive_.begin(), alive_.begin() + n0_, 1);
    for (uint64_t pr : pairs) {
      const int32_t a = int32_t(pr >> 32), b = int32_t(pr & 0xffffffffu);
      neighbours_[a].push_back(b), neighbours_[b].push_back(a);
      queue_.push({similarity(a, b), a, b});
    }
  }

  Hierarchy run() {
    int32_t next = static_cast<int32_t>(n0_);
    while (!queue_.empty()) {
      const Candidate top = queue_.top();
      queue_.pop();
      if (alive_[top.a] && alive_[top.b]) merge(top.a, top.b, next++);
    }
    Hierarchy out;
    out.initial = n0_;
    out.boxes.assign(box_.begin(), box_.begin() + 4 * int64_t(next));
    return out;
  }

 private:
  double similarity(int32_t a, int32_t b) const {
    double sim = 0;
    const float *ha = &hist_[a * dim_], *hb = &hist_[b * dim_];
    if (dim_ > 0) {
      float colour = 0, texture = 0;
      for (int64_t j = 0; j < dc_; ++j) colour += std::min(ha[j], hb[j]);
      for (int64_t j = dc_; j < dim_; ++j) texture += std::min(ha[j], hb[j]);
      sim += double(colour) + double(texture);
    }
    const double sa = double(size_[a]), sb = double(size_[b]);
    if (s_.size) sim += 1.0 - (sa + sb) / image_size_;
    if (s_.fill) {
      const int32_t *ba = &box_[4 * a], *bb = &box_[4 * b];
      const double bw = std::max(ba[2], bb[2]) - std::min(ba[0], bb[0]);
      const double bh = std::max(ba[3], bb[3]) - std::min(ba[1], bb[1]);
      sim += 1.0 - (bw * bh - sa - sb) / image_size_;
    }
    return sim;
  }

  void merge(int32_t a, int32_t b, int32_t t) {
    size_[t] = size_[a] + size_[b];
    const int32_t *ba = &box_[4 * a], *bb = &box_[4 * b];
    int32_t* bt = &box_[4 * int64_t(t)];
    bt[0] = std::min(ba[0], bb[0]), bt[1] = std::min(ba[1], bb[1]);
    bt[2] = std::max(ba[2], bb[2]), bt[3] = std::max(ba[3], bb[3]);
    const float wa = float(size_[a]) / float(size_[t]), wb = float(size_[b]) / float(size_[t]);
    const float *ha = &hist_[a * dim_], *hb = &hist_[b * dim_];
    float* ht = &hist_[int64_t(t) * dim_];
    for (int64_t j = 0; j < dim_; ++j) ht[j] = wa * ha[j] + wb * hb[j];
    alive_[a] = alive_[b] = 0;
    alive_[t] = 1;
    std::vector<int32_t>& nt = neighbours_[t];
    for (int32_t u : neighbours_[a]) if (u != b) nt.push_back(u);
    for (int32_t u : neighbours_[b]) if (u != a) nt.push_back(u);
    std::sort(nt.begin(), nt.end());
    nt.erase(std::unique(nt.begin(), nt.end()), nt.end());
    for (int32_t u : nt) {
      std::vector<int32_t>& nu = neighbours_[u];
      nu.erase(std::remove_if(nu.begin(), nu.end(), [&](int32_t v) { return v == a || v == b; }), nu.end());
      nu.push_back(t);
      queue_.push({similarity(u, t), u, t});
    }
    std::vector<int32_t>().swap(neighbours_[a]);
    std::vector<int32_t>().swap(neighbours_[b]);
  }

  const SelectiveSearchStrategy s_;
  const int64_t n0_;
  const double image_size_;
  int64_t dc_ = 0, dim_ = 0;
  std::vector<float> hist_;
  std::vector<int64_t> size_;
  std::vector<int32_t> box_;
  std::vector<std::vector<int32_t>> neighbours_;
  std::vector<uint8_t> alive_;
  std::priority_queue<Candidate> queue_;
};

}  // namespace

std::vector<Hierarchy> selective_search_cpu(const float* rgb, int64_t h, int64_t w,
                                            const std::vector<SelectiveSearchStrategy>& strategies,
                                            double sigma) {
  const int64_t n = h * w;
  // Colour spaces and segmentations are computed once and shared by the strategies using them.
  std::vector<Features> spaces;
  std::vector<Segmentation> segs;
  std::vector<std::pair<size_t, size_t>> uses;  // (space, segmentation) of each strategy
  for (const auto& s : strategies) {
    size_t fi = 0;
    while (fi < spaces.size() && spaces[fi].space != s.space) ++fi;
    if (fi == spaces.size()) spaces.push_back({s.space, colour_channels(s.space)});
    spaces[fi].bins |= s.colour || s.texture;
    size_t si = 0;
    while (si < segs.size() && !(segs[si].space == s.space && segs[si].k == s.k && segs[si].min_size == s.min_size))
      ++si;
    if (si == segs.size()) segs.push_back({s.space, s.k, s.min_size});
    uses.emplace_back(fi, si);
  }
  parallel_for(static_cast<int64_t>(spaces.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      Features& f = spaces[i];
      f.image.resize(n * f.c);
      convert_colour_cpu(rgb, n, f.space, f.image.data());
      if (!f.bins) continue;
      f.colour.resize(n * f.c);
      f.texture.resize(n * f.c * kOrientations);
      region_features_cpu(f.image.data(), h, w, f.c, f.colour.data(), f.texture.data());
    }
  });
  parallel_for(static_cast<int64_t>(segs.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      Segmentation& sg = segs[i];
      size_t fi = 0;
      while (spaces[fi].space != sg.space) ++fi;
      sg.labels.resize(n);
      sg.count = felzenszwalb_cpu(spaces[fi].image.data(), h, w, spaces[fi].c, sg.k / 255.0, sigma, sg.min_size,
                                  sg.labels.data());
    }
  });
  std::vector<Hierarchy> out(strategies.size());
  parallel_for(static_cast<int64_t>(strategies.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      out[i] = Grouping(segs[uses[i].second], spaces[uses[i].first], strategies[i], h, w).run();
  });
  return out;
}

}  // namespace convloc
