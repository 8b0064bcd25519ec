"""From a raw (media, text) example to model inputs, skipping (and counting) media that cannot be decoded.

`MediaTextTransform` is a `datasets` transform: `transform.apply_to(dataset)` attaches it lazily to a `Dataset`
(`with_transform`) or a streaming `IterableDataset` (`map`). For every row it tokenizes the text and decodes and
processes the image or video into `pixel_values` (3, H, W) or `pixel_values_videos` (F, 3, H, W).

Bad media in a large data set must neither crash a long run nor vanish silently. A row whose image or video cannot
be read or processed gets `None` pixels; the failure is logged with the file path and counted by a `SkipCounter`;
the collators drop such rows; `SkipCounter.summary()` (or `SkipReportCallback` in a `Trainer`) reports the count.
"""

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, IterableDataset
from datasets import Image as ImageFeature
from torch.utils.data import ConcatDataset
from transformers import TrainerCallback
from transformers.image_processing_base import ImageProcessingMixin
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import BaseVideoProcessor

from ..transforms import VideoTrainTransform, pretraining_transform

logger = logging.getLogger(__name__)

__all__ = ["MediaTextTransform", "PretrainingDatasets", "SkipCounter", "SkipReportCallback", "decode_image"]

PIXEL_KEYS = {"image": "pixel_values", "video": "pixel_values_videos"}
_STREAM_BATCH_SIZE = 8


class SkipCounter:
    """Counts the examples seen and skipped by a transform, in every DataLoader worker process.

    The two counts live in a shared-memory tensor, so increments made in worker processes are visible in the main
    process (a worker inherits it when forked and receives it through torch's shared-memory pickling when spawned).
    Increments from two workers at the same instant may race; the per-example warnings are the exact record.
    Copies (`copy.deepcopy`, as `datasets` does when deriving data sets) share the same counts.
    """

    def __init__(self, name: str = "examples"):
        self.name = name
        self._counts = torch.zeros(2, dtype=torch.int64).share_memory_()  # [seen, skipped]

    def __deepcopy__(self, memo):
        return self

    @property
    def seen(self) -> int:
        return int(self._counts[0])

    @property
    def skipped(self) -> int:
        return int(self._counts[1])

    def record_success(self) -> None:
        self._counts[0] += 1

    def record_skip(self, source: str, error: BaseException) -> None:
        self._counts[0] += 1
        self._counts[1] += 1
        logger.warning("Skipping %s: %s: %s", source, type(error).__name__, error)

    def summary(self) -> str:
        return f"Skipped {self.skipped} of {self.seen} {self.name} because their media could not be decoded."

    def log_summary(self) -> None:
        (logger.warning if self.skipped else logger.info)(self.summary())

    def __repr__(self) -> str:
        return f"SkipCounter(name={self.name!r}, seen={self.seen}, skipped={self.skipped})"


class SkipReportCallback(TrainerCallback):
    """Logs a `SkipCounter`'s summary after every epoch and at the end of training."""

    def __init__(self, counter: SkipCounter):
        self.counter = counter

    def on_epoch_end(self, args, state, control, **kwargs):
        self.counter.log_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.counter.log_summary()


def _describe(value: Any, row: dict) -> str:
    """Where a media cell comes from, for log messages: its path, else the row's ids."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    ids = [f"{name}={row[name]}" for name in ("image_id", "video_id", "question_id") if name in row]
    return f"the {'media' if value is None else type(value).__name__} of the row with {', '.join(ids) or 'no id'}"


def decode_image(value: Any) -> PIL.Image.Image:
    """An RGB PIL image from a PIL image, a path, a `datasets.Image` cell (`{"bytes", "path"}`) or a (H, W[, 3]) array.

    Raises the decoder's error (`FileNotFoundError`, `PIL.UnidentifiedImageError`, `OSError` for truncated files).
    """
    if isinstance(value, PIL.Image.Image):
        image = value
    elif isinstance(value, (str, os.PathLike)):
        image = PIL.Image.open(value)
    elif isinstance(value, dict) and ("bytes" in value or "path" in value):
        image = PIL.Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else PIL.Image.open(value["path"])
    elif isinstance(value, np.ndarray):
        image = PIL.Image.fromarray(value)
    else:
        raise TypeError(
            "An image must be a PIL image, a path, a {'bytes', 'path'} dict or a numpy array, got "
            f"{type(value).__name__}."
        )
    return image.convert("RGB")  # forces the full decode, so a truncated file fails here


def _video_source(value: Any) -> Any:
    """What the video processor decodes: a path for path-like cells, otherwise frames or bytes as they are."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        return value["bytes"] if value.get("bytes") else value["path"]
    return value


