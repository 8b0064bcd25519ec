"""VQAv2 accuracy: the official answer normalisation and 10-human consensus score, plus the training-time score.

The semantics follow the official VQAv2 evaluation (`vqaEval.py`, Agrawal et al.),
re-implemented here from its description:

* every answer is normalised (`normalize_vqa_answer`);
* a prediction scores `min(1, #humans who gave it / 3)` averaged over the 10 leave-one-out subsets of the human
  answers (`vqa_answer_score`), i.e. 0, 0.3, 0.6, 0.9, 1 for 0, 1, 2, 3, >=4 matching humans;
* accuracy is the mean score in %, overall and per answer type (`vqa_accuracy`).

One deliberate difference: `vqaEval.py` skips normalising the prediction when all humans gave the same answer (a
shortcut that scores "Yes" as wrong against ten "yes"). Here predictions and human answers are always normalised.
Predictions taken from SCL's answer vocabulary are already normalised, so the reported numbers are unchanged.
"""

import functools
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

# vqaEval.py's punctuation list; "." is handled separately so that decimals survive, "'" is kept for contractions.
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# vqaEval.py meant "a period not between digits"; its look-behind is malformed, so in effect a period is removed
# unless a digit follows it ("2." -> "2", "1.5" and ".5" kept). We reproduce that effective rule so that scores match
# the evaluation server.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# Apostrophe-less spellings restored to the form used by the VQAv2 annotations. A subset of vqaEval.py's table:
# the entries that are also ordinary words ("shed", "wed", "ill", "id", "its", "well", "were") are left out on
# purpose, because "shed" or "well" are real answers.
_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldnt": "couldn't",
    "couldve": "could've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "im": "i'm",
    "isnt": "isn't",
    "itd": "it'd",
    "itll": "it'll",
    "ive": "i've",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "oclock": "o'clock",
    "shant": "shan't",
    "shes": "she's",
    "shouldnt": "shouldn't",
    "shouldve": "should've",
    "thats": "that's",
    "theres": "there's",
    "theyd": "they'd",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "wasnt": "wasn't",
    "werent": "weren't",
    "weve": "we've",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whens": "when's",
    "wheres": "where's",
    "whos": "who's",
    "whys": "why's",
    "wont": "won't",
    "wouldnt": "wouldn't",
    "wouldve": "would've",
    "yall": "y'all",
    "youd": "you'd",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
_HUMANS_FOR_FULL_CREDIT = 3  # an answer given by 3 humans is fully correct (VQAv2 consensus rule)


