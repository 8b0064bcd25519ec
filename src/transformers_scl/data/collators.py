"""Collators: processed examples -> model batches.

Input examples are dicts with `input_ids` (list or tensor, padded or not), optional `attention_mask`, and either
`pixel_values` (3, H, W) or `pixel_values_videos` (F, 3, H, W), plus label fields. Rows whose pixels are `None` were
skipped by `MediaTextTransform` (their media could not be decoded, and they were logged and counted there); the
collators drop them.

* `SCLDataCollator`: right-pads the text, stacks the pixels and passes label fields through (fine-tuning,
  retrieval).
* `SCLVQACollator`: also turns `answer_ids` / `answer_scores` into dense soft-score `labels` (spec §3).
* `SCLPretrainingCollator`: also builds the masked texts of pre-training, `mlm_input_ids` / `mlm_labels` (spec
  §2.1) and `mlsc_input_ids` (spec §2.4). These names are the inputs of `SCLForPreTraining.forward`.

A batch holds images or videos, never both; to train on a mix, batch each modality separately with
`ModalityGroupedBatchSampler`.
"""

import os
from collections.abc import Sequence
from typing import Any

import torch

from ..masking import MaskingVocabulary, mask_tokens_for_mlm, mask_tokens_for_mlsc
from .samplers import draw_seed

__all__ = ["SCLDataCollator", "SCLPretrainingCollator", "SCLVQACollator"]

PIXEL_KEYS = ("pixel_values", "pixel_values_videos")


def _is_skipped(example: Any) -> bool:
    return example is None or any(key in example and example[key] is None for key in PIXEL_KEYS)


def _to_tensor(value: Any, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"Field {name!r} cannot be made into a tensor: {value!r}") from error


