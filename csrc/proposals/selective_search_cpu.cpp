// Selective search (Uijlings et al., IJCV 2013): hierarchical grouping of Felzenszwalb regions,
// diversified over colour spaces, segmentation thresholds and similarity measures.
#include <algorithm>
#include <array>
#include <climits>
#include <numeric>
#include <queue>
#include <tuple>
#include <unordered_set>
#include <vector>

#include "core/parallel.h"
#include "proposals/proposals.h"

namespace convloc {
namespace {

struct Features {
  ColourSpace space = ColourSpace::RGB;
  int c = 0;
  bool bins = false;  // colour and texture bins wanted
  std::vector<float> image;
  std::vector<uint8_t> colour, texture;
};

struct Segmentation {
  ColourSpace space = ColourSpace::RGB;
  double k = 0;
  int64_t min_size = 0;
  std::vector<int32_t> labels;
  int64_t count = 0;
};

// The initial regions of a segmentation, shared by the strategies that start from it:
// sizes, boxes, unnormalised colour / texture histograms and adjacent pairs (a < b).
struct Regions {
  int64_t count = 0;
  bool colour = false, texture = false;
  std::vector<int64_t> size;
  std::vector<int32_t> box;
  std::vector<float> colour_hist, texture_hist;
  std::vector<std::pair<int32_t, int32_t>> pairs;

