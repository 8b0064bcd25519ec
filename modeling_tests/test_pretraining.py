"""SCLForPreTraining: the losses of spec §2, computed with each input encoded once, equal the reference's
recompute-everything computation (`naive_pretraining.py`) in value and in gradient."""

import pytest
import torch
from conftest import tiny_config
from naive_pretraining import naive_pretraining_losses
from transformers import Trainer, TrainingArguments

from transformers_scl.configuration_scl import PRETRAINING_OBJECTIVES
from transformers_scl.modeling_scl import (
    SCLForPreTraining,
    SCLForPreTrainingOutput,
    SCLLosses,
    sample_itm_labels,
    sample_itm_negatives,
)

MASK_ID = 4  # `<mask>` of the conftest tokenizer's special tokens (ids 0..4)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine their spin-waits cost 10-30x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(batch_size=4, text_length=7, num_frames=None, seed=0):
    """A complete pre-training batch with every random choice made explicitly (as a test must, to compare)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 390, (batch_size, text_length), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:  # real padding in one row
        attention_mask[1, -2:] = 0
        input_ids[1, -2:] = 1

    mlm_labels = torch.full_like(input_ids, -100)
    mlm_labels[:, 2] = input_ids[:, 2]
    mlm_labels[0, 3] = input_ids[0, 3]
    mlm_input_ids = torch.where(mlm_labels != -100, MASK_ID, input_ids)
    mlsc_input_ids = input_ids.clone()
    mlsc_input_ids[:, 1] = MASK_ID

    shape = (batch_size, 3, 32, 32) if num_frames is None else (batch_size, num_frames, 3, 32, 32)
    pixels = torch.randn(shape, generator=generator)
    # 16 patches per frame at ratio 0.8 keep int(16 * 0.2) = 3 (spec §1.2 rounding).
    patch_keep_indices = torch.stack([torch.randperm(16, generator=generator)[:3] for _ in range(batch_size)])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values" if num_frames is None else "pixel_values_videos": pixels,
        "mlm_input_ids": mlm_input_ids,
        "mlm_labels": mlm_labels,
        "mlsc_input_ids": mlsc_input_ids,
        "itm_labels": torch.tensor([1, 0, 0, 1, 0, 1, 1, 0][:batch_size]),
        "itm_negative_indices": (torch.arange(batch_size) + 1) % batch_size,
        "patch_keep_indices": patch_keep_indices,
    }


def build(seed=0, **config_overrides):
    torch.manual_seed(seed)
    return SCLForPreTraining(tiny_config(**config_overrides)).eval()  # eval(): dropout off, so passes are exact


def in_float64(model, batch):
    """Contrasts at τ = 0.03 amplify float32 rounding to ~1e-3 relative; in float64 the two computations agree to
    ~1e-11, so the comparison can be tight."""
    return model.double(), {
        key: value.double() if value.is_floating_point() else value for key, value in batch.items()
    }


def gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Equivalence with the reference's recompute-everything computation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [None, 2], ids=["image", "video"])
def test_each_loss_equals_the_recompute_everything_reference(num_frames):
    model, batch = in_float64(build(), make_batch(num_frames=num_frames))
    output = model(**batch)
    expected = naive_pretraining_losses(model, **batch)
    assert set(expected) == set(PRETRAINING_OBJECTIVES)
    for name, value in expected.items():
        torch.testing.assert_close(output.loss_info[name], value, rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(output.loss, sum(expected.values()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_frames", [None, 2], ids=["image", "video"])
def test_gradients_equal_the_recompute_everything_reference(num_frames):
    model, batch = in_float64(build(), make_batch(num_frames=num_frames))
    ours = gradients(model, model(**batch).loss)
    reference = gradients(model, sum(naive_pretraining_losses(model, **batch).values()))
    assert ours.keys() == reference.keys()
    assert len(ours) == len(list(model.parameters()))  # every parameter, the temperature included, is trained
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-8, atol=1e-12, msg=name)


def test_each_input_goes_through_its_tower_once():
    model, batch = build(), make_batch(batch_size=4)
    rows = {"text": [], "vision": []}
    model.scl.text_model.register_forward_hook(
        lambda _, args, kw, out: rows["text"].append(len(kw["input_ids"])), with_kwargs=True
    )
    model.scl.vision_model.register_forward_hook(
        lambda _, args, kw, out: rows["vision"].append(len(out[0])), with_kwargs=True
    )
    model(**batch)
    # One text call for the complete, MLM-masked and MLSC-masked captions; the complete and the patch-dropped image.
    # The reference runs each tower 5 times (spec §2).
    assert rows == {"text": [12], "vision": [4, 4]}


def test_stop_gradient_targets_carry_no_gradient():
    """MVSC alone: pass B only yields the target, so the MLSC-masked text must not reach the text tower's graph."""
    model, batch = build(pretraining_objectives=["mvsc"]), make_batch()
    grads = []
    model.scl.text_model.register_forward_hook(lambda _, __, out: grads.append((len(out[0]), out[0].requires_grad)))
    model(**batch).loss.backward()
    assert grads == [(4, True), (4, False)]  # complete text (pass A, prediction side), masked text (target only)


