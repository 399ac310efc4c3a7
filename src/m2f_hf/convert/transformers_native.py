"""Map transformers' `Mask2FormerForUniversalSegmentation` checkpoints to ours and back.

Every key goes through one table of key templates, read in both directions; a key that no rule matches, or a target key that no source
key fills, is an error (nothing is dropped silently). The only structural change is the masked-attention projection:
transformers (like the original) uses `nn.MultiheadAttention` with one packed `in_proj`, we keep q/k/v separate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from transformers.utils import logging

from ..configuration_m2f import M2FConfig
from .datasets_meta import match_dataset

logger = logging.get_logger(__name__)

_T = "model.pixel_level_module.decoder."
_D = "model.transformer_module."
_P = "model.pixel_decoder."
_M = "model.transformer_decoder."

# One table, read in both directions: (transformers key template, our key template). A `{name}` placeholder stands for
# a key component (_FIELDS); the first template that matches a whole key wins. `{fpn}` counts FPN levels from the
# other end (transformers numbers its adapters fine to coarse from 1, ours run coarse to fine from 0), and `{qkv}`
# appears on our side only: transformers packs the masked-attention projections into one `in_proj`.
_TABLE: list[tuple[str, str]] = [
    ("model.pixel_level_module.encoder.{rest}", "model.backbone.body.{rest}"),
    (_T + "input_projections.{i}.{j}.{wb}", _P + "input_projections.{i}.{j}.{wb}"),
    (_T + "level_embed", _P + "level_embed"),
    (_T + "encoder.layers.{i}.{rest}", _P + "layers.{i}.{rest}"),
    (_T + "mask_projection.{wb}", _P + "mask_projection.{wb}"),
    (_T + "adapter_{fpn}.{j}.{wb}", _P + "lateral_convs.{fpn}.{j}.{wb}"),
    (_T + "layer_{fpn}.{j}.{wb}", _P + "output_convs.{fpn}.{j}.{wb}"),
    (_D + "queries_embedder.weight", _M + "query_position.weight"),
    (_D + "queries_features.weight", _M + "query_features.weight"),
    (_D + "level_embed.weight", _M + "level_embed.weight"),
    (_D + "input_projections.{i}.{wb}", _M + "input_projections.{i}.{wb}"),
    (_D + "decoder.layers.{i}.cross_attn.in_proj_{wb}", _M + "layers.{i}.cross_attn.{qkv}_proj.{wb}"),
    (_D + "decoder.layers.{i}.{rest}", _M + "layers.{i}.{rest}"),
    (_D + "decoder.layernorm.{wb}", _M + "layer_norm.{wb}"),
    (_D + "decoder.mask_predictor.mask_embedder.{i}.0.{wb}", _M + "mask_embed.layers.{i}.{wb}"),
    ("class_predictor.{wb}", "class_predictor.{wb}"),
]
_FIELDS = {"i": r"\d+", "j": r"\d", "fpn": r"\d+", "wb": "weight|bias", "rest": ".+", "qkv": "[qkv]"}
# transformers keys that carry no weights of ours (the loss's class weights are rebuilt from the config).
_IGNORED = {"criterion.empty_weight"}


def _compile(template: str) -> re.Pattern:
    pattern, last = [], 0
    for match in re.finditer(r"\{(\w+)\}", template):
        pattern += [re.escape(template[last : match.start()]), f"(?P<{match[1]}>{_FIELDS[match[1]]})"]
        last = match.end()
    return re.compile("".join(pattern) + re.escape(template[last:]))


_FROM_TRANSFORMERS = [(_compile(theirs), ours) for theirs, ours in _TABLE]
_TO_TRANSFORMERS = [(_compile(ours), theirs) for theirs, ours in _TABLE]


def _convert(state_dict: Mapping[str, torch.Tensor], rules, *, source: str, target: str) -> dict[str, torch.Tensor]:
    matches = []
    unused = []
    for key, tensor in state_dict.items():
        if source == "transformers" and key in _IGNORED:
            continue
        found = next(((m, template) for pattern, template in rules if (m := pattern.fullmatch(key))), None)
        if found is None:
            unused.append(key)
        else:
            matches.append((found[0].groupdict(), found[1], tensor))
    if unused:
        raise KeyError(f"{len(unused)} {source} key(s) have no mapping to {target}: {unused[:20]}")

    num_fpn = len({fields["fpn"] for fields, _, _ in matches if "fpn" in fields})
    converted: dict[str, torch.Tensor] = {}
    packed: dict[str, dict[str, torch.Tensor]] = {}
    for fields, template, tensor in matches:
        if "fpn" in fields:
            fields["fpn"] = str(num_fpn - int(fields["fpn"]))
        if "{qkv}" in template:  # transformers' packed in_proj -> our q, k, v
            for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                converted[template.format(**fields, qkv=name)] = part.clone()
        elif "qkv" in fields:  # our q, k, v -> transformers' packed in_proj
            packed.setdefault(template.format(**fields), {})[fields["qkv"]] = tensor
        else:
            converted[template.format(**fields)] = tensor
    for key, parts in packed.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"{key}: expected q, k and v projections, found {sorted(parts)}")
        converted[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted


def state_dict_from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a transformers Mask2Former state dict (ForUniversalSegmentation) to ours.

    Raises `KeyError` naming every source key that no rule maps.
    """
    return _convert(state_dict, _FROM_TRANSFORMERS, source="transformers", target="m2f_hf")


def state_dict_to_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of [`state_dict_from_transformers`]; the loss's `criterion.empty_weight` buffer is not produced.

    Raises `KeyError` naming every key of ours that no rule maps.
    """
    return _convert(state_dict, _TO_TRANSFORMERS, source="m2f_hf", target="transformers")


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
    # transformers' config has no thing/stuff flags; a label set of a known dataset (COCO, ADE20K, Cityscapes,
    # Mapillary Vistas) tells them, so that instance inference can keep only things as the original does
    meta = match_dataset({int(i): label for i, label in config.id2label.items()})
    if meta is not None:
        kwargs["thing_ids"] = meta.thing_ids
        logger.info("thing classes taken from the %s class list", meta.name)
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
