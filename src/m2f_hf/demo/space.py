"""Running the demo on a Hugging Face Space: which model the Space's page uses.

A Space made by `demo/prepare_space.py` holds `app.py`, `requirements.txt`, `README.md` (the Space card) and the
m2f_hf wheel. The card's `models:` list links the model's Hub page to the Space, and its first entry is also the
model that the page loads at start; a Space variable `M2F_DEMO_MODEL` overrides it (docs/demo.md).
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_VARIABLE = "M2F_DEMO_MODEL"


def space_default_model(folder: str | Path) -> str | None:
    """`$M2F_DEMO_MODEL`, else the first of `models:` in `folder/README.md`, else None (the bundled model)."""
    from_environment = os.environ.get(MODEL_VARIABLE, "").strip()
    if from_environment:
        return from_environment
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    from huggingface_hub import metadata_load

    models = (metadata_load(card) or {}).get("models") or []
    if isinstance(models, str):
        models = [models]
    return str(models[0]) if models else None
