/* convloc's kernels for programs without Python: a C interface to the shared library libconvloc
 * (`python -c "import convloc; print(convloc.get_include(), convloc.get_library())"` says where both are).
 *
 * Arrays are DLPack tensors (DLTensor): C-contiguous (strides NULL, or those of a C-contiguous array), in host
 * memory or, in a CUDA build of convloc, on a CUDA device; float32 or float64 unless stated (box area and IoU,
 * RoI pool / align and conv_transpose2d also take host float16 and bfloat16 arrays, computed in float32). The
 * caller allocates every output with the shape and dtype stated here, on the inputs' device; outputs are
 * overwritten. Shapes are written [N, 4] and so on; dimensions named alike must agree.
 *
 * Every function returns CONVLOC_OK or an error code, and then convloc_last_error() says what was wrong,
 * naming the argument, what was expected and what came (the message of the calling thread's last failed
 * call). The checks are those of convloc's Python functions, and so are the results: bit for bit, on the
 * same machine and dtype.
 *
 * `stream`: the cudaStream_t to run on when the arrays are on a CUDA device (NULL: the default stream); not
 * read for host arrays. Calls return when host results are written; CUDA work is queued on the stream (nms
 * waits for it, to return the count). CPU kernels use convloc_get_num_threads() threads; results do not
 * depend on the number. A call runs to its end: unlike the Python functions, it does not look for signals.
 *
 * The DLPack structs are declared here as the DLPack specification lays them out (DLPack 0.6 and later),
 * unless <dlpack/dlpack.h> was included first, whose declarations are then used. */
#ifndef CONVLOC_CONVLOC_H_
#define CONVLOC_CONVLOC_H_

#include <stdint.h>

#if defined(_WIN32)
#if defined(CONVLOC_BUILDING_LIBRARY)
#define CONVLOC_API __declspec(dllexport)
#else
#define CONVLOC_API __declspec(dllimport)
#endif
#else
#define CONVLOC_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef DLPACK_DLPACK_H_
/* The device types convloc reads (the DLPack enumeration has more). */
typedef enum {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLCUDAManaged = 13,
} DLDeviceType;

typedef struct {
  DLDeviceType device_type;
  int32_t device_id;
} DLDevice;

typedef enum {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLOpaqueHandle = 3,
  kDLBfloat = 4,
  kDLComplex = 5,
  kDLBool = 6,
} DLDataTypeCode;

typedef struct {
  uint8_t code; /* a DLDataTypeCode */
  uint8_t bits;
  uint16_t lanes;
} DLDataType;

typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides; /* in elements; NULL: C-contiguous */
  uint64_t byte_offset;
} DLTensor;
#endif

/* What a function returns. */
enum {
  CONVLOC_OK = 0,
  CONVLOC_ERROR_VALUE = 1,   /* a value, shape or size is out of range (Python: ValueError) */
  CONVLOC_ERROR_TYPE = 2,    /* a dtype, device or kind of argument is not accepted (Python: TypeError) */
  CONVLOC_ERROR_MEMORY = 3,  /* scratch memory could not be allocated */
  CONVLOC_ERROR_RUNTIME = 4, /* anything else, e.g. a CUDA error */
};

/* The message of the calling thread's last failed call ("" if none): valid until its next call. */
CONVLOC_API const char* convloc_last_error(void);
/* convloc's version, e.g. "0.1.0". */
CONVLOC_API const char* convloc_version(void);
/* CPU threads the kernels use; n <= 0: all cores; at most 4 per hardware thread (larger n gives that). */
CONVLOC_API int convloc_get_num_threads(void);
CONVLOC_API void convloc_set_num_threads(int n);

/* ---- Boxes (x1, y1, x2, y2): finite, x2 >= x1, y2 >= y1; torchvision.ops' arithmetic ---- */

/* out [N] = the areas of boxes [N, 4]. */
CONVLOC_API int convloc_box_area(const DLTensor* boxes, DLTensor* out, void* stream);
/* out [N, M] = IoU(boxes1[i], boxes2[j]); boxes1 [N, 4], boxes2 [M, 4]; NaN where both boxes are empty. */
CONVLOC_API int convloc_box_iou(const DLTensor* boxes1, const DLTensor* boxes2, DLTensor* out, void* stream);
/* Greedy non-maximum suppression of boxes [N, 4] with scores [N] (no NaN): a box is dropped when its IoU with
 * a kept box exceeds iou_threshold (in [0, 1]). Writes the kept indices, highest score first, to
 * keep[0 .. *count) (keep: int64 [N]). idxs (int32 or int64 [N], or NULL): boxes of different idxs never
 * suppress each other (batched NMS). */
CONVLOC_API int convloc_nms(const DLTensor* boxes, const DLTensor* scores, const DLTensor* idxs, double iou_threshold,
                            DLTensor* keep, int64_t* count, void* stream);

/* ---- Region-of-interest pooling: torchvision.ops.roi_pool / roi_align, results bit for bit ---- */

/* input [B, C, H, W]; boxes [K, 5] rows (batch index, x1, y1, x2, y2) in input-image coordinates, which
 * spatial_scale maps onto the feature map; out [K, C, PH, PW] (its shape gives the output size). */
CONVLOC_API int convloc_roi_pool(const DLTensor* input, const DLTensor* boxes, double spatial_scale, DLTensor* out,
                                 void* stream);
