"""COCO mask AP as an `evaluate` metric, computed by `m2f_hf.evaluation.InstanceEvaluator` (pycocotools COCOeval)."""

import evaluate

from m2f_hf.evaluation import InstanceEvaluator
from m2f_hf.evaluation.hf_metric import instance_features, to_panoptic

_DESCRIPTION = """
COCO mask average precision over the thing classes: AP (IoU 0.50:0.95), AP50, AP75, APs, APm, APl (0-100, NaN where
COCO reports -1) and per_class_AP, computed by pycocotools' COCOeval on run-length encoded masks.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[dict]`): one per image, as returned by `post_process_instance_segmentation` (default id-map
        format, -1 background) or `post_process_panoptic_segmentation`: {"segmentation": (H, W) segment ids,
        "segments_info": [{"id", "label_id", "score"}]}.
    references (`list[dict]`): {"segmentation": (H, W) segment ids, "segments_info": [{"id", "category_id",
        "iscrowd"}]}; segments of non-thing classes are ignored.
    id2label (`dict[int, str]`): every class id with its name.
    thing_ids (`list[int]`): the classes scored.

Returns:
    `dict`: AP, AP50, AP75, APs, APm, APl and per_class_AP.
"""

_CITATION = """
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and others},
  booktitle={ECCV},
  year={2014}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskAP(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=instance_features(),
        )

    def _compute(self, predictions, references, id2label, thing_ids):
        evaluator = InstanceEvaluator(id2label, thing_ids)
        evaluator.process([to_panoptic(p) for p in predictions], [to_panoptic(r) for r in references])
        return evaluator.evaluate()
