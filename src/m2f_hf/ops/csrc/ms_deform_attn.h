// Multi-scale deformable attention CUDA kernels (m2f_hf). Declarations shared by the binding and the kernels.
#pragma once

#include <torch/types.h>

#include <tuple>

// value:               (batch, num_keys, num_heads, head_dim), float32 / float16 / bfloat16 / float64
// spatial_shapes:      (num_levels, 2) int64, (height, width)
// level_start_index:   (num_levels,) int64
// sampling_locations:  (batch, num_queries, num_heads, num_levels, num_points, 2), opmath dtype of value
// attention_weights:   (batch, num_queries, num_heads, num_levels, num_points), opmath dtype of value
// returns              (batch, num_queries, num_heads * head_dim) in value's dtype
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights);

// grad_output: (batch, num_queries, num_heads * head_dim) in value's dtype.
// returns (grad_value in value's dtype, grad_sampling_locations, grad_attention_weights in opmath dtype)
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations, const at::Tensor& attention_weights);
