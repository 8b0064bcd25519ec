"""VQAv2 accuracy and retrieval recall@K against hand-worked cases, and their `evaluate` modules loaded offline."""

import math
import os

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from transformers_scl.metrics import (
    evaluate_module_path,
    image_to_text_ranks,
    normalize_vqa_answer,
    retrieval,
    retrieval_recall,
    text_to_image_ranks,
    txt2img_from_img2txt,
    vqa_accuracy,
    vqa_answer_score,
    vqa_compute_metrics,
    vqa_score_from_logits,
)

# ---------------------------------------------------------------------------------------------------------------------
# VQA answer normalisation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two", "2"),  # lower-case, then number word -> digit
        ("none", "0"),
        ("ten", "10"),
        ("the dog.", "dog"),  # article dropped, trailing period removed
        ("A  Red   Car ", "red car"),  # whitespace collapsed
        ("yes!", "yes"),  # a mark not touching a space becomes a space, then vanishes
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("don't", "don't"),  # apostrophes are not punctuation
        ("1,000", "1000"),  # digit-comma-digit: marks are deleted, not spaced
        ("yes, it is", "yes it is"),  # a comma touching a space is deleted
        ("black-white", "black white"),  # a mark between letters separates words
        ("1.5", "1.5"),  # decimal point kept
        ("2.", "2"),  # a period with no digit after it is removed
        ("shed", "shed"),  # real words that look like contractions are left alone
    ],
)
def test_normalize_vqa_answer_follows_the_official_rules(raw, normalised):
    assert normalize_vqa_answer(raw) == normalised


def test_normalize_vqa_answer_is_idempotent():
    for raw in ["The Two dogs.", "1,000!", "dont  know", "black-and-white?"]:
        once = normalize_vqa_answer(raw)
        assert normalize_vqa_answer(once) == once


# ---------------------------------------------------------------------------------------------------------------------
# VQA consensus score
# ---------------------------------------------------------------------------------------------------------------------


def _answers(num_matching: int, total: int = 10) -> list[str]:
    return ["cat"] * num_matching + ["dog"] * (total - num_matching)


@pytest.mark.parametrize(
    "num_matching, expected",
    [
        # 10 humans, m say "cat". Of the 10 leave-one-out subsets of 9, m drop a "cat" (m-1 matches left) and 10-m
        # keep all m. Score = (m * min(1, (m-1)/3) + (10-m) * min(1, m/3)) / 10.
        (0, 0.0),
        (1, 0.3),  # (1*0 + 9*1/3) / 10
        (2, 0.6),  # (2*1/3 + 8*2/3) / 10 = (2/3 + 16/3) / 10 = 6/10
        (3, 0.9),  # (3*2/3 + 7*1) / 10 = 9/10
        (4, 1.0),  # (4*1 + 6*1) / 10
        (10, 1.0),
    ],
)
def test_leave_one_out_score_over_ten_humans(num_matching, expected):
    assert vqa_answer_score("cat", _answers(num_matching)) == pytest.approx(expected)


def test_simplified_score_is_min_one_matches_over_three():
    assert vqa_answer_score("cat", _answers(2), leave_one_out=False) == pytest.approx(2 / 3)
    assert vqa_answer_score("cat", _answers(5), leave_one_out=False) == 1.0


def test_leave_one_out_score_with_fewer_than_ten_humans():
    # 3 humans, 1 says "cat": leaving it out gives 0 matches -> 0; leaving out either other gives 1 match -> 1/3.
    # Mean = (0 + 1/3 + 1/3) / 3 = 2/9.
    assert vqa_answer_score("cat", ["cat", "dog", "dog"]) == pytest.approx(2 / 9)


def test_score_matches_after_normalising_both_sides():
    # "Two" -> "2" matches the three "2"/"two." answers: 3 matches -> 0.9.
    human = ["2", "2", "two.", "3", "3", "3", "3", "3", "3", "3"]
    assert vqa_answer_score("Two", human) == pytest.approx(0.9)


def test_single_human_answer_needs_the_simplified_score():
    with pytest.raises(ValueError, match="single human answer"):
        vqa_answer_score("cat", ["cat"])
    assert vqa_answer_score("cat", ["cat"], leave_one_out=False) == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------------------------------
# VQA accuracy over a set
# ---------------------------------------------------------------------------------------------------------------------

