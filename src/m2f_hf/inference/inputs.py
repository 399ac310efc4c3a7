"""What to segment: image files, folders, glob patterns and video files, expanded to a list of inputs with the
names of their outputs.

Only the standard library is used here, so the command can expand and check its inputs before the heavy imports.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

# Files of a folder or a glob are taken by extension; a file named explicitly is always tried (and reported when
# it is not an image), so that nothing a user names is skipped silently.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jp2"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class InputItem:
    """One image or video to segment.

    Args:
        path: the file, as the user named it (or joined to the folder it was found in).
        name: the outputs' path relative to the output folder, without extension (`scene`, `holiday/beach-2`).
        kind: `image` or `video`.
    """

    path: str
    name: str
    kind: str = "image"


@dataclass
class InputList:
    """The expanded inputs, plus what could not be expanded (one message per bad argument) and what was left out
    (files of a folder or glob that are neither images nor videos, by extension)."""

    items: list[InputItem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[InputItem]:
        return [item for item in self.items if item.kind == "image"]

    @property
    def videos(self) -> list[InputItem]:
        return [item for item in self.items if item.kind == "video"]


def is_glob(spec: str) -> bool:
    return any(character in _GLOB_CHARACTERS for character in spec)


def kind_of(path: str) -> str:
    return "video" if Path(path).suffix.lower() in VIDEO_EXTENSIONS else "image"


def _is_media(path: str) -> bool:
    suffix = Path(path).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS


def _folder_files(folder: str, recursive: bool) -> list[str]:
    if not recursive:
        return sorted(
            os.path.join(folder, name) for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name))
        )
    found = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        found.extend(os.path.join(root, name) for name in sorted(files))
    return found


def collect_inputs(specs: list[str], *, recursive: bool = False) -> InputList:
    """Expand the command's arguments into inputs, in order.

    Args:
        specs: image or video files, folders (the images and videos directly inside; all levels with `recursive`)
            and glob patterns (`photos/*.jpg`, `data/**/*.png`; quote them so that the shell leaves them alone).
        recursive: also look into the sub-folders of a folder.

    A path that does not exist is kept (loading it then reports "no such file", and the other inputs go on); a glob
    that matches nothing, or matches only files that are not images or videos, and an empty folder are errors.
    Output names are the file's stem, or its path inside the folder named on the command line (without extension);
    repeated names get `-2`, `-3`, ... in input order.
    """
    result = InputList()
    found: list[tuple[str, str]] = []  # (path, name before de-duplication)
    for spec in specs:
        if os.path.isdir(spec):
            files = _folder_files(spec, recursive)
            media = [path for path in files if _is_media(path)]
            result.ignored.extend(path for path in files if not _is_media(path))
            if not media:
                result.errors.append(
                    f"{spec}: folder holds no image or video files{'' if recursive else ' (sub-folders are searched with --recursive)'}"
                )
            for path in media:
                relative = os.path.relpath(path, spec)
                found.append((path, str(Path(relative).with_suffix(""))))
        elif not os.path.exists(spec) and is_glob(spec):
            matches = sorted(path for path in glob.glob(spec, recursive=True) if os.path.isfile(path))
            media = [path for path in matches if _is_media(path)]
            result.ignored.extend(path for path in matches if not _is_media(path))
            if not matches:
                result.errors.append(f"{spec}: the pattern matches no files")
            elif not media:
                result.errors.append(
                    f"{spec}: the pattern matches {len(matches)} file(s), none of them an image or video"
                )
            found.extend((path, Path(path).stem) for path in media)
        else:
            found.append((spec, Path(spec).stem))
    seen: dict[str, int] = {}
    for path, name in found:
        name = name or "image"
        count = seen.get(name, 0) + 1
        seen[name] = count
        result.items.append(InputItem(path=path, name=name if count == 1 else f"{name}-{count}", kind=kind_of(path)))
    return result


__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "InputItem", "InputList", "collect_inputs", "is_glob", "kind_of"]
