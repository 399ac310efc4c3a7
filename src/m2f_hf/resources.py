"""Files shipped inside the package: the bundled default model and the sample images it understands.

The default model is a small Mask2Former trained with `examples/train.py` on the synthetic shapes dataset
(`m2f_hf.data.synthetic`); docs/default_model.md records how to retrain it and its measured quality. Both are read
through `importlib.resources`, so they work from a wheel, a source checkout or an editable install, with no network.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_PACKAGE = "m2f_hf"
_DEFAULT_MODEL_DIR = "default_model"
_EXAMPLES_DIR = ("assets", "examples")
_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def _package_dir(*parts: str) -> Path:
    traversable = resources.files(_PACKAGE).joinpath(*parts)
    # Loading a checkpoint needs a real directory; a zipped install (zipimport) has none.
    path = Path(str(traversable))
    if not path.is_dir():
        raise FileNotFoundError(
            f"the packaged folder {'/'.join(parts)!r} of {_PACKAGE} is missing at {path}; reinstall the package "
            "(it is shipped as package data, see pyproject.toml) from a wheel or a source checkout, not a zip."
        )
    return path


def default_model_path() -> Path:
    """The directory of the bundled default checkpoint (`config.json`, `model.safetensors`,
    `preprocessor_config.json`), loadable with `M2FForUniversalSegmentation.from_pretrained`."""
    path = _package_dir(_DEFAULT_MODEL_DIR)
    missing = [name for name in _MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the bundled default model at {path} lacks {missing}; reinstall the package.")
    return path


def example_images() -> list[Path]:
    """The bundled sample images (PNG), sorted by name; the default model segments them well."""
    return sorted(_package_dir(*_EXAMPLES_DIR).glob("*.png"))


__all__ = ["default_model_path", "example_images"]
