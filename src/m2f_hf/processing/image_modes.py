"""Every image mode and bit depth turned into what the image processor takes, and image files read that way.

The processor works on the 0-255 scale of 8-bit images (`rescale_factor` 1/255 then maps it to 0-1). What other
inputs become on that scale:

| input | becomes |
| --- | --- |
| 8-bit `L`, `RGB` (PIL, or uint8 arrays) | unchanged |
| palette `P`, `CMYK`, `YCbCr`, `HSV`, `LAB`, bilevel `1` | their RGB colours (`1`: grey 0 / 255); CMYK through its embedded ICC profile when it has one |
| alpha (`LA`, `PA`, `RGBA`, ...) | dropped for grey and RGB models (Detectron2 reads images with `convert("RGB")`) |
| 16-bit `I;16`, `I;16B`, `I;16L`, `I;16N`, uint16 arrays | `scaling="range"` (default): value / 257, so 65535 is 255; `"minmax"`: the image's own minimum..maximum stretched to 0..255 |
| 32-bit integer `I` | as 16-bit when its values lie in 0..65535; otherwise only `"minmax"` can scale it |
| float `F` *files* | `"range"`: 0..1 (the usual range of float images) times 255; values outside it need `"minmax"` |
| float arrays given to the processor | already on the 0-255 scale (transformers' convention); `"minmax"` stretches them |

Grey stays one channel here: the processor replicates it to RGB for a 3-channel model and keeps it for a
1-channel one (`num_channels=1`).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.utils import logging

logger = logging.get_logger(__name__)

SCALINGS = ("range", "minmax")
# 65535 / 255: a 16-bit value range maps onto the 8-bit one exactly (v * 257 for an 8-bit v is its 16-bit twin)
_SIXTEEN_TO_EIGHT_BIT = 257.0
_UINT16_MAX = 65535
# Many microscopy cameras write 12 bits into 16-bit files: under "range" such an image is at most 6% grey.
_TWELVE_BIT_MAX = 4095
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# PIL modes whose pixels are colours that PIL (or ImageCms) decodes to RGB
_COLOUR_MODES = ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "RGBa")


def check_scaling(scaling: str, argument: str = "scaling") -> str:
    if scaling not in SCALINGS:
        raise ValueError(f"`{argument}` must be one of {SCALINGS}; got {scaling!r}.")
    return scaling


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK through the image's ICC profile (print profiles differ a lot from PIL's naive formula), else PIL's."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImportError, OSError, ValueError) as error:  # ImageCms.PyCMSError is an OSError
            logger.warning(f"cannot apply the CMYK image's ICC profile ({error}); using PIL's CMYK -> RGB formula.")
    return image.convert("RGB")


def _decode_colours(image: Image.Image) -> Image.Image:
    """A colour-encoded image (palette, CMYK, YCbCr, ...) as RGB, or RGBA when it carries transparency."""
    mode = image.mode
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    has_alpha = mode in ("PA", "RGBa") or (mode == "P" and "transparency" in image.info)
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as error:
        raise ValueError(f"image mode {mode!r} cannot be converted to RGB ({error}).") from error


def pil_to_array(image: Image.Image) -> np.ndarray:
    """The pixels of a PIL image of any mode, values kept: (H, W) grey or (H, W, C) with alpha as the last channel.

    uint8 for 8-bit modes (colour-encoded modes decoded to RGB / RGBA, bilevel `1` as 0 / 255), uint16 for the
    16-bit modes and for `I` images whose values fit in 16 bits, int32 for other `I` images, float32 for `F`.
    """
    mode = image.mode
    if mode in _COLOUR_MODES:
        image = _decode_colours(image)
    elif mode == "1":
        image = image.convert("L")
    elif mode == "La":  # premultiplied grey + alpha
        image = image.convert("RGBa").convert("RGBA")
    array = np.asarray(image)
    if mode in _SIXTEEN_BIT_MODES:
        return array.astype(np.uint16, copy=False)  # I;16B is big-endian: native byte order for torch
    if mode == "I" and array.size and array.min() >= 0 and array.max() <= _UINT16_MAX:
        return array.astype(np.uint16)
    if array.dtype not in (np.uint8, np.int32, np.float32):
        raise ValueError(f"image mode {mode!r} (pixels of dtype {array.dtype}) is not supported.")
    return array


def to_8bit_scale(tensor: torch.Tensor, *, scaling: str = "range", argument: str = "`images`") -> torch.Tensor:
    """Values of one image on the 0-255 scale: uint8 stays uint8 under `"range"`, anything else becomes float32.

    `"range"`: uint16 (and int32 within 0..65535) divided by 257; float kept (already on the 0-255 scale).
    `"minmax"`: the image's own minimum..maximum (over all channels, so colours keep their balance) stretched to
    0..255; a constant image becomes 0.
    """
    check_scaling(scaling)
    if scaling == "minmax":
        values = tensor.to(torch.float32)
        low, high = values.min(), values.max()
        if high <= low:
            return torch.zeros_like(values)
        return (values - low).mul_(255.0 / float(high - low))
    if tensor.dtype == torch.uint8 or tensor.is_floating_point():
        return tensor
    if tensor.dtype == torch.int32:
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high > _UINT16_MAX:
            raise ValueError(
                f"{argument} is a 32-bit integer image with values in [{low}, {high}], outside the 16-bit range "
                "0..65535 that `scaling='range'` knows; pass scaling='minmax' (CLI: --scaling minmax) to stretch its "
                "own range."
            )
    values = tensor.to(torch.float32)
    if float(values.max()) <= _TWELVE_BIT_MAX:
        logger.warning_once(
            f"a 16-bit image uses only values up to {_TWELVE_BIT_MAX} (12 bits, as many microscopy cameras write): "
            "scaled by the 16-bit range it is nearly black to the model. scaling='minmax' (CLI: --scaling minmax) "
            "stretches each image's own range."
        )
    return values.div_(_SIXTEEN_TO_EIGHT_BIT)


def prepare_pil_image(image: Image.Image, *, scaling: str = "range") -> Image.Image:
    """A PIL image of any mode as `RGB`, `L` (8-bit grey) or `F` (deeper grey, float32 on the 0-255 scale), alpha
    dropped, ready for the processor. Raises `ValueError` for values that `scaling` cannot map (see module doc)."""
    check_scaling(scaling)
    mode = image.mode
    if mode in ("RGB", "L") and scaling == "range":
        return image
    array = pil_to_array(image)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., :-1]  # alpha
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8 and scaling == "range":
        return Image.fromarray(np.ascontiguousarray(array))
    if array.dtype == np.float32:
        if not np.isfinite(array).all():
            raise ValueError(f"the float image (mode {mode!r}) contains NaN or infinite values.")
        if scaling == "range":
            low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
            if low < 0.0 or high > 1.0:
                raise ValueError(
                    f"the float image (mode {mode!r}) has values in [{low:.6g}, {high:.6g}]; `scaling='range'` reads "
                    "float images as 0..1. Pass scaling='minmax' (CLI: --scaling minmax) to stretch its own range."
                )
            array = array * np.float32(255.0)
            return Image.fromarray(array, mode="F")
    scaled = to_8bit_scale(torch.from_numpy(np.array(array)), scaling=scaling, argument=f"the image (mode {mode!r})")
    if scaled.dtype == torch.uint8:
        return Image.fromarray(scaled.numpy())
    if scaled.ndim == 3:  # colour deeper than 8 bits does not come from PIL; minmax on RGB: back to 8 bits
        return Image.fromarray(scaled.round_().clamp_(0, 255).to(torch.uint8).numpy())
    return Image.fromarray(scaled.numpy(), mode="F")


def _read(source, *, scaling: str) -> Image.Image:
    try:
        with Image.open(source) as handle:
            image = ImageOps.exif_transpose(handle)  # a loaded copy, transposed when the EXIF orientation says so
            image.load()
    except UnidentifiedImageError as error:
        raise OSError("not an image file that Pillow can read") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise OSError(f"cannot decode the image ({error})") from error
    try:
        return prepare_pil_image(image, scaling=scaling)
    except ValueError as error:
        raise OSError(str(error).rstrip(".")) from error


def load_image(path: str | os.PathLike, *, scaling: str = "range") -> Image.Image:
    """The image file at `path` ready for the processor: EXIF orientation applied (phone photos), every mode
    converted by [`prepare_pil_image`] (`RGB`, `L` or `F`), the first frame of an animation or a multi-page file.

    Raises:
        OSError: with a readable reason (no such file, a directory, not an image Pillow can read, corrupt data,
            values `scaling` cannot map).
    """
    check_scaling(scaling)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise OSError("no such file")
    if os.path.isdir(path):
        raise OSError("is a directory, expected an image file")
    return _read(path, scaling=scaling)


def load_image_bytes(data: bytes, *, scaling: str = "range") -> Image.Image:
    """[`load_image`] for the bytes of an image file (downloaded, or decoded from base64)."""
    check_scaling(scaling)
    return _read(io.BytesIO(data), scaling=scaling)


def warn_if_already_rescaled(images: list) -> None:
    """Warn (once) when a float input lies within [0, 1]: the processor takes float values on the 0-255 scale (as
    transformers does) and `rescale_factor` would make such an image nearly black."""
    for image in images:
        if isinstance(image, Image.Image):
            if image.mode != "F":
                continue
            image = np.asarray(image)
        if isinstance(image, torch.Tensor):
            floating, count = image.is_floating_point(), image.numel()
        elif isinstance(image, np.ndarray):
            floating, count = image.dtype.kind == "f", image.size
        else:
            continue
        if floating and count and float(image.min()) >= 0 and float(image.max()) <= 1:
            logger.warning_once(
                "a float image has all its values in [0, 1] but `do_rescale` multiplies them by `rescale_factor` "
                "(1/255): float inputs are taken on the 0-255 scale. Pass `do_rescale=False` if they are already "
                "scaled to [0, 1]."
            )
            return
