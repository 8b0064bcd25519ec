"""Caption-data helpers the example scripts share: truncation, distinct-caption galleries, held-out splits, and a
byte-level BPE tokenizer trained on the captions themselves (for pre-training from scratch on your own data)."""

import os
import random
from collections.abc import Hashable, Iterable

from datasets import Dataset, IterableDataset

__all__ = ["split_off_held_out", "train_caption_tokenizer", "truncate", "unique_captions"]

# RoBERTa's special tokens, in RoBERTa's id order (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4).
ROBERTA_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def truncate(dataset: Dataset | IterableDataset | None, limit: int | None):
    """The first `limit` rows (`--max_train_samples` / `--max_eval_samples`); `None` passes through."""
    if dataset is None or limit is None:
        return dataset
    if limit < 0:
        raise ValueError(f"A sample limit must be non-negative, got {limit}.")
    if isinstance(dataset, IterableDataset):
        return dataset.take(limit)
    return dataset.select(range(min(limit, len(dataset))))


def unique_captions(pairs: Dataset, column: str = "caption") -> Dataset:
    """Keep the first row of each distinct caption.

    With two identical captions in a retrieval gallery, neither image could be told apart from the other (and ties
    count as misses), so the held-out synthetic galleries keep one row per caption."""
    seen: set[str] = set()
    keep = [index for index, caption in enumerate(pairs[column]) if not (caption in seen or seen.add(caption))]
    return pairs.select(keep)


def split_off_held_out(pairs: Dataset, id_column: str, percentage: float, seed: int) -> tuple[Dataset, Dataset]:
    """Hold out `percentage` % of the images/videos; every caption of one stays on its side, so nothing leaks."""
    ids: list[Hashable] = sorted(set(pairs[id_column]))
    count = max(1, round(len(ids) * percentage / 100))
    if count >= len(ids):
        raise ValueError(f"Cannot hold out {percentage}% of {len(ids)} images/videos and still train.")
    held_out = set(random.Random(seed).sample(ids, count))
    train = pairs.filter(lambda group: group not in held_out, input_columns=id_column)
    return train, pairs.filter(lambda group: group in held_out, input_columns=id_column)


def train_caption_tokenizer(
    captions: Iterable[str], vocab_size: int, save_dir: str | os.PathLike, model_max_length: int = 50
):
    """Train a byte-level BPE (RoBERTa's tokenizer model and special tokens) on `captions`, save it to `save_dir`
    and return it as a `RobertaTokenizerFast`.

    This is what pre-training from scratch on a folder of captioned images needs when no tokenizer fits the data:
    `run_pretraining.py --train_tokenizer_vocab_size N`.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    if vocab_size <= len(ROBERTA_SPECIAL_TOKENS) + 256:
        raise ValueError(
            f"vocab_size must exceed the 256 byte tokens and {len(ROBERTA_SPECIAL_TOKENS)} special tokens, "
            f"got {vocab_size}."
        )
    captions = [caption for caption in captions if caption]
    if not captions:
        raise ValueError("No captions to train a tokenizer on.")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        captions, vocab_size=vocab_size, min_frequency=2, special_tokens=list(ROBERTA_SPECIAL_TOKENS),
        show_progress=False,
    )  # fmt: skip
    os.makedirs(save_dir, exist_ok=True)
    bpe.save_model(str(save_dir))
    tokenizer = RobertaTokenizerFast.from_pretrained(str(save_dir), model_max_length=model_max_length)
    tokenizer.save_pretrained(str(save_dir))
    return tokenizer
