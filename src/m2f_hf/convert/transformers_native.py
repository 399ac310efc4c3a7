"""Map transformers' `Mask2FormerForUniversalSegmentation` checkpoints to ours and back.

Every key goes through one table of regular expressions; a key that no rule matches, or a target key that no source
key fills, is an error (nothing is dropped silently). The only structural change is the masked-attention projection:
transformers (like the original) uses `nn.MultiheadAttention` with one packed `in_proj`, we keep q/k/v separate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..configuration_m2f import M2FConfig

_T = "model.pixel_level_module.decoder."
_D = "model.transformer_module."

# (transformers pattern, our replacement); applied to whole keys, first match wins.
_RULES: list[tuple[str, str]] = [
    (r"model\.pixel_level_module\.encoder\.(.+)", r"model.backbone.body.\1"),
    (
        re.escape(_T) + r"input_projections\.(\d+)\.(\d)\.(weight|bias)",
        r"model.pixel_decoder.input_projections.\1.\2.\3",
    ),
    (re.escape(_T) + r"level_embed", r"model.pixel_decoder.level_embed"),
    (re.escape(_T) + r"encoder\.layers\.(\d+)\.(.+)", r"model.pixel_decoder.layers.\1.\2"),
    (re.escape(_T) + r"mask_projection\.(weight|bias)", r"model.pixel_decoder.mask_projection.\1"),
    (re.escape(_T) + r"adapter_(\d+)\.(\d)\.(weight|bias)", r"model.pixel_decoder.lateral_convs.{fpn:\1}.\2.\3"),
    (re.escape(_T) + r"layer_(\d+)\.(\d)\.(weight|bias)", r"model.pixel_decoder.output_convs.{fpn:\1}.\2.\3"),
    (re.escape(_D) + r"queries_embedder\.weight", r"model.transformer_decoder.query_position.weight"),
    (re.escape(_D) + r"queries_features\.weight", r"model.transformer_decoder.query_features.weight"),
    (re.escape(_D) + r"level_embed\.weight", r"model.transformer_decoder.level_embed.weight"),
    (re.escape(_D) + r"input_projections\.(\d+)\.(weight|bias)", r"model.transformer_decoder.input_projections.\1.\2"),
    (
        re.escape(_D) + r"decoder\.layers\.(\d+)\.cross_attn\.in_proj_(weight|bias)",
        r"model.transformer_decoder.layers.\1.cross_attn.{qkv}_proj.\2",
    ),
    (re.escape(_D) + r"decoder\.layers\.(\d+)\.(.+)", r"model.transformer_decoder.layers.\1.\2"),
    (re.escape(_D) + r"decoder\.layernorm\.(weight|bias)", r"model.transformer_decoder.layer_norm.\1"),
    (
        re.escape(_D) + r"decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(weight|bias)",
        r"model.transformer_decoder.mask_embed.layers.\1.\2",
    ),
    (r"class_predictor\.(weight|bias)", r"class_predictor.\1"),
]
# Source keys that carry no weights of ours (the loss's class weights are rebuilt from the config).
_IGNORED = [r"criterion\.empty_weight"]


def _num_fpn_levels(state_dict: Mapping[str, torch.Tensor]) -> int:
    return sum(1 for k in state_dict if re.fullmatch(re.escape(_T) + r"adapter_\d+\.0\.weight", k))


def state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a transformers Mask2Former state dict (ForUniversalSegmentation) to ours.

    Raises `KeyError` naming every source key that no rule maps.
    """
    num_fpn = _num_fpn_levels(state_dict)
    converted: dict[str, torch.Tensor] = {}
    unused = []
    for key, tensor in state_dict.items():
        if any(re.fullmatch(p, key) for p in _IGNORED):
            continue
        for pattern, replacement in _RULES:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            target = match.expand(replacement)
            # transformers numbers FPN adapters fine to coarse from 1; ours run coarse to fine from 0.
            target = re.sub(r"\{fpn:(\d+)\}", lambda m: str(num_fpn - int(m.group(1))), target)
            if "{qkv}" in target:
                for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                    converted[target.replace("{qkv}", name)] = part.clone()
            else:
                converted[target] = tensor
            break
        else:
            unused.append(key)
    if unused:
        raise KeyError(f"{len(unused)} transformers key(s) have no mapping to m2f_hf: {unused[:20]}")
    return converted


