// 3x3 convolution (stride 1, padding 1) by Winograd's minimal filtering F(2x2, 3x3), float32, CPU (m2f_hf).
//
// Each 2x2 block of outputs of a channel pair comes from a 4x4 input tile: V = B^T d B (input transform),
// U = G g G^T (weight transform), M = sum over input channels of U * V (elementwise in the 16 positions, i.e. 16
// matrix products (K x C) @ (C x tiles)), and the outputs are A^T M A. That takes 16 multiplications per 2x2 block
// and channel pair instead of 36. The transforms use only additions and halvings, so the result equals the direct
// convolution to float rounding (about 1e-6 relative). Used by the pixel decoder's FPN at inference
// (ops/winograd.py): the 3x3 at 1/4 resolution is its largest convolution.
//
// Tiles are processed a block of tile rows at a time, so that the transformed inputs and the products of one block
// stay in cache between the three steps.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// about 512 tiles (2x2 output blocks) per block: measured best between 128 and 1024 on the project's CPU
constexpr int64_t kTilesPerBlock = 512;

}  // namespace

// (K, C, 3, 3) -> (16, K, C): G g G^T for every filter, position-major.
at::Tensor winograd_weight_transform(const at::Tensor& weight_in) {
  TORCH_CHECK(weight_in.dim() == 4 && weight_in.size(2) == 3 && weight_in.size(3) == 3,
              "weight must be (out_channels, in_channels, 3, 3), got ", weight_in.sizes());
  TORCH_CHECK(weight_in.scalar_type() == at::kFloat, "weight must be float32, got ", weight_in.scalar_type());
  const at::Tensor weight = weight_in.contiguous();
  const int64_t K = weight.size(0), C = weight.size(1);
  at::Tensor transformed = at::empty({16, K, C}, weight.options());
  const float* g = weight.data_ptr<float>();
  float* u = transformed.data_ptr<float>();
  at::parallel_for(0, K * C, 256, [&](int64_t begin, int64_t end) {
    for (int64_t kc = begin; kc < end; ++kc) {
      const float* f = g + kc * 9;
      float t[4][3];  // G f
      for (int j = 0; j < 3; ++j) {
        t[0][j] = f[j];
        t[1][j] = 0.5f * (f[j] + f[3 + j] + f[6 + j]);
        t[2][j] = 0.5f * (f[j] - f[3 + j] + f[6 + j]);
        t[3][j] = f[6 + j];
      }
      for (int i = 0; i < 4; ++i) {  // (G f) G^T
        const float row[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                              t[i][2]};
        for (int j = 0; j < 4; ++j) u[(i * 4 + j) * K * C + kc] = row[j];
      }
    }
  });
  return transformed;
}