# ---------------------------------------------------------------------------------------------------------------------
# Objectives, weights and outputs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropped", PRETRAINING_OBJECTIVES)
def test_each_objective_can_be_switched_off(dropped):
    kept = [name for name in PRETRAINING_OBJECTIVES if name != dropped]
    model, batch = build(pretraining_objectives=kept), make_batch()
    output = model(**batch)
    assert getattr(output.loss_info, dropped) is None
    expected = naive_pretraining_losses(model, **batch)
    assert set(expected) == set(kept)
    torch.testing.assert_close(output.loss, sum(expected.values()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objective", PRETRAINING_OBJECTIVES)
def test_a_single_objective_trains_alone(objective):
    model, batch = build(pretraining_objectives=[objective]), make_batch()
    output = model(**batch)
    assert [name for name, value in output.loss_info.items() if value is not None] == [objective]
    torch.testing.assert_close(output.loss, naive_pretraining_losses(model, **batch)[objective], rtol=1e-5, atol=1e-5)
    output.loss.backward()  # a lone objective still has a graph (pass A / pass B are its prediction side)


def test_loss_terms_are_weighted_by_the_config():
    batch = make_batch()
    plain = build()(**batch).loss_info
    weighted = build(mlm_weight=2.0, itc_weight=1.0, mvsc_weight=0.0)(**batch).loss_info
    torch.testing.assert_close(weighted.mlm, 2 * plain.mlm)
    torch.testing.assert_close(weighted.itc, 2 * plain.itc)  # spec §2.3: the default 0.5 is already applied
    assert weighted.mvsc.item() == 0.0
    torch.testing.assert_close(weighted.itm, plain.itm)


def test_return_dict_false_gives_a_tuple_with_the_loss_terms_as_a_tuple():
    model, batch = build(), make_batch()
    output = model(**batch)
    as_tuple = model(**batch, return_dict=False)
    assert isinstance(output, SCLForPreTrainingOutput) and isinstance(output.loss_info, SCLLosses)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output)
    torch.testing.assert_close(as_tuple[0], output.loss)
    assert as_tuple[1] == output.loss_info.to_tuple() and len(as_tuple[1]) == 5
    torch.testing.assert_close(as_tuple[2], output.mlm_logits)


def test_output_shapes_and_logged_accuracies():
    model, batch = build(), make_batch(batch_size=4)
    output = model(**batch)
    num_masked = int((batch["mlm_labels"] != -100).sum())
    assert output.mlm_logits.shape == (num_masked, 400)  # the MLM head runs only where there is a label
    assert output.itm_logits.shape == (4, 2)
    assert output.itc_logits_per_text.shape == output.itc_logits_per_image.shape == (4, 4)
    targets = batch["mlm_labels"][batch["mlm_labels"] != -100]
    torch.testing.assert_close(output.mlm_accuracy, (output.mlm_logits.argmax(-1) == targets).float().mean())
    torch.testing.assert_close(
        output.itm_accuracy, (output.itm_logits.argmax(-1) == batch["itm_labels"]).float().mean()
    )
    diagonal = torch.arange(4)
    itc = (
        (output.itc_logits_per_text.argmax(-1) == diagonal).float().mean()
        + (output.itc_logits_per_image.argmax(-1) == diagonal).float().mean()
    ) / 2
    torch.testing.assert_close(output.itc_accuracy, itc)
    for accuracy in (output.mlm_accuracy, output.itm_accuracy, output.itc_accuracy):
        assert not accuracy.requires_grad


def test_return_loss_false_returns_logits_only():
    model, batch = build(), make_batch()
    output = model(**batch, return_loss=False)
    assert output.loss is None and output.loss_info is None
    torch.testing.assert_close(output.itm_logits, model(**batch).itm_logits)


def test_mlm_batch_without_masked_tokens_gives_zero_not_nan():
    model, batch = build(pretraining_objectives=["mlm"]), make_batch()
    batch["mlm_labels"] = torch.full_like(batch["mlm_labels"], -100)
    output = model(**batch)
    assert output.loss.item() == 0.0 and output.mlm_accuracy.item() == 0.0


def test_itc_temperature_is_a_learnable_scalar_initialised_from_the_config(tmp_path):
    model = build(itc_temperature_init=0.05)
    # One element of shape (1,), not 0-d: FSDP refuses to shard 0-d parameters.
    assert model.itc_temperature.shape == (1,) and model.itc_temperature.requires_grad
    assert model.itc_temperature.item() == pytest.approx(0.05)
    model.save_pretrained(tmp_path)
    reloaded = SCLForPreTraining.from_pretrained(tmp_path).eval()
    batch = make_batch()
    torch.testing.assert_close(reloaded(**batch).loss, model(**batch).loss)


def test_a_checkpoint_with_a_0d_itc_temperature_still_loads(tmp_path):
    from safetensors.torch import load_file, save_file

    model = build(itc_temperature_init=0.05)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["itc_temperature"] = state["itc_temperature"].reshape(())  # as saved before the (1,) shape
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded, info = SCLForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["mismatched_keys"] and not info["missing_keys"]
    assert reloaded.itc_temperature.shape == (1,) and reloaded.itc_temperature.item() == pytest.approx(0.05)
    assert reloaded.itc_temperature.requires_grad


def test_pretraining_model_loads_a_base_model_checkpoint(tmp_path):
    base = build().scl
    base.save_pretrained(tmp_path)
    model = SCLForPreTraining.from_pretrained(tmp_path)
    for name, tensor in base.state_dict().items():
        torch.testing.assert_close(model.scl.state_dict()[name], tensor, msg=name)
    assert model.itc_temperature.item() == pytest.approx(0.07)  # a missing head is freshly initialised


def test_resized_vocabulary_trains_mlm_on_new_tokens(tmp_path):
    model, batch = build(pretraining_objectives=["mlm"]), make_batch()
    old_decoder, old_bias = model.mlm_score.decoder.weight.clone(), model.mlm_score.bias.detach().clone() + 0.5
    model.mlm_score.bias.data.copy_(old_bias)
    model.resize_token_embeddings(410)
    assert model.config.text_config.vocab_size == 410
    assert model.mlm_score.decoder.weight.shape == (410, 32) and model.mlm_score.bias.shape == (410,)
    torch.testing.assert_close(model.mlm_score.decoder.weight[:400], old_decoder)  # untied: kept, not copied over
    torch.testing.assert_close(model.mlm_score.bias[:400], old_bias)
    assert torch.all(model.mlm_score.bias[400:] == 0)

    batch["mlm_labels"][0, 2] = 405  # new tokens as an MLM label and in the masked text
    batch["mlm_input_ids"][0, 1] = 406
    output = model(**batch)
    assert output.mlm_logits.shape[-1] == 410
    output.loss.backward()
    assert model.mlm_score.bias.grad[405] != 0 and model.get_input_embeddings().weight.grad[406].abs().sum() > 0

    model.save_pretrained(tmp_path)  # the reference's keys stay: `mlm_score.decoder.weight` and `mlm_score.bias`
    reloaded, info = SCLForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(reloaded.mlm_score.bias, model.mlm_score.bias)


def test_checkpoint_attribute_names_are_fixed():
    names = {name.split(".")[0] for name in build().state_dict()}
    assert names == {"scl", "mlm_score", "itm_score", "itc_text_projection", "itc_image_projection", "itc_temperature"}


# ---------------------------------------------------------------------------------------------------------------------
# MVSC normalises over features (spec §2.4, §7.2 item 11)
# ---------------------------------------------------------------------------------------------------------------------


def test_mvsc_trains_the_vision_tower_on_single_frame_images():
    """The reference normalises the (B, 1, D) frame-CLS tensor over its frame axis: every feature becomes ±1 and the
    MVSC gradient is exactly zero (spec §7.2 item 11). Normalised over features, MVSC reaches the vision tower."""
    model, batch = build(pretraining_objectives=["mvsc"]), make_batch()
    model(**batch).loss.backward()
    assert model.scl.vision_model.embeddings.patch_embedding.weight.grad.norm() > 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# ITM sampling (spec §2.2)
# ---------------------------------------------------------------------------------------------------------------------


def test_sampled_itm_labels_are_half_positive_and_negatives_never_the_own_image():
    generator = torch.Generator().manual_seed(0)
    for batch_size in (2, 5, 8):
        labels = sample_itm_labels(batch_size, generator)
        assert labels.sum().item() == batch_size // 2
        negatives = sample_itm_negatives(batch_size, generator=generator)
        assert (negatives != torch.arange(batch_size)).all() and negatives.max() < batch_size


def test_uniform_negatives_cover_every_other_image():
    generator = torch.Generator().manual_seed(0)
    drawn = torch.stack([sample_itm_negatives(4, generator=generator) for _ in range(200)])
    assert {int(j) for j in drawn[:, 0]} == {1, 2, 3}


def test_hard_negatives_follow_the_similarity_and_skip_the_positive():
    similarity = torch.zeros(3, 3)
    similarity.fill_diagonal_(100.0)  # the positive is the most similar, and must still be excluded
    similarity[0, 2] = similarity[1, 0] = similarity[2, 1] = 50.0
    negatives = sample_itm_negatives(3, similarity, generator=torch.Generator().manual_seed(0))
    assert negatives.tolist() == [2, 0, 1]


def test_model_samples_itm_pairs_when_not_given():
    model, batch = build(itm_hard_negatives=True, pretraining_objectives=["itm"]), make_batch()
    del batch["itm_labels"], batch["itm_negative_indices"]
    first = model(**batch, generator=torch.Generator().manual_seed(3))
    second = model(**batch, generator=torch.Generator().manual_seed(3))
    assert first.itm_labels.sum().item() == 2
    torch.testing.assert_close(first.loss, second.loss)  # `generator` makes the draw reproducible


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objectives", "missing", "message"),
    [
        (["mlm"], "mlm_input_ids", "`mlm_input_ids` is required by the ['mlm']"),
        (["mlm"], "mlm_labels", "`mlm_labels` is required by the ['mlm']"),
        (["mlsc"], "mlsc_input_ids", "`mlsc_input_ids` is required by the ['mlsc']"),
        (["mvsc"], "mlsc_input_ids", "`mlsc_input_ids` is required by the ['mvsc']"),
        (["itm"], "pixel_values", "Pass exactly one of `pixel_values`"),
    ],
)
def test_missing_input_of_an_enabled_objective_raises(objectives, missing, message):
    model, batch = build(pretraining_objectives=objectives), make_batch()
    del batch[missing]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        model(**batch)


