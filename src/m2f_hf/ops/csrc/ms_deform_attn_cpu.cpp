// Multi-scale deformable attention on the CPU (m2f_hf): forward and backward loops over the sampling points.
//
// Same sampling as grid_sample(align_corners=False, padding_mode="zeros") on each level: a location (x, y) in
// [0, 1] reads pixel position (x * width - 1/2, y * height - 1/2), its four integer neighbours weighted bilinearly,
// neighbours outside the map reading zero. Each point's head_dim values are contiguous rows of `value`
// (batch, keys, heads, head_dim), so the inner loops are over head_dim and vectorise.
//
// Parallel work never writes the same memory: both passes split (batch, head) pairs, so the backward's scatter into
// grad_value needs neither atomics nor per-thread copies. head_dim 32 (hidden 256 / 8 heads) gets loops of fixed
// length, which the compiler unrolls and vectorises; other sizes run the same code with a runtime length.
// Built just in time by m2f_hf/ops/build.py (`python -m m2f_hf.ops --cpu`).

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <tuple>

namespace {

// The four neighbours of one sampling point: key rows (relative to the level start) and bilinear weights, with the
// weight of a neighbour outside the map set to zero (its row is then any valid row, never read with effect).
template <typename scalar_t>
struct Corners {
  int64_t row[4];
  scalar_t weight[4];
  bool inside[4];
  scalar_t frac_x, frac_y;
};

template <typename scalar_t>
inline Corners<scalar_t> corners(scalar_t loc_x, scalar_t loc_y, int64_t height, int64_t width) {
  Corners<scalar_t> c;
  const scalar_t x = loc_x * static_cast<scalar_t>(width) - scalar_t(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(height) - scalar_t(0.5);
  const scalar_t x_floor = std::floor(x), y_floor = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(x_floor), y0 = static_cast<int64_t>(y_floor);
  c.frac_x = x - x_floor;
  c.frac_y = y - y_floor;
  const int64_t xs[2] = {x0, x0 + 1}, ys[2] = {y0, y0 + 1};
  const scalar_t wx[2] = {scalar_t(1) - c.frac_x, c.frac_x}, wy[2] = {scalar_t(1) - c.frac_y, c.frac_y};
  for (int j = 0; j < 2; ++j) {
    for (int i = 0; i < 2; ++i) {
      const int k = 2 * j + i;
      c.inside[k] = xs[i] >= 0 && xs[i] < width && ys[j] >= 0 && ys[j] < height;
      c.row[k] = c.inside[k] ? ys[j] * width + xs[i] : 0;
      c.weight[k] = c.inside[k] ? wy[j] * wx[i] : scalar_t(0);
    }
  }
  return c;
}

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                  const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  TORCH_CHECK(value.device().is_cpu(), "value must be a CPU tensor");
  TORCH_CHECK(value.dim() == 4 && sampling_locations.dim() == 6 && attention_weights.dim() == 5,
              "expected value (B, K, H, D), sampling_locations (B, Q, H, L, P, 2), attention_weights (B, Q, H, L, P)");
  TORCH_CHECK(value.is_contiguous() && sampling_locations.is_contiguous() && attention_weights.is_contiguous() &&
                  spatial_shapes.is_contiguous() && level_start_index.is_contiguous(),
              "inputs must be contiguous");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "sampling_locations and attention_weights must have value's dtype");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
}


// Sizes shared by forward and backward.
struct Shape {
  int64_t batch, keys, heads, dim, queries, levels, points;
  const int64_t* shapes;  // (levels, 2) height, width
  const int64_t* starts;  // (levels,)
};

Shape shape_of(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
               const at::Tensor& sampling_locations) {
  return {value.size(0),
          value.size(1),
          value.size(2),
          value.size(3),
          sampling_locations.size(1),
          sampling_locations.size(3),
          sampling_locations.size(4),
          spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>()};
}

// Heads of up to this many channels accumulate in a local buffer (kept in registers); larger ones in the output.
constexpr int64_t kLocalDim = 64;

