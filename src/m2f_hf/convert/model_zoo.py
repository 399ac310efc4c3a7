"""The original Mask2Former model zoo (image segmentation): one entry per released `model_final_*.pkl`.

Each entry records what the original config file sets and the converter needs: backbone, number of queries, dataset
and task, the test-time resize (`INPUT.MIN_SIZE_TEST` / `MAX_SIZE_TEST`), the pixel mean/std on 0-255 RGB inputs,
the post-processing thresholds, the download address and the metrics the model zoo page reports for it. Names are
the original config paths under `configs/` without `.yaml`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from .datasets_meta import DatasetMeta, get_dataset_meta

# ImageNet statistics on 0-255 RGB, set by every original config (PIXEL_MEAN / PIXEL_STD).
PIXEL_MEAN_255 = (123.675, 116.280, 103.530)
PIXEL_STD_255 = (58.395, 57.120, 57.375)

_URL_ROOT = "https://dl.fbaipublicfiles.com/maskformer/mask2former"

# Backbone architectures of the zoo. ResNets are Detectron2's with the stride in the 3x3 convolution
# (STRIDE_IN_1X1: False), which is transformers' ResNet layout; Swins are the original Swin Transformer.
BACKBONES: dict[str, dict[str, Any]] = {
    "R50": {"model_type": "resnet", "depths": [3, 4, 6, 3]},
    "R101": {"model_type": "resnet", "depths": [3, 4, 23, 3]},
    "swin_tiny": {"model_type": "swin", "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
                  "window_size": 7, "image_size": 224},
    "swin_small": {"model_type": "swin", "embed_dim": 96, "depths": [2, 2, 18, 2], "num_heads": [3, 6, 12, 24],
                   "window_size": 7, "image_size": 224},
    "swin_base_384": {"model_type": "swin", "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32],
                      "window_size": 12, "image_size": 384},
    "swin_large_384": {"model_type": "swin", "embed_dim": 192, "depths": [2, 2, 18, 2],
                       "num_heads": [6, 12, 24, 48], "window_size": 12, "image_size": 384},
}  # fmt: skip

# Config path prefix -> (dataset key, task, download folder); the download folder is `<dataset>/<task>` on the CDN.
_FAMILIES = {
    "coco/panoptic-segmentation": ("coco_panoptic", "panoptic", "coco/panoptic"),
    "coco/instance-segmentation": ("coco_instance", "instance", "coco/instance"),
    "cityscapes/panoptic-segmentation": ("cityscapes_panoptic", "panoptic", "cityscapes/panoptic"),
    "cityscapes/instance-segmentation": ("cityscapes_instance", "instance", "cityscapes/instance"),
    "cityscapes/semantic-segmentation": ("cityscapes_semantic", "semantic", "cityscapes/semantic"),
    "ade20k/panoptic-segmentation": ("ade20k_panoptic", "panoptic", "ade20k/panoptic"),
    "ade20k/instance-segmentation": ("ade20k_instance", "instance", "ade20k/instance"),
    "ade20k/semantic-segmentation": ("ade20k_semantic", "semantic", "ade20k/semantic"),
    "mapillary-vistas/panoptic-segmentation": ("mapillary_vistas_panoptic", "panoptic", "mapillary_vistas/panoptic"),
    "mapillary-vistas/semantic-segmentation": ("mapillary_vistas_semantic", "semantic", "mapillary_vistas/semantic"),
}

# Test-time shortest edge / longest edge of each dataset family (the configs' MIN_SIZE_TEST / MAX_SIZE_TEST; the COCO
# configs keep Detectron2's defaults).
_TEST_SIZES = {
    "coco": (800, 1333),
    "cityscapes": (1024, 2048),
    "ade20k": (640, 2560),  # panoptic and instance; semantic below 640 px models use 512
    "mapillary-vistas": (2048, 2048),
}


@dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint of the original model zoo.

    Attributes:
        name: the original config path without `configs/` and `.yaml`.
        backbone: key of [`BACKBONES`].
        num_queries: `MASK_FORMER.NUM_OBJECT_QUERIES`.
        dataset: the [`DatasetMeta`] of its classes.
        task: `"panoptic"`, `"instance"` or `"semantic"`.
        min_size_test, max_size_test: test-time shortest edge and cap on the longest edge, in pixels.
        url: download address of the `model_final_*.pkl`.
        metrics: the model zoo page's numbers, e.g. `{"PQ": 51.9, "AP": 41.7, "mIoU": 61.7}`.
        object_mask_threshold, overlap_threshold: the panoptic/instance inference thresholds of the config.
        pixel_mean, pixel_std: input normalisation on 0-255 RGB.
    """

    name: str
    backbone: str
    num_queries: int
    dataset: DatasetMeta
    task: str
    min_size_test: int
    max_size_test: int
    url: str
    metrics: dict[str, float] = field(default_factory=dict)
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN_255
    pixel_std: tuple[float, float, float] = PIXEL_STD_255

    @property
    def backbone_kwargs(self) -> dict[str, Any]:
        return dict(BACKBONES[self.backbone])