class MediaTextTransform:
    """Tokenize the text and process the image or video of each row into model inputs.

    Args:
        processor: an `SCLProcessor` (or any HF processor with `tokenizer` and `image_processor`/`video_processor`);
            supplies whatever of `tokenizer`, `image_transform`, `video_transform` is not given.
        tokenizer: turns text into `input_ids` (truncated to `max_length`, not padded: the collator pads).
        image_transform: a PIL RGB image -> (3, H, W) tensor callable (e.g. a torchvision training augmentation), or
            an HF image processor.
        video_transform: a video (path, bytes or (T, H, W, 3) frames) -> (F, 3, H, W) tensor callable, or an HF video
            processor (which decodes paths with PyAV and samples frames).
        modality: "image" or "video".
        media_column: the column holding the media (default: `modality`).
        text_column: the column holding the text (`caption`, or `question` for VQA).
        load_media: optional `example -> media` callable replacing `example[media_column]`, e.g. `render_video` for
            the synthetic clips that are stored as specs.
        pixel_kwargs: extra keyword arguments for an HF image/video processor, e.g. `{"frame_sampling": "random"}`.
        max_length: text truncation length (spec §1.3: 50).
        skip_counter: counts decoded and skipped rows; one is created if not given (`transform.skip_counter`).

    Output rows hold `input_ids`, `attention_mask`, `pixel_values` or `pixel_values_videos` (None for skipped rows),
    and every input column except the media column.
    """

    def __init__(
        self,
        processor: Any = None,
        *,
        tokenizer: Any = None,
        image_transform: Callable | None = None,
        video_transform: Callable | None = None,
        modality: Literal["image", "video"] = "image",
        media_column: str | None = None,
        text_column: str = "caption",
        load_media: Callable[[dict], Any] | None = None,
        pixel_kwargs: dict | None = None,
        max_length: int = 50,
        skip_counter: SkipCounter | None = None,
    ):
        if modality not in PIXEL_KEYS:
            raise ValueError(f"modality must be 'image' or 'video', got {modality!r}.")
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("MediaTextTransform needs a `tokenizer` or a `processor` that has one.")
        attribute = "image_processor" if modality == "image" else "video_processor"
        given = image_transform if modality == "image" else video_transform
        self.pixel_transform = given if given is not None else getattr(processor, attribute, None)
        if self.pixel_transform is None:
            raise ValueError(
                f"MediaTextTransform(modality={modality!r}) needs `{modality}_transform` or a `processor` with "
                f"`{attribute}`."
            )
        self.modality = modality
        self.pixel_key = PIXEL_KEYS[modality]
        self.media_column = media_column or modality
        self.text_column = text_column
        self.load_media = load_media
        self.pixel_kwargs = dict(pixel_kwargs or {})
        self.max_length = max_length
        self.skip_counter = skip_counter if skip_counter is not None else SkipCounter()

    def apply_to(self, dataset: Dataset | IterableDataset) -> Dataset | IterableDataset:
        """Attach the transform lazily: `with_transform` for a `Dataset`, `map` for an `IterableDataset`.

        An image column typed `datasets.Image` is read undecoded, so that decoding errors reach this transform.
        """
        needed = [self.text_column] + ([] if self.load_media else [self.media_column])
        if dataset.column_names is not None:
            missing = [column for column in needed if column not in dataset.column_names]
            if missing:
                raise ValueError(f"Column(s) {missing} not found; the data set has {dataset.column_names}.")
        feature = (dataset.features or {}).get(self.media_column)
        if isinstance(feature, ImageFeature) and feature.decode:
            dataset = dataset.cast_column(self.media_column, ImageFeature(decode=False))
        if isinstance(dataset, IterableDataset):
            # Small batches: a streamed batch is processed at once, and 1000 (the default) 288px images are ~1 GB.
            return dataset.map(
                self,
                batched=True,
                batch_size=_STREAM_BATCH_SIZE,
                remove_columns=[c for c in [self.media_column] if not self.load_media],
            )
        return dataset.with_transform(self)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts = batch[self.text_column]
        if not all(isinstance(text, str) for text in texts):
            raise TypeError(f"Column {self.text_column!r} must hold one string per row; use `image_text_pairs` first.")
        encoding = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        out = {name: values for name, values in batch.items() if name != self.media_column}
        out["input_ids"] = encoding["input_ids"]
        out["attention_mask"] = encoding["attention_mask"]
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        out[self.pixel_key] = [self._pixels_or_none(row) for row in rows]
        return out

    def _pixels_or_none(self, row: dict) -> torch.Tensor | None:
        media = row.get(self.media_column)
        try:
            loaded = self.load_media(row) if self.load_media else media
            # An image is decoded here and processed outside the guard, where an error is a bug, not a bad file. A
            # video processor decodes while it processes, so the whole call is guarded.
            decoded = decode_image(loaded) if self.modality == "image" else self._process(_video_source(loaded))
        except Exception as error:  # noqa: BLE001 - one unreadable file must not end a long run
            self.skip_counter.record_skip(_describe(media, row), error)
            return None
        self.skip_counter.record_success()
        pixels = self._process(decoded) if self.modality == "image" else decoded
        expected = 3 if self.modality == "image" else 4
        if pixels.dim() != expected or pixels.shape[-3] != 3:
            layout = "(3, H, W)" if self.modality == "image" else "(F, 3, H, W)"
            raise ValueError(f"The {self.modality} transform returned shape {tuple(pixels.shape)}, expected {layout}.")
        return pixels

    def _process(self, media: Any) -> torch.Tensor:
        transform = self.pixel_transform
        if isinstance(transform, ProcessorMixin):
            inputs = {"images": [media]} if self.modality == "image" else {"videos": [media]}
            return transform(**inputs, return_tensors="pt", **self.pixel_kwargs)[self.pixel_key][0]
        if isinstance(transform, (ImageProcessingMixin, BaseVideoProcessor)):
            return transform([media], return_tensors="pt", **self.pixel_kwargs)[self.pixel_key][0]
        return torch.as_tensor(transform(media))


