"""Convert the original Detectron2 Mask2Former checkpoints (`model_final_*.pkl`) to m2f_hf, and back.

Every key goes through one table of templates that reads both ways; a checkpoint key that no rule maps, or a key of
ours that no checkpoint key fills, is an error (nothing is dropped silently). Three structural changes:

* the original's `nn.MultiheadAttention` (transformer decoder) and the Swin `qkv` projections pack q, k and v in one
  matrix, which we split along the output dimension;
* Detectron2's ResNet uses FrozenBatchNorm2d (weight, bias, running mean and variance, eps 1e-5, no counter), which
  is exactly an inference-mode `nn.BatchNorm2d` with eps 1e-5: its `num_batches_tracked` counters, absent from
  FrozenBN checkpoints, are set to 0 (the SyncBN checkpoints carry theirs, which are kept);
* transformers' SwinBackbone carries a final LayerNorm it never applies; it is set to the identity;
* buffers the original stores but we recompute (Swin's `relative_position_index`, the loss's `empty_weight`) are
  checked against what our model computes rather than copied, so a checkpoint that disagrees is refused.

The `.pkl` is read with a restricted unpickler that only constructs plain containers and numpy arrays: a pickle can
run arbitrary code when loaded, and these files come from the network.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..configuration_m2f import M2FConfig
from .model_zoo import ZooEntry, get_zoo_entry

logger = logging.getLogger(__name__)

# Detectron2's FrozenBatchNorm2d default; transformers' ResNet builds nn.BatchNorm2d with the same eps.
FROZEN_BN_EPS = 1e-5


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the config it is converted with."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle that tries to construct something other than plain containers and numpy arrays."""


class ShapeMismatchError(CheckpointError):
    """A checkpoint tensor whose shape differs from the one the config gives our model."""


class UnsupportedBackboneError(CheckpointError):
    """A backbone that has no exact equivalent among the backbones our model can build."""


# ----------------------------------------------------------------------------------------------------------------
# Reading the pickle
# ----------------------------------------------------------------------------------------------------------------

# The globals a Detectron2 `.pkl` of numpy arrays needs: numpy's array/dtype/scalar reconstructors under both numpy 1
# (`numpy.core`) and numpy 2 (`numpy._core`) module names, OrderedDict, and `_codecs.encode`, which is how Python 3
# pickles `bytes` (the arrays' raw buffers) at protocol 2.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only [`_ALLOWED_GLOBALS`]; anything else raises [`UnsafePickleError`] before it is
    imported or called."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"the checkpoint asks to construct {module}.{name}, which a Detectron2 weights file never needs; "
                "refusing to load it (only plain containers and numpy arrays are allowed)."
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on `numpy.core` imports
            return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"the checkpoint uses a persistent id ({str(pid)[:50]!r}), as torch.save files do; a Detectron2 .pkl "
            "holds plain numpy arrays."
        )


def _as_array(key: str, value) -> np.ndarray:
    if isinstance(value, (np.ndarray, np.generic, int, float)) and not isinstance(value, bool):
        array = np.asarray(value)
    elif isinstance(value, torch.Tensor):
        array = value.detach().cpu().numpy()
    else:
        raise CheckpointError(f"checkpoint entry {key!r} is a {type(value).__name__}, expected a numpy array.")
    if array.dtype.kind not in "fiu":
        raise CheckpointError(
            f"checkpoint entry {key!r} has dtype {array.dtype}, expected a floating-point or integer array."
        )
    return array


