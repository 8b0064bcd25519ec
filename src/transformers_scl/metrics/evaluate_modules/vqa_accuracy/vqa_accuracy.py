"""`evaluate` module for VQAv2 accuracy; load it offline with
`evaluate.load(transformers_scl.metrics.evaluate_module_path("vqa_accuracy"))`.

`evaluate` copies only this file (and same-directory relative imports) into its module cache, so the logic is
imported from the installed `transformers_scl.metrics` package, which ships this file and is therefore always present.
"""

import datasets
import evaluate

from transformers_scl.metrics import vqa_accuracy

_CITATION = """\
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR},
  year={2017}
}
"""

_DESCRIPTION = """\
VQAv2 accuracy: answers are normalised (case, punctuation, number words, articles, contractions) and a prediction
scores min(1, #matching humans / 3) averaged over the leave-one-out subsets of the (10) human answers. Reported in %,
overall and, when `answer_types` is given, per answer type.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one predicted answer per question.
    references (`list` of `list` of `str`): the human answers of each question (10 in VQAv2).
    answer_types (`list` of `str`, optional): answer type of each question ("yes/no", "number", "other"). A compute
        argument, so pass the full list to `compute()` even when predictions were added with `add_batch()`.
    leave_one_out (`bool`, defaults to `True`): official leave-one-out score; `False` gives min(1, #matches / 3).
Returns:
    accuracy (`float`): overall accuracy in %.
    accuracy_per_answer_type (`dict`): accuracy in % per answer type, only when `answer_types` is given.
Examples:
    >>> metric = evaluate.load(evaluate_module_path("vqa_accuracy"))
    >>> metric.compute(predictions=["Two"], references=[["2"] * 10])
    {'accuracy': 100.0}
"""


class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            reference_urls=["https://visualqa.org/evaluation.html"],
        )

    def _compute(self, predictions, references, answer_types=None, leave_one_out=True):
        return vqa_accuracy(predictions, references, answer_types, leave_one_out=leave_one_out)
