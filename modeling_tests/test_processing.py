"""SCL image, video and text processing (spec §1.2 transforms and frame sampling, §1.3 text length)."""

import copy
import inspect
import io
import json
import os
import subprocess
import sys

import av
import numpy as np
import PIL.Image
import pytest
import torch
from conftest import tiny_config
from media import VIDEO_NUM_FRAMES, require_sample_video, sample_image
from transformers import AutoImageProcessor, AutoProcessor, AutoVideoProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from transformers_scl import SCLConfig, SCLForZeroShotImageClassification, SCLModel
from transformers_scl.image_processing_pil_scl import SCLImageProcessorPil
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.processing_scl import SCLProcessor, text_limits_from_config
from transformers_scl.video_processing_scl import SCLVideoProcessor, _decode_frames, _VideoSource, sample_frame_indices

# What `transformers_scl/__init__.py` registers; repeated so these tests do not depend on it. Loading a saved SCL
# processor with the local classes (no `trust_remote_code`) needs these registrations.
AutoImageProcessor.register(
    SCLConfig, image_processor_classes={"torchvision": SCLImageProcessor, "pil": SCLImageProcessorPil}, exist_ok=True
)
AutoVideoProcessor.register(SCLConfig, video_processor_class=SCLVideoProcessor, exist_ok=True)
AutoProcessor.register(SCLConfig, SCLProcessor, exist_ok=True)

MEAN = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
# One uint8 level after normalization, in the channel where it is largest.
ONE_LEVEL = 1 / (255 * min(OPENAI_CLIP_STD))


def write_index_coded_video(path, num_frames: int = 20, codec: str = "ffv1") -> str:
    """Write a 32x32 video whose frame i is uniformly gray at level 10 * i, so a decoded frame tells its index."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * index, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return str(path)


def decoded_frame_indices(video_processor, video, **kwargs) -> list[int]:
    """Run the processor without resize/rescale/normalize and read each output frame's index from its gray level."""
    pixels = video_processor(
        video, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="pt", **kwargs
    ).pixel_values_videos
    return (pixels.float().mean(dim=(2, 3, 4)) / 10).round().long().flatten().tolist()


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    # Matroska stores no frame count, so this also covers counting frames from packets.
    return write_index_coded_video(tmp_path_factory.mktemp("video") / "coded.mkv")


@pytest.fixture
def processor(tokenizer):
    return SCLProcessor(SCLImageProcessor(size=32), SCLVideoProcessor(size=32), tokenizer)


@pytest.fixture(params=[SCLImageProcessor, SCLImageProcessorPil], ids=["torchvision", "pil"])
def image_processor(request):
    return request.param()


# ----------------------------------------------------------------------------------------------- image processors


def test_image_is_resized_to_an_exact_square_ignoring_aspect_ratio(image_processor):
    photo = sample_image("chelsea")  # 451 x 300, not square
    assert image_processor(photo, return_tensors="pt").pixel_values.shape == (1, 3, 288, 288)
    assert image_processor(photo, size=384, return_tensors="pt").pixel_values.shape == (1, 3, 384, 384)


