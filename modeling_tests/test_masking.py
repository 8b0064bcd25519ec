"""Text masking for MLM (spec §2.1) and MLSC (spec §2.4), on a real RoBERTa tokenizer."""

import pytest
import torch

from transformers_scl.masking import MaskingVocabulary, mask_tokens_for_mlm, mask_tokens_for_mlsc

CAPTIONS = [
    "a red circle to the left of a blue square",
    "a green triangle moving up",
    "the cat sits on the mat near a small dog",
    "a",
]


@pytest.fixture
def batch(tokenizer):
    encoding = tokenizer(CAPTIONS, padding="max_length", max_length=16, return_tensors="pt")
    return encoding["input_ids"], encoding["attention_mask"]


def random_real_batch(vocabulary: MaskingVocabulary, rows: int, length: int, seed: int = 0):
    """`<s> tokens </s> <pad>...` rows of random non-special tokens and random lengths (2 to `length` real tokens)."""
    generator = torch.Generator().manual_seed(seed)
    first_normal = max(vocabulary.special_token_ids) + 1
    ids = torch.randint(first_normal, vocabulary.vocab_size, (rows, length), generator=generator)
    lengths = torch.randint(2, length + 1, (rows,), generator=generator)
    positions = torch.arange(length)
    attention_mask = (positions < lengths[:, None]).long()
    ids[:, 0] = 0  # <s>
    ids[torch.arange(rows), lengths - 1] = 2  # </s>
    ids[attention_mask == 0] = vocabulary.pad_token_id
    return ids, attention_mask


@pytest.fixture
def vocabulary(tokenizer):
    return MaskingVocabulary.from_tokenizer(tokenizer)


def test_vocabulary_reads_mask_pad_and_special_ids_from_the_tokenizer(tokenizer, vocabulary):
    assert vocabulary.mask_token_id == tokenizer.mask_token_id == 4
    assert vocabulary.pad_token_id == 1
    assert vocabulary.vocab_size == len(tokenizer)
    assert set(vocabulary.special_token_ids) == {0, 1, 2, 3, 4}


# ------------------------------------------------------------------------------------------------------------ MLM