def _strip_punctuation(text: str) -> str:
    # A mark that touches a space is deleted ("yes, it is" -> "yes it is"), as is every mark when the answer holds a
    # digit-comma-digit ("1,000" -> "1000"); any other mark separates words ("black-white" -> "black white").
    # As in vqaEval.py the decision is taken on the original text, one mark at a time.
    delete_marks = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if mark in text:
            touches_space = f"{mark} " in text or f" {mark}" in text
            out = out.replace(mark, "" if delete_marks or touches_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def normalize_vqa_answer(answer: str) -> str:
    """Normalise an answer the way the VQAv2 evaluation does.

    Lower-cases, strips punctuation (keeping decimal points and digit grouping: "1,000" -> "1000"), maps number
    words up to ten to digits ("none"/"zero" -> "0"), drops the articles a/an/the, restores common contractions
    ("dont" -> "don't") and collapses whitespace. For example "The Two dogs." -> "2 dogs".
    """
    if not isinstance(answer, str):
        raise TypeError(f"A VQA answer must be a str, got {type(answer).__name__}: {answer!r}")
    return _normalize(answer)


@functools.lru_cache(maxsize=1 << 16)  # VQAv2 has ~2M human answers but only tens of thousands of distinct strings
def _normalize(answer: str) -> str:
    words = _strip_punctuation(answer.lower()).split()
    words = [_NUMBER_WORDS.get(word, word) for word in words]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _consensus_score(num_matches: int, num_answers: int, leave_one_out: bool) -> float:
    if not leave_one_out:
        return min(1.0, num_matches / _HUMANS_FOR_FULL_CREDIT)
    # Mean over the leave-one-out subsets in closed form: leaving out one of the `num_matches` agreeing humans
    # leaves num_matches - 1 matches, leaving out any other human leaves num_matches.
    kept_all = min(1.0, num_matches / _HUMANS_FOR_FULL_CREDIT)
    lost_one = min(1.0, max(num_matches - 1, 0) / _HUMANS_FOR_FULL_CREDIT)
    return (num_matches * lost_one + (num_answers - num_matches) * kept_all) / num_answers


def vqa_answer_score(prediction: str, human_answers: Sequence[str], *, leave_one_out: bool = True) -> float:
    """Score in [0, 1] of one predicted answer against the human answers of its question (10 in VQAv2).

    With `leave_one_out=True` (official) the score is the mean, over the subsets that leave out one human, of
    `min(1, #matches / 3)`; with 10 humans this gives 0, 0.3, 0.6, 0.9, 1 for 0, 1, 2, 3, >=4 matches.
    `leave_one_out=False` is the common simplification `min(1, #matches / 3)`.
    """
    if isinstance(human_answers, str) or not hasattr(human_answers, "__len__"):
        raise TypeError(f"`human_answers` must be a list of strings, got {type(human_answers).__name__}")
    if len(human_answers) == 0:
        raise ValueError("`human_answers` is empty; every question needs at least one human answer")
    if leave_one_out and len(human_answers) == 1:
        raise ValueError(
            "Leave-one-out scoring of a single human answer always gives 0; use leave_one_out=False "
            "or provide more human answers"
        )
    predicted = normalize_vqa_answer(prediction)
    num_matches = sum(normalize_vqa_answer(answer) == predicted for answer in human_answers)
    return _consensus_score(num_matches, len(human_answers), leave_one_out)


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    answer_types: Sequence[str] | None = None,
    *,
    leave_one_out: bool = True,
) -> dict:
    """VQAv2 accuracy in %, overall and per answer type.

    Args:
        predictions: one predicted answer string per question.
        references: the human answers of each question (10 in VQAv2; any number >= 2, or >= 1 with
            `leave_one_out=False`).
        answer_types: optional answer type of each question ("yes/no", "number", "other" in VQAv2).
        leave_one_out: official leave-one-out consensus score (default) or the simplified `min(1, #matches / 3)`.

    Returns:
        `{"accuracy": float}`, plus `"accuracy_per_answer_type": {type: float}` when `answer_types` is given.
        Values are unrounded percentages (the official script rounds to 2 decimals).
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("`predictions` and `references` must be lists, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("`predictions` is empty")
    if answer_types is not None and len(answer_types) != len(predictions):
        raise ValueError(f"Got {len(answer_types)} answer_types for {len(predictions)} predictions")

    scores = []
    for index, (prediction, human_answers) in enumerate(zip(predictions, references)):
        if isinstance(human_answers, str):
            raise TypeError(
                f"references[{index}] is the string {human_answers!r}; each reference must be the list of human answers"
            )
        try:
            scores.append(vqa_answer_score(prediction, human_answers, leave_one_out=leave_one_out))
        except (TypeError, ValueError) as error:
            raise type(error)(f"Question {index}: {error}") from error

    result = {"accuracy": 100.0 * sum(scores) / len(scores)}
    if answer_types is not None:
        per_type = defaultdict(list)
        for answer_type, score in zip(answer_types, scores):
            per_type[answer_type].append(score)
        result["accuracy_per_answer_type"] = {
            answer_type: 100.0 * sum(type_scores) / len(type_scores) for answer_type, type_scores in per_type.items()
        }
    return result


def vqa_score_from_logits(logits: torch.Tensor | np.ndarray, soft_scores: torch.Tensor | np.ndarray) -> float:
    """Training-time VQA score in %: the mean target soft score of each question's argmax answer.

    With VQA soft-score targets (0, 0.3, 0.6, 0.9, 1 for 0..>=4 agreeing humans, spec §3.1) this equals the official
    accuracy restricted to the answer vocabulary. `logits` and `soft_scores` are `(num_questions, num_answers)`.
    """
    logits = torch.as_tensor(logits)
    soft_scores = torch.as_tensor(soft_scores)
    if logits.ndim != 2 or logits.shape != soft_scores.shape:
        raise ValueError(
            "`logits` and `soft_scores` must both be (num_questions, num_answers); got "
            f"{tuple(logits.shape)} and {tuple(soft_scores.shape)}"
        )
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"`logits` is empty: shape {tuple(logits.shape)}")
    predicted = logits.argmax(dim=-1, keepdim=True).to(soft_scores.device)
    return 100.0 * soft_scores.gather(-1, predicted).double().mean().item()


def vqa_compute_metrics(eval_prediction) -> dict[str, float]:
    """`Trainer(compute_metrics=...)` for VQA: `{"vqa_score": vqa_score_from_logits(logits, label soft scores)}`."""
    logits = eval_prediction.predictions
    if isinstance(logits, tuple | list):  # the model returned more than logits; logits come first
        logits = logits[0]
    return {"vqa_score": vqa_score_from_logits(logits, eval_prediction.label_ids)}
