"""Convert a transformers-native Mask2Former checkpoint to m2f_hf.

    python conversion/convert_from_transformers.py --src DIR_OR_HUB_ID --dst DIR

`--src` is a directory written by transformers' `Mask2FormerForUniversalSegmentation.save_pretrained` (config.json,
safetensors weights, optionally preprocessor_config.json) or a Hub id such as
`facebook/mask2former-swin-small-coco-instance`. Every source key must map onto the model: a missing or unused key
stops the conversion. The result loads with `M2FForUniversalSegmentation.from_pretrained(DST)`.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="transformers checkpoint directory or Hub id")
    parser.add_argument("--dst", required=True, help="output directory for the m2f_hf checkpoint")
    parser.add_argument("--check", action="store_true", help="run both models on a random input and compare logits")
    args = parser.parse_args(argv)

    import torch

    from m2f_hf.convert import from_transformers_pretrained

    try:
        model = from_transformers_pretrained(args.src)
    except (KeyError, ValueError, FileNotFoundError, OSError) as error:
        print(f"error: cannot convert {args.src!r}: {error}", file=sys.stderr)
        return 1
    os.makedirs(args.dst, exist_ok=True)
    model.save_pretrained(args.dst)

    source_dir = args.src if os.path.isdir(args.src) else None
    if source_dir is None:
        from huggingface_hub import snapshot_download

        source_dir = snapshot_download(args.src, allow_patterns=["*.json"])
    if os.path.isfile(os.path.join(source_dir, "preprocessor_config.json")):
        from m2f_hf.image_processing_m2f import M2FImageProcessor

        M2FImageProcessor.from_pretrained(source_dir).save_pretrained(args.dst)

    if args.check:
        from transformers import Mask2FormerForUniversalSegmentation

        reference = Mask2FormerForUniversalSegmentation.from_pretrained(source_dir).eval()
        pixel_values = torch.randn(1, 3, 256, 320)
        with torch.no_grad():
            ours, theirs = model(pixel_values), reference(pixel_values)
        diff = max(
            (ours.class_queries_logits - theirs.class_queries_logits).abs().max().item(),
            (ours.masks_queries_logits - theirs.masks_queries_logits).abs().max().item(),
        )
        print(f"max abs logit difference vs transformers: {diff:.3g}")
        if diff > 1e-4:
            print("error: converted model differs from the source by more than 1e-4", file=sys.stderr)
            return 1
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