// Each task is one (batch, head) pair, accumulating a query's head_dim outputs in a local buffer.
// kDim > 0 fixes head_dim at compile time (fully unrolled, vectorised loops); 0 reads it from `s`.
template <typename scalar_t, int64_t kDim>
void forward_kernel(const Shape& s, const scalar_t* value, const scalar_t* locations, const scalar_t* weights,
                    scalar_t* output) {
  const int64_t dim = kDim > 0 ? kDim : s.dim, heads = s.heads;
  at::parallel_for(0, s.batch * heads, 1, [&](int64_t begin, int64_t end) {
    scalar_t local[kLocalDim];
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads;
      const scalar_t* head_value = value + (b * s.keys * heads + h) * dim;
      for (int64_t q = 0; q < s.queries; ++q) {
        const int64_t bqh = (b * s.queries + q) * heads + h;
        scalar_t* __restrict__ out = output + bqh * dim;
        scalar_t* __restrict__ acc = dim <= kLocalDim ? local : out;
        for (int64_t d = 0; d < dim; ++d) acc[d] = 0;
        for (int64_t l = 0; l < s.levels; ++l) {
          const int64_t height = s.shapes[2 * l], width = s.shapes[2 * l + 1];
          const scalar_t* level_value = head_value + s.starts[l] * heads * dim;
          for (int64_t p = 0; p < s.points; ++p) {
            const int64_t point = (bqh * s.levels + l) * s.points + p;
            const scalar_t attn = weights[point];
            const auto c = corners<scalar_t>(locations[2 * point], locations[2 * point + 1], height, width);
            if (kDim > 0 && c.inside[0] && c.inside[3]) {
              // all four neighbours on the map (the common case): one pass over head_dim for the four rows
              const int64_t stride = heads * dim;
              const scalar_t* __restrict__ r0 = level_value + c.row[0] * stride;
              const scalar_t* __restrict__ r1 = level_value + c.row[1] * stride;
              const scalar_t* __restrict__ r2 = level_value + c.row[2] * stride;
              const scalar_t* __restrict__ r3 = level_value + c.row[3] * stride;
              const scalar_t w0 = attn * c.weight[0], w1 = attn * c.weight[1];
              const scalar_t w2 = attn * c.weight[2], w3 = attn * c.weight[3];
#pragma omp simd
              for (int64_t d = 0; d < dim; ++d) acc[d] += (w0 * r0[d] + w1 * r1[d]) + (w2 * r2[d] + w3 * r3[d]);
              continue;
            }
            for (int k = 0; k < 4; ++k) {
              if (!c.inside[k]) continue;
              const scalar_t w = attn * c.weight[k];
              const scalar_t* __restrict__ row = level_value + c.row[k] * heads * dim;
#pragma omp simd
              for (int64_t d = 0; d < dim; ++d) acc[d] += w * row[d];
            }
          }
        }
        if (acc != out) {
          for (int64_t d = 0; d < dim; ++d) out[d] = acc[d];
        }
      }
    }
  });
}