// x (N, C, H, W) float32, transformed weight (16, K, C) -> (N, K, H, W); no bias.
at::Tensor winograd_conv3x3(const at::Tensor& input, const at::Tensor& transformed_weight) {
  TORCH_CHECK(input.dim() == 4, "input must be (batch, channels, height, width), got ", input.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && transformed_weight.scalar_type() == at::kFloat,
              "input and weight must be float32");
  TORCH_CHECK(transformed_weight.dim() == 3 && transformed_weight.size(0) == 16 &&
                  transformed_weight.size(2) == input.size(1),
              "transformed weight must be (16, out_channels, ", input.size(1), "), got ", transformed_weight.sizes());
  const at::Tensor x = input.contiguous();
  const at::Tensor u = transformed_weight.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = u.size(1);
  at::Tensor y = at::empty({N, K, H, W}, x.options());
  if (N == 0 || H == 0 || W == 0) return y;
  const int64_t tiles_h = (H + 1) / 2, tiles_w = (W + 1) / 2;
  const int64_t rows_per_block = std::max<int64_t>(1, kTilesPerBlock / tiles_w);
  const int64_t block_tiles = rows_per_block * tiles_w;
  at::Tensor v = at::empty({16, C, block_tiles}, x.options());
  float* V = v.data_ptr<float>();

  for (int64_t n = 0; n < N; ++n) {
    const float* X = x.data_ptr<float>() + n * C * H * W;
    float* Y = y.data_ptr<float>() + n * K * H * W;
    for (int64_t r0 = 0; r0 < tiles_h; r0 += rows_per_block) {
      const int64_t r1 = std::min(tiles_h, r0 + rows_per_block), tiles = (r1 - r0) * tiles_w;

      // input transform: V[position][c][tile] = (B^T d B)[position]
      at::parallel_for(0, C, 1, [&](int64_t c_begin, int64_t c_end) {
        const int64_t padded_width = 2 * tiles_w + 2;
        std::vector<float> rows(4 * padded_width);
        for (int64_t c = c_begin; c < c_end; ++c) {
          const float* xc = X + c * H * W;
          for (int64_t ty = r0; ty < r1; ++ty) {
            // the tile row's four input rows, zero padded: columns -1 .. 2 * tiles_w
            for (int i = 0; i < 4; ++i) {
              float* row = rows.data() + i * padded_width;
              const int64_t yy = 2 * ty - 1 + i;
              std::fill(row, row + padded_width, 0.f);
              if (yy >= 0 && yy < H) std::copy(xc + yy * W, xc + yy * W + W, row + 1);
            }
            const float* d0 = rows.data();
            const float* d1 = d0 + padded_width;
            const float* d2 = d1 + padded_width;
            const float* d3 = d2 + padded_width;
            float* out[16];
            for (int p = 0; p < 16; ++p) out[p] = V + (p * C + c) * block_tiles + (ty - r0) * tiles_w;
#pragma omp simd
            for (int64_t tx = 0; tx < tiles_w; ++tx) {
              const int64_t o = 2 * tx;
              float t[4][4];  // B^T d
              for (int j = 0; j < 4; ++j) {
                t[0][j] = d0[o + j] - d2[o + j];
                t[1][j] = d1[o + j] + d2[o + j];
                t[2][j] = d2[o + j] - d1[o + j];
                t[3][j] = d1[o + j] - d3[o + j];
              }
              for (int i = 0; i < 4; ++i) {  // (B^T d) B
                out[4 * i + 0][tx] = t[i][0] - t[i][2];
                out[4 * i + 1][tx] = t[i][1] + t[i][2];
                out[4 * i + 2][tx] = t[i][2] - t[i][1];
                out[4 * i + 3][tx] = t[i][1] - t[i][3];
              }
            }
          }
        }
      });

      // the 16 products: M[position] = U[position] (K x C) @ V[position] (C x tiles)
      const at::Tensor m = at::bmm(u, v.narrow(2, 0, tiles));
      const float* M = m.data_ptr<float>();

      // output transform: the 2x2 block A^T M A of every tile
      at::parallel_for(0, K, 1, [&](int64_t k_begin, int64_t k_end) {
        std::vector<float> pair(4 * tiles_w);
        for (int64_t k = k_begin; k < k_end; ++k) {
          float* yk = Y + k * H * W;
          for (int64_t ty = r0; ty < r1; ++ty) {
            const float* in[16];
            for (int p = 0; p < 16; ++p) in[p] = M + (p * K + k) * tiles + (ty - r0) * tiles_w;
            float* top = pair.data();
            float* bottom = top + 2 * tiles_w;
#pragma omp simd
            for (int64_t tx = 0; tx < tiles_w; ++tx) {
              float t[2][4];  // A^T M
              for (int j = 0; j < 4; ++j) {
                t[0][j] = in[j][tx] + in[4 + j][tx] + in[8 + j][tx];
                t[1][j] = in[4 + j][tx] - in[8 + j][tx] - in[12 + j][tx];
              }
              top[2 * tx] = t[0][0] + t[0][1] + t[0][2];
              top[2 * tx + 1] = t[0][1] - t[0][2] - t[0][3];
              bottom[2 * tx] = t[1][0] + t[1][1] + t[1][2];
              bottom[2 * tx + 1] = t[1][1] - t[1][2] - t[1][3];
            }
            std::copy(top, top + W, yk + 2 * ty * W);
            if (2 * ty + 1 < H) std::copy(bottom, bottom + W, yk + (2 * ty + 1) * W);
          }
        }
      });
    }
  }
  return y;
}
