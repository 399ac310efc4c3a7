"""Reading image files for segmentation."""

from __future__ import annotations

import os


def load_image(path: str):
    """The image at `path` as RGB (EXIF orientation applied, as `transformers.image_utils.load_image` does).

    Raises:
        OSError: with a readable reason (no such file, a folder, not an image, truncated or corrupt data).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not os.path.exists(path):
        raise OSError("no such file")
    if os.path.isdir(path):
        raise OSError("is a directory, expected an image file")
    try:
        with Image.open(path) as handle:
            image = ImageOps.exif_transpose(handle)
            image.load()
    except UnidentifiedImageError as error:
        raise OSError("not an image file that Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise OSError(f"cannot decode the image ({error})") from error
    return image.convert("RGB")


__all__ = ["load_image"]
