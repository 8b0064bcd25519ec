"""Converting original SCL checkpoints (spec §6): exact tensors, explicit drops, strict key checks, safe unpickling."""

import argparse
import contextlib
import json
import os
import pickle
import sys
import types
import zipfile

import pytest
import torch
from conftest import build_tokenizer
from synthetic_original import (
    FRAMES,
    GRID,
    NUM_VQA_LABELS,
    PATCH,
    TRAINING_CONFIG,
    lightning_checkpoint,
    original_state_dict,
    save_checkpoint,
)
from torch import nn
from transformers import AutoModel, AutoProcessor

from transformers_scl import modeling_scl
from transformers_scl.conversion import (
    CheckpointFileError,
    CheckpointKeyError,
    UntrustedCheckpointError,
    convert_original_checkpoint,
    detect_task,
    load_original_checkpoint,
    main,
    map_state_dict,
)
from transformers_scl.modeling_scl import resize_position_embedding

# The tiny widths (32) are not multiples of 64, so the head counts are given (the reference derives width // 64).
HEADS = dict(text_num_attention_heads=4, vision_num_attention_heads=4)
VISUAL = "vision_transformer.visual."


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(str(path))
    return str(path)


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory, tokenizer_dir):
    """The video-variant pre-training checkpoint, converted once (with verification) for several tests."""
    root = tmp_path_factory.mktemp("pretraining")
    state = save_checkpoint(root / "MGSC-100k.ckpt")
    result = convert_original_checkpoint(
        str(root / "MGSC-100k.ckpt"), str(root / "out"), tokenizer=tokenizer_dir, **HEADS
    )
    return state, result


def _convert(tmp_path, tokenizer_dir, name="model.ckpt", verify=False, variant="video", heads="pretraining", **kw):
    checkpoint_kwargs = {k: kw.pop(k) for k in ("training_config", "hyper_parameters") if k in kw}
    state = save_checkpoint(tmp_path / name, variant=variant, heads=heads, **checkpoint_kwargs)
    result = convert_original_checkpoint(
        str(tmp_path / name), str(tmp_path / "out"), tokenizer=tokenizer_dir, verify=verify, **{**HEADS, **kw}
    )
    return state, result


# ---------------------------------------------------------------------------------------------------------------------
# Exact tensors
# ---------------------------------------------------------------------------------------------------------------------


def test_every_renamed_tensor_equals_its_source(pretraining):
    state, result = pretraining
    converted = result.model.state_dict()
    blocks, layers = VISUAL + "transformer.resblocks.", "scl.vision_model.encoder.layers."
    pairs = {
        "text_transformer.encoder.layer.1.attention.self.key.weight": "scl.text_model.encoder.layer.1.attention.self.key.weight",
        "text_transformer.embeddings.position_embeddings.weight": "scl.text_model.embeddings.position_embeddings.weight",
        VISUAL + "conv1.weight": "scl.vision_model.embeddings.patch_embedding.weight",
        VISUAL + "class_embedding": "scl.vision_model.embeddings.class_embedding",
        VISUAL + "positional_embedding": "scl.vision_model.embeddings.position_embedding.weight",
        VISUAL + "ln_pre.bias": "scl.vision_model.pre_layrnorm.bias",
        VISUAL + "ln_post.weight": "scl.vision_model.post_layernorm.weight",
        blocks + "1.ln_1.weight": layers + "1.layer_norm1.weight",
        blocks + "1.ln_2.bias": layers + "1.layer_norm2.bias",
        blocks + "0.mlp.c_fc.weight": layers + "0.mlp.fc1.weight",
        blocks + "0.mlp.c_proj.bias": layers + "0.mlp.fc2.bias",
        blocks + "0.attn.out_proj.weight": layers + "0.self_attn.out_proj.weight",
        "cross_modal_image_layers.1.crossattention.self.value.bias": "scl.cross_modal_image_layers.1.crossattention.self.value.bias",
        "cross_modal_text_pooler.dense.weight": "scl.cross_modal_text_pooler.dense.weight",
        "token_type_embeddings.weight": "scl.token_type_embeddings.weight",
        "mlm_score.decoder.weight": "mlm_score.decoder.weight",
        "mlm_score.bias": "mlm_score.bias",
        "itm_score.fc.weight": "itm_score.fc.weight",
        "language_proj.3.weight": "itc_text_projection.3.weight",
        "vision_proj.1.bias": "itc_image_projection.1.bias",
        "cl_temp": "itc_temperature",
    }
    for source, target in pairs.items():
        expected = state[source].reshape(1) if source == "cl_temp" else state[source]  # (1,): FSDP shards no 0-d param
        assert torch.equal(converted[target], expected), f"{source} -> {target}"


