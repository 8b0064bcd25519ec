"""The redesigned model reproduces the code before the redesign (commit eeec6b7) exactly.

`fixtures/make_fixtures.py`, run at eeec6b7, stored tiny fp32 weights, fixed inputs (masks, ITM labels and negatives,
patch-keep indices) and every output, loss and gradient of each model class. Each test recomputes one group with the
current code and compares at atol 1e-6. Where the output layout changed on purpose (flat `hidden_states`, a
field per fusion attention), the test maps the stored tensors to the new positions and compares the same tensors.
"""

import os
import sys

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
from make_fixtures import VQA_LABELS, fixture_config  # noqa: E402

from transformers_scl import (  # noqa: E402
    SCLForImagesAndTextClassification,
    SCLForImageTextRetrieval,
    SCLForPreTraining,
    SCLForQuestionAnswering,
    SCLForZeroShotImageClassification,
    retrieval,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ATOL = 1e-6


@pytest.fixture(scope="module")
def expected():
    return load_file(os.path.join(FIXTURES, "expected.safetensors"))


@pytest.fixture(scope="module")
def weights():
    return load_file(os.path.join(FIXTURES, "weights.safetensors"))


def load_model(weights, prefix, cls, **overrides):
    """The fixture model `prefix`, with the eeec6b7 state dict loaded strictly (no missing or unexpected key)."""
    model = cls(fixture_config(**overrides))
    state = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")}
    model.load_state_dict(state, strict=True)
    return model.eval()


def assert_close(actual, expected_tensor, name):
    assert actual is not None, f"{name} is missing"
    torch.testing.assert_close(actual.detach(), expected_tensor, atol=ATOL, rtol=0, msg=lambda m: f"{name}: {m}")


def group(expected, prefix):
    return {k[len(prefix) + 1 :]: v for k, v in expected.items() if k.startswith(prefix + ".")}


def text_inputs(expected, rows=slice(None)):
    return {"input_ids": expected["input.input_ids"][rows], "attention_mask": expected["input.attention_mask"][rows]}


def stored_streams(expected, case, kind):
    """The stored per-stream tuples `{stream: [tensor, …]}` of `case.kind` (eeec6b7's nested layout)."""
    streams = {}
    for key, value in group(expected, f"{case}.{kind}").items():
        stream, index = (int(part) for part in key.split("."))
        streams.setdefault(stream, {})[index] = value
    return {stream: [items[i] for i in sorted(items)] for stream, items in sorted(streams.items())}


@pytest.mark.parametrize("case", ["model_image", "model_video"])
def test_base_model_outputs_hidden_states_and_attentions(weights, expected, case):
    model = load_model(weights, "pretraining", SCLForPreTraining).scl
    rows = slice(None) if case == "model_image" else slice(0, 2)
    key = "pixel_values" if case == "model_image" else "pixel_values_videos"
    pixels = {key: expected[f"input.{key}"]}
    with torch.no_grad():
        out = model(**text_inputs(expected, rows), **pixels, output_hidden_states=True)
    for field in ("pooler_output", "text_features", "image_features", "text_embeds", "image_embeds"):
        assert_close(getattr(out, field), expected[f"{case}.{field}"], f"{case}.{field}")
    actual = old_layout(out, "hidden_states")
    for stream, tensors in stored_streams(expected, case, "hidden_states").items():
        assert len(actual[stream]) == len(tensors)
        for index, tensor in enumerate(tensors):
            assert_close(actual[stream][index], tensor, f"{case}.hidden_states[{stream}][{index}]")

    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**text_inputs(expected, rows), **pixels, output_attentions=True)
    assert_close(out.pooler_output, expected[f"{case}.eager_pooler_output"], f"{case}.eager_pooler_output")
    actual = old_layout(out, "attentions")
    for stream, tensors in stored_streams(expected, case, "attentions").items():
        assert len(actual[stream]) == len(tensors)
        for index, tensor in enumerate(tensors):
            assert_close(actual[stream][index], tensor, f"{case}.attentions[{stream}][{index}]")


def old_layout(out, kind):
    """The new outputs in eeec6b7's nested layout, to compare the same tensors.

    eeec6b7: `hidden_states` = (text tower, vision tower, text fusion stream, image fusion stream) and `attentions` =
    (text tower, vision tower, text self, text cross, image self, image cross), each a tuple. Now the towers' are in
    `text_model_output` / `vision_model_output`; the fusion's `hidden_states` are flat, the text stream's N + 1
    states then the image stream's, and its four attentions have a field each, in the order above: `attentions`,
    `cross_attentions`, `image_attentions`, `image_cross_attentions`.
    """
    towers = [list(getattr(out.text_model_output, kind)), list(getattr(out.vision_model_output, kind))]
    if kind == "attentions":
        fields = ("attentions", "cross_attentions", "image_attentions", "image_cross_attentions")
        return towers + [list(getattr(out, field)) for field in fields]
    flat = list(out.hidden_states)
    size = len(flat) // 2
    return towers + [flat[:size], flat[size:]]