  void build(const Segmentation& seg, const Features& f, int64_t h, int64_t w) {
    count = seg.count;
    const int c = f.c, dc = c * kColourBins, dt = c * kOrientations * kTextureBins;
    size.assign(count, 0);
    box.resize(4 * count);
    for (int64_t r = 0; r < count; ++r) box[4 * r] = box[4 * r + 1] = INT32_MAX, box[4 * r + 2] = box[4 * r + 3] = -1;
    if (colour) colour_hist.assign(count * dc, 0.f);
    if (texture) texture_hist.assign(count * dt, 0.f);
    const int32_t* lab = seg.labels.data();
    std::vector<uint64_t> touching;
    auto touch = [&](int32_t a, int32_t b) {
      if (a != b) touching.push_back(uint64_t(std::min(a, b)) << 32 | uint32_t(std::max(a, b)));
    };
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t p = y * w + x, r = lab[p];
        ++size[r];
        int32_t* b = &box[4 * r];
        b[0] = std::min<int32_t>(b[0], x), b[1] = std::min<int32_t>(b[1], y);
        b[2] = std::max<int32_t>(b[2], x + 1), b[3] = std::max<int32_t>(b[3], y + 1);
        if (colour)
          for (int k = 0; k < c; ++k) colour_hist[r * dc + k * kColourBins + f.colour[p * c + k]] += 1.f;
        if (texture)
          for (int j = 0; j < c * kOrientations; ++j)
            texture_hist[r * dt + j * kTextureBins + f.texture[p * c * kOrientations + j]] += 1.f;
        // Regions touching horizontally or vertically are neighbours.
        if (x + 1 < w) touch(lab[p], lab[p + 1]);
        if (y + 1 < h) touch(lab[p], lab[p + w]);
      }
    std::sort(touching.begin(), touching.end());
    touching.erase(std::unique(touching.begin(), touching.end()), touching.end());
    pairs.resize(touching.size());
    for (size_t i = 0; i < touching.size(); ++i)
      pairs[i] = {int32_t(touching[i] >> 32), int32_t(touching[i] & 0xffffffffu)};
  }
};

struct Candidate {
  double sim;
  int32_t a, b;
  // Highest similarity first; ties go to the lower pair of region ids, for determinism.
  bool operator<(const Candidate& o) const { return sim != o.sim ? sim < o.sim : std::tie(a, b) > std::tie(o.a, o.b); }
};

class Grouping {
 public:
  Grouping(const Regions& regions, int c, const SelectiveSearchStrategy& s, int64_t h, int64_t w)
      : s_(s), n0_(regions.count), image_size_(double(h) * double(w)) {
    const int64_t total = 2 * n0_ - 1;
    const int64_t dc = c * kColourBins, dt = c * kOrientations * kTextureBins;
    dc_ = s.colour ? dc : 0;
    dim_ = dc_ + (s.texture ? dt : 0);
    hist_.resize(total * dim_);
    size_.resize(total);
    box_.resize(4 * total);
    std::copy(regions.size.begin(), regions.size.end(), size_.begin());
    std::copy(regions.box.begin(), regions.box.end(), box_.begin());
    // L1-normalised descriptors.
    for (int64_t r = 0; r < n0_; ++r) {
      float* hr = hist_.data() + r * dim_;  // data(): dim_ is 0 for size/fill-only strategies
      const float cn = 1.f / (size_[r] * c), tn = cn / kOrientations;
      if (s.colour)
        for (int64_t j = 0; j < dc; ++j) hr[j] = regions.colour_hist[r * dc + j] * cn;
      if (s.texture)
        for (int64_t j = 0; j < dt; ++j) hr[dc_ + j] = regions.texture_hist[r * dt + j] * tn;
    }
    neighbours_.resize(total);
    alive_.assign(total, 0);
    std::fill(alive_.begin(), alive_.begin() + n0_, 1);
    for (const auto& [a, b] : regions.pairs) {
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
    const float *ha = hist_.data() + a * dim_, *hb = hist_.data() + b * dim_;
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
    const float *ha = hist_.data() + a * dim_, *hb = hist_.data() + b * dim_;
    float* ht = hist_.data() + int64_t(t) * dim_;
    for (int64_t j = 0; j < dim_; ++j) ht[j] = wa * ha[j] + wb * hb[j];
    alive_[a] = alive_[b] = 0;
    alive_[t] = 1;
    std::vector<int32_t>& nt = neighbours_[t];
    for (int32_t u : neighbours_[a])
      if (u != b) nt.push_back(u);
    for (int32_t u : neighbours_[b])
      if (u != a) nt.push_back(u);
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
                                            const std::vector<SelectiveSearchStrategy>& strategies, double sigma) {
  const int64_t n = h * w;
  // Colour spaces and segmentations are computed once and shared by the strategies using them.
  std::vector<Features> spaces;
  std::vector<Segmentation> segs;
  std::vector<std::pair<size_t, size_t>> uses;  // (space, segmentation) of each strategy
  for (const auto& s : strategies) {
    size_t fi = 0;
    while (fi < spaces.size() && spaces[fi].space != s.space) ++fi;
    if (fi == spaces.size()) {
      spaces.emplace_back();
      spaces.back().space = s.space;
      spaces.back().c = colour_channels(s.space);
    }
    spaces[fi].bins |= s.colour || s.texture;
    size_t si = 0;
    while (si < segs.size() && !(segs[si].space == s.space && segs[si].k == s.k && segs[si].min_size == s.min_size))
      ++si;
    if (si == segs.size()) {
      segs.emplace_back();
      segs.back().space = s.space, segs.back().k = s.k, segs.back().min_size = s.min_size;
    }
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
  std::vector<Regions> regions(segs.size());
  for (size_t i = 0; i < strategies.size(); ++i) {
    regions[uses[i].second].colour |= strategies[i].colour;
    regions[uses[i].second].texture |= strategies[i].texture;
  }
  parallel_for(static_cast<int64_t>(segs.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      size_t fi = 0;
      while (spaces[fi].space != segs[i].space) ++fi;
      regions[i].build(segs[i], spaces[fi], h, w);
    }
  });
  std::vector<Hierarchy> out(strategies.size());
  parallel_for(static_cast<int64_t>(strategies.size()), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      out[i] = Grouping(regions[uses[i].second], spaces[uses[i].first].c, strategies[i], h, w).run();
  });
  return out;
}

int64_t max_hierarchy_boxes(int64_t h, int64_t w, int64_t min_size) {
  return 2 * std::max<int64_t>(1, h * w / std::max<int64_t>(min_size, 1)) - 1;
}

int64_t rank_proposals(const std::vector<Hierarchy>& hierarchies, const double* randoms, int64_t max_boxes,
                       float* out) {
  std::vector<const int32_t*> box;
  std::vector<double> key;
  for (const Hierarchy& hy : hierarchies) {
    const int64_t rows = static_cast<int64_t>(hy.boxes.size() / 4);
    for (int64_t r = 0; r < rows; ++r) {
      box.push_back(hy.boxes.data() + 4 * r);
      key.push_back(static_cast<double>(rows - r) * randoms[key.size()]);
    }
  }
  std::vector<int64_t> order(box.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
  struct Hash {
    size_t operator()(const std::array<int32_t, 4>& b) const {
      uint64_t h = 0;
      for (int32_t v : b) h = (h ^ static_cast<uint32_t>(v)) * 0x100000001b3ull;
      return static_cast<size_t>(h);
    }
  };
  std::unordered_set<std::array<int32_t, 4>, Hash> seen;
  int64_t count = 0;
  for (int64_t i : order) {
    if (count == max_boxes) break;
    const std::array<int32_t, 4> b{box[i][0], box[i][1], box[i][2], box[i][3]};
    if (!seen.insert(b).second) continue;
    for (int c = 0; c < 4; ++c) out[4 * count + c] = static_cast<float>(b[c]);
    ++count;
  }
  return count;
}

}  // namespace convloc