def load_detectron2_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Read the weights of a Detectron2 `.pkl` checkpoint with [`RestrictedUnpickler`].

    Accepts the model zoo layout `{"model": {name: array}, "__author__": ..., ...}` and a bare `{name: array}` dict.

    Raises:
        CheckpointError: the file is missing, not a pickle (e.g. a zip `.pth`), or holds no weights dict.
        UnsafePickleError: the pickle tries to construct anything but containers and numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint={str(path)!r} does not exist or is not a file.")
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"checkpoint={str(path)!r} is a zip archive (a torch.save `.pth` file?), not a Detectron2 `.pkl` pickle; "
            "download the model zoo's `model_final_*.pkl`."
        )
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as error:  # the pickle module raises many types on garbage input
        raise CheckpointError(
            f"checkpoint={str(path)!r} is not a readable pickle ({type(error).__name__}: {error}); expected a "
            "Detectron2 `model_final_*.pkl`."
        ) from error
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        weights = obj["model"]
        extra = sorted(str(k) for k in obj if k != "model")
        if extra:
            logger.info("checkpoint metadata entries (not weights): %s", extra)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, (np.ndarray, np.generic)) for v in obj.values()):
        weights = obj
    else:
        raise CheckpointError(
            f"checkpoint={str(path)!r} holds a {type(obj).__name__} without a 'model' dict of arrays; expected the "
            "Detectron2 layout {'model': {name: array}}."
        )
    return {str(key): _as_array(str(key), value) for key, value in weights.items()}


# ----------------------------------------------------------------------------------------------------------------
# The key table
# ----------------------------------------------------------------------------------------------------------------

# Named alternations a template may use; any other `{field}` is a non-negative integer.
_FIELD_PATTERNS = {
    "bn": "weight|bias|running_mean|running_var|num_batches_tracked",
    "wb": "weight|bias",
    "attn": "sampling_offsets|attention_weights|value_proj|output_proj",
    "qkv": "q|k|v",
}


@dataclass(frozen=True)
class _Rule:
    """`original` <-> `ours` key templates. Integer fields map by `offsets` (ours = original + offset) or, for the
    pixel decoder's FPN levels, by `reverse_fpn` (ours = num_fpn_levels - original). `split` marks packed q/k/v
    tensors: `ours` then contains `{qkv}`."""

    original: str
    ours: str
    offsets: dict[str, int] = field(default_factory=dict)
    reverse_fpn: tuple[str, ...] = ()
    split: bool = False

    def __post_init__(self):
        object.__setattr__(self, "_original_re", _compile(self.original))
        object.__setattr__(self, "_ours_re", _compile(self.ours))

    def _convert(self, match: re.Match, template: str, sign: int, num_fpn: int) -> str:
        values = {}
        for name, value in match.groupdict().items():
            if name in _FIELD_PATTERNS:
                values[name] = value
            elif name in self.reverse_fpn:
                values[name] = str(num_fpn - int(value))
            else:
                values[name] = str(int(value) + sign * self.offsets.get(name, 0))
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)

    def forward(self, key: str, num_fpn: int) -> str | None:
        match = self._original_re.fullmatch(key)
        return None if match is None else self._convert(match, self.ours, +1, num_fpn)

    def backward(self, key: str, num_fpn: int) -> tuple[str, str | None] | None:
        """Original key (and the q/k/v part, for split rules) of one of our keys."""
        match = self._ours_re.fullmatch(key)
        if match is None:
            return None
        return self._convert(match, self.original, -1, num_fpn), match.groupdict().get("qkv")


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pattern += re.escape(part)
        else:
            pattern += f"(?P<{part}>{_FIELD_PATTERNS.get(part, r'[0-9]+')})"
    return re.compile(pattern)


