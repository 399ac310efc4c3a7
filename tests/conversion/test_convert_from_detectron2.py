"""The Detectron2 -> m2f_hf converter: key table, restricted unpickler, errors and numerics."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.convert.detectron2 import (
    FROZEN_BN_EPS,
    CheckpointError,
    ShapeMismatchError,
    UnsafePickleError,
    UnsupportedBackboneError,
    config_from_zoo,
    convert_checkpoint,
    load_detectron2_checkpoint,
    preprocessor_config_for,
    state_dict_from_detectron2,
    state_dict_to_detectron2,
)
from m2f_hf.convert.model_zoo import ZOO, get_zoo_entry

from original_layout import HeadDims, head_shapes, resnet_shapes, tiny_config, tiny_original  # isort: skip

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path("/work/shared/reference/original_r50_coco_panoptic_keys.txt")
R50_COCO = "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep"


def _cli():
    spec = importlib.util.spec_from_file_location(
        "convert_from_detectron2", ROOT / "conversion/convert_from_detectron2.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _save_pkl(path: Path, weights: dict) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test", "matching_heuristics": True}, f, protocol=2)
    return path


# ---------------------------------------------------------------------------------------------- key accounting


def test_generator_reproduces_reference_key_list():
    """The test's original-layout generator gives exactly the 558 names and shapes of the real R50 model."""
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not available")
    reference = {}
    for line in REFERENCE.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        reference[name] = (ast.literal_eval(shape), dtype)
    generated = resnet_shapes([3, 4, 6, 3], [256, 512, 1024, 2048])
    generated.update(head_shapes(HeadDims(in_channels=(256, 512, 1024, 2048))))
    assert len(reference) == 558
    assert {k: v[0] for k, v in reference.items()} == generated


def test_full_reference_key_list_converts():
    """Every entry of the real R50 COCO panoptic checkpoint maps onto the zoo config's model, and back."""
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not available")
    weights = {}
    for line in REFERENCE.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        weights[name] = np.zeros(ast.literal_eval(shape), dtype=dtype)
    weights["criterion.empty_weight"][:] = 1.0
    weights["criterion.empty_weight"][-1] = 0.1
    config = config_from_zoo(R50_COCO)
    converted = state_dict_from_detectron2(weights, config)
    model_keys = set(M2FForUniversalSegmentation(config).state_dict())
    assert set(converted) == model_keys
    back = state_dict_to_detectron2(converted, config)
    assert set(back) == set(weights)


