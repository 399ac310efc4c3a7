"""Make a folder to upload as a Hugging Face Space running the m2f_hf demo.

    python demo/prepare_space.py space-out --model OWNER/MODEL
    hf upload OWNER/SPACE space-out . --repo-type space     # or huggingface_hub.HfApi().upload_folder(...)

The folder gets `app.py` and the Space card `README.md` from this directory (the card's `models:` lists `--model`,
which links the model's page to the Space and is the model the page loads), the m2f_hf wheel built from this
checkout, and `requirements.txt` installing that wheel with its `demo` extra. `--no-wheel` leaves the wheel out and
keeps the `m2f_hf[demo]` requirement (for an m2f_hf installed from an index). See docs/demo.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE_REQUIREMENT = "m2f_hf[demo]"


def build_wheel(out: Path) -> Path:
    """The m2f_hf wheel of this checkout, built into `out` (no dependencies, no download of build tools)."""
    before = set(out.glob("m2f_hf-*.whl"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    built = sorted(set(out.glob("m2f_hf-*.whl")) - before) or sorted(out.glob("m2f_hf-*.whl"))
    if not built:
        raise RuntimeError(f"pip wheel wrote no m2f_hf wheel into {out}.")
    return built[-1]


def prepare_space(out: str | Path, *, model: str | None = None, wheel: bool = True) -> Path:
    """Write the Space folder `out` (created if needed) and return it."""
    from huggingface_hub import metadata_load, metadata_save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "app.py", out / "app.py")
    card = out / "README.md"
    shutil.copy(HERE / "README.md", card)
    if model:
        metadata = metadata_load(card)
        metadata["models"] = [model]
        metadata_save(card, metadata)
    requirement = PACKAGE_REQUIREMENT
    if wheel:
        requirement = f"./{build_wheel(out).name}[demo]"
    lines = (HERE / "requirements.txt").read_text().splitlines()
    lines = [requirement if line.strip() == PACKAGE_REQUIREMENT else line for line in lines]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make a folder to upload as a Hugging Face Space (m2f_hf demo).")
    parser.add_argument("out", help="the folder to write (created if needed)")
    parser.add_argument("--model", default=None, help="Hub id of the model the Space shows (default: the bundled)")
    parser.add_argument("--no-wheel", action="store_true", help="do not build the m2f_hf wheel into the folder")
    args = parser.parse_args(argv)
    out = prepare_space(args.out, model=args.model, wheel=not args.no_wheel)
    print(f"wrote the Space folder {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
