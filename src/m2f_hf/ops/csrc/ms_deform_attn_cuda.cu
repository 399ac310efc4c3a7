// Multi-scale deformable attention: CUDA forward and backward kernels (m2f_hf).
//
// Two kernels of each direction, both computing in the "opmath" type of the value dtype (float for
// half/bfloat16/float, double for double):
//
// * Vector kernels (the default): a (batch, query, head) item is handled by a group of G lanes, each owning V
//   consecutive channels, where V channels fill 16 bytes (4 float, 8 half/bfloat16, 2 double) and G = head_dim / V
//   must be a power of two of at most 32 (head_dim 32 in float: 8 lanes, 4 items per warp). Every corner of a
//   bilinear neighbourhood is one 16-byte load per lane. Corners that fall off the map get weight 0 and read a
//   clamped in-range address, so the four loads of a point carry no branch and can all be in flight at once.
// * Scalar kernels (any head_dim, or a value pointer not 16-byte aligned): one warp per item, lanes striding over
//   head_dim. `M2F_DEFORM_ATTN_CUDA_SCALAR=1` forces them (for comparisons and debugging).
//
// Backward: value gradients are scattered with atomicAdd into an opmath buffer (cast to the value dtype at the end),
// because many queries sample the same corner; on compute capability 9.0 and later the vector kernel adds a float4
// at a time. Location / weight gradients need a reduction over head_dim: each lane accumulates its channels, a
// shuffle reduction over the item's lanes combines them, and the item's first lane owns the output element, so those
// gradients need no atomics.
//
// Sampling convention (matches grid_sample with align_corners=False and zero padding): pixel = location * size - 0.5,
// corners outside the map contribute zero.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: it needs cuBLAS/cuSPARSE headers

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "ms_deform_attn.h"

