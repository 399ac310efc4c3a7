"""Model cards: `README.md` with Hub metadata (YAML front matter) and usage sections.

`library_name` follows the folder's format. A folder saved by m2f_hf has `model_type: m2f_hf` in its `config.json`,
which plain transformers cannot load, so its card says `library_name: m2f_hf`: claiming `transformers` would make
the Hub offer a loading snippet and an inference widget that fail. A transformers-native export
(`conversion/convert_to_transformers.py`) is a real `Mask2FormerForUniversalSegmentation` checkpoint, so its card
says `library_name: transformers` and the Hub's widget runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .convert.model_zoo import ZooEntry

PAPER_URL = "https://arxiv.org/abs/2112.01527"
ORIGINAL_REPO = "https://github.com/facebookresearch/Mask2Former"
ORIGINAL_ZOO = f"{ORIGINAL_REPO}/blob/main/MODEL_ZOO.md"
ORIGINAL_LICENSE = "cc-by-nc-4.0"
SPACES_URL = "https://huggingface.co/spaces"
_SPACE_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

_TASK_NAMES = {
    "panoptic": "Panoptic segmentation",
    "instance": "Instance segmentation",
    "semantic": "Semantic segmentation",
}

_CITATION = """@inproceedings{cheng2022mask2former,
  title={Masked-attention Mask Transformer for Universal Image Segmentation},
  author={Bowen Cheng and Ishan Misra and Alexander G. Schwing and Alexander Kirillov and Rohit Girdhar},
  booktitle={CVPR},
  year={2022}
}"""


# Hub metric ids of the usual segmentation metrics; others are slugified.
_METRIC_TYPES = {"PQ": "pq", "mIoU": "mean_iou", "AP": "ap"}


def _metric_type(name: str) -> str:
    if name in _METRIC_TYPES:
        return _METRIC_TYPES[name]
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _usage(repo_id: str, library_name: str, task: str | None) -> str:
    post = {"panoptic": "panoptic", "instance": "instance", "semantic": "semantic"}.get(task or "", "panoptic")
    if library_name == "transformers":
        return f"""## How to use

This is a transformers-native `Mask2FormerForUniversalSegmentation` checkpoint: plain transformers loads it.

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = Mask2FormerForUniversalSegmentation.from_pretrained("{repo_id}").eval()
image = Image.open("image.jpg").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
result = processor.post_process_{post}_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
```

With a pipeline:

```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model="{repo_id}")
segments = segmenter("image.jpg", subtask="{post}")
```
"""
    return f"""## How to use

This checkpoint is in the m2f_hf format (`pip install m2f_hf`); importing `m2f_hf` registers its classes with
transformers' Auto classes.

```python
import torch
from PIL import Image
from m2f_hf import M2FForUniversalSegmentation
from m2f_hf.image_processing_m2f import M2FImageProcessor

processor = M2FImageProcessor.from_pretrained("{repo_id}")
model = M2FForUniversalSegmentation.from_pretrained("{repo_id}").eval()
image = Image.open("image.jpg").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
result = processor.post_process_{post}_segmentation(outputs, target_sizes=[image.size[::-1]])[0]
```

With a pipeline (after `import m2f_hf`):

```python
from transformers import pipeline

