"""The vendored test videos: present, licensed, as documented, and decoded frame-exactly by the video processor."""

import av
import numpy as np
import pytest
from media import DATA_DIR, SAMPLE_VIDEOS, sample_video_path

from transformers_scl.video_processing_scl import SCLVideoProcessor


def test_the_media_folder_states_source_and_licence_of_every_file():
    readme = (DATA_DIR / "README.md").read_text()
    assert "Apache License" in (DATA_DIR / "LICENSE").read_text()
    for name in SAMPLE_VIDEOS:
        assert f"`{name}`" in readme
    assert {path.name for path in DATA_DIR.iterdir()} == {"README.md", "LICENSE", *SAMPLE_VIDEOS}


def test_the_media_stay_small():
    assert sum((DATA_DIR / name).stat().st_size for name in SAMPLE_VIDEOS) < 500_000


def test_an_unknown_sample_video_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown sample video 'missing.mp4'"):
        sample_video_path("missing.mp4")


@pytest.mark.parametrize("name", sorted(SAMPLE_VIDEOS))
def test_sampled_frames_equal_the_same_frames_of_a_full_sequential_decode(name):
    num_frames, (height, width), codec = SAMPLE_VIDEOS[name]
    path = sample_video_path(name)
    with av.open(path) as container:
        assert container.streams.video[0].codec_context.name == codec
        every_frame = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    assert every_frame.shape == (num_frames, height, width, 3)
    assert every_frame.std() > 20  # real footage, not a blank or constant clip

    outputs = SCLVideoProcessor()(
        path, num_frames=6, do_resize=False, do_rescale=False, do_normalize=False, return_metadata=True
    )
    (metadata,) = outputs["video_metadata"]
    assert metadata.total_num_frames == num_frames
    indices = list(metadata.frames_indices)
    assert indices == np.linspace(0, num_frames - 1, 6).round().astype(int).tolist()
    pixels = np.asarray(outputs["pixel_values_videos"][0]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(pixels, every_frame[indices])