def test_image_is_rescaled_and_normalized_with_clip_mean_and_std(image_processor):
    color = (255, 0, 128)
    pixels = image_processor(PIL.Image.new("RGB", (40, 30), color), return_tensors="pt").pixel_values[0]
    expected = (torch.tensor(color, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD
    torch.testing.assert_close(pixels, expected.expand(3, 288, 288), atol=1e-5, rtol=0)


def test_torchvision_and_pil_backends_agree_on_a_real_photo():
    photo = sample_image("chelsea")
    torchvision_pixels = SCLImageProcessor()(photo, return_tensors="pt").pixel_values
    pil_pixels = SCLImageProcessorPil()(photo, return_tensors="pt").pixel_values
    difference = (torchvision_pixels - pil_pixels).abs()
    # Both resize the uint8 image with antialiased bicubic filters and round back to uint8 before rescaling, so they
    # can differ by at most one uint8 level where the two filter implementations round differently, and rarely.
    assert difference.max() <= ONE_LEVEL * 1.001
    assert difference.mean() < 1e-3


def test_image_file_path_gives_the_same_pixels_as_the_decoded_image(image_processor, tmp_path):
    photo = sample_image("astronaut")
    photo.save(tmp_path / "astronaut.png")
    from_path = image_processor(str(tmp_path / "astronaut.png"), size=64, return_tensors="pt").pixel_values
    from_image = image_processor(photo, size=64, return_tensors="pt").pixel_values
    torch.testing.assert_close(from_path, from_image, atol=0, rtol=0)


def test_grayscale_and_rgba_images_are_converted_to_rgb(image_processor):
    gray = np.full((20, 30), 100, np.uint8)
    opaque_rgba = PIL.Image.new("RGBA", (30, 20), (100, 100, 100, 255))
    outputs = image_processor([gray, gray[..., None], opaque_rgba], size=32, return_tensors="pt").pixel_values
    assert outputs.shape == (3, 3, 32, 32)
    expected = ((torch.full((3, 1, 1), 100 / 255) - MEAN) / STD).expand(3, 32, 32)
    for pixels in outputs:
        torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(32, 32, 5), (32, 32, 2)])
def test_image_with_a_wrong_channel_count_is_rejected_by_name(image_processor, shape):
    images = [np.zeros((32, 32, 3), np.uint8), np.zeros(shape, np.uint8)]
    with pytest.raises(ValueError, match=rf"images\[1\] has shape \({shape[0]}, {shape[1]}, {shape[2]}\)"):
        image_processor(images)


def test_corrupt_image_file_is_rejected_naming_the_file(image_processor, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ValueError, match="Cannot read image file .*corrupt.png"):
        image_processor(str(corrupt))


