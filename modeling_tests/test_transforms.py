"""Train-time augmentation (spec §1.2 `clip`, `clip_randaug`, `clip_test`), for images and whole clips."""

import numpy as np
import PIL.Image
import pytest
import torch
from media import sample_image
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.transforms import (
    VideoTrainTransform,
    eval_transform,
    finetuning_transform,
    pretraining_transform,
)
from transformers_scl.video_processing_scl import SCLVideoProcessor

RANDOM_TRANSFORMS = {"pretraining": pretraining_transform, "finetuning": finetuning_transform}


def small_photo() -> PIL.Image.Image:
    return sample_image("astronaut").resize((80, 60), PIL.Image.BICUBIC)


def clip_of_identical_frames(num_frames: int = 4) -> tv_tensors.Video:
    frame = torch.from_numpy(np.array(small_photo())).permute(2, 0, 1)
    return tv_tensors.Video(frame.expand(num_frames, -1, -1, -1).clone())


def find(transform: v2.Compose, kind: type) -> list:
    return [step for step in transform.transforms if isinstance(step, kind)]


def test_eval_transform_equals_the_image_processor_on_a_real_photo():
    photo = sample_image("chelsea")
    expected = SCLImageProcessor(size=288)(photo, return_tensors="pt").pixel_values[0]
    torch.testing.assert_close(eval_transform(288)(photo).as_subclass(torch.Tensor), expected, atol=1e-5, rtol=0)


def test_eval_transform_on_a_clip_equals_the_video_processor():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    expected = SCLVideoProcessor(size=32)(frames, num_frames=3, return_tensors="pt").pixel_values_videos[0]
    clip = tv_tensors.Video(torch.from_numpy(frames).permute(0, 3, 1, 2))
    torch.testing.assert_close(eval_transform(32)(clip).as_subclass(torch.Tensor), expected, atol=1e-5, rtol=0)


def test_pretraining_transform_keeps_the_processor_normalization():
    # Cropping and flipping a one-color image leave it one color: the output is that color, CLIP-normalized.
    color = (255, 0, 128)
    pixels = pretraining_transform(32)(PIL.Image.new("RGB", (50, 40), color))
    expected = (torch.tensor(color) / 255 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 32, 32)
    torch.testing.assert_close(pixels.as_subclass(torch.Tensor), expected.view(3, 1, 1).expand(3, 32, 32))


@pytest.mark.parametrize("name", RANDOM_TRANSFORMS)
def test_random_transforms_give_normalized_float_images_of_the_requested_size(name):
    pixels = RANDOM_TRANSFORMS[name](48)(small_photo())
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 48, 48)
    assert pixels.min() < 0 < pixels.max()  # centred by the CLIP mean, not in [0, 1]


def test_pretraining_transform_crops_80_to_100_percent_bicubic_and_flips():
    transform = pretraining_transform(288)
    (crop,) = find(transform, v2.RandomResizedCrop)
    assert (tuple(crop.size), crop.scale, crop.interpolation) == ((288, 288), (0.8, 1.0), v2.InterpolationMode.BICUBIC)
    assert len(find(transform, v2.RandomHorizontalFlip)) == 1
    assert not find(transform, v2.RandAugment)


def test_finetuning_transform_is_randaugment_2_9_then_a_90_to_100_percent_crop_without_flip():
    transform = finetuning_transform(384)
    (augment,) = find(transform, v2.RandAugment)
    (crop,) = find(transform, v2.RandomResizedCrop)
    assert (augment.num_ops, augment.magnitude) == (2, 9)
    assert transform.transforms.index(augment) < transform.transforms.index(crop)
    assert (tuple(crop.size), crop.scale, crop.interpolation) == ((384, 384), (0.9, 1.0), v2.InterpolationMode.BICUBIC)
    assert not find(transform, v2.RandomHorizontalFlip)


@pytest.mark.parametrize("name", RANDOM_TRANSFORMS)
@pytest.mark.parametrize("as_video", [True, False], ids=["tv_tensors.Video", "plain_tensor"])
def test_all_frames_of_a_clip_share_one_set_of_random_parameters(name, as_video):
    transform = RANDOM_TRANSFORMS[name](32)
    clip = clip_of_identical_frames()
    clip = clip if as_video else clip.as_subclass(torch.Tensor)
    torch.manual_seed(0)
    for _ in range(10):  # many draws, so that RandAugment tries many of its operations
        frames = transform(clip)
        assert frames.shape == (4, 3, 32, 32)
        for frame in frames[1:]:
            torch.testing.assert_close(frame, frames[0], atol=0, rtol=0)


@pytest.mark.parametrize("name", RANDOM_TRANSFORMS)
def test_two_clips_get_different_random_parameters(name):
    transform = RANDOM_TRANSFORMS[name](32)
    torch.manual_seed(0)
    first, second = transform(clip_of_identical_frames()), transform(clip_of_identical_frames())
    assert not torch.equal(first, second)


@pytest.mark.parametrize("name", RANDOM_TRANSFORMS)
def test_random_transforms_are_reproducible_under_a_torch_seed(name):
    transform = RANDOM_TRANSFORMS[name](32)
    torch.manual_seed(7)
    first = transform(small_photo())
    torch.manual_seed(7)
    torch.testing.assert_close(transform(small_photo()), first, atol=0, rtol=0)


def test_grayscale_and_rgba_images_become_rgb():
    gray = eval_transform(16)(PIL.Image.new("L", (20, 20), 100))
    rgba = eval_transform(16)(PIL.Image.new("RGBA", (20, 20), (100, 100, 100, 255)))
    expected = (100 / 255 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    for pixels in (gray, rgba):
        assert pixels.shape == (3, 16, 16)
        torch.testing.assert_close(pixels[:, 0, 0].as_subclass(torch.Tensor), expected)


def test_tensor_with_a_wrong_channel_count_is_rejected():
    with pytest.raises(ValueError, match=r"got shape \(2, 5, 20, 20\)"):
        pretraining_transform(16)(torch.zeros(2, 5, 20, 20, dtype=torch.uint8))


def test_video_train_transform_samples_one_frame_per_segment_and_augments_the_clip_as_one():
    frames = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 16, 16).contiguous()
    transform = VideoTrainTransform(4, v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32)]))
    torch.manual_seed(0)
    clip = transform(frames)
    assert clip.shape == (4, 3, 16, 16)
    picked = clip[:, 0, 0, 0].long().tolist()
    assert [index // 3 for index in picked] == [0, 1, 2, 3]  # one frame from each of 4 equal segments
    with pytest.raises(ValueError, match="num_frames must be positive"):
        VideoTrainTransform(0, v2.Identity())
