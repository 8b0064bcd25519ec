"""The VQA pipeline through transformers' custom-pipeline mechanism, on every kind of folder a VQA model is saved to.

transformers (>= 5.23) has no `visual-question-answering` task of its own. Every folder that `SCLForQuestionAnswering`
saves names `SCLVisualQuestionAnsweringPipeline` under `custom_pipelines` in its config and carries `pipelines.py`, so
`pipeline("visual-question-answering", model=folder, trust_remote_code=True)` builds it, with or without the package;
with the package, `pipeline_class=SCLVisualQuestionAnsweringPipeline` replaces remote code. Importing the package
must leave transformers' own tasks unchanged.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tokenizer, tiny_config
from fake_hub import FakeHub
from PIL import Image
from synthetic_original import NUM_VQA_LABELS, save_checkpoint
from transformers import AutoImageProcessor, AutoTokenizer, pipeline

from transformers_scl import hub
from transformers_scl.conversion import main as convert_main
from transformers_scl.conversion.convert_original import build_processor
from transformers_scl.modeling_scl import SCLForQuestionAnswering
from transformers_scl.pipelines import SCLVisualQuestionAnsweringPipeline

TASK = "visual-question-answering"
ANSWERS = ["red", "blue", "green", "two", "three", "yes", "no"]
QUESTION = "what color is the circle?"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "finetuning"


def example_image() -> Image.Image:
    ramp = np.linspace(0, 255, 40 * 48 * 3).reshape(40, 48, 3).astype(np.uint8)
    return Image.fromarray(ramp)


def answers_of(vqa) -> list[list]:
    return [
        [answer["answer"], round(answer["score"], 5)] for answer in vqa(example_image(), question=QUESTION, top_k=4)
    ]


def expected_answers(folder: Path) -> list[list]:
    """The answers of the pipeline built by hand from the folder's model and processor, in this process."""
    model = SCLForQuestionAnswering.from_pretrained(folder).eval()
    tokenizer, image_processor = AutoTokenizer.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    return answers_of(
        SCLVisualQuestionAnsweringPipeline(model=model, tokenizer=tokenizer, image_processor=image_processor)
    )


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(str(path))
    return str(path)


@pytest.fixture(scope="module")
def vqa_model():
    torch.manual_seed(0)
    return SCLForQuestionAnswering(tiny_config(id2label=dict(enumerate(ANSWERS)))).eval()


def save_with_transformers(model, processor, folder):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def save_with_hub_module(model, processor, folder):
    hub.save_pretrained(model, folder, processor)


def save_the_pipeline(model, processor, folder):
    SCLVisualQuestionAnsweringPipeline(
        model=model, tokenizer=processor.tokenizer, image_processor=processor.image_processor
    ).save_pretrained(folder)


