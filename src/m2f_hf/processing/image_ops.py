"""Image conversion, output-size rules, resizing, normalisation and padding, all on torch tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

try:  # PIL is a hard dependency of the package, but keep the type check cheap and explicit
    from PIL import Image as PILImage
except ImportError:  # pragma: no cover
    PILImage = None


def _describe(image) -> str:
    if isinstance(image, (torch.Tensor, np.ndarray)):
        return f"{type(image).__name__} of shape {tuple(image.shape)} and dtype {image.dtype}"
    return type(image).__name__


def is_single_image(image) -> bool:
    """Whether `image` is one image (PIL, or an array/tensor of rank 2 or 3) rather than a batch."""
    if PILImage is not None and isinstance(image, PILImage.Image):
        return True
    if isinstance(image, (torch.Tensor, np.ndarray)):
        return image.ndim in (2, 3)
    return False


def make_image_list(images, argument: str = "images") -> list:
    """Turn a single image, a list of images or a 4-D batch into a flat list of single images."""
    if images is None:
        raise ValueError(f"`{argument}` is required, got None.")
    if is_single_image(images):
        return [images]
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 4:
            return list(images)
        raise ValueError(
            f"`{argument}` must be an image of rank 2 (H, W) or 3 (HWC or CHW), a batch of rank 4 or a list of "
            f"images; got {_describe(images)}."
        )
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"`{argument}` is an empty list; expected at least one image.")
        flat = []
        for item in images:
            if is_single_image(item):
                flat.append(item)
            else:
                raise ValueError(
                    f"`{argument}` must hold PIL images, numpy arrays or torch tensors of rank 2 or 3; got "
                    f"{_describe(item)}."
                )
        return flat
    raise ValueError(
        f"`{argument}` must be a PIL image, a numpy array, a torch tensor or a list of them; got {_describe(images)}."
    )


_ALLOWED_DTYPES = (torch.uint8, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CHANNEL_FORMATS = {"channels_first": False, "channels_last": True}


def _channels_last(shape: tuple[int, ...], num_channels: int | None, input_data_format, argument: str, image) -> bool:
    """Whether a rank-3 image is (H, W, C): `input_data_format` when given, else inferred from its shape."""
    if input_data_format is not None:
        key = getattr(input_data_format, "value", input_data_format)
        if key not in _CHANNEL_FORMATS:
            raise ValueError(
                f"`input_data_format` must be 'channels_first', 'channels_last' or None; got {input_data_format!r}."
            )
        return _CHANNEL_FORMATS[key]
    # channel counts that can become `num_channels` (grey, grey + alpha, RGB, RGBA), or any of them when unknown
    convertible = {1, 2, 3, 4} if num_channels in (None, 1, 3) else set()
    candidates = convertible | ({num_channels} if num_channels is not None else set())
    first, last = shape[0], shape[-1]
    # One end matching the expected count exactly decides; otherwise the first axis wins if it could be the channels
    # (transformers' rule of preferring channels-first in ambiguous cases such as a 3x4x3 image).
    if num_channels is not None and (first == num_channels) != (last == num_channels):
        return last == num_channels
    if first in candidates:
        return False
    if last in candidates:
        return True
    expected = f"{num_channels}" if num_channels is not None else "1 to 4"
    raise ValueError(
        f"`{argument}` must have {expected} channels on the first or last axis; got {_describe(image)}. Pass "
        "`input_data_format='channels_first'` or `'channels_last'` if the channel count is right."
    )


def image_hw(image, *, num_channels: int | None = 3, input_data_format=None) -> tuple[int, int]:
    """(height, width) of one image, its channel axis found as `to_chw_tensor` finds it (nothing is converted)."""
    if PILImage is not None and isinstance(image, PILImage.Image):
        return image.height, image.width
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) == 2:
        return shape
    if len(shape) != 3:
        raise ValueError(f"`images` must have rank 2 (H, W) or 3 (HWC or CHW); got {_describe(image)}.")
    last = _channels_last(shape, num_channels, input_data_format, "images", image)
    return shape[:2] if last else shape[1:]


def match_channels(tensor: torch.Tensor, num_channels: int | None, argument: str = "images") -> torch.Tensor:
    """A (C, H, W) image with `num_channels` channels (None: as it is).

    For a 3-channel (RGB) model, grey is replicated and alpha dropped (as PIL's `convert("RGB")`, which Detectron2
    uses to read images); for a 1-channel model, alpha is dropped and RGB with three equal channels is taken as grey.
    Any other mismatch raises.
    """
    channels = tensor.shape[0]
    if num_channels is None or channels == num_channels:
        return tensor
    if num_channels == 3:
        if channels in (1, 2):  # grey, grey + alpha
            return tensor[:1].expand(3, -1, -1)
        if channels == 4:  # RGB + alpha
            return tensor[:3]
    if num_channels == 1:
        if channels == 2:
            return tensor[:1]
        if channels in (3, 4) and torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[0], tensor[2]):
            return tensor[:1]
    hint = " convert it to grayscale first (e.g. PIL's convert('L'))." if num_channels == 1 else ""
    raise ValueError(
        f"`{argument}` has {channels} channels but the processor makes {num_channels}-channel inputs (its "
        f"`num_channels`, or the number of values of `image_mean` / `image_std`);{hint or ' pass images with that many.'}"
    )


def to_chw_tensor(
    image,
    argument: str = "images",
    *,
    num_channels: int | None = 3,
    input_data_format=None,
    scaling: str = "range",
) -> torch.Tensor:
    """Convert one image to a (num_channels, H, W) tensor on the 0-255 scale: uint8, or float32 for deeper images.

    PIL images of every mode go through `image_modes.pil_to_array`; uint16 (16-bit) and other non-uint8 integer
    data are scaled to 0-255 by `scaling` (`image_modes.to_8bit_scale`), float data are taken as already on the
    0-255 scale unless `scaling="minmax"`. Channels are matched to `num_channels` by `match_channels` (None keeps
    the image's own).
    """
    from .image_modes import pil_to_array, to_8bit_scale

    if PILImage is not None and isinstance(image, PILImage.Image):
        array = pil_to_array(image)
        tensor = torch.from_numpy(array.copy())
        channels_last = tensor.ndim == 3
    else:
        if isinstance(image, np.ndarray):
            if not (image.dtype.kind == "f" or (image.dtype.kind == "u" and image.dtype.itemsize <= 2)):
                raise ValueError(
                    f"`{argument}` must have dtype uint8, uint16 or floating point; got a numpy array of dtype "
                    f"{image.dtype}."
                )
            native = image.dtype.newbyteorder("=")
            # a read-only array (`np.asarray(pil_image)`) is copied: torch warns about sharing its memory
            array = np.ascontiguousarray(image, dtype=native) if image.flags.writeable else np.array(image, native)
            tensor = torch.from_numpy(array)
        elif isinstance(image, torch.Tensor):
            tensor = image.detach()
        else:
            raise ValueError(
                f"`{argument}` must hold PIL images, numpy arrays or torch tensors; got {_describe(image)}."
            )
        if tensor.dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"`{argument}` must have dtype uint8, uint16 or floating point; got {_describe(image)}.")
        if tensor.ndim not in (2, 3):
            raise ValueError(f"`{argument}` must have rank 2 (H, W) or 3 (HWC or CHW); got {_describe(image)}.")
        channels_last = tensor.ndim == 3 and _channels_last(
            tuple(tensor.shape), num_channels, input_data_format, argument, image
        )
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif channels_last:
        tensor = tensor.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"`{argument}` has a side of size 0; got {_describe(image)}. Expected height, width >= 1.")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(f"`{argument}` contains NaN or infinite values ({_describe(image)}).")
    tensor = match_channels(tensor, num_channels, argument)
    # the values last: on the matched channels (alpha dropped before a min-max stretch)
    return to_8bit_scale(tensor, scaling=scaling, argument=f"`{argument}`")


def resized_hw(height: int, width: int, size: dict, size_divisor: int = 0, stretch_to_divisor: bool = False):
    """Output (height, width) of the resize step for one input size.

    `size` holds `shortest_edge` (optionally with `longest_edge`), `height` and `width`, or `max_height` and
    `max_width`. The aspect-ratio rounding follows transformers (truncation), so that pixel values match its
    processor exactly. With `stretch_to_divisor` the result is rounded up to a multiple of `size_divisor`, which is
    transformers' behaviour; the original Detectron2 keeps the aspect ratio and pads instead.
    """
    shortest, longest = size.get("shortest_edge"), size.get("longest_edge")
    if shortest:
        short_target = shortest
        raw = None
        if longest:
            lo, hi = float(min(height, width)), float(max(height, width))
            if hi / lo * short_target > longest:
                # the long side would exceed `longest_edge`: shrink the short side target accordingly
                raw = longest * lo / hi
                short_target = int(round(raw))
        if (height <= width and height == short_target) or (width <= height and width == short_target):
            new_h, new_w = height, width
        elif width < height:
            new_w = short_target
            new_h = int((raw if raw is not None else short_target) * height / width)
        else:
            new_h = short_target
            new_w = int((raw if raw is not None else short_target) * width / height)
    elif size.get("height") and size.get("width"):
        new_h, new_w = size["height"], size["width"]
    elif size.get("max_height") and size.get("max_width"):
        scale = min(size["max_height"] / height, size["max_width"] / width)
        new_h, new_w = int(height * scale), int(width * scale)
    else:
        raise ValueError(
            "`size` must contain 'shortest_edge' (optionally with 'longest_edge'), 'height' and 'width', or "
            f"'max_height' and 'max_width'; got {size}."
        )
    if stretch_to_divisor and size_divisor > 0:
        new_h = int(math.ceil(new_h / size_divisor) * size_divisor)
        new_w = int(math.ceil(new_w / size_divisor) * size_divisor)
    return new_h, new_w


def round_up(value: int, divisor: int) -> int:
    if divisor <= 0:
        return value
    return int(math.ceil(value / divisor) * divisor)


def resize_batch(images: torch.Tensor, new_hw: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a (N, C, H, W) batch of same-size images.

    `mode` is "bilinear" or "bicubic" (both antialiased, as torchvision does), "nearest" or "nearest-exact". uint8
    images stay uint8 for bilinear on CPU (torch's native uint8 kernel, which torchvision also uses), so the result is
    bit-identical to transformers' torchvision processor; other cases compute in float and round back.
    """
    if tuple(images.shape[-2:]) == tuple(new_hw):
        return images
    if mode not in ("bilinear", "bicubic", "nearest", "nearest-exact"):
        raise ValueError(f"`mode` must be 'bilinear', 'bicubic', 'nearest' or 'nearest-exact'; got {mode!r}.")
    smooth = mode in ("bilinear", "bicubic")
    dtype = images.dtype
    native = dtype in (torch.float32, torch.float64) or (
        dtype == torch.uint8 and (not smooth or (mode == "bilinear" and images.device.type == "cpu"))
    )
    # label maps hold integer ids: float64 represents every id below 2**53 exactly
    x = images if native else images.to(torch.float64 if not dtype.is_floating_point else torch.float32)
    out = F.interpolate(
        x,
        size=tuple(new_hw),
        mode=mode,
        align_corners=False if smooth else None,
        antialias=smooth,
    )
    if out.dtype != dtype:
        if not dtype.is_floating_point:
            if mode == "bicubic" and dtype == torch.uint8:
                out = out.clamp_(0, 255)
            out = out.round_()
        out = out.to(dtype)
    return out


def rescale_and_normalize(
    images: torch.Tensor,
    *,
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float32 `(x * rescale_factor - mean) / std`, with the same fused arithmetic as transformers' processor.

    With `out` (a float32 tensor, or a view, of the images' shape) the result is written there, converted in the
    copy and normalised in place: no full-size temporaries.
    """
    if out is not None:
        out.copy_(images)
        images, copied = out, True
    else:
        copied = images.dtype != torch.float32
        images = images.to(torch.float32, memory_format=torch.contiguous_format)
    if do_normalize:
        mean = torch.tensor(image_mean, dtype=torch.float32, device=images.device)
        std = torch.tensor(image_std, dtype=torch.float32, device=images.device)
        if do_rescale:
            # (x * r - m) / s == (x - m / r) / (s / r): one pass over the pixels instead of two
            mean = mean * (1.0 / rescale_factor)
            std = std * (1.0 / rescale_factor)
        if copied:  # a fresh tensor: normalise in place, without two more full-size temporaries
            return images.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))
        return (images - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    if do_rescale:
        return images.mul_(rescale_factor) if copied else images * rescale_factor
    return images


def pad_bottom_right(images: torch.Tensor, padded_hw: Sequence[int], value: float = 0) -> torch.Tensor:
    """Pad a (..., H, W) tensor at the bottom and right to `padded_hw`."""
    pad_h = padded_hw[0] - images.shape[-2]
    pad_w = padded_hw[1] - images.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"`pad_size` {tuple(padded_hw)} is smaller than an image of size {tuple(images.shape[-2:])}.")
    if pad_h == 0 and pad_w == 0:
        return images
    out = images.new_full((*images.shape[:-2], padded_hw[0], padded_hw[1]), value)
    out[..., : images.shape[-2], : images.shape[-1]] = images
    return out
