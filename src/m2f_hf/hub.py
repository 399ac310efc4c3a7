"""Upload a saved model folder (weights, config, image processor, model card) to the Hugging Face Hub."""

from __future__ import annotations

import re
from pathlib import Path

REQUIRED_FILES = ("config.json", "README.md")
OPTIONAL_FILES = ("preprocessor_config.json",)
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def files_to_upload(model_dir: str | Path) -> list[str]:
    """The files of `model_dir` that [`push_to_hub`] uploads, sorted: `config.json`, `README.md`, the safetensors
    weights (one file, or the shards and their index) and `preprocessor_config.json` when present. Nothing else
    (no pickles, optimizer states or logs) is sent.

    Raises:
        FileNotFoundError: `model_dir`, `config.json`, `README.md` or the safetensors weights are missing.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model_dir={str(model_dir)!r} is not a directory.")
    names = {p.name for p in model_dir.iterdir() if p.is_file()}
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise FileNotFoundError(
            f"model_dir={str(model_dir)!r} lacks {missing}; save the model with `save_pretrained` and write a card "
            "with `m2f_hf.modelcard.write_model_card` first."
        )
    if "model.safetensors" in names:
        weights = ["model.safetensors"]
    elif "model.safetensors.index.json" in names:
        weights = ["model.safetensors.index.json"] + [n for n in names if _SHARD_RE.fullmatch(n)]
    else:
        raise FileNotFoundError(
            f"model_dir={str(model_dir)!r} has no safetensors weights (model.safetensors or a sharded index)."
        )
    return sorted(list(REQUIRED_FILES) + weights + [n for n in OPTIONAL_FILES if n in names])


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload Mask2Former model",
    api=None,
):
    """Create `repo_id` (a model repository; kept if it exists) and upload [`files_to_upload`] of `model_dir` in one
    commit.

    Args:
        model_dir: a folder written by `save_pretrained` with a `README.md` card.
        repo_id: `"user/name"` on the Hub.
        token: Hub token (defaults to the logged-in one).
        private: create the repository as private (ignored when it exists).
        revision: branch to commit to.
        create_pr: open a pull request instead of committing to the branch.
        commit_message: the commit's message.
        api: a `huggingface_hub.HfApi` (tests pass a mock); built from `token` when `None`.

    Returns:
        The `CommitInfo` of the upload.
    """
    files = files_to_upload(model_dir)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(model_dir),
        allow_patterns=files,
        commit_message=commit_message,
        revision=revision,
        create_pr=create_pr,
    )