namespace {

constexpr int kWarp = 32;
constexpr int kItemsPerBlock = 4;  // warps per block; 128 threads

struct Problem {
  int64_t num_items;  // batch * num_queries * num_heads
  int64_t num_keys;
  int64_t num_queries;
  int num_heads;
  int head_dim;
  int num_levels;
  int num_points;
};

// Bilinear neighbourhood of one sampling point on one level.
template <typename acc_t>
struct Corners {
  int64_t offset[4];  // key index (level start + y * width + x); only meaningful where valid
  acc_t weight[4];    // bilinear weight
  acc_t dx[4];        // d weight / d pixel_x
  acc_t dy[4];        // d weight / d pixel_y
  bool valid[4];
  bool any;
};

template <typename acc_t>
__device__ __forceinline__ Corners<acc_t> make_corners(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width,
                                                        int64_t start) {
  Corners<acc_t> c;
  const acc_t px = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t py = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  // a point whose whole neighbourhood lies outside the map contributes nothing
  c.any = px > acc_t(-1) && py > acc_t(-1) && px < static_cast<acc_t>(width) && py < static_cast<acc_t>(height);
  const acc_t fx0 = floor(px);
  const acc_t fy0 = floor(py);
  const int64_t x0 = static_cast<int64_t>(fx0);
  const int64_t y0 = static_cast<int64_t>(fy0);
  const acc_t fx = px - fx0;
  const acc_t fy = py - fy0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int ox = k & 1;
    const int oy = k >> 1;
    const int64_t x = x0 + ox;
    const int64_t y = y0 + oy;
    const acc_t wx = ox ? fx : acc_t(1) - fx;
    const acc_t wy = oy ? fy : acc_t(1) - fy;
    c.valid[k] = c.any && x >= 0 && x < width && y >= 0 && y < height;
    c.offset[k] = start + y * width + x;
    c.weight[k] = wx * wy;
    c.dx[k] = (ox ? acc_t(1) : acc_t(-1)) * wy;
    c.dy[k] = (oy ? acc_t(1) : acc_t(-1)) * wx;
  }
  return c;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int delta = kWarp / 2; delta > 0; delta >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, delta);
  }
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarp* kItemsPerBlock)
    forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                   const int64_t* __restrict__ level_start_index, const acc_t* __restrict__ sampling_locations,
                   const acc_t* __restrict__ attention_weights, scalar_t* __restrict__ output, Problem pb) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kItemsPerBlock + threadIdx.y;
  if (item >= pb.num_items) return;  // uniform per warp
  const int lane = threadIdx.x;
  const int head = static_cast<int>(item % pb.num_heads);
  const int64_t batch = item / (static_cast<int64_t>(pb.num_heads) * pb.num_queries);
  const int samples = pb.num_levels * pb.num_points;
  const acc_t* loc = sampling_locations + item * samples * 2;
  const acc_t* weight = attention_weights + item * samples;
  const int64_t key_stride = static_cast<int64_t>(pb.num_heads) * pb.head_dim;  // value row stride per key
  const scalar_t* value_bh = value + batch * pb.num_keys * key_stride + static_cast<int64_t>(head) * pb.head_dim;

  for (int d0 = 0; d0 < pb.head_dim; d0 += kWarp) {
    const int d = d0 + lane;
    const bool active = d < pb.head_dim;
    acc_t acc = 0;
    for (int level = 0; level < pb.num_levels; ++level) {
      const int64_t height = spatial_shapes[2 * level];
      const int64_t width = spatial_shapes[2 * level + 1];
      const int64_t start = level_start_index[level];
      for (int p = 0; p < pb.num_points; ++p) {
        const int s = level * pb.num_points + p;
        const Corners<acc_t> c = make_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, start);
        if (!c.any || !active) continue;
        const acc_t a = weight[s];
        acc_t sample = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (c.valid[k]) sample += c.weight[k] * static_cast<acc_t>(value_bh[c.offset[k] * key_stride + d]);
        }
        acc += a * sample;
      }
    }
    if (active) output[item * pb.head_dim + d] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kWarp* kItemsPerBlock)
    backward_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ value,
                    const int64_t* __restrict__ spatial_shapes, const int64_t* __restrict__ level_start_index,
                    const acc_t* __restrict__ sampling_locations, const acc_t* __restrict__ attention_weights,
                    acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_locations,
                    acc_t* __restrict__ grad_weights, Problem pb) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kItemsPerBlock + threadIdx.y;
  if (item >= pb.num_items) return;  // uniform per warp, so the shuffles below see full warps
  const int lane = threadIdx.x;
  const int head = static_cast<int>(item % pb.num_heads);
  const int64_t batch = item / (static_cast<int64_t>(pb.num_heads) * pb.num_queries);
  const int samples = pb.num_levels * pb.num_points;
  const acc_t* loc = sampling_locations + item * samples * 2;
  const acc_t* weight = attention_weights + item * samples;
  acc_t* grad_loc = grad_locations + item * samples * 2;
  acc_t* grad_weight = grad_weights + item * samples;
  const int64_t key_stride = static_cast<int64_t>(pb.num_heads) * pb.head_dim;
  const int64_t bh_offset = batch * pb.num_keys * key_stride + static_cast<int64_t>(head) * pb.head_dim;
  const scalar_t* value_bh = value + bh_offset;
  acc_t* grad_value_bh = grad_value + bh_offset;

  for (int d0 = 0; d0 < pb.head_dim; d0 += kWarp) {
    const int d = d0 + lane;
    const bool active = d < pb.head_dim;
    const acc_t g = active ? static_cast<acc_t>(grad_output[item * pb.head_dim + d]) : acc_t(0);
    for (int level = 0; level < pb.num_levels; ++level) {
      const int64_t height = spatial_shapes[2 * level];
      const int64_t width = spatial_shapes[2 * level + 1];
      const int64_t start = level_start_index[level];
      for (int p = 0; p < pb.num_points; ++p) {
        const int s = level * pb.num_points + p;
        const Corners<acc_t> c = make_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, start);
        if (!c.any) continue;  // uniform per warp: every lane sees the same location
        const acc_t a = weight[s];
        acc_t g_weight = 0;
        acc_t g_px = 0;
        acc_t g_py = 0;
        if (active) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (!c.valid[k]) continue;
            const int64_t idx = c.offset[k] * key_stride + d;
            const acc_t v = static_cast<acc_t>(value_bh[idx]) * g;
            g_weight += c.weight[k] * v;
            g_px += c.dx[k] * v;
            g_py += c.dy[k] * v;
            atomicAdd(grad_value_bh + idx, a * c.weight[k] * g);
          }
        }
        g_weight = warp_sum(g_weight);
        g_px = warp_sum(g_px);
        g_py = warp_sum(g_py);
        if (lane == 0) {
          // accumulated over head_dim chunks by the same lane, so no atomics are needed
          grad_weight[s] += g_weight;
          grad_loc[2 * s] += a * g_px * static_cast<acc_t>(width);  // d pixel_x / d loc_x = width
          grad_loc[2 * s + 1] += a * g_py * static_cast<acc_t>(height);
        }
      }
    }
  }
}


