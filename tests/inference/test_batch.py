"""Batch runs over folders: the same segments as image by image, worker processes, resuming, bad files."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from m2f_hf.inference import SegmentOptions, segment_image, segments_to_records
from m2f_hf.inference.batch import run_images
from m2f_hf.inference.inputs import collect_inputs
from m2f_hf.inference.writers import DrawOptions, ImageWriter

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _run(loaded, folder, output, **kwargs):
    items = collect_inputs([str(folder)]).images
    writer = ImageWriter(output, loaded, SegmentOptions(task="panoptic"), draw=DrawOptions())
    return items, run_images(loaded, items, SegmentOptions(task="panoptic"), writer, **kwargs)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_give_the_segments_of_one_image_at_a_time(loaded, image_folder, tmp_path, num_workers):
    items, summary = _run(loaded, image_folder, tmp_path / "out", batch_size=2, num_workers=num_workers)
    assert summary.processed == 4 and summary.skipped == 0
    assert summary.failed == [(str(image_folder / "broken.jpg"), "cannot decode the image (image file is truncated)")]
    for item in items:
        if item.name == "broken":
            assert not (tmp_path / "out" / "broken.json").exists()
            continue
        with open(tmp_path / "out" / f"{item.name}.json") as handle:
            found = json.load(handle)["segments"]
        image = Image.open(item.path).convert("RGB")
        expected = segments_to_records(segment_image(loaded, image, SegmentOptions()), loaded.id2label)
        assert [s["label"] for s in found] == [s["label"] for s in expected]
        assert [s["segmentation"] for s in found] == [s["segmentation"] for s in expected]
        assert [s["score"] for s in found] == pytest.approx([s["score"] for s in expected], abs=1e-5)
        assert (tmp_path / "out" / f"{item.name}.png").is_file()


def test_a_second_run_skips_what_is_done_and_redoes_what_is_missing(loaded, image_folder, tmp_path):
    output = tmp_path / "out"
    _run(loaded, image_folder, output)
    stamps = {p.name: p.stat().st_mtime_ns for p in output.iterdir()}
    (output / "shapes_2.json").unlink()  # as if the first run had stopped before this image's JSON
    items, summary = _run(loaded, image_folder, output)
    # 3 done before; the broken image is tried again (it has no outputs) and still fails
    assert (summary.processed, summary.skipped, len(summary.failed)) == (1, 3, 1)
    assert (output / "shapes_2.json").is_file()
    for name in ("shapes_1.json", "shapes_3.json", "grey.json", "grey.png"):
        assert (output / name).stat().st_mtime_ns == stamps[name]
    _, redone = _run(loaded, image_folder, output, overwrite=True)
    assert (redone.processed, redone.skipped) == (4, 0)


def test_outputs_of_another_source_or_other_options_are_not_taken_as_done(loaded, image_folder, tmp_path):
    output = tmp_path / "out"
    items, _ = _run(loaded, image_folder, output)
    writer = ImageWriter(output, loaded, SegmentOptions(task="panoptic"), draw=DrawOptions())
    item = next(i for i in items if i.name == "grey")
    assert writer.is_done(item)
    document = json.loads((output / "grey.json").read_text())
    (output / "grey.json").write_text(json.dumps({**document, "image": "elsewhere/grey.png"}))
    assert not writer.is_done(item)
    assert not ImageWriter(output, loaded, SegmentOptions(task="semantic"), draw=DrawOptions()).is_done(items[0])
    assert not ImageWriter(output, loaded, SegmentOptions(threshold=0.7), draw=DrawOptions()).is_done(items[0])
    assert document["options"] == SegmentOptions(task="panoptic").as_dict()
    # a half-written file from a stopped run has a temporary name and does not count
    assert not list(output.glob("*.partial"))


def test_bad_arguments(loaded, tmp_path):
    writer = ImageWriter(tmp_path, loaded, SegmentOptions(), draw=None)
    with pytest.raises(ValueError, match="batch_size must be at least 1; got 0"):
        run_images(loaded, [], SegmentOptions(), writer, batch_size=0)
    with pytest.raises(ValueError, match="num_workers must be 0 or more; got -1"):
        run_images(loaded, [], SegmentOptions(), writer, num_workers=-1)