segmenter = pipeline("image-segmentation", model=model, image_processor=processor)
segments = segmenter("image.jpg", subtask="{post}")
```

### Export to transformers-native

Models with a transformers backbone (ResNet, Swin, ...) export to transformers' own
`Mask2FormerForUniversalSegmentation`, which runs wherever plain transformers runs (and in the Hub's widget):

```bash
python conversion/convert_to_transformers.py --src path/to/this/model --dst path/to/export
```
"""


def render_model_card(
    *,
    model_name: str,
    repo_id: str | None = None,
    task: str | None = None,
    dataset_id: str | None = None,
    dataset_name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    metrics_source: tuple[str, str] | None = None,
    license: str = "apache-2.0",
    library_name: str = "m2f_hf",
    base_model: str | None = None,
    tags: Sequence[str] = (),
    description: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    space_id: str | None = None,
) -> str:
    """The text of a `README.md` model card.

    Args:
        model_name: title of the card and name of its `model-index` entry.
        repo_id: Hub id used in the usage snippets (defaults to `model_name`).
        task: `"panoptic"`, `"instance"` or `"semantic"`; names the evaluation task and the post-processing shown.
        dataset_id: the dataset's Hub id, for the `datasets` metadata and the results' dataset type.
        dataset_name: readable name of the evaluation split, e.g. `"COCO panoptic val2017"`.
        metrics: the evaluation results the training or evaluation script measured, e.g. `{"PQ": 51.9}`.
        metrics_source: `(name, url)` of where the numbers come from, when not measured by the uploader.
        license: the weights' license (SPDX-like Hub id, e.g. `"apache-2.0"` or `"cc-by-nc-4.0"`).
        library_name: `"m2f_hf"` for our format, `"transformers"` for a transformers-native export.
        base_model: Hub id of the model this one was fine-tuned or converted from, when there is one.
        tags: extra tags (`image-segmentation`, `mask2former` and the task are always added).
        description: a paragraph under the title.
        extra_sections: `{heading: markdown}` appended before the citation.
        space_id: Hub id (`owner/name`) of a Space running the m2f_hf web demo with this model (made with
            `demo/prepare_space.py`, docs/demo.md); adds a "Try it" section linking to it.
    """
    if task is not None and task not in _TASK_NAMES:
        raise ValueError(f"task={task!r} must be one of {sorted(_TASK_NAMES)} or None.")
    if library_name not in ("m2f_hf", "transformers"):
        raise ValueError(f"library_name={library_name!r} must be 'm2f_hf' or 'transformers'.")
    if space_id is not None and not _SPACE_ID.fullmatch(space_id):
        raise ValueError(f"space_id={space_id!r} must be a Space's Hub id 'owner/name'.")
    repo_id = repo_id or model_name
    all_tags = ["image-segmentation", "mask2former", "vision"]
    if task is not None:
        all_tags.append(f"{task}-segmentation")
    all_tags += [t for t in tags if t not in all_tags]
    eval_results = None
    if metrics:
        if dataset_id is None:
            raise ValueError("metrics were given without dataset_id; the model-index needs the evaluation dataset.")
        source = {"source_name": metrics_source[0], "source_url": metrics_source[1]} if metrics_source else {}
        eval_results = [
            EvalResult(
                task_type="image-segmentation",
                task_name=_TASK_NAMES.get(task or "", "Image segmentation"),
                dataset_type=dataset_id,
                dataset_name=dataset_name or dataset_id,
                metric_type=_metric_type(name),
                metric_name=name,
                metric_value=float(value),
                **source,
            )
            for name, value in metrics.items()
        ]
    data = ModelCardData(
        model_name=model_name,
        library_name=library_name,
        pipeline_tag="image-segmentation",
        license=license,
        tags=all_tags,
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        eval_results=eval_results,
    )
    lines = [f"# {model_name}", ""]
    lines.append(
        description
        or f"[Mask2Former]({PAPER_URL}) (masked-attention mask transformer) for universal image segmentation."
    )
    lines.append("")
    if metrics:
        origin = f" (from [{metrics_source[0]}]({metrics_source[1]}))" if metrics_source else ""
        lines += [f"## Evaluation{origin}", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in metrics.items()]
        lines.append("")
    if space_id is not None:
        lines += [
            "## Try it",
            "",
            f"A web demo of this model runs in the browser on the Space [{space_id}]({SPACES_URL}/{space_id}): "
            "upload an image and get its segments, a table and the JSON (the m2f_hf demo, `m2f-demo`).",
            "",
        ]
    lines.append(_usage(repo_id, library_name, task))
    for heading, body in (extra_sections or {}).items():
        lines += [f"## {heading}", "", body.strip(), ""]
    lines += ["## Citation", "", "```bibtex", _CITATION, "```", ""]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)


def card_for_zoo_entry(entry: ZooEntry, *, repo_id: str | None = None, library_name: str = "m2f_hf") -> str:
    """Model card of a checkpoint converted from the original model zoo (licence CC BY-NC 4.0, zoo metrics)."""
    backbone = entry.backbone.replace("_", "-") + ("-in21k" if "IN21k" in entry.name else "")
    name = repo_id or f"mask2former-{backbone}-{entry.dataset.name.replace('_', '-')}"
    license_text = (
        "These weights were converted from the original Mask2Former model zoo, which releases them under the "
        "[Creative Commons Attribution-NonCommercial 4.0](https://creativecommons.org/licenses/by-nc/4.0/) "
        "licence: they may be shared and adapted with attribution, for non-commercial purposes only. The conversion "
        "keeps that licence; the m2f_hf code that runs them is separately licensed."
    )
    conversion_text = (
        f"Converted with `conversion/convert_from_detectron2.py --config {entry.name}` from "
        f"`{entry.url}`. Every original tensor was mapped by the converter's key table (none missing, none unused). "
        f"Pre-processing follows the original test-time settings: shortest edge {entry.min_size_test}, longest edge "
        f"at most {entry.max_size_test}, ImageNet mean/std, padding to a multiple of 32. The original inference "
        f"thresholds are object mask {entry.object_mask_threshold} and overlap {entry.overlap_threshold}."
    )
    return render_model_card(
        model_name=name,
        repo_id=repo_id,
        task=entry.task,
        dataset_id=entry.dataset.hub_id,
        dataset_name=entry.dataset.title,
        metrics=entry.metrics,
        metrics_source=("Mask2Former model zoo", ORIGINAL_ZOO),
        license=ORIGINAL_LICENSE,
        library_name=library_name,
        tags=[entry.dataset.hub_id, entry.backbone],
        description=(
            f"[Mask2Former]({PAPER_URL}) with a {entry.backbone} backbone and {entry.num_queries} queries, trained by "
            f"the authors for {entry.task} segmentation on {entry.dataset.title.split(' val')[0]} "
            f"({entry.dataset.num_labels} classes); original config `{entry.name}`."
        ),
        extra_sections={"Conversion": conversion_text, "License": license_text},
    )


def write_model_card(directory: str | Path, **kwargs) -> Path:
    """Render a card with [`render_model_card`] and write it to `directory/README.md`."""
    text = render_model_card(**kwargs)
    ModelCard(text)  # parses the YAML front matter: a broken card fails here rather than on the Hub
    path = Path(directory) / "README.md"
    path.write_text(text)
    return path