// ---- vector kernels ------------------------------------------------------------------------------------------------

constexpr int kVectorBytes = 16;
constexpr int kThreadsPerBlock = kWarp * kItemsPerBlock;

template <typename scalar_t>
struct VectorWidth {
  static constexpr int value = kVectorBytes / static_cast<int>(sizeof(scalar_t));
};

// V consecutive channels, loaded and stored as one 16-byte access
template <typename scalar_t, int V>
struct alignas(kVectorBytes) Pack {
  scalar_t v[V];
};

// Bilinear neighbourhood of one point with validity folded into the weights: an off-map corner has weight 0 (and
// derivative factors 0) and a clamped, in-range key index.
template <typename acc_t>
struct FoldedCorners {
  int64_t key[4];
  acc_t weight[4];
  acc_t dx[4];  // d weight / d pixel_x, 0 where the corner is off the map
  acc_t dy[4];
};

template <typename acc_t>
__device__ __forceinline__ FoldedCorners<acc_t> fold_corners(acc_t loc_x, acc_t loc_y, int height, int width,
                                                             int64_t start) {
  FoldedCorners<acc_t> c;
  const acc_t px = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t py = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t fx0 = floor(px);
  const acc_t fy0 = floor(py);
  const acc_t fx = px - fx0;
  const acc_t fy = py - fy0;
  // compare in acc_t before converting, so a location far off the map (or NaN) never overflows an int
  const bool x0_in = fx0 >= acc_t(0) && fx0 < static_cast<acc_t>(width);
  const bool x1_in = fx0 >= acc_t(-1) && fx0 < static_cast<acc_t>(width - 1);
  const bool y0_in = fy0 >= acc_t(0) && fy0 < static_cast<acc_t>(height);
  const bool y1_in = fy0 >= acc_t(-1) && fy0 < static_cast<acc_t>(height - 1);
  const int x0 = (x0_in || x1_in) ? static_cast<int>(fx0) : 0;
  const int y0 = (y0_in || y1_in) ? static_cast<int>(fy0) : 0;
  const int xs[2] = {min(max(x0, 0), width - 1), min(max(x0 + 1, 0), width - 1)};
  const int ys[2] = {min(max(y0, 0), height - 1), min(max(y0 + 1, 0), height - 1)};
  const bool x_in[2] = {x0_in, x1_in};
  const bool y_in[2] = {y0_in, y1_in};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int ox = k & 1;
    const int oy = k >> 1;
    const bool valid = x_in[ox] && y_in[oy];  // false for a NaN or infinite location too
    const acc_t wx = ox ? fx : acc_t(1) - fx;
    const acc_t wy = oy ? fy : acc_t(1) - fy;
    c.key[k] = start + static_cast<int64_t>(ys[oy]) * width + xs[ox];
    // selects, not products with 0: an infinite location gives NaN fractions
    c.weight[k] = valid ? wx * wy : acc_t(0);
    c.dx[k] = valid ? (ox ? wy : -wy) : acc_t(0);
    c.dy[k] = valid ? (oy ? wx : -wx) : acc_t(0);
  }
  return c;
}

// Sum over the `group` lanes of one item (lanes group-aligned, group a power of two).
template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, unsigned mask, int group) {
  for (int delta = group >> 1; delta > 0; delta >>= 1) {
    v += __shfl_xor_sync(mask, v, delta);
  }
  return v;
}

template <int V>
__device__ __forceinline__ void atomic_add_channels(float* dst, const float (&v)[V]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      atomicAdd(reinterpret_cast<float4*>(dst + i), make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) atomicAdd(dst + i, v[i]);
  }
#else
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(dst + i, v[i]);
#endif
}

template <int V>
__device__ __forceinline__ void atomic_add_channels(double* dst, const double (&v)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) atomicAdd(dst + i, v[i]);
}

