"""Large test images for the sliding-window benchmarks: a mosaic of the synthetic shapes scenes the bundled model
was trained on (128 x 128 tiles, each a scene of its own), so that every window holds what the model knows."""

from __future__ import annotations

import numpy as np


def shapes_mosaic(height: int, width: int, *, tile: int = 128, seed: int = 0, distinct: int = 64) -> np.ndarray:
    """An (height, width, 3) uint8 mosaic of `tile`-sized synthetic scenes (`distinct` different ones, repeated in a
    random order), built row by row without a second image-sized buffer."""
    from m2f_hf.data.synthetic import render_scene

    rng = np.random.default_rng(seed)
    scenes = [render_scene(rng, (tile, tile))[0] for _ in range(distinct)]
    image = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            scene = scenes[int(rng.integers(distinct))]
            rows, cols = min(tile, height - top), min(tile, width - left)
            image[top : top + rows, left : left + cols] = scene[:rows, :cols]
    return image


def save_mosaic(path: str, height: int, width: int, **kwargs) -> str:
    from PIL import Image

    Image.fromarray(shapes_mosaic(height, width, **kwargs)).save(path, compress_level=1)
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a large mosaic of the bundled model's synthetic scenes.")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from pathlib import Path

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {save_mosaic(args.output, args.height, args.width, seed=args.seed)}")


if __name__ == "__main__":
    main()