class SCLDataCollator:
    """Pad text, stack pixels and pass label fields through.

    Args:
        tokenizer: gives the padding id.
        pad_to_multiple_of: round the padded length up to a multiple of this (e.g. 8 for tensor cores).
        label_names: fields copied into the batch as tensors (stacked if tensors, else `torch.tensor`), e.g.
            `("labels",)`. Other fields are ignored, so string columns never reach the model.

    Returns (from `__call__`): `input_ids`, `attention_mask` (long, (B, L)), `pixel_values` (B, 3, H, W) or
    `pixel_values_videos` (B, F, 3, H, W), and the label fields.
    """

    def __init__(self, tokenizer, *, pad_to_multiple_of: int | None = None, label_names: Sequence[str] = ("labels",)):
        if tokenizer.pad_token_id is None:
            raise ValueError(f"The tokenizer {type(tokenizer).__name__} has no pad token; the collator pads text.")
        self.tokenizer = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_names = tuple(label_names)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        kept = [example for example in examples if not _is_skipped(example)]
        if not kept:
            raise RuntimeError(
                f"All {len(examples)} examples of this batch were skipped because their media could not be decoded "
                "(see the warnings above, one per file). Check the paths and files of your data set."
            )
        batch = self._pad_text(kept)
        batch.update(self._stack_pixels(kept))
        for name in self.label_names:
            batch.update(self._gather(kept, name))
        return batch

    def _pad_text(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids, masks = [], []
        for index, example in enumerate(examples):
            if "input_ids" not in example:
                raise KeyError(f"Example {index} has no 'input_ids'; its keys are {sorted(example)}.")
            row = torch.as_tensor(example["input_ids"], dtype=torch.long).flatten()
            mask = example.get("attention_mask")
            mask = torch.ones_like(row) if mask is None else torch.as_tensor(mask, dtype=torch.long).flatten()
            if mask.shape != row.shape:
                raise ValueError(f"Example {index}: attention_mask length {len(mask)} != input_ids length {len(row)}.")
            ids.append(row)
            masks.append(mask)
        length = max(len(row) for row in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(ids), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for row, (row_ids, row_mask) in enumerate(zip(ids, masks)):
            input_ids[row, : len(row_ids)] = row_ids
            attention_mask[row, : len(row_mask)] = row_mask
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    @staticmethod
    def _stack_pixels(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        keys = {key for example in examples for key in PIXEL_KEYS if example.get(key) is not None}
        if keys == set(PIXEL_KEYS):
            raise ValueError(
                "This batch mixes images (pixel_values) and videos (pixel_values_videos), which cannot share a "
                "tensor. Batch each modality separately, e.g. with ModalityGroupedBatchSampler."
            )
        if not keys:
            raise KeyError(f"The examples hold neither {PIXEL_KEYS[0]!r} nor {PIXEL_KEYS[1]!r}.")
        key = keys.pop()
        missing = [index for index, example in enumerate(examples) if example.get(key) is None]
        if missing:
            raise KeyError(f"Examples {missing} have no {key!r}, unlike the rest of the batch.")
        tensors = [torch.as_tensor(example[key]) for example in examples]
        shapes = {tuple(tensor.shape) for tensor in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"Cannot stack {key} of different shapes {sorted(shapes)}: process every example to the same "
                "image size (and, for videos, the same number of frames)."
            )
        return {key: torch.stack(tensors)}

    @staticmethod
    def _gather(examples: Sequence[dict[str, Any]], name: str) -> dict[str, torch.Tensor]:
        present = [name in example for example in examples]
        if not any(present):
            return {}
        if not all(present):
            raise KeyError(f"Field {name!r} is missing from examples {[i for i, p in enumerate(present) if not p]}.")
        values = [example[name] for example in examples]
        if all(isinstance(value, torch.Tensor) for value in values):
            return {name: torch.stack(values)}
        return {name: _to_tensor(values, name)}


class SCLVQACollator(SCLDataCollator):
    """`SCLDataCollator` that also builds VQA targets: `labels` (B, num_labels) float, the soft score of every
    answer in `answer_ids` / `answer_scores` and 0 elsewhere (spec §3: BCE against soft scores)."""

    def __init__(self, tokenizer, num_labels: int, *, pad_to_multiple_of: int | None = None):
        super().__init__(tokenizer, pad_to_multiple_of=pad_to_multiple_of, label_names=())
        if num_labels < 1:
            raise ValueError(f"num_labels must be positive, got {num_labels}.")
        self.num_labels = num_labels

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(examples)
        kept = [example for example in examples if not _is_skipped(example)]
        labels = torch.zeros(len(kept), self.num_labels)
        for row, example in enumerate(kept):
            if "answer_ids" not in example or "answer_scores" not in example:
                raise KeyError(
                    f"Example {row} needs 'answer_ids' and 'answer_scores'; its keys are {sorted(example)}."
                )
            ids = torch.as_tensor(example["answer_ids"], dtype=torch.long)
            scores = torch.as_tensor(example["answer_scores"], dtype=torch.float)
            if ids.shape != scores.shape:
                raise ValueError(f"Example {row}: {len(ids)} answer_ids but {len(scores)} answer_scores.")
            if len(ids) and (ids.min() < 0 or ids.max() >= self.num_labels):
                raise ValueError(f"Example {row}: answer id out of range [0, {self.num_labels}): {ids.tolist()}.")
            labels[row, ids] = scores
        batch["labels"] = labels
        return batch


class SCLPretrainingCollator(SCLDataCollator):
    """`SCLDataCollator` that also masks the text for MLM and MLSC.

    Adds `mlm_input_ids` and `mlm_labels` (`mask_tokens_for_mlm`, spec §2.1) and `mlsc_input_ids`
    (`mask_tokens_for_mlsc`, spec §2.4), all (B, L) long, aligned with `input_ids` / `attention_mask`.

    Args:
        mlm_probability: MLM masking rate of real tokens (config `mlm_probability`).
        text_mask_ratio: MLSC masking ratio (config `text_mask_ratio`).
        seed: if given, masks are reproducible: the same seed and the same sequence of batches give the same masks.
            Each DataLoader worker (and distributed rank) derives its own stream from it, so workers do not repeat
            each other's masks. If None, masks come from torch's global generator, which `Trainer`/`DataLoader` seed.

    Examples that carry a `sample_seed` (from a `SeededDataset`) override both: the batch's masks are drawn from a
    generator seeded with their seeds, so they depend on the examples alone, not on any RNG state (exact resume).
    """

    def __init__(
        self,
        tokenizer,
        *,
        mlm_probability: float = 0.15,
        text_mask_ratio: float = 0.4,
        seed: int | None = None,
        pad_to_multiple_of: int | None = None,
        label_names: Sequence[str] = (),
    ):
        super().__init__(tokenizer, pad_to_multiple_of=pad_to_multiple_of, label_names=label_names)
        self.vocabulary = MaskingVocabulary.from_tokenizer(tokenizer)
        self.mlm_probability = mlm_probability
        self.text_mask_ratio = text_mask_ratio
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_owner: tuple | None = None

    @classmethod
    def from_config(cls, tokenizer, config, **kwargs) -> "SCLPretrainingCollator":
        """Masking rates from an `SCLConfig` (`mlm_probability`, `text_mask_ratio`)."""
        return cls(tokenizer, mlm_probability=config.mlm_probability, text_mask_ratio=config.text_mask_ratio, **kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_generator"], state["_generator_owner"] = None, None  # each process makes its own
        return state

    def _process_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        worker = torch.utils.data.get_worker_info()
        worker_id = worker.id if worker is not None else -1
        rank = (
            torch.distributed.get_rank()
            if torch.distributed.is_available() and torch.distributed.is_initialized()
            else 0
        )
        owner = (os.getpid(), worker_id, rank)
        if self._generator_owner != owner:
            # Distinct, reproducible streams per (rank, worker); the main process (worker -1) uses `seed` itself.
            stream_seed = self.seed if (worker_id, rank) == (-1, 0) else hash((self.seed, rank, worker_id)) % 2**63
            self._generator = torch.Generator().manual_seed(stream_seed)
            self._generator_owner = owner
        return self._generator

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(examples)
        seeds = [example.get("sample_seed") for example in examples if not _is_skipped(example)]
        if all(seed is not None for seed in seeds):
            generator = torch.Generator().manual_seed(draw_seed(*seeds))
        else:
            generator = self._process_generator()
        batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens_for_mlm(
            batch["input_ids"],
            batch["attention_mask"],
            self.vocabulary,
            mlm_probability=self.mlm_probability,
            generator=generator,
        )
        batch["mlsc_input_ids"] = mask_tokens_for_mlsc(
            batch["input_ids"],
            batch["attention_mask"],
            self.vocabulary,
            mask_ratio=self.text_mask_ratio,
            generator=generator,
        )
        return batch