struct VectorLayout {
  int group;        // lanes per item: head_dim / V
  int items_per_block;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    forward_vector_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ spatial_shapes,
                          const int64_t* __restrict__ level_start_index, const acc_t* __restrict__ sampling_locations,
                          const acc_t* __restrict__ attention_weights, scalar_t* __restrict__ output, Problem pb,
                          VectorLayout layout) {
  constexpr int V = VectorWidth<scalar_t>::value;
  using PackT = Pack<scalar_t, V>;
  const int thread = threadIdx.x;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * layout.items_per_block + thread / layout.group;
  if (item >= pb.num_items) return;  // no shuffles in the forward
  const int channel = (thread % layout.group) * V;
  const int head = static_cast<int>(item % pb.num_heads);
  const int64_t batch = item / (static_cast<int64_t>(pb.num_heads) * pb.num_queries);
  const int samples = pb.num_levels * pb.num_points;
  const acc_t* loc = sampling_locations + item * samples * 2;
  const acc_t* weight = attention_weights + item * samples;
  const int64_t key_stride = static_cast<int64_t>(pb.num_heads) * pb.head_dim;
  const scalar_t* value_bh =
      value + batch * pb.num_keys * key_stride + static_cast<int64_t>(head) * pb.head_dim + channel;

  acc_t acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = acc_t(0);
  for (int level = 0; level < pb.num_levels; ++level) {
    const int height = static_cast<int>(spatial_shapes[2 * level]);
    const int width = static_cast<int>(spatial_shapes[2 * level + 1]);
    const int64_t start = level_start_index[level];
    for (int p = 0; p < pb.num_points; ++p) {
      const int s = level * pb.num_points + p;
      const FoldedCorners<acc_t> c = fold_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, start);
      const acc_t a = weight[s];
      PackT corner[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) corner[k] = *reinterpret_cast<const PackT*>(value_bh + c.key[k] * key_stride);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const acc_t w = a * c.weight[k];
#pragma unroll
        for (int i = 0; i < V; ++i) acc[i] += w * static_cast<acc_t>(corner[k].v[i]);
      }
    }
  }
  PackT out;
#pragma unroll
  for (int i = 0; i < V; ++i) out.v[i] = static_cast<scalar_t>(acc[i]);
  *reinterpret_cast<PackT*>(output + item * pb.head_dim + channel) = out;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    backward_vector_kernel(const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ value,
                           const int64_t* __restrict__ spatial_shapes, const int64_t* __restrict__ level_start_index,
                           const acc_t* __restrict__ sampling_locations, const acc_t* __restrict__ attention_weights,
                           acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_locations,
                           acc_t* __restrict__ grad_weights, Problem pb, VectorLayout layout) {
  constexpr int V = VectorWidth<scalar_t>::value;
  using PackT = Pack<scalar_t, V>;
  const int thread = threadIdx.x;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * layout.items_per_block + thread / layout.group;
  // the lanes of a whole item are in or out together; the shuffles below name exactly the lanes that stay
  const unsigned mask = __ballot_sync(0xffffffffu, item < pb.num_items);
  if (item >= pb.num_items) return;
  const int lane_in_item = thread % layout.group;
  const int channel = lane_in_item * V;
  const int head = static_cast<int>(item % pb.num_heads);
  const int64_t batch = item / (static_cast<int64_t>(pb.num_heads) * pb.num_queries);
  const int samples = pb.num_levels * pb.num_points;
  const acc_t* loc = sampling_locations + item * samples * 2;
  const acc_t* weight = attention_weights + item * samples;
  acc_t* grad_loc = grad_locations + item * samples * 2;
  acc_t* grad_weight = grad_weights + item * samples;
  const int64_t key_stride = static_cast<int64_t>(pb.num_heads) * pb.head_dim;
  const int64_t bh_offset = batch * pb.num_keys * key_stride + static_cast<int64_t>(head) * pb.head_dim + channel;
  const scalar_t* value_bh = value + bh_offset;
  acc_t* grad_value_bh = grad_value + bh_offset;

  acc_t g[V];
  {
    const PackT packed = *reinterpret_cast<const PackT*>(grad_output + item * pb.head_dim + channel);
#pragma unroll
    for (int i = 0; i < V; ++i) g[i] = static_cast<acc_t>(packed.v[i]);
  }
  for (int level = 0; level < pb.num_levels; ++level) {
    const int height = static_cast<int>(spatial_shapes[2 * level]);
    const int width = static_cast<int>(spatial_shapes[2 * level + 1]);
    const int64_t start = level_start_index[level];
    for (int p = 0; p < pb.num_points; ++p) {
      const int s = level * pb.num_points + p;
      const FoldedCorners<acc_t> c = fold_corners<acc_t>(loc[2 * s], loc[2 * s + 1], height, width, start);
      const acc_t a = weight[s];
      PackT corner[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) corner[k] = *reinterpret_cast<const PackT*>(value_bh + c.key[k] * key_stride);
      acc_t g_weight = 0;
      acc_t g_px = 0;
      acc_t g_py = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        acc_t dot = 0;  // this lane's channels of <grad_output, corner value>
#pragma unroll
        for (int i = 0; i < V; ++i) dot += g[i] * static_cast<acc_t>(corner[k].v[i]);
        g_weight += c.weight[k] * dot;
        g_px += c.dx[k] * dot;
        g_py += c.dy[k] * dot;
        if (c.weight[k] != acc_t(0)) {
          const acc_t w = a * c.weight[k];
          acc_t contribution[V];
#pragma unroll
          for (int i = 0; i < V; ++i) contribution[i] = w * g[i];
          atomic_add_channels<V>(grad_value_bh + c.key[k] * key_stride, contribution);
        }
      }
      g_weight = group_sum(g_weight, mask, layout.group);
      g_px = group_sum(g_px, mask, layout.group);
      g_py = group_sum(g_py, mask, layout.group);
      if (lane_in_item == 0) {
        grad_weight[s] = g_weight;
        grad_loc[2 * s] = a * g_px * static_cast<acc_t>(width);  // d pixel_x / d loc_x = width
        grad_loc[2 * s + 1] = a * g_py * static_cast<acc_t>(height);
      }
    }
  }
}

