"""Hub publishing: the generated model card, complete `auto_map`s, and a push → fresh-process load round trip through
a local fake Hub (`fake_hub.py`) that a process without `transformers_scl` reads with `trust_remote_code=True`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from fake_hub import FakeHub
from huggingface_hub import ModelCard

from transformers_scl import modeling_scl
from transformers_scl.hub import model_card, write_model_card

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = (REPO_ROOT / "MODEL_CARD.md").read_text(encoding="utf-8")

# Every SCL model class and the Auto class that loads it from the Hub, if it has one.
MODEL_CLASSES = {
    "SCLModel": "AutoModel",
    "SCLForPreTraining": "AutoModelForPreTraining",
    "SCLForQuestionAnswering": "AutoModelForVisualQuestionAnswering",
    "SCLForImagesAndTextClassification": None,
    "SCLForImageTextRetrieval": None,
    "SCLForZeroShotImageClassification": "AutoModelForZeroShotImageClassification",
}


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = {"id2label": {0: "yes", 1: "no", 2: "two"}} if name == "SCLForQuestionAnswering" else {}
    return getattr(modeling_scl, name)(tiny_config(**kwargs)).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------------


def test_card_metadata_is_valid_yaml_describing_the_task():
    card = ModelCard(model_card(_model("SCLForQuestionAnswering"), repo_id="user/scl-vqa"))
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "visual-question-answering"
    assert data["metrics"] == ["accuracy"]
    assert data["datasets"] == ["coco", "visual_genome", "conceptual_captions", "sbu_captions", "vqav2"]
    assert (data["license"], data["license_name"], data["base_model"]) == ("other", "unknown", "jiyatai/SCL")
    assert {"scl", "vision-language", "custom_code"} <= set(data["tags"])


def test_card_metadata_can_be_overridden():
    text = model_card(_model("SCLModel"), base_model="user/scl-base", license="apache-2.0", datasets=["my/data"])
    data = yaml.safe_load(text.split("---")[1])
    assert (
        data["base_model"] == "user/scl-base" and data["license"] == "apache-2.0" and data["datasets"] == ["my/data"]
    )
    assert "license_name" not in data


def test_card_facts_describe_the_model_and_the_run():
    model = _model("SCLForPreTraining")
    text = model_card(model, training_facts={"Pre-training steps": "100k", "Batch size": 4096})
    assert "# SCL (SCLForPreTraining)\n" in text
    assert (
        "| Vision tower | CLIP ViT: 2 blocks, width 32, 4 heads, patch 8, 32×32 input (4×4 patches), up to 8 frames |"
        in text
    )
    assert "| Fusion | 2 + 2 co-attention layers, width 32, 4 heads, 2 token types |" in text
    assert "MLM (weight 1), ITM (weight 1), ITC (weight 0.5), MVSC (weight 1), MLSC (weight 1)" in text
    assert "| ITC temperature (learned) | 0.0700 |" in text
    assert "| Pre-training steps | 100k |" in text and "| Batch size | 4096 |" in text
    assert f"| Parameters | {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M |" in text
    assert "This repository holds an SCL model (`SCLForPreTraining`) saved with transformers-scl." in text
    assert "This model was not converted from an original checkpoint." in text


def test_card_of_a_converted_checkpoint_names_its_source_and_notes():
    text = model_card(
        _model("SCLForPreTraining"),
        source_checkpoint="MGSC-100k.ckpt",
        checkpoint_metadata={"epoch": 41},
        training_config={"loss_names": {"mlm": 1, "scl": 1}, "image_size": 288, "unlisted_key": 1},
        conversion_notes=["Dropped 2 key(s): the RoBERTa pooler."],
    )
    assert "# SCL (SCLForPreTraining), converted from `MGSC-100k.ckpt`" in text
    assert "original SCL checkpoint `MGSC-100k.ckpt` (Hub repo [`jiyatai/SCL`]" in text
    assert "| Converted from | `MGSC-100k.ckpt` (epoch 41) |" in text
    assert "| `loss_names` | `mlm: 1, scl: 1` |" in text and "unlisted_key" not in text
    assert "- Dropped 2 key(s): the RoBERTa pooler." in text


def test_card_usage_loads_with_the_auto_class_or_the_package():
    vqa = model_card(_model("SCLForQuestionAnswering"), repo_id="user/scl-vqa")
    assert 'AutoModelForVisualQuestionAnswering.from_pretrained("user/scl-vqa", trust_remote_code=True)' in vqa
    assert 'pipeline("visual-question-answering", model="user/scl-vqa", trust_remote_code=True)' in vqa
    retrieval = model_card(_model("SCLForImageTextRetrieval"), repo_id="user/scl-rt")
    assert "from transformers_scl import SCLForImageTextRetrieval" in retrieval
    assert "pipeline(" not in retrieval


def test_card_keeps_the_template_text_outside_the_regions():
    text = model_card(_model("SCLModel"))
    for heading in ("## Model description", "## Results reported in the paper", "## Citation"):
        assert heading in text
    assert "| VQAv2 test-dev | 78.72 |" in text and "MGSC-100k" not in text.split("## Model description")[0]


def test_template_without_a_region_is_rejected():
    broken = TEMPLATE.replace("<!-- scl:begin usage -->", "").replace("<!-- scl:end usage -->", "")
    with pytest.raises(ValueError, match=r"regions are \['conversion', 'facts', 'intro', 'title'\]"):
        model_card(_model("SCLModel"), template=broken)


def test_write_model_card_writes_readme(tmp_path):
    path = write_model_card(tmp_path, _model("SCLModel"), repo_id="user/x")
    assert path == tmp_path / "README.md" and 'from_pretrained("user/x"' in path.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# auto_map
# ---------------------------------------------------------------------------------------------------------------------


def test_saved_config_maps_every_registered_auto_class(tmp_path):
    _model("SCLForImageTextRetrieval").save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    for model_name, auto_name in MODEL_CLASSES.items():
        if auto_name is not None:
            assert auto_map.get(auto_name) == f"modeling_scl.{model_name}", auto_name
    assert auto_map["AutoConfig"] == "configuration_scl.SCLConfig"


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_saved_folder_holds_the_code_its_auto_map_points_to(tmp_path, name):
    if not hasattr(modeling_scl, name):
        pytest.skip(f"{name} is not in modeling_scl")
    _model(name).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    modules = {reference.split(".")[0] for reference in auto_map.values()}
    missing = sorted(module for module in modules if not (tmp_path / f"{module}.py").is_file())
    assert not missing, f"{name}.save_pretrained writes an auto_map naming {missing} without the code"


def test_saved_processor_maps_auto_processor(tmp_path, tokenizer):
    from transformers_scl.conversion.convert_original import build_processor

    processor = build_processor(tokenizer.name_or_path, tiny_config())
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_scl.SCLProcessor"
    assert (tmp_path / "processing_scl.py").is_file()


# ---------------------------------------------------------------------------------------------------------------------
# Round trip through a fake Hub, loading in a process that never imports transformers_scl
# ---------------------------------------------------------------------------------------------------------------------

# Shared by both processes: one deterministic forward per class, on a batch of two (image, text) pairs.
TASK_FORWARD = """
import torch