@pytest.mark.parametrize("kind", ["resnet", "swin"])
def test_every_key_accounted_and_second_conversion_identical(kind, tmp_path):
    original = tiny_original(kind)
    config = tiny_config(kind)
    converted = state_dict_from_detectron2(original, config)
    model = M2FForUniversalSegmentation(config)
    model.load_state_dict(converted, strict=True)  # nothing missing, nothing unexpected
    model.save_pretrained(tmp_path)

    # export of the saved model back to the original layout is the input, bit for bit ...
    reloaded = M2FForUniversalSegmentation.from_pretrained(tmp_path)
    exported = state_dict_to_detectron2(reloaded.state_dict(), config)
    assert set(exported) == set(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype, key
        np.testing.assert_array_equal(exported[key], value, err_msg=key)
    # ... and converting that export again gives the same model state
    again = state_dict_from_detectron2(exported, config)
    assert set(again) == set(converted)
    for key in converted:
        assert torch.equal(again[key], converted[key]), key


def test_qkv_split_is_q_then_k_then_v():
    original = tiny_original("resnet")
    converted = state_dict_from_detectron2(original, tiny_config("resnet"))
    packed = original["sem_seg_head.predictor.transformer_cross_attention_layers.1.multihead_attn.in_proj_weight"]
    h = packed.shape[1]
    for i, name in enumerate("qkv"):
        ours = converted[f"model.transformer_decoder.layers.1.cross_attn.{name}_proj.weight"].numpy()
        np.testing.assert_array_equal(ours, packed[i * h : (i + 1) * h])


def test_fp16_arrays_become_float32_and_counters_stay_int():
    original = tiny_original("resnet", counters=True)
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in original.items()}
    half["criterion.empty_weight"] = original["criterion.empty_weight"]
    config = tiny_config("resnet")
    converted = state_dict_from_detectron2(half, config)
    key = "model.transformer_decoder.query_features.weight"
    assert converted[key].dtype == torch.float32
    np.testing.assert_array_equal(
        converted[key].numpy(), half["sem_seg_head.predictor.query_feat.weight"].astype(np.float32)
    )
    counter = converted["model.backbone.body.embedder.embedder.normalization.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.item() == 1234
    back = state_dict_to_detectron2(converted, config, include_bn_counters=True)
    assert back["backbone.stem.conv1.norm.num_batches_tracked"] == 1234


def test_frozen_bn_checkpoint_gets_zero_counters():
    converted = state_dict_from_detectron2(tiny_original("resnet"), tiny_config("resnet"))
    counters = [k for k in converted if k.endswith("num_batches_tracked")]
    assert counters and all(converted[k].item() == 0 for k in counters)


# ---------------------------------------------------------------------------------------------- numerics


def _detectron2_resnet(weights: dict, x: torch.Tensor, depths) -> list[torch.Tensor]:
    """Detectron2's ResNet forward (BasicStem + BottleneckBlock, stride in the 3x3 conv, FrozenBatchNorm2d)."""
    w = {k: torch.from_numpy(v) for k, v in weights.items()}

    def frozen_bn(t, prefix):
        scale = w[f"{prefix}.weight"] * (w[f"{prefix}.running_var"] + FROZEN_BN_EPS).rsqrt()
        shift = w[f"{prefix}.bias"] - w[f"{prefix}.running_mean"] * scale
        return t * scale[None, :, None, None] + shift[None, :, None, None]

    def conv_bn(t, prefix, stride=1, padding=0):
        return frozen_bn(F.conv2d(t, w[f"{prefix}.weight"], stride=stride, padding=padding), f"{prefix}.norm")

    x = F.max_pool2d(F.relu(conv_bn(x, "backbone.stem.conv1", 2, 3)), kernel_size=3, stride=2, padding=1)
    outputs = []
    for stage, depth in enumerate(depths):
        for block in range(depth):
            p = f"backbone.res{stage + 2}.{block}"
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = conv_bn(x, f"{p}.shortcut", stride) if f"{p}.shortcut.weight" in w else x
            y = F.relu(conv_bn(x, f"{p}.conv1"))
            y = F.relu(conv_bn(y, f"{p}.conv2", stride, 1))
            x = F.relu(conv_bn(y, f"{p}.conv3") + shortcut)
        outputs.append(x)
    return outputs


def test_resnet_backbone_matches_detectron2_frozen_bn():
    original = tiny_original("resnet")
    config = tiny_config("resnet")
    model = M2FForUniversalSegmentation(config).eval()
    model.load_state_dict(state_dict_from_detectron2(original, config))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model.backbone(x)
    reference = _detectron2_resnet(original, x, config.backbone_config.depths)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_batchnorm_eps_is_frozen_bn_eps():
    with torch.device("meta"):
        model = M2FForUniversalSegmentation(config_from_zoo(R50_COCO))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.eps == FROZEN_BN_EPS == 1e-5 for m in norms)


def _window_partition(x, window):
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c)  # (batch * windows, window, window, C)