def test_truncated_image_file_is_rejected_naming_the_file(image_processor, tmp_path):
    sample_image("astronaut").save(tmp_path / "full.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:5000])
    with pytest.raises(ValueError, match="Cannot read image file .*truncated.png.*truncated"):
        image_processor(str(truncated))


def test_missing_image_file_is_rejected_naming_the_file(image_processor, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        image_processor(str(tmp_path / "missing.jpg"))


def test_non_image_input_is_rejected_by_name(image_processor):
    with pytest.raises(TypeError, match=r"images\[1\] must be a PIL image.*got NoneType"):
        image_processor([sample_image(), None])


def test_shortest_edge_size_is_rejected_because_scl_resizes_to_a_square(image_processor):
    with pytest.raises(ValueError, match="exact size"):
        image_processor(sample_image(), size={"shortest_edge": 224})


# ----------------------------------------------------------------------------------------------- frame sampling


def test_uniform_sampling_takes_rounded_linspace_indices():
    np.testing.assert_array_equal(sample_frame_indices(VIDEO_NUM_FRAMES, 4), [0, 90, 179, 269])
    np.testing.assert_array_equal(sample_frame_indices(20, 8), [0, 3, 5, 8, 11, 14, 16, 19])


def test_random_sampling_draws_one_frame_from_each_equal_segment():
    total, num_frames = 22, 4  # segments [0, 5), [5, 11), [11, 16), [16, 22)
    draws = np.stack([sample_frame_indices(total, num_frames, "random") for _ in range(400)])
    for segment, (low, high) in enumerate([(0, 5), (5, 11), (11, 16), (16, 22)]):
        assert set(draws[:, segment].tolist()) == set(range(low, high))


def test_random_sampling_is_reproducible_with_a_generator():
    first = sample_frame_indices(270, 4, "random", generator=torch.Generator().manual_seed(3))
    second = sample_frame_indices(270, 4, "random", generator=torch.Generator().manual_seed(3))
    other = sample_frame_indices(270, 4, "random", generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_video_shorter_than_num_frames_repeats_frames():
    np.testing.assert_array_equal(sample_frame_indices(3, 4, "uniform"), [0, 1, 1, 2])
    np.testing.assert_array_equal(sample_frame_indices(3, 4, "random"), [0, 0, 1, 2])
    np.testing.assert_array_equal(sample_frame_indices(1, 4, "random"), [0, 0, 0, 0])


# ----------------------------------------------------------------------------------------------- video processor


@pytest.mark.parametrize("container, codec", [("mkv", "ffv1"), ("avi", "mpeg4")])
def test_uniform_sampling_decodes_the_linspace_frames(tmp_path, container, codec):
    video = write_index_coded_video(tmp_path / f"coded.{container}", codec=codec)
    indices = decoded_frame_indices(SCLVideoProcessor(), video, num_frames=8)
    assert indices == [0, 3, 5, 8, 11, 14, 16, 19]


def test_random_sampling_decodes_one_frame_per_segment_reproducibly(coded_video):
    video_processor = SCLVideoProcessor(frame_sampling="random")
    drawn = [decoded_frame_indices(video_processor, coded_video, seed=seed) for seed in range(6)]
    for indices in drawn:  # 20 frames, 4 segments of 5 frames
        assert [index // 5 for index in indices] == [0, 1, 2, 3]
    assert drawn[0] == decoded_frame_indices(video_processor, coded_video, seed=0)
    assert len({tuple(indices) for indices in drawn}) > 1


def test_random_sampling_draws_differently_for_each_video_of_a_batch(coded_video):
    indices = decoded_frame_indices(SCLVideoProcessor(), [coded_video] * 4, frame_sampling="random", seed=0)
    clips = [tuple(indices[start : start + 4]) for start in range(0, 16, 4)]
    assert len(set(clips)) > 1


def test_metadata_reports_the_sampled_indices(coded_video):
    outputs = SCLVideoProcessor()(coded_video, num_frames=3, return_metadata=True)
    (metadata,) = outputs["video_metadata"]
    assert metadata.total_num_frames == 20
    assert list(metadata.frames_indices) == [0, 10, 19]


def test_decoding_stops_after_the_last_wanted_frame(coded_video):
    frames, frames_seen = _decode_frames(_VideoSource(coded_video, "coded"), np.array([2, 5, 5]))
    assert frames_seen == 6
    assert frames.shape == (3, 32, 32, 3)
    assert (frames.reshape(3, -1).mean(axis=1) / 10).round().tolist() == [2, 5, 5]


def test_real_video_gives_num_frames_square_frames():
    video = require_sample_video()
    pixels = SCLVideoProcessor()(video, return_tensors="pt").pixel_values_videos
    assert pixels.shape == (1, 4, 3, 288, 288)
    pixels = SCLVideoProcessor(size=64, num_frames=8)([video, video], return_tensors="pt").pixel_values_videos
    assert pixels.shape == (2, 8, 3, 64, 64)


def test_video_from_a_file_object_equals_video_from_its_path():
    video = require_sample_video()
    video_processor = SCLVideoProcessor(size=32)
    from_path = video_processor(video, return_tensors="pt").pixel_values_videos
    with open(video, "rb") as file:
        from_file = video_processor(file, return_tensors="pt").pixel_values_videos
    from_bytes = video_processor(io.BytesIO(open(video, "rb").read()), return_tensors="pt").pixel_values_videos
    torch.testing.assert_close(from_file, from_path, atol=0, rtol=0)
    torch.testing.assert_close(from_bytes, from_path, atol=0, rtol=0)


def test_every_frame_gets_exactly_the_image_transform():
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 60, 3), dtype=np.uint8)
    video_pixels = SCLVideoProcessor()(frames, num_frames=5, return_tensors="pt").pixel_values_videos[0]
    image_pixels = SCLImageProcessor()(list(frames), return_tensors="pt").pixel_values
    torch.testing.assert_close(video_pixels, image_pixels, atol=1e-6, rtol=0)


def test_decoded_frames_are_accepted_as_pil_list_numpy_or_tensor():
    frames = np.random.default_rng(0).integers(0, 256, (6, 24, 36, 3), dtype=np.uint8)
    video_processor = SCLVideoProcessor(size=32)
    expected = video_processor(frames, return_tensors="pt").pixel_values_videos
    as_pil = [PIL.Image.fromarray(frame) for frame in frames]
    as_channels_first = torch.from_numpy(frames).permute(0, 3, 1, 2)
    for video in (as_pil, list(frames), torch.from_numpy(frames), as_channels_first):
        torch.testing.assert_close(video_processor(video, return_tensors="pt").pixel_values_videos, expected)


@pytest.mark.parametrize("shape", [(3, 16, 16, 5), (3, 16, 16, 2)])
def test_video_with_a_wrong_channel_count_is_rejected(shape):
    with pytest.raises(ValueError, match=rf"has shape \(3, 16, 16, {shape[-1]}\)"):
        SCLVideoProcessor()(np.zeros(shape, np.uint8))


def test_corrupt_video_file_is_rejected_naming_the_file(tmp_path, coded_video):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ValueError, match="Cannot read video .*corrupt.mp4"):
        SCLVideoProcessor()(str(corrupt))
    with pytest.raises(ValueError, match=r"Cannot read video videos\[1\]: .*Invalid data"):
        SCLVideoProcessor()([coded_video, io.BytesIO(corrupt.read_bytes())])


def test_zero_frame_video_is_rejected_naming_the_file(tmp_path):
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()  # header with a video stream, then no frame at all
    with pytest.raises(ValueError, match="empty.avi' has no frames"):
        SCLVideoProcessor()(str(empty))
    with pytest.raises(ValueError, match="has no frames"):
        SCLVideoProcessor()(np.zeros((0, 16, 16, 3), np.uint8))


def test_missing_video_file_is_rejected_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        SCLVideoProcessor()(str(tmp_path / "missing.mp4"))


def test_num_frames_above_max_frames_is_rejected(coded_video):
    with pytest.raises(ValueError, match=r"num_frames=9 is not in \[1, max_frames=8\]"):
        SCLVideoProcessor()(coded_video, num_frames=9)
    with pytest.raises(ValueError, match="num_frames=5 is not in"):
        SCLVideoProcessor(num_frames=5, max_frames=4)


def test_unsampled_video_longer_than_max_frames_is_rejected():
    with pytest.raises(ValueError, match="has 12 frames but the model takes at most max_frames=8"):
        SCLVideoProcessor()(np.zeros((12, 16, 16, 3), np.uint8), do_sample_frames=False)


def test_unknown_frame_sampling_is_rejected(coded_video):
    with pytest.raises(ValueError, match="frame_sampling must be one of"):
        SCLVideoProcessor()(coded_video, frame_sampling="middle")


# ----------------------------------------------------------------------------------------------- processor


def test_text_is_padded_to_50_tokens_by_default(processor, tokenizer):
    outputs = processor(text=["a red circle", "a green triangle moving up"], return_tensors="pt")
    assert outputs.input_ids.shape == (2, 50)
    short_length = len(tokenizer("a red circle").input_ids)
    assert outputs.attention_mask[0].sum() == short_length
    assert (outputs.input_ids[0, short_length:] == tokenizer.pad_token_id).all()


def test_long_text_is_truncated_to_50_tokens(processor, tokenizer):
    outputs = processor(text="the cat sits on the mat near a small dog " * 20, return_tensors="pt")
    assert outputs.input_ids.shape == (1, 50)
    assert outputs.attention_mask.all()
    assert outputs.input_ids[0, -1] == tokenizer.eos_token_id


def test_text_length_can_be_overridden_per_call(processor):
    assert processor(text="a red circle", max_length=40, return_tensors="pt").input_ids.shape == (1, 40)


def test_processor_returns_text_image_and_video_inputs(processor, coded_video):
    outputs = processor(
        images=[sample_image(), sample_image("astronaut")],
        text=["a cat", "an astronaut"],
        videos=[coded_video, coded_video],
        return_tensors="pt",
    )
    assert set(outputs) == {"input_ids", "attention_mask", "pixel_values", "pixel_values_videos"}
    assert outputs.pixel_values.shape == (2, 3, 32, 32)
    assert outputs.pixel_values_videos.shape == (2, 4, 3, 32, 32)


def test_processor_passes_video_options_to_the_video_processor(processor, coded_video):
    outputs = processor(videos=coded_video, num_frames=2, frame_sampling="random", seed=0, return_tensors="pt")
    assert outputs.pixel_values_videos.shape == (1, 2, 3, 32, 32)


def test_processor_output_fits_a_model_of_the_same_config(tokenizer, coded_video):
    config = tiny_config()
    processor = SCLProcessor(
        SCLImageProcessor(size=config.image_size),
        SCLVideoProcessor(
            size=config.image_size, num_frames=config.num_frames, max_frames=config.vision_config.max_frames
        ),
        tokenizer,
    )
    inputs = processor(text=["a red circle"], videos=[coded_video], return_tensors="pt")
    outputs = SCLModel(config).eval()(**inputs)
    patches = (config.image_size // config.vision_config.patch_size) ** 2
    assert outputs.image_features.shape[:2] == (1, config.num_frames * (1 + patches))
    assert outputs.text_features.shape[:2] == (1, 50)


@pytest.mark.parametrize("text, message", [(7, r"`text` must be a string.*got int"), (["a cat", None], r"text\[1\]")])
def test_text_that_is_not_a_string_is_rejected(processor, text, message):
    with pytest.raises(TypeError, match=message):
        processor(text=text)


def test_save_and_load_round_trip_gives_identical_outputs(processor, coded_video, tmp_path):
    inputs = dict(images=sample_image(), text="a cat", videos=coded_video, return_tensors="pt")
    processor.save_pretrained(tmp_path)
    reloaded = SCLProcessor.from_pretrained(tmp_path)
    assert reloaded.image_processor.size == processor.image_processor.size
    for key, value in processor(**inputs).items():
        torch.testing.assert_close(reloaded(**inputs)[key], value, atol=0, rtol=0)


def test_auto_classes_resolve_a_saved_scl_model_to_the_local_processors(processor, tmp_path):
    tiny_config().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert type(AutoProcessor.from_pretrained(tmp_path)) is SCLProcessor
    assert type(AutoImageProcessor.from_pretrained(tmp_path, backend="pil")) is SCLImageProcessorPil
    assert type(AutoVideoProcessor.from_pretrained(tmp_path)) is SCLVideoProcessor


FRESH_PROCESS_SCRIPT = """
import sys, torch
from transformers import AutoImageProcessor, AutoProcessor, AutoVideoProcessor
directory, image, video, output = sys.argv[1:]
processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
classes = [type(processor), type(processor.image_processor), type(processor.video_processor)]
classes.append(type(AutoImageProcessor.from_pretrained(directory, trust_remote_code=True, backend="pil")))
classes.append(type(AutoVideoProcessor.from_pretrained(directory, trust_remote_code=True)))
outputs = processor(
    images=image, text=["a cat", "an astronaut"], videos=video, text_pairing="independent", return_tensors="pt"
)
torch.save({
    "outputs": dict(outputs),
    "classes": [f"{cls.__module__}.{cls.__name__}" for cls in classes],
    "imported_transformers_scl": any(name.startswith("transformers_scl") for name in sys.modules),
}, output)
"""


@pytest.mark.slow
def test_saved_processor_loads_as_remote_code_in_a_fresh_process(processor, coded_video, tmp_path):
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    image = tmp_path / "cat.png"
    sample_image().save(image)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(saved), str(image), coded_video, str(tmp_path / "out.pt")],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.load(tmp_path / "out.pt")

    assert not loaded["imported_transformers_scl"]
    assert [name.rsplit(".", 1)[1] for name in loaded["classes"]] == [
        "SCLProcessor",
        "SCLImageProcessor",
        "SCLVideoProcessor",
        "SCLImageProcessorPil",
        "SCLVideoProcessor",
    ]
    assert all(name.startswith("transformers_modules.") for name in loaded["classes"])
    expected = processor(
        images=str(image),
        text=["a cat", "an astronaut"],
        videos=coded_video,
        text_pairing="independent",
        return_tensors="pt",
    )
    assert set(loaded["outputs"]) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(loaded["outputs"][key], value, atol=0, rtol=0)
    assert json.loads((saved / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_scl.SCLProcessor"
    }


# ----------------------------------------------------------------------------------------------- input validation


def _limited_processor(tokenizer, config=None) -> SCLProcessor:
    """A processor that knows the text limits of `config` (tiny: 64 RoBERTa positions, 400 ids)."""
    config = config or tiny_config()
    return SCLProcessor(
        SCLImageProcessor(size=32), SCLVideoProcessor(size=32), tokenizer, **text_limits_from_config(config)
    )


def test_two_texts_with_three_images_are_refused(processor):
    with pytest.raises(ValueError, match=r"Got 2 text\(s\) and 3 image\(s\): text i is paired with image i"):
        processor(text=["a cat", "a dog"], images=[sample_image()] * 3)


def test_one_text_with_two_videos_is_refused(processor, coded_video):
    with pytest.raises(ValueError, match=r"Got 1 text\(s\) and 2 video\(s\).*text_pairing='broadcast'"):
        processor(text="a gray square", videos=[coded_video, coded_video])


def test_one_text_is_broadcast_over_every_image_only_when_asked(processor):
    outputs = processor(
        text="what is this?", images=[sample_image(), sample_image("astronaut")], text_pairing="broadcast"
    )
    assert len(outputs["input_ids"]) == 2 and outputs["input_ids"][0] == outputs["input_ids"][1]
    with pytest.raises(ValueError, match="repeats one text for every image/video, but 2 texts"):
        processor(text=["a", "b"], images=[sample_image()] * 3, text_pairing="broadcast")
    with pytest.raises(ValueError, match="`text_pairing` must be one of"):
        processor(text="a", images=sample_image(), text_pairing="zip")


def test_independent_texts_and_images_feed_zero_shot_classification(tokenizer):
    processor = _limited_processor(tokenizer)
    labels = ["a photo of a cat", "a photo of an astronaut"]
    inputs = processor(
        text=labels, images=[sample_image()] * 3, text_pairing="independent", return_tensors="pt", padding="longest"
    )
    assert inputs.input_ids.shape[0] == 2 and inputs.pixel_values.shape[0] == 3
    logits = SCLForZeroShotImageClassification(tiny_config()).eval()(**inputs).logits_per_image
    assert logits.shape == (3, 2)


def test_an_image_pair_per_text_counts_as_one_sample(processor):
    pair = [sample_image(), sample_image("astronaut")]
    outputs = processor(text=["left has a cat", "right has a cat"], images=[pair, pair], return_tensors="pt")
    assert outputs.input_ids.shape[0] == 2 and outputs.pixel_values.shape == (4, 3, 32, 32)


@pytest.mark.parametrize(
    "pixels",
    [np.full((16, 16, 3), np.nan, np.float32), torch.full((3, 16, 16), float("inf"))],
    ids=["numpy-nan", "torch-inf"],
)
def test_non_finite_image_pixels_are_rejected(image_processor, pixels):
    with pytest.raises(ValueError, match=r"images\[1\] has 768 non-finite pixel value\(s\) \(NaN or infinity\)"):
        image_processor([np.zeros((16, 16, 3), np.float32), pixels], do_rescale=False)


def test_non_finite_video_pixels_are_rejected():
    video = np.zeros((4, 16, 16, 3), np.float32)
    video[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`videos` has 1 non-finite pixel value\(s\)"):
        SCLVideoProcessor()(video, do_rescale=False)
    finite = [torch.zeros(3, 16, 16)] * 2
    infinite = [torch.zeros(3, 16, 16), torch.full((3, 16, 16), -float("inf"))]
    with pytest.raises(ValueError, match=r"videos\[1\] has 768 non-finite"):
        SCLVideoProcessor()([finite, infinite], do_rescale=False, do_sample_frames=False)


def test_non_finite_pixels_are_rejected_by_the_processor(processor):
    with pytest.raises(ValueError, match="non-finite pixel value"):
        processor(text="a cat", images=np.full((16, 16, 3), np.nan, np.float32), do_rescale=False)


@pytest.mark.parametrize("image_format, suffix", [("JPEG", ".mp4"), ("PNG", ".avi")])
def test_image_file_passed_as_a_video_is_refused(tmp_path, image_format, suffix):
    path = tmp_path / f"cat{suffix}"
    sample_image().save(path, format=image_format)
    with pytest.raises(ValueError, match=rf"'{path}' is an image \({image_format}\), not a video"):
        SCLVideoProcessor()(str(path))
    with pytest.raises(ValueError, match=rf"videos\[0\] is an image \({image_format}\), not a video"):
        SCLVideoProcessor()([path.read_bytes(), str(path)])


def test_real_video_is_not_mistaken_for_an_image():
    video = require_sample_video()
    assert SCLVideoProcessor(size=32)(video, return_tensors="pt").pixel_values_videos.shape == (1, 4, 3, 32, 32)


def test_directory_is_reported_as_a_directory(image_processor, tmp_path):
    with pytest.raises(IsADirectoryError, match=f"Image file '{tmp_path}' is a directory, not an image file"):
        image_processor(str(tmp_path))
    with pytest.raises(IsADirectoryError, match=f"Video file '{tmp_path}' is a directory, not a video file"):
        SCLVideoProcessor()(str(tmp_path))


def test_text_limits_come_from_the_roberta_position_table(tokenizer):
    # RoBERTa numbers positions from pad_token_id + 1 = 2, so a 64-row table holds 62 tokens. Run it to be sure.
    config = tiny_config()
    assert text_limits_from_config(config) == {"max_text_length": 62, "text_vocab_size": 400}
    assert text_limits_from_config(config.to_dict()) == text_limits_from_config(config)
    model = SCLModel(config).eval()
    pixels = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        model(input_ids=torch.full((1, 62), 5), pixel_values=pixels)
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, 63), 5), pixel_values=pixels)
    processor = _limited_processor(tokenizer, config)
    long_text = "the cat sits on the mat near a small dog " * 20
    inputs = processor(text=long_text, images=sample_image(), max_length=62, return_tensors="pt")
    assert inputs.input_ids.shape == (1, 62)
    with torch.no_grad():
        assert model(**inputs).text_features.shape[:2] == (1, 62)


