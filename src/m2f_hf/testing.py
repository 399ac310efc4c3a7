"""Tiny configurations for tests and examples: models that build and run in well under a second on a CPU."""

from __future__ import annotations

from .configuration_m2f import M2FConfig

_FOUR_STAGES = ["stage1", "stage2", "stage3", "stage4"]


def tiny_backbone_config(kind: str = "resnet"):
    """A transformers backbone config with 4 stages at strides 4-32 and few channels (`resnet` or `swin`)."""
    from transformers import ResNetConfig, SwinConfig

    if kind == "resnet":
        return ResNetConfig(
            embedding_size=8,
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            layer_type="basic",
            out_features=_FOUR_STAGES,
        )
    if kind == "swin":
        return SwinConfig(
            image_size=64,
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            window_size=4,
            out_features=_FOUR_STAGES,
        )
    raise ValueError(f"kind={kind!r} must be 'resnet' or 'swin'.")


TINY_DIMS = dict(
    feature_size=32,
    mask_feature_size=32,
    hidden_dim=32,
    encoder_feedforward_dim=64,
    dim_feedforward=64,
    encoder_layers=2,
    decoder_layers=3,
    num_queries=6,
    num_attention_heads=4,
    encoder_attention_heads=4,
    train_num_points=64,
)


def tiny_config(backbone: str = "resnet", num_labels: int = 5, **overrides) -> M2FConfig:
    """Our config at toy size, with a tiny transformers backbone (`resnet`, `swin`) or a timm one (`timm:NAME`)."""
    kwargs = dict(TINY_DIMS)
    if backbone.startswith("timm:"):
        kwargs["timm_backbone"] = backbone[len("timm:") :]
    else:
        kwargs["backbone_config"] = tiny_backbone_config(backbone)
    kwargs["id2label"] = {i: f"class_{i}" for i in range(num_labels)}
    kwargs.update(overrides)
    return M2FConfig(**kwargs)


def tiny_transformers_config(backbone: str = "resnet", num_labels: int = 5, **overrides):
    """transformers' `Mask2FormerConfig` with the same toy sizes (for parity tests)."""
    from transformers import Mask2FormerConfig

    dims = {k: v for k, v in TINY_DIMS.items() if k != "encoder_attention_heads"}
    dims["decoder_layers"] = TINY_DIMS["decoder_layers"] + 1  # transformers counts the learnable-query prediction
    dims.update(overrides)
    return Mask2FormerConfig(
        backbone_config=tiny_backbone_config(backbone), id2label={i: f"class_{i}" for i in range(num_labels)}, **dims
    )
