"""Build state dicts in the original Mask2Former (Detectron2) key layout, for converter tests.

Names and shapes follow the original code's modules: Detectron2's ResNet (`backbone.stem` / `backbone.res{2..5}` with
FrozenBN `norm` children), the original Swin (`backbone.layers.{i}.blocks.{j}`), `sem_seg_head.pixel_decoder` and
`sem_seg_head.predictor` (with `nn.MultiheadAttention`'s packed `in_proj_*`), and `criterion.empty_weight`. The
generator is checked against the reference key list of the real R50 COCO panoptic model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from m2f_hf import M2FConfig


@dataclass
class HeadDims:
    in_channels: tuple[int, int, int, int]  # res2..res5
    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    enc_layers: int = 6
    enc_ffn: int = 1024
    enc_heads: int = 8
    levels: int = 3
    points: int = 4
    dec_layers: int = 9
    dec_ffn: int = 2048
    num_queries: int = 100
    num_classes: int = 133


def resnet_shapes(depths, widths, stem: int = 64, *, counters: bool = False) -> dict[str, tuple]:
    """Detectron2 ResNet (bottleneck, ratio 4) parameter shapes; `counters` adds SyncBN's `num_batches_tracked`."""
    shapes: dict[str, tuple] = {}

    def conv_norm(prefix, out_c, in_c, k):
        shapes[f"{prefix}.weight"] = (out_c, in_c, k, k)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.norm.{name}"] = (out_c,)
        if counters:
            shapes[f"{prefix}.norm.num_batches_tracked"] = ()

    conv_norm("backbone.stem.conv1", stem, 3, 7)
    in_c = stem
    for stage, (depth, out_c) in enumerate(zip(depths, widths)):
        mid = out_c // 4
        for block in range(depth):
            prefix = f"backbone.res{stage + 2}.{block}"
            if block == 0:
                conv_norm(f"{prefix}.shortcut", out_c, in_c, 1)
            conv_norm(f"{prefix}.conv1", mid, in_c, 1)
            conv_norm(f"{prefix}.conv2", mid, mid, 3)
            conv_norm(f"{prefix}.conv3", out_c, mid, 1)
            in_c = out_c
    return shapes


