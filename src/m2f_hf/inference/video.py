"""Segment a video frame by frame: `OUTPUT/NAME.mp4` (the annotated video) and `OUTPUT/NAME.jsonl` (one JSON
document per frame, with `frame` and `time` in seconds).

Videos are decoded and encoded with PyAV (`pip install "m2f_hf[video]"`): FFmpeg's own libraries, shipped inside
its wheels for Linux, macOS and Windows (no system FFmpeg, no download at run time), decoding every container and
codec FFmpeg knows and writing H.264. Frames are decoded in a DataLoader worker and segmented in batches.

Phone videos are often stored sideways with a display rotation (the container's display matrix); frames are turned
upright by it before they are segmented, as players show them, and the outputs are upright. A rotation that is not
a quarter turn is not applied, with a warning.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset
from transformers.utils import logging

from .batch import pad_collate
from .records import result_document, segments_to_records
from .writers import DrawOptions

logger = logging.get_logger(__name__)
VIDEO_EXTRA = 'pip install "m2f_hf[video]"'
_DEFAULT_FPS = Fraction(25)


class VideoError(OSError):
    """A video that cannot be opened or decoded; the message says why."""


def _av():
    try:
        import av
    except ImportError as error:
        raise VideoError(f"reading videos needs PyAV: {VIDEO_EXTRA} (or pip install av)") from error
    return av


@dataclass(frozen=True)
class VideoInfo:
    width: int  # of the upright frames (after `rotation`)
    height: int
    fps: Fraction
    frames: int | None  # as the container says; None when it does not
    rotation: int = 0  # degrees counter-clockwise that turn the stored frames upright (the display matrix's)


def quarter_turns(rotation) -> int | None:
    """`np.rot90`'s k for a display rotation in degrees counter-clockwise; None when it is not a quarter turn."""
    degrees = float(rotation or 0)
    if degrees % 90:
        return None
    return int(degrees // 90) % 4


def upright(rgb: np.ndarray, rotation) -> np.ndarray:
    """A decoded (H, W, 3) frame turned by its display rotation (kept as stored when that is not a quarter turn)."""
    turns = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(rgb, k=turns)) if turns else rgb


def probe_video(path: str) -> VideoInfo:
    """Open the video's first video stream; `VideoError` with the reason when there is none or it cannot be read."""
    av = _av()
    if not os.path.exists(path):
        raise VideoError("no such file")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError("the file has no video stream")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or _DEFAULT_FPS
            first = next(iter(container.decode(video=0)), None)
            rotation = int(round(first.rotation)) if first is not None else 0
            width, height = stream.width, stream.height
            turns = quarter_turns(rotation)
            if turns is None:
                logger.warning(
                    f"{path}: the display rotation of {rotation} degrees is not a quarter turn; the frames are "
                    "segmented as stored."
                )
            elif turns % 2:
                width, height = height, width
            return VideoInfo(width, height, Fraction(fps), stream.frames or None, rotation)
    except av.error.FFmpegError as error:
        raise VideoError(f"cannot decode the video ({error.strerror or error})") from error


class VideoFrames(IterableDataset):
    """The frames of a video, pre-processed: items as `ImageFileDataset`'s (`index` is the frame number, plus `time`);
    a decoding error ends the stream with an item holding `error`."""

    def __init__(self, path: str, processor) -> None:
        self.path = path
        self.processor = processor

    def __iter__(self):
        av = _av()
        index = 0
        try:
            with av.open(self.path) as container:
                for frame in container.decode(video=0):
                    rgb = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
                    inputs = self.processor(images=[rgb], return_tensors="pt")
                    yield {
                        "index": index,
                        "time": float(frame.time) if frame.time is not None else None,
                        "image": torch.from_numpy(rgb),
                        "pixel_values": inputs["pixel_values"][0],
                        "pixel_mask": inputs["pixel_mask"][0],
                    }
                    index += 1
        except av.error.FFmpegError as error:
            yield {"index": index, "error": f"decoding stopped at frame {index} ({error.strerror or error})"}


