"""Export an m2f_hf checkpoint to transformers' native `Mask2FormerForUniversalSegmentation` format.

    python conversion/convert_to_transformers.py --src DIR --dst DIR [--check]

The export loads with plain transformers (no m2f_hf needed) and runs in the Hub's inference widget. It needs a
transformers backbone (`backbone_config`: ResNet, Swin, ...); timm backbones have no transformers-native equivalent.
Every key is mapped by `m2f_hf.convert.state_dict_to_transformers` (none missing, none unused); the preprocessor
settings, if `preprocessor_config.json` exists, become a `Mask2FormerImageProcessor`, and the model card, if any,
is rewritten with `library_name: transformers`. `--check` runs both models on a random image and compares logits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Our processor settings that transformers' Mask2FormerImageProcessor takes under the same name and meaning.
_PROCESSOR_FIELDS = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "size_divisor",
    "ignore_index",
    "do_reduce_labels",
    "num_labels",
)


def export_model(src: str | Path):
    """Our model at `src` as a transformers `Mask2FormerForUniversalSegmentation` (weights mapped exactly)."""
    from transformers import Mask2FormerForUniversalSegmentation

    from m2f_hf import M2FForUniversalSegmentation
    from m2f_hf.convert import config_to_transformers, state_dict_to_transformers

    ours = M2FForUniversalSegmentation.from_pretrained(src)
    hf_config = config_to_transformers(ours.config)
    model = Mask2FormerForUniversalSegmentation(hf_config)
    state_dict = state_dict_to_transformers(ours.state_dict())
    result = model.load_state_dict(state_dict, strict=False)
    # transformers keeps the loss's class weights as a buffer; it is rebuilt from `no_object_weight`, not stored
    missing = [k for k in result.missing_keys if k != "criterion.empty_weight"]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"export does not fit transformers' model: missing {missing[:20]}, unexpected {result.unexpected_keys[:20]}"
        )
    return ours.eval(), model.eval()


def export_processor(src: Path, dst: Path) -> bool:
    """Write a transformers `preprocessor_config.json` from ours; `False` when `src` has none."""
    path = src / "preprocessor_config.json"
    if not path.is_file():
        return False
    from transformers import Mask2FormerImageProcessor

    settings = json.loads(path.read_text())
    kwargs = {k: settings[k] for k in _PROCESSOR_FIELDS if k in settings}
    if settings.get("size_divisor_mode", "pad") != "pad" or settings.get("pad_size"):
        raise ValueError(
            f"{path}: size_divisor_mode={settings.get('size_divisor_mode')!r}, pad_size={settings.get('pad_size')!r} "
            "have no transformers equivalent (it pads to a multiple of size_divisor only)."
        )
    Mask2FormerImageProcessor(**kwargs).save_pretrained(dst)
    return True


def export_card(src: Path, dst: Path, repo_id: str | None) -> bool:
    """Rewrite our model card for the export (`library_name: transformers`); `False` when `src` has none."""
    path = src / "README.md"
    if not path.is_file():
        return False
    from huggingface_hub import ModelCard

    from m2f_hf.modelcard import write_model_card

    data = ModelCard.load(path).data
    results = data.eval_results or []
    tags = list(data.tags or [])
    task = next((t.removesuffix("-segmentation") for t in tags if t in _TASK_TAGS), None)
    source = (results[0].source_name, results[0].source_url) if results and results[0].source_url else None
    write_model_card(
        dst,
        model_name=data.model_name or dst.name,
        repo_id=repo_id,
        task=task,
        dataset_id=(results[0].dataset_type if results else None) or ((data.datasets or [None])[0]),
        dataset_name=results[0].dataset_name if results else None,
        metrics={r.metric_name or r.metric_type: r.metric_value for r in results},
        metrics_source=source,
        license=data.license or "apache-2.0",
        library_name="transformers",
        base_model=data.base_model,
        tags=[t for t in tags if t not in _TASK_TAGS],
        description=f"transformers-native export of the m2f_hf checkpoint `{data.model_name or src.name}`.",
    )
    return True


_TASK_TAGS = ("panoptic-segmentation", "instance-segmentation", "semantic-segmentation")


def check_logits(ours, exported, *, size: int = 64, atol: float = 1e-4) -> float:
    """Largest absolute difference of class and mask logits between both models on one random image."""
    import torch

    torch.manual_seed(0)
    pixel_values = torch.randn(1, 3, size, size)
    with torch.no_grad():
        a = ours(pixel_values)
        b = exported(pixel_values)
    diff = max(
        (a.class_queries_logits - b.class_queries_logits).abs().max().item(),
        (a.masks_queries_logits - b.masks_queries_logits).abs().max().item(),
    )
    if diff > atol:
        raise AssertionError(f"exported logits differ from ours by {diff:.3g} (> {atol})")
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="m2f_hf checkpoint directory")
    parser.add_argument("--dst", required=True, help="output directory for the transformers-native checkpoint")
    parser.add_argument("--repo-id", help="Hub id to show in the card's usage snippets")
    parser.add_argument("--check", action="store_true", help="compare both models' logits on a random image")
    args = parser.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    try:
        ours, exported = export_model(src)
    except (KeyError, ValueError, OSError) as error:
        print(f"error: cannot export {str(src)!r}: {error}", file=sys.stderr)
        return 1
    dst.mkdir(parents=True, exist_ok=True)
    exported.save_pretrained(dst)
    wrote = ["model", "config"]
    if export_processor(src, dst):
        wrote.append("preprocessor_config.json")
    if export_card(src, dst, args.repo_id):
        wrote.append("README.md")
    if args.check:
        print(f"max |logit difference| = {check_logits(ours, exported):.3g}")
    print(f"wrote {', '.join(wrote)} to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
