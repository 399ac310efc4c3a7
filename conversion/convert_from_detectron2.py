"""Convert an original Detectron2 Mask2Former checkpoint (`model_final_*.pkl`) to m2f_hf.

    python conversion/convert_from_detectron2.py --checkpoint model_final_94dc52.pkl \
        --config coco/panoptic-segmentation/maskformer2_R50_bs16_50ep --dst mask2former-r50-coco-panoptic

`--config` names the original config the checkpoint was trained with (its path under `configs/`, `.yaml` optional);
`--list` prints every known name with its download address. The output folder holds `model.safetensors`,
`config.json` (with `id2label`), `preprocessor_config.json` (the original test-time resize and normalisation) and a
`README.md` model card, and loads with `M2FForUniversalSegmentation.from_pretrained(DST)`.

The `.pkl` is read with a restricted unpickler (plain containers and numpy arrays only). Every original key must map
onto the model; a missing or unused key, or a shape that does not fit the config, stops the conversion.
The original weights are licensed CC BY-NC 4.0 (non-commercial); the converted weights keep that licence.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="the original model_final_*.pkl")
    parser.add_argument(
        "--config", help="original config name, e.g. coco/panoptic-segmentation/maskformer2_R50_bs16_50ep"
    )
    parser.add_argument("--dst", help="output directory")
    parser.add_argument("--list", action="store_true", help="print the model zoo table and exit")
    parser.add_argument("--no-card", action="store_true", help="do not write README.md")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the result to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)

    from m2f_hf.convert.detectron2 import CheckpointError, convert_checkpoint
    from m2f_hf.convert.model_zoo import ZOO

    if args.list:
        for name, entry in ZOO.items():
            print(f"{name}\t{entry.backbone}\t{entry.num_queries} queries\t{entry.url}")
        return 0
    missing = [flag for flag in ("checkpoint", "config", "dst") if getattr(args, flag) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join('--' + m for m in missing)}")

    try:
        dst = convert_checkpoint(args.checkpoint, args.config, args.dst, write_card=not args.no_card)
    except KeyError as error:  # unknown config name: the message lists close matches
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    except CheckpointError as error:
        print(f"error: cannot convert {args.checkpoint!r} with config {args.config!r}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {dst}")
    if args.push_to_hub:
        from m2f_hf.hub import push_to_hub

        info = push_to_hub(dst, args.push_to_hub, private=args.private)
        print(f"uploaded to {getattr(info, 'commit_url', args.push_to_hub)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
