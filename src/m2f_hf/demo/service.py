"""What the web demo computes, without Gradio: the demo's one link to the library.

Every call the page makes into m2f_hf goes through this module: model loading (`m2f_hf.inference.loading`), the
image loader the CLI uses, `segment_image`, the CLI's JSON records and document, and the drawing code of
`m2f_hf.visualization`. So a picture segmented on the page gives the same segments, JSON and overlay as
`m2f-segment` with the same options, and a change to the shared path reaches the page with no edit here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

# Plain (whole-image) inference keeps one mask per query at the image's full size during post-processing, so its
# memory grows with the pixel count (a 4000x3000 photo takes about 2 GB on the CLI); a page shared by several users
# refuses larger images with a message instead of running the server out of memory.
DEFAULT_MAX_PIXELS = 4096 * 4096
# With sliding windows memory follows the window, not the image; the limit then only bounds a request's time.
DEFAULT_MAX_PIXELS_WINDOWED = 8192 * 8192
DEFAULT_MAX_MODELS = 2
DEFAULT_KEEP_RESULTS = 64
DEFAULT_MAX_FILE_SIZE = "100mb"  # the largest upload the server accepts (Gradio's size syntax)


class DemoInputError(ValueError):
    """Input from the page that cannot be segmented; the message says why, and is shown on the page as is."""


@dataclass(frozen=True)
class OptionControl:
    """A `SegmentOptions` field that the page offers as a control (shown only when the field exists).

    Args:
        name: the `SegmentOptions` field (also the keyword the page passes).
        label: the control's label.
        kind: `checkbox`, `slider` (with `minimum`, `maximum`, `step`) or `number`.
        info: one line under the label.
        integer: the field takes an int (the page's number comes back as a float).
    """

    name: str
    label: str
    kind: str
    info: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    integer: bool = False

    def convert(self, value):
        """The control's value as the `SegmentOptions` field takes it (an empty number box is None)."""
        if value is None or value == "":
            return None
        if self.kind == "checkbox":
            return bool(value)
        return int(value) if self.integer else float(value)


# Options of the shared path beyond task and score threshold, in page order. A row whose field `SegmentOptions`
# does not have is skipped, so the page offers exactly what the installed library supports. The sliding-window and
# test-time-augmentation fields are added here, one row each, as they land in m2f_hf.inference.
EXTRA_OPTIONS: tuple[OptionControl, ...] = (
    OptionControl(
        "sliding_window",
        "Sliding window",
        "checkbox",
        "segment a large image window by window (memory follows the window)",
    ),
    OptionControl(
        "window_size",
        "Window size",
        "number",
        "pixels, a multiple of 32; empty: the model's training size",
        integer=True,
    ),
    OptionControl(
        "window_overlap", "Window overlap", "slider", "fraction shared with each neighbour", 0.0, 0.75, 0.05
    ),
    OptionControl("tta", "Test-time augmentation", "checkbox", "several scales and a flip, averaged: slower"),
    OptionControl("keep_all_classes", "Instance: all classes", "checkbox", "also report instances of stuff classes"),
)


def available_options() -> list[OptionControl]:
    """The rows of `EXTRA_OPTIONS` that the installed `SegmentOptions` has."""
    from ..inference.segment import SegmentOptions

    names = {f.name for f in dataclasses.fields(SegmentOptions)}
    return [control for control in EXTRA_OPTIONS if control.name in names]


def default_option_value(name: str):
    """The default of a `SegmentOptions` field (what the CLI uses when the option is not given)."""
    from ..inference.segment import SegmentOptions

    return getattr(SegmentOptions(), name)


def make_options(task: str, threshold: float, **extra) -> object:
    """`SegmentOptions` from the page's controls; a `DemoInputError` naming the control for a bad value."""
    from ..inference.segment import SegmentOptions

    try:
        return SegmentOptions(task=task, threshold=float(threshold), **extra)
    except (TypeError, ValueError) as error:
        raise DemoInputError(f"invalid option: {error}") from error


# -------------------------------------------------------------------------------------------------------- models
def normalize_model_spec(spec: str | None) -> str | None:
    """None for the bundled default model (an empty or blank box), else the box's text without surrounding blanks."""
    if spec is None:
        return None
    spec = spec.strip()
    return spec or None


class ModelCache:
    """Models loaded once and kept, the most recently used `max_models` of them, safe to share between requests.

    Two requests for a model not yet loaded load it once: the second waits for the first. A model that fails to
    load is not remembered (the next request tries again: the network may be back).
    """

    def __init__(self, device="auto", max_models: int = DEFAULT_MAX_MODELS):
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1; got {max_models}.")
        self.device = device
        self.max_models = max_models
        self._models: OrderedDict[str | None, object] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str | None, threading.Lock] = {}

    def __contains__(self, spec: str | None) -> bool:
        with self._lock:
            return normalize_model_spec(spec) in self._models

    def get(self, spec: str | None):
        """The `LoadedModel` of `spec` (a folder, a Hub id, or None / blank for the bundled model).

        Raises:
            ModelLoadError: the model cannot be loaded; the message says which and why.
        """
        from ..inference.loading import load_segmentation_model

        key = normalize_model_spec(spec)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded = load_segmentation_model(key, self.device)
            with self._lock:
                self._models[key] = loaded
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
        return loaded


