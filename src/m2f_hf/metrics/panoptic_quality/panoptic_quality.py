"""Panoptic quality (PQ, SQ, RQ) as an `evaluate` metric, computed by `m2f_hf.evaluation.PanopticEvaluator`."""

import evaluate

from m2f_hf.evaluation import PanopticEvaluator
from m2f_hf.evaluation.hf_metric import panoptic_features, to_panoptic

_DESCRIPTION = """
Panoptic quality with the COCO panoptic definition: segments match when their IoU exceeds 0.5 (the union leaves out
reference void), crowd regions and void are not penalised, and the averages run over classes that appear. Returns
percentages: PQ, SQ, RQ over all, thing (_th) and stuff (_st) classes, and per_class.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[dict]`): one per image, as returned by `post_process_panoptic_segmentation`:
        {"segmentation": (H, W) segment ids, "segments_info": [{"id", "label_id", "score", "was_fused"}]}.
    references (`list[dict]`): {"segmentation": (H, W) segment ids, "segments_info": [{"id", "category_id",
        "iscrowd"}]}; 0 and unlisted ids are void.
    id2label (`dict[int, str]`): every class id with its name.
    thing_ids (`list[int]`): the thing classes.

Returns:
    `dict`: PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st (0-100) and per_class.

Example:
    >>> import evaluate
    >>> from m2f_hf.evaluation import metric_path
    >>> metric = evaluate.load(metric_path("panoptic_quality"))
    >>> results = metric.compute(predictions=predictions, references=references, id2label=id2label, thing_ids=[0])
"""

_CITATION = """
@inproceedings{kirillov2019panoptic,
  title={Panoptic Segmentation},
  author={Kirillov, Alexander and He, Kaiming and Girshick, Ross and Rother, Carsten and Doll{\\'a}r, Piotr},
  booktitle={CVPR},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PanopticQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=panoptic_features(),
        )

    def _compute(self, predictions, references, id2label, thing_ids):
        evaluator = PanopticEvaluator(id2label, thing_ids)
        evaluator.process([to_panoptic(p) for p in predictions], [to_panoptic(r) for r in references])
        return evaluator.evaluate()
