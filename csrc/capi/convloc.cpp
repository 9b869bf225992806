// The C API (include/convloc/convloc.h): DLTensors become TensorViews, checked as at the Python boundary, and go to
// the families' entry points (<family>/<family>_ops.h) that the Python module calls too; convloc's exceptions
// become status codes and a message kept per thread. Nothing here computes: a result differs from Python's only
// if the arguments do.
#include "convloc/convloc.h"

#include <cmath>
#include <exception>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "boxes/boxes_ops.h"
#include "core/check.h"
#include "core/dispatch.h"
#include "core/dlpack.h"
#include "core/parallel.h"
#include "crf/bilateral_features.h"
#include "crf/crf_ops.h"
#include "crf/dense_crf.h"
#include "deconv/deconv_ops.h"
#include "lattice/lattice_ops.h"
#include "roi/roi_ops.h"

namespace convloc {
namespace {

thread_local std::string last_error;

int failed(int status, const char* message) {
  last_error = message;
  return status;
}

// Runs fn; convloc's exceptions become status codes, their message last_error ("" after a success).
template <typename F>
int guarded(F&& fn) noexcept {
  try {
    try {
      fn();
    } catch (const ValueError& e) {
      return failed(CONVLOC_ERROR_VALUE, e.what());
    } catch (const TypeError& e) {
      return failed(CONVLOC_ERROR_TYPE, e.what());
    } catch (const std::bad_alloc&) {
      return failed(CONVLOC_ERROR_MEMORY, "out of memory");
    } catch (const std::exception& e) {
      return failed(CONVLOC_ERROR_RUNTIME, e.what());
    } catch (...) {
      return failed(CONVLOC_ERROR_RUNTIME, "unknown error");
    }
    last_error.clear();
    return CONVLOC_OK;
  } catch (...) {  // no memory for the message
    last_error.clear();
    return CONVLOC_ERROR_MEMORY;
  }
}

TensorView view(const DLTensor* t, const char* name, bool output) {
  if (!t) fail_value(name, ": expected a DLTensor, got NULL");
  if (t->ndim < 0 || (t->ndim > 0 && !t->shape)) fail_value(name, ": a DLTensor with ndim ", t->ndim, " and no shape");
  TensorView v = view_of(*t, name);
  check_array(v, output);
  return v;
}
TensorView in_view(const DLTensor* t, const char* name) { return view(t, name, false); }
TensorView out_view(DLTensor* t, const char* name) { return view(t, name, true); }
std::optional<TensorView> maybe(const DLTensor* t, const char* name, bool output = false) {
  if (!t) return std::nullopt;
  return view(t, name, output);
}
const TensorView* ptr(const std::optional<TensorView>& v) { return v ? &*v : nullptr; }

// v's memory with another shape of as many elements (v is C-contiguous).
TensorView reshaped(const TensorView& v, std::vector<int64_t> shape) {
  TensorView r = v;
  r.shape = std::move(shape);
  r.strides.assign(r.shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(r.shape.size()) - 2; i >= 0; --i)
    r.strides[i] = r.strides[i + 1] * r.shape[i + 1];
  return r;
}

// The pooled size (PH, PW) from an array [K, C, PH, PW].
std::pair<int64_t, int64_t> pooled(const TensorView& t) {
  check_ndim(t, 4, "[K, C, PH, PW]");
  return {t.size(2), t.size(3)};
}

DeconvParams deconv_params(const convloc_conv_transpose2d_params* p) {
  if (!p) fail_value("params: expected a pointer, got NULL");
  return {{p->stride[0], p->stride[1]},
          {p->padding[0], p->padding[1]},
          {p->output_padding[0], p->output_padding[1]},
          {p->dilation[0], p->dilation[1]},
          p->groups};
}

// The dense CRF's kernels as the entry point takes them, with what they point to: what Python's convloc.ops
// dense_crf hands the module for Gaussian(sxy, weight), Bilateral(sxy, srgb, weight) and Features kernels with the
// default spacing (1 pixel), Potts compatibility and symmetric normalisation.
class CrfKernels {
 public:
  CrfKernels(const convloc_crf_kernel* kernels, int count, const TensorView& unary, const std::vector<int64_t>& spatial,
             int64_t channels)
      : grids_(checked_count(kernels, count)), bilaterals_(count), features_(count), args_(count) {
    const int64_t batch = unary.size(0), labels = unary.size(1), n = unary.size(2);
    const auto ndim = spatial.size();
    std::vector<double> compat;
    double reach = 0;
    for (int k = 0; k < count; ++k) {
      const convloc_crf_kernel& kernel = kernels[k];
      const std::string name = cat("kernels[", k, "]");
      if (!std::isfinite(kernel.weight)) fail_value(name, ".weight: expected a finite number, got ", kernel.weight);
      if (kernel.kind == CONVLOC_CRF_GAUSSIAN || kernel.kind == CONVLOC_CRF_BILATERAL) {
        if (!(kernel.sxy > 0) || !std::isfinite(kernel.sxy))
          fail_value(name, ".sxy: expected a positive finite number, got ", kernel.sxy);
      }
      if (kernel.kind == CONVLOC_CRF_GAUSSIAN) {
        ops::GridGaussian grid = ops::grid_gaussian(std::vector<double>(ndim, kernel.sxy), spatial, false);
        if (!grid.steps.empty()) {
          grids_[k] = std::move(grid);
          args_[k].grid = &grids_[k];
        } else {  // the lattice over the positions / sigma, x first
          positions_.emplace_back(batch * n * ndim * dtype_bytes(unary));
          features_[k] = reshaped(unary, {batch, n, static_cast<int64_t>(ndim)});
          features_[k].data = positions_.back().data();
          features_[k].name = name + ".positions";
          const std::vector<double> scale(ndim, 1.0 / kernel.sxy);
          CONVLOC_DISPATCH_FLOAT(unary, [&] {
            bilateral_features_cpu<scalar_t, scalar_t>(nullptr, batch, n, 0, spatial, scale, {},
                                                       features_[k].ptr<scalar_t>());
          });
          args_[k].features = &features_[k];
        }
      } else if (kernel.kind == CONVLOC_CRF_BILATERAL) {
        if (!(kernel.srgb > 0) || !std::isfinite(kernel.srgb))
          fail_value(name, ".srgb: expected a positive finite number, got ", kernel.srgb);
        bilaterals_[k] = {std::vector<double>(ndim, 1.0 / kernel.sxy),
                          std::vector<double>(channels > 0 ? channels : 0, kernel.srgb)};
        args_[k].bilateral = &bilaterals_[k];
      } else if (kernel.kind == CONVLOC_CRF_FEATURES) {
        const std::string features_name = name + ".features";
        features_[k] = in_view(kernel.features, features_name.c_str());
        args_[k].features = &features_[k];
      } else {
        fail_value(name, ".kind: expected CONVLOC_CRF_GAUSSIAN, _BILATERAL or _FEATURES, got ", kernel.kind);
      }
      for (int64_t i = 0; i < labels; ++i)  // Potts, in the apply form: -weight on the diagonal
        for (int64_t j = 0; j < labels; ++j) compat.push_back(i == j ? -kernel.weight : 0.0);
      reach += std::fabs(kernel.weight);
    }
    // As Python's check: beyond this the messages overflow float32 and the marginals turn to NaN.
    reach *= static_cast<double>(n);
    if (!(reach <= kMaxPairwiseEnergy))
      fail_value("kernels: the pairwise energy could reach ", reach,
                 " (pixels x the sum of the kernels' |weight|), above ", kMaxPairwiseEnergy);
    compat_bytes_.resize(compat.size() * dtype_bytes(unary));
    compat_ = reshaped(unary, {count, labels, labels});
    compat_.data = compat_bytes_.data();
    compat_.name = "compat";
    CONVLOC_DISPATCH_FLOAT(unary, [&] {
      for (size_t i = 0; i < compat.size(); ++i) compat_.ptr<scalar_t>()[i] = static_cast<scalar_t>(compat[i]);
    });
  }

