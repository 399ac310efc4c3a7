"""Helpers of the demo tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

GRADIO_MISSING = importlib.util.find_spec("gradio") is None
GRADIO_REASON = 'gradio is not installed (the demo extra: pip install -e ".[demo]"; CI installs it with ".[dev]")'
ARTIFACTS: list[Path] = []


def artifacts_dir() -> Path:
    """`$M2F_TEST_ARTIFACTS/demo`, by default `test-artifacts/demo` at the repository root (git-ignored)."""
    root = os.environ.get("M2F_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts"
    path = Path(root) / "demo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_artifact(path: Path) -> Path:
    """Remember `path` for the end-of-run summary and print it (shown with -s or when the test fails)."""
    ARTIFACTS.append(path)
    print(f"test artifact: {path}")
    return path


def expected_rows(document: dict) -> list[tuple]:
    """The segments table the page must show for a CLI document: (id, label, score, area)."""
    return [
        (r["id"], r["label"], None if r["score"] is None else round(r["score"], 3), r["area"])
        for r in document["segments"]
    ]


def parse_rows(rows) -> list[tuple]:
    """Table rows as shown (strings in the browser, values through the API) in the form of `expected_rows`."""
    return [
        (int(i), str(label), None if score in ("", None) else float(score), int(area))
        for i, label, score, area in rows
    ]