_B = "model.backbone.body."
_RESNET_RULES = [
    _Rule("backbone.stem.conv1.weight", _B + "embedder.embedder.convolution.weight"),
    _Rule("backbone.stem.conv1.norm.{bn}", _B + "embedder.embedder.normalization.{bn}"),
    # res2..res5 are transformers' stages 0..3; conv1..conv3 its layer.0..layer.2
    _Rule(
        "backbone.res{stage}.{block}.conv{conv}.weight",
        _B + "encoder.stages.{stage}.layers.{block}.layer.{conv}.convolution.weight",
        offsets={"stage": -2, "conv": -1},
    ),
    _Rule(
        "backbone.res{stage}.{block}.conv{conv}.norm.{bn}",
        _B + "encoder.stages.{stage}.layers.{block}.layer.{conv}.normalization.{bn}",
        offsets={"stage": -2, "conv": -1},
    ),
    _Rule(
        "backbone.res{stage}.{block}.shortcut.weight",
        _B + "encoder.stages.{stage}.layers.{block}.shortcut.convolution.weight",
        offsets={"stage": -2},
    ),
    _Rule(
        "backbone.res{stage}.{block}.shortcut.norm.{bn}",
        _B + "encoder.stages.{stage}.layers.{block}.shortcut.normalization.{bn}",
        offsets={"stage": -2},
    ),
]

_SB = "backbone.layers.{layer}.blocks.{block}."
_OB = _B + "swin.encoder.layers.{layer}.blocks.{block}."
_SWIN_RULES = [
    _Rule("backbone.patch_embed.proj.{wb}", _B + "swin.embeddings.patch_embeddings.projection.{wb}"),
    _Rule("backbone.patch_embed.norm.{wb}", _B + "swin.embeddings.norm.{wb}"),
    _Rule(_SB + "norm1.{wb}", _OB + "layernorm_before.{wb}"),
    _Rule(_SB + "attn.qkv.{wb}", _OB + "attention.{qkv}_proj.{wb}", split=True),
    _Rule(_SB + "attn.proj.{wb}", _OB + "attention.o_proj.{wb}"),
    _Rule(
        _SB + "attn.relative_position_bias_table",
        _OB + "attention.relative_position_bias.relative_position_bias_table",
    ),
    _Rule(_SB + "norm2.{wb}", _OB + "layernorm_after.{wb}"),
    _Rule(_SB + "mlp.fc1.{wb}", _OB + "mlp.fc1.{wb}"),
    _Rule(_SB + "mlp.fc2.{wb}", _OB + "mlp.fc2.{wb}"),
    _Rule(
        "backbone.layers.{layer}.downsample.reduction.weight",
        _B + "swin.encoder.layers.{layer}.downsample.reduction.weight",
    ),
    _Rule("backbone.layers.{layer}.downsample.norm.{wb}", _B + "swin.encoder.layers.{layer}.downsample.norm.{wb}"),
    # the per-output LayerNorms norm0..norm3 normalise the res2..res5 maps: transformers' stage1..stage4
    _Rule("backbone.norm{stage}.{wb}", _B + "hidden_states_norms.stage{stage}.{wb}", offsets={"stage": 1}),
]

