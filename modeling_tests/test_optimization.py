"""The fine-tuning optimizer: SCL's parameter groups with head / cross-modal learning-rate multipliers (spec §3.2)."""

import pytest
import torch
from torch import nn

from transformers_scl.optimization import create_optimizer, parameter_role, scl_parameter_groups


class TinySCLLike(nn.Module):
    """Parameter names laid out like an SCL task model: towers, fusion, a task head and `rank_output`."""

    def __init__(self):
        super().__init__()
        self.scl = nn.Module()
        self.scl.text_model = nn.Linear(2, 2)
        self.scl.cross_modal_text_layers = nn.ModuleList([nn.Linear(2, 2), nn.LayerNorm(2)])
        self.vqa_classifier = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.rank_output = nn.Linear(2, 1)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_name(model, **kwargs):
    defaults = dict(lr=1e-5, weight_decay=0.01, lr_mult_head=50, lr_mult_cross_modal=10)
    groups = scl_parameter_groups(model, **{**defaults, **kwargs})
    names = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: (g["lr"], g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in groups}


def test_heads_cross_modal_and_base_parameters_get_their_learning_rates():
    groups = groups_by_name(TinySCLLike())
    assert groups["head"][0] == pytest.approx(5e-4)
    assert groups["cross_modal"][0] == pytest.approx(1e-4)
    assert groups["base"][0] == pytest.approx(1e-5)
    assert groups["head"][2] == ["vqa_classifier.0.weight"]
    assert groups["cross_modal"][2] == ["scl.cross_modal_text_layers.0.weight"]


def test_rank_output_trains_at_the_base_learning_rate():
    # spec §3.2: `rank_output` is not among the head names of `set_schedule`
    assert parameter_role("rank_output.weight") == "base"
    assert "rank_output.weight" in groups_by_name(TinySCLLike())["base"][2]


def test_biases_and_layernorms_have_no_weight_decay():
    groups = groups_by_name(TinySCLLike())
    assert groups["head_no_decay"] == (
        pytest.approx(5e-4),
        0.0,
        ["vqa_classifier.0.bias", "vqa_classifier.1.bias", "vqa_classifier.1.weight"],
    )
    assert groups["cross_modal_no_decay"][2] == [
        "scl.cross_modal_text_layers.0.bias",
        "scl.cross_modal_text_layers.1.bias",
        "scl.cross_modal_text_layers.1.weight",
    ]
    assert groups["base"][1] == 0.01


def test_frozen_parameters_are_left_out():
    groups = groups_by_name(TinySCLLike())
    assert not any(name.startswith("frozen") for *_, names in groups.values() for name in names)


def test_optimizer_is_adamw_with_scl_betas_and_keeps_group_learning_rates():
    optimizer = create_optimizer(TinySCLLike(), lr=5e-6, weight_decay=0.01, lr_mult_head=50, lr_mult_cross_modal=10)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups}["head"] == pytest.approx(2.5e-4)
    assert all(g["betas"] == (0.9, 0.98) for g in optimizer.param_groups)


def test_non_positive_multiplier_is_rejected_by_name():
    with pytest.raises(ValueError, match="lr_mult_head"):
        scl_parameter_groups(TinySCLLike(), lr=1e-5, weight_decay=0.0, lr_mult_head=0, lr_mult_cross_modal=1)


def test_scl_task_model_parameters_split_into_towers_fusion_and_head():
    from conftest import tiny_config

    from transformers_scl.modeling_scl import SCLForQuestionAnswering

    model = SCLForQuestionAnswering(tiny_config(num_labels=3))
    roles = {name: parameter_role(name) for name, _ in model.named_parameters()}
    assert {n for n, r in roles.items() if r == "head"} == {n for n in roles if n.startswith("vqa_classifier.")}
    assert {n for n, r in roles.items() if r == "cross_modal"} == {n for n in roles if ".cross_modal_" in n}
    assert roles["scl.text_model.embeddings.word_embeddings.weight"] == "base"
    assert roles["scl.vision_model.embeddings.patch_embedding.weight"] == "base"
    assert roles["scl.token_type_embeddings.weight"] == "base"  # spec §3.2: not a fusion layer


def test_create_optimizer_from_training_arguments_uses_optim_betas_and_multipliers(tmp_path):
    from transformers_scl.training import SCLTrainingArguments

    args = SCLTrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-4, lr_mult_head=50, lr_mult_cross_modal=10, adam_epsilon=1e-6
    )
    optimizer = create_optimizer(TinySCLLike(), args)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(5e-3) and lrs["cross_modal"] == pytest.approx(1e-3) and lrs["base"] == 1e-4
    assert all(g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6 for g in optimizer.param_groups)
    with pytest.raises(ValueError, match="lr_mult_head"):
        create_optimizer(TinySCLLike(), lr=1e-4, weight_decay=0.0)
