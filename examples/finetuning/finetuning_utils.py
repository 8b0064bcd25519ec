"""What the SCL fine-tuning scripts share beyond the package's `transformers_scl.training` (arguments, optimizer,
loss-term logging): model and processor loading at the fine-tuning resolution, the shared data arguments, the
training augmentation.

Each `run_*.py` script imports this module from its own folder, so copy the folder, not a single script.
"""

import logging
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.transforms import v2
from transformers import AutoConfig, AutoTokenizer

from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.modeling_scl import resize_position_embedding
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.training import SCLDataArguments, SCLTrainer, SCLTrainingArguments
from transformers_scl.transforms import finetuning_transform
from transformers_scl.video_processing_scl import SCLVideoProcessor

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    """Where the starting weights and the processor come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An SCL checkpoint: a pre-training output (`run_pretraining.py`), a converted original checkpoint "
            "(`scl-convert-original`) or a fine-tuned model. Task heads missing from it are newly initialised."
        },
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "An SCL config (folder or config.json) to train from scratch instead (tests, ablations)."},
    )
    processor_name: str | None = field(
        default=None, metadata={"help": "Folder or Hub id of the SCLProcessor (default: `model_name_or_path`)."}
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and data are stored."})

    def __post_init__(self):
        if (self.model_name_or_path is None) == (self.config_name is None):
            raise ValueError("Pass exactly one of --model_name_or_path (fine-tune) or --config_name (from scratch).")
        if self.processor_name is None:
            if self.model_name_or_path is None:
                raise ValueError("--config_name trains from scratch and needs --processor_name for the tokenizer.")
            self.processor_name = self.model_name_or_path


def set_image_size(model: nn.Module, image_size: int) -> None:
    """Fine-tune at `image_size`: resize the position table bicubically once, as the reference does when loading a
    pre-trained checkpoint at a new resolution (spec §3.2 `adapt_position_encoding`, e.g. 288 -> 384 px)."""
    config = model.config
    vision_config = config.vision_config
    if image_size % vision_config.patch_size:
        raise ValueError(f"--image_size {image_size} is not a multiple of the patch size {vision_config.patch_size}.")
    if vision_config.image_size == image_size:
        config.image_size = image_size
        return
    embeddings = model.base_model.vision_model.embeddings
    old = embeddings.position_embedding
    grid = image_size // vision_config.patch_size
    new = nn.Embedding(grid * grid + 1, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(resize_position_embedding(old.weight, grid))
    logger.info(f"Resized position embeddings from {vision_config.image_size}px to {image_size}px ({grid}x{grid}).")
    embeddings.position_embedding = new
    embeddings.num_patches = grid * grid
    vision_config.image_size = image_size
    config.image_size = image_size


def load_model(model_class: type, model_args: ModelArguments, image_size: int, **config_overrides) -> nn.Module:
    """`model_class` from a checkpoint (missing task heads are newly initialised) or from a config, at `image_size`."""
    if model_args.model_name_or_path is not None:
        model = model_class.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            cache_dir=model_args.cache_dir,
            **config_overrides,
        )
    else:
        config = AutoConfig.from_pretrained(model_args.config_name, **config_overrides)
        model = model_class(config)
    set_image_size(model, image_size)
    return model


def load_processor(model_args: ModelArguments, image_size: int, num_frames: int | None = None) -> SCLProcessor:
    """The SCLProcessor, its eval transform set to `image_size` (and `num_frames` for videos), so the saved processor
    preprocesses exactly as evaluation did."""
    # The sub-processors are loaded by class, so this works whether or not the Auto classes know SCL.
    kwargs = {"revision": model_args.model_revision, "cache_dir": model_args.cache_dir}
    processor = SCLProcessor(
        SCLImageProcessor.from_pretrained(model_args.processor_name, **kwargs),
        SCLVideoProcessor.from_pretrained(model_args.processor_name, **kwargs),
        AutoTokenizer.from_pretrained(model_args.processor_name, **kwargs),
    )
    size = {"height": image_size, "width": image_size}
    processor.image_processor.size = size
    processor.video_processor.size = size
    if num_frames is not None:
        processor.video_processor.num_frames = num_frames
    return processor


def train_image_transform(image_size: int, randaugment: bool) -> v2.Compose:
    """spec §3.2 training augmentation (`clip_randaug`): RandAugment(2, 9) + RandomResizedCrop(0.9-1.0), no flip.

    `randaugment=False` keeps only the crop: the synthetic data's answers and captions are colours, which
    RandAugment's colour operations (solarize, posterize, colour) would falsify.
    """
    transform = finetuning_transform(image_size)
    if not randaugment:
        transform = v2.Compose([t for t in transform.transforms if not isinstance(t, v2.RandAugment)])
    return transform


def use_randaugment(randaugment: bool | None, dataset: str) -> bool:
    """The `--randaugment` default: on (the reference recipe), except for the synthetic colour-shape data."""
    return dataset != "synthetic" if randaugment is None else randaugment


@dataclass(kw_only=True)
class FinetuningDataArguments(SCLDataArguments):
    """The data arguments the fine-tuning scripts share (each script adds its sources and sets its defaults)."""

    dataset_config_name: str | None = field(default=None, metadata={"help": "`datasets` configuration name."})
    synthetic_train_size: int = field(default=2000, metadata={"help": "Synthetic training examples."})
    synthetic_eval_size: int = field(default=200, metadata={"help": "Synthetic evaluation examples."})
    synthetic_max_objects: int = field(default=3, metadata={"help": "Shapes per synthetic scene (1-3)."})
    randaugment: bool | None = field(
        default=None,
        metadata={
            "help": "RandAugment in the training augmentation (spec §3.2). Default: on, off for synthetic data."
        },
    )


@dataclass
class SCLFinetuningArguments(SCLTrainingArguments):
    """`SCLTrainingArguments` (learning-rate multipliers, `--num_threads`, AdamW betas (0.9, 0.98), weight decay
    0.01, 10% warm-up) with the fine-tuning recipe of spec §3.2 as defaults; each script sets its task's column."""

    lr_mult_head: float = field(default=10.0, metadata={"help": "Learning-rate multiplier of the task head."})
    lr_mult_cross_modal: float = field(
        default=10.0, metadata={"help": "Learning-rate multiplier of the co-attention fusion (`cross_modal*`)."}
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "spec §3.2: 10 epochs for every task."})


# SCL's optimizer (spec §3.2 parameter groups) and every loss term of the model output in the training logs.
SCLFinetuningTrainer = SCLTrainer
