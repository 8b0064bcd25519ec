"""SCLConfig refuses what the model cannot train or build: dropouts outside [0, 1), two different image sizes.

Config validation errors are `StrictDataclassClassValidationError`s (huggingface_hub's `@strict`) quoting our message.
"""

import pytest
from conftest import tiny_config
from huggingface_hub.errors import StrictDataclassClassValidationError

from transformers_scl import SCLConfig, SCLVisionConfig

TEXT = tiny_config().text_config.to_dict()
VISION = tiny_config().vision_config.to_dict()


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize(
    "overrides, name",
    [
        (lambda v: dict(vision_config={**VISION, "attention_dropout": v}), "vision_config.attention_dropout"),
        (lambda v: dict(text_config={**TEXT, "hidden_dropout_prob": v}), "text_config.hidden_dropout_prob"),
        (
            lambda v: dict(text_config={**TEXT, "attention_probs_dropout_prob": v}),
            "text_config.attention_probs_dropout_prob",
        ),
        (lambda v: dict(hidden_dropout_prob=v), "hidden_dropout_prob"),
        (lambda v: dict(attention_probs_dropout_prob=v), "attention_probs_dropout_prob"),
    ],
    ids=["vision-attention", "text-hidden", "text-attention", "fusion-hidden", "fusion-attention"],
)
def test_every_dropout_must_be_in_zero_one(overrides, name, value):
    with pytest.raises(
        StrictDataclassClassValidationError, match=rf"(?<![\w.]){name} must be in \[0, 1\), got {value}\."
    ):
        tiny_config(**overrides(value))


def test_dropouts_inside_zero_one_are_accepted():
    config = tiny_config(
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.99,
        vision_config={**VISION, "attention_dropout": 0.5},
        text_config={**TEXT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.1},
    )
    assert config.vision_config.attention_dropout == 0.5


def test_the_vision_config_alone_checks_its_dropout():
    with pytest.raises(
        StrictDataclassClassValidationError, match=r"vision_config.attention_dropout must be in \[0, 1\), got -0.5"
    ):
        SCLVisionConfig(attention_dropout=-0.5)


def test_image_size_differing_from_the_vision_tower_is_refused():
    with pytest.raises(
        StrictDataclassClassValidationError, match=r"image_size \(64\) differs from vision_config.image_size \(32\)"
    ):
        SCLConfig(image_size=64, vision_config={**VISION, "image_size": 32})
    with pytest.raises(
        StrictDataclassClassValidationError, match=r"image_size \(288\) differs from vision_config.image_size \(32\)"
    ):
        SCLConfig(vision_config=SCLVisionConfig(**{**VISION, "image_size": 32}))


def test_image_size_is_given_to_a_vision_config_that_has_none():
    assert SCLConfig(image_size=64).vision_config.image_size == 64
    vision = {key: value for key, value in VISION.items() if key != "image_size"}
    assert SCLConfig(image_size=64, vision_config=vision).vision_config.image_size == 64
    assert SCLConfig().vision_config.image_size == SCLConfig().image_size == 288


def test_a_saved_config_reloads_with_one_image_size(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    config = SCLConfig.from_pretrained(tmp_path)
    assert config.image_size == config.vision_config.image_size == 32


def test_overrides_edit_single_fields_of_the_sub_configs():
    config = tiny_config()
    edited = config.with_overrides('{"text_config": {"num_hidden_layers": 1}, "num_frames": 2}')
    assert edited.text_config.num_hidden_layers == 1 and edited.num_frames == 2
    assert edited.text_config.hidden_size == config.text_config.hidden_size  # the rest of text_config is kept
    assert config.text_config.num_hidden_layers == 2 and config.num_frames == 4  # the original is unchanged
    assert config.with_overrides({"vision_config": {"max_frames": 6}}).vision_config.patch_size == 8


@pytest.mark.parametrize("text", ["[1, 2]", "{num_frames: 2}"])
def test_overrides_that_are_not_a_json_object_are_refused(text):
    with pytest.raises(ValueError, match="Config overrides must be a JSON object"):
        tiny_config().with_overrides(text)


def test_invalid_overrides_fail_the_config_validation():
    with pytest.raises(StrictDataclassClassValidationError, match="num_frames"):
        tiny_config().with_overrides({"num_frames": 9})
