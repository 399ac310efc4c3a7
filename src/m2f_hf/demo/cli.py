"""`m2f-demo` (also `python -m m2f_hf.demo`): serve the segmentation page on this machine.

    m2f-demo                                   # http://127.0.0.1:7860 with the bundled model, offline
    m2f-demo --host 0.0.0.0 --port 8000        # reachable from other machines
    m2f-demo --model path/to/checkpoint        # the model used when the page's model box is empty
    m2f-demo --share                           # also a temporary public gradio.live link (needs the internet)

Options are parsed before Gradio or torch are imported, so `--help` and mistakes answer at once. Without Gradio
installed the command says which extra to install and exits with status 2; a `--model` that cannot be loaded also
exits with status 2 before the server starts.
"""

from __future__ import annotations

import argparse
import sys

from .service import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_MODELS, DEFAULT_MAX_PIXELS, DEFAULT_MAX_PIXELS_WINDOWED

EXIT_FATAL = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2f-demo",
        description="Serve a web page that segments images with Mask2Former (m2f_hf), the same way m2f-segment does.",
        epilog="See docs/demo.md, also for running it on a Hugging Face Space.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public link through Gradio")
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint folder (ours or transformers-native) or Hub id loaded at start and used when the page's "
        "model box is empty; default: the bundled model",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest image (width x height) the page segments whole (default: {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--max-pixels-windowed",
        type=int,
        default=DEFAULT_MAX_PIXELS_WINDOWED,
        help=f"largest image with sliding windows, when available (default: {DEFAULT_MAX_PIXELS_WINDOWED})",
    )
    parser.add_argument("--max-models", type=int, default=DEFAULT_MAX_MODELS, help="models kept loaded (default: 2)")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="requests segmented at the same time; others wait (default: 1)"
    )
    parser.add_argument(
        "--max-queue", type=int, default=None, help="requests allowed to wait; more are refused (default: no limit)"
    )
    parser.add_argument(
        "--max-file-size",
        default=DEFAULT_MAX_FILE_SIZE,
        help=f"largest upload, e.g. 20mb or 1gb (default: {DEFAULT_MAX_FILE_SIZE})",
    )
    return parser


def _error(message: str) -> int:
    print(f"m2f-demo: error: {message}", file=sys.stderr)
    return EXIT_FATAL


def main(argv: list[str] | None = None) -> int:
    """Entry point of `m2f-demo`; serves until interrupted and returns the exit status."""
    args = build_parser().parse_args(argv)
    for name in ("port", "max_pixels", "max_pixels_windowed", "max_models", "concurrency"):
        if getattr(args, name) < 1:
            return _error(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(args, name)}.")
    if args.max_queue is not None and args.max_queue < 1:
        return _error(f"--max-queue must be a positive integer; got {args.max_queue}.")
    from .app import build_demo, require_gradio

    try:
        require_gradio()
    except ImportError as error:
        return _error(str(error))
    from transformers.utils import logging as hf_logging

    from ..inference.loading import ModelLoadError

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model would bury the server's address
    try:
        demo = build_demo(
            model=args.model,
            device=args.device,
            max_pixels=args.max_pixels,
            max_pixels_windowed=args.max_pixels_windowed,
            max_models=args.max_models,
            concurrency=args.concurrency,
            max_queue=args.max_queue,
        )
    except ModelLoadError as error:
        return _error(f"--{error}" if str(error).startswith(("model ", "device ")) else str(error))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=args.max_file_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
