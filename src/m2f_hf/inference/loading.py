"""Load a model and its image processor for segmentation from whatever a user names: one of our checkpoint folders,
a transformers-native Mask2Former checkpoint (converted on load), a Hub id, or the bundled default model."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# A Hub repo id: "name" or "owner/name" of letters, digits, "-", "_", "."; anything else must be a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DEFAULT_MODEL_NAME = "m2f_hf default model"


class ModelLoadError(ValueError):
    """A model, processor or device that cannot be used; the message says which and why (shown as is)."""


@dataclass
class LoadedModel:
    """A model in evaluation mode on its device, its image processor, and where it came from."""

    model: object
    processor: object
    source: str  # as given by the user, or DEFAULT_MODEL_NAME (reported in the JSON); " [bfloat16]" / " [int8]" added

    @property
    def is_default_model(self) -> bool:
        return self.source.split(" [")[0] == DEFAULT_MODEL_NAME

    @property
    def device(self):
        # PreTrainedModel and the onnxruntime model class (m2f_hf.export.M2FOnnxModel) both say where inputs go
        return self.model.device

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.model.config.id2label.items()}

    @property
    def category_ids(self) -> list[int] | None:
        """Per class index, the training dataset's category id (`config.dataset_category_ids`); None: the index."""
        return getattr(self.model.config, "dataset_category_ids", None)

    @property
    def thing_ids(self) -> list[int] | None:
        """Class indices of the thing classes (`config.thing_ids`); None when the config does not know them."""
        return getattr(self.model.config, "thing_ids", None)


def resolve_device(name: str):
    """`auto` (CUDA when available), `cpu` or `cuda` as a torch device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ModelLoadError(f"device must be one of auto, cpu, cuda; got {name!r}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device cuda was asked for but torch sees no CUDA device; use cpu or auto.")
    return torch.device(name)


def _load_onnx_folder(path: str, source: str, device) -> LoadedModel:
    """A folder exported by `m2f-export` (model.onnx + config.json + preprocessor_config.json), run by onnxruntime:
    on its CPU provider, or CUDA's (then the CPU's for what CUDA lacks) when `device` is a CUDA device."""
    from ..image_processing_m2f import M2FImageProcessor

    try:
        from ..export.runtime import CPU_PROVIDER, CUDA_PROVIDER, M2FOnnxModel, OnnxModelError
    except ImportError as error:  # onnxruntime missing
        raise ModelLoadError(
            f"model {source!r} is an exported ONNX folder; running it needs onnxruntime "
            f'(pip install "m2f_hf[export]"): {error}'
        ) from error
    import onnxruntime

    providers = [CPU_PROVIDER]
    if device.type == "cuda":
        if CUDA_PROVIDER in onnxruntime.get_available_providers():
            providers.insert(0, CUDA_PROVIDER)
        else:
            import warnings

            warnings.warn(
                f"model {source!r}: this onnxruntime has no {CUDA_PROVIDER} (pip install onnxruntime-gpu); running the "
                "exported model on the CPU.",
                stacklevel=3,
            )
    try:
        model = M2FOnnxModel.from_pretrained(path, providers=providers)
    except OnnxModelError as error:
        raise ModelLoadError(f"model {source!r}: {error}") from error
    try:
        processor = M2FImageProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(
            f"cannot load the image processor of {source!r} (preprocessor_config.json): {error}"
        ) from error
    return LoadedModel(model=model, processor=processor, source=source)


def _model_type(spec: str, local: bool) -> str | None:
    """`model_type` of the checkpoint's config.json (a local folder or a Hub repo)."""
    if local:
        config_file = Path(spec) / "config.json"
        if not config_file.is_file():
            raise ModelLoadError(f"model {spec!r} is a folder without config.json; expected a checkpoint directory.")
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = hf_hub_download(spec, "config.json")
        except Exception as error:  # offline, unknown repo, gated repo: all end with the Hub's reason
            reason = str(error).splitlines()[0] if str(error) else ""
            raise ModelLoadError(
                f"model {spec!r} is not a local folder, and its config.json could not be fetched from the Hugging "
                f"Face Hub ({type(error).__name__}: {reason})."
            ) from error
    try:
        with open(config_file) as handle:
            return json.load(handle).get("model_type")
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {config_file} of model {spec!r}: {error}") from error


def _to_precision(model, dtype: str | None, device):
    """The loaded float32 model in `dtype` (None / float32, bfloat16, int8: m2f_hf.export.precision)."""
    if dtype is None or dtype == "float32":
        return model
    from ..export.precision import check_precision, to_precision

    try:
        check_precision(dtype)
    except ValueError as error:
        raise ModelLoadError(str(error)) from error
    if dtype == "int8" and device.type != "cpu":
        raise ModelLoadError(f"dtype int8 (dynamic quantisation) runs on the CPU; the device is {device.type}.")
    return to_precision(model, dtype)


def load_segmentation_model(spec: str | None, device="cpu", dtype: str | None = None) -> LoadedModel:
    """Our checkpoint, a transformers-native one (converted on load), or the bundled default model when `spec` is
    None; in evaluation mode, on `device` (a torch device or `auto` / `cpu` / `cuda`), in `dtype` (None or
    "float32", "bfloat16", "int8": m2f_hf.export.precision; post-processing stays float32).

    Raises:
        ModelLoadError: no such folder or Hub repo, a folder without config.json, a broken checkpoint or processor.
    """
    from ..image_processing_m2f import M2FImageProcessor
    from ..modeling_m2f import M2FForUniversalSegmentation
    from ..resources import default_model_path

    if isinstance(device, str):
        device = resolve_device(device)
    if spec is None:
        try:
            path = str(default_model_path())
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from error
        source = DEFAULT_MODEL_NAME
    else:
        path = os.path.expanduser(spec)
        source = spec
    local = os.path.exists(path)
    if not local and (spec is None or not _HUB_ID.match(path)):
        raise ModelLoadError(f"model {spec!r}: no such file or directory (and not a Hub id such as 'owner/name').")
    if local and not os.path.isdir(path):
        raise ModelLoadError(f"model {spec!r} is a file; expected a checkpoint directory with config.json.")
    if local and os.path.isfile(os.path.join(path, "model.onnx")):
        if dtype not in (None, "float32"):
            raise ModelLoadError(
                f"dtype {dtype} is for PyTorch checkpoints; the exported ONNX folder {source!r} runs in the precision "
                "it was exported in (quantise it with m2f_hf.export.quantize_onnx_int8 for int8)."
            )
        return _load_onnx_folder(path, source, device)
    model_type = _model_type(path, local)
    try:
        if model_type == "mask2former":
            from ..convert import from_transformers_pretrained

            model = from_transformers_pretrained(path)
        else:
            model = M2FForUniversalSegmentation.from_pretrained(path)
    except ModelLoadError:
        raise
    except Exception as error:  # a broken checkpoint: say which and why, without a traceback
        raise ModelLoadError(f"cannot load the model {source!r}: {type(error).__name__}: {error}") from error
    try:
        processor = M2FImageProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        raise ModelLoadError(
            f"cannot load the image processor of {source!r} (preprocessor_config.json): {error}"
        ) from error
    model = _to_precision(model.to(device).eval(), dtype, device)
    if dtype not in (None, "float32"):
        # the JSON's "model" names the precision, so resuming never mixes results of two precisions
        source = f"{source} [{dtype}]"
    return LoadedModel(model=model, processor=processor, source=source)