def _entry(name: str, backbone: str, md5: str, metrics: dict[str, float], **overrides) -> ZooEntry:
    family, _, config_name = name.rpartition("/")
    family = family.removesuffix("/swin")
    dataset_key, task, folder = _FAMILIES[family]
    min_size, max_size = _TEST_SIZES[family.split("/")[0]]
    url_name = overrides.pop("url_name", config_name)
    return ZooEntry(
        name=name,
        backbone=backbone,
        num_queries=overrides.pop("num_queries", 100),
        dataset=get_dataset_meta(dataset_key),
        task=task,
        min_size_test=overrides.pop("min_size_test", min_size),
        max_size_test=overrides.pop("max_size_test", max_size),
        url=f"{_URL_ROOT}/{folder}/{url_name}/model_final_{md5}.pkl",
        metrics=metrics,
        **overrides,
    )


def _pan(pq, ap, miou):
    return {"PQ": pq, "AP": ap, "mIoU": miou}


def _sem(miou, miou_ms):
    return {"mIoU": miou, "mIoU (ms+flip)": miou_ms}


_ADE_SEM_512 = {"min_size_test": 512, "max_size_test": 2048}

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        # COCO panoptic (133 classes)
        _entry("coco/panoptic-segmentation/maskformer2_R50_bs16_50ep", "R50", "94dc52", _pan(51.9, 41.7, 61.7)),
        _entry("coco/panoptic-segmentation/maskformer2_R101_bs16_50ep", "R101", "b807bd", _pan(52.6, 42.6, 62.4)),
        _entry("coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep", "swin_tiny", "9fd0ae",
               _pan(53.2, 43.3, 63.2)),
        _entry("coco/panoptic-segmentation/swin/maskformer2_swin_small_bs16_50ep", "swin_small", "a407fd",
               _pan(54.6, 44.7, 64.2)),
        _entry("coco/panoptic-segmentation/swin/maskformer2_swin_base_384_bs16_50ep", "swin_base_384", "9d7f02",
               _pan(55.1, 45.2, 65.1)),
        _entry("coco/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep", "swin_base_384",
               "54b88a", _pan(56.4, 46.3, 67.1)),
        _entry("coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep", "swin_large_384",
               "f07440", _pan(57.8, 48.6, 67.4), num_queries=200),
        # COCO instance (80 classes)
        _entry("coco/instance-segmentation/maskformer2_R50_bs16_50ep", "R50", "3c8ec9",
               {"AP": 43.7, "Boundary AP": 30.6}),
        _entry("coco/instance-segmentation/maskformer2_R101_bs16_50ep", "R101", "eba159",
               {"AP": 44.2, "Boundary AP": 31.1}),
        _entry("coco/instance-segmentation/swin/maskformer2_swin_tiny_bs16_50ep", "swin_tiny", "86143f",
               {"AP": 45.0, "Boundary AP": 31.8}),
        _entry("coco/instance-segmentation/swin/maskformer2_swin_small_bs16_50ep", "swin_small", "1e7f22",
               {"AP": 46.3, "Boundary AP": 32.9}),
        _entry("coco/instance-segmentation/swin/maskformer2_swin_base_384_bs16_50ep", "swin_base_384", "f6e0f6",
               {"AP": 46.7, "Boundary AP": 33.2}),
        _entry("coco/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_50ep", "swin_base_384",
               "83d103", {"AP": 48.1, "Boundary AP": 34.4}),
        _entry("coco/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep", "swin_large_384",
               "e5f453", {"AP": 50.1, "Boundary AP": 36.2}, num_queries=200),
        # Cityscapes panoptic (19 classes)
        _entry("cityscapes/panoptic-segmentation/maskformer2_R50_bs16_90k", "R50", "4ab90c", _pan(62.1, 37.3, 77.5)),
        _entry("cityscapes/panoptic-segmentation/maskformer2_R101_bs16_90k", "R101", "04d286",
               _pan(62.4, 37.7, 78.6)),
        _entry("cityscapes/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_90k", "swin_tiny", "ceba0f",
               _pan(63.9, 39.1, 80.5)),
        _entry("cityscapes/panoptic-segmentation/swin/maskformer2_swin_small_bs16_90k", "swin_small", "23efb7",
               _pan(64.8, 40.7, 81.8)),
        _entry("cityscapes/panoptic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k", "swin_base_384",
               "fa840f", _pan(66.1, 42.8, 82.7)),
        _entry("cityscapes/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k", "swin_large_384",
               "064788", _pan(66.6, 43.6, 82.9), num_queries=200),
        # Cityscapes instance (8 classes)
        _entry("cityscapes/instance-segmentation/maskformer2_R50_bs16_90k", "R50", "01a8ed",
               {"AP": 37.4, "AP50": 61.9}),
        _entry("cityscapes/instance-segmentation/maskformer2_R101_bs16_90k", "R101", "c2b8c8",
               {"AP": 38.5, "AP50": 63.9}),
        _entry("cityscapes/instance-segmentation/swin/maskformer2_swin_tiny_bs16_90k", "swin_tiny", "6a63f8",
               {"AP": 39.7, "AP50": 66.9}),
        _entry("cityscapes/instance-segmentation/swin/maskformer2_swin_small_bs16_90k", "swin_small", "974824",
               {"AP": 41.8, "AP50": 70.4}),
        _entry("cityscapes/instance-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k", "swin_base_384",
               "7a3b6d", {"AP": 42.0, "AP50": 68.8}),
        _entry("cityscapes/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k", "swin_large_384",
               "dfa862", {"AP": 43.7, "AP50": 71.4}, num_queries=200),
        # Cityscapes semantic (19 classes)
        _entry("cityscapes/semantic-segmentation/maskformer2_R50_bs16_90k", "R50", "cc1b1f", _sem(79.4, 82.2)),
        _entry("cityscapes/semantic-segmentation/maskformer2_R101_bs16_90k", "R101", "257ce8", _sem(80.1, 81.9)),
        _entry("cityscapes/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_90k", "swin_tiny", "2d58d4",
               _sem(82.1, 83.0)),
        _entry("cityscapes/semantic-segmentation/swin/maskformer2_swin_small_bs16_90k", "swin_small", "fa26ae",
               _sem(82.6, 83.6)),
        _entry("cityscapes/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_90k", "swin_base_384",
               "1c6b65", _sem(83.3, 84.5)),
        _entry("cityscapes/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_90k", "swin_large_384",
               "17c1ee", _sem(83.3, 84.3)),
        # ADE20K panoptic (150 classes) and instance (100 classes)
        _entry("ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k", "R50", "5c90d4", _pan(39.7, 26.5, 46.1)),
        _entry("ade20k/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k", "swin_large_384",
               "e0c58e", _pan(48.1, 34.2, 54.5), num_queries=200),
        _entry("ade20k/instance-segmentation/maskformer2_R50_bs16_160k", "R50", "67e945", {"AP": 26.4}),
        _entry("ade20k/instance-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k", "swin_large_384",
               "92dae9", {"AP": 34.9}, num_queries=200),
        # ADE20K semantic (150 classes): 512 px test size except the `_res640` Swin models
        _entry("ade20k/semantic-segmentation/maskformer2_R50_bs16_160k", "R50", "500878", _sem(47.2, 49.2),
               **_ADE_SEM_512),
        _entry("ade20k/semantic-segmentation/maskformer2_R101_bs16_90k", "R101", "0d68be", _sem(47.8, 50.1),
               **_ADE_SEM_512),
        _entry("ade20k/semantic-segmentation/swin/maskformer2_swin_tiny_bs16_160k", "swin_tiny", "5274a6",
               _sem(47.7, 49.6), **_ADE_SEM_512),
        _entry("ade20k/semantic-segmentation/swin/maskformer2_swin_small_bs16_160k", "swin_small", "011c6d",
               _sem(51.3, 52.4), **_ADE_SEM_512),
        _entry("ade20k/semantic-segmentation/swin/maskformer2_swin_base_384_bs16_160k_res640", "swin_base_384",
               "503e96", _sem(52.4, 53.7)),
        _entry("ade20k/semantic-segmentation/swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640", "swin_base_384",
               "7e47bf", _sem(53.9, 55.1)),
        _entry("ade20k/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640",
               "swin_large_384", "6b4a3a", _sem(56.1, 57.3)),
        # Mapillary Vistas (65 classes); the panoptic configs keep every query whose mask survives (threshold 0)
        _entry("mapillary-vistas/panoptic-segmentation/maskformer_R50_bs16_300k", "R50", "4e9874",
               {"PQ": 36.3, "mIoU": 50.7}, object_mask_threshold=0.0),
        _entry("mapillary-vistas/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k",
               "swin_large_384", "132c71", {"PQ": 45.5, "mIoU": 60.8}, num_queries=200, object_mask_threshold=0.0),
        _entry("mapillary-vistas/semantic-segmentation/maskformer2_R50_bs16_300k", "R50", "6c66d0", _sem(57.4, 59.0),
               url_name="maskformer_R50_bs16_300k"),
        _entry("mapillary-vistas/semantic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_300k",
               "swin_large_384", "90ee2d", _sem(63.2, 64.7)),
    )
}  # fmt: skip


def _normalise(name: str) -> str:
    name = name.strip().removesuffix(".yaml")
    return name.split("configs/", 1)[-1]


def get_zoo_entry(name: str) -> ZooEntry:
    """The [`ZooEntry`] of an original config name (a `configs/...yaml` path is accepted too).

    Raises `KeyError` naming the closest known names.
    """
    key = _normalise(name)
    if key in ZOO:
        return ZOO[key]
    close = difflib.get_close_matches(key, list(ZOO), n=5, cutoff=0.5)
    hint = f" Closest matches: {close}." if close else ""
    raise KeyError(
        f"config={name!r} is not in the original Mask2Former model zoo table ({len(ZOO)} entries).{hint} "
        "Use `python conversion/convert_from_detectron2.py --list` to print every name."
    )