/* grad_input [B, C, H, W] of roi_pool from grad [K, C, PH, PW] and the forward's input; deterministic. */
CONVLOC_API int convloc_roi_pool_backward(const DLTensor* grad, const DLTensor* boxes, const DLTensor* input,
                                          double spatial_scale, DLTensor* grad_input, void* stream);
/* As convloc_roi_pool, with bilinear samples averaged per bin: sampling_ratio per axis (<= 0:
 * ceil(roi size / output size)); aligned (0 or 1) shifts the boxes by -0.5 pixel. */
CONVLOC_API int convloc_roi_align(const DLTensor* input, const DLTensor* boxes, double spatial_scale,
                                  int sampling_ratio, int aligned, DLTensor* out, void* stream);
/* grad_input [B, C, H, W] of roi_align from grad [K, C, PH, PW]; deterministic. */
CONVLOC_API int convloc_roi_align_backward(const DLTensor* grad, const DLTensor* boxes, double spatial_scale,
                                           int sampling_ratio, int aligned, DLTensor* grad_input, void* stream);

/* ---- Transposed convolution: torch.nn.functional.conv_transpose2d ---- */

/* Stride, padding, output padding and dilation as (rows, columns), and groups. */
typedef struct {
  int64_t stride[2];
  int64_t padding[2];
  int64_t output_padding[2];
  int64_t dilation[2];
  int64_t groups;
} convloc_conv_transpose2d_params;

/* out_shape = [N, C_out, OH, OW] of input [N, C_in, H, W] through weight [C_in, C_out / groups, kH, kW],
 * OH = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1; validates the geometry. */
CONVLOC_API int convloc_conv_transpose2d_output_shape(const int64_t input_shape[4], const int64_t weight_shape[4],
                                                      const convloc_conv_transpose2d_params* params,
                                                      int64_t out_shape[4]);
/* out [N, C_out, OH, OW] = conv_transpose2d(input, weight, bias); bias [C_out] or NULL. */
CONVLOC_API int convloc_conv_transpose2d(const DLTensor* input, const DLTensor* weight, const DLTensor* bias,
                                         const convloc_conv_transpose2d_params* params, DLTensor* out, void* stream);
/* The gradients that are not NULL, from grad_output [N, C_out, OH, OW]: grad_input [N, C_in, H, W],
 * grad_weight [C_in, C_out / groups, kH, kW] (needs input), grad_bias [C_out]. */
CONVLOC_API int convloc_conv_transpose2d_backward(const DLTensor* grad_output, const DLTensor* input,
                                                  const DLTensor* weight, const convloc_conv_transpose2d_params* params,
                                                  DLTensor* grad_input, DLTensor* grad_weight, DLTensor* grad_bias,
                                                  void* stream);

/* ---- The permutohedral lattice ---- */

/* out [B?, N, C] ~= sum_j exp(-|f_i - f_j|^2 / 2) values_j: the raw lattice filter of values [B?, N, C] by
 * features [B?, N, d] (1 <= d <= 32, finite, already divided by the kernel's standard deviations), on a
 * lattice built for the call (Python's normalization=None). transpose (0 or 1): its exact adjoint;
 * exclude_self (0 or 1): without each point's own weight. */
CONVLOC_API int convloc_permutohedral_filter(const DLTensor* values, const DLTensor* features, int transpose,
                                             int exclude_self, DLTensor* out, void* stream);

/* ---- The dense CRF: mean-field in a fully connected CRF with Gaussian edge potentials ---- */

enum {
  CONVLOC_CRF_GAUSSIAN = 0,  /* over positions: exp(-|p_i - p_j|^2 / 2 sxy^2) */
  CONVLOC_CRF_BILATERAL = 1, /* over positions and the image's values (/ sxy, / srgb) */
  CONVLOC_CRF_FEATURES = 2,  /* over the given features */
};

/* One pairwise term; labels that differ pay weight * kernel (Potts), normalised symmetrically. The Python
 * defaults are {CONVLOC_CRF_GAUSSIAN, 3, 3} and {CONVLOC_CRF_BILATERAL, 10, 80, 13}. */
typedef struct {
  int kind;                 /* CONVLOC_CRF_GAUSSIAN, _BILATERAL or _FEATURES */
  double weight;            /* > 0 attracts equal labels */
  double sxy;               /* GAUSSIAN, BILATERAL: the positions' standard deviation, in pixels */
  double srgb;              /* BILATERAL: the image values' standard deviation, in their units */
  const DLTensor* features; /* FEATURES: [B, N, d], the unary's dtype, divided by the standard deviations */
} convloc_crf_kernel;

/* Q [B, L, *spatial] (the marginals) after `iterations` mean-field updates from unary [B, L, *spatial]
 * (negative log-probabilities, L >= 2, one or more spatial axes; N = their product), as Python's
 * convloc.ops.dense_crf(unary, image=image, kernels=..., iterations=iterations). image [B, *spatial, C]
 * (uint8 or the unary's dtype; NULL without a BILATERAL kernel); labels [B, *spatial] int64 (argmax of Q) or
 * NULL. Host arrays only. */
CONVLOC_API int convloc_dense_crf(const DLTensor* unary, const DLTensor* image, const convloc_crf_kernel* kernels,
                                  int num_kernels, int iterations, DLTensor* q, DLTensor* labels);

#ifdef __cplusplus
}
#endif

#endif /* CONVLOC_CONVLOC_H_ */
