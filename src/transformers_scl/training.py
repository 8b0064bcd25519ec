"""What SCL's `Trainer` scripts share: training arguments with the learning-rate multipliers and a thread count, a
`Trainer` that builds SCL's optimizer and logs every loss term (and averages them on held-out data), the common data
arguments, logging setup, the train/evaluate/save steps (`train_evaluate_save`) and FSDP parameter gathering for calls
outside the wrapped forward (`full_parameters`).

    args = SCLTrainingArguments(output_dir="out", lr_mult_head=10, num_threads=1)
    trainer = SCLTrainer(model=model, args=args, train_dataset=..., data_collator=...)
    trainer.train()  # logs `loss` and, per logging interval, `loss_mlm`, `loss_itc`, ..., `accuracy_itm`, ...

Only public `Trainer` hooks and methods are used (`create_optimizer`, `compute_loss`, `log`,
`autocast_smart_context_manager`), so the class survives transformers releases and can be mixed into any `Trainer`
subclass.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch
import transformers
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .data.samplers import ModalityGroupedBatchSampler, RankSlicedBatchSampler
from .optimization import create_optimizer

logger = logging.getLogger(__name__)

__all__ = [
    "LossTermsMeter",
    "SCLDataArguments",
    "SCLTrainer",
    "SCLTrainingArguments",
    "full_parameters",
    "loss_terms",
    "setup_logging",
    "train_evaluate_save",
]


@dataclass
class SCLTrainingArguments(TrainingArguments):
    """`TrainingArguments` with SCL's optimiser defaults (spec §3.2, §4), its learning-rate multipliers and a thread
    count. The scripts subclass it to set their task's recipe as defaults."""

    lr_mult_head: float = field(
        default=5.0, metadata={"help": "Learning-rate multiplier of the task / MLM / ITM heads (spec §3.2)."}
    )
    lr_mult_cross_modal: float = field(
        default=5.0, metadata={"help": "Learning-rate multiplier of the co-attention fusion (`cross_modal*`)."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads of this process (`torch.set_num_threads`; default: torch's, usually one per "
            "core). On a shared or busy CPU, and for small models, 1 is often several times faster."
        },
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay; none on biases and norms."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2 (spec §3.2: 0.98)."})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Linear warm-up: a fraction of all steps if < 1 (spec: 10%%), else steps."}
    )
    # Examples are tokenised and decoded on the fly (`with_transform`), and the collators pick the model inputs.
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep False: the transforms and collators choose the model inputs."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_threads is not None:
            if self.num_threads < 1:
                raise ValueError(f"--num_threads must be at least 1, got {self.num_threads}.")
            torch.set_num_threads(self.num_threads)


@dataclass(kw_only=True)
class SCLDataArguments:
    """Data arguments every script takes (each script's `DataArguments` adds its sources)."""

    max_seq_length: int = field(default=50, metadata={"help": "Text truncation length (spec §1.3: 50)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many evaluation rows."})


def setup_logging(training_args: TrainingArguments, logger: logging.Logger | None = None) -> None:
    """The transformers examples' logging: to stdout, at `--log_level` on the main process (warnings elsewhere)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    for name in (logger, logging.getLogger("transformers_scl")):
        if name is not None:
            name.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    (logger or logging.getLogger(__name__)).info(
        "Process %s of %s, device %s, %s torch threads",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        torch.get_num_threads(),
    )


def loss_terms(outputs) -> dict[str, torch.Tensor]:
    """The scalar loss terms and accuracies of a model output, by log name.

    `loss_info`'s entries become `loss_<name>` (pre-training: already weighted, they sum to `loss`), fields named
    `<name>_loss` become `loss_<name>` (retrieval: `loss_rank`, and `loss_itc` before its `itc_weight`), and fields
    named `<name>_accuracy` become `accuracy_<name>`.
    """
    terms = {}
    info = outputs.get("loss_info") if hasattr(outputs, "get") else None
    if info is not None:
        terms.update({f"loss_{name}": value for name, value in info.items() if value is not None})
    for key, value in outputs.items() if hasattr(outputs, "items") else ():
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            continue
        if key.endswith("_loss"):
            terms[f"loss_{key.removesuffix('_loss')}"] = value
        elif key.endswith("_accuracy"):
            terms[f"accuracy_{key.removesuffix('_accuracy')}"] = value
    return terms


class LossTermsMeter:
    """Running means of `loss_terms` over micro-batches; `pop_means` averages them over ranks too (every rank must
    call it at the same point, with the same terms) and starts afresh."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, outputs) -> None:
        for name, value in loss_terms(outputs).items():
            self.sums[name] = self.sums.get(name, 0.0) + value.detach().float()
            self.counts[name] = self.counts.get(name, 0) + 1

    def pop_means(self, accelerator=None) -> dict[str, float]:
        names = sorted(self.sums)
        if not names:
            return {}
        means = torch.stack([self.sums[name] / self.counts[name] for name in names])
        self.sums, self.counts = {}, {}
        if accelerator is not None and accelerator.num_processes > 1:
            means = accelerator.reduce(means.to(accelerator.device), reduction="mean")
        return dict(zip(names, means.tolist()))


