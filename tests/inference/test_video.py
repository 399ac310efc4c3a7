"""Videos: an annotated video and one JSON line per frame; a video that cannot be decoded is a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from m2f_hf.inference import SegmentOptions, segment_image, segments_to_records
from m2f_hf.inference.inputs import InputItem
from m2f_hf.inference.video import VideoError, probe_video, quarter_turns, run_video, upright, video_is_done
from m2f_hf.inference.writers import DrawOptions

av = pytest.importorskip("av", reason="PyAV (the `video` extra, also in `dev`) reads and writes videos")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
NUM_FRAMES, FPS = 4, 5


def write_video(path, frames, fps=FPS, rotation=None):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)  # degrees counter-clockwise, as a phone records portrait video
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A short video of a bundled example scene sliding sideways, and its frames as decoded."""
    from PIL import Image

    from m2f_hf.resources import example_images

    scene = np.asarray(Image.open(example_images()[0]).convert("RGB"))
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, [np.ascontiguousarray(np.roll(scene, 8 * i, axis=1)) for i in range(NUM_FRAMES)])
    with av.open(str(path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return path, decoded


def test_every_frame_is_segmented_and_written(loaded, clip, tmp_path):
    path, decoded = clip
    item = InputItem(str(path), "clip", "video")
    summary = run_video(loaded, item, SegmentOptions(), tmp_path, draw=DrawOptions(), batch_size=2, num_workers=1)
    assert summary.frames == NUM_FRAMES and summary.error is None
    lines = [json.loads(line) for line in (tmp_path / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(NUM_FRAMES))
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in range(NUM_FRAMES)])
    for line, frame in zip(lines, decoded):
        expected = segments_to_records(segment_image(loaded, frame, SegmentOptions()), loaded.id2label)
        assert [s["label"] for s in line["segments"]] == [s["label"] for s in expected]
        assert [s["segmentation"] for s in line["segments"]] == [s["segmentation"] for s in expected]
        assert (line["image"], line["height"], line["width"]) == (str(path), 128, 128)
    info = probe_video(str(tmp_path / "clip.mp4"))
    assert info.fps == FPS and info.height == 128 and info.width > 128  # the frames carry the legend
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == NUM_FRAMES
    assert video_is_done(tmp_path, item, loaded, SegmentOptions())
    assert not video_is_done(tmp_path, item, loaded, SegmentOptions(task="semantic"))


def test_a_file_that_is_not_a_video_is_a_clear_error(loaded, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match="cannot decode the video"):
        run_video(loaded, InputItem(str(bad), "bad", "video"), SegmentOptions(), tmp_path / "out", draw=DrawOptions())
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    with pytest.raises(VideoError, match="no such file"):
        probe_video(str(tmp_path / "missing.mp4"))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_a_rotated_video_is_segmented_upright(loaded, tmp_path, rotation):
    """A phone video stored sideways with a display rotation: the frames are turned as a player shows them before
    they are segmented, and the outputs have the upright size."""
    from PIL import Image

    from m2f_hf.resources import example_images

    shown = np.asarray(Image.open(example_images()[1]).convert("RGB"))[:, :96]  # 128 x 96 as a player shows it
    stored = np.ascontiguousarray(np.rot90(shown, k=-(rotation // 90)))  # what the camera wrote
    path = tmp_path / "phone.mp4"
    write_video(path, [stored] * 2, rotation=rotation)
    info = probe_video(str(path))
    assert info.rotation % 360 == rotation % 360 and (info.height, info.width) == shown.shape[:2]
    with av.open(str(path)) as container:
        decoded = [upright(f.to_ndarray(format="rgb24"), f.rotation) for f in container.decode(video=0)]
    assert decoded[0].shape == shown.shape and np.abs(decoded[0].astype(int) - shown).mean() < 8  # lossy codec
    summary = run_video(
        loaded, InputItem(str(path), "phone", "video"), SegmentOptions(), tmp_path / "out", draw=DrawOptions()
    )
    assert summary.frames == 2
    lines = [json.loads(line) for line in (tmp_path / "out" / "phone.jsonl").read_text().splitlines()]
    expected = segments_to_records(segment_image(loaded, decoded[0], SegmentOptions()), loaded.id2label)
    assert (lines[0]["height"], lines[0]["width"]) == (128, 96)
    assert [s["segmentation"] for s in lines[0]["segments"]] == [s["segmentation"] for s in expected]
    assert probe_video(str(tmp_path / "out" / "phone.mp4")).height == 128  # the annotated video is upright


def test_quarter_turns():
    assert [quarter_turns(r) for r in (0, None, 90, -90, 180, -180, 270)] == [0, 0, 1, 3, 2, 2, 3]
    assert quarter_turns(45) is None
    frame = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, -1)
    assert upright(frame, 45) is frame and upright(frame, 0) is frame
    assert upright(frame, 90)[:, :, 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
