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


_ALLOWED_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)


def to_chw_tensor(image, argument: str = "images") -> torch.Tensor:
    """Convert one image to a (3, H, W) tensor, uint8 or floating point, keeping its values.

    Grayscale images are replicated to three channels; an alpha channel is dropped (as PIL's
    `convert("RGB")`, which Detectron2 uses to read images).
    """
    if PILImage is not None and isinstance(image, PILImage.Image):
        if image.mode not in ("RGB", "L", "RGBA"):
            # palette, CMYK, 16-bit, ...: let PIL decode them to RGB
            image = image.convert("RGB")
        array = np.asarray(image)
        tensor = torch.from_numpy(array.copy())
        channels_last = tensor.ndim == 3
    else:
        if isinstance(image, np.ndarray):
            if image.dtype == np.bool_ or not (np.issubdtype(image.dtype, np.floating) or image.dtype == np.uint8):
                raise ValueError(
                    f"`{argument}` must have dtype uint8 or floating point; got a numpy array of dtype {image.dtype}."
                )
            tensor = torch.from_numpy(np.ascontiguousarray(image))
        elif isinstance(image, torch.Tensor):
            tensor = image.detach()
        else:
            raise ValueError(
                f"`{argument}` must hold PIL images, numpy arrays or torch tensors; got {_describe(image)}."
            )
        if tensor.dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"`{argument}` must have dtype uint8 or floating point; got {_describe(image)}.")
        if tensor.ndim not in (2, 3):
            raise ValueError(f"`{argument}` must have rank 2 (H, W) or 3 (HWC or CHW); got {_describe(image)}.")
        channels_last = False
        if tensor.ndim == 3:
            # Channel axis: first if it has 1, 3 or 4 entries, else last; the ambiguous case (both ends look like
            # channels, e.g. a 3x4x3 image) follows transformers' rule of preferring channels-first.
            if tensor.shape[0] in (1, 3, 4):
                channels_last = False
            elif tensor.shape[-1] in (1, 3, 4):
                channels_last = True
            else:
                raise ValueError(
                    f"`{argument}` must have 1, 3 or 4 channels on the first or last axis; got {_describe(image)}."
                )
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(0)
    elif channels_last:
        tensor = tensor.permute(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if tensor.shape[-2] == 0 or tensor.shape[-1] == 0:
        raise ValueError(f"`{argument}` has a side of size 0; got {_describe(image)}. Expected height, width >= 1.")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise ValueError(f"`{argument}` contains NaN or infinite values ({_describe(image)}).")
    channels = tensor.shape[0]
    if channels == 1:
        tensor = tensor.expand(3, -1, -1)
    elif channels == 4:
        tensor = tensor[:3]
    elif channels != 3:  # pragma: no cover - excluded above
        raise ValueError(f"`{argument}` must have 1, 3 or 4 channels; got {_describe(image)}.")
    # keep an (H, W, C) memory layout if the input had one: torch's uint8 antialiased resize works channels-last
    return tensor


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
