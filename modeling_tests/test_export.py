"""`torch.export.export` of the base model (image and video inputs) and of the VQA head: the exported program runs and
matches eager in fp32, on the inputs it was traced with and on new values of the same shapes (issue 14)."""

import pytest
import torch
from conftest import tiny_config

from transformers_scl import SCLForQuestionAnswering, SCLModel

NUM_ANSWERS = 5


def make_inputs(seed: int, video: bool) -> dict:
    """Token ids with padding in the second row, and images `(2, 3, 32, 32)` or 3-frame videos."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 400, (2, 7), generator=generator)
    input_ids[:, 0] = 0
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, -2:], attention_mask[1, -2:] = 1, 0
    if video:
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values_videos": torch.randn(2, 3, 3, 32, 32, generator=generator),
        }
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.randn(2, 3, 32, 32, generator=generator),
    }


def build(model_class):
    torch.manual_seed(0)
    config = tiny_config(id2label={index: f"answer {index}" for index in range(NUM_ANSWERS)})
    return model_class(config).eval()


def assert_matches_eager(model, exported, inputs, names):
    with torch.no_grad():
        expected = model(**inputs)
        actual = exported.module()(**inputs)
    for name in names:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_base_model_exports_and_matches_eager(video):
    model = build(SCLModel)
    exported = torch.export.export(model, args=(), kwargs=make_inputs(0, video))
    names = ("text_features", "image_features", "pooler_output", "text_embeds", "image_embeds")
    assert_matches_eager(model, exported, make_inputs(0, video), names)
    # The program is not specialised to the traced values: new ids, mask and pixels of the same shapes.
    new_inputs = make_inputs(1, video)
    new_inputs["attention_mask"][0, -3:] = 0
    assert_matches_eager(model, exported, new_inputs, names)


def test_vqa_head_exports_and_matches_eager():
    model = build(SCLForQuestionAnswering)
    exported = torch.export.export(model, args=(), kwargs=make_inputs(0, video=False))
    assert_matches_eager(model, exported, make_inputs(0, video=False), ("logits",))
    assert_matches_eager(model, exported, make_inputs(2, video=False), ("logits",))
    with torch.no_grad():
        assert exported.module()(**make_inputs(0, video=False))["logits"].shape == (2, NUM_ANSWERS)