@dataclass
class PretrainingDatasets:
    """Pre-training rows per modality with SCL's transforms attached (build it with `from_pairs`).

    `train` / `eval` map a modality (`"image"`, `"video"`) to its training / held-out rows; `skip_counter` counts the
    media of both that could not be decoded (pass it to `SkipReportCallback`).
    """

    train: dict[str, Dataset | IterableDataset]
    eval: dict[str, Dataset]
    skip_counter: SkipCounter

    @classmethod
    def from_pairs(
        cls,
        pairs: dict[str, tuple[Dataset | IterableDataset, Dataset | None]],
        processor: Any,
        *,
        image_size: int,
        num_frames: int,
        horizontal_flip: bool = True,
        max_length: int = 50,
        load_media: dict[str, Callable[[dict], Any]] | None = None,
    ) -> "PretrainingDatasets":
        """Attach the transforms to `{modality: (training rows, held-out rows or None)}` of caption pairs.

        Training rows get the pre-training augmentation at `image_size` (spec §1.2 `clip`; clips: random segments of
        `num_frames` frames, one augmentation per clip), held-out rows the processor's deterministic transform (videos
        sampled uniformly). `load_media` maps a modality to `MediaTextTransform`'s `load_media`, e.g.
        `{"video": render_video}` for the synthetic clips.
        """
        augmentation = pretraining_transform(image_size, horizontal_flip=horizontal_flip)
        augment = {"image": augmentation, "video": VideoTrainTransform(num_frames, augmentation)}
        skip_counter = SkipCounter()
        train, held_out = {}, {}
        for modality, (train_pairs, eval_pairs) in pairs.items():
            common = {
                "modality": modality,
                "max_length": max_length,
                "skip_counter": skip_counter,
                "load_media": (load_media or {}).get(modality),
            }
            transform = MediaTextTransform(processor, **{f"{modality}_transform": augment[modality]}, **common)
            train[modality] = transform.apply_to(train_pairs)
            if eval_pairs is None:
                logger.warning("No held-out %s data: no evaluation for this modality.", modality)
                continue
            pixel_kwargs = {"frame_sampling": "uniform"} if modality == "video" else None
            held_out[modality] = MediaTextTransform(processor, pixel_kwargs=pixel_kwargs, **common).apply_to(
                eval_pairs
            )
        return cls(train=train, eval=held_out, skip_counter=skip_counter)

    def train_dataset(self) -> Dataset | IterableDataset | ConcatDataset:
        """What `Trainer` trains on: one data set, or the modalities concatenated (see `modality_sizes`)."""
        parts = list(self.train.values())
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    @property
    def modality_sizes(self) -> list[int] | None:
        """Rows per modality, in `ConcatDataset` order (for `seeded_rank_batch_sampler`); None when streaming."""
        if any(isinstance(part, IterableDataset) for part in self.train.values()):
            return None
        return [len(part) for part in self.train.values()]