def test_every_converted_tensor_comes_from_the_checkpoint_unchanged(pretraining):
    state, _ = pretraining
    mapped = map_state_dict(state)
    for target, source in mapped.sources.items():
        if "in_proj" in source or "temporal_embed" in source or source == "cl_temp":
            continue  # split / reshaped: covered by the tests below and above
        assert torch.equal(mapped.tensors[target], state[source]), source
    # each of the 4 in_proj tensors (2 blocks x weight/bias) becomes 3 tensors
    assert len(mapped.tensors) + len(mapped.dropped) == len(state) + 4 * 2


def test_packed_in_proj_is_split_into_query_key_value_in_that_order(pretraining):
    state, result = pretraining
    converted = result.model.state_dict()
    for block in range(2):
        weight = state[f"{VISUAL}transformer.resblocks.{block}.attn.in_proj_weight"]
        bias = state[f"{VISUAL}transformer.resblocks.{block}.attn.in_proj_bias"]
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            prefix = f"scl.vision_model.encoder.layers.{block}.self_attn.{name}"
            assert torch.equal(converted[f"{prefix}.weight"], weight[32 * index : 32 * (index + 1)])
            assert torch.equal(converted[f"{prefix}.bias"], bias[32 * index : 32 * (index + 1)])


def test_temporal_embed_becomes_the_frames_by_width_table(pretraining):
    state, result = pretraining
    table = result.model.scl.vision_model.embeddings.temporal_embedding
    assert table.shape == (FRAMES, 32)
    assert torch.equal(table, state[VISUAL + "temporal_embed"][0])
    assert result.config.vision_config.max_frames == FRAMES


def test_unused_keys_are_dropped_by_named_rules(pretraining):
    _, result = pretraining
    reasons = result.dropped
    assert "MAE decoder" in reasons["vision_transformer.decoder_blocks.0.attn.qkv.weight"]
    assert "MAE decoder" in reasons["vision_transformer.mask_token"]
    assert "pooler" in reasons["text_transformer.pooler.dense.weight"]
    assert "position_ids" in reasons["text_transformer.embeddings.position_ids"]
    assert len(reasons) == 20 + 2 + 1
    assert any("Dropped 20 key(s): the MAE decoder" in note for note in result.notes)


# ---------------------------------------------------------------------------------------------------------------------
# The converted model runs, and computes what the original CLIP tower computes
# ---------------------------------------------------------------------------------------------------------------------


def test_conversion_reloads_through_automodel_and_runs(pretraining):
    _, result = pretraining
    assert [check.split(";")[0] for check in result.verification] == [
        "AutoProcessor reloads SCLProcessor",
        "AutoModel loads SCLModel",
        "AutoModelForPreTraining loads SCLForPreTraining",
    ]
    reloaded = AutoModel.from_pretrained(result.output_dir)
    assert type(reloaded).__name__ == "SCLModel"
    processor = AutoProcessor.from_pretrained(result.output_dir)  # knows the position table: 66 rows, 64 tokens
    assert (processor.max_text_length, processor.text_vocab_size) == (64, reloaded.config.text_config.vocab_size)
    ids = torch.tensor([[0, 5, 6, 2]])
    output = reloaded(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))
    assert output.pooler_output.shape == (1, 64) and torch.isfinite(output.pooler_output).all()