def test_default_max_length_is_capped_by_a_short_position_table(tokenizer):
    text_config = {**tiny_config().text_config.to_dict(), "max_position_embeddings": 16}
    config = tiny_config(text_config=text_config)
    processor = _limited_processor(tokenizer, config)
    assert processor.max_text_length == 14
    inputs = processor(
        text="the cat sits on the mat near a small dog " * 3, images=sample_image(), return_tensors="pt"
    )
    assert inputs.input_ids.shape == (1, 14)
    with torch.no_grad():
        assert SCLModel(config).eval()(**inputs).text_features.shape[:2] == (1, 14)
    assert _limited_processor(tokenizer)(text="a cat", return_tensors="pt").input_ids.shape == (1, 50)  # spec §1.3


def test_max_length_longer_than_the_position_table_is_refused(tokenizer):
    processor = _limited_processor(tokenizer)
    message = r"max_length=100 is longer than the model's text position table, which holds max_text_length=62 tokens"
    with pytest.raises(ValueError, match=message):
        processor(text="a cat", max_length=100)
    with pytest.raises(ValueError, match=message):
        processor(text="a cat", text_kwargs={"max_length": 100})


def test_untruncated_text_longer_than_the_position_table_is_refused(tokenizer):
    processor = _limited_processor(tokenizer)
    long_text = "the cat sits on the mat near a small dog " * 20
    with pytest.raises(ValueError, match=r"The text is \d+ tokens long, more than .*max_text_length=62"):
        processor(text=long_text, truncation=False, padding="longest")