VQA_PREDICTIONS = ["Yes", "2", "cat", "dog"]
VQA_REFERENCES = [
    ["yes"] * 10,  # 10 matches -> 1.0
    ["2", "2"] + ["3"] * 8,  # 2 matches -> 0.6
    ["dog"] * 10,  # 0 matches -> 0.0
    ["dog"] + ["cat"] * 9,  # 1 match -> 0.3
]
VQA_ANSWER_TYPES = ["yes/no", "number", "other", "other"]


def test_vqa_accuracy_overall_and_per_answer_type():
    result = vqa_accuracy(VQA_PREDICTIONS, VQA_REFERENCES, VQA_ANSWER_TYPES)
    assert result["accuracy"] == pytest.approx(100 * (1.0 + 0.6 + 0.0 + 0.3) / 4)  # 47.5
    assert result["accuracy_per_answer_type"] == pytest.approx({"yes/no": 100.0, "number": 60.0, "other": 15.0})


def test_vqa_accuracy_without_answer_types_reports_only_overall():
    assert vqa_accuracy(VQA_PREDICTIONS, VQA_REFERENCES) == pytest.approx({"accuracy": 47.5})


def test_vqa_accuracy_simplified_flag():
    # Only question 2 differs: 2 matches -> 2/3 instead of 0.6.
    result = vqa_accuracy(VQA_PREDICTIONS, VQA_REFERENCES, leave_one_out=False)
    assert result["accuracy"] == pytest.approx(100 * (1.0 + 2 / 3 + 0.0 + 1 / 3) / 4)


def test_vqa_accuracy_rejects_a_string_reference():
    with pytest.raises(TypeError, match=r"references\[1\]"):
        vqa_accuracy(["yes", "no"], [["yes"] * 10, "no"])


def test_vqa_accuracy_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        vqa_accuracy(["yes", "no"], [["yes"] * 10])


# ---------------------------------------------------------------------------------------------------------------------
# Training-time VQA score from logits
# ---------------------------------------------------------------------------------------------------------------------

LOGITS = [[2.0, 1.0, 0.0], [0.0, 0.0, 5.0]]
SOFT_SCORES = [[0.3, 1.0, 0.0], [0.0, 0.6, 0.9]]  # argmax answers score 0.3 and 0.9 -> mean 0.6 -> 60 %


def test_vqa_score_from_logits_is_the_mean_soft_score_of_the_argmax_answer():
    assert vqa_score_from_logits(torch.tensor(LOGITS), torch.tensor(SOFT_SCORES)) == pytest.approx(60.0)
    assert vqa_score_from_logits(np.array(LOGITS), np.array(SOFT_SCORES)) == pytest.approx(60.0)


def test_vqa_score_from_logits_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="num_questions, num_answers"):
        vqa_score_from_logits(np.zeros((2, 3)), np.zeros((2, 4)))


def test_vqa_compute_metrics_reads_a_trainer_eval_prediction():
    eval_prediction = EvalPrediction(predictions=(np.array(LOGITS), np.zeros((2, 4))), label_ids=np.array(SOFT_SCORES))
    assert vqa_compute_metrics(eval_prediction) == pytest.approx({"vqa_score": 60.0})


# ---------------------------------------------------------------------------------------------------------------------
# Retrieval recall@K
# ---------------------------------------------------------------------------------------------------------------------

# 3 images x 6 captions; image i owns captions 2i and 2i+1.
TXT2IMG = [0, 0, 1, 1, 2, 2]
IMG2TXT = [[0, 1], [2, 3], [4, 5]]
SCORES_I2T = [
    [0.90, 0.10, 0.80, 0.20, 0.30, 0.40],
    [0.70, 0.00, 0.50, 0.60, 0.35, 0.95],
    [0.85, 0.75, 0.65, 0.55, 0.45, 0.05],
]
# Image -> text (rows). img0: best gt 0.90, nothing above -> rank 0. img1: best gt 0.60 (c3); 0.70 and 0.95 above ->
# rank 2. img2: best gt 0.45 (c4); c0..c3 above -> rank 4.
IMAGE_RANKS = [0, 2, 4]
# Text -> image (columns). c0 [.90,.70,.85] gt img0 -> 0; c1 [.10,.00,.75] gt img0 -> 1; c2 [.80,.50,.65] gt img1 -> 2;
# c3 [.20,.60,.55] gt img1 -> 0; c4 [.30,.35,.45] gt img2 -> 0; c5 [.40,.95,.05] gt img2 -> 2.
TEXT_RANKS = [0, 1, 2, 0, 0, 2]