_PD, _OPD = "sem_seg_head.pixel_decoder.", "model.pixel_decoder."
_EL, _OEL = _PD + "transformer.encoder.layers.{layer}.", _OPD + "layers.{layer}."
_PR, _OPR = "sem_seg_head.predictor.", "model.transformer_decoder."
_HEAD_RULES = [
    # pixel decoder: input projections are ordered coarsest level first in both
    _Rule(_PD + "input_proj.{level}.{module}.{wb}", _OPD + "input_projections.{level}.{module}.{wb}"),
    _Rule(_PD + "transformer.level_embed", _OPD + "level_embed"),
    _Rule(_EL + "self_attn.{attn}.{wb}", _OEL + "self_attn.{attn}.{wb}"),
    _Rule(_EL + "norm1.{wb}", _OEL + "self_attn_layer_norm.{wb}"),
    _Rule(_EL + "linear1.{wb}", _OEL + "fc1.{wb}"),
    _Rule(_EL + "linear2.{wb}", _OEL + "fc2.{wb}"),
    _Rule(_EL + "norm2.{wb}", _OEL + "final_layer_norm.{wb}"),
    _Rule(_PD + "mask_features.{wb}", _OPD + "mask_projection.{wb}"),
    # FPN: the original numbers adapter_/layer_ from 1 at the finest level; ours run coarse to fine from 0
    _Rule(_PD + "adapter_{fpn}.weight", _OPD + "lateral_convs.{fpn}.0.weight", reverse_fpn=("fpn",)),
    _Rule(_PD + "adapter_{fpn}.norm.{wb}", _OPD + "lateral_convs.{fpn}.1.{wb}", reverse_fpn=("fpn",)),
    _Rule(_PD + "layer_{fpn}.weight", _OPD + "output_convs.{fpn}.0.weight", reverse_fpn=("fpn",)),
    _Rule(_PD + "layer_{fpn}.norm.{wb}", _OPD + "output_convs.{fpn}.1.{wb}", reverse_fpn=("fpn",)),
    # transformer decoder
    _Rule(_PR + "query_feat.weight", _OPR + "query_features.weight"),
    _Rule(_PR + "query_embed.weight", _OPR + "query_position.weight"),
    _Rule(_PR + "level_embed.weight", _OPR + "level_embed.weight"),
    _Rule(_PR + "input_proj.{level}.{wb}", _OPR + "input_projections.{level}.{wb}"),
    _Rule(
        _PR + "transformer_self_attention_layers.{layer}.self_attn.in_proj_{wb}",
        _OPR + "layers.{layer}.self_attn.{qkv}_proj.{wb}",
        split=True,
    ),
    _Rule(
        _PR + "transformer_self_attention_layers.{layer}.self_attn.out_proj.{wb}",
        _OPR + "layers.{layer}.self_attn.out_proj.{wb}",
    ),
    _Rule(
        _PR + "transformer_self_attention_layers.{layer}.norm.{wb}", _OPR + "layers.{layer}.self_attn_layer_norm.{wb}"
    ),
    _Rule(
        _PR + "transformer_cross_attention_layers.{layer}.multihead_attn.in_proj_{wb}",
        _OPR + "layers.{layer}.cross_attn.{qkv}_proj.{wb}",
        split=True,
    ),
    _Rule(
        _PR + "transformer_cross_attention_layers.{layer}.multihead_attn.out_proj.{wb}",
        _OPR + "layers.{layer}.cross_attn.out_proj.{wb}",
    ),
    _Rule(
        _PR + "transformer_cross_attention_layers.{layer}.norm.{wb}",
        _OPR + "layers.{layer}.cross_attn_layer_norm.{wb}",
    ),
    _Rule(_PR + "transformer_ffn_layers.{layer}.linear1.{wb}", _OPR + "layers.{layer}.fc1.{wb}"),
    _Rule(_PR + "transformer_ffn_layers.{layer}.linear2.{wb}", _OPR + "layers.{layer}.fc2.{wb}"),
    _Rule(_PR + "transformer_ffn_layers.{layer}.norm.{wb}", _OPR + "layers.{layer}.final_layer_norm.{wb}"),
    _Rule(_PR + "decoder_norm.{wb}", _OPR + "layer_norm.{wb}"),
    _Rule(_PR + "mask_embed.layers.{layer}.{wb}", _OPR + "mask_embed.layers.{layer}.{wb}"),
    _Rule(_PR + "class_embed.{wb}", "class_predictor.{wb}"),
]

# Original buffers we recompute instead of copying; `_check_derived` compares them with ours.
_RELATIVE_INDEX_RE = re.compile(r"backbone\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index")
_EMPTY_WEIGHT = "criterion.empty_weight"
_PIXEL_STATS = ("pixel_mean", "pixel_std")  # non-persistent in the original, but accepted and checked if present
_COUNTER_SUFFIX = ".num_batches_tracked"
# transformers' SwinBackbone holds SwinModel's final LayerNorm but never applies it (each stage goes through
# `hidden_states_norms` instead); the original has no such norm, so it is set to the identity (ones, zeros).
_DEAD_TARGET_RE = re.compile(re.escape(_B) + r"swin\.layernorm\.(weight|bias)")


def _rules_for(config: M2FConfig) -> list[_Rule]:
    backbone_type = _backbone_type(config)
    return (_RESNET_RULES if backbone_type == "resnet" else _SWIN_RULES) + _HEAD_RULES


