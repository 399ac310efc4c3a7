"""Expanding the command's arguments: folders, globs, videos, missing files and output names."""

from __future__ import annotations

from m2f_hf.inference.inputs import collect_inputs


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_folder_takes_images_and_videos_and_reports_the_rest(tmp_path):
    for name in ("b.png", "a.JPG", "clip.mp4", "notes.txt", "sub/c.png"):
        _touch(tmp_path / "in" / name)
    inputs = collect_inputs([str(tmp_path / "in")])
    assert [(i.name, i.kind) for i in inputs.items] == [("a", "image"), ("b", "image"), ("clip", "video")]
    assert inputs.ignored == [str(tmp_path / "in" / "notes.txt")]
    assert inputs.errors == []
    recursive = collect_inputs([str(tmp_path / "in")], recursive=True)
    assert [i.name for i in recursive.items] == ["a", "b", "clip", "sub/c"]  # the sub-folder is kept in the name


def test_glob_pattern_and_repeated_names(tmp_path):
    first = _touch(tmp_path / "x" / "scene.png")
    second = _touch(tmp_path / "y" / "scene.jpg")
    inputs = collect_inputs([str(tmp_path / "*" / "scene.*")])
    assert [(i.path, i.name) for i in inputs.items] == [(str(first), "scene"), (str(second), "scene-2")]


def test_glob_that_matches_nothing_and_empty_folder_are_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "only" / "readme.md")
    inputs = collect_inputs(
        [str(tmp_path / "*.jpg"), str(tmp_path / "empty"), str(tmp_path / "only" / "*"), str(tmp_path / "gone.png")]
    )
    assert inputs.errors == [
        f"{tmp_path / '*.jpg'}: the pattern matches no files",
        f"{tmp_path / 'empty'}: folder holds no image or video files (sub-folders are searched with --recursive)",
        f"{tmp_path / 'only' / '*'}: the pattern matches 1 file(s), none of them an image or video",
    ]
    # a missing file stays an input, so that loading it reports "no such file" in its turn
    assert [i.path for i in inputs.items] == [str(tmp_path / "gone.png")]
