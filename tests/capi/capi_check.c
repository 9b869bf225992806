/* convloc's C API from a C program: NMS, RoI align and a dense CRF on arrays read from files, results written
 * back for tests/test_capi.py to compare with Python's.
 *
 *   capi_check DIR   reads DIR/sizes.txt ("N B C H W K L h w"), DIR/boxes (float32 [N, 4]), DIR/scores ([N]),
 *                    DIR/features ([B, C, H, W]), DIR/rois ([K, 5]), DIR/unary ([1, L, h, w]), DIR/image
 *                    (uint8 [1, h, w, 3]); writes DIR/keep (int64, the kept indices), DIR/pooled ([K, C, 7, 7]),
 *                    DIR/q ([1, L, h, w]) and DIR/labels (int64 [1, h, w]). */
#include <convloc/convloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char* dir;

static void* load(const char* name, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "rb");
  void* data = malloc(bytes ? bytes : 1);
  if (!f || !data || fread(data, 1, bytes, f) != bytes) {
    fprintf(stderr, "cannot read %s\n", path);
    exit(2);
  }
  fclose(f);
  return data;
}

static void save(const char* name, const void* data, size_t bytes) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE* f = fopen(path, "wb");
  if (!f || fwrite(data, 1, bytes, f) != bytes) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(2);
  }
  fclose(f);
}

/* A host DLTensor over data, C-contiguous (strides NULL). */
static DLTensor tensor(void* data, DLDataTypeCode code, int bits, int ndim, int64_t* shape) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype.code = (uint8_t)code;
  t.dtype.bits = (uint8_t)bits;
  t.dtype.lanes = 1;
  t.shape = shape;
  return t;
}

static void check(int status, const char* what) {
  if (status != CONVLOC_OK) {
    fprintf(stderr, "%s failed (%d): %s\n", what, status, convloc_last_error());
    exit(1);
  }
}

int main(int argc, char** argv) {
  int64_t n, b, c, h, w, k, l, hh, ww;
  char path[4096];
  if (argc != 2) return 2;
  dir = argv[1];
  snprintf(path, sizeof path, "%s/sizes.txt", dir);
  FILE* f = fopen(path, "r");
  if (!f ||
      fscanf(f,
             "%" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64,
             &n, &b, &c, &h, &w, &k, &l, &hh, &ww) != 9)
    return 2;
  fclose(f);

  /* NMS: the kept indices, highest score first */
  int64_t boxes_shape[2] = {n, 4}, scores_shape[1] = {n}, keep_shape[1] = {n}, count = 0;
  float* boxes = load("boxes", n * 4 * sizeof(float));
  float* scores = load("scores", n * sizeof(float));
  int64_t* keep = malloc((n ? n : 1) * sizeof(int64_t));
  DLTensor boxes_t = tensor(boxes, kDLFloat, 32, 2, boxes_shape),
           scores_t = tensor(scores, kDLFloat, 32, 1, scores_shape);
  DLTensor keep_t = tensor(keep, kDLInt, 64, 1, keep_shape);
  check(convloc_nms(&boxes_t, &scores_t, NULL, 0.5, &keep_t, &count, NULL), "convloc_nms");
  save("keep", keep, count * sizeof(int64_t));

  /* RoI align: 7 x 7 bins, feature map at 1/16 of the image, 2 x 2 samples per bin */
  int64_t features_shape[4] = {b, c, h, w}, rois_shape[2] = {k, 5}, pooled_shape[4] = {k, c, 7, 7};
  float* features = load("features", b * c * h * w * sizeof(float));
  float* rois = load("rois", k * 5 * sizeof(float));
  float* pooled = malloc(k * c * 49 * sizeof(float) + 1);
  DLTensor features_t = tensor(features, kDLFloat, 32, 4, features_shape);
  DLTensor rois_t = tensor(rois, kDLFloat, 32, 2, rois_shape), pooled_t = tensor(pooled, kDLFloat, 32, 4, pooled_shape);
  check(convloc_roi_align(&features_t, &rois_t, 1.0 / 16, 2, 0, &pooled_t, NULL), "convloc_roi_align");
  save("pooled", pooled, k * c * 49 * sizeof(float));

  /* Dense CRF: the usual smoothness and appearance kernels, 5 mean-field iterations */
  int64_t unary_shape[4] = {1, l, hh, ww}, image_shape[4] = {1, hh, ww, 3}, labels_shape[3] = {1, hh, ww};
  float* unary = load("unary", l * hh * ww * sizeof(float));
  unsigned char* image = load("image", hh * ww * 3);
  float* q = malloc(l * hh * ww * sizeof(float));
  int64_t* labels = malloc(hh * ww * sizeof(int64_t));
  DLTensor unary_t = tensor(unary, kDLFloat, 32, 4, unary_shape), image_t = tensor(image, kDLUInt, 8, 4, image_shape);
  DLTensor q_t = tensor(q, kDLFloat, 32, 4, unary_shape), labels_t = tensor(labels, kDLInt, 64, 3, labels_shape);
  convloc_crf_kernel kernels[2] = {{CONVLOC_CRF_GAUSSIAN, 3.0, 3.0, 0.0, NULL},
                                   {CONVLOC_CRF_BILATERAL, 10.0, 80.0, 13.0, NULL}};
  check(convloc_dense_crf(&unary_t, &image_t, kernels, 2, 5, &q_t, &labels_t), "convloc_dense_crf");
  save("q", q, l * hh * ww * sizeof(float));
  save("labels", labels, hh * ww * sizeof(int64_t));

  /* A bad argument: a status, and a message naming it */
  if (convloc_nms(&boxes_t, &scores_t, NULL, 1.5, &keep_t, &count, NULL) != CONVLOC_ERROR_VALUE) return 3;
  printf("%s\n", convloc_last_error());
  free(boxes), free(scores), free(keep), free(features), free(rois), free(pooled), free(unary), free(image), free(q),
      free(labels);
  return 0;
}