def _window_reverse(windows, window, h, w):
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.reshape(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


def _original_swin(weights: dict, x: torch.Tensor, *, embed_dim, depths, num_heads, window) -> list[torch.Tensor]:
    """The original (Mask2Former/mmseg) Swin forward: pad to the window, cyclic shift with a -100 mask, patch
    merging of (even, even), (odd, even), (even, odd), (odd, odd) pixels, and a LayerNorm per output."""
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    x = F.conv2d(x, w["backbone.patch_embed.proj.weight"], w["backbone.patch_embed.proj.bias"], stride=4)
    batch, _, h, wd = x.shape
    x = F.layer_norm(x.flatten(2).transpose(1, 2), (embed_dim,), w["backbone.patch_embed.norm.weight"],
                     w["backbone.patch_embed.norm.bias"])  # fmt: skip
    outputs = []
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim, shift = embed_dim * 2**i, window // 2
        hp, wp = math.ceil(h / window) * window, math.ceil(wd / window) * window
        regions = torch.zeros(1, hp, wp, 1)
        count = 0
        for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                regions[:, hs, ws, :] = count
                count += 1
        region_windows = _window_partition(regions, window).reshape(-1, window * window)
        mask = region_windows[:, None, :] - region_windows[:, :, None]
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}."
            block_shift = 0 if j % 2 == 0 else shift
            shortcut = x
            y = F.layer_norm(x, (dim,), w[p + "norm1.weight"], w[p + "norm1.bias"]).reshape(batch, h, wd, dim)
            y = F.pad(y, (0, 0, 0, wp - wd, 0, hp - h))
            if block_shift:
                y = torch.roll(y, shifts=(-block_shift, -block_shift), dims=(1, 2))
            windows = _window_partition(y, window).reshape(-1, window * window, dim)
            n = window * window
            qkv = F.linear(windows, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])
            q, k, v = qkv.reshape(-1, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            attn = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
            index = w[p + "attn.relative_position_index"].reshape(-1)
            bias = w[p + "attn.relative_position_bias_table"][index].reshape(n, n, -1).permute(2, 0, 1)
            attn = attn + bias[None]
            if block_shift:
                num_windows = mask.shape[0]
                attn = attn.reshape(-1, num_windows, heads, n, n) + mask[None, :, None]
                attn = attn.reshape(-1, heads, n, n)
            out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, dim)
            out = F.linear(out, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
            y = _window_reverse(out.reshape(-1, window, window, dim), window, hp, wp)
            if block_shift:
                y = torch.roll(y, shifts=(block_shift, block_shift), dims=(1, 2))
            x = shortcut + y[:, :h, :wd, :].reshape(batch, h * wd, dim)
            hidden = F.layer_norm(x, (dim,), w[p + "norm2.weight"], w[p + "norm2.bias"])
            hidden = F.linear(F.gelu(F.linear(hidden, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                              w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])  # fmt: skip
            x = x + hidden
        out = F.layer_norm(x, (dim,), w[f"backbone.norm{i}.weight"], w[f"backbone.norm{i}.bias"])
        outputs.append(out.reshape(batch, h, wd, dim).permute(0, 3, 1, 2))
        if i < len(depths) - 1:
            grid = x.reshape(batch, h, wd, dim)
            merged = torch.cat(
                [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1
            ).reshape(batch, -1, 4 * dim)
            merged = F.layer_norm(merged, (4 * dim,), w[f"backbone.layers.{i}.downsample.norm.weight"],
                                  w[f"backbone.layers.{i}.downsample.norm.bias"])  # fmt: skip
            x = F.linear(merged, w[f"backbone.layers.{i}.downsample.reduction.weight"])
            h, wd = (h + 1) // 2, (wd + 1) // 2
    return outputs


def test_swin_backbone_matches_original_swin():
    """Includes a last stage smaller than the window (padded and still shifted in the original)."""
    original = tiny_original("swin")
    config = tiny_config("swin")
    model = M2FForUniversalSegmentation(config).eval()
    model.load_state_dict(state_dict_from_detectron2(original, config))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.model.backbone(x)
    bb = config.backbone_config
    reference = _original_swin(
        original, x, embed_dim=bb.embed_dim, depths=bb.depths, num_heads=bb.num_heads, window=bb.window_size
    )
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_swin_dead_final_layernorm_does_not_change_features():
    config = tiny_config("swin")
    model = M2FForUniversalSegmentation(config).eval()
    model.load_state_dict(state_dict_from_detectron2(tiny_original("swin"), config))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model.model.backbone(x)
        model.model.backbone.body.swin.layernorm.weight.mul_(3.0)
        after = model.model.backbone(x)
    for a, b in zip(before, after):
        assert torch.equal(a, b)


def test_decoder_attention_matches_multihead_attention():
    original = tiny_original("resnet")
    config = tiny_config("resnet")
    model = M2FForUniversalSegmentation(config).eval()
    model.load_state_dict(state_dict_from_detectron2(original, config))
    prefix = "sem_seg_head.predictor.transformer_cross_attention_layers.0.multihead_attn."
    reference = torch.nn.MultiheadAttention(config.hidden_dim, config.num_attention_heads, batch_first=True).eval()
    reference.load_state_dict(
        {k[len(prefix) :]: torch.from_numpy(v) for k, v in original.items() if k.startswith(prefix)}
    )
    q, k = torch.randn(2, 6, config.hidden_dim), torch.randn(2, 20, config.hidden_dim)
    with torch.no_grad():
        expected, _ = reference(q, k, k)
        ours, _ = model.model.transformer_decoder.layers[0].cross_attn(q, k, k)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- bad input


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsCommand, _Evaluates])
def test_malicious_pickle_is_refused_and_not_executed(payload, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final_evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.stem.conv1.weight": payload(marker)}}, f, protocol=2)
    with pytest.raises(UnsafePickleError, match="refusing"):
        load_detectron2_checkpoint(path)
    assert not marker.exists()


def test_not_a_pickle(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_text("this is a text file, not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        load_detectron2_checkpoint(path)
    archive = tmp_path / "weights.pth"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data.pkl", b"x")
    with pytest.raises(CheckpointError, match="zip archive"):
        load_detectron2_checkpoint(archive)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_detectron2_checkpoint(tmp_path / "missing.pkl")


def test_pickle_without_weights(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(["not", "a", "dict"]))
    with pytest.raises(CheckpointError, match="without a 'model' dict"):
        load_detectron2_checkpoint(path)


def test_loads_model_zoo_layout(tmp_path):
    original = tiny_original("swin")
    loaded = load_detectron2_checkpoint(_save_pkl(tmp_path / "m.pkl", original))
    assert set(loaded) == set(original)
    assert all(np.array_equal(loaded[k], original[k]) for k in original)


def test_unknown_config_name_lists_close_matches():
    with pytest.raises(KeyError, match="Closest matches") as error:
        get_zoo_entry("coco/panoptic-segmentation/maskformer2_R50_bs16_5ep")
    assert R50_COCO in str(error.value)


def test_shape_mismatch_names_key_and_shapes():
    original = tiny_original("resnet")
    original["sem_seg_head.predictor.class_embed.weight"] = np.zeros((9, 32), np.float32)
    with pytest.raises(ShapeMismatchError) as error:
        state_dict_from_detectron2(original, tiny_config("resnet"))
    message = str(error.value)
    assert "sem_seg_head.predictor.class_embed.weight" in message and "(9, 32)" in message and "(6, 32)" in message


def test_unused_and_missing_keys_are_errors():
    original = tiny_original("resnet")
    original["sem_seg_head.predictor.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="sem_seg_head.predictor.extra.weight"):
        state_dict_from_detectron2(original, tiny_config("resnet"))
    original = tiny_original("resnet")
    del original["sem_seg_head.predictor.decoder_norm.bias"]
    with pytest.raises(CheckpointError, match="transformer_decoder.layer_norm.bias"):
        state_dict_from_detectron2(original, tiny_config("resnet"))


def test_wrong_recomputed_buffers_are_refused():
    original = tiny_original("swin")
    original["backbone.layers.0.blocks.0.attn.relative_position_index"] = np.zeros((16, 16), np.int64)
    with pytest.raises(CheckpointError, match="relative-position index"):
        state_dict_from_detectron2(original, tiny_config("swin"))
    original = tiny_original("resnet")
    original["criterion.empty_weight"] = np.ones(7, np.float32)
    with pytest.raises(ShapeMismatchError, match="criterion.empty_weight"):
        state_dict_from_detectron2(original, tiny_config("resnet"))


def test_deeplab_stem_is_refused():
    original = tiny_original("resnet")
    original["backbone.stem.conv2.weight"] = np.zeros((16, 16, 3, 3), np.float32)
    with pytest.raises(UnsupportedBackboneError, match="DeepLab stem"):
        state_dict_from_detectron2(original, tiny_config("resnet"))


def test_backbone_family_mismatch():
    with pytest.raises(CheckpointError, match="Swin backbone"):
        state_dict_from_detectron2(tiny_original("swin"), tiny_config("resnet"))


# ---------------------------------------------------------------------------------------------- zoo and folder


def test_zoo_configs_are_consistent():
    assert len(ZOO) == 47
    for name, entry in ZOO.items():
        config = config_from_zoo(entry)
        assert config.num_labels == entry.dataset.num_labels, name
        assert config.num_queries == entry.num_queries in (100, 200), name
        assert entry.url.endswith(".pkl") and entry.url.startswith("https://dl.fbaipublicfiles.com/"), name
    assert ZOO["coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep"].num_queries == 200
    assert config_from_zoo(R50_COCO).backbone_config.downsample_in_bottleneck is False


def test_zoo_configs_know_their_thing_classes():
    # the dataset registrations' isthing flags: COCO panoptic lists its 80 things first, Cityscapes its 8 last
    assert config_from_zoo(R50_COCO).thing_ids == list(range(80))
    assert config_from_zoo(R50_COCO).stuff_ids == list(range(80, 133))
    cityscapes = config_from_zoo("cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k")
    assert [cityscapes.id2label[i] for i in cityscapes.thing_ids] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"
    ]  # fmt: skip
    ade = config_from_zoo("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k")
    assert len(ade.thing_ids) == 100 and ade.id2label[ade.thing_ids[0]] == "bed"
    for name, entry in ZOO.items():
        config = config_from_zoo(entry)
        assert config.thing_ids == [i for i, thing in enumerate(entry.dataset.is_thing) if thing], name
        if "instance" in name:
            assert config.stuff_ids == [], name


def test_preprocessor_settings_follow_original_test_time():
    entry = get_zoo_entry("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k")
    settings = preprocessor_config_for(entry)
    assert settings["size"] == {"shortest_edge": 512, "longest_edge": 2048}
    # 0-255 statistics become 0-1 statistics: (x / 255 - mean / 255) / (std / 255) == (x - mean) / std
    np.testing.assert_allclose(np.array(settings["image_mean"]) * 255, entry.pixel_mean)
    np.testing.assert_allclose(np.array(settings["image_std"]) * 255, entry.pixel_std)
    assert preprocessor_config_for(get_zoo_entry(R50_COCO))["size"] == {"shortest_edge": 800, "longest_edge": 1333}
    assert (
        preprocessor_config_for(ZOO["mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k"])[
            "ignore_index"
        ]
        == 65
    )


def test_convert_checkpoint_writes_folder(tmp_path):
    original = tiny_original("resnet")
    pkl = _save_pkl(tmp_path / "model_final_tiny.pkl", original)
    dst = convert_checkpoint(pkl, R50_COCO, tmp_path / "out", config=tiny_config("resnet"))
    assert {p.name for p in dst.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
    }
    config = json.loads((dst / "config.json").read_text())
    assert config["id2label"]["0"] == "class_0"
    processor = json.loads((dst / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 800, "longest_edge": 1333}
    assert "license: cc-by-nc-4.0" in (dst / "README.md").read_text()
    model = M2FForUniversalSegmentation.from_pretrained(dst)
    expected = state_dict_from_detectron2(original, tiny_config("resnet"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_cli_errors(tmp_path, capsys):
    main = _cli()
    pkl = _save_pkl(tmp_path / "m.pkl", tiny_original("resnet"))
    assert main(["--checkpoint", str(pkl), "--config", "coco/panoptic/R50", "--dst", str(tmp_path / "o")]) == 2
    assert "not in the original Mask2Former model zoo" in capsys.readouterr().err
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x00\x01garbage")
    assert main(["--checkpoint", str(bad), "--config", R50_COCO, "--dst", str(tmp_path / "o")]) == 1
    assert "not a readable pickle" in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert R50_COCO in capsys.readouterr().out


@pytest.mark.slow
def test_cli_full_size_r50(tmp_path):
    """The zoo R50 COCO panoptic config end to end through the CLI (full-size model, zero weights)."""
    weights = {}
    for line in REFERENCE.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        weights[name] = np.zeros(ast.literal_eval(shape), dtype=dtype)
    weights["criterion.empty_weight"][:] = 1.0
    weights["criterion.empty_weight"][-1] = 0.1
    pkl = _save_pkl(tmp_path / "model_final_94dc52.pkl", weights)
    assert _cli()(["--checkpoint", str(pkl), "--config", R50_COCO, "--dst", str(tmp_path / "out")]) == 0
    model = M2FForUniversalSegmentation.from_pretrained(tmp_path / "out")
    assert model.config.num_labels == 133
