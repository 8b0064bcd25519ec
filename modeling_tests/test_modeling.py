"""SCLConfig / SCLModel behaviour: the transformers ModelTester checks that apply, plus SCL-specific behaviour."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel, RobertaConfig, RobertaModel

from transformers_scl import SCLConfig, SCLForImagesAndTextClassification, SCLModel, SCLVisionModel

# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def make_inputs(batch_size=2, text_length=7, num_frames=None, size=32, seed=0):
    """Token ids with real padding in the second row, and images (or videos when `num_frames`)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 390, (batch_size, text_length), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    if batch_size > 1:
        attention_mask[1, text_length - 2 :] = 0
        input_ids[1, text_length - 2 :] = 1
    shape = (batch_size, 3, size, size) if num_frames is None else (batch_size, num_frames, 3, size, size)
    pixels = torch.randn(shape, generator=generator)
    key = "pixel_values" if num_frames is None else "pixel_values_videos"
    return {"input_ids": input_ids, "attention_mask": attention_mask, key: pixels}


def build(config=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SCLModel._from_config(config or tiny_config(), **kwargs).eval()


def assert_outputs_close(a, b, atol=0.0):
    for name in ("text_features", "image_features", "pooler_output"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------------


def test_default_config_is_the_paper_base_model():
    config = SCLConfig()
    assert config.text_config.model_type == "roberta" and config.text_config.vocab_size == 50265
    assert config.vision_config.num_hidden_layers == 11  # CLIP's last block dropped (spec §1.2)
    assert (config.vision_config.patch_size, config.vision_config.max_frames) == (16, 8)
    assert (config.hidden_size, config.num_fusion_layers, config.num_attention_heads) == (768, 6, 12)
    assert (config.intermediate_size, config.layer_norm_eps, config.hidden_dropout_prob) == (3072, 1e-12, 0.1)
    assert (config.itc_projection_dim, config.itc_temperature_init, config.scl_temperature) == (512, 0.07, 0.03)
    assert (config.image_mask_ratio, config.text_mask_ratio, config.mlm_probability) == (0.8, 0.4, 0.15)
    assert (config.itc_weight, config.mlm_weight, config.itm_weight, config.mvsc_weight, config.mlsc_weight) == (
        0.5,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert (config.image_size, config.num_frames) == (288, 4)


@pytest.mark.slow
def test_default_model_parameter_count_matches_spec():
    # spec §1.5: vision 78.82M at 288px, RoBERTa 124.65M incl. its unused 0.59M pooler, fusion 115.79M.
    model = SCLModel(SCLConfig())

    def millions(module):
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert millions(model.vision_model) == pytest.approx(78.82, abs=0.01)
    assert millions(model.text_model) == pytest.approx(124.65 - 0.59, abs=0.01)
    fusion = millions(model) - millions(model.vision_model) - millions(model.text_model)
    assert fusion == pytest.approx(115.79, abs=0.01)
    assert millions(model) == pytest.approx(319.2 - 0.59, abs=0.1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30), "not divisible by num_attention_heads"),
        (dict(num_frames=9), "exceeds vision_config.max_frames"),
        (dict(image_size=36), "not divisible by vision_config.patch_size"),
        (dict(vision_config=dict(hidden_size=30, num_attention_heads=4)), "vision_config.hidden_size"),
        (dict(vision_config=dict(image_size=100, patch_size=16)), "vision_config.image_size"),
        (
            dict(text_config=dict(model_type="roberta", hidden_size=30, num_attention_heads=4)),
            "text_config.hidden_size",
        ),
        (dict(image_mask_ratio=1.0), "image_mask_ratio"),
        (dict(pretraining_objectives=["mlm", "mim"]), "Unknown pretraining_objectives"),
        (dict(scl_temperature=0.0), "scl_temperature"),
    ],
)
def test_inconsistent_config_raises_clear_error(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


def test_config_round_trips_through_json(tmp_path):
    config = tiny_config(num_frames=2, pretraining_objectives=["mlm", "itc"])
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SCLConfig)
    assert {k: v for k, v in loaded.to_dict().items() if k != "_name_or_path"} == {
        k: v for k, v in config.to_dict().items() if k != "_name_or_path"
    }
    assert json.loads((tmp_path / "config.json").read_text())["vision_config"]["model_type"] == "scl_vision_model"


