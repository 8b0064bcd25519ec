"""Evaluation metrics for SCL's downstream tasks: VQAv2 accuracy and image–text retrieval recall@K.

The metrics are plain numpy/torch functions that need no Hub access. The same metrics ship as local `evaluate`
modules for users of the `evaluate` API: `evaluate.load(evaluate_module_path("vqa_accuracy"))` or
`evaluate.load(evaluate_module_path("retrieval_recall"))`. Those modules are thin wrappers that import this package,
so there is one implementation, and they load offline because they ship inside it.
"""

from pathlib import Path

from .retrieval import image_to_text_ranks, retrieval_recall, text_to_image_ranks, txt2img_from_img2txt
from .vqa import normalize_vqa_answer, vqa_accuracy, vqa_answer_score, vqa_compute_metrics, vqa_score_from_logits

EVALUATE_MODULES_DIR = Path(__file__).resolve().parent / "evaluate_modules"
EVALUATE_MODULE_NAMES = ("vqa_accuracy", "retrieval_recall")


def evaluate_module_path(name: str) -> str:
    """Absolute path of a bundled `evaluate` module directory, to pass to `evaluate.load`.

    Absolute because `evaluate` reads a relative path with at most one "/" that it cannot find from the working
    directory as a Hub id.
    """
    if name not in EVALUATE_MODULE_NAMES:
        raise ValueError(f"Unknown evaluate module {name!r}; available: {', '.join(EVALUATE_MODULE_NAMES)}")
    return str(EVALUATE_MODULES_DIR / name)


__all__ = [
    "EVALUATE_MODULE_NAMES",
    "evaluate_module_path",
    "image_to_text_ranks",
    "normalize_vqa_answer",
    "retrieval_recall",
    "text_to_image_ranks",
    "txt2img_from_img2txt",
    "vqa_accuracy",
    "vqa_answer_score",
    "vqa_compute_metrics",
    "vqa_score_from_logits",
]
