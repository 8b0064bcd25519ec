"""Text masking for SCL pre-training: MLM (spec §2.1) and the masked text of MLSC (spec §2.4); and, at the end, the
samplers of the other random choices (kept patches, ITM pairs and negatives, retrieval negatives).

Both functions work on padded `(batch, length)` id tensors, are vectorised, never touch special tokens or padding,
and draw all randomness from an optional `torch.Generator`, so a seeded generator reproduces the masks exactly.

Two deliberate departures from the reference code:

* **MLM masks each real, non-special token independently with probability `mlm_probability` (0.15).** The reference
  uses HF's whole-word-masking collator, which is token-level with RoBERTa (spec §2.1, §7.2 item 6). That collator
  picks round(0.15 x 50) = 8 candidates among all 50 *padded* positions and then drops the special and pad ones, so
  about 8/50 = 16% of the real tokens are masked whatever the caption length. The 16% is an artefact of padding to 50
  (it would change with `max_text_len`), so we keep the documented rate, 15% of real tokens, independent of padding.
  Pass `mlm_probability=0.16` to match the reference's effective rate.
* **MLSC samples positions without replacement.** The reference draws `mask_len = int((L-2)*0.4)+1` positions with
  `np.random.randint`, i.e. with replacement, so duplicates make the real ratio fall below 40% (spec §2.4). We mask
  exactly `mask_len` distinct positions.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskingVocabulary:
    """The token ids masking needs. Build it from a tokenizer with `MaskingVocabulary.from_tokenizer`."""

    mask_token_id: int
    pad_token_id: int
    vocab_size: int
    special_token_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "MaskingVocabulary":
        missing = [name for name in ("mask_token_id", "pad_token_id") if getattr(tokenizer, name, None) is None]
        if missing:
            raise ValueError(
                f"The tokenizer {type(tokenizer).__name__} has no {' or '.join(missing)}; masking needs both."
            )
        return cls(
            mask_token_id=tokenizer.mask_token_id,
            pad_token_id=tokenizer.pad_token_id,
            # len() counts added tokens: a random replacement may be any id the embeddings know (as in HF's collator).
            vocab_size=len(tokenizer),
            special_token_ids=tuple(sorted(set(tokenizer.all_special_ids))),
        )


def _as_vocabulary(tokenizer_or_vocabulary) -> MaskingVocabulary:
    if isinstance(tokenizer_or_vocabulary, MaskingVocabulary):
        return tokenizer_or_vocabulary
    return MaskingVocabulary.from_tokenizer(tokenizer_or_vocabulary)


def _maskable_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocabulary: MaskingVocabulary
) -> torch.Tensor:
    """Boolean (batch, length): real tokens that are not special tokens (`<s>`, `</s>`, `<pad>`, ...)."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a (batch, length) tensor, got shape {tuple(input_ids.shape)}.")
    if attention_mask is None:
        attention_mask = input_ids != vocabulary.pad_token_id
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}."
        )
    special = torch.isin(input_ids, torch.tensor(vocabulary.special_token_ids, device=input_ids.device))
    return attention_mask.bool() & ~special


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Draw on the generator's device, so one CPU generator gives the same masks whatever device the batch is on.
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def mask_tokens_for_mlm(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    tokenizer,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask tokens for masked language modelling (spec §2.1).

    Every real, non-special token is selected with probability `mlm_probability`. A selected token becomes `<mask>`
    with probability `mask_replace_prob` (0.8), a uniformly random token id with probability `random_replace_prob`
    (0.1), and stays unchanged otherwise (0.1).

    Args:
        input_ids: `(batch, length)` token ids, padded.
        attention_mask: `(batch, length)`, 1 for real tokens; if None, real tokens are those that are not padding.
        tokenizer: the tokenizer (or a `MaskingVocabulary`) giving the `<mask>`, padding and special token ids.
        generator: source of randomness; seed it for reproducible masks.

    Returns:
        `(masked_input_ids, labels)`: a new id tensor, and the original ids at selected positions with -100 elsewhere.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}.")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
        raise ValueError(
            "mask_replace_prob and random_replace_prob must be non-negative and sum to at most 1, got "
            f"{mask_replace_prob} and {random_replace_prob}."
        )
    vocabulary = _as_vocabulary(tokenizer)
    maskable = _maskable_positions(input_ids, attention_mask, vocabulary)
    device = input_ids.device

    selected = maskable & (_uniform(input_ids.shape, generator, device) < mlm_probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))

    # One draw decides the 80/10/10 split: [0, 0.8) -> <mask>, [0.8, 0.9) -> random token, [0.9, 1) -> unchanged.
    action = _uniform(input_ids.shape, generator, device)
    to_mask = selected & (action < mask_replace_prob)
    to_random = selected & (action >= mask_replace_prob) & (action < mask_replace_prob + random_replace_prob)
    random_ids = torch.randint(
        vocabulary.vocab_size,
        input_ids.shape,
        generator=generator,
        device=generator.device if generator is not None else device,
    ).to(device)

    masked_input_ids = input_ids.clone()
    masked_input_ids[to_mask] = vocabulary.mask_token_id
    masked_input_ids[to_random] = random_ids[to_random].to(input_ids.dtype)
    return masked_input_ids, labels


