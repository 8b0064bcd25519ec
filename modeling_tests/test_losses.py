"""`transformers_scl.losses` on plain tensors, single process (the multi-rank behaviour is in test_distributed.py)."""

import math

import pytest
import torch
from torch.nn import functional as F

from transformers_scl.losses import (
    contrastive_labels,
    gather_with_grad,
    image_text_contrastive_loss,
    semantic_completion_loss,
)


def features(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_without_distributed_gather_is_the_identity_and_labels_are_the_diagonal():
    x = features(3, 4)
    assert gather_with_grad(x) is x
    assert contrastive_labels(3).tolist() == [0, 1, 2]


def test_itc_is_cosine_over_temperature_with_both_directions_summed():
    text, image = features(4, 6, seed=1), features(4, 6, seed=2)
    loss, per_text, per_image = image_text_contrastive_loss(text, image, 0.07, return_logits=True)
    cosine = F.cosine_similarity(text[:, None], image[None], dim=-1)
    torch.testing.assert_close(per_text, cosine / 0.07)
    torch.testing.assert_close(per_image, cosine.t() / 0.07)
    labels = torch.arange(4)
    expected = F.cross_entropy(cosine / 0.07, labels) + F.cross_entropy(cosine.t() / 0.07, labels)
    torch.testing.assert_close(loss, expected)  # spec §2.3: summed, not averaged


def test_itc_of_indistinguishable_pairs_is_twice_log_batch_and_of_aligned_ones_near_zero():
    constant = torch.ones(5, 8, dtype=torch.float64)
    assert image_text_contrastive_loss(constant, 2 * constant, 0.07).item() == pytest.approx(2 * math.log(5))
    text = features(5, 8)
    assert image_text_contrastive_loss(text, 3 * text, 0.01).item() < 1e-3  # scale-free: cosine similarity


def test_itc_temperature_receives_a_gradient():
    temperature = torch.tensor(0.07, dtype=torch.float64, requires_grad=True)
    image_text_contrastive_loss(features(4, 6, seed=1), features(4, 6, seed=2), temperature).backward()
    assert temperature.grad.abs() > 0


def test_semantic_completion_target_is_stop_gradient():
    prediction = features(4, 6, seed=1).requires_grad_()
    target = features(4, 6, seed=2).requires_grad_()
    semantic_completion_loss(prediction, target, 0.03).backward()
    assert prediction.grad.abs().sum() > 0 and target.grad is None


def test_semantic_completion_is_a_two_way_nce_at_fixed_temperature():
    prediction, target = features(4, 6, seed=1), features(4, 6, seed=2)
    logits = F.normalize(prediction, dim=-1) @ F.normalize(target, dim=-1).t() / 0.03
    labels = torch.arange(4)
    expected = F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)  # spec §2.4 NCE_τ(P, G)
    torch.testing.assert_close(semantic_completion_loss(prediction, target, 0.03), expected)


def test_frame_tensors_are_contrasted_per_frame_and_averaged():
    prediction, target = features(4, 3, 6, seed=1), features(4, 3, 6, seed=2)
    per_frame = [semantic_completion_loss(prediction[:, f], target[:, f], 0.03) for f in range(3)]
    torch.testing.assert_close(semantic_completion_loss(prediction, target, 0.03), torch.stack(per_frame).mean())


def test_frame_cls_is_normalised_over_features_not_frames():
    """spec §7.2 item 11: the reference normalised (B, F, D) over F. For one frame that keeps only the signs of the
    features; over features, the loss sees the directions, and a one-frame tensor is the plain (B, D) contrast."""
    prediction, target = features(4, 1, 6, seed=1), features(4, 1, 6, seed=2)
    loss = semantic_completion_loss(prediction, target, 0.03)
    torch.testing.assert_close(loss, semantic_completion_loss(prediction[:, 0], target[:, 0], 0.03))
    same_signs = prediction.sign() * features(4, 1, 6, seed=3).abs()
    assert abs(semantic_completion_loss(same_signs, target, 0.03) - loss) > 0.1


def test_zero_features_do_not_give_nan():
    prediction = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    loss = semantic_completion_loss(prediction, features(3, 4), 0.03)
    loss.backward()
    assert loss.isfinite() and prediction.grad.isfinite().all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: image_text_contrastive_loss(features(4, 6), features(3, 6), 0.07), "must both be"),
        (lambda: semantic_completion_loss(features(4, 6), features(4, 2, 6), 0.03), "same shape"),
        (lambda: semantic_completion_loss(features(4), features(4), 0.03), "same shape"),
    ],
)
def test_mismatched_features_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