def test_inputs_of_disabled_objectives_are_optional():
    model, batch = build(pretraining_objectives=["itm", "itc"]), make_batch()
    for name in ("mlm_input_ids", "mlm_labels", "mlsc_input_ids"):
        del batch[name]
    assert model(**batch).loss.isfinite()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mlm_labels": torch.zeros(4, 3, dtype=torch.long)}, "`mlm_labels` \\(4, 3\\) must have the shape"),
        ({"itm_negative_indices": torch.tensor([0, 1, 2, 3])}, "pairs a negative"),
        ({"itm_negative_indices": torch.tensor([1, 2, 3, 4])}, r"must lie in \[0, 4\)"),
        ({"itm_labels": torch.tensor([1, 0])}, r"`itm_labels` must be \(4,\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    model, batch = build(), make_batch()
    with pytest.raises(ValueError, match=message):
        model(**{**batch, **change})


def test_itm_needs_two_samples_to_draw_a_negative():
    model, batch = build(pretraining_objectives=["itm"]), make_batch(batch_size=1)
    del batch["itm_labels"], batch["itm_negative_indices"]
    with pytest.raises(ValueError, match="at least 2 samples"):
        model(**batch)


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


def test_trainer_logs_the_loss_at_its_true_scale_with_gradient_accumulation(tmp_path):
    """`accepts_loss_kwargs = False`: Trainer divides each micro-batch loss by the accumulation steps and sums, so the
    logged loss is the mean of the micro-batch losses (not GA times it, as a forward taking `**kwargs` would get)."""
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config_overrides = {"text_config": {**tiny_config().text_config.to_dict(), **no_dropout}, **no_dropout}
    model = build(**config_overrides)
    halves = [make_batch(batch_size=2, seed=seed) for seed in (1, 2)]
    expected = sum(model(**half).loss.item() for half in halves) / 2

    rows = [{key: value[i] for key, value in half.items()} for half in halves for i in range(2)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=1,
        learning_rate=0.0,
        logging_steps=1,
        train_sampling_strategy="sequential",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    result = trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == [pytest.approx(expected, rel=1e-5)]
    assert result.training_loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("num_frames", [None, 2])
def test_itc_features_for_evaluation_are_the_ones_the_itc_loss_contrasts(num_frames):
    model = build()
    batch = make_batch(num_frames=num_frames)
    with torch.no_grad():
        logits = model(**batch).itc_logits_per_text
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        if num_frames is None:
            image = model.get_image_features(batch["pixel_values"]).pooler_output
        else:
            image = model.get_video_features(batch["pixel_values_videos"]).pooler_output
    torch.testing.assert_close(text @ image.T / model.itc_temperature, logits, atol=1e-5, rtol=1e-5)