def _backbone_type(config: M2FConfig) -> str:
    backbone_type = getattr(config.backbone_config, "model_type", None)
    if backbone_type not in ("resnet", "swin"):
        raise UnsupportedBackboneError(
            f"config has backbone {backbone_type or config.timm_backbone!r}; the Detectron2 converter maps the "
            "original ResNet ('resnet') and Swin ('swin') backbones only."
        )
    return backbone_type


def _expected_state(config: M2FConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of our model's state dict for `config`, built on the meta device (no memory)."""
    from ..modeling_m2f import M2FForUniversalSegmentation

    with torch.device("meta"):
        model = M2FForUniversalSegmentation(config)
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def _swin_relative_position_index(window_size: int) -> np.ndarray:
    """Index of each (query, key) pair of a window into the relative-position bias table (Swin paper 3.2)."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + (window_size - 1)  # (2, W*W, W*W), shifted to >= 0
    return (relative[0] * (2 * window_size - 1) + relative[1]).astype(np.int64)


def _check_derived(key: str, array: np.ndarray, config: M2FConfig, pixel_stats: Mapping[str, np.ndarray] | None):
    """Compare an original buffer that we recompute with our value; raise `CheckpointError` if they differ."""
    if _RELATIVE_INDEX_RE.fullmatch(key):
        expected = _swin_relative_position_index(config.backbone_config.window_size)
        what = f"the relative-position index of window size {config.backbone_config.window_size}"
    elif key == _EMPTY_WEIGHT:
        expected = np.ones(config.num_labels + 1, dtype=np.float32)
        expected[-1] = config.no_object_weight
        what = f"ones with the no-object weight {config.no_object_weight} last ({config.num_labels} classes + 1)"
    elif pixel_stats is not None and key in pixel_stats:
        expected = np.asarray(pixel_stats[key], dtype=np.float32).reshape(array.shape if array.size == 3 else (-1,))
        what = f"the {key} of the preprocessor ({list(np.asarray(pixel_stats[key]).ravel())})"
    else:
        return False
    if array.shape != expected.shape:
        raise ShapeMismatchError(
            f"checkpoint key {key!r} has shape {tuple(array.shape)}, expected {tuple(expected.shape)} ({what})."
        )
    if not np.allclose(array.astype(np.float64), expected.astype(np.float64), rtol=0, atol=1e-5):
        raise CheckpointError(f"checkpoint key {key!r} does not hold {what}; the checkpoint does not fit the config.")
    return True


def _num_fpn_levels(keys) -> int:
    return sum(1 for k in keys if re.fullmatch(re.escape(_PD) + r"adapter_\d+\.weight", k))


def _check_backbone_layout(keys: list[str], config: M2FConfig) -> None:
    if any(k.startswith(("backbone.stem.conv2.", "backbone.stem.conv3.")) for k in keys):
        raise UnsupportedBackboneError(
            "the checkpoint's ResNet has a DeepLab stem (backbone.stem.conv1/conv2/conv3: three 3x3 convolutions, "
            "'R101c'). Neither transformers' ResNet nor a timm ResNet reproduces it together with Detectron2's "
            "multi-grid res5, so it cannot be converted exactly; refusing rather than converting it wrongly."
        )
    has_swin = any(k.startswith("backbone.patch_embed.") for k in keys)
    has_resnet = any(k.startswith("backbone.stem.") for k in keys)
    backbone_type = _backbone_type(config)
    if (backbone_type == "swin" and has_resnet) or (backbone_type == "resnet" and has_swin):
        found = "a Swin" if has_swin else "a ResNet"
        raise CheckpointError(
            f"the checkpoint has {found} backbone but the config builds a {backbone_type!r} backbone; pick the "
            "config the checkpoint was trained with."
        )


def state_dict_from_detectron2(
    weights: Mapping[str, np.ndarray | torch.Tensor],
    config: M2FConfig,
    *,
    pixel_mean: tuple[float, ...] | None = None,
    pixel_std: tuple[float, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """Map an original Mask2Former state dict (numpy arrays or tensors, Detectron2 names) to our state dict.

    Float arrays (float16/32/64) become our parameters' dtype; integer counters (`num_batches_tracked`) stay int64.

    Args:
        weights: the original `"model"` dict, e.g. from [`load_detectron2_checkpoint`].
        config: the config of the target model (see [`config_from_zoo`]).
        pixel_mean, pixel_std: the 0-255 normalisation of the config, checked against `pixel_mean`/`pixel_std`
            entries when the checkpoint has them.

    Raises:
        UnsupportedBackboneError: a DeepLab-stem ResNet, or a config backbone other than ResNet/Swin.
        ShapeMismatchError: a tensor's shape differs from what the config gives (names the key and both shapes).
        CheckpointError: checkpoint keys that no rule maps, or keys of ours that nothing fills.
    """
    keys = list(weights)
    _check_backbone_layout(keys, config)
    rules = _rules_for(config)
    num_fpn = _num_fpn_levels(keys)
    expected = _expected_state(config)
    pixel_stats = None
    if pixel_mean is not None and pixel_std is not None:
        pixel_stats = {"pixel_mean": np.asarray(pixel_mean), "pixel_std": np.asarray(pixel_std)}

    converted: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key in keys:
        array = _as_array(key, weights[key])
        if _check_derived(key, array, config, pixel_stats):
            continue
        rule, target = next(((r, t) for r in rules if (t := r.forward(key, num_fpn)) is not None), (None, None))
        if target is None:
            unused.append(key)
            continue
        tensor = torch.from_numpy(np.array(array))  # copy: pickled arrays may be read-only
        parts = (
            {target.replace("{qkv}", name): part for name, part in zip("qkv", tensor.chunk(3, dim=0))}
            if rule.split
            else {target: tensor}
        )
        for name, part in parts.items():
            if name not in expected:
                unused.append(key)
                break
            shape, dtype = expected[name]
            if tuple(part.shape) != shape:
                shown = f"{tuple(tensor.shape)} (q/k/v packed)" if rule.split else f"{tuple(part.shape)}"
                want = f"3 x {shape}" if rule.split else f"{shape}"
                raise ShapeMismatchError(
                    f"checkpoint key {key!r} has shape {shown}, but {name!r} of the config's model needs {want}; "
                    "does the checkpoint match the config (backbone, number of queries, number of classes)?"
                )
            if dtype.is_floating_point != part.is_floating_point():
                raise CheckpointError(
                    f"checkpoint key {key!r} has dtype {array.dtype}, but {name!r} is {dtype}; expected "
                    f"{'a floating-point' if dtype.is_floating_point else 'an integer'} array."
                )
            converted[name] = part.to(dtype).contiguous()

    missing = [k for k in expected if k not in converted]
    for key in [k for k in missing if k.endswith(_COUNTER_SUFFIX)]:
        # FrozenBN keeps no counter; it is unused at inference and in eval-mode fine-tuning.
        converted[key] = torch.zeros((), dtype=torch.int64)
    for key in [k for k in missing if _DEAD_TARGET_RE.fullmatch(k)]:
        shape, dtype = expected[key]
        converted[key] = (torch.ones if key.endswith("weight") else torch.zeros)(shape, dtype=dtype)
    missing = [k for k in missing if not k.endswith(_COUNTER_SUFFIX) and not _DEAD_TARGET_RE.fullmatch(k)]
    if unused or missing:
        message = []
        if unused:
            message.append(f"{len(unused)} checkpoint key(s) have no place in the config's model: {unused[:20]}")
        if missing:
            message.append(f"{len(missing)} key(s) of the config's model have no checkpoint entry: {missing[:20]}")
        raise CheckpointError("; ".join(message) + ". Does the checkpoint match the config?")
    return {key: converted[key] for key in expected}


def state_dict_to_detectron2(
    state_dict: Mapping[str, torch.Tensor], config: M2FConfig, *, include_bn_counters: bool = False
) -> dict[str, np.ndarray]:
    """Inverse of [`state_dict_from_detectron2`]: our state dict in the original layout, as numpy arrays.

    The recomputed buffers (Swin `relative_position_index`, `criterion.empty_weight`) are regenerated. BatchNorm
    counters are dropped unless `include_bn_counters` (FrozenBN checkpoints have none; SyncBN ones do).

    Raises `CheckpointError` naming every key of ours that no rule maps.
    """
    rules = _rules_for(config)
    num_fpn = sum(1 for k in state_dict if re.fullmatch(re.escape(_OPD) + r"lateral_convs\.\d+\.0\.weight", k))
    converted: dict[str, np.ndarray] = {}
    packed: dict[str, dict[str, np.ndarray]] = {}
    unused = []
    for key, tensor in state_dict.items():
        if (key.endswith(_COUNTER_SUFFIX) and not include_bn_counters) or _DEAD_TARGET_RE.fullmatch(key):
            continue
        for rule in rules:
            found = rule.backward(key, num_fpn)
            if found is None:
                continue
            original, part = found
            array = tensor.detach().cpu().numpy()
            if rule.split:
                packed.setdefault(original, {})[part] = array
            else:
                converted[original] = array
            break
        else:
            unused.append(key)
    if unused:
        raise CheckpointError(f"{len(unused)} m2f_hf key(s) have no Detectron2 name: {unused[:20]}")
    for original, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{original}: expected q, k and v projections, found {sorted(parts)}")
        converted[original] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    if _backbone_type(config) == "swin":
        index = _swin_relative_position_index(config.backbone_config.window_size)
        for layer, depth in enumerate(config.backbone_config.depths):
            for block in range(depth):
                converted[f"backbone.layers.{layer}.blocks.{block}.attn.relative_position_index"] = index.copy()
    empty_weight = np.ones(config.num_labels + 1, dtype=np.float32)
    empty_weight[-1] = config.no_object_weight
    converted[_EMPTY_WEIGHT] = empty_weight
    return converted


# ----------------------------------------------------------------------------------------------------------------
# Configs and the converted folder
# ----------------------------------------------------------------------------------------------------------------


def backbone_config_for(entry: ZooEntry) -> dict:
    """The transformers backbone config (as a dict) that reproduces the entry's original backbone."""
    kwargs = entry.backbone_kwargs
    kwargs["out_features"] = ["stage1", "stage2", "stage3", "stage4"]
    if kwargs["model_type"] == "resnet":
        # Detectron2's BottleneckBlock with STRIDE_IN_1X1=False strides in the 3x3 convolution, which is
        # transformers' `downsample_in_bottleneck=False`; its stem is the 7x7/2 conv + 3x3/2 max pool of both.
        kwargs.update(
            hidden_sizes=[256, 512, 1024, 2048],
            embedding_size=64,
            layer_type="bottleneck",
            hidden_act="relu",
            downsample_in_first_stage=False,
            downsample_in_bottleneck=False,
        )
    else:
        kwargs.update(patch_size=4, mlp_ratio=4.0, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-5)
        kwargs.update(use_absolute_embeddings=False, drop_path_rate=0.3)  # the configs' APE False, DROP_PATH_RATE 0.3
    return kwargs


def config_from_zoo(entry: ZooEntry | str) -> M2FConfig:
    """Our config for an original model zoo entry (or its name)."""
    entry = get_zoo_entry(entry) if isinstance(entry, str) else entry
    meta = entry.dataset
    # The heads' sizes are those every original config sets (CONVS_DIM, MASK_DIM, HIDDEN_DIM 256; NHEADS 8;
    # DIM_FEEDFORWARD 2048; DEC_LAYERS 10 = 9 layers + the learnable-query prediction; 6 MSDeformAttn layers with
    # the pixel decoder's built-in 8 heads, 4 points and 1024-wide FFN).
    return M2FConfig(
        backbone_config=backbone_config_for(entry),
        feature_size=256,
        mask_feature_size=256,
        hidden_dim=256,
        num_queries=entry.num_queries,
        decoder_layers=9,
        num_attention_heads=8,
        dim_feedforward=2048,
        encoder_layers=6,
        encoder_attention_heads=8,
        encoder_feedforward_dim=1024,
        encoder_num_points=4,
        num_feature_levels=3,
        common_stride=4,
        pre_norm=False,
        enforce_input_projection=False,
        no_object_weight=0.1,
        ignore_value=meta.ignore_value,
        id2label=meta.id2label,
        label2id={name: i for i, name in meta.id2label.items()},
        # the model zoo's dataset registrations mark things and stuff; instance inference keeps only things
        thing_ids=meta.thing_ids,
    )


def preprocessor_config_for(entry: ZooEntry) -> dict:
    """Settings of our image processor matching the original test-time pipeline of `entry`.

    The original resizes the shortest edge to MIN_SIZE_TEST (capped by MAX_SIZE_TEST on the longest edge, bilinear)
    and normalises 0-255 RGB with PIXEL_MEAN/PIXEL_STD; our processor rescales to 0-1 first, so mean and std are
    divided by 255. Inputs are padded to a multiple of 32 (the backbone's size divisibility).
    """
    return {
        "image_processor_type": "M2FImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": entry.min_size_test, "longest_edge": entry.max_size_test},
        "resample": 2,  # PIL bilinear, Detectron2's ResizeShortestEdge default
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [m / 255 for m in entry.pixel_mean],
        "image_std": [s / 255 for s in entry.pixel_std],
        "size_divisor": 32,
        "ignore_index": entry.dataset.ignore_value,
        "num_labels": entry.dataset.num_labels,
    }


