// Python binding of the multi-scale deformable attention CUDA kernels (m2f_hf).
// Built just in time by m2f_hf/ops/build.py; the torch.library custom op in custom_op.py calls these functions,
// so autograd, fake tensors and torch.compile are handled on the Python side.

#include <torch/extension.h>

#include "ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "m2f_hf multi-scale deformable attention CUDA kernels";
  m.def("forward", &ms_deform_attn_cuda_forward, "Multi-scale deformable attention forward (CUDA)",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("backward", &ms_deform_attn_cuda_backward,
        "Multi-scale deformable attention backward (CUDA): grads of value, sampling_locations, attention_weights",
        py::arg("grad_output"), py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"));
}