def task_forward(model, inputs):
    name = type(model).__name__
    ids = inputs["input_ids"]
    with torch.no_grad():
        if name == "SCLModel":
            return model(**inputs).pooler_output
        if name == "SCLForPreTraining":
            labels = torch.full_like(ids, -100)
            labels[:, 1] = ids[:, 1]
            return model(**inputs, mlm_input_ids=ids, mlm_labels=labels, mlsc_input_ids=ids,
                         itm_labels=torch.tensor([1, 0]), itm_negative_indices=torch.tensor([1, 0]),
                         patch_keep_indices=torch.tensor([[0, 5, 9], [3, 4, 15]])).loss
        if name == "SCLForImagesAndTextClassification":
            pixels = inputs["pixel_values"]
            return model(input_ids=ids, attention_mask=inputs["attention_mask"],
                         pixel_values=torch.stack([pixels, pixels.flip(0)], 1)).logits
        if name == "SCLForImageTextRetrieval":
            return model(**inputs, negative_text_indices=torch.tensor([[1], [0]]), return_loss=True).loss
        if name == "SCLForZeroShotImageClassification":
            return model(**inputs).logits_per_image
        return model(**inputs).logits

def example_images():
    import numpy as np
    from PIL import Image
    ramp = np.linspace(0, 255, 40 * 48 * 3).reshape(40, 48, 3).astype(np.uint8)
    return [Image.fromarray(ramp), Image.fromarray(ramp[::-1].copy())]

TEXTS = ["a red circle to the left of a blue square", "two yellow squares"]
"""

PUSH_SCRIPT = """
import json, sys
import torch
from transformers_scl import SCLConfig, modeling_scl
from transformers_scl.conversion.convert_original import build_processor
from transformers_scl.hub import push_to_hub