def swin_shapes(embed_dim, depths, num_heads, window) -> dict[str, tuple]:
    """The original Swin backbone's parameter and buffer shapes (patch size 4, MLP ratio 4, no APE)."""
    shapes: dict[str, tuple] = {
        "backbone.patch_embed.proj.weight": (embed_dim, 3, 4, 4),
        "backbone.patch_embed.proj.bias": (embed_dim,),
        "backbone.patch_embed.norm.weight": (embed_dim,),
        "backbone.patch_embed.norm.bias": (embed_dim,),
    }
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim = embed_dim * 2**i
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}."
            shapes.update(
                {
                    p + "norm1.weight": (dim,),
                    p + "norm1.bias": (dim,),
                    p + "attn.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
                    p + "attn.relative_position_index": (window * window, window * window),
                    p + "attn.qkv.weight": (3 * dim, dim),
                    p + "attn.qkv.bias": (3 * dim,),
                    p + "attn.proj.weight": (dim, dim),
                    p + "attn.proj.bias": (dim,),
                    p + "norm2.weight": (dim,),
                    p + "norm2.bias": (dim,),
                    p + "mlp.fc1.weight": (4 * dim, dim),
                    p + "mlp.fc1.bias": (4 * dim,),
                    p + "mlp.fc2.weight": (dim, 4 * dim),
                    p + "mlp.fc2.bias": (dim,),
                }
            )
        if i < len(depths) - 1:
            shapes[f"backbone.layers.{i}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
            shapes[f"backbone.layers.{i}.downsample.norm.weight"] = (4 * dim,)
            shapes[f"backbone.layers.{i}.downsample.norm.bias"] = (4 * dim,)
    for i in range(len(depths)):
        shapes[f"backbone.norm{i}.weight"] = (embed_dim * 2**i,)
        shapes[f"backbone.norm{i}.bias"] = (embed_dim * 2**i,)
    return shapes


def head_shapes(d: HeadDims) -> dict[str, tuple]:
    """Pixel decoder, transformer decoder and criterion shapes of the original model."""
    pd, pr = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
    c, h = d.conv_dim, d.hidden_dim
    shapes: dict[str, tuple] = {}
    for i, in_c in enumerate(reversed(d.in_channels[1:])):  # res5, res4, res3
        shapes.update(
            {
                f"{pd}input_proj.{i}.0.weight": (c, in_c, 1, 1),
                f"{pd}input_proj.{i}.0.bias": (c,),
                f"{pd}input_proj.{i}.1.weight": (c,),
                f"{pd}input_proj.{i}.1.bias": (c,),
            }
        )
    shapes[f"{pd}transformer.level_embed"] = (d.levels, c)
    samples = d.enc_heads * d.levels * d.points
    for layer in range(d.enc_layers):
        p = f"{pd}transformer.encoder.layers.{layer}."
        shapes.update(
            {
                p + "self_attn.sampling_offsets.weight": (samples * 2, c),
                p + "self_attn.sampling_offsets.bias": (samples * 2,),
                p + "self_attn.attention_weights.weight": (samples, c),
                p + "self_attn.attention_weights.bias": (samples,),
                p + "self_attn.value_proj.weight": (c, c),
                p + "self_attn.value_proj.bias": (c,),
                p + "self_attn.output_proj.weight": (c, c),
                p + "self_attn.output_proj.bias": (c,),
                p + "norm1.weight": (c,),
                p + "norm1.bias": (c,),
                p + "linear1.weight": (d.enc_ffn, c),
                p + "linear1.bias": (d.enc_ffn,),
                p + "linear2.weight": (c, d.enc_ffn),
                p + "linear2.bias": (c,),
                p + "norm2.weight": (c,),
                p + "norm2.bias": (c,),
            }
        )
    shapes.update(
        {
            f"{pd}mask_features.weight": (d.mask_dim, c, 1, 1),
            f"{pd}mask_features.bias": (d.mask_dim,),
            f"{pd}adapter_1.weight": (c, d.in_channels[0], 1, 1),
            f"{pd}adapter_1.norm.weight": (c,),
            f"{pd}adapter_1.norm.bias": (c,),
            f"{pd}layer_1.weight": (c, c, 3, 3),
            f"{pd}layer_1.norm.weight": (c,),
            f"{pd}layer_1.norm.bias": (c,),
        }
    )
    for layer in range(d.dec_layers):
        for kind, attn in (("self", "self_attn"), ("cross", "multihead_attn")):
            p = f"{pr}transformer_{kind}_attention_layers.{layer}."
            shapes.update(
                {
                    p + f"{attn}.in_proj_weight": (3 * h, h),
                    p + f"{attn}.in_proj_bias": (3 * h,),
                    p + f"{attn}.out_proj.weight": (h, h),
                    p + f"{attn}.out_proj.bias": (h,),
                    p + "norm.weight": (h,),
                    p + "norm.bias": (h,),
                }
            )
        p = f"{pr}transformer_ffn_layers.{layer}."
        shapes.update(
            {
                p + "linear1.weight": (d.dec_ffn, h),
                p + "linear1.bias": (d.dec_ffn,),
                p + "linear2.weight": (h, d.dec_ffn),
                p + "linear2.bias": (h,),
                p + "norm.weight": (h,),
                p + "norm.bias": (h,),
            }
        )
    shapes.update(
        {
            f"{pr}decoder_norm.weight": (h,),
            f"{pr}decoder_norm.bias": (h,),
            f"{pr}query_feat.weight": (d.num_queries, h),
            f"{pr}query_embed.weight": (d.num_queries, h),
            f"{pr}level_embed.weight": (d.levels, h),
            f"{pr}class_embed.weight": (d.num_classes + 1, h),
            f"{pr}class_embed.bias": (d.num_classes + 1,),
        }
    )
    for i, out in enumerate((h, h, d.mask_dim)):
        shapes[f"{pr}mask_embed.layers.{i}.weight"] = (out, h)
        shapes[f"{pr}mask_embed.layers.{i}.bias"] = (out,)
    shapes["criterion.empty_weight"] = (d.num_classes + 1,)
    return shapes


def swin_relative_position_index(window: int) -> np.ndarray:
    """The original WindowAttention's `relative_position_index` buffer, computed as it does (torch meshgrid)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1).numpy()


def fill(shapes: dict[str, tuple], *, seed: int = 0, no_object_weight: float = 0.1, dtype=np.float32) -> dict:
    """Random arrays of `shapes` with valid buffers: positive variances, the real relative-position index, the
    criterion's class weights, int64 counters."""
    rng = np.random.default_rng(seed)
    weights = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            weights[key] = np.asarray(1234, dtype=np.int64)
        elif key.endswith("relative_position_index"):
            weights[key] = swin_relative_position_index(int(round(shape[0] ** 0.5)))
        elif key == "criterion.empty_weight":
            weights[key] = np.ones(shape, dtype=np.float32)
            weights[key][-1] = no_object_weight
        elif key.endswith("running_var"):
            weights[key] = rng.uniform(0.5, 2.0, shape).astype(dtype)
        else:
            weights[key] = (rng.standard_normal(shape) * 0.1).astype(dtype)
    return weights


TINY_RESNET = {"depths": [2, 1, 2, 1], "widths": [32, 64, 128, 256], "stem": 16}
TINY_SWIN = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window": 4}
TINY_HEAD = dict(conv_dim=32, mask_dim=32, hidden_dim=32, enc_layers=2, enc_ffn=64, enc_heads=4, dec_layers=3,
                 dec_ffn=64, num_queries=6, num_classes=5)  # fmt: skip


def tiny_config(kind: str) -> M2FConfig:
    """Our config for the tiny original layouts (`resnet` or `swin`)."""
    if kind == "resnet":
        backbone = {
            "model_type": "resnet",
            "depths": TINY_RESNET["depths"],
            "hidden_sizes": TINY_RESNET["widths"],
            "embedding_size": TINY_RESNET["stem"],
            "layer_type": "bottleneck",
            "downsample_in_bottleneck": False,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        }
    else:
        backbone = {
            "model_type": "swin",
            "embed_dim": TINY_SWIN["embed_dim"],
            "depths": TINY_SWIN["depths"],
            "num_heads": TINY_SWIN["num_heads"],
            "window_size": TINY_SWIN["window"],
            "image_size": 64,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        }
    h = TINY_HEAD
    return M2FConfig(
        backbone_config=backbone,
        feature_size=h["conv_dim"],
        mask_feature_size=h["mask_dim"],
        hidden_dim=h["hidden_dim"],
        encoder_layers=h["enc_layers"],
        encoder_feedforward_dim=h["enc_ffn"],
        encoder_attention_heads=h["enc_heads"],
        num_attention_heads=h["enc_heads"],
        decoder_layers=h["dec_layers"],
        dim_feedforward=h["dec_ffn"],
        num_queries=h["num_queries"],
        id2label={i: f"class_{i}" for i in range(h["num_classes"])},
    )


def tiny_original(kind: str, *, seed: int = 0, counters: bool = False) -> dict[str, np.ndarray]:
    """A random original-layout state dict matching [`tiny_config`]`(kind)`."""
    if kind == "resnet":
        shapes = resnet_shapes(TINY_RESNET["depths"], TINY_RESNET["widths"], TINY_RESNET["stem"], counters=counters)
        channels = tuple(TINY_RESNET["widths"])
    else:
        s = TINY_SWIN
        shapes = swin_shapes(s["embed_dim"], s["depths"], s["num_heads"], s["window"])
        channels = tuple(s["embed_dim"] * 2**i for i in range(4))
    shapes.update(head_shapes(HeadDims(in_channels=channels, **TINY_HEAD)))
    return fill(shapes, seed=seed)
