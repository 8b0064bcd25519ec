"""`transformers_scl.training`: held-out loss-term means, the train/evaluate/save steps, and FSDP parameter gathering."""

import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from transformers import PreTrainedConfig

from transformers_scl.training import SCLTrainer, SCLTrainingArguments, full_parameters, train_evaluate_save


class TermsModel(nn.Module):
    """Loss terms that are known functions of the batch: `mlm` = w·mean(x), `itc` = 2·`mlm`, and an ITM accuracy."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.config = PreTrainedConfig()  # what `Trainer.create_model_card` reads

    def forward(self, x):
        mlm = self.weight * x.float().mean()
        itc = 2 * mlm
        return {"loss": mlm + itc, "loss_info": {"mlm": mlm, "itc": itc}, "itm_accuracy": (x > 2).float().mean()}


def rows(*values) -> list[dict]:
    return [{"x": torch.tensor(float(value))} for value in values]


def collate(examples: list[dict]) -> dict:
    return {"x": torch.stack([example["x"] for example in examples])}


def trainer_for(tmp_path, **kwargs) -> SCLTrainer:
    defaults = {"use_cpu": True, "report_to": "none", "per_device_eval_batch_size": 2, "disable_tqdm": True}
    args = SCLTrainingArguments(output_dir=str(tmp_path), **{**defaults, **kwargs})
    return SCLTrainer(model=TermsModel(), args=args, train_dataset=rows(*range(6)), data_collator=collate)


def test_evaluate_loss_terms_averages_each_term_over_full_batches_of_each_data_set(tmp_path, caplog):
    trainer = trainer_for(tmp_path)
    trainer.model.eval()
    with caplog.at_level(logging.WARNING, logger="transformers_scl.training"):
        means = trainer.evaluate_loss_terms(
            {"images": rows(0, 1, 2, 3, 4, 5), "videos": rows(10, 11, 12), "few": rows(7)}
        )
    # Batches [0, 1], [2, 3], [4, 5], [10, 11] (incomplete batches are dropped): mean x 0.5, 2.5, 4.5, 10.5.
    assert means == pytest.approx({"loss": 13.5, "loss_itc": 9.0, "loss_mlm": 4.5, "accuracy_itm": 0.625})
    assert "Too few few eval examples" in caplog.text


def test_train_evaluate_save_saves_the_run_and_resumes_from_the_last_checkpoint(tmp_path, caplog):
    common = {"do_train": True, "do_eval": True, "per_device_train_batch_size": 2, "save_steps": 1, "logging_steps": 1}
    trainer = trainer_for(tmp_path, max_steps=2, **common)
    metrics = train_evaluate_save(trainer, trainer.args, {"tags": ["scl-test"]}, 6, print_metrics=False)
    assert metrics["train_samples"] == 6 and "train_loss" in metrics
    assert not any(name.startswith("eval_") for name in metrics)  # no eval data set: no evaluation
    assert json.loads((tmp_path / "train_results.json").read_text())["train_samples"] == 6
    assert "scl-test" in (tmp_path / "README.md").read_text()  # the model card

    resumed = trainer_for(tmp_path, max_steps=3, **common)
    with caplog.at_level(logging.WARNING, logger="transformers_scl.training"):
        train_evaluate_save(resumed, resumed.args, {}, print_metrics=False)
    assert f"resuming the run from {tmp_path / 'checkpoint-2'}" in caplog.text
    assert resumed.state.global_step == 3
    assert [entry["step"] for entry in resumed.state.log_history if "loss" in entry] == [1, 2, 3]


def test_full_parameters_leaves_an_unwrapped_model_alone():
    model = nn.Linear(3, 2)
    weight = model.weight
    with full_parameters(model):
        assert model.weight is weight
    assert model.weight is weight


FSDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.tensor import DTensor
    from transformers_scl.training import full_parameters

    dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=0, world_size=1)
    x = torch.ones(1, 4)

    # FSDP2: the root unit owns the second layer, whose parameters only its forward hook gathers.
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    fully_shard(model[0])
    fully_shard(model)
    assert isinstance(model[1].weight, DTensor)
    with full_parameters(model):
        assert not isinstance(model[1].weight, DTensor)
        assert model[1](x).shape == (1, 2)  # callable outside the wrapped forward
    assert isinstance(model[1].weight, DTensor)

    # FSDP1: flat parameters outside, the module's own shapes inside.
    model = FullyShardedDataParallel(nn.Linear(4, 4), device_id=torch.device("cpu"))
    assert [tuple(p.shape) for p in model.parameters()] == [(20,)]
    with full_parameters(model):
        assert [tuple(p.shape) for p in model.parameters()] == [(4, 4), (4,)]
    assert [tuple(p.shape) for p in model.parameters()] == [(20,)]
    dist.destroy_process_group()
    print("ok")
    """
)


@pytest.mark.slow
def test_full_parameters_gathers_fsdp1_and_fsdp2_parameters(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FSDP_SCRIPT, str(tmp_path / "store")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