bool force_scalar_kernels() {
  const char* flag = std::getenv("M2F_DEFORM_ATTN_CUDA_SCALAR");
  return flag != nullptr && flag[0] != '\0' && std::strcmp(flag, "0") != 0;
}

bool aligned(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer) % kVectorBytes == 0; }

// The vector layout for these tensors, or group 0 where the scalar kernels must run.
template <typename scalar_t>
VectorLayout vector_layout(const Problem& pb, std::initializer_list<const void*> pointers) {
  constexpr int V = VectorWidth<scalar_t>::value;
  VectorLayout layout{0, 0};
  if (force_scalar_kernels() || pb.head_dim % V != 0) return layout;
  const int group = pb.head_dim / V;
  if (group > kWarp || (group & (group - 1)) != 0) return layout;
  for (const void* pointer : pointers) {
    if (!aligned(pointer)) return layout;
  }
  layout.group = group;
  layout.items_per_block = kThreadsPerBlock / group;
  return layout;
}

dim3 vector_grid_for(int64_t num_items, const VectorLayout& layout) {
  const int64_t blocks = (num_items + layout.items_per_block - 1) / layout.items_per_block;
  TORCH_CHECK(blocks <= 0x7fffffff, "too many (batch, query, head) items for one launch: ", num_items);
  return dim3(static_cast<unsigned int>(blocks));
}

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.is_cuda(), "value must be a CUDA tensor, got device ", value.device());
  TORCH_CHECK(value.dim() == 4, "value must be (batch, num_keys, num_heads, head_dim), got ", value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be (batch, num_queries, num_heads, num_levels, num_points, 2), got ",
              sampling_locations.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must be sampling_locations.shape[:-1], got ", attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == sampling_locations.size(3) &&
                  spatial_shapes.size(1) == 2,
              "spatial_shapes must be (num_levels, 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.numel() == spatial_shapes.size(0), "level_start_index must be (num_levels,), got ",
              level_start_index.sizes());
  const auto opmath = at::toOpMathType(value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == opmath && attention_weights.scalar_type() == opmath,
              "sampling_locations and attention_weights must be ", opmath, " for value of dtype ",
              value.scalar_type());
  for (const at::Tensor* t : {&spatial_shapes, &level_start_index, &sampling_locations, &attention_weights}) {
    TORCH_CHECK(t->device() == value.device(), "all inputs must be on ", value.device(), ", got ", t->device());
  }
}

