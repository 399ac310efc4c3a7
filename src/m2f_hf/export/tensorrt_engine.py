"""Build and run a TensorRT engine from an exported graph (TensorRT 10's Python API; a GPU and `pip install tensorrt`).

For the `--deform-attn-plugin tensorrt` graph TensorRT's own `MultiscaleDeformableAttnPlugin_TRT` runs the
deformable attention (its plugin library is initialised here); the standard graph builds too (TensorRT has
GridSample). Used by the `cuda` test and `scripts/gpu_check.sh`; not needed for onnxruntime.

    engine = build_engine("m2f-trt/model.onnx", min_shape=(1, 3, 256, 256), opt_shape=(1, 3, 512, 512),
                          max_shape=(8, 3, 1024, 1024))
    class_logits, mask_logits = run_engine(engine, pixel_values.cuda())
"""

from __future__ import annotations

from .onnx_export import INPUT_NAME, OUTPUT_NAMES


def build_engine(onnx_path, *, min_shape, opt_shape, max_shape, fp16: bool = False, tensorrt=None):
    """A deserialised `ICudaEngine` for `pixel_values` shapes between `min_shape` and `max_shape`.

    Raises:
        RuntimeError: the parser or the builder failed (with TensorRT's messages).
    """
    if tensorrt is None:
        import tensorrt
    trt = tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")  # registers MultiscaleDeformableAttnPlugin_TRT among others
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (the only mode of TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, tuple(min_shape), tuple(opt_shape), tuple(max_shape))
    config.add_optimization_profile(profile)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log above).")
    return trt.Runtime(logger).deserialize_cuda_engine(serialized)


def run_engine(engine, pixel_values):
    """(class_queries_logits, masks_queries_logits) as CUDA tensors for a float32 CUDA `pixel_values` batch."""
    import torch

    context = engine.create_execution_context()
    pixel_values = pixel_values.contiguous()
    context.set_input_shape(INPUT_NAME, tuple(pixel_values.shape))
    context.set_tensor_address(INPUT_NAME, pixel_values.data_ptr())
    outputs = []
    for name in OUTPUT_NAMES:
        output = torch.empty(tuple(context.get_tensor_shape(name)), device=pixel_values.device, dtype=torch.float32)
        context.set_tensor_address(name, output.data_ptr())
        outputs.append(output)
    stream = torch.cuda.current_stream(pixel_values.device)
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed.")
    stream.synchronize()
    return tuple(outputs)


def run_tensorrt(tensorrt, onnx_path, pixel_values):
    """Build an engine for exactly `pixel_values`'s shape and run it; CPU tensors in and out (for tests)."""
    shape = tuple(pixel_values.shape)
    engine = build_engine(onnx_path, min_shape=shape, opt_shape=shape, max_shape=shape, tensorrt=tensorrt)
    return tuple(output.cpu() for output in run_engine(engine, pixel_values.cuda().float()))