# -------------------------------------------------------------------------------------------------------- images
def read_image(
    path: str | Path, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "whole-image"
):
    """The uploaded file at `path` as the CLI reads it, after checking its size from the header (no decoding);
    `mode` names the limit's inference mode in the message.

    Raises:
        DemoInputError: not an image, a corrupt one, or more than `max_pixels` pixels; the message names the file.
    """
    from PIL import Image, UnidentifiedImageError

    from ..processing.image_modes import load_image

    name = name or Path(path).name
    try:
        with Image.open(path) as handle:  # reads the header only
            width, height = handle.size
    except UnidentifiedImageError as error:
        raise DemoInputError(
            f"{name!r} is not an image file that can be read; upload a PNG, JPEG, TIFF, WebP or BMP image."
        ) from error
    except Image.DecompressionBombError as error:  # over twice Pillow's own limit: refused before the size
        raise DemoInputError(
            _too_large(f"{name!r} has more pixels than Pillow opens ({error})", max_pixels, mode)
        ) from error
    except OSError as error:
        raise DemoInputError(f"{name!r} cannot be read: {error}.") from error
    if width * height > max_pixels:
        size = f"{name!r} is {width}x{height} pixels ({width * height / 1e6:.1f} MP)"
        raise DemoInputError(_too_large(size, max_pixels, mode))
    try:
        return load_image(str(path))
    except OSError as error:
        raise DemoInputError(f"{name!r}: {error}.") from error


def _too_large(what: str, max_pixels: int, mode: str) -> str:
    hint = ""
    if mode == "whole-image" and "sliding_window" in {c.name for c in available_options()}:
        hint = "turn on *Sliding window*, "
    return (
        f"{what}; this page segments images of up to {max_pixels / 1e6:.1f} MP in {mode} mode. Downscale it, "
        f"{hint}or run `m2f-segment` on it locally."
    )


# ------------------------------------------------------------------------------------------------------ segments
@dataclass
class DemoResult:
    """One image segmented for the page.

    Attributes:
        overlay: the picture `m2f-segment` writes (segments, labels, legend).
        document: the JSON document `m2f-segment` writes for the image (its `segments` are the records).
        seconds: time of `segment_image` (model forward and post-processing) for this image.
        is_default_model: the bundled model ran (it knows only synthetic shapes).
    """

    overlay: object
    document: dict
    seconds: float
    is_default_model: bool

    @property
    def records(self) -> list[dict]:
        return self.document["segments"]