Problem make_problem(const at::Tensor& value, const at::Tensor& sampling_locations) {
  Problem pb;
  pb.num_queries = sampling_locations.size(1);
  pb.num_items = sampling_locations.size(0) * pb.num_queries * sampling_locations.size(2);
  pb.num_keys = value.size(1);
  pb.num_heads = static_cast<int>(value.size(2));
  pb.head_dim = static_cast<int>(value.size(3));
  pb.num_levels = static_cast<int>(sampling_locations.size(3));
  pb.num_points = static_cast<int>(sampling_locations.size(4));
  return pb;
}

dim3 grid_for(int64_t num_items) {
  const int64_t blocks = (num_items + kItemsPerBlock - 1) / kItemsPerBlock;
  TORCH_CHECK(blocks <= 0x7fffffff, "too many (batch, query, head) items for one launch: ", num_items);
  return dim3(static_cast<unsigned int>(blocks));
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                       const at::Tensor& level_start_index_in,
                                       const at::Tensor& sampling_locations_in,
                                       const at::Tensor& attention_weights_in) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in, attention_weights_in);
  const c10::cuda::OptionalCUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = spatial_shapes_in.contiguous();
  const at::Tensor level_start_index = level_start_index_in.contiguous();
  const at::Tensor sampling_locations = sampling_locations_in.contiguous();
  const at::Tensor attention_weights = attention_weights_in.contiguous();

  const Problem pb = make_problem(value, sampling_locations);
  at::Tensor output = at::empty({sampling_locations.size(0), pb.num_queries, pb.num_heads * pb.head_dim},
                                value.options());
  if (pb.num_items == 0 || pb.head_dim == 0) return output.zero_();
  const dim3 block(kWarp, kItemsPerBlock);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const VectorLayout layout = vector_layout<scalar_t>(pb, {value.data_ptr(), output.data_ptr()});
    if (layout.group > 0) {
      forward_vector_kernel<scalar_t, acc_t><<<vector_grid_for(pb.num_items, layout), kThreadsPerBlock, 0, stream>>>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_locations.data_ptr<acc_t>(), attention_weights.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), pb,
          layout);
    } else {
      forward_kernel<scalar_t, acc_t><<<grid_for(pb.num_items), block, 0, stream>>>(
          value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_locations.data_ptr<acc_t>(), attention_weights.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), pb);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& grad_output_in, const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in, const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in, attention_weights_in);
  TORCH_CHECK(grad_output_in.device() == value_in.device(), "grad_output must be on ", value_in.device());
  const c10::cuda::OptionalCUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = spatial_shapes_in.contiguous();
  const at::Tensor level_start_index = level_start_index_in.contiguous();
  const at::Tensor sampling_locations = sampling_locations_in.contiguous();
  const at::Tensor attention_weights = attention_weights_in.contiguous();
  const Problem pb = make_problem(value, sampling_locations);
  TORCH_CHECK(grad_output_in.numel() == pb.num_items * pb.head_dim, "grad_output must have ",
              pb.num_items * pb.head_dim, " elements, got ", grad_output_in.sizes());
  const at::Tensor grad_output = grad_output_in.to(value.scalar_type()).contiguous();

  const auto opmath = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(opmath));
  at::Tensor grad_locations = at::zeros_like(sampling_locations);
  at::Tensor grad_weights = at::zeros_like(attention_weights);
  if (pb.num_items > 0 && pb.head_dim > 0) {
    const dim3 block(kWarp, kItemsPerBlock);
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const VectorLayout layout =
              vector_layout<scalar_t>(pb, {value.data_ptr(), grad_output.data_ptr(), grad_value.data_ptr()});
          if (layout.group > 0) {
            backward_vector_kernel<scalar_t, acc_t>
                <<<vector_grid_for(pb.num_items, layout), kThreadsPerBlock, 0, stream>>>(
                    grad_output.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                    level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
                    attention_weights.data_ptr<acc_t>(), grad_value.data_ptr<acc_t>(),
                    grad_locations.data_ptr<acc_t>(), grad_weights.data_ptr<acc_t>(), pb, layout);
          } else {
            backward_kernel<scalar_t, acc_t><<<grid_for(pb.num_items), block, 0, stream>>>(
                grad_output.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
                level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
                attention_weights.data_ptr<acc_t>(), grad_value.data_ptr<acc_t>(), grad_locations.data_ptr<acc_t>(),
                grad_weights.data_ptr<acc_t>(), pb);
          }
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}