# ---------------------------------------------------------------------------------------------------------------------
# ModelTester checks that apply
# ---------------------------------------------------------------------------------------------------------------------


def test_output_shapes_for_images_and_videos():
    model = build()
    out = model(**make_inputs())
    assert out.text_features.shape == (2, 7, 32)
    assert out.image_features.shape == (2, 17, 32)  # 1 frame CLS + 16 patches
    assert out.pooler_output.shape == (2, 64)
    assert out.text_embeds.shape == (2, 7, 32) and out.image_embeds.shape == (2, 17, 32)
    video = model(**make_inputs(num_frames=3))
    assert video.image_features.shape == (2, 3 * 17, 32)


def test_return_dict_false_gives_a_tuple():
    model = build()
    inputs = make_inputs()
    as_tuple = model(**inputs, return_dict=False)
    as_dict = model(**inputs)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.text_features)
    torch.testing.assert_close(as_tuple[2], as_dict.pooler_output)


def test_save_and_reload_gives_identical_outputs(tmp_path):
    model = build()
    inputs = make_inputs(num_frames=2)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = SCLModel.from_pretrained(tmp_path).eval()
    assert_outputs_close(model(**inputs), reloaded(**inputs))


def test_forward_is_deterministic_in_eval_mode():
    # Heavy dropout everywhere: train mode must then differ between two calls, so equal eval outputs show that
    # eval mode switches every dropout off (not that the model has none).
    dropout = dict(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    config = tiny_config(**dropout)
    config.text_config.hidden_dropout_prob = config.text_config.attention_probs_dropout_prob = 0.5
    config.vision_config.attention_dropout = 0.5
    model = build(config=config, attn_implementation="eager")
    inputs = make_inputs(num_frames=2)
    assert_outputs_close(model(**inputs), model(**inputs))
    model.train()
    first, second = model(**inputs), model(**inputs)
    for name in ("text_features", "image_features", "pooler_output"):
        assert not torch.allclose(getattr(first, name), getattr(second, name))


def test_batching_equivalence():
    model = build()
    inputs = make_inputs(num_frames=2)
    batched = model(**inputs)
    for row in range(2):
        length = int(inputs["attention_mask"][row].sum())
        single = model(
            input_ids=inputs["input_ids"][row : row + 1, :length],
            pixel_values_videos=inputs["pixel_values_videos"][row : row + 1],
        )
        torch.testing.assert_close(single.pooler_output[0], batched.pooler_output[row], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.image_features[0], batched.image_features[row], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.text_features[0], batched.text_features[row, :length], atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_frames", [None, 3])
def test_eager_matches_sdpa(num_frames):
    sdpa = build()
    assert sdpa.config._attn_implementation == "sdpa"  # the default
    eager = build(attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    assert eager.vision_model.config._attn_implementation == "eager"
    inputs = make_inputs(num_frames=num_frames)
    assert_outputs_close(sdpa(**inputs), eager(**inputs), atol=1e-5)


def test_attn_implementation_can_be_set_per_tower():
    model = build(attn_implementation={"": "sdpa", "text_config": "eager", "vision_config": "eager"})
    assert model.config._attn_implementation == "sdpa"
    assert model.text_model.config._attn_implementation == "eager"
    assert model.vision_model.config._attn_implementation == "eager"
    assert_outputs_close(model(**make_inputs()), build()(**make_inputs()), atol=1e-5)


def test_every_parameter_receives_a_gradient():
    model = build().train()
    out = model(**make_inputs(num_frames=2))
    (out.pooler_output.sum() + out.text_features.sum() + out.image_features.sum()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_activation_checkpointing_covers_all_towers_and_keeps_gradients():
    inputs = make_inputs(num_frames=2)
    reference = build(config=tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    checkpointed = build(config=tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()
    checkpointed.config.text_config.hidden_dropout_prob = 0.0
    reference.config.text_config.hidden_dropout_prob = 0.0
    for model in (reference, checkpointed):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    checkpointed.activation_checkpointing_enable()
    flags = {
        name: module.gradient_checkpointing
        for name, module in checkpointed.named_modules()
        if name.endswith(("layer.0", "layers.0")) and hasattr(module, "gradient_checkpointing")
    }
    assert flags == {
        "text_model.encoder.layer.0": True,
        "vision_model.encoder.layers.0": True,
        "cross_modal_text_layers.0": True,
        "cross_modal_image_layers.0": True,
    }
    for model in (reference, checkpointed):
        model(**inputs).pooler_output.square().sum().backward()
    for (name, p), q in zip(reference.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_missing_weights_are_initialised_and_loaded_ones_kept(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "model.safetensors")
    dropped = [k for k in state if k.startswith("cross_modal_text_pooler.") or "temporal_embedding" in k]
    for key in dropped:
        del state[key]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded, info = SCLModel.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(dropped)
    reloaded_state = reloaded.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(reloaded_state[key], value, msg=key)
    pooler = reloaded.cross_modal_text_pooler.dense
    assert torch.all(pooler.bias == 0) and 0.01 < pooler.weight.std() < 0.03  # N(0, 0.02), spec §1.1
    assert torch.all(reloaded.vision_model.embeddings.temporal_embedding == 0)


def test_vision_tower_loads_from_a_base_model_checkpoint(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    # A composite checkpoint's vision weights live under `vision_model.`; base_model_prefix strips it.
    vision = SCLVisionModel.from_pretrained(tmp_path)
    torch.testing.assert_close(
        vision.embeddings.patch_embedding.weight, model.vision_model.embeddings.patch_embedding.weight
    )


def test_hidden_states_and_attentions_are_flat_with_the_towers_in_their_outputs():
    model = build(attn_implementation="eager")
    out = model(**make_inputs(num_frames=2), output_hidden_states=True, output_attentions=True)
    text_tower, vision_tower = out.text_model_output.hidden_states, out.vision_model_output.hidden_states
    assert len(text_tower) == 3 and text_tower[-1].shape == (2, 7, 32)
    assert len(vision_tower) == 3 and vision_tower[-1].shape == (2, 2 * 17, 32)
    assert all(isinstance(state, torch.Tensor) for state in out.hidden_states)
    assert len(out.hidden_states) == 2 * 3  # text stream: input + 2 layers, then the image stream
    text_fusion, image_fusion = out.hidden_states[:3], out.hidden_states[3:]
    assert text_fusion[0].shape == (2, 7, 32) and image_fusion[0].shape == (2, 34, 32)
    torch.testing.assert_close(text_fusion[-1], out.text_features)
    torch.testing.assert_close(image_fusion[-1], out.image_features)
    assert len(out.text_model_output.attentions) == 2 and out.text_model_output.attentions[0].shape == (2, 4, 7, 7)
    vision_att = out.vision_model_output.attentions
    assert len(vision_att) == 2 and vision_att[0].shape == (2 * 2, 4, 17, 17)
    # One field per attention of a fusion layer, each one tensor per layer (2 here), all of one shape.
    expected = {
        "attentions": (2, 4, 7, 7),  # text self-attention
        "cross_attentions": (2, 4, 7, 34),  # text queries, image keys
        "image_attentions": (2, 4, 34, 34),
        "image_cross_attentions": (2, 4, 34, 7),
    }
    for field, shape in expected.items():
        weights = getattr(out, field)
        assert len(weights) == 2 and all(tensor.shape == shape for tensor in weights), field
    # padded text keys get no attention
    assert torch.all(out.image_cross_attentions[1][1, :, :, -2:] == 0)
    assert torch.all(out.attentions[0][1, :, :, -2:] == 0)


def test_nlvr2_states_and_attentions_are_the_left_fusions_then_the_right_ones():
    torch.manual_seed(0)
    model = SCLForImagesAndTextClassification._from_config(tiny_config(), attn_implementation="eager").eval()
    inputs = make_inputs()
    pair = torch.stack([inputs["pixel_values"], inputs["pixel_values"].flip(-1)], dim=1)
    with torch.no_grad():
        out = model(**{**inputs, "pixel_values": pair}, output_hidden_states=True, output_attentions=True)
        sides = [
            model.scl(
                **{**inputs, "pixel_values": pair[:, side]},
                image_token_type_idx=side + 1,
                output_hidden_states=True,
                output_attentions=True,
            )
            for side in range(2)
        ]
    for field in ("hidden_states", "attentions", "cross_attentions", "image_attentions", "image_cross_attentions"):
        expected = getattr(sides[0], field) + getattr(sides[1], field)
        assert len(getattr(out, field)) == len(expected), field
        for actual, reference in zip(getattr(out, field), expected):
            torch.testing.assert_close(actual, reference)
    # indices select from the head's flat `hidden_states` (12 here), not from each fusion's
    with torch.no_grad():
        selected = model(**{**inputs, "pixel_values": pair}, output_hidden_states=[1, -1]).hidden_states
    assert len(selected) == 12 and [i for i, state in enumerate(selected) if state is not None] == [1, 11]
    torch.testing.assert_close(selected[11], out.hidden_states[11])


def test_selected_hidden_state_indices_select_fusion_states_not_roberta_layers():
    model = build()
    out = model(**make_inputs(), output_hidden_states=[0, -1])
    assert out.hidden_states[0] is not None and out.hidden_states[-1] is not None
    assert all(state is None for state in out.hidden_states[1:-1])
    assert len(out.text_model_output.hidden_states) == 3  # the towers return all theirs


def test_vision_hidden_states_are_in_the_autograd_graph():
    model = build()
    out = model.vision_model(
        pixel_values_videos=make_inputs(num_frames=2)["pixel_values_videos"], output_hidden_states=True
    )
    out.hidden_states[0].retain_grad()
    out.last_hidden_state.sum().backward()
    assert out.hidden_states[0].grad is not None


def test_loads_in_bfloat16(tmp_path):
    build().save_pretrained(tmp_path)
    model = SCLModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    inputs = make_inputs()
    inputs["pixel_values"] = inputs["pixel_values"].bfloat16()
    out = model(**inputs)
    assert out.pooler_output.dtype == torch.bfloat16 and torch.isfinite(out.pooler_output.float()).all()


# ---------------------------------------------------------------------------------------------------------------------
# SCL-specific behaviour
# ---------------------------------------------------------------------------------------------------------------------


def test_image_equals_its_one_frame_video():
    model = build()
    inputs = make_inputs()
    image = model(**inputs)
    video = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values_videos=inputs["pixel_values"].unsqueeze(1),
    )
    assert_outputs_close(image, video)


def test_patch_tokens_do_not_attend_across_frames_but_frame_cls_does():
    # One vision layer: a frame's patch outputs see only their own frame; frame-CLS outputs see every frame.
    vision = SCLVisionModel(
        tiny_config(
            vision_config=dict(
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=64,
                image_size=32,
                patch_size=8,
            )
        ).vision_config
    ).eval()
    video = torch.randn(1, 2, 3, 32, 32)
    changed = video.clone()
    changed[:, 1] = torch.randn(3, 32, 32)  # only frame 2 changes
    a, b = vision(pixel_values_videos=video).last_hidden_state, vision(pixel_values_videos=changed).last_hidden_state
    # layout: [CLS_1, CLS_2, patches_1 (16), patches_2 (16)]
    torch.testing.assert_close(a[:, 2:18], b[:, 2:18])  # frame-1 patches unchanged
    assert not torch.allclose(a[:, 0], b[:, 0])  # frame-1 CLS attends to frame 2


def test_image_path_equals_plain_vit_attention():
    # For one frame, the tower is exactly CLIP's ViT: compare against transformers' CLIPVisionModel.
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision = SCLVisionModel(tiny_config().vision_config).eval()
    clip_config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    clip = CLIPVisionModel(clip_config).eval()
    state = {k.removeprefix("vision_model."): v for k, v in clip.state_dict().items() if "position_ids" not in k}
    missing, unexpected = vision.load_state_dict(state, strict=False)
    assert missing == ["embeddings.temporal_embedding"] and unexpected == []
    pixels = torch.randn(2, 3, 32, 32)
    ours = vision(pixel_values=pixels).last_hidden_state
    hidden = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(ours, clip.post_layernorm(hidden), atol=1e-5, rtol=1e-5)


def test_video_cost_is_linear_attention_no_quadratic_mask():
    # Every attention call of the vision tower, the frame-CLS step included, is recorded through the attention
    # interface: none may score (F*T)^2 query-key pairs. The frame-local calls score F*T^2, the global frame-CLS
    # step F*(F*T) (F queries per clip).
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    calls = []

    def recording_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((tuple(query.shape), tuple(key.shape)))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("scl_recording", recording_attention)
    vision = SCLVisionModel._from_config(tiny_config().vision_config, attn_implementation="scl_recording").eval()
    frames, tokens = 8, 17
    vision(pixel_values_videos=torch.randn(1, frames, 3, 32, 32))
    assert len(calls) == 2 * vision.config.num_hidden_layers  # a local and a global call per layer
    for query, key in calls:
        assert query[-2] * key[-2] <= frames * tokens * frames, f"query {query} x key {key} is quadratic in F*T"
    local, cls = calls[0], calls[1]
    assert local == ((frames, 4, tokens, 8), (frames, 4, tokens, 8))
    assert cls == ((1, 4, frames, 8), (1, 4, frames * tokens, 8))


def test_patch_dropping_keeps_the_same_positions_in_every_frame_and_is_seedable():
    vision = SCLVisionModel(tiny_config().vision_config).eval()
    video = torch.randn(2, 3, 3, 32, 32)
    first = vision(pixel_values_videos=video, mask_ratio=0.8, generator=torch.Generator().manual_seed(7))
    again = vision(pixel_values_videos=video, mask_ratio=0.8, generator=torch.Generator().manual_seed(7))
    other = vision(pixel_values_videos=video, mask_ratio=0.8, generator=torch.Generator().manual_seed(8))
    keep = first.patch_keep_indices
    assert keep.shape == (2, 3)  # int(16 * (1 - 0.8)) = 3
    assert torch.equal(keep, again.patch_keep_indices) and not torch.equal(keep, other.patch_keep_indices)
    assert first.last_hidden_state.shape == (2, 3 * (1 + 3), 32)
    torch.testing.assert_close(first.last_hidden_state, again.last_hidden_state)
    # Embeddings of the kept patches equal the full embeddings at those positions, in every frame.
    full = vision.embeddings(video)
    dropped = vision.embeddings(video, patch_keep_indices=keep)
    for b in range(2):
        for f in range(3):
            torch.testing.assert_close(dropped[b, f, 1:], full[b, f, 1 + keep[b]])


def test_patch_drop_count_follows_reference_rounding():
    from transformers_scl.modeling_scl import sample_patch_keep_indices

    # spec §1.2: 1 - 0.8 = 0.19999999999999996, so 25 patches keep 4 and 324 keep 64.
    assert sample_patch_keep_indices(1, 25, 0.8).shape[1] == 4
    assert sample_patch_keep_indices(1, 324, 0.8).shape[1] == 64
    assert sample_patch_keep_indices(1, 196, 0.8).shape[1] == 39


def test_precomputed_embeddings_reproduce_the_full_forward():
    model = build()
    inputs = make_inputs(num_frames=2)
    full = model(**inputs)
    reused = model(
        text_embeds=full.text_embeds,
        attention_mask=inputs["attention_mask"],
        image_embeds=full.image_embeds,
        num_frames=2,
    )
    assert_outputs_close(full, reused)


def test_interpolate_pos_encoding_accepts_other_resolutions():
    model = build()
    inputs = make_inputs(size=48)
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        model(**inputs)
    out = model(**inputs, interpolate_pos_encoding=True)
    assert out.image_features.shape == (2, 1 + 36, 32)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i.update(pixel_values=torch.randn(2, 4, 32, 32)), "Expected 3 image channels"),
        (lambda i: i.update(pixel_values=torch.randn(2, 32, 32)), "must be \\(batch, channels"),
        (lambda i: i.update(pixel_values=None, pixel_values_videos=torch.randn(2, 9, 3, 32, 32)), "max_frames=8"),
        (lambda i: i.update(pixel_values_videos=torch.randn(2, 1, 3, 32, 32)), "exactly one of"),
        (lambda i: i.pop("pixel_values"), "Pass `pixel_values`"),
        (lambda i: i.update(input_ids=torch.full((2, 7), 10_000)), "outside the vocabulary"),
        (lambda i: i.update(attention_mask=torch.ones(2, 3, dtype=torch.long)), "attention_mask"),
        (lambda i: i.update(pixel_values=torch.randn(2, 3, 36, 36)), "not divisible by the patch size"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    model = build()
    inputs = make_inputs()
    change(inputs)
    with pytest.raises(ValueError, match=message):
        model(**inputs)


# ---------------------------------------------------------------------------------------------------------------------
# Auto classes, remote code and pre-trained towers
# ---------------------------------------------------------------------------------------------------------------------


def test_auto_classes_are_registered(tmp_path):
    build().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SCLConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), SCLModel)


def test_saved_folder_has_code_and_complete_auto_map(tmp_path):
    build().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoConfig"] == "configuration_scl.SCLConfig"
    assert config["auto_map"]["AutoModel"] == "modeling_scl.SCLModel"
    assert {"configuration_scl.py", "modeling_scl.py", "model.safetensors"} <= set(os.listdir(tmp_path))


@pytest.mark.slow
def test_remote_code_loads_in_a_fresh_process_without_the_package(tmp_path):
    model = build()
    inputs = make_inputs(num_frames=2)
    model.save_pretrained(tmp_path / "model")
    torch.save({k: v for k, v in inputs.items()}, tmp_path / "inputs.pt")
    torch.save(model(**inputs).pooler_output, tmp_path / "expected.pt")
    script = f"""
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
assert "transformers_scl" not in sys.modules, "the package must not be imported"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = torch.load({str(tmp_path / "inputs.pt")!r})
expected = torch.load({str(tmp_path / "expected.pt")!r})
assert torch.equal(model(**inputs).pooler_output, expected)
print("OK")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    # Run from an empty directory and with site-packages only, so `transformers_scl` cannot be found by accident.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout


def _tiny_clip_and_roberta(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            ),
            projection_dim=16,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    roberta = RobertaModel(
        RobertaConfig(
            vocab_size=400,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    roberta.save_pretrained(tmp_path / "roberta")
    return clip, roberta


def test_from_vision_text_pretrained_loads_clip_and_roberta(tmp_path):
    clip, roberta = _tiny_clip_and_roberta(tmp_path)
    model, info = SCLModel.from_vision_text_pretrained(
        str(tmp_path / "clip"),
        str(tmp_path / "roberta"),
        image_size=48,
        output_loading_info=True,
        hidden_size=32,
        num_fusion_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        num_frames=2,
    )
    assert model.config.vision_config.num_hidden_layers == 2  # CLIP's last block dropped
    assert model.config.vision_config.image_size == 48 and model.config.image_size == 48
    assert info["vision_missing_keys"] == ["embeddings.temporal_embedding"]
    assert (
        all(k.startswith("encoder.layers.2.") for k in info["vision_unexpected_keys"])
        and info["vision_unexpected_keys"]
    )
    assert info["text_missing_keys"] == [] and all("pooler" in k for k in info["text_unexpected_keys"])
    torch.testing.assert_close(
        model.vision_model.encoder.layers[1].self_attn.q_proj.weight,
        clip.vision_model.encoder.layers[1].self_attn.q_proj.weight,
    )
    torch.testing.assert_close(
        model.text_model.encoder.layer[1].output.dense.weight, roberta.encoder.layer[1].output.dense.weight
    )
    # 4x4 grid resized bicubically to 6x6; the CLS position is kept.
    positions = model.vision_model.embeddings.position_embedding.weight
    assert positions.shape == (37, 32)
    torch.testing.assert_close(positions[0], clip.vision_model.embeddings.position_embedding.weight[0])
    out = model.eval()(**make_inputs(size=48, num_frames=2))
    assert out.pooler_output.shape == (2, 64)


def test_task_models_build_from_vision_text_pretrained(tmp_path):
    from transformers_scl import SCLForPreTraining

    clip, _ = _tiny_clip_and_roberta(tmp_path)
    model = SCLForPreTraining.from_vision_text_pretrained(
        str(tmp_path / "clip"),
        str(tmp_path / "roberta"),
        image_size=32,
        hidden_size=32,
        num_fusion_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        itc_projection_dim=16,
    )
    assert isinstance(model, SCLForPreTraining)
    torch.testing.assert_close(
        model.scl.vision_model.encoder.layers[0].mlp.fc1.weight, clip.vision_model.encoder.layers[0].mlp.fc1.weight
    )


def test_fusion_encoder_runs_the_layers_registered_under_the_checkpoint_names():
    import copy

    model = build()
    assert model.fusion.text_layers is model.cross_modal_text_layers
    assert model.fusion.image_layers is model.cross_modal_image_layers
    assert "cross_modal_image_layers.1.output.dense.weight" in model.state_dict()
    assert not any(name.startswith("fusion.") for name in model.state_dict())
    copied = copy.deepcopy(model)  # the copy's encoder runs the copy's layers
    assert copied.fusion.text_layers is copied.cross_modal_text_layers is not model.cross_modal_text_layers
    assert_outputs_close(copied(**make_inputs()), model(**make_inputs()))