def write_preprocessor_config(settings: dict, directory: str | Path) -> Path:
    """Save `settings` with our image processor's `save_pretrained` (so its own serialisation is used), or as plain
    JSON when the processor cannot be imported."""
    directory = Path(directory)
    try:
        from ..image_processing_m2f import M2FImageProcessor
    except ImportError:
        logger.warning("m2f_hf.image_processing_m2f is not importable; writing preprocessor_config.json as JSON.")
        path = directory / "preprocessor_config.json"
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return path
    kwargs = {k: v for k, v in settings.items() if k != "image_processor_type"}
    M2FImageProcessor(**kwargs).save_pretrained(directory)
    return directory / "preprocessor_config.json"


def convert_checkpoint(
    checkpoint: str | Path,
    config_name: str,
    dst: str | Path,
    *,
    write_card: bool = True,
    config: M2FConfig | None = None,
) -> Path:
    """Convert an original `.pkl` of the model zoo entry `config_name` into a `from_pretrained` folder `dst`:
    `model.safetensors`, `config.json` (with `id2label`), `preprocessor_config.json` and `README.md`.

    `config` overrides the model config the entry implies (tests use it to convert toy-sized checkpoints).
    """
    from ..modeling_m2f import M2FForUniversalSegmentation

    entry = get_zoo_entry(config_name)
    config = config if config is not None else config_from_zoo(entry)
    weights = load_detectron2_checkpoint(checkpoint)
    state_dict = state_dict_from_detectron2(weights, config, pixel_mean=entry.pixel_mean, pixel_std=entry.pixel_std)
    model = M2FForUniversalSegmentation(config)
    model.load_state_dict(state_dict, strict=True)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    write_preprocessor_config(preprocessor_config_for(entry), dst)
    if write_card:
        from ..modelcard import card_for_zoo_entry

        (dst / "README.md").write_text(card_for_zoo_entry(entry))
    logger.info("converted %s (%d tensors) to %s", config_name, len(weights), dst)
    return dst
