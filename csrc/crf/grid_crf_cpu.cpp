#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "crf/dense_crf.h"
#include "crf/grid_gaussian.h"

namespace convloc {

namespace {

CONVLOC_SIMD_FN(void, gaussian_taps_f32,
                (float* out, const float* in, int64_t stride, const float* weight, int first, int last, int64_t count),
                { gaussian_taps(out, in, stride, weight, first, last, count); })
CONVLOC_SIMD_FN(void, gaussian_taps_f64,
                (double* out, const double* in, int64_t stride, const double* weight, int first, int last,
                 int64_t count),
                { gaussian_taps(out, in, stride, weight, first, last, count); })

CONVLOC_SIMD_FN(void, combine_rows3_f32,
                (float* out, int64_t out_stride, const float* in, int64_t stride, const float* weight, int64_t rows,
                 int64_t count),
                { combine_rows3<float>(out, out_stride, in, stride, weight, rows, count); })
CONVLOC_SIMD_FN(void, combine_rows3_f64,
                (double* out, int64_t out_stride, const double* in, int64_t stride, const double* weight, int64_t rows,
                 int64_t count),
                { combine_rows3<double>(out, out_stride, in, stride, weight, rows, count); })
CONVLOC_SIMD_FN(void, spread_rows3_f32,
                (float* out, int64_t stride, const float* weight, float* in, int64_t in_stride, int64_t rows,
                 int64_t count),
                { spread_rows3<float>(out, stride, weight, in, in_stride, rows, count); })
CONVLOC_SIMD_FN(void, spread_rows3_f64,
                (double* out, int64_t stride, const double* weight, double* in, int64_t in_stride, int64_t rows,
                 int64_t count),
                { spread_rows3<double>(out, stride, weight, in, in_stride, rows, count); })

}  // namespace

void taps(float* out, const float* in, int64_t stride, const float* weight, int first, int last, int64_t count) {
  gaussian_taps_f32(out, in, stride, weight, first, last, count);
}
void taps(double* out, const double* in, int64_t stride, const double* weight, int first, int last, int64_t count) {
  gaussian_taps_f64(out, in, stride, weight, first, last, count);
}
void combine_rows3(float* out, int64_t out_stride, const float* in, int64_t stride, const float* weight, int64_t rows,
                   int64_t count) {
  combine_rows3_f32(out, out_stride, in, stride, weight, rows, count);
}
void combine_rows3(double* out, int64_t out_stride, const double* in, int64_t stride, const double* weight,
                   int64_t rows, int64_t count) {
  combine_rows3_f64(out, out_stride, in, stride, weight, rows, count);
}
void spread_rows3(float* out, int64_t stride, const float* weight, float* in, int64_t in_stride, int64_t rows,
                  int64_t count) {
  spread_rows3_f32(out, stride, weight, in, in_stride, rows, count);
}
void spread_rows3(double* out, int64_t stride, const double* weight, double* in, int64_t in_stride, int64_t rows,
                  int64_t count) {
  spread_rows3_f64(out, stride, weight, in, in_stride, rows, count);
}

namespace {

constexpr int kOffsets[8][2] = {{0, 1}, {1, 0}, {0, -1}, {-1, 0}, {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};

template <typename T>
void grid_one(const T* unary, const T* image, int64_t L, int64_t h, int64_t w, int64_t C, int nb, double w1, double w2,
              double beta, int64_t iterations, T* q_out) {
  const int64_t n = h * w;
  // Edge weights [N, nb] (0 across the border) and -U in [N, L].
  std::vector<T> weight(n * nb), neg_u(n * L), q(n * L), next(n * L);
  parallel_for(h, 8, [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y)
      for (int64_t x = 0; x < w; ++x) {
        const int64_t i = y * w + x;
        for (int k = 0; k < nb; ++k) {
          const int64_t yy = y + kOffsets[k][0], xx = x + kOffsets[k][1];
          T wt = 0;
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) {
            double d2 = 0;
            for (int64_t c = 0; c < C; ++c) {
              const double d = double(image[i * C + c]) - double(image[(yy * w + xx) * C + c]);
              d2 += d * d;
            }
            wt = T(w1 * std::exp(-beta * d2) + w2);
          }
          weight[i * nb + k] = wt;
        }
        for (int64_t l = 0; l < L; ++l) neg_u[i * L + l] = -unary[l * n + i];
        T* z = q.data() + i * L;
        std::copy(neg_u.data() + i * L, neg_u.data() + (i + 1) * L, z);
        softmax_row(z, L);
      }
  });
  for (int64_t it = 0; it < iterations; ++it) {
    parallel_for(h, 8, [&](int64_t y0, int64_t y1) {
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = 0; x < w; ++x) {
          const int64_t i = y * w + x;
          T* z = next.data() + i * L;
          std::copy(neg_u.data() + i * L, neg_u.data() + (i + 1) * L, z);
          for (int k = 0; k < nb; ++k) {
            const T wt = weight[i * nb + k];
            if (wt == T(0)) continue;
            const T* qj = q.data() + ((y + kOffsets[k][0]) * w + x + kOffsets[k][1]) * L;
            for (int64_t l = 0; l < L; ++l) z[l] += wt * qj[l];
          }
          softmax_row(z, L);
        }
    });
    q.swap(next);
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t l = 0; l < L; ++l) q_out[l * n + i] = q[i * L + l];
}

}  // namespace

template <typename T>
void grid_crf_cpu(const T* unary, const T* image, int64_t batch, int64_t labels, int64_t h, int64_t w, int64_t channels,
                  int neighbors, double w1, double w2, double beta, int64_t iterations, T* q) {
  const int64_t n = h * w;
  for (int64_t b = 0; b < batch; ++b)
    grid_one(unary + b * labels * n, image + b * n * channels, labels, h, w, channels, neighbors, w1, w2, beta,
             iterations, q + b * labels * n);
}

template void grid_crf_cpu<float>(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int, double,
                                  double, double, int64_t, float*);
template void grid_crf_cpu<double>(const double*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                                   double, double, double, int64_t, double*);

}  // namespace convloc
