"""Sliding-window inference: the window grid, one window equal to plain inference, segments across window borders,
the too-large suggestion, and the options' checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from m2f_hf.cli import main
from m2f_hf.inference import limits
from m2f_hf.inference.records import segments_to_records
from m2f_hf.inference.segment import ImageTooLargeError, SegmentOptions, segment_image
from m2f_hf.inference.windows import WindowGrid, default_window_size, window_starts
from m2f_hf.resources import example_images

TASKS = ("semantic", "panoptic", "instance")


def _example(index: int) -> np.ndarray:
    return np.asarray(Image.open(example_images()[index]).convert("RGB"))


@pytest.fixture(scope="module")
def wide() -> np.ndarray:
    """128 x 224: shapes_2 with mirrored stuff added on both sides, so that its circle (x 108..130) crosses both the
    middle of the two windows' overlap (x = 112, where their cores meet) and the first window's right edge (128)."""
    image = _example(1)
    left = image[:, 1:31][:, ::-1]
    right = np.concatenate([image[:, :40][:, ::-1], image[:, :26]], 1)
    return np.ascontiguousarray(np.concatenate([left, image, right], 1))


def test_window_grid_covers_the_image_with_full_windows():
    assert window_starts(224, 128, 96) == [0, 96]
    assert window_starts(1000, 128, 96) == [0, 96, 192, 288, 384, 480, 576, 672, 768, 864, 872]
    assert window_starts(100, 128, 96) == [0]
    grid = WindowGrid(300, 1000, 128, 0.25)
    assert grid.stride == 96 and len(grid) == len(grid.rows) * len(grid.cols)
    assert grid.rows[-1] + grid.window_height == 300 and grid.cols[-1] + grid.window_width == 1000
    cores = grid.core_cols  # a partition of the columns, each core inside its window
    assert cores[0][0] == 0 and cores[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
    assert all(x0 <= low and high <= x0 + 128 for (low, high), x0 in zip(cores, grid.cols))
    assert WindowGrid(100, 128, 128, 0.25).single and not WindowGrid(100, 129, 128, 0.25).single


def test_default_window_size_is_the_processors_training_size(loaded):
    assert default_window_size(loaded.processor) == 128  # the bundled model: shortest edge 128

    class Processor:
        size = {"shortest_edge": 800, "longest_edge": 1333}

    assert default_window_size(Processor()) == 800
    Processor.size = {"height": 500, "width": 700}
    assert default_window_size(Processor()) == 512  # rounded up to a multiple of 32
    Processor.size = {"longest_edge": 1333}
    with pytest.raises(ValueError, match="pass window_size"):
        default_window_size(Processor())


@pytest.mark.parametrize("size", [100, 0, -32, 48.0, True])
def test_a_window_size_not_a_multiple_of_32_is_an_error(size):
    with pytest.raises(ValueError, match="window_size must be a (positive )?multiple of 32"):
        SegmentOptions(sliding_window=True, window_size=size)


def test_window_overlap_and_combinations_are_checked():
    with pytest.raises(ValueError, match=r"window_overlap must be a fraction of the window in \[0, 0.9\]; got 1.0"):
        SegmentOptions(sliding_window=True, window_overlap=1.0)
    with pytest.raises(ValueError, match="full_instance_masks .* cannot be combined with sliding_window"):
        SegmentOptions(task="instance", sliding_window=True, full_instance_masks=True)
    with pytest.raises(ValueError, match="sliding_window and tta cannot be combined"):
        SegmentOptions(task="semantic", sliding_window=True, tta=True)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("shape", [(128, 128), (100, 120)])
def test_an_image_of_one_window_gives_exactly_the_plain_result(loaded, task, shape):
    image = _example(0)[: shape[0], : shape[1]]
    plain = segment_image(loaded, image, SegmentOptions(task=task))
    windowed = segment_image(loaded, image, SegmentOptions(task=task, sliding_window=True))
    if task == "semantic":
        assert torch.equal(plain, windowed)
    else:
        assert torch.equal(plain["segmentation"], windowed["segmentation"])
        assert plain["segments_info"] == windowed["segments_info"] and plain["segments_info"]


@pytest.mark.parametrize("task", ["panoptic", "instance"])
def test_a_segment_crossing_a_window_border_comes_out_as_one(loaded, wide, task):
    # the image is 128 high: plain inference runs it at its own resolution too, so it is the reference
    options = SegmentOptions(task=task, sliding_window=True)
    grid = WindowGrid(128, 224, 128, options.window_overlap)
    assert grid.cols == [0, 96] and grid.core_cols == [(0, 112), (112, 224)]
    windowed = segment_image(loaded, wide, options)
    plain = segment_image(loaded, wide, SegmentOptions(task=task))
    records = segments_to_records(windowed, loaded.id2label)
    expected = segments_to_records(plain, loaded.id2label)
    assert sorted(r["label"] for r in records) == sorted(r["label"] for r in expected)
    circles = [r for r in records if r["label"] == "circle"]
    assert len(circles) == 1  # one segment, not one per window
    x, _, width, _ = circles[0]["bbox"]
    assert x < 112 and x + width > 128  # it does cross the cores' boundary and the first window's edge
    segmentation = windowed["segmentation"].numpy()
    circle = segmentation == circles[0]["id"]
    reference = plain["segmentation"].numpy() == next(r["id"] for r in expected if r["label"] == "circle")
    assert (circle & reference).sum() / (circle | reference).sum() > 0.85
    if task == "panoptic":  # the stuff crossing every border is one segment per class as well
        assert sorted(r["label"] for r in records if r["label"] in ("grass", "sand")) == ["grass", "sand"]
    assert segmentation.dtype == np.int32


def test_semantic_windows_sum_their_class_scores(loaded, wide):
    windowed = segment_image(loaded, wide, SegmentOptions(task="semantic", sliding_window=True))
    plain = segment_image(loaded, wide, SegmentOptions(task="semantic"))
    assert windowed.shape == plain.shape and windowed.dtype == torch.int32
    assert (windowed == plain).float().mean() > 0.99


def test_semantic_windows_over_several_rows_match_the_reference_sum(loaded):
    """Scores of every window, summed over a full-size buffer, give the class map of the row-buffer version."""
    from m2f_hf.inference.sliding_window import _forward, as_window_source, sliding_semantic

    image = np.concatenate([np.concatenate([_example(0), _example(2)], 1), np.concatenate([_example(1)] * 2, 1)])
    image = np.ascontiguousarray(image[:230, :250])
    array = as_window_source(image, loaded.processor)
    grid = WindowGrid(230, 250, 128, 0.25)
    assert len(grid.rows) == 3 and len(grid.cols) == 3
    total = torch.zeros((6, 230, 250))
    for y0 in grid.rows:
        for x0 in grid.cols:
            crop = array[y0 : y0 + 128, x0 : x0 + 128]
            outputs, pixel_mask, sizes = _forward(loaded, [crop])
            scores = loaded.processor.post_process_semantic_segmentation(
                outputs, target_sizes=sizes, return_segmentation_scores=True, pixel_mask=pixel_mask
            )[0]["segmentation_scores"]
            total[:, y0 : y0 + 128, x0 : x0 + 128] += scores
    assert torch.equal(sliding_semantic(loaded, array, grid), total.argmax(0).to(torch.int32))


def test_sliding_windows_segment_a_16_bit_image_like_its_8_bit_twin(loaded, wide):
    deep = wide.astype(np.uint16) * 257
    a = segment_image(loaded, deep, SegmentOptions(task="semantic", sliding_window=True))
    b = segment_image(loaded, wide, SegmentOptions(task="semantic", sliding_window=True))
    assert torch.equal(a, b)


def test_an_image_too_large_for_plain_inference_gets_the_suggestion(loaded, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(limits, "available_memory", lambda device=None: 10_000_000)
    image = _example(0)  # 20 queries x 128 x 128 x 9 bytes = 2.9 MB: fits in 3/4 of 10 MB
    segment_image(loaded, image, SegmentOptions())
    big = np.ascontiguousarray(np.tile(image, (2, 3, 1)))  # 256 x 384: 17.7 MB, more than the 10 MB "free"
    with pytest.raises(ImageTooLargeError, match=r"a 384x256 image needs about 0.0 GB .* --sliding-window"):
        segment_image(loaded, big, SegmentOptions())
    assert isinstance(ImageTooLargeError("x"), MemoryError)  # the demo shows MemoryError messages as they are
    windowed = segment_image(loaded, big, SegmentOptions(sliding_window=True))  # memory of one window
    assert windowed["segments_info"]
    # the command reports it for that image, segments the others and exits 1
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(image).save(tmp_path / "small.png")
    code = main([str(tmp_path / "big.png"), str(tmp_path / "small.png"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "big.png: a 384x256 image needs about" in err and "--sliding-window" in err
    assert "(docs/inference.md); skipped." in err  # one full stop, not ".; skipped."
    assert (tmp_path / "out" / "small.json").is_file() and not (tmp_path / "out" / "big.json").exists()
    assert main([str(tmp_path / "big.png"), "--sliding-window", "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "big.json").is_file()


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_test_time_augmentation_is_checked_for_the_memory_it_needs(loaded, monkeypatch, task):
    image = _example(0)  # 128 x 128: plain needs 2.9 MB, the TTA ensemble (18 bytes per query and pixel) 5.9 MB
    monkeypatch.setattr(limits, "available_memory", lambda device=None: 6_000_000)
    segment_image(loaded, image, SegmentOptions(task=task))  # plain fits in 3/4 of 6 MB
    tta = SegmentOptions(task=task, tta=True)
    if task == "semantic":  # the class scores add 12 bytes per class and pixel (4.1 MB in all): fits
        assert segment_image(loaded, image, tta) is not None
        return
    with pytest.raises(ImageTooLargeError, match=r"with test-time augmentation \(0.0 GB without it\).*Leave out"):
        segment_image(loaded, image, tta)
    assert limits.plain_inference_bytes(20, 100, 100, tta) == 18 * 20 * 100 * 100
    assert (
        limits.plain_inference_bytes(20, 100, 100, SegmentOptions(task="semantic", tta=True), 6)
        == (9 * 20 + 12 * 6) * 100 * 100
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sliding-window", "--window-size", "100"], "--window-size must be a positive multiple of 32"),
        (["--window-size", "128"], "--window-size is for --sliding-window"),
        (["--sliding-window", "--window-overlap", "0.95"], r"--window-overlap must lie in \[0, 0.9\]"),
        (["--tta", "--sliding-window"], "--tta and --sliding-window cannot be combined"),
        (["--tta", "--task", "semantic", "--tta-scales", "1,x"], "--tta-scales must be positive numbers"),
        (["--tta-scales", "1"], "--tta-scales and --no-tta-flip are for --tta"),
        (
            ["--sliding-window", "--task", "instance", "--format", "coco"],
            "--sliding-window cannot write --format coco",
        ),
    ],
)
def test_command_line_checks(argv, message, capsys):
    assert main(["--example", *argv]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_command_line_sliding_window_run(tmp_path, wide, capsys):
    Image.fromarray(wide).save(tmp_path / "wide.png")
    argv = [str(tmp_path / "wide.png"), "--sliding-window", "--window-size", "64", "--window-overlap", "0.5"]
    assert main([*argv, "--output", str(tmp_path / "out"), "--task", "semantic"]) == 0
    document = __import__("json").loads((tmp_path / "out" / "wide.json").read_text())
    assert document["options"]["sliding_window"] is True and document["options"]["window_size"] == 64
    assert {r["label"] for r in document["segments"]} >= {"grass", "sand"}
    assert Image.open(tmp_path / "out" / "wide.png").size[1] == 128
    # resuming recognises the same options (tuples recorded as JSON lists compare equal)
    assert main([*argv, "--output", str(tmp_path / "out"), "--task", "semantic"]) == 0
    assert "skipped 1 of 1 images" in capsys.readouterr().err


def test_records_of_large_maps_are_encoded_per_box_and_block_with_the_same_rle(monkeypatch):
    from m2f_hf.inference import records

    rng = np.random.default_rng(0)
    segmentation = rng.integers(0, 4, (37, 23)).astype(np.int32)
    segmentation[:, 5:9] = 3  # a segment with runs that continue from one column into the next
    info = [{"id": i, "label_id": i, "score": 0.5} for i in range(1, 4)]
    expected = [records.segment_record(segmentation == s["id"], s["id"], s["label_id"], 0.5, {}) for s in info]
    monkeypatch.setattr(records, "_RUN_BLOCK_PIXELS", 40)  # one column per block
    result = {"segmentation": torch.from_numpy(segmentation), "segments_info": info}
    assert records.segments_to_records(result, {}) == expected
