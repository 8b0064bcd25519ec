"""
Train-time augmentation for SCL (spec §1.2, "Image transforms"), with torchvision.transforms.v2.

Each factory returns a `v2.Compose` taking an image (PIL image, (H, W, C) uint8 array or (C, H, W) uint8 tensor) or a
clip ((T, C, H, W) uint8 tensor, ideally a `torchvision.tv_tensors.Video`). It returns float32 pixels normalized with
the CLIP mean/std, exactly the distribution `SCLImageProcessor` / `SCLVideoProcessor` produce, so training and
evaluation inputs match.

v2 transforms draw their random parameters once per call, so a clip gets one crop, one flip decision and one
RandAugment choice for all its frames (the "group transform" the original video datasets expected, spec §7.2 item 3).
Randomness comes from torch's global generator: seed it with `torch.manual_seed` (DataLoader workers are seeded by
PyTorch).
"""

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .video_processing_scl import decode_video, frames_to_tensor, sample_frame_indices

BICUBIC = v2.InterpolationMode.BICUBIC


class _ToRGB:
    """PIL images of any mode -> RGB, compositing transparency on white exactly as the SCL processors do."""

    def __call__(self, inputs):
        if isinstance(inputs, PIL.Image.Image):
            return convert_to_rgb(inputs, return_numpy=True)
        channels = None
        if isinstance(inputs, torch.Tensor) and inputs.ndim >= 3:
            channels = inputs.shape[-3]
        elif isinstance(inputs, np.ndarray) and inputs.ndim == 3:
            channels = inputs.shape[-1]
        if channels not in (None, 1, 3):
            raise ValueError(
                f"Expected an RGB or grayscale image or clip (1 or 3 channels: (C, H, W) / (T, C, H, W) tensors, "
                f"(H, W, C) arrays), got shape {tuple(inputs.shape)}."
            )
        return inputs

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _to_tensor_image() -> list:
    return [_ToRGB(), v2.ToImage(), v2.RGB()]  # v2.RGB: grayscale tensors -> 3 channels


def _to_normalized_float() -> list:
    # The same rescale (1/255) and CLIP normalization as the processors (spec §1.2).
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)]


def pretraining_transform(size: int = 288, horizontal_flip: bool = True) -> v2.Compose:
    """
    Pre-training augmentation, spec §1.2 `clip`: RandomResizedCrop(size, scale=(0.8, 1.0), bicubic) and a horizontal
    flip, then CLIP normalization. 288 px for image-text pre-training, 224 px for video (spec §1.2).
    `horizontal_flip=False` drops the flip, for captions that say left or right.
    """
    flip = [v2.RandomHorizontalFlip()] if horizontal_flip else []
    return v2.Compose(
        [
            *_to_tensor_image(),
            v2.RandomResizedCrop((size, size), scale=(0.8, 1.0), interpolation=BICUBIC, antialias=True),
            *flip,
            *_to_normalized_float(),
        ]
    )


def finetuning_transform(size: int = 288) -> v2.Compose:
    """
    Fine-tuning augmentation, spec §1.2 `clip_randaug`: RandAugment(2 ops, magnitude 9) then
    RandomResizedCrop(size, scale=(0.9, 1.0), bicubic), then CLIP normalization. No flip: it would break VQA answers
    and NLVR2 statements about left and right. 384 px for VQA and retrieval, 288 px for NLVR2 (spec §1.2).
    """
    return v2.Compose(
        [
            *_to_tensor_image(),
            v2.RandAugment(num_ops=2, magnitude=9),
            v2.RandomResizedCrop((size, size), scale=(0.9, 1.0), interpolation=BICUBIC, antialias=True),
            *_to_normalized_float(),
        ]
    )


def eval_transform(size: int = 288) -> v2.Compose:
    """
    Evaluation transform, spec §1.2 `clip_test`: square bicubic resize ignoring the aspect ratio, then CLIP
    normalization. The same transform as `SCLImageProcessor(size=size)` (torchvision backend).
    """
    return v2.Compose(
        [
            *_to_tensor_image(),
            v2.Resize((size, size), interpolation=BICUBIC, antialias=True),
            *_to_normalized_float(),
        ]
    )


class VideoTrainTransform:
    """Training clips: random segment sampling (spec §1.2 `'random'`: one random frame from each of `num_frames`
    equal segments), then one `augmentation` (e.g. `pretraining_transform`) shared by every frame of the clip.

    Takes a video file (path, bytes or file object, decoded with PyAV, only the sampled frames) or decoded frames
    ((T, H, W, C) or (T, C, H, W)); returns (num_frames, 3, H, W) float pixels. Draws from torch's global generator.
    """

    def __init__(self, num_frames: int, augmentation: Callable):
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}.")
        self.num_frames = num_frames
        self.augmentation = augmentation

    def _indices(self, total: int) -> np.ndarray:
        return sample_frame_indices(total, self.num_frames, "random")

    def __call__(self, video: Any) -> torch.Tensor:
        if isinstance(video, (str, os.PathLike, bytes)) or hasattr(video, "read"):
            frames, _ = decode_video(video, sample_indices=lambda metadata: self._indices(metadata.total_num_frames))
        else:
            frames = frames_to_tensor(video, "video")
            frames = frames[torch.as_tensor(self._indices(len(frames)))]
        return self.augmentation(tv_tensors.Video(frames))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_frames={self.num_frames}, augmentation={self.augmentation!r})"


__all__ = ["VideoTrainTransform", "eval_transform", "finetuning_transform", "pretraining_transform"]