class _Encoder:
    """H.264 (yuv420p) writer of RGB frames; sides are padded to even numbers, as yuv420p needs."""

    def __init__(self, path: Path, fps: Fraction) -> None:
        self.av = _av()
        self.container = self.av.open(str(path), "w", format="mp4")
        codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.pix_fmt = "yuv420p"
        self.size = None

    def add(self, picture: np.ndarray) -> None:
        height, width = picture.shape[:2]
        if self.size is None:
            self.size = (height + height % 2, width + width % 2)
            self.stream.height, self.stream.width = self.size
        frame = np.zeros((*self.size, 3), dtype=np.uint8)
        frame[:height, :width] = picture
        for packet in self.stream.encode(self.av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.size is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


@dataclass
class VideoSummary:
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None  # set when decoding stopped early (the frames before it are written)


def video_outputs(output_dir, item) -> tuple[Path, Path]:
    return Path(output_dir) / f"{item.name}.mp4", Path(output_dir) / f"{item.name}.jsonl"


def video_is_done(output_dir, item, loaded, options) -> bool:
    """Both outputs exist, and the first frame's document names the same video, model and options."""
    video_path, lines_path = video_outputs(output_dir, item)
    if not video_path.is_file():
        return False
    try:
        with open(lines_path) as handle:
            first = json.loads(handle.readline())
    except (OSError, ValueError):
        return False
    expected = (("image", item.path), ("model", loaded.source), ("options", options.as_dict()))
    return all(first.get(key) == value for key, value in expected)


def run_video(
    loaded,
    item,
    options,
    output_dir,
    *,
    draw: DrawOptions,
    batch_size: int = 1,
    num_workers: int = 0,
    progress=None,
) -> VideoSummary:
    """Segment every frame of the video `item` and write its annotated video and JSON lines.

    Raises:
        VideoError: the video cannot be opened (nothing is written).
    """
    from ..visualization import draw_segmentation, legend_width_for
    from .segment import segment_batch

    info = probe_video(item.path)
    video_path, lines_path = video_outputs(output_dir, item)
    video_path.parent.mkdir(parents=True, exist_ok=True)
    partial_video = video_path.with_name(f".{video_path.name}.partial")
    partial_lines = lines_path.with_name(f".{lines_path.name}.partial")
    # every frame gets the same legend width, so that all frames have one size
    legend_width = legend_width_for(loaded.id2label, info.height, info.width)
    loader = DataLoader(
        VideoFrames(item.path, loaded.processor),
        batch_size=batch_size,
        num_workers=min(num_workers, 1),  # one decoder: frames come in order
        collate_fn=_with_times(pad_collate(getattr(loaded.processor, "size_divisor", 0) or 0)),
    )
    summary = VideoSummary()
    encoder = _Encoder(partial_video, info.fps)
    start = time.perf_counter()
    try:
        with open(partial_lines, "w") as lines:
            for batch in loader:
                if batch["indices"]:
                    sizes = [tuple(image.shape[:2]) for image in batch["images"]]
                    results = segment_batch(
                        loaded, batch["pixel_values"], batch["pixel_mask"], sizes, options, images=batch["images"]
                    )
                    for index, moment, image, result in zip(
                        batch["indices"], batch["times"], batch["images"], results
                    ):
                        picture = draw_segmentation(
                            image.numpy(),
                            result,
                            loaded.id2label,
                            alpha=draw.alpha,
                            show_labels=draw.show_labels,
                            legend_width=legend_width,
                        )
                        encoder.add(np.asarray(picture))
                        records = segments_to_records(result, loaded.id2label, loaded.category_ids)
                        document = result_document(
                            image=item.path,
                            height=int(image.shape[0]),
                            width=int(image.shape[1]),
                            model=loaded.source,
                            task=options.task,
                            records=records,
                            options=options.as_dict(),
                        )
                        lines.write(json.dumps({**document, "frame": index, "time": moment}) + "\n")
                        summary.frames += 1
                if batch["errors"]:
                    summary.error = batch["errors"][0][1]
                if progress is not None:
                    progress.update(len(batch["indices"]))
    finally:
        encoder.close()
    summary.seconds = time.perf_counter() - start
    if summary.frames == 0:
        partial_video.unlink(missing_ok=True)
        partial_lines.unlink(missing_ok=True)
        raise VideoError(summary.error or "the video has no frames")
    os.replace(partial_video, video_path)
    os.replace(partial_lines, lines_path)
    return summary


def _with_times(collate):
    def collate_frames(items):
        batch = collate(items)
        batch["times"] = [item["time"] for item in items if "error" not in item]
        return batch

    return collate_frames


__all__ = [
    "VideoError",
    "VideoFrames",
    "VideoInfo",
    "probe_video",
    "quarter_turns",
    "run_video",
    "upright",
    "video_is_done",
    "video_outputs",
]
