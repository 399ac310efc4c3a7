"""Settings of `M2FImageProcessor`: their names, the keys of other processors' configs, and validation."""

from __future__ import annotations

import numbers
from typing import Any

from transformers.image_processing_utils import get_size_dict

from .image_modes import SCALINGS

SIZE_DIVISOR_MODES = ("pad", "stretch")
# PIL resampling codes -> torch interpolation modes; transformers maps them the same way through torchvision
RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# every setting a call can override (the constructor's arguments)
SETTING_NAMES = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "num_channels",
    "scaling",
    "size_divisor",
    "size_divisor_mode",
    "pad_size",
    "ignore_index",
    "do_reduce_labels",
    "num_labels",
    "mask_stride",
)
# names transformers' Mask2Former processor (or its older versions) uses for our settings
ALIASES = {"reduce_labels": "do_reduce_labels", "size_divisibility": "size_divisor"}
# keys of transformers' config that have no meaning here; dropped on load so they are not saved back
IGNORED_KEYS = (
    "image_processor_type",
    "processor_class",
    "feature_extractor_type",
    "_max_size",
    "data_format",
    "input_data_format",
    "default_to_square",
    "disable_grouping",
    "device",
    "return_tensors",
    "do_convert_rgb",
    "do_pad",
)


def as_given_statistic(statistic):
    """A mean / std as the user gave it: a number stays a number (and is saved as one), a sequence becomes a list."""
    if isinstance(statistic, numbers.Real) and not isinstance(statistic, bool):
        return float(statistic)
    return list(statistic)


def _statistic_values(value, name: str) -> list[float]:
    """`image_mean` / `image_std` as a list: one value (a scalar, applied to every channel) or one per channel."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value)]
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if not values:
        raise ValueError(f"`{name}` must be a number or a non-empty list of numbers (one per channel); got {value!r}.")
    return values


def statistics(settings: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The mean and standard deviation, each as a list of 1 value (every channel) or one value per channel."""
    return _statistic_values(settings["image_mean"], "image_mean"), _statistic_values(
        settings["image_std"], "image_std"
    )


def channel_count(settings: dict[str, Any]) -> int | None:
    """How many channels the processor makes: `num_channels` if set, else the number of per-channel values of
    `image_mean` / `image_std` (a list of one value counts as one channel, as in transformers), else None: every
    image keeps its own channels (scalar statistics)."""
    if settings["num_channels"] is not None:
        return int(settings["num_channels"])
    lengths = {
        len(_statistic_values(settings[name], name))
        for name in ("image_mean", "image_std")
        if not isinstance(settings[name], numbers.Real)
    }
    return lengths.pop() if len(lengths) == 1 else None


def validate_settings(settings: dict[str, Any]) -> None:
    """Raise `ValueError` naming the setting, the value and what was expected."""
    if settings["size_divisor_mode"] not in SIZE_DIVISOR_MODES:
        raise ValueError(
            f"`size_divisor_mode` must be one of {SIZE_DIVISOR_MODES}; got {settings['size_divisor_mode']!r}."
        )
    if settings["resample"] not in RESAMPLE_MODES:
        raise ValueError(
            f"`resample` must be a PIL code among {sorted(RESAMPLE_MODES)} (nearest, bilinear, bicubic); got "
            f"{settings['resample']!r}."
        )
    if settings["scaling"] not in SCALINGS:
        raise ValueError(f"`scaling` must be one of {SCALINGS}; got {settings['scaling']!r}.")
    if settings["size_divisor"] < 0:
        raise ValueError(f"`size_divisor` must be >= 0; got {settings['size_divisor']}.")
    if settings["mask_stride"] < 1:
        raise ValueError(f"`mask_stride` must be >= 1; got {settings['mask_stride']}.")
    num_channels = settings["num_channels"]
    if num_channels is not None and (
        isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1
    ):
        raise ValueError(f"`num_channels` must be a positive integer or None; got {num_channels!r}.")
    mean, std = statistics(settings)
    lengths = {len(mean), len(std)} - {1}
    if len(lengths) > 1 or (num_channels is not None and lengths and lengths != {num_channels}):
        expected = f"num_channels={num_channels}" if num_channels is not None else "each other"
        raise ValueError(
            f"`image_mean` ({len(mean)} values) and `image_std` ({len(std)} values) must give one value, or one per "
            f"channel matching {expected}; got image_mean={settings['image_mean']!r}, "
            f"image_std={settings['image_std']!r}."
        )
    if any(value == 0 for value in std):
        raise ValueError(f"`image_std` must not contain 0; got {settings['image_std']!r}.")


def resolve_settings(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The processor's settings with a call's `overrides` (None means "keep"), validated."""
    overrides = {ALIASES.get(key, key): value for key, value in overrides.items()}
    unknown = set(overrides) - set(SETTING_NAMES)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; valid ones are {list(SETTING_NAMES)}.")
    settings = dict(defaults)
    if "do_reduce_labels" in overrides and overrides["do_reduce_labels"] is not None:
        overrides["do_reduce_labels"] = bool(overrides["do_reduce_labels"])
    settings.update({key: value for key, value in overrides.items() if value is not None})
    settings["size"] = {
        key: value
        for key, value in dict(get_size_dict(settings["size"], default_to_square=False)).items()
        if value is not None
    }
    validate_settings(settings)
    return settings