// `by_head` and `grad_by_head` are value and its gradient laid out (batch, heads, keys, dim): one head's rows are
// contiguous (a few hundred KB for a 512x512 image), so its random reads and writes stay in the core's cache.
template <typename scalar_t, int64_t kDim>
void backward_kernel(const Shape& s, const scalar_t* grad_output, const scalar_t* by_head, const scalar_t* locations,
                     const scalar_t* weights, scalar_t* grad_by_head, scalar_t* grad_locations, scalar_t* grad_weights) {
  const int64_t dim = kDim > 0 ? kDim : s.dim, heads = s.heads;
  // one (batch, head) pair per task: the gradient rows of different heads never overlap
  at::parallel_for(0, s.batch * heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads;
      for (int64_t q = 0; q < s.queries; ++q) {
        const int64_t bqh = (b * s.queries + q) * heads + h;
        const scalar_t* __restrict__ grad = grad_output + bqh * dim;
        for (int64_t l = 0; l < s.levels; ++l) {
          const int64_t height = s.shapes[2 * l], width = s.shapes[2 * l + 1];
          const int64_t level_offset = (bh * s.keys + s.starts[l]) * dim;
          const scalar_t* level_value = by_head + level_offset;
          scalar_t* level_grad_value = grad_by_head + level_offset;
          for (int64_t p = 0; p < s.points; ++p) {
            const int64_t point = (bqh * s.levels + l) * s.points + p;
            const scalar_t attn = weights[point];
            const auto c = corners<scalar_t>(locations[2 * point], locations[2 * point + 1], height, width);
            scalar_t dot[4] = {0, 0, 0, 0};  // grad . value of each neighbour (0 outside the map)
            for (int k = 0; k < 4; ++k) {
              if (!c.inside[k]) continue;
              const scalar_t* __restrict__ row = level_value + c.row[k] * dim;
              scalar_t* __restrict__ grad_row = level_grad_value + c.row[k] * dim;
              const scalar_t w = attn * c.weight[k];
              scalar_t acc = 0;
#pragma omp simd reduction(+ : acc)
              for (int64_t d = 0; d < dim; ++d) {
                acc += grad[d] * row[d];
                grad_row[d] += w * grad[d];
              }
              dot[k] = acc;
            }
            const scalar_t fx = c.frac_x, fy = c.frac_y;
            grad_weights[point] = (1 - fy) * ((1 - fx) * dot[0] + fx * dot[1]) + fy * ((1 - fx) * dot[2] + fx * dot[3]);
            // d(pixel x)/d(location x) = width, d(pixel y)/d(location y) = height
            grad_locations[2 * point] =
                attn * static_cast<scalar_t>(width) * ((1 - fy) * (dot[1] - dot[0]) + fy * (dot[3] - dot[2]));
            grad_locations[2 * point + 1] =
                attn * static_cast<scalar_t>(height) * ((1 - fx) * (dot[2] - dot[0]) + fx * (dot[3] - dot[1]));
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Shape s = shape_of(value, spatial_shapes, level_start_index, sampling_locations);
  auto output = at::empty({s.batch, s.queries, s.heads * s.dim}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    const auto run = s.dim == 32 ? forward_kernel<scalar_t, 32> : forward_kernel<scalar_t, 0>;
    run(s, value.data_ptr<scalar_t>(), sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type(),
              "grad_output must be contiguous with value's dtype");
  const Shape s = shape_of(value, spatial_shapes, level_start_index, sampling_locations);
  const auto by_head = value.permute({0, 2, 1, 3}).contiguous();
  auto grad_by_head = at::zeros_like(by_head);
  auto grad_locations = at::empty_like(sampling_locations);
  auto grad_weights = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    const auto run = s.dim == 32 ? backward_kernel<scalar_t, 32> : backward_kernel<scalar_t, 0>;
    run(s, grad_output.data_ptr<scalar_t>(), by_head.data_ptr<scalar_t>(), sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(), grad_by_head.data_ptr<scalar_t>(), grad_locations.data_ptr<scalar_t>(),
        grad_weights.data_ptr<scalar_t>());
  });
  const auto grad_value = grad_by_head.permute({0, 2, 1, 3}).contiguous();
  return {grad_value, grad_locations, grad_weights};
}

// conv3x3_winograd_cpu.cpp
at::Tensor winograd_weight_transform(const at::Tensor& weight);
at::Tensor winograd_conv3x3(const at::Tensor& input, const at::Tensor& transformed_weight);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "m2f_hf CPU kernels: multi-scale deformable attention, Winograd 3x3 convolution";
  m.def("forward", &ms_deform_attn_cpu_forward, "Multi-scale deformable attention forward (CPU)", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("backward", &ms_deform_attn_cpu_backward,
        "Multi-scale deformable attention backward (CPU): grads of value, sampling_locations, attention_weights",
        py::arg("grad_output"), py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"));
  m.def("winograd_weight_transform", &winograd_weight_transform,
        "3x3 filters (K, C, 3, 3) -> Winograd F(2x2, 3x3) transformed filters (16, K, C)", py::arg("weight"));
  m.def("winograd_conv3x3", &winograd_conv3x3,
        "3x3 convolution, stride 1, padding 1, no bias, from transformed filters (Winograd F(2x2, 3x3))",
        py::arg("input"), py::arg("transformed_weight"));
}
