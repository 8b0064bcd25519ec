"""
Real media for tests: photos bundled with scikit-image, and real camera clips vendored in `modeling_tests/data/`.

The clips are cut from OpenCV's sample video `vtest.avi` (Apache-2.0; source, conversion and licence in
`data/README.md` and `data/LICENSE`). Nothing here touches the network.
"""

from pathlib import Path

import PIL.Image

DATA_DIR = Path(__file__).parent / "data"

# name -> (number of frames, (height, width), codec); `data/README.md` documents the same figures
SAMPLE_VIDEOS = {
    "pedestrians.mp4": (270, (288, 384), "h264"),
    "pedestrians.avi": (120, (240, 320), "mpeg4"),
}
VIDEO_NAME = "pedestrians.mp4"
VIDEO_NUM_FRAMES, VIDEO_SIZE, _ = SAMPLE_VIDEOS[VIDEO_NAME]


def sample_image(name: str = "chelsea") -> PIL.Image.Image:
    """A real RGB photo bundled with scikit-image: `"chelsea"` (a cat, 451x300 px) or `"astronaut"` (512x512 px)."""
    import skimage.data

    return PIL.Image.fromarray(getattr(skimage.data, name)())


def sample_video_path(name: str = VIDEO_NAME) -> str:
    """Path of a vendored real video (one of `SAMPLE_VIDEOS`)."""
    if name not in SAMPLE_VIDEOS:
        raise ValueError(f"unknown sample video {name!r}; the vendored ones are {sorted(SAMPLE_VIDEOS)}")
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the test media ship with the repository (modeling_tests/data)")
    return str(path)


def require_sample_video(name: str = VIDEO_NAME) -> str:
    """Path of a vendored real video. Kept under its old name: the video no longer needs downloading or skipping."""
    return sample_video_path(name)