@contextlib.contextmanager
def full_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Gather an FSDP-wrapped model's parameters for calls that bypass its wrapped `forward` (e.g. retrieval's
    `get_text_features`, which reads the embeddings and projections the root unit owns).

    FSDP1: `summon_full_params` without write-back; FSDP2: `unshard` the root module and `reshard` it afterwards
    (wrapped sub-modules gather their own shards in their forward hooks). Any other model: nothing to do.
    """
    if not torch.distributed.is_available():
        yield
        return
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if isinstance(model, FullyShardedDataParallel):
        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            yield
    elif isinstance(model, FSDPModule):
        model.unshard()
        try:
            yield
        finally:
            model.reshard()
    else:
        yield


class SCLTrainer(Trainer):
    """`Trainer` with SCL's optimizer and per-term loss logging.

    * The optimizer is [`~transformers_scl.optimization.create_optimizer`]: SCL's parameter groups (spec §3.2), heads
      x `lr_mult_head`, fusion x `lr_mult_cross_modal`, no decay on biases and norms; `--optim`, betas and epsilon
      from the arguments.
    * Every training log holds, next to `loss`, each loss term and accuracy of the model output (`loss_terms`),
      averaged over the logging interval, the gradient-accumulation micro-batches and the ranks, like `loss`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_terms = LossTermsMeter()

    def evaluate_loss_terms(self, datasets: dict[str, Dataset]) -> dict[str, float]:
        """Held-out means of every loss term (`loss_terms`) of the wrapped model, averaged over ranks, and `loss`, the
        sum of the `loss_*` terms.

        Each data set (e.g. one per modality) is cut into in-order, full global batches of
        `per_device_eval_batch_size` x world size, and each rank runs its slice of every batch: all ranks run the
        same batches of one data set at a time, as the cross-rank ITC / MVSC gathers need. Runs without gradients, in
        the model's current mode (call `eval()` first) and under `Trainer`'s autocast.
        """
        args, meter, model = self.args, LossTermsMeter(), self.model_wrapped
        for name, dataset in datasets.items():
            global_batch = args.per_device_eval_batch_size * args.world_size
            grouped = ModalityGroupedBatchSampler.from_lengths(
                [len(dataset)], global_batch, shuffle=False, drop_last=True
            )
            if len(grouped) == 0:
                logger.warning("Too few %s eval examples for one batch per rank: no eval losses.", name)
            sampler = RankSlicedBatchSampler(grouped, args.world_size, args.process_index)
            for batch in DataLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator):
                with torch.no_grad(), self.autocast_smart_context_manager():
                    meter.add(model(**{key: value.to(args.device) for key, value in batch.items()}))
        means = meter.pop_means(self.accelerator)
        losses = [value for name, value in means.items() if name.startswith("loss_")]
        return ({"loss": sum(losses)} if losses else {}) | means

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = create_optimizer(self.model if model is None else model, self.args)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            self.train_terms.add(outputs)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and "eval_loss" not in logs:  # a training log, which every rank makes (`loss` is gathered)
            logs.update(self.train_terms.pop_means(self.accelerator))
        super().log(logs, start_time)


def _checkpoint_to_resume(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint`, else the last checkpoint in `output_dir` (an interrupted run goes on), else None."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and os.path.isdir(training_args.output_dir):
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.warning("Checkpoint found: resuming the run from %s.", checkpoint)
    return checkpoint


def train_evaluate_save(
    trainer: Trainer,
    training_args: TrainingArguments,
    card_kwargs: dict,
    num_train_samples: int | None = None,
    num_eval_samples: int | None = None,
    *,
    print_metrics: bool = True,
) -> dict[str, float]:
    """The end of a `Trainer` script: train (`--resume_from_checkpoint`, else the last checkpoint in `output_dir`),
    save the model (and processor) and state, evaluate if there is an eval data set, save (and print) the metrics,
    then push with a model card of `card_kwargs`, or write the card. Returns the train and eval metrics."""
    metrics = {}
    if training_args.do_train:
        train_metrics = dict(trainer.train(resume_from_checkpoint=_checkpoint_to_resume(training_args)).metrics)
        trainer.save_model()  # also saves the processor (`processing_class`)
        trainer.save_state()
        if num_train_samples is not None:
            train_metrics["train_samples"] = num_train_samples
        metrics["train"] = train_metrics
    if training_args.do_eval and trainer.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate()
        if num_eval_samples is not None:
            metrics["eval"]["eval_samples"] = num_eval_samples
    for split, split_metrics in metrics.items():
        if print_metrics:
            trainer.log_metrics(split, split_metrics)
        trainer.save_metrics(split, split_metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card_kwargs)
    elif training_args.do_train:
        trainer.create_model_card(**card_kwargs)
    return {name: value for split_metrics in metrics.values() for name, value in split_metrics.items()}