def segment(image, *, name: str, loaded, options, alpha: float) -> DemoResult:
    """Segment `image` (PIL) as `m2f-segment` does and draw the overlay with opacity `alpha`."""
    from ..inference.records import result_document, segments_to_records
    from ..inference.segment import segment_image
    from ..visualization import draw_segmentation

    if not 0.0 <= alpha <= 1.0:
        raise DemoInputError(f"overlay opacity must lie in [0, 1]; got {alpha}.")
    start = time.perf_counter()
    result = segment_image(loaded, image, options)
    seconds = time.perf_counter() - start
    records = segments_to_records(result, loaded.id2label, loaded.category_ids)
    overlay = draw_segmentation(image, result, loaded.id2label, alpha=alpha)
    document = result_document(
        image=name,
        height=image.height,
        width=image.width,
        model=loaded.source,
        task=options.task,
        records=records,
        options=options.as_dict(),
    )
    return DemoResult(overlay=overlay, document=document, seconds=seconds, is_default_model=loaded.is_default_model)


TABLE_HEADERS = ("id", "label", "score", "area")


def table_rows(records: list[dict]) -> list[list]:
    """The segments table: one row per record, in the JSON's order; the score is empty for semantic classes."""
    return [[r["id"], r["label"], "" if r["score"] is None else round(r["score"], 3), r["area"]] for r in records]


def find_record(records: list[dict], segment_id) -> dict:
    """The record with `id` == `segment_id` (the first column of a table row)."""
    for record in records:
        if str(record["id"]) == str(segment_id):
            return record
    raise DemoInputError(f"no segment with id {segment_id!r} in this result.")


def highlight(image, record: dict):
    """`image` with the segment of `record` highlighted (decoded from the record's RLE, as a JSON reader would)."""
    from ..inference.records import decode_mask
    from ..visualization import highlight_segment

    return highlight_segment(image, decode_mask(record["segmentation"]))


# --------------------------------------------------------------------------------------------------------- files
class ResultFolders:
    """One folder per request under `root` for the PNG and JSON downloads; the oldest beyond `keep` are removed."""

    def __init__(self, root: str | Path, keep: int = DEFAULT_KEEP_RESULTS):
        self.root = Path(root)
        self.keep = keep
        self._lock = threading.Lock()
        self._folders: list[Path] = []

    def write(self, result: DemoResult, stem: str) -> tuple[Path, Path]:
        """Write `STEM.png` (the overlay) and `STEM.json` (the CLI's document) and return their paths."""
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        png, document = folder / f"{stem}.png", folder / f"{stem}.json"
        result.overlay.save(png, format="PNG")
        with open(document, "w") as handle:
            json.dump(result.document, handle, indent=1)
        with self._lock:
            self._folders.append(folder)
            stale, self._folders = self._folders[: -self.keep], self._folders[-self.keep :]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return png, document


# Requests run in a pool of worker threads, and glibc gives threads their own heaps ("arenas", up to 8 per core):
# the image and mask buffers a request frees stay in its arena, so the server's resident memory crept up by about
# 9 MB with each burst of 20 concurrent requests although nothing was kept. Two arenas and a trim after each request
# bring it back (docs/demo.md, "Memory"). A MALLOC_ARENA_MAX set by the user wins; M2F_DEMO_MALLOC_TUNING=0 turns
# both off (benchmarks/bench_demo.py compares).
SERVER_MALLOC_ARENAS = 2
TUNING_VARIABLE = "M2F_DEMO_MALLOC_TUNING"
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _libc():
    global _LIBC
    if os.environ.get(TUNING_VARIABLE, "1") == "0":
        return False
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to tune
            _LIBC = False
    return _LIBC


_LIBC = None


def configure_server_memory() -> None:
    """Limit glibc's heaps to `SERVER_MALLOC_ARENAS` for the threads started from now on (a server's workers)."""
    libc = _libc()
    if libc and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(_M_ARENA_MAX, SERVER_MALLOC_ARENAS)


def release_memory() -> None:
    """Hand the memory that a request freed back to the system (glibc's `malloc_trim`; nothing elsewhere)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def output_stem(name: str) -> str:
    """A safe file stem for the downloads of an upload named `name`."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem).strip("._")
    return stem or "image"