def mask_tokens_for_mlsc(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    tokenizer,
    mask_ratio: float = 0.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask the text for masked language semantic completion (MLSC, spec §2.4).

    A sample with `n` maskable tokens (real tokens minus `<s>` and `</s>`: `n = L - 2` for a RoBERTa caption of `L`
    real tokens) gets exactly `int(n * mask_ratio) + 1` distinct positions replaced by `<mask>`, with no 80/10/10 rule.
    Samples with no maskable token (`L <= 2`) are left unchanged. Positions are drawn without replacement, unlike the
    reference (see the module docstring).

    Args:
        input_ids: `(batch, length)` token ids, padded.
        attention_mask: `(batch, length)`, 1 for real tokens; if None, real tokens are those that are not padding.
        tokenizer: the tokenizer (or a `MaskingVocabulary`) giving the `<mask>`, padding and special token ids.
        mask_ratio: `mtm_ratio` of the reference, 0.4.
        generator: source of randomness; seed it for reproducible masks.

    Returns:
        The masked ids, a new tensor.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}.")
    vocabulary = _as_vocabulary(tokenizer)
    maskable = _maskable_positions(input_ids, attention_mask, vocabulary)

    num_maskable = maskable.sum(dim=1)
    # float64 product then floor, as Python's int((L-2)*0.4) on doubles; at most every maskable token is masked.
    num_to_mask = torch.floor(num_maskable.double() * mask_ratio).long() + 1
    num_to_mask = torch.minimum(num_to_mask, num_maskable)

    # Without replacement: rank the maskable positions of each row by a random score and keep the top num_to_mask.
    scores = _uniform(input_ids.shape, generator, input_ids.device).masked_fill(~maskable, -1.0)
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    to_mask = maskable & (ranks < num_to_mask[:, None])

    return input_ids.masked_fill(to_mask, vocabulary.mask_token_id)


# ---------------------------------------------------------------------------------------------------------------------
# Samplers of the other random choices of pre-training and retrieval training: kept patches, ITM pairs, negatives
# ---------------------------------------------------------------------------------------------------------------------


def sample_patch_keep_indices(
    batch_size: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.LongTensor:
    """MAE-style random patch subset per sample, shared by every frame of a clip (tube masking, spec §1.2).

    `int(N * (1 - ratio))` patches are kept, with the reference's float rounding (`1 - 0.8 = 0.19999…`, so 25 patches
    keep 4). Indices stay in random order, as in the reference; frame-CLS outputs do not depend on the order.
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if num_keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} keeps no patch out of {num_patches}.")
    noise = torch.rand(batch_size, num_patches, generator=generator, device=generator.device if generator else device)
    return noise.argsort(dim=1)[:, :num_keep].to(device)


def sample_itm_labels(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.LongTensor:
    """spec §2.2: `batch_size // 2` positives (1), the rest negatives (0), in random order."""
    order = torch.randperm(batch_size, generator=generator, device=generator.device if generator else device)
    return (order < batch_size // 2).long().to(device)


def sample_itm_negatives(
    batch_size: int,
    similarity: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.LongTensor:
    """For each text, the index of another image of the batch to pair it with; never its own.

    Without `similarity`, uniform over the other images, drawn independently per text (the reference draws a
    uniformly random dataset image, spec §2.2). With a `(batch, batch)` text-to-image `similarity` (logits), drawn
    from its softmax over the other images: ALBEF-style hard negatives.
    """
    if batch_size < 2:
        raise ValueError(
            f"ITM negatives are other images of the batch, so ITM needs at least 2 samples, got {batch_size}."
        )
    rng_device = generator.device if generator else device
    if similarity is None:
        offsets = torch.randint(1, batch_size, (batch_size,), generator=generator, device=rng_device)
        return ((torch.arange(batch_size, device=rng_device) + offsets) % batch_size).to(device)
    own = torch.eye(batch_size, dtype=torch.bool, device=similarity.device)
    weights = similarity.float().masked_fill(own, float("-inf")).softmax(dim=1)
    return torch.multinomial(weights.to(rng_device), 1, generator=generator).squeeze(1).to(device)


def sample_negative_text_indices(
    batch_size: int, num_negatives: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.LongTensor:
    """For each row of the batch, `min(num_negatives, batch_size - 1)` distinct other rows, uniformly at random.

    The reference draws its 15 negative texts at random from the whole dataset (spec §3.1); in-batch negatives need
    no extra text encodings. A batch smaller than `num_negatives + 1` yields fewer negatives.
    """
    if batch_size < 2:
        raise ValueError(
            f"Retrieval negatives are other texts of the batch, so the batch needs 2 samples, got {batch_size}."
        )
    num_negatives = min(num_negatives, batch_size - 1)
    noise = torch.rand(batch_size, batch_size, generator=generator, device=generator.device if generator else device)
    noise.fill_diagonal_(2.0)  # above every uniform draw: a row's own text sorts last and is never picked
    return noise.argsort(dim=1)[:, :num_negatives].to(device)


__all__ = [
    "MaskingVocabulary",
    "mask_tokens_for_mlm",
    "mask_tokens_for_mlsc",
    "sample_itm_labels",
    "sample_itm_negatives",
    "sample_negative_text_indices",
    "sample_patch_keep_indices",
]