def save_with_run_vqa(model, processor, folder):
    """`examples/finetuning/run_vqa.py`: two training steps from the tiny config on synthetic VQA data."""
    root = folder.parent / f"{folder.name}-inputs"
    model.config.save_pretrained(root / "config")
    processor.save_pretrained(root / "processor")
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the script imports `finetuning_utils` from its folder
    import importlib.util

    spec = importlib.util.spec_from_file_location("pipelines_run_vqa", EXAMPLES / "run_vqa.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # Trainer pickles the script's TrainingArguments subclass by module name
    spec.loader.exec_module(script)
    arguments = {
        "config_name": root / "config",
        "processor_name": root / "processor",
        "output_dir": folder,
        "dataset": "synthetic",
        "synthetic_train_size": 16,
        "synthetic_eval_size": 8,
        "max_steps": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "image_size": 32,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": "true",
        "dataloader_pin_memory": "false",
        "seed": 0,
    }
    script.main(["--do_train"] + [item for key, value in arguments.items() for item in (f"--{key}", str(value))])


def save_with_the_converter(model, processor, folder):
    """`scl-convert-original` on a synthetic VQA checkpoint in the reference's layout."""
    checkpoint = folder.parent / f"{folder.name}.ckpt"
    save_checkpoint(checkpoint, heads="vqa")
    labels = folder.parent / f"{folder.name}-answers.json"
    labels.write_text(json.dumps([f"answer {i}" for i in range(NUM_VQA_LABELS)]))
    tokenizer = processor.tokenizer.name_or_path
    arguments = [str(checkpoint), str(folder), "--tokenizer", tokenizer, "--label-names", str(labels)]
    assert convert_main([*arguments, "--text-num-heads", "4", "--vision-num-heads", "4", "--no-verify"]) in (0, None)


SAVERS = {
    "save_pretrained": save_with_transformers,
    "hub.save_pretrained": save_with_hub_module,
    "pipeline.save_pretrained": save_the_pipeline,
    "run_vqa.py": save_with_run_vqa,
    "scl-convert-original": save_with_the_converter,
}


# Kinds of folder whose making is a training run (marked slow with the tests that use them).
SLOW_KINDS = {"run_vqa.py"}
KINDS = [pytest.param(kind, marks=pytest.mark.slow) if kind in SLOW_KINDS else kind for kind in sorted(SAVERS)]


class Folders:
    """One folder per way of saving a VQA model, each made on first use."""

    def __init__(self, root: Path, tokenizer_dir: str, model):
        self.root, self.model = root, model
        self.processor = build_processor(tokenizer_dir, model.config)

    def __getitem__(self, kind: str) -> Path:
        folder = self.root / kind
        if not folder.is_dir():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                SAVERS[kind](self.model, self.processor, folder)
            finally:
                torch.set_num_threads(threads)
        return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer_dir, vqa_model) -> Folders:
    return Folders(tmp_path_factory.mktemp("vqa-folders"), tokenizer_dir, vqa_model)


@pytest.mark.parametrize("kind", KINDS)
def test_every_saved_vqa_folder_names_the_pipeline_and_carries_its_code(folders, kind):
    config = json.loads((folders[kind] / "config.json").read_text())
    assert config["custom_pipelines"] == {
        TASK: {
            "impl": "pipelines.SCLVisualQuestionAnsweringPipeline",
            "pt": ["AutoModelForVisualQuestionAnswering"],
            "type": "multimodal",
        }
    }
    assert config["auto_map"]["AutoModelForVisualQuestionAnswering"] == "modeling_scl.SCLForQuestionAnswering"
    assert (folders[kind] / "pipelines.py").is_file() and (folders[kind] / "modeling_scl.py").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_vqa_pipeline_loads_by_task_name_from_every_kind_of_folder(folders, kind):
    expected = expected_answers(folders[kind])
    remote = pipeline(TASK, model=str(folders[kind]), trust_remote_code=True)
    assert type(remote).__name__ == "SCLVisualQuestionAnsweringPipeline"
    assert answers_of(remote) == expected
    local = pipeline(TASK, model=str(folders[kind]), pipeline_class=SCLVisualQuestionAnsweringPipeline)
    assert type(local) is SCLVisualQuestionAnsweringPipeline
    assert answers_of(local) == expected


def test_vqa_pipeline_without_remote_code_or_pipeline_class_is_refused_by_transformers(folders):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(TASK, model=str(folders["save_pretrained"]))


def test_non_vqa_heads_name_no_pipeline(tmp_path, vqa_model):
    """A base model saved from a VQA model's config must not point the VQA pipeline at a folder without the head."""
    from transformers_scl import SCLModel

    SCLModel(vqa_model.config).save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "pipelines.py").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Without the package: a fresh process in which `import transformers_scl` fails
# ---------------------------------------------------------------------------------------------------------------------

NO_PACKAGE = """
import importlib.abc, json, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers_scl":
            raise ImportError(f"{name} is blocked: this process runs without the package")

sys.meta_path.insert(0, Blocked())
try:
    import transformers_scl  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("transformers_scl is importable")

import numpy as np
from PIL import Image
from transformers import pipeline

ramp = np.linspace(0, 255, 40 * 48 * 3).reshape(40, 48, 3).astype(np.uint8)
report = {}
for model in sys.argv[1:]:
    vqa = pipeline("visual-question-answering", model=model, trust_remote_code=True)
    answers = vqa(Image.fromarray(ramp), question=QUESTION, top_k=4)
    report[model] = [type(vqa).__module__, [[a["answer"], round(a["score"], 5)] for a in answers]]
report["imported"] = sorted(m for m in sys.modules if m.startswith("transformers_scl"))
print(json.dumps(report))
""".replace("QUESTION", repr(QUESTION))


