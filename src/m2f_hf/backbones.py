"""Backbones: one interface over transformers' `AutoBackbone` and timm's `features_only` models.

Both adapters return the four feature maps at strides 4, 8, 16 and 32 (highest resolution first) in NCHW layout,
and expose their `channels` and `strides`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .configuration_m2f import M2FConfig

PYRAMID_STRIDES = (4, 8, 16, 32)


class TransformersBackbone(nn.Module):
    """Wraps a transformers backbone (`AutoBackbone.from_config`)."""

    def __init__(self, backbone_config) -> None:
        super().__init__()
        from transformers import AutoBackbone

        try:
            self.body = AutoBackbone.from_config(backbone_config)
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"backbone_config of model_type={backbone_config.model_type!r} cannot be built with AutoBackbone: "
                f"{error}. Use a model type with a backbone class (ResNet, Swin, ConvNeXt, DINOv2, ...)."
            ) from error
        self.channels = list(self.body.channels)
        strides = getattr(self.body, "_out_feature_strides", None) or getattr(self.body, "strides", None)
        self.strides = list(strides) if isinstance(strides, (list, tuple)) else None
        # Plain ViTs (DINOv2, ViT) give every selected layer at the one patch stride; hierarchical backbones (ResNet,
        # ConvNeXt, Swin) describe their stages with `depths`. A single-scale backbone is turned into the pyramid the
        # pixel decoder expects by resizing its maps to strides 4, 8, 16 and 32 (parameter-free, an adaptation that
        # is not in the paper, whose backbones are all hierarchical).
        self.single_scale = hasattr(backbone_config, "patch_size") and not hasattr(backbone_config, "depths")
        if self.single_scale:
            self.strides = list(PYRAMID_STRIDES)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        features = list(self.body(pixel_values).feature_maps)
        if self.single_scale:
            height, width = pixel_values.shape[-2:]
            features = [
                F.interpolate(f, size=(-(-height // s), -(-width // s)), mode="bilinear", align_corners=False)
                for f, s in zip(features, PYRAMID_STRIDES)
            ]
        return features


class TimmBackbone(nn.Module):
    """Wraps a timm model created with `features_only=True` (channels-last outputs are permuted to NCHW)."""

    def __init__(self, name: str, *, out_indices, pretrained: bool, extra_kwargs: dict) -> None:
        super().__init__()
        import timm

        kwargs = dict(extra_kwargs)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained, **kwargs)
        except (RuntimeError, TypeError, ValueError) as error:
            raise ValueError(f"timm_backbone={name!r} cannot be built with features_only=True: {error}") from error
        info = self.body.feature_info
        if out_indices is None and len(info.channels()) > 4:
            # features_only returns every stage by default; keep the four deepest (strides 4 to 32).
            self.keep = list(range(len(info.channels())))[-4:]
        else:
            self.keep = list(range(len(info.channels())))
        self.channels = [info.channels()[i] for i in self.keep]
        self.strides = [info.reduction()[i] for i in self.keep]
        self.channels_last = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        features = self.body(pixel_values)
        features = [features[i] for i in self.keep]
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]  # (batch, height, width, C) -> (batch, C, H, W)
        return features


def build_backbone(config: M2FConfig) -> nn.Module:
    """Build the backbone named by the config and check that it yields 4 maps at strides 4, 8, 16, 32."""
    if config.timm_backbone is not None:
        backbone = TimmBackbone(
            config.timm_backbone,
            out_indices=config.timm_out_indices,
            pretrained=config.use_pretrained_backbone,
            extra_kwargs=config.timm_backbone_kwargs or {},
        )
        name = f"timm_backbone={config.timm_backbone!r}"
    else:
        backbone = TransformersBackbone(config.backbone_config)
        name = f"backbone_config (model_type={config.backbone_config.model_type!r})"
    if len(backbone.channels) != 4:
        raise ValueError(
            f"{name} gives {len(backbone.channels)} feature levels (channels {backbone.channels}); Mask2Former needs 4, "
            "at strides 4, 8, 16 and 32."
        )
    if backbone.strides is not None and list(backbone.strides) != [4, 8, 16, 32]:
        raise ValueError(f"{name} gives feature strides {backbone.strides}; expected [4, 8, 16, 32].")
    if backbone.strides is None:
        backbone.strides = [4, 8, 16, 32]
    return backbone