def test_mlm_never_masks_special_tokens_or_padding(batch, tokenizer):
    input_ids, attention_mask = batch
    protected = (attention_mask == 0) | torch.isin(input_ids, torch.tensor([0, 1, 2]))
    for seed in range(50):
        masked, labels = mask_tokens_for_mlm(
            input_ids, attention_mask, tokenizer, mlm_probability=0.9, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(masked[protected], input_ids[protected])
        assert (labels[protected] == -100).all()


def test_mlm_labels_hold_the_original_ids_where_selected_and_minus_100_elsewhere(batch, tokenizer):
    input_ids, attention_mask = batch
    masked, labels = mask_tokens_for_mlm(
        input_ids, attention_mask, tokenizer, mlm_probability=0.5, generator=torch.Generator().manual_seed(0)
    )
    selected = labels != -100
    assert selected.any()
    assert torch.equal(labels[selected], input_ids[selected])
    assert torch.equal(masked[~selected], input_ids[~selected])  # unselected tokens are never changed


def test_mlm_selects_15_percent_of_real_tokens_whatever_the_padding(vocabulary):
    input_ids, attention_mask = random_real_batch(vocabulary, rows=4000, length=50)
    _, labels = mask_tokens_for_mlm(input_ids, attention_mask, vocabulary, generator=torch.Generator().manual_seed(0))
    real_tokens = (attention_mask.sum() - 2 * len(input_ids)).item()
    rate = (labels != -100).sum().item() / real_tokens
    assert rate == pytest.approx(0.15, abs=0.005)


def test_mlm_replaces_80_percent_by_mask_10_percent_by_random_tokens_and_keeps_10_percent(vocabulary):
    input_ids, attention_mask = random_real_batch(vocabulary, rows=4000, length=50)
    masked, labels = mask_tokens_for_mlm(
        input_ids, attention_mask, vocabulary, mlm_probability=0.5, generator=torch.Generator().manual_seed(1)
    )
    selected = labels != -100
    total = selected.sum().item()
    to_mask = (masked[selected] == vocabulary.mask_token_id).sum().item() / total
    kept = (masked[selected] == input_ids[selected]).sum().item() / total
    replaced = 1 - to_mask - kept
    assert to_mask == pytest.approx(0.8, abs=0.01)
    # a random replacement equal to the original token (1 in ~400 here) counts as kept
    assert kept == pytest.approx(0.1 + 0.1 / vocabulary.vocab_size, abs=0.01)
    assert replaced == pytest.approx(0.1, abs=0.01)


def test_mlm_random_replacements_are_spread_over_the_vocabulary(vocabulary):
    input_ids, attention_mask = random_real_batch(vocabulary, rows=4000, length=50)
    masked, labels = mask_tokens_for_mlm(
        input_ids,
        attention_mask,
        vocabulary,
        mlm_probability=1.0,
        mask_replace_prob=0.0,
        random_replace_prob=1.0,
        generator=torch.Generator().manual_seed(2),
    )
    replacements = masked[labels != -100]
    assert replacements.min() >= 0 and replacements.max() < vocabulary.vocab_size
    assert len(replacements.unique()) > 0.95 * vocabulary.vocab_size


def test_mlm_is_reproducible_with_a_seeded_generator_and_varies_with_the_seed(batch, tokenizer):
    input_ids, attention_mask = batch
    first = mask_tokens_for_mlm(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(7))
    again = mask_tokens_for_mlm(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    others = [
        mask_tokens_for_mlm(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(s))[1]
        for s in range(8, 12)
    ]
    assert any(not torch.equal(first[1], other) for other in others)


def test_mlm_without_attention_mask_never_masks_padding(batch, tokenizer):
    input_ids, attention_mask = batch
    _, labels = mask_tokens_for_mlm(
        input_ids, None, tokenizer, mlm_probability=1.0, generator=torch.Generator().manual_seed(0)
    )
    assert (labels[attention_mask == 0] == -100).all()
    assert torch.equal(labels != -100, (attention_mask == 1) & ~torch.isin(input_ids, torch.tensor([0, 2])))


def test_mlm_does_not_modify_its_input(batch, tokenizer):
    input_ids, attention_mask = batch
    original = input_ids.clone()
    mask_tokens_for_mlm(input_ids, attention_mask, tokenizer, mlm_probability=1.0)
    assert torch.equal(input_ids, original)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mlm_probability": 1.5}, "mlm_probability"),
        ({"mask_replace_prob": 0.8, "random_replace_prob": 0.3}, "sum to at most 1"),
    ],
)
def test_mlm_rejects_invalid_probabilities(batch, tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mask_tokens_for_mlm(*batch, tokenizer, **kwargs)


def test_masking_rejects_a_mask_of_another_shape(batch, tokenizer):
    input_ids, attention_mask = batch
    with pytest.raises(ValueError, match="attention_mask has shape"):
        mask_tokens_for_mlm(input_ids, attention_mask[:, :5], tokenizer)
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        mask_tokens_for_mlsc(input_ids[0], None, tokenizer)


# ----------------------------------------------------------------------------------------------------------- MLSC


def test_mlsc_masks_exactly_int_of_maskable_times_ratio_plus_one_tokens(vocabulary):
    # spec §2.4: mask_len = int((L - 2) * 0.4) + 1 for a caption of L real tokens (incl. <s> and </s>)
    input_ids, attention_mask = random_real_batch(vocabulary, rows=400, length=50)
    masked = mask_tokens_for_mlsc(input_ids, attention_mask, vocabulary, generator=torch.Generator().manual_seed(0))
    real_lengths = attention_mask.sum(dim=1).tolist()
    expected = [int((length - 2) * 0.4) + 1 if length > 2 else 0 for length in real_lengths]
    assert (masked == vocabulary.mask_token_id).sum(dim=1).tolist() == expected


def test_mlsc_mask_count_follows_python_float_rounding(tokenizer):
    # (L - 2) = 15: 15 * 0.4 = 6.000000000000001 in floating point, so int() gives 6 and 7 tokens are masked
    input_ids = torch.tensor([[0] + [100] * 15 + [2]])
    masked = mask_tokens_for_mlsc(input_ids, torch.ones_like(input_ids), tokenizer)
    assert (masked == tokenizer.mask_token_id).sum().item() == int(15 * 0.4) + 1 == 7


def test_mlsc_never_masks_bos_eos_or_padding(batch, tokenizer):
    input_ids, attention_mask = batch
    protected = (attention_mask == 0) | torch.isin(input_ids, torch.tensor([0, 1, 2]))
    for seed in range(50):
        masked = mask_tokens_for_mlsc(
            input_ids, attention_mask, tokenizer, mask_ratio=0.9, generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(masked[protected], input_ids[protected])


def test_mlsc_only_writes_the_mask_token(batch, tokenizer):
    input_ids, attention_mask = batch
    masked = mask_tokens_for_mlsc(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(3))
    changed = masked != input_ids
    assert changed.any()
    assert (masked[changed] == tokenizer.mask_token_id).all()


def test_mlsc_leaves_captions_without_content_tokens_unchanged(tokenizer):
    input_ids = torch.tensor([[0, 2, 1, 1], [0, 100, 2, 1]])
    masked = mask_tokens_for_mlsc(input_ids, input_ids != 1, tokenizer)
    assert masked[0].tolist() == [0, 2, 1, 1]
    assert masked[1].tolist() == [0, tokenizer.mask_token_id, 2, 1]  # int(1 * 0.4) + 1 = 1: the only token


def test_mlsc_samples_positions_without_replacement(vocabulary):
    # With replacement (the reference) ratio 1.0 would draw n + 1 positions with repeats and miss some tokens.
    input_ids, attention_mask = random_real_batch(vocabulary, rows=200, length=30)
    masked = mask_tokens_for_mlsc(input_ids, attention_mask, vocabulary, mask_ratio=1.0)
    content = (attention_mask == 1) & ~torch.isin(input_ids, torch.tensor([0, 2]))
    assert (masked[content] == vocabulary.mask_token_id).all()


def test_mlsc_picks_every_content_position_equally_often(vocabulary):
    rows, length = 20000, 12
    input_ids = torch.full((rows, length), 200)
    input_ids[:, 0], input_ids[:, -1] = 0, 2  # 10 content tokens: 5 masked per row
    masked = mask_tokens_for_mlsc(input_ids, None, vocabulary, generator=torch.Generator().manual_seed(0))
    frequency = (masked[:, 1:-1] == vocabulary.mask_token_id).float().mean(dim=0)
    assert torch.allclose(frequency, torch.full((10,), 0.5), atol=0.02)


def test_mlsc_is_reproducible_with_a_seeded_generator_and_varies_with_the_seed(batch, tokenizer):
    input_ids, attention_mask = batch
    first = mask_tokens_for_mlsc(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(5))
    again = mask_tokens_for_mlsc(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    others = [
        mask_tokens_for_mlsc(input_ids, attention_mask, tokenizer, generator=torch.Generator().manual_seed(s))
        for s in range(6, 10)
    ]
    assert any(not torch.equal(first, other) for other in others)


def test_mlsc_rejects_a_ratio_outside_0_1(batch, tokenizer):
    with pytest.raises(ValueError, match="mask_ratio"):
        mask_tokens_for_mlsc(*batch, tokenizer, mask_ratio=-0.1)