def test_token_ids_outside_the_model_vocabulary_are_refused(tokenizer):
    grown = copy.deepcopy(tokenizer)
    grown.add_tokens(["<shape>"])
    processor = SCLProcessor(
        SCLImageProcessor(size=32), SCLVideoProcessor(size=32), grown, text_vocab_size=len(tokenizer)
    )
    processor(text="a red circle")
    with pytest.raises(
        ValueError,
        match=rf"token id {len(tokenizer)} \('<shape>'\), outside the model's vocabulary of {len(tokenizer)} ids",
    ):
        processor(text="a <shape> circle")


def test_model_limits_are_saved_with_the_processor(tokenizer, tmp_path):
    _limited_processor(tokenizer).save_pretrained(tmp_path)
    reloaded = SCLProcessor.from_pretrained(tmp_path)
    assert (reloaded.max_text_length, reloaded.text_vocab_size) == (62, 400)


def test_processor_saved_without_limits_reads_them_from_the_model_config_beside_it(processor, tmp_path):
    text_config = {**tiny_config().text_config.to_dict(), "max_position_embeddings": 16}
    SCLModel(tiny_config(text_config=text_config)).save_pretrained(tmp_path)
    # A call without truncation leaves `max_length: None` in the saved tokenizer's init kwargs; it must not win.
    processor(text="a cat " * 30, truncation=False, padding="longest")
    processor.save_pretrained(tmp_path)
    for loaded in (SCLProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert (loaded.max_text_length, loaded.text_vocab_size) == (14, 400)
        assert loaded(text="a cat", return_tensors="pt").input_ids.shape == (1, 14)
    processor.save_pretrained(tmp_path / "alone")
    assert SCLProcessor.from_pretrained(tmp_path / "alone").max_text_length is None


def test_reloaded_processor_equals_the_saved_one(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert SCLProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_scl.SCLProcessor"}  # still written, for remote code


def test_call_annotates_its_inputs_like_transformers_processors():
    parameters = inspect.signature(SCLProcessor.__call__).parameters
    for name in ("images", "text", "videos", "kwargs"):
        assert parameters[name].annotation is not inspect.Parameter.empty, name
    assert "audio" not in parameters  # SCL has no audio tower: see test_audio_is_refused


def test_audio_is_refused(processor):
    with pytest.raises(ValueError, match="SCL has no audio input"):
        processor(text="a cat", audio=np.zeros(16000, np.float32))


def test_videos_nested_per_sample_are_one_video_each(processor, coded_video):
    video = np.zeros((3, 32, 32, 3), np.uint8)
    outputs = processor(text=["a", "b"], videos=[[coded_video], [video]], return_tensors="pt")
    assert outputs.pixel_values_videos.shape == (2, 4, 3, 32, 32)


def test_a_text_without_its_image_is_refused(processor):
    with pytest.raises(ValueError, match=r"images\[0\] is empty: SCL fuses every text with its image"):
        processor(text=["a", "b"], images=[[], [sample_image()]])


def test_processor_from_config_matches_the_model(tokenizer):
    config = tiny_config(num_frames=3)
    processor = SCLProcessor.from_config(tokenizer, config)
    assert processor.image_processor.size.height == processor.image_processor.size.width == config.image_size
    assert processor.video_processor.num_frames == 3
    assert processor.video_processor.max_frames == config.vision_config.max_frames
    assert (processor.max_text_length, processor.text_vocab_size) == (62, 400)  # RoBERTa: 64 positions hold 62 tokens
    video = np.zeros((6, 40, 48, 3), np.uint8)
    outputs = processor(text=["a red circle"], videos=[video], return_tensors="pt")
    assert outputs["pixel_values_videos"].shape == (1, 3, 3, 32, 32) and outputs["input_ids"].shape == (1, 50)
