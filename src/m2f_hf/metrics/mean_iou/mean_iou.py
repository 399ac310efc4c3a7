"""mIoU, fwIoU, pixel and mean accuracy as an `evaluate` metric, computed by `m2f_hf.evaluation.SemanticEvaluator`.

Unlike the hub's `mean_iou`, it loads offline from the installed package and accumulates one dataset-level confusion
matrix.
"""

import evaluate

from m2f_hf.evaluation import SemanticEvaluator
from m2f_hf.evaluation.hf_metric import semantic_features, to_map

_DESCRIPTION = """
Semantic segmentation metrics from a dataset-level confusion matrix: mIoU over the classes that appear, fwIoU, pixel
accuracy, mean class accuracy (all 0-100) and per_class_IoU. Reference pixels equal to ignore_index are left out.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list`): one (H, W) class-id map per image (`post_process_semantic_segmentation`).
    references (`list`): one (H, W) class-id map per image.
    id2label (`dict[int, str]`, *optional*): every class id with its name; or give `num_labels`.
    num_labels (`int`, *optional*): classes 0..num_labels-1, when `id2label` is not given.
    ignore_index (`int`, *optional*, defaults to 255): the reference value of unlabelled pixels.

Returns:
    `dict`: mIoU, fwIoU, pixel_accuracy, mean_accuracy (0-100) and per_class_IoU.
"""

_CITATION = """
@inproceedings{long2015fully,
  title={Fully Convolutional Networks for Semantic Segmentation},
  author={Long, Jonathan and Shelhamer, Evan and Darrell, Trevor},
  booktitle={CVPR},
  year={2015}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=semantic_features(),
        )

    def _compute(self, predictions, references, id2label=None, num_labels=None, ignore_index=255):
        if id2label is None:
            if num_labels is None:
                raise ValueError("Pass `id2label` or `num_labels` to compute mean_iou.")
            id2label = {class_id: str(class_id) for class_id in range(num_labels)}
        evaluator = SemanticEvaluator(id2label, ignore_index=ignore_index)
        evaluator.process([to_map(p) for p in predictions], [to_map(r) for r in references])
        return evaluator.evaluate()