_P = "model.pixel_decoder."
_M = "model.transformer_decoder."
# Our pattern -> transformers replacement (the inverse of _RULES).
_REVERSE_RULES: list[tuple[str, str]] = [
    (r"model\.backbone\.body\.(.+)", r"model.pixel_level_module.encoder.\1"),
    (re.escape(_P) + r"input_projections\.(\d+)\.(\d)\.(weight|bias)", _T + r"input_projections.\1.\2.\3"),
    (re.escape(_P) + r"level_embed", _T + "level_embed"),
    (re.escape(_P) + r"layers\.(\d+)\.(.+)", _T + r"encoder.layers.\1.\2"),
    (re.escape(_P) + r"mask_projection\.(weight|bias)", _T + r"mask_projection.\1"),
    (re.escape(_P) + r"lateral_convs\.(\d+)\.(\d)\.(weight|bias)", _T + r"adapter_{fpn:\1}.\2.\3"),
    (re.escape(_P) + r"output_convs\.(\d+)\.(\d)\.(weight|bias)", _T + r"layer_{fpn:\1}.\2.\3"),
    (re.escape(_M) + r"query_position\.weight", _D + "queries_embedder.weight"),
    (re.escape(_M) + r"query_features\.weight", _D + "queries_features.weight"),
    (re.escape(_M) + r"level_embed\.weight", _D + "level_embed.weight"),
    (re.escape(_M) + r"input_projections\.(\d+)\.(weight|bias)", _D + r"input_projections.\1.\2"),
    (
        re.escape(_M) + r"layers\.(\d+)\.cross_attn\.([qkv])_proj\.(weight|bias)",
        _D + r"decoder.layers.\1.cross_attn.in_proj_\3",
    ),
    (
        re.escape(_M) + r"layers\.(\d+)\.cross_attn\.out_proj\.(weight|bias)",
        _D + r"decoder.layers.\1.cross_attn.out_proj.\2",
    ),
    (re.escape(_M) + r"layers\.(\d+)\.(.+)", _D + r"decoder.layers.\1.\2"),
    (re.escape(_M) + r"layer_norm\.(weight|bias)", _D + r"decoder.layernorm.\1"),
    (
        re.escape(_M) + r"mask_embed\.layers\.(\d+)\.(weight|bias)",
        _D + r"decoder.mask_predictor.mask_embedder.\1.0.\2",
    ),
    (r"class_predictor\.(weight|bias)", r"class_predictor.\1"),
]