config_dict, tokenizer_dir, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
processor = build_processor(tokenizer_dir, SCLConfig.from_dict(config_dict))
inputs = processor(images=example_images(), text=TEXTS, return_tensors="pt")
expected = {"inputs": dict(inputs)}
for name in json.loads(sys.argv[4]):
    torch.manual_seed(0)
    kwargs = {"id2label": {0: "yes", 1: "no", 2: "two"}} if name == "SCLForQuestionAnswering" else {}
    model = getattr(modeling_scl, name)(SCLConfig.from_dict({**config_dict, **kwargs})).eval()
    expected[name] = task_forward(model, inputs)
    model.push_to_hub(f"user/tiny-{name}")  # transformers' own push, one repo per class
    if name == "SCLForQuestionAnswering":
        processor.push_to_hub(f"user/tiny-{name}")
    if name == "SCLForPreTraining":  # our one-commit push of model + processor + card
        push_to_hub(model, "user/tiny-card", processor=processor, training_facts={"Batch size": 2})
torch.save(expected, out)
"""

LOAD_SCRIPT = """
import json, sys
import torch
import transformers
from huggingface_hub import ModelCard
from transformers.dynamic_module_utils import get_class_from_dynamic_module

expected = torch.load(sys.argv[1], weights_only=False)
report = {}
for name, auto_name in json.loads(sys.argv[2]).items():
    repo = f"user/tiny-{name}"
    if auto_name is not None:
        model = getattr(transformers, auto_name).from_pretrained(repo, trust_remote_code=True)
    else:  # a head without an Auto class: its class from the repo's code
        model = get_class_from_dynamic_module(f"modeling_scl.{name}", repo).from_pretrained(repo)
    same = bool(torch.equal(task_forward(model.eval(), expected["inputs"]), expected[name]))
    report[name] = [type(model).__name__, type(model).__module__, same]

for repo in ("user/tiny-SCLForQuestionAnswering", "user/tiny-card"):
    processor = transformers.AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    inputs = processor(images=example_images(), text=TEXTS, return_tensors="pt")
    report[repo] = [type(processor).__name__, all(torch.equal(inputs[k], v) for k, v in expected["inputs"].items())]
report["base"] = type(transformers.AutoModel.from_pretrained("user/tiny-SCLForQuestionAnswering", trust_remote_code=True)).__name__
card = transformers.AutoModelForPreTraining.from_pretrained("user/tiny-card", trust_remote_code=True).eval()
report["card_output"] = bool(torch.equal(task_forward(card, expected["inputs"]), expected["SCLForPreTraining"]))
report["card_tags"] = ModelCard.load("user/tiny-card").data.tags
report["imported_transformers_scl"] = any(m.startswith("transformers_scl") for m in sys.modules)
print(json.dumps(report))
"""


def _hub_env(endpoint: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE" and not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(home),
        HF_TOKEN="hf_fake_token",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH="",
    )
    return env


def _run(script: str, args: list[str], env: dict, cwd: Path) -> str:
    path = cwd / "script.py"
    path.write_text(textwrap.dedent(TASK_FORWARD) + textwrap.dedent(script))
    result = subprocess.run([sys.executable, str(path), *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow
def test_models_and_processor_pushed_to_the_hub_load_by_repo_id_without_the_package(tmp_path, tokenizer):
    names = [name for name in MODEL_CLASSES if hasattr(modeling_scl, name)]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config().to_dict()))
    push_dir, load_dir = tmp_path / "push", tmp_path / "load"
    push_dir.mkdir(), load_dir.mkdir()

    with FakeHub() as hub:
        expected_path = str(tmp_path / "expected.pt")
        _run(
            PUSH_SCRIPT,
            [str(config_path), tokenizer.name_or_path, expected_path, json.dumps(names)],
            _hub_env(hub.endpoint, tmp_path / "push_home"),
            push_dir,
        )
        # A separate cache, so the loader downloads everything from the fake Hub.
        stdout = _run(
            LOAD_SCRIPT,
            [expected_path, json.dumps({n: MODEL_CLASSES[n] for n in names})],
            _hub_env(hub.endpoint, tmp_path / "load_home"),
            load_dir,
        )
        assert not hub.unhandled, hub.unhandled
    report = json.loads(stdout.strip().splitlines()[-1])

    assert report["imported_transformers_scl"] is False
    for name in names:
        loaded_name, module, same_output = report[name]
        assert loaded_name == name and module.startswith("transformers_modules.user.tiny"), report[name]
        assert same_output, f"{name} pulled from the Hub computes a different output"
    assert report["user/tiny-SCLForQuestionAnswering"] == ["SCLProcessor", True]
    assert report["user/tiny-card"] == ["SCLProcessor", True]
    assert report["base"] == "SCLModel"
    assert report["card_output"] is True and "scl" in report["card_tags"]
    card_repo = hub.repos["user/tiny-card"]
    files = set(card_repo.commits[-1].files)
    assert {"README.md", "config.json", "model.safetensors", "modeling_scl.py", "processor_config.json"} <= files
    assert len(card_repo.commits) == 2  # the repo's initial commit + one commit with everything
