"""`evaluate` module for image–text retrieval recall@K; load it offline with
`evaluate.load(transformers_scl.metrics.evaluate_module_path("retrieval_recall"))`.

`evaluate` copies only this file (and same-directory relative imports) into its module cache, so the logic is
imported from the installed `transformers_scl.metrics` package, which ships this file and is therefore always present.
`evaluate` stores every input row in Arrow; for COCO-sized galleries call `transformers_scl.metrics.retrieval_recall`
on the score matrices directly.
"""

import datasets
import evaluate
import numpy as np

from transformers_scl.metrics import retrieval_recall

_CITATION = """\
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li},
  booktitle={CVPR},
  year={2015}
}
"""

_DESCRIPTION = """\
Image-text retrieval recall@K with several ground-truth captions per image. For an image query the rank is the best
position of any of its captions among all captions sorted by score; for a caption query, the position of its image.
R@K = 100 * mean(rank < K). Ties count against the ground truth.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per image: its scores for every caption (scores_i2t).
    references (`list` of `list` of `int`): one row per image: the indices of its ground-truth captions (img2txt).
    scores_t2i (array of shape (N_txt, N_img), optional): text-to-image scores when they differ from the transpose of
        `predictions` (e.g. after ITM re-ranking of each direction).
    ks (`tuple` of `int`, defaults to (1, 5, 10)): the K values.
Returns:
    txt_r{k} (image-to-text), img_r{k} (text-to-image), txt_r_mean, img_r_mean, r_mean: recalls in %.
Examples:
    >>> metric = evaluate.load(evaluate_module_path("retrieval_recall"))
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[0], [1]], ks=(1,))
    {'txt_r1': 100.0, 'txt_r_mean': 100.0, 'img_r1': 100.0, 'img_r_mean': 100.0, 'r_mean': 100.0}
"""


class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Model scores are at most float32, so storing them as float32 loses nothing.
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("float32")),
                    "references": datasets.List(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, scores_t2i=None, ks=(1, 5, 10)):
        rows = {len(row) for row in predictions}
        if len(rows) != 1:
            raise ValueError(f"Every prediction row must score all captions; got rows of lengths {sorted(rows)}")
        scores_i2t = np.asarray(predictions, dtype=np.float32)
        return retrieval_recall(scores_i2t, scores_t2i=scores_t2i, img2txt=references, ks=ks)
