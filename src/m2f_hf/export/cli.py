"""`m2f-export`: write a deployable ONNX folder (model.onnx + config.json + preprocessor_config.json).

Options are parsed and checked before torch is imported, so `--help` and option errors answer at once.
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_FATAL = 0, 2
# kept here (standard library only) and checked against the library's lists by the tests
PLUGINS = ("tensorrt",)
DTYPES = ("float32", "int8")
DEFAULT_OPSET, MIN_OPSET = 18, 18

DESCRIPTION = """\
Export a Mask2Former model to ONNX: OUTPUT/model.onnx (input pixel_values (batch, 3, height, width), dynamic batch,
height and width in multiples of 32; outputs class_queries_logits and masks_queries_logits), config.json (labels)
and preprocessor_config.json. The folder runs with m2f-segment --model OUTPUT and m2f_hf.export.M2FOnnxModel.

  m2f-export --model facebook/mask2former-swin-tiny-coco-panoptic --output m2f-onnx
  m2f-export --model my-checkpoint --output m2f-onnx-int8 --dtype int8
  m2f-export --model my-checkpoint --output m2f-trt --deform-attn-plugin tensorrt
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2f-export", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        required=True,
        help="our checkpoint folder, a transformers-native Mask2Former checkpoint, or a Hub id",
    )
    parser.add_argument("--output", required=True, help="folder to write (created)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} or newer (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--deform-attn-plugin",
        default=None,
        help="tensorrt: deformable attention as TensorRT's MultiscaleDeformableAttnPlugin_TRT node (for TensorRT "
        "engines; onnxruntime cannot run it). Default: standard ONNX operators only",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default) or int8 (onnxruntime's dynamic int8 quantisation of MatMul/Gemm weights)",
    )
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the check of the graph against the PyTorch model with onnxruntime",
    )
    return parser


class CLIError(Exception):
    """A bad option or a failed export; shown as one line."""


def check_args(args: argparse.Namespace) -> None:
    if args.opset < MIN_OPSET:
        raise CLIError(f"--opset {args.opset} is too old: the exported graph needs opset {MIN_OPSET} or newer.")
    if args.deform_attn_plugin is not None and args.deform_attn_plugin not in PLUGINS:
        raise CLIError(f"--deform-attn-plugin must be one of {', '.join(PLUGINS)}; got {args.deform_attn_plugin!r}.")
    if args.dtype not in DTYPES:
        raise CLIError(f"--dtype must be one of {', '.join(DTYPES)}; got {args.dtype!r}.")
    if args.dtype == "int8" and args.deform_attn_plugin is not None:
        raise CLIError("--dtype int8 is onnxruntime's quantiser, for the standard graph; drop --deform-attn-plugin.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `m2f-export`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        import m2f_hf

        m2f_hf.load_api()  # deferred while the command parsed its options (m2f_hf._startup)
        from .onnx_export import ExportError, export_onnx

        try:
            path = export_onnx(
                args.model,
                args.output,
                opset=args.opset,
                deform_attn_plugin=args.deform_attn_plugin,
                dtype=args.dtype,
                validate=not args.no_validate,
            )
        except ExportError as error:
            message = str(error)
            raise CLIError(f"--{message}" if message.startswith("model ") else message) from error
    except CLIError as error:
        print(f"m2f-export: error: {error}", file=sys.stderr)
        return EXIT_FATAL
    checked = "" if args.no_validate else " (checked against the PyTorch model with onnxruntime)"
    print(f"wrote {path}{checked}, config.json and preprocessor_config.json in {args.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
