"""Run an exported folder (`model.onnx` + `config.json` + `preprocessor_config.json`) with onnxruntime.

    from m2f_hf import M2FImageProcessor
    from m2f_hf.export import M2FOnnxModel

    model = M2FOnnxModel.from_pretrained("m2f-onnx")
    processor = M2FImageProcessor.from_pretrained("m2f-onnx")
    inputs = processor(images=[image], return_tensors="pt")
    outputs = model(**inputs)  # M2FForUniversalSegmentationOutput, as the PyTorch model returns
    panoptic = processor.post_process_panoptic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]

`M2FOnnxModel` is called like `M2FForUniversalSegmentation` (torch tensors in, our output dataclass out), so the
processor's post-processing, `m2f_hf.inference` (and `m2f-segment --model FOLDER`) and the image-segmentation
pipeline use it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .onnx_export import INPUT_NAME, ONNX_FILE, OUTPUT_NAMES, read_metadata

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class OnnxModelError(ValueError):
    """A folder that is not an exported model, or inputs the exported graph cannot take; says which and why."""


def make_session(path, *, providers=None, num_threads: int | None = None, session_options=None):
    """An onnxruntime `InferenceSession` for `path` (CPU provider by default; `num_threads` intra-op threads)."""
    import onnxruntime as ort

    options = session_options if session_options is not None else ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    available = ort.get_available_providers()
    providers = list(providers) if providers else [CPU_PROVIDER]
    missing = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [name for name in missing if name not in available]
    if missing:
        raise OnnxModelError(f"onnxruntime providers {missing} are not available here; available: {available}.")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def find_onnx_model(path) -> Path | None:
    """`path/model.onnx` when `path` is a folder holding one, else None."""
    candidate = Path(os.path.expanduser(str(path))) / ONNX_FILE
    return candidate if candidate.is_file() else None


class M2FOnnxModel:
    """An exported Mask2Former run by onnxruntime; returns `M2FForUniversalSegmentationOutput`.

    Args:
        session: the onnxruntime `InferenceSession` of `model.onnx`.
        config: the model's `M2FConfig` (labels, thing classes) from the folder's `config.json`.
        size_divisor (`int`, defaults to 32): height and width of inputs must be multiples of it (the exported
            graph's shape arithmetic assumes so; the image processor pads to it).
    """

    main_input_name = INPUT_NAME
    training = False
    # M2FImageSegmentationPipeline accepts it (transformers' own check knows only its model classes)
    m2f_pipeline_compatible = True

    def __init__(self, session, config, *, size_divisor: int = 32, name_or_path: str | None = None) -> None:
        self.session = session
        self.config = config
        self.size_divisor = int(size_divisor)
        self.name_or_path = name_or_path
        self.num_channels = int(getattr(config, "num_channels", 3))

    @classmethod
    def from_pretrained(cls, path, *, providers=None, num_threads: int | None = None, session_options=None):
        """Load an exported folder (what `export_onnx` / `m2f-export` wrote).

        Args:
            path: the folder holding `model.onnx` and `config.json`.
            providers: onnxruntime execution providers in order of preference (default: CPU), e.g.
                `["CUDAExecutionProvider", "CPUExecutionProvider"]`.
            num_threads: intra-op threads of the session (default: onnxruntime's choice, one per core).
            session_options: an `onnxruntime.SessionOptions` to start from.

        Raises:
            OnnxModelError: `path` is not a folder with `model.onnx` and `config.json`, or the graph needs TensorRT.
        """
        from ..configuration_m2f import M2FConfig

        folder = Path(os.path.expanduser(str(path)))
        onnx_path = find_onnx_model(folder)
        if onnx_path is None:
            raise OnnxModelError(
                f"{str(path)!r} is not an exported ONNX model: expected a folder with {ONNX_FILE} (m2f-export writes one)."
            )
        if not (folder / "config.json").is_file():
            raise OnnxModelError(f"{str(path)!r} has {ONNX_FILE} but no config.json (the labels); re-export it.")
        metadata = read_metadata(onnx_path)
        if metadata.get("deform_attn_plugin", "none") != "none":
            raise OnnxModelError(
                f"{onnx_path} uses the {metadata['deform_attn_plugin']} deformable-attention plugin, which onnxruntime "
                "cannot run; build a TensorRT engine from it, or export without --deform-attn-plugin."
            )
        config = M2FConfig.from_pretrained(str(folder))
        session = make_session(
            onnx_path, providers=providers, num_threads=num_threads, session_options=session_options
        )
        size_divisor = int(metadata.get("size_divisor", 32))
        return cls(session, config, size_divisor=size_divisor, name_or_path=str(path))

    # --- what callers of the PyTorch model use -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Inputs and outputs live in host memory (onnxruntime copies to its provider's device itself)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def eval(self) -> M2FOnnxModel:
        return self

    def to(self, *args, **kwargs) -> M2FOnnxModel:
        """Accepts the CPU only (a no-op); choose a GPU with `providers=` when loading."""
        for target in list(args) + list(kwargs.values()):
            if isinstance(target, (str, torch.device)) and torch.device(target).type != "cpu":
                raise OnnxModelError(
                    f"M2FOnnxModel.to({str(target)!r}): an onnxruntime model stays where its providers run; load it with "
                    f"providers=['{CUDA_PROVIDER}', '{CPU_PROVIDER}'] for a GPU."
                )
        return self

    def check_pixel_values(self, pixel_values) -> np.ndarray:
        """`pixel_values` as a float32 (batch, C, H, W) array; `OnnxModelError` naming what is wrong otherwise."""
        if isinstance(pixel_values, torch.Tensor):
            if not pixel_values.is_floating_point():
                raise OnnxModelError(
                    f"pixel_values must be floating point (normalised images), got {pixel_values.dtype}."
                )
            array = pixel_values.detach().to("cpu", torch.float32).numpy()
        elif isinstance(pixel_values, np.ndarray):
            if not np.issubdtype(pixel_values.dtype, np.floating):
                raise OnnxModelError(
                    f"pixel_values must be floating point (normalised images), got {pixel_values.dtype}."
                )
            array = pixel_values.astype(np.float32, copy=False)
        else:
            raise OnnxModelError(
                f"pixel_values must be a torch.Tensor or numpy array, got {type(pixel_values).__name__}."
            )
        if array.ndim != 4:
            raise OnnxModelError(
                f"pixel_values must be (batch, channels, height, width), got shape {tuple(array.shape)}."
            )
        if array.shape[1] != self.num_channels:
            raise OnnxModelError(
                f"pixel_values has {array.shape[1]} channels (shape {tuple(array.shape)}); the exported model expects "
                f"{self.num_channels}."
            )
        height, width = array.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor or height == 0 or width == 0:
            raise OnnxModelError(
                f"pixel_values has height x width {height}x{width}; the exported graph takes sizes that are positive "
                f"multiples of {self.size_divisor} (pad the images, as the image processor does with "
                f"size_divisor={self.size_divisor})."
            )
        return np.ascontiguousarray(array)

    def __call__(self, pixel_values, pixel_mask=None, return_dict: bool = True, **kwargs):
        """Class and mask logits of a normalised, padded batch, as `M2FForUniversalSegmentation.forward` returns them.

        `pixel_mask` is accepted and unused, as in the PyTorch model (padding is cropped off in post-processing);
        asking for what the graph does not compute (labels, hidden states, attentions, auxiliary logits) is an error.
        """
        from ..modeling_m2f import M2FForUniversalSegmentationOutput

        unsupported = sorted(
            name
            for name in (
                "mask_labels",
                "class_labels",
                "output_hidden_states",
                "output_attentions",
                "output_auxiliary_logits",
            )
            if kwargs.get(name)
        )
        if unsupported:
            raise OnnxModelError(
                f"the exported graph computes class and mask logits only; got {', '.join(unsupported)}."
            )
        array = self.check_pixel_values(pixel_values)
        class_logits, mask_logits = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
        output = M2FForUniversalSegmentationOutput(
            class_queries_logits=torch.from_numpy(class_logits), masks_queries_logits=torch.from_numpy(mask_logits)
        )
        return output if return_dict else output.to_tuple()

    forward = __call__

    def __repr__(self) -> str:
        return f"M2FOnnxModel({self.name_or_path!r}, providers={self.providers})"