def _run_without_package(models: list[str], env: dict, cwd: Path) -> dict:
    script = cwd / "no_package.py"
    script.write_text(textwrap.dedent(NO_PACKAGE))
    result = subprocess.run(
        [sys.executable, str(script), *models], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_vqa_pipeline_runs_from_every_kind_of_folder_without_the_package(folders, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "home")}
    paths = {kind: folders[kind] for kind in SAVERS}
    report = _run_without_package([str(folder) for folder in paths.values()], env, tmp_path)
    assert report.pop("imported") == []
    for kind, folder in paths.items():
        module, answers = report[str(folder)]
        assert module.startswith("transformers_modules."), (kind, module)  # the folder's own pipelines.py
        assert answers == expected_answers(folder), kind


@pytest.mark.slow
def test_vqa_pipeline_runs_from_a_hub_repo_without_the_package(folders, tmp_path):
    """`model.push_to_hub` and `processor.push_to_hub` (transformers' own), then a fresh process pulls the repo."""
    from test_hub import _hub_env

    push = textwrap.dedent(
        """
        import sys
        from transformers import AutoProcessor
        from transformers_scl import SCLForQuestionAnswering
        SCLForQuestionAnswering.from_pretrained(sys.argv[1]).push_to_hub("user/scl-vqa")
        AutoProcessor.from_pretrained(sys.argv[1]).push_to_hub("user/scl-vqa")
        """
    )
    (tmp_path / "push.py").write_text(push)
    with FakeHub() as fake:
        env = _hub_env(fake.endpoint, tmp_path / "push_home")
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the pushing process uses the package under test
        folder = str(folders["save_pretrained"])
        result = subprocess.run(
            [sys.executable, str(tmp_path / "push.py"), folder], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-4000:]
        report = _run_without_package(["user/scl-vqa"], _hub_env(fake.endpoint, tmp_path / "load_home"), tmp_path)
        assert not fake.unhandled, fake.unhandled
    files = set(fake.repos["user/scl-vqa"].commits[-1].files)
    assert {"config.json", "modeling_scl.py", "pipelines.py"} <= files
    assert report.pop("imported") == []
    module, answers = report["user/scl-vqa"]
    assert module.startswith("transformers_modules.") and answers == expected_answers(folders["save_pretrained"])


# ---------------------------------------------------------------------------------------------------------------------
# transformers' own pipelines are untouched
# ---------------------------------------------------------------------------------------------------------------------

TASK_TABLE = """
import json, sys
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY, SUPPORTED_TASKS

def table():
    tasks = {
        task: [getattr(info["impl"], "__name__", str(info["impl"])), [c.__name__ for c in info.get("pt", ())]]
        for task, info in PIPELINE_REGISTRY.supported_tasks.items()
    }
    return {"tasks": tasks, "aliases": dict(PIPELINE_REGISTRY.task_aliases), "supported": sorted(SUPPORTED_TASKS)}

def outcome(task, model):
    try:
        return type(pipeline(task, model=model)).__name__
    except Exception as error:
        return f"{type(error).__name__}: {error}"

def state():
    model, task = sys.argv[1:]
    return {**table(), task: outcome(task, model), "text-classification": outcome("text-classification", model)}

before = state()
import transformers_scl  # noqa: F401
print(json.dumps({"before": before, "after": state()}))
"""


@pytest.mark.slow
def test_importing_the_package_leaves_transformers_pipelines_unchanged(tmp_path, tokenizer_dir):
    """A non-SCL model (a tiny RoBERTa classifier) gets the same pipelines, and errors, before and after the import."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=400, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    RobertaForSequenceClassification(config).save_pretrained(tmp_path / "roberta")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "roberta")
    (tmp_path / "table.py").write_text(textwrap.dedent(TASK_TABLE))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "table.py"), str(tmp_path / "roberta"), TASK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["after"] == report["before"]
    assert report["before"]["text-classification"] == "TextClassificationPipeline"
    assert report["before"][TASK].startswith("KeyError")  # transformers' own answer for a non-SCL model
    assert TASK not in report["after"]["tasks"]
