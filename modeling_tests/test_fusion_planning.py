"""`fusion_planning`: every faster route through the fusion layers equals the plain `SCLModel.fuse` at the tokens it
returns, in value and in gradient."""

import pytest
import torch
from conftest import tiny_config
from test_modeling import build, make_inputs

from transformers_scl import SCLForImageTextRetrieval
from transformers_scl.fusion_planning import GRAD, NO_GRAD, FusionPass, fuse_passes, pooled_fusion


def embeddings(model, num_frames=2, text_seed=1, image_seed=2):
    with torch.no_grad():
        texts = make_inputs(batch_size=2, seed=text_seed)
        text = model(**texts).text_embeds
        image = model(**make_inputs(batch_size=2, num_frames=num_frames, seed=image_seed)).image_embeds
    return text, image, texts["attention_mask"]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("num_frames", [1, 3])
def test_cls_only_route_equals_the_full_last_layer_at_the_cls_tokens(attn_implementation, num_frames):
    model = build(attn_implementation=attn_implementation)
    text, image, mask = embeddings(model, num_frames)  # the second caption is padded
    full = model.fuse(text, image, mask, num_frames=num_frames)
    (fused,) = fuse_passes(model, image, [FusionPass(text, mask, cls_only=True)], num_frames)
    assert fused.text_features.shape == (2, 1, 32) and fused.image_features.shape == (2, num_frames, 32)
    torch.testing.assert_close(fused.text_features, full.text_features[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.image_features, full.image_features[:, :num_frames], atol=1e-5, rtol=0)
    pooled = pooled_fusion(model, text, image, mask, num_frames)
    torch.testing.assert_close(pooled, full.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.slow
@torch.no_grad()  # CPU flex attention has no backward
def test_cls_only_route_with_flex_attention_on_cpu_survives_recompilation():
    # torch's CPU flex kernel, recompiled for dynamic shapes, fails on fewer queries than keys; the planner then runs
    # the full last layer and slices it.
    model = build(config=tiny_config(num_fusion_layers=1), attn_implementation="flex_attention")
    plain = build(config=tiny_config(num_fusion_layers=1))
    text, image, mask = embeddings(plain)
    full = plain.fuse(text, image, mask, num_frames=2)
    model.fuse(text, image, mask, num_frames=2)
    model.fuse(text.repeat(2, 1, 1), image.repeat(2, 1, 1), mask.repeat(2, 1), num_frames=2)  # a new shape
    pooled = pooled_fusion(model, text, image, mask, num_frames=2)
    torch.testing.assert_close(pooled, full.pooler_output, atol=1e-5, rtol=0)


def gradients(model, *tensors):
    return [t.grad for t in tensors] + [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]


def assert_same(plain, planned, atol=1e-5):
    assert len(plain) == len(planned)
    for a, b in zip(plain, planned):
        if isinstance(a, tuple):  # a parameter's gradient
            assert a[0] == b[0]
            a, b = a[1], b[1]
        torch.testing.assert_close(b, a, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("num_fusion_layers", [1, 2])
def test_cls_only_route_gives_the_full_gradients(num_fusion_layers):
    model = build(config=tiny_config(num_fusion_layers=num_fusion_layers))  # eval: no dropout; autograd as in training
    text, image, mask = embeddings(model)
    results = []
    for planned in (False, True):
        model.zero_grad()
        text_input, image_input = text.clone().requires_grad_(), image.clone().requires_grad_()
        if planned:
            pooled = pooled_fusion(model, text_input, image_input, mask, num_frames=2)
        else:
            pooled = model.fuse(text_input, image_input, mask, num_frames=2).pooler_output
        pooled.square().sum().backward()
        results.append([pooled] + gradients(model, text_input, image_input))
    assert_same(*results)


@pytest.mark.parametrize("num_fusion_layers", [1, 2])
@pytest.mark.parametrize("cls_only", [False, True])
def test_image_index_route_equals_fusing_the_repeated_images(num_fusion_layers, cls_only):
    model = build(config=tiny_config(num_fusion_layers=num_fusion_layers))
    text, image, mask = embeddings(model)
    text, mask = text.repeat(2, 1, 1), mask.repeat(2, 1)  # 4 texts (two padded), 2 videos
    image_index = torch.tensor([1, 0, 1, 1])
    results = []
    for planned in (False, True):
        model.zero_grad()
        text_input, image_input = text.clone().requires_grad_(), image.clone().requires_grad_()
        if planned:
            (fused,) = fuse_passes(
                model, image_input, [FusionPass(text_input, mask, image_index, cls_only=cls_only)], 2
            )
            text_out, image_out = fused.text_features, fused.image_features
        else:
            fused = model.fuse(text_input, image_input[image_index], mask, num_frames=2)
            text_out, image_out = fused.text_features, fused.image_features
            if cls_only:
                text_out, image_out = text_out[:, :1], image_out[:, :2]
        (text_out.square().sum() + image_out.sum()).backward()
        results.append([text_out, image_out] + gradients(model, text_input, image_input))
    assert_same(*results)


@pytest.mark.parametrize("num_fusion_layers", [1, 2])
@pytest.mark.parametrize("checkpointing", [None, "reentrant"])
def test_passes_sharing_the_images_equal_each_plain_fusion(num_fusion_layers, checkpointing):
    """What pre-training does: ITM-like (`image_index`, CLS only), MLM-like (image stream skipped) and pass-B-like
    (image target without gradients) passes over the same images, planned together, equal three plain fusions."""
    config = tiny_config(
        num_fusion_layers=num_fusion_layers, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    model = build(config=config, attn_implementation="eager").train()
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": True})
    text, image, mask = embeddings(model)
    image_index = torch.tensor([1, 1])
    results = []
    for planned in (False, True):
        model.zero_grad()
        text_input, image_input = text.clone().requires_grad_(), image.clone().requires_grad_()
        if planned:
            passes = [
                FusionPass(text_input, mask, image_index, cls_only=True),
                FusionPass(text_input * 2, mask, image_output=None),
                FusionPass(text_input, mask, text_output=GRAD, image_output=NO_GRAD, cls_only=True),
            ]
            itm, mlm, target = fuse_passes(model, image_input, passes, num_frames=2)
            itm_pooled = model.pool(itm.text_features, itm.image_features, 2)
            outputs = [itm_pooled, mlm.text_features, target.text_features, target.image_features]
            assert mlm.image_features is None and not target.image_features.requires_grad
        else:
            itm = model.fuse(text_input, image_input[image_index], mask, num_frames=2)
            mlm = model.fuse(text_input * 2, image_input, mask, num_frames=2)
            target = model.fuse(text_input, image_input, mask, num_frames=2)
            image_target = target.image_features[:, :2].detach()
            outputs = [itm.pooler_output, mlm.text_features, target.text_features[:, :1], image_target]
        loss = outputs[0].square().sum() + outputs[1].sum() + outputs[2].sum() + outputs[3].sum()
        loss.backward()
        results.append(outputs + gradients(model, text_input, image_input))
    assert_same(*results)


def test_a_pass_that_yields_only_targets_builds_no_graph():
    model = build()
    text, image, mask = embeddings(model)
    text, image = text.requires_grad_(), image.requires_grad_()
    (fused,) = fuse_passes(model, image, [FusionPass(text, mask, text_output=NO_GRAD, image_output=None)], 2)
    assert fused.image_features is None and not fused.text_features.requires_grad


def test_bad_pass_modes_and_image_indices_raise_clear_errors():
    model = build()
    text, image, mask = embeddings(model)
    with pytest.raises(ValueError, match="`text_output` must be 'grad', 'no_grad' or None"):
        FusionPass(text, mask, text_output="skip")
    retrieval = SCLForImageTextRetrieval(tiny_config()).eval()
    with pytest.raises(ValueError, match="must be \\(batch,\\)"):
        retrieval.score_pairs(text, image, mask, num_frames=2, image_index=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="in \\[0, 2\\)"):
        retrieval.score_pairs(text, image, mask, num_frames=2, image_index=torch.tensor([0, 2]))