def test_pretraining_checkpoint_becomes_scl_for_pretraining_with_its_training_settings(pretraining):
    _, result = pretraining
    config = result.config
    assert type(result.model).__name__ == "SCLForPreTraining"
    assert config.pretraining_objectives == ["mlm", "itm", "itc", "mvsc", "mlsc"]
    assert (config.itc_weight, config.image_mask_ratio, config.text_mask_ratio) == (0.5, 0.8, 0.4)
    assert (config.num_attention_heads, config.num_frames, config.image_size) == (4, 4, 32)
    assert config.text_config.max_position_embeddings == 66 and config.text_config.type_vocab_size == 1
    assert config.text_config.layer_norm_eps == 1e-5 and config.layer_norm_eps == 1e-12
    assert config.itc_projection_dim == 16


class _OriginalResidualBlock(nn.Module):
    """The reference's CLIP block (spec §1.2), written independently: packed nn.MultiheadAttention, QuickGELU MLP."""

    def __init__(self, width, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.c_fc = nn.Linear(width, 4 * width)
        self.mlp.c_proj = nn.Linear(4 * width, width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x):  # (tokens, batch, width), as in the reference
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        hidden = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(hidden * torch.sigmoid(1.702 * hidden))


def test_vision_tower_matches_the_original_clip_computation_on_an_image(pretraining):
    state, result = pretraining
    prefix = VISUAL + "transformer.resblocks."
    blocks = nn.ModuleList([_OriginalResidualBlock(32, 4) for _ in range(2)])
    blocks.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    image = torch.randn(2, 3, GRID * PATCH, GRID * PATCH, generator=torch.Generator().manual_seed(1))

    def layer_norm(x, name):
        return nn.functional.layer_norm(x, (32,), state[VISUAL + name + ".weight"], state[VISUAL + name + ".bias"])

    patches = nn.functional.conv2d(image, state[VISUAL + "conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = state[VISUAL + "class_embedding"].expand(2, 1, -1)
    # spec §1.2: spatial positions, plus temporal row 0 on every token of an image (a 1-frame video).
    x = torch.cat([cls, patches], 1) + state[VISUAL + "positional_embedding"] + state[VISUAL + "temporal_embed"][0, 0]
    x = layer_norm(x, "ln_pre").transpose(0, 1)
    for block in blocks:
        x = block(x)
    expected = layer_norm(x.transpose(0, 1), "ln_post")

    with torch.no_grad():
        actual = result.model.scl.vision_model(pixel_values=image).last_hidden_state
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Strictness: nothing is loaded half-way
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_key_stops_the_conversion_and_is_named(tmp_path, tokenizer_dir):
    state = original_state_dict()
    state["vision_transformer.visual.extra_adapter.weight"] = torch.zeros(3)
    torch.save(lightning_checkpoint(state), tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointKeyError, match=r"vision_transformer\.visual\.extra_adapter\.weight"):
        convert_original_checkpoint(
            str(tmp_path / "extra.ckpt"), str(tmp_path / "out"), tokenizer=tokenizer_dir, **HEADS
        )
    assert not (tmp_path / "out").exists()


def test_missing_key_stops_the_conversion_and_is_named(tmp_path, tokenizer_dir):
    state = original_state_dict()
    del state["cross_modal_image_layers.1.crossattention.output.dense.bias"]
    torch.save(lightning_checkpoint(state), tmp_path / "missing.ckpt")
    with pytest.raises(
        CheckpointKeyError, match=r"scl\.cross_modal_image_layers\.1\.crossattention\.output\.dense\.bias"
    ):
        convert_original_checkpoint(
            str(tmp_path / "missing.ckpt"), str(tmp_path / "out"), tokenizer=tokenizer_dir, **HEADS
        )
    assert not (tmp_path / "out").exists()


def test_wrong_shape_stops_the_conversion_and_names_both_keys(tmp_path, tokenizer_dir):
    state = original_state_dict()
    state["cross_modal_text_pooler.dense.bias"] = torch.zeros(31)
    torch.save(lightning_checkpoint(state), tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointKeyError, match=r"cross_modal_text_pooler\.dense\.bias \(31,\) -> .*\(32,\)"):
        convert_original_checkpoint(
            str(tmp_path / "shape.ckpt"), str(tmp_path / "out"), tokenizer=tokenizer_dir, **HEADS
        )


def test_head_count_must_be_given_when_the_width_is_not_a_multiple_of_64(tmp_path, tokenizer_dir):
    save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="text head count: width 32 is not a multiple of 64"):
        convert_original_checkpoint(str(tmp_path / "m.ckpt"), str(tmp_path / "out"), tokenizer=tokenizer_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------------


def test_pickled_objects_are_refused_without_trust(tmp_path):
    hyper_parameters = {"config": argparse.Namespace(**TRAINING_CONFIG)}
    torch.save(lightning_checkpoint(original_state_dict(), hyper_parameters=hyper_parameters), tmp_path / "ns.ckpt")
    with pytest.raises(
        UntrustedCheckpointError, match=r"ns\.ckpt contains .* \(it needs argparse\.Namespace\).*--trust-pickle"
    ):
        load_original_checkpoint(tmp_path / "ns.ckpt")


@contextlib.contextmanager
def _uninstalled_class(qualified_name: str, bases: tuple = ()):
    """A class that exists while a checkpoint is pickled and whose module is gone afterwards."""
    module_name, class_name = qualified_name.rsplit(".", 1)
    parts = module_name.split(".")
    added = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) not in sys.modules]
    for name in added:
        sys.modules[name] = types.ModuleType(name)
    cls = type(class_name, bases, {"__module__": module_name})
    setattr(sys.modules[module_name], class_name, cls)
    try:
        yield cls
    finally:
        for name in added:
            del sys.modules[name]


def test_lightning_metadata_classes_load_safely_without_lightning_installed(tmp_path):
    # PL 1.3 keys `callbacks` by callback class and may keep hyper-parameters in an AttributeDict (spec §6.1).
    with (
        _uninstalled_class("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint") as callback,
        _uninstalled_class("pytorch_lightning.utilities.parsing.AttributeDict", (dict,)) as attribute_dict,
    ):
        checkpoint = lightning_checkpoint(
            original_state_dict(), hyper_parameters=attribute_dict(config=TRAINING_CONFIG)
        )
        checkpoint["callbacks"] = {callback: {"best_model_score": torch.tensor(0.5), "best_model_path": "x.ckpt"}}
        torch.save(checkpoint, tmp_path / "pl.ckpt")
    loaded = load_original_checkpoint(tmp_path / "pl.ckpt")
    assert loaded.training_config["mask_ratio"] == 0.8
    assert loaded.metadata == {"epoch": 41, "global_step": 99999, "pytorch-lightning_version": "1.3.2"}


def test_trusted_checkpoint_loads_even_when_a_pickled_class_is_not_installed(tmp_path):
    with _uninstalled_class("my_project.containers.Box", (dict,)) as box:
        checkpoint = lightning_checkpoint(original_state_dict(), hyper_parameters=box(config=TRAINING_CONFIG))
        torch.save(checkpoint, tmp_path / "box.ckpt")
    with pytest.raises(UntrustedCheckpointError, match=r"it needs my_project\.containers\.Box"):
        load_original_checkpoint(tmp_path / "box.ckpt")
    loaded = load_original_checkpoint(tmp_path / "box.ckpt", trust_pickle=True)
    assert loaded.training_config["mask_ratio"] == 0.8
    assert torch.equal(loaded.state_dict["cl_temp"], torch.tensor(0.05))


def test_lightning_checkpoint_with_optimizer_state_loads_safely(tmp_path):
    save_checkpoint(tmp_path / "ok.ckpt")
    loaded = load_original_checkpoint(tmp_path / "ok.ckpt")
    assert loaded.training_config["loss_names"]["scl"] == 1
    assert loaded.metadata["global_step"] == 99999


def test_plain_state_dict_in_the_legacy_torch_format_is_accepted(tmp_path):
    state = original_state_dict()
    torch.save(state, tmp_path / "plain.pt", _use_new_zipfile_serialization=False)  # not memory-mappable
    loaded = load_original_checkpoint(tmp_path / "plain.pt")
    assert loaded.state_dict.keys() == state.keys() and loaded.training_config is None and loaded.metadata == {}


# ---------------------------------------------------------------------------------------------------------------------
# Variants and options
# ---------------------------------------------------------------------------------------------------------------------


def test_position_embeddings_are_resized_bicubically_to_the_requested_image_size(tmp_path, tokenizer_dir):
    state, result = _convert(tmp_path, tokenizer_dir, image_size=48, verify=True)
    positions = result.model.scl.vision_model.embeddings.position_embedding.weight
    expected = resize_position_embedding(state[VISUAL + "positional_embedding"], 6)
    assert positions.shape == (37, 32) and torch.equal(positions, expected)
    assert result.config.image_size == result.config.vision_config.image_size == 48
    processor_config = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert processor_config["image_processor"]["size"] == {"height": 48, "width": 48}
    assert any("resized bicubically from 32px (4x4) to 48px" in note for note in result.notes)


def test_glscl_variant_gets_zero_temporal_rows_and_drops_its_mask_token(tmp_path, tokenizer_dir):
    config = dict(TRAINING_CONFIG, loss_names={"itm": 1, "mlm": 1, "con": 1, "mgsc": 1, "mltc": 1, "mae": 0})
    _, result = _convert(tmp_path, tokenizer_dir, "GLSCL-100k.ckpt", variant="glscl", training_config=config)
    table = result.model.scl.vision_model.embeddings.temporal_embedding
    assert table.shape == (8, 32) and not table.any()
    assert "mask token" in result.dropped[VISUAL + "visual_mask_token"]
    assert result.config.pretraining_objectives == ["mlm", "itm", "itc", "mvsc", "mlsc"]
    assert any("no `temporal_embed`" in note for note in result.notes)
    assert any("MLTC" in note and "does not implement" in note for note in result.notes)


def test_training_config_disagreeing_with_the_weights_is_reported(tmp_path, tokenizer_dir):
    config = dict(TRAINING_CONFIG, hidden_size=768, max_text_len=40)
    _, result = _convert(tmp_path, tokenizer_dir, training_config=config)
    assert result.config.hidden_size == 32
    assert any("hidden_size=768 but the weights say 32" in note for note in result.notes)
    assert any("max_text_len=40" in note for note in result.notes)


def test_task_is_detected_from_the_heads():
    assert detect_task(original_state_dict(heads="pretraining")) == "pretraining"
    assert detect_task(original_state_dict(heads="vqa")) == "vqa"
    assert detect_task(original_state_dict(heads="nlvr2")) == "nlvr2"
    assert detect_task(original_state_dict(heads="retrieval")) == "retrieval"
    assert detect_task(original_state_dict(heads="none")) == "model"


def test_converting_to_the_base_model_drops_the_pretraining_heads_with_a_note(tmp_path, tokenizer_dir):
    state, result = _convert(tmp_path, tokenizer_dir, task="model")
    assert type(result.model).__name__ == "SCLModel"
    assert result.dropped["mlm_score.decoder.weight"] == "MLM head, not part of SCLModel"
    assert result.dropped["cl_temp"] == "ITC temperature, not part of SCLModel"
    assert any("Dropped the ITM head (2 tensors)" in note for note in result.notes)
    assert torch.equal(result.model.cross_modal_text_transform.weight, state["cross_modal_text_transform.weight"])


def test_asking_for_a_head_the_checkpoint_lacks_fails(tmp_path, tokenizer_dir):
    if not hasattr(modeling_scl, "SCLForQuestionAnswering"):
        pytest.skip("SCLForQuestionAnswering is not in modeling_scl yet")
    with pytest.raises(CheckpointKeyError, match=r"vqa_classifier\.\{0,1,3\}\.weight.*start the missing head fresh"):
        _convert(tmp_path, tokenizer_dir, task="vqa")


def test_vqa_checkpoint_converts_with_its_classifier_and_label_names(tmp_path, tokenizer_dir):
    if not hasattr(modeling_scl, "SCLForQuestionAnswering"):
        pytest.skip("SCLForQuestionAnswering is not in modeling_scl yet")
    answers = [f"answer {i}" for i in range(NUM_VQA_LABELS)]
    state, result = _convert(tmp_path, tokenizer_dir, heads="vqa", label_names=answers, verify=True)
    assert type(result.model).__name__ == "SCLForQuestionAnswering"
    assert torch.equal(result.model.state_dict()["vqa_classifier.3.weight"], state["vqa_classifier.3.weight"])
    assert result.config.num_labels == NUM_VQA_LABELS and result.config.id2label[3] == "answer 3"


def test_nlvr2_checkpoint_keeps_three_token_types(tmp_path, tokenizer_dir):
    if not hasattr(modeling_scl, "SCLForImagesAndTextClassification"):
        pytest.skip("SCLForImagesAndTextClassification is not in modeling_scl yet")
    state, result = _convert(tmp_path, tokenizer_dir, heads="nlvr2", verify=True)
    assert result.config.num_token_types == 3
    assert torch.equal(result.model.scl.token_type_embeddings.weight, state["token_type_embeddings.weight"])
    assert torch.equal(result.model.state_dict()["nlvr2_classifier.0.weight"], state["nlvr2_classifier.0.weight"])
    assert result.config.id2label == {0: "False", 1: "True"}


def test_retrieval_checkpoint_keeps_rank_output_itm_and_itc_heads(tmp_path, tokenizer_dir):
    if not hasattr(modeling_scl, "SCLForImageTextRetrieval"):
        pytest.skip("SCLForImageTextRetrieval is not in modeling_scl yet")
    state, result = _convert(tmp_path, tokenizer_dir, heads="retrieval", verify=True)
    converted = result.model.state_dict()
    assert torch.equal(converted["rank_output.weight"], state["rank_output.weight"])
    assert torch.equal(converted["itm_score.fc.weight"], state["itm_score.fc.weight"])
    assert torch.equal(converted["itc_temperature"], state["cl_temp"].reshape(1))  # (1,): FSDP shards no 0-d param


def test_pretraining_checkpoint_converts_for_zero_shot_classification_keeping_the_itc_heads(tmp_path, tokenizer_dir):
    state, result = _convert(tmp_path, tokenizer_dir, task="zero-shot", verify=True)
    converted = result.model.state_dict()
    assert type(result.model).__name__ == "SCLForZeroShotImageClassification"
    assert torch.equal(converted["itc_image_projection.3.weight"], state["vision_proj.3.weight"])
    assert result.dropped["itm_score.fc.bias"] == "ITM head, not part of SCLForZeroShotImageClassification"
    # ITC never runs the fusion layers, so the zero-shot model does not build them.
    fusion = {key for key, reason in result.dropped.items() if reason.startswith("fusion layers, not part of")}
    assert "token_type_embeddings.weight" in fusion and "cross_modal_text_pooler.dense.weight" in fusion
    assert any(key.startswith("cross_modal_image_layers.") for key in fusion)
    assert not any(key.startswith(("scl.token_type", "scl.cross_modal_text_layers")) for key in converted)
    assert result.verification[-1].endswith("task forward runs")


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def test_console_script_converts_and_prints_a_summary(tmp_path, tokenizer_dir, capsys):
    save_checkpoint(tmp_path / "MGSC-100k.ckpt")
    args = [str(tmp_path / "MGSC-100k.ckpt"), str(tmp_path / "out"), "--tokenizer", tokenizer_dir]
    args += ["--text-num-heads", "4", "--vision-num-heads", "4", "--task", "model", "--no-verify"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"Converted to {tmp_path / 'out'} as SCLModel (task 'model'" in out
    assert "checkpoint: epoch=41, global_step=99999" in out
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "README.md").is_file()


def test_console_script_refuses_a_pickled_checkpoint_with_exit_code_1(tmp_path, capsys):
    hyper_parameters = {"config": argparse.Namespace(image_size=32)}
    torch.save(lightning_checkpoint(original_state_dict(), hyper_parameters=hyper_parameters), tmp_path / "ns.ckpt")
    assert main([str(tmp_path / "ns.ckpt"), str(tmp_path / "out")]) == 1
    assert "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# File failures: each gets its own message, and nothing is written
# ---------------------------------------------------------------------------------------------------------------------


def _run_console(tmp_path, checkpoint, capsys, *extra) -> str:
    """Run `scl-convert-original` on `checkpoint`; assert it fails and writes nothing; return its stderr."""
    assert main([str(checkpoint), str(tmp_path / "out"), *extra]) == 1
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


def test_empty_file_is_reported_as_an_interrupted_download(tmp_path, capsys):
    (tmp_path / "MGSC-100k.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointFileError, match=r"is empty \(0 bytes\): an interrupted or failed download") as info:
        load_original_checkpoint(tmp_path / "MGSC-100k.ckpt")
    assert "the released MGSC-100k.ckpt is 4.43 GB" in str(info.value)
    error = _run_console(tmp_path, tmp_path / "MGSC-100k.ckpt", capsys)
    assert "is empty (0 bytes)" in error and "--trust-pickle" not in error


def test_truncated_zip_is_an_incomplete_download_with_the_sizes_found_and_released(tmp_path, capsys):
    save_checkpoint(tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "MGSC-100k.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFileError) as info:
        load_original_checkpoint(tmp_path / "MGSC-100k.ckpt")
    message = str(info.value)
    assert "is an incomplete or corrupt download: the zip archive has no end" in message
    assert f"The file is {len(data) // 2:,} bytes" in message or f"({len(data) // 2:,} bytes)" in message
    assert "the released MGSC-100k.ckpt is 4.43 GB" in message
    error = _run_console(tmp_path, tmp_path / "MGSC-100k.ckpt", capsys)
    assert "incomplete or corrupt download" in error and "--trust-pickle" not in error


def test_zip_missing_bytes_in_the_middle_reports_the_size_its_directory_expects(tmp_path):
    save_checkpoint(tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "gap.ckpt").write_bytes(data[:1000] + data[3000:])  # the end records survive, 2000 bytes are gone
    with pytest.raises(CheckpointFileError, match="incomplete or corrupt download") as info:
        load_original_checkpoint(tmp_path / "gap.ckpt")
    assert f"its zip directory says it should be {_human_size(len(data))}" in str(info.value)
    assert f"The file is {_human_size(len(data) - 2000)}" in str(info.value)


def _human_size(num_bytes: int) -> str:
    if num_bytes < 1e6:
        return f"{num_bytes:,} bytes"
    return f"{num_bytes / 1e6:.1f} MB ({num_bytes:,} bytes)"


def test_truncated_legacy_format_file_is_an_incomplete_download(tmp_path):
    torch.save(original_state_dict(), tmp_path / "plain.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "plain.pt").read_bytes()
    for cut in (60, len(data) - 100):  # inside the pickle; inside the tensor data after it
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(CheckpointFileError, match="incomplete or corrupt download"):
            load_original_checkpoint(tmp_path / "cut.pt")


def test_random_bytes_are_not_a_pytorch_checkpoint(tmp_path, capsys):
    (tmp_path / "noise.ckpt").write_bytes(
        bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist())
    )
    with pytest.raises(CheckpointFileError, match=r"noise\.ckpt is not a PyTorch checkpoint: it is neither a zip"):
        load_original_checkpoint(tmp_path / "noise.ckpt")
    error = _run_console(tmp_path, tmp_path / "noise.ckpt", capsys)
    assert "not a PyTorch checkpoint" in error and "--trust-pickle" not in error and "pickled" not in error


def test_bytes_that_start_like_a_pickle_without_the_torch_magic_number_are_not_a_checkpoint(tmp_path):
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2))
    with pytest.raises(CheckpointFileError, match="not a PyTorch checkpoint.*no torch magic number"):
        load_original_checkpoint(tmp_path / "other.pkl")


def test_zip_archive_without_data_pkl_is_not_a_pytorch_checkpoint(tmp_path):
    with zipfile.ZipFile(tmp_path / "archive.ckpt", "w") as archive:
        archive.writestr("weights.npy", b"\x00" * 64)
    with pytest.raises(
        CheckpointFileError, match=r"not a PyTorch checkpoint: it is a zip archive without the `data\.pkl`"
    ):
        load_original_checkpoint(tmp_path / "archive.ckpt")


def test_directory_given_as_the_checkpoint_is_reported_as_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a directory, not a checkpoint file"):
        load_original_checkpoint(tmp_path)


class _CodeRunningObject:
    """Unpickling this runs `function(argument)`: here, creating a marker file."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("protocol", [2, 4], ids=["GLOBAL", "STACK_GLOBAL"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_code_executing_pickle_is_refused_naming_every_object_and_never_runs(tmp_path, capsys, protocol, container):
    marker = tmp_path / "pwned"
    checkpoint = lightning_checkpoint(original_state_dict(), hyper_parameters={"config": dict(TRAINING_CONFIG)})
    checkpoint["payload"] = [
        _CodeRunningObject(os.system, f"touch {marker}"),  # torch 2.14: "GLOBAL posix.system whose module ... blocked"
        _CodeRunningObject(exec, f"open({str(marker)!r}, 'w').close()"),
    ]
    torch.save(
        checkpoint, tmp_path / "evil.ckpt", pickle_protocol=protocol, _use_new_zipfile_serialization=container == "zip"
    )
    with pytest.raises(UntrustedCheckpointError) as info:
        load_original_checkpoint(tmp_path / "evil.ckpt")
    assert f"(it needs builtins.exec, {os.system.__module__}.system)" in str(info.value)
    assert "--trust-pickle" in str(info.value)
    error = _run_console(tmp_path, tmp_path / "evil.ckpt", capsys)
    assert f"{os.system.__module__}.system" in error and "--trust-pickle" in error
    assert not marker.exists()


def test_refused_objects_are_named_from_the_file_whatever_torch_load_would_say(tmp_path, monkeypatch):
    # The names come from reading the pickle's opcodes, so no torch version's wording can hide them.
    hyper_parameters = {"config": argparse.Namespace(**TRAINING_CONFIG)}
    torch.save(lightning_checkpoint(original_state_dict(), hyper_parameters=hyper_parameters), tmp_path / "ns.ckpt")

    def refuse_with_other_wording(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed: something a future torch may say")

    monkeypatch.setattr(torch, "load", refuse_with_other_wording)
    with pytest.raises(UntrustedCheckpointError, match=r"\(it needs argparse\.Namespace\)"):
        load_original_checkpoint(tmp_path / "ns.ckpt")


def test_converting_into_a_non_empty_folder_needs_overwrite(tmp_path, tokenizer_dir, capsys):
    save_checkpoint(tmp_path / "model.ckpt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    kwargs = dict(tokenizer=tokenizer_dir, verify=False, **HEADS)
    with pytest.raises(FileExistsError, match=r"out is not empty \(1 entries: notes\.txt\)\. Pass --overwrite"):
        convert_original_checkpoint(str(tmp_path / "model.ckpt"), str(out), **kwargs)
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    args = [str(tmp_path / "model.ckpt"), str(out), "--tokenizer", tokenizer_dir, "--no-verify"]
    args += ["--text-num-heads", "4", "--vision-num-heads", "4"]
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err and [path.name for path in out.iterdir()] == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"


def test_output_path_that_is_a_file_is_refused(tmp_path, tokenizer_dir):
    save_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "out").write_text("")
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        convert_original_checkpoint(str(tmp_path / "model.ckpt"), str(tmp_path / "out"), tokenizer=tokenizer_dir)