@pytest.mark.parametrize("case", ["pretraining_image", "pretraining_video"])
def test_pretraining_losses_logits_and_gradients(weights, expected, case):
    model = load_model(weights, "pretraining", SCLForPreTraining).train()
    batch = 4 if case == "pretraining_image" else 2
    names = ("input_ids", "attention_mask", "mlm_input_ids", "mlm_labels", "mlsc_input_ids")
    inputs = {name: expected[f"input.{name}"][:batch] for name in names}
    inputs["patch_keep_indices"] = expected["input.patch_keep_indices"][:batch]
    if case == "pretraining_image":
        inputs["pixel_values"] = expected["input.pixel_values"]
        inputs["itm_labels"] = expected["input.itm_labels"]
        inputs["itm_negative_indices"] = expected["input.itm_negative_indices"]
    else:
        inputs["pixel_values_videos"] = expected["input.pixel_values_videos"]
        inputs["itm_labels"], inputs["itm_negative_indices"] = torch.tensor([0, 1]), torch.tensor([1, 0])
    out = model(**inputs)
    out.loss.backward()
    assert_close(out.loss, expected[f"{case}.loss"], f"{case}.loss")
    stored_losses = group(expected, f"{case}.loss_info")
    assert set(stored_losses) == {"mlm", "itm", "itc", "mvsc", "mlsc"}
    for name, value in stored_losses.items():
        assert_close(out.loss_info[name], value, f"{case}.loss_info.{name}")
    for field in ("mlm_logits", "itm_logits", "itc_logits_per_text", "itc_logits_per_image"):
        assert_close(getattr(out, field), expected[f"{case}.{field}"], f"{case}.{field}")
    stored_grads = group(expected, f"{case}.grad")
    actual_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(actual_grads) == set(stored_grads)
    for name, grad in stored_grads.items():
        assert_close(actual_grads[name], grad, f"{case}.grad.{name}")


def test_vqa_logits_and_loss(weights, expected):
    model = load_model(weights, "vqa", SCLForQuestionAnswering, id2label=VQA_LABELS)
    with torch.no_grad():
        out = model(
            **text_inputs(expected), pixel_values=expected["input.pixel_values"], labels=expected["input.vqa_labels"]
        )
        video = model(**text_inputs(expected, slice(0, 2)), pixel_values_videos=expected["input.pixel_values_videos"])
    assert_close(out.logits, expected["vqa.logits"], "vqa.logits")
    assert_close(out.loss, expected["vqa.loss"], "vqa.loss")
    assert_close(video.logits, expected["vqa_video.logits"], "vqa_video.logits")


def test_nlvr2_logits_and_loss(weights, expected):
    model = load_model(weights, "nlvr2", SCLForImagesAndTextClassification)
    with torch.no_grad():
        out = model(
            **text_inputs(expected),
            pixel_values=expected["input.pixel_values_nlvr2"],
            labels=expected["input.nlvr2_labels"],
        )
    assert_close(out.logits, expected["nlvr2.logits"], "nlvr2.logits")
    assert_close(out.loss, expected["nlvr2.loss"], "nlvr2.loss")


def test_retrieval_head_scores_and_loss(weights, expected):
    model = load_model(weights, "retrieval", SCLForImageTextRetrieval)
    with torch.no_grad():
        out = model(
            **text_inputs(expected),
            pixel_values=expected["input.pixel_values"],
            negative_text_indices=expected["input.negative_text_indices"],
            return_loss=True,
        )
    for field in (
        "loss",
        "rank_loss",
        "itc_loss",
        "logits",
        "logits_per_image",
        "itc_text_embeds",
        "itc_image_embeds",
    ):
        assert_close(getattr(out, field), expected[f"retrieval.{field}"], f"retrieval.{field}")


def test_retrieval_gallery_reranking(weights, expected):
    model = load_model(weights, "retrieval", SCLForImageTextRetrieval)
    ids, mask = expected["input.input_ids"], expected["input.attention_mask"]
    text_cache = retrieval.encode_texts(model, ids, mask, batch_size=3)
    image_cache = retrieval.encode_images(model, expected["input.pixel_values"], batch_size=3)
    for k in (2, 4):
        scores_i2t, scores_t2i, _ = retrieval.rerank(model, text_cache, image_cache, k=k, batch_size=5)
        assert_close(scores_i2t, expected[f"retrieval.rerank_k{k}.scores_i2t"], f"rerank_k{k}.scores_i2t")
        assert_close(scores_t2i, expected[f"retrieval.rerank_k{k}.scores_t2i"], f"rerank_k{k}.scores_t2i")
    video_cache = retrieval.encode_images(model, expected["input.pixel_values_videos"])
    video_text = retrieval.encode_texts(model, ids[:2], mask[:2])
    scores_i2t, _, _ = retrieval.rerank(model, video_text, video_cache, k=2)
    assert_close(scores_i2t, expected["retrieval.video_rerank.scores_i2t"], "video_rerank.scores_i2t")


def test_zero_shot_logits(weights, expected):
    # The fixture was saved with the fusion layers, which the zero-shot model no longer builds (ITC never runs them).
    fusion = tuple(
        f"scl.{name}."
        for name in (
            "token_type_embeddings",
            "cross_modal_text_layers",
            "cross_modal_image_layers",
            "cross_modal_text_pooler",
            "cross_modal_image_pooler",
        )
    )
    weights = {k: v for k, v in weights.items() if not k.removeprefix("zero_shot.").startswith(fusion)}
    model = load_model(weights, "zero_shot", SCLForZeroShotImageClassification)
    with torch.no_grad():
        image = model(**text_inputs(expected), pixel_values=expected["input.pixel_values"])
        video = model(**text_inputs(expected), pixel_values_videos=expected["input.pixel_values_videos"])
    assert_close(image.logits_per_image, expected["zero_shot.logits_per_image"], "zero_shot.logits_per_image")
    assert_close(video.logits_per_image, expected["zero_shot_video.logits_per_image"], "zero_shot_video")