def state_dict_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of [`state_dict_from_transformers`]; the loss's `criterion.empty_weight` buffer is not produced.

    Raises `KeyError` naming every key of ours that no rule maps.
    """
    num_fpn = sum(1 for k in state_dict if re.fullmatch(re.escape(_P) + r"lateral_convs\.\d+\.0\.weight", k))
    converted: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, torch.Tensor]] = {}
    unused = []
    for key, tensor in state_dict.items():
        for pattern, replacement in _REVERSE_RULES:
            match = re.fullmatch(pattern, key)
            if match is None:
                continue
            target = match.expand(replacement)
            target = re.sub(r"\{fpn:(\d+)\}", lambda m: str(num_fpn - int(m.group(1))), target)
            if "cross_attn.in_proj_" in target:
                packed.setdefault(target, {})[match.group(2)] = tensor
            else:
                converted[target] = tensor
            break
        else:
            unused.append(key)
    if unused:
        raise KeyError(f"{len(unused)} m2f_hf key(s) have no mapping to transformers: {unused[:20]}")
    for target, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"{target}: expected q, k and v projections, found {sorted(parts)}")
        converted[target] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted


# Fields whose name and meaning are the same in both configs.
_SHARED_FIELDS = (
    "feature_size",
    "mask_feature_size",
    "hidden_dim",
    "encoder_feedforward_dim",
    "activation_function",
    "encoder_layers",
    "dropout",
    "dim_feedforward",
    "pre_norm",
    "enforce_input_projection",
    "common_stride",
    "ignore_value",
    "num_queries",
    "no_object_weight",
    "class_weight",
    "mask_weight",
    "dice_weight",
    "train_num_points",
    "oversample_ratio",
    "importance_sample_ratio",
    "init_std",
    "init_xavier_std",
    "use_auxiliary_loss",
    "output_auxiliary_logits",
)


def config_from_transformers(config) -> M2FConfig:
    """Our config from a transformers `Mask2FormerConfig`."""
    if getattr(config, "model_type", None) != "mask2former":
        raise ValueError(f"expected a transformers Mask2FormerConfig (model_type 'mask2former'), got {config!r:.200}")
    kwargs = {name: getattr(config, name) for name in _SHARED_FIELDS}
    kwargs["decoder_layers"] = config.decoder_layers - 1  # transformers counts the learnable-query prediction too
    kwargs["num_attention_heads"] = config.num_attention_heads
    kwargs["encoder_attention_heads"] = config.num_attention_heads
    kwargs["backbone_config"] = config.backbone_config
    kwargs["id2label"] = dict(config.id2label)
    kwargs["label2id"] = {label: int(i) for i, label in config.id2label.items()}
    return M2FConfig(**kwargs)


def config_to_transformers(config: M2FConfig):
    """A transformers `Mask2FormerConfig` from ours (transformers backbones only)."""
    from transformers import Mask2FormerConfig

    if config.backbone_config is None:
        raise ValueError(
            f"timm_backbone={config.timm_backbone!r}: only transformers backbones (backbone_config) can be exported "
            "to the transformers-native format."
        )
    if config.encoder_attention_heads != config.num_attention_heads:
        raise ValueError(
            f"encoder_attention_heads={config.encoder_attention_heads} differs from num_attention_heads="
            f"{config.num_attention_heads}; transformers' Mask2Former has one head count for both."
        )
    if config.num_feature_levels != 3 or config.encoder_num_points != 4:
        raise ValueError(
            f"num_feature_levels={config.num_feature_levels}, encoder_num_points={config.encoder_num_points}: "
            "transformers' Mask2Former hard-codes 3 levels and 4 points."
        )
    kwargs = {name: getattr(config, name) for name in _SHARED_FIELDS}
    kwargs["decoder_layers"] = config.decoder_layers + 1
    kwargs["num_attention_heads"] = config.num_attention_heads
    kwargs["backbone_config"] = config.backbone_config
    kwargs["id2label"] = dict(config.id2label)
    kwargs["label2id"] = {label: int(i) for i, label in config.id2label.items()}
    return Mask2FormerConfig(**kwargs)


def from_transformers_pretrained(name_or_path: str, **hub_kwargs):
    """Load a transformers-native Mask2Former checkpoint (a directory or a Hub id such as
    `facebook/mask2former-swin-small-coco-instance`) as our [`M2FForUniversalSegmentation`].

    transformers itself reads the files (its on-disk key names differ between versions and from its in-memory names);
    any key of the file that it does not use, or any weight that the file lacks, is an error here, and then every
    in-memory key goes through our mapping table.
    """
    from transformers import Mask2FormerForUniversalSegmentation

    from ..modeling_m2f import M2FForUniversalSegmentation

    try:
        source, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            name_or_path, output_loading_info=True, **hub_kwargs
        )
    except OSError as error:
        raise FileNotFoundError(
            f"cannot read a transformers Mask2Former checkpoint at {name_or_path!r}: {error}"
        ) from error
    missing = [k for k in info.get("missing_keys", []) if k != "criterion.empty_weight"]
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or unexpected or mismatched:
        raise KeyError(
            f"checkpoint {name_or_path!r} does not fit transformers' Mask2Former: missing {missing[:20]}, "
            f"unused {unexpected[:20]}, mismatched shapes {mismatched[:20]}"
        )
    model = M2FForUniversalSegmentation(config_from_transformers(source.config))
    state_dict = state_dict_from_transformers(source.state_dict())
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(
            f"converted checkpoint does not fit the model: missing {missing[:20]}, unexpected {unexpected[:20]}"
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