def test_hand_worked_ranks_in_both_directions():
    scores = torch.tensor(SCORES_I2T)
    txt2img = torch.tensor(TXT2IMG)
    assert image_to_text_ranks(scores, txt2img).tolist() == IMAGE_RANKS
    assert text_to_image_ranks(scores.T, txt2img).tolist() == TEXT_RANKS


def test_hand_worked_recall_at_1_5_10():
    result = retrieval_recall(torch.tensor(SCORES_I2T), txt2img=TXT2IMG)
    txt = [100 / 3, 100.0, 100.0]  # image ranks [0, 2, 4]: 1 of 3 below 1, all below 5 and 10
    img = [50.0, 100.0, 100.0]  # text ranks [0, 1, 2, 0, 0, 2]: 3 of 6 below 1
    expected = {
        "txt_r1": txt[0],
        "txt_r5": txt[1],
        "txt_r10": txt[2],
        "txt_r_mean": sum(txt) / 3,  # 77.78
        "img_r1": img[0],
        "img_r5": img[1],
        "img_r10": img[2],
        "img_r_mean": sum(img) / 3,  # 83.33
        "r_mean": (sum(txt) / 3 + sum(img) / 3) / 2,  # 80.56
    }
    assert result == pytest.approx(expected)


def test_recall_at_custom_ks():
    result = retrieval_recall(np.array(SCORES_I2T), img2txt=IMG2TXT, ks=(1, 2, 3))
    # image ranks [0, 2, 4] -> 1/3, 1/3, 2/3; text ranks [0, 1, 2, 0, 0, 2] -> 3/6, 4/6, 6/6
    assert [result["txt_r1"], result["txt_r2"], result["txt_r3"]] == pytest.approx([100 / 3, 100 / 3, 200 / 3])
    assert [result["img_r1"], result["img_r2"], result["img_r3"]] == pytest.approx([50.0, 400 / 6, 100.0])
    assert "txt_r5" not in result


def test_separate_text_to_image_scores_are_used_for_image_recall():
    # An ITM re-ranker that puts every caption's own image first: img_r1 becomes 100, txt recalls are unchanged.
    scores_t2i = np.eye(3)[TXT2IMG]
    result = retrieval_recall(np.array(SCORES_I2T), scores_t2i=scores_t2i, txt2img=TXT2IMG)
    assert result["img_r1"] == 100.0
    assert result["txt_r1"] == pytest.approx(100 / 3)


def test_ties_count_against_the_ground_truth():
    # Constant scores: every non-gt candidate ties with the gt, so an image's rank is its 2 foreign captions and a
    # caption's rank is the 1 other image. A constant model must not get perfect recall.
    scores = np.zeros((2, 4))
    txt2img = [0, 0, 1, 1]
    assert image_to_text_ranks(torch.tensor(scores), torch.tensor(txt2img)).tolist() == [2, 2]
    result = retrieval_recall(scores, txt2img=txt2img, ks=(1, 2, 3))
    assert [result["txt_r1"], result["txt_r2"], result["txt_r3"]] == [0.0, 0.0, 100.0]
    assert [result["img_r1"], result["img_r2"]] == [0.0, 100.0]


def test_images_may_have_different_numbers_of_captions():
    # img0 owns c0; img1 owns c1, c2, c3. img0 row: gt 0.1 below c1 (0.5) and c3 (0.9) -> rank 2.
    # img1 row: best gt is c2 (0.8) and the only foreign caption c0 (0.2) is below -> rank 0.
    scores = torch.tensor([[0.1, 0.5, 0.0, 0.9], [0.2, 0.3, 0.8, 0.1]])
    assert image_to_text_ranks(scores, torch.tensor([0, 1, 1, 1])).tolist() == [2, 0]


def _argsort_ranks(scores_i2t: np.ndarray, img2txt: list[list[int]], txt2img: list[int]):
    """Reference: the literal definition, best position of any gt in argsort(-score), one query at a time."""
    image_ranks = [min(np.where(np.argsort(-row)[:, None] == gt)[0]) for row, gt in zip(scores_i2t, img2txt)]
    text_ranks = [int(np.where(np.argsort(-row) == gt)[0][0]) for row, gt in zip(scores_i2t.T, txt2img)]
    return image_ranks, text_ranks