  const std::vector<ops::CrfKernelArg>& args() const { return args_; }
  const TensorView& compat() const { return compat_; }

 private:
  static int checked_count(const convloc_crf_kernel* kernels, int count) {
    if (!kernels || count < 1) fail_value("kernels: expected at least one pairwise kernel, got ", count);
    return count;
  }
  static size_t dtype_bytes(const TensorView& t) { return t.dtype == DType::Float64 ? 8 : 4; }

  // Scratch as doubles: aligned for float and double alike.
  struct Bytes {
    explicit Bytes(size_t n = 0) : words((n + 7) / 8) {}
    void resize(size_t n) { words.resize((n + 7) / 8); }
    void* data() { return words.data(); }
    std::vector<double> words;
  };

  std::vector<ops::GridGaussian> grids_;
  std::vector<ops::Bilateral> bilaterals_;
  std::vector<TensorView> features_;
  std::vector<Bytes> positions_;
  std::vector<ops::CrfKernelArg> args_;
  Bytes compat_bytes_;
  TensorView compat_;
};

}  // namespace
}  // namespace convloc

using namespace convloc;

extern "C" {

const char* convloc_last_error(void) { return last_error.c_str(); }

const char* convloc_version(void) { return CONVLOC_VERSION; }

int convloc_get_num_threads(void) { return get_num_threads(); }

void convloc_set_num_threads(int n) { set_num_threads(n); }

int convloc_box_area(const DLTensor* boxes, DLTensor* out, void* stream) {
  return guarded([&] { ops::box_area(in_view(boxes, "boxes"), out_view(out, "out"), stream); });
}

int convloc_box_iou(const DLTensor* boxes1, const DLTensor* boxes2, DLTensor* out, void* stream) {
  return guarded(
      [&] { ops::box_iou(in_view(boxes1, "boxes1"), in_view(boxes2, "boxes2"), out_view(out, "out"), stream); });
}

int convloc_nms(const DLTensor* boxes, const DLTensor* scores, const DLTensor* idxs, double iou_threshold,
                DLTensor* keep, int64_t* count, void* stream) {
  return guarded([&] {
    if (!count) fail_value("count: expected a pointer, got NULL");
    const auto classes = maybe(idxs, "idxs");
    *count = ops::nms(in_view(boxes, "boxes"), in_view(scores, "scores"), ptr(classes), iou_threshold,
                      out_view(keep, "keep"), stream);
  });
}

int convloc_roi_pool(const DLTensor* input, const DLTensor* boxes, double spatial_scale, DLTensor* out, void* stream) {
  return guarded([&] {
    const TensorView o = out_view(out, "out");
    const auto [ph, pw] = pooled(o);
    ops::roi_pool_forward(in_view(input, "input"), in_view(boxes, "boxes"), spatial_scale, ph, pw, o, nullptr, stream);
  });
}

int convloc_roi_pool_backward(const DLTensor* grad, const DLTensor* boxes, const DLTensor* input, double spatial_scale,
                              DLTensor* grad_input, void* stream) {
  return guarded([&] {
    const TensorView g = in_view(grad, "grad");
    const auto [ph, pw] = pooled(g);
    ops::roi_pool_backward(g, in_view(boxes, "boxes"), in_view(input, "input"), spatial_scale, ph, pw,
                           out_view(grad_input, "grad_input"), stream);
  });
}

int convloc_roi_align(const DLTensor* input, const DLTensor* boxes, double spatial_scale, int sampling_ratio,
                      int aligned, DLTensor* out, void* stream) {
  return guarded([&] {
    const TensorView o = out_view(out, "out");
    const auto [ph, pw] = pooled(o);
    ops::roi_align_forward(in_view(input, "input"), in_view(boxes, "boxes"), spatial_scale, ph, pw, sampling_ratio,
                           aligned != 0, o, stream);
  });
}

int convloc_roi_align_backward(const DLTensor* grad, const DLTensor* boxes, double spatial_scale, int sampling_ratio,
                               int aligned, DLTensor* grad_input, void* stream) {
  return guarded([&] {
    const TensorView g = in_view(grad, "grad");
    const auto [ph, pw] = pooled(g);
    ops::roi_align_backward(g, in_view(boxes, "boxes"), spatial_scale, ph, pw, sampling_ratio, aligned != 0,
                            out_view(grad_input, "grad_input"), stream);
  });
}

int convloc_conv_transpose2d_output_shape(const int64_t input_shape[4], const int64_t weight_shape[4],
                                          const convloc_conv_transpose2d_params* params, int64_t out_shape[4]) {
  return guarded([&] {
    if (!input_shape || !weight_shape || !out_shape)
      fail_value("input_shape, weight_shape, out_shape: expected 4 sizes each, got NULL");
    const DeconvShape s =
        ops::deconv2d_geometry({input_shape, input_shape + 4}, {weight_shape, weight_shape + 4}, deconv_params(params));
    out_shape[0] = s.n, out_shape[1] = s.c_out, out_shape[2] = s.oh, out_shape[3] = s.ow;
  });
}

int convloc_conv_transpose2d(const DLTensor* input, const DLTensor* weight, const DLTensor* bias,
                             const convloc_conv_transpose2d_params* params, DLTensor* out, void* stream) {
  return guarded([&] {
    const auto b = maybe(bias, "bias");
    ops::deconv2d_forward(in_view(input, "input"), in_view(weight, "weight"), ptr(b), out_view(out, "out"),
                          deconv_params(params), stream);
  });
}

int convloc_conv_transpose2d_backward(const DLTensor* grad_output, const DLTensor* input, const DLTensor* weight,
                                      const convloc_conv_transpose2d_params* params, DLTensor* grad_input,
                                      DLTensor* grad_weight, DLTensor* grad_bias, void* stream) {
  return guarded([&] {
    const auto x = maybe(input, "input");
    const auto gi = maybe(grad_input, "grad_input", true), gw = maybe(grad_weight, "grad_weight", true);
    const auto gb = maybe(grad_bias, "grad_bias", true);
    ops::deconv2d_backward(in_view(grad_output, "grad_output"), ptr(x), in_view(weight, "weight"), ptr(gi), ptr(gw),
                           ptr(gb), deconv_params(params), stream);
  });
}

int convloc_permutohedral_filter(const DLTensor* values, const DLTensor* features, int transpose, int exclude_self,
                                 DLTensor* out, void* stream) {
  return guarded([&] {
    ops::permutohedral_filter(in_view(features, "features"), in_view(values, "values"), out_view(out, "out"),
                              transpose != 0, exclude_self != 0, stream);
  });
}

int convloc_dense_crf(const DLTensor* unary, const DLTensor* image, const convloc_crf_kernel* kernels, int num_kernels,
                      int iterations, DLTensor* q, DLTensor* labels) {
  return guarded([&] {
    const TensorView u = in_view(unary, "unary");
    if (u.is_cuda()) fail_type("unary: expected a CPU array (the C API's dense CRF runs on the CPU)");
    if (u.dim() < 3)
      fail_value("unary: expected shape [B, L, *spatial] with at least one spatial axis, got ", u.shape_str());
    const int64_t batch = u.size(0), n_labels = u.size(1);
    const std::vector<int64_t> spatial(u.shape.begin() + 2, u.shape.end());
    int64_t n = 1;
    for (int64_t s : spatial) n *= s;
    std::vector<int64_t> lead = {batch};  // [B, *spatial]: the labels' shape, and the image's without C
    lead.insert(lead.end(), spatial.begin(), spatial.end());

    const TensorView marginals = out_view(q, "q");
    if (marginals.shape != u.shape)
      fail_value("q: expected shape ", u.shape_str(), " (the unary's), got ", marginals.shape_str());
    std::optional<TensorView> map = maybe(labels, "labels", true);
    if (map) {
      if (map->shape != lead)
        fail_value("labels: expected shape [B, *spatial] (the unary's without L), got ", map->shape_str());
      map = reshaped(*map, {batch, n});
    }
    std::optional<TensorView> img = maybe(image, "image");
    int64_t channels = 0;
    if (img) {
      if (img->dim() != u.dim() || !std::equal(lead.begin(), lead.end(), img->shape.begin()))
        fail_value("image: expected shape [B, *spatial, C] (B and spatial the unary's), got ", img->shape_str());
      channels = img->shape.back();
      img = reshaped(*img, {batch, n, channels});
    }
    const TensorView flat = reshaped(u, {batch, n_labels, n});
    const CrfKernels terms(kernels, num_kernels, flat, spatial, channels);
    ops::dense_crf(flat, terms.args(), terms.compat(), std::vector<int>(num_kernels, 3), iterations, false,
                   reshaped(marginals, {batch, n_labels, n}), ptr(map), nullptr, nullptr, spatial, ptr(img), nullptr);
  });
}

}  // extern "C"