def test_ranks_equal_argsort_positions_when_scores_have_no_ties():
    rng = np.random.default_rng(0)
    txt2img = list(range(7)) + rng.integers(0, 7, size=13).tolist()
    img2txt = [[t for t, image in enumerate(txt2img) if image == i] for i in range(7)]
    scores = rng.standard_normal((7, 20))
    image_ranks, text_ranks = _argsort_ranks(scores, img2txt, txt2img)
    assert image_to_text_ranks(torch.tensor(scores), torch.tensor(txt2img)).tolist() == image_ranks
    assert text_to_image_ranks(torch.tensor(scores.T), torch.tensor(txt2img)).tolist() == text_ranks


def test_chunked_ranking_gives_the_same_recalls(monkeypatch):
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((9, 45))
    txt2img = np.repeat(np.arange(9), 5)
    whole = retrieval_recall(scores, txt2img=txt2img)
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 20)  # 1-image chunks; 2-caption chunks, the last one partial
    assert retrieval_recall(scores, txt2img=txt2img) == whole


def test_txt2img_is_derived_from_img2txt():
    assert txt2img_from_img2txt(IMG2TXT).tolist() == TXT2IMG
    assert retrieval_recall(np.array(SCORES_I2T), img2txt=IMG2TXT) == retrieval_recall(
        np.array(SCORES_I2T), txt2img=TXT2IMG
    )


def test_disagreeing_txt2img_and_img2txt_are_rejected():
    with pytest.raises(ValueError, match="disagree"):
        retrieval_recall(np.array(SCORES_I2T), txt2img=[0, 0, 1, 1, 2, 2], img2txt=[[0, 2], [1, 3], [4, 5]])


def test_an_image_without_captions_is_rejected():
    with pytest.raises(ValueError, match=r"Images \[2\] have no ground-truth caption"):
        retrieval_recall(np.array(SCORES_I2T), txt2img=[0, 0, 1, 1, 1, 1])


def test_nan_scores_are_rejected():
    scores = np.array(SCORES_I2T)
    scores[1, 2] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(scores, txt2img=TXT2IMG)


def test_wrongly_shaped_text_to_image_scores_are_rejected():
    with pytest.raises(ValueError, match=r"\(N_txt, N_img\) = \(6, 3\)"):
        retrieval_recall(np.array(SCORES_I2T), scores_t2i=np.array(SCORES_I2T), txt2img=TXT2IMG)


# ---------------------------------------------------------------------------------------------------------------------
# `evaluate` modules, loaded offline by path
# ---------------------------------------------------------------------------------------------------------------------


def test_evaluate_module_path_is_an_absolute_directory_holding_the_script():
    path = evaluate_module_path("vqa_accuracy")
    assert os.path.isabs(path)
    assert os.path.isfile(os.path.join(path, "vqa_accuracy.py"))
    with pytest.raises(ValueError, match="retrieval_recall"):
        evaluate_module_path("accuracy")


@pytest.fixture
def offline_evaluate(monkeypatch):
    """`evaluate` with every Hub access disabled: any download attempt raises."""
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    return evaluate


def test_vqa_evaluate_module_loads_offline_and_matches_the_function(offline_evaluate):
    metric = offline_evaluate.load(evaluate_module_path("vqa_accuracy"), keep_in_memory=True)
    metric.add_batch(predictions=VQA_PREDICTIONS[:2], references=VQA_REFERENCES[:2])
    metric.add_batch(predictions=VQA_PREDICTIONS[2:], references=VQA_REFERENCES[2:])
    result = metric.compute(answer_types=VQA_ANSWER_TYPES)
    assert result == vqa_accuracy(VQA_PREDICTIONS, VQA_REFERENCES, VQA_ANSWER_TYPES)
    assert result["accuracy"] == pytest.approx(47.5)


def test_retrieval_evaluate_module_loads_offline_and_matches_the_function(offline_evaluate):
    metric = offline_evaluate.load(evaluate_module_path("retrieval_recall"), keep_in_memory=True)
    result = metric.compute(predictions=SCORES_I2T, references=IMG2TXT, ks=(1, 2, 3))
    assert result == pytest.approx(retrieval_recall(np.array(SCORES_I2T), txt2img=TXT2IMG, ks=(1, 2, 3)))
    assert result["img_r2"] == pytest.approx(400 / 6)
