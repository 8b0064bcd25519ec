"""SCL video processor: PyAV decoding, SCL's two frame-sampling schemes, and the image transform applied per frame."""

import io
import os
from typing import Any, Literal

import av
import numpy as np
import PIL.Image
import torch
from transformers.image_transforms import convert_to_rgb as convert_pil_to_rgb
from transformers.image_utils import SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .image_processing_pil_scl import (
    VALID_CHANNEL_COUNTS,
    SCLEvalTransformDefaults,
    check_finite,
    check_image_array,
    check_square_size,
)

logger = logging.get_logger(__name__)

FRAME_SAMPLING_MODES = ("uniform", "random")


class SCLVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    max_frames (`int`, *optional*, defaults to 8):
        Largest number of frames the model accepts (`vision_config.max_frames`, the rows of the temporal embedding).
    frame_sampling (`str`, *optional*, defaults to `"uniform"`):
        `"uniform"` (evaluation) or `"random"` (training); see `sample_frame_indices`.
    seed (`int`, *optional*):
        Seeds the `"random"` sampling of one call (ignored when `generator` is given).
    generator (`torch.Generator`, *optional*):
        Random generator for `"random"` sampling.
    """

    max_frames: int
    frame_sampling: Literal["uniform", "random"]
    seed: int | None
    generator: torch.Generator | None


def sample_frame_indices(
    total_num_frames: int,
    num_frames: int,
    frame_sampling: str = "uniform",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """
    Pick `num_frames` frame indices from a video of `total_num_frames` frames (spec §1.2, "Frames").

    - `"uniform"` (evaluation): `round(linspace(0, total - 1, num_frames))`.
    - `"random"` (training): split `[0, total)` into `num_frames` equal segments `[floor(k*total/F),
      floor((k+1)*total/F))` and draw one frame uniformly from each.

    A video shorter than `num_frames` still yields `num_frames` indices, some repeated (linspace rounding, or a
    one-frame segment), so every clip of a batch has the same length.
    """
    if total_num_frames < 1:
        raise ValueError(f"Cannot sample frames from a video with {total_num_frames} frames.")
    if frame_sampling == "uniform":
        return np.round(np.linspace(0, total_num_frames - 1, num_frames)).astype(np.int64)
    if frame_sampling == "random":
        bounds = np.linspace(0, total_num_frames, num_frames + 1).astype(np.int64)  # floor of k * T / F
        low = np.minimum(bounds[:-1], total_num_frames - 1)
        high = np.maximum(bounds[1:], low + 1)  # an empty segment (T < F) holds its single start frame
        offsets = torch.rand(num_frames, generator=generator, dtype=torch.float64).numpy()
        return (low + np.floor(offsets * (high - low))).astype(np.int64)
    raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING_MODES}, got {frame_sampling!r}.")


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, torch.Tensor))


def _is_video_source(value: Any) -> bool:
    """A file path, raw bytes or a binary file-like object: something PyAV decodes."""
    return isinstance(value, (str, os.PathLike, bytes)) or (hasattr(value, "read") and hasattr(value, "seek"))


class _VideoSource:
    """Re-openable handle on a path, bytes or file-like object (decoding may need two passes)."""

    def __init__(self, source: Any, name: str):
        self.name = name
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            raise IsADirectoryError(f"Video file {name} is a directory, not a video file.")
        if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
            raise FileNotFoundError(f"Video file {name} does not exist.")
        self.source = source
        self.start = source.tell() if hasattr(source, "tell") else None
        self._refuse_still_image()

    def _refuse_still_image(self) -> None:
        # FFmpeg decodes a still image as a one-frame "video" that frame sampling would repeat: refuse it by name.
        try:
            with PIL.Image.open(self.source) as image:  # reads the header only
                still = image.format != "MPEG" and getattr(image, "n_frames", 1) == 1  # MPEG: identified, not read
                image_format = image.format
        except (OSError, ValueError, SyntaxError):  # not an image PIL knows: leave it to PyAV
            still = False
        finally:
            if self.start is not None:
                self.source.seek(self.start)
        if still:
            raise ValueError(
                f"{self.name} is an image ({image_format}), not a video: pass it as `images`, or as a one-frame video "
                "(a list holding the decoded image)."
            )

    def open(self) -> "av.container.InputContainer":
        if self.start is not None:
            self.source.seek(self.start)
        try:
            container = av.open(self.source, mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise ValueError(f"Cannot read video {self.name}: {error}") from error
        if not container.streams.video:
            container.close()
            raise ValueError(f"Video {self.name} contains no video stream.")
        return container


def _count_frames(container, stream) -> int:
    # Some containers (e.g. Matroska) do not store a frame count: count the packets, which costs no decoding.
    return sum(1 for packet in container.demux(stream) if packet.size > 0)


def _decode_frames(source: _VideoSource, indices: np.ndarray) -> tuple[np.ndarray | None, int]:
    """
    Decode the frames at `indices` (in that order, repeats allowed), stopping after the last one and keeping only the
    wanted frames in memory. Returns `(None, frames_seen)` if the stream ends before the last wanted frame.
    """
    wanted = set(indices.tolist())
    last = max(wanted)
    kept: dict[int, np.ndarray] = {}
    frames_seen = 0
    with source.open() as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                frames_seen = index + 1
                if index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
        except (av.error.FFmpegError, ValueError) as error:
            raise ValueError(f"Cannot decode video {source.name}: {error}") from error
    if len(kept) < len(wanted):
        return None, frames_seen
    return np.stack([kept[index] for index in indices.tolist()]), frames_seen


def decode_video(source: Any, sample_indices=None, name: str = "video") -> tuple[torch.Tensor, VideoMetadata]:
    """
    Decode a video file path, bytes or file-like object with PyAV into a uint8 tensor (T, 3, H, W).

    `sample_indices(metadata) -> indices` picks the frames to decode (`None`: all frames). Frames are decoded in order
    and only the picked ones are kept, so a long video is never held in memory.
    """
    source = _VideoSource(source, name)
    with source.open() as container:
        stream = container.streams.video[0]
        try:
            total = stream.frames or _count_frames(container, stream)
        except av.error.FFmpegError as error:
            raise ValueError(f"Cannot read video {name}: {error}") from error
        fps = float(stream.average_rate) if stream.average_rate else None
        height, width = stream.height, stream.width
    if total == 0:
        raise ValueError(f"Video {name} has no frames.")

    def pick(total_num_frames: int) -> tuple[np.ndarray, VideoMetadata]:
        metadata = VideoMetadata(
            total_num_frames=total_num_frames,
            fps=fps,
            duration=total_num_frames / fps if fps else None,
            video_backend="pyav",
            height=height,
            width=width,
        )
        indices = np.arange(total_num_frames) if sample_indices is None else np.asarray(sample_indices(metadata))
        metadata.frames_indices = indices.tolist()
        return indices, metadata

    indices, metadata = pick(total)
    frames, frames_seen = _decode_frames(source, indices)
    if frames is None:
        # The header over-counted the frames (it happens with damaged or odd files): sample again from what is there.
        if frames_seen == 0:
            raise ValueError(f"Video {name} has no decodable frames.")
        logger.warning(f"Video {name} declares {total} frames but only {frames_seen} decode; sampling from those.")
        indices, metadata = pick(frames_seen)
        frames, _ = _decode_frames(source, indices)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), metadata


def frames_to_tensor(video: Any, name: str) -> torch.Tensor:
    """
    Turn already-decoded frames into a tensor (T, C, H, W): a list of PIL images / (H, W[, C]) arrays, or one
    (T, H, W, C) / (T, C, H, W) numpy array or torch tensor. C must be 1, 3 or 4.
    """
    if isinstance(video, (list, tuple)):
        if not video:
            raise ValueError(f"{name} has no frames.")
        frames = []
        for index, frame in enumerate(video):
            frame_name = f"{name} frame {index}"
            if isinstance(frame, PIL.Image.Image):
                frame = convert_pil_to_rgb(frame, return_numpy=True)
            elif _is_array(frame):
                check_image_array(frame, frame_name)
                frame = frame.numpy() if isinstance(frame, torch.Tensor) else frame
                if frame.ndim == 2:
                    frame = frame[..., None]
                elif frame.shape[-1] not in VALID_CHANNEL_COUNTS:
                    frame = np.moveaxis(frame, 0, -1)
            else:
                raise TypeError(
                    f"{frame_name} must be a PIL image, a numpy array or a torch tensor; got {type(frame).__name__}."
                )
            if frames and frame.shape != frames[0].shape:
                raise ValueError(
                    f"{name}: every frame must have the same shape, but frame 0 has shape {frames[0].shape} and "
                    f"{frame_name.split(' ', 1)[1]} has shape {frame.shape}."
                )
            frames.append(frame)
        video = np.stack(frames)
    if not _is_array(video):
        raise TypeError(
            f"{name} must be a video file path, bytes, a file-like object, a list of frames, a numpy array or a torch "
            f"tensor; got {type(video).__name__}."
        )
    shape = tuple(video.shape)
    if len(shape) != 4:
        raise ValueError(f"{name} has shape {shape}: expected frames of shape (T, H, W, C) or (T, C, H, W).")
    if shape[0] == 0:
        raise ValueError(f"Video {name} has no frames.")
    check_finite(video, name)
    video = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if shape[-1] in VALID_CHANNEL_COUNTS:
        video = video.permute(0, 3, 1, 2)
    elif shape[1] not in VALID_CHANNEL_COUNTS:
        raise ValueError(
            f"{name} has shape {shape}: expected frames of shape (T, H, W, C) or (T, C, H, W) with C = 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA)."
        )
    return video.contiguous()


def _is_per_sample_list(item: Any) -> bool:
    """A list of whole videos (files, bytes, (T, ...) arrays), as opposed to one video given as a list of frames."""
    return isinstance(item, (list, tuple)) and all(
        _is_video_source(video) or (_is_array(video) and video.ndim == 4) for video in item
    )


def _split_videos(videos: Any) -> tuple[list, bool]:
    """Return `(list of videos, whether a batch was passed)`."""
    if _is_video_source(videos):
        return [videos], False
    if _is_array(videos):
        if videos.ndim == 5:
            return list(videos), True
        return [videos], False
    if isinstance(videos, (list, tuple)):
        if not videos:
            raise ValueError("`videos` is empty: pass at least one video.")
        first = videos[0]
        if isinstance(first, PIL.Image.Image) or (_is_array(first) and first.ndim <= 3):
            return [videos], False  # one video given as a list of frames
        flat = []
        for item in videos:
            if _is_per_sample_list(item):
                flat.extend(item)  # transformers' nested layout: the videos of one sample
            else:
                flat.append(item)
        if not flat:
            raise ValueError("`videos` holds no video: every entry is an empty list.")
        return flat, True
    raise TypeError(
        "`videos` must be a video file path, bytes, a file-like object, a list of frames, a numpy array, a torch "
        f"tensor, or a list of those; got {type(videos).__name__}."
    )


class SCLVideoProcessor(SCLEvalTransformDefaults, BaseVideoProcessor):
    r"""
    SCL video processor. Decodes videos with PyAV (from a path, bytes or a file-like object) or takes decoded frames,
    samples `num_frames` frames (default 4, at most `max_frames` = 8; spec §1.2), and gives every frame exactly the
    image transform of `SCLImageProcessor`: square bicubic resize, rescale by 1/255, CLIP normalization. Outputs
    `pixel_values_videos` of shape (B, F, 3, H, W).

    Frame sampling (`frame_sampling`): `"uniform"` for evaluation, `"random"` for training (one random frame in each
    of F equal segments, reproducible with `seed=` or `generator=`); see `sample_frame_indices`. Videos shorter than F
    frames repeat frames. With `do_sample_frames=False` every frame is kept, and there may be at most `max_frames`.
    """

    valid_kwargs = SCLVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]
    do_sample_frames = True
    num_frames = 4  # spec §1.2: 4 frames for pre-training, MSRVTT and LSMDC
    max_frames = 8  # spec §1.2: the temporal embedding has 8 rows
    frame_sampling = "uniform"

    def __init__(self, **kwargs: Unpack[SCLVideoProcessorKwargs]):
        super().__init__(**kwargs)
        self._check_sampling(self.num_frames, self.max_frames, self.frame_sampling)

    @staticmethod
    def _check_sampling(num_frames: int | None, max_frames: int, frame_sampling: str) -> None:
        if num_frames is not None and not 1 <= num_frames <= max_frames:
            raise ValueError(
                f"num_frames={num_frames} is not in [1, max_frames={max_frames}]: the SCL vision tower has a temporal "
                f"embedding for at most {max_frames} frames (vision_config.max_frames)."
            )
        if frame_sampling not in FRAME_SAMPLING_MODES:
            raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLING_MODES}, got {frame_sampling!r}.")

    def preprocess(self, videos, **kwargs: Unpack[SCLVideoProcessorKwargs]):
        self._check_sampling(
            kwargs.get("num_frames", self.num_frames),
            kwargs.get("max_frames", self.max_frames),
            kwargs.get("frame_sampling", self.frame_sampling),
        )
        if kwargs.get("fps") is not None:
            raise ValueError("SCL samples a fixed number of frames (`num_frames`); `fps` sampling is not supported.")
        seed = kwargs.pop("seed", None)
        if seed is None:
            seed = self.seed
        if kwargs.get("generator") is None and seed is not None:
            # one generator for the whole call: videos of a batch get different, reproducible draws
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        return super().preprocess(videos, **kwargs)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        frame_sampling: str | None = None,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> np.ndarray:
        return sample_frame_indices(
            metadata.total_num_frames,
            num_frames if num_frames is not None else self.num_frames,
            frame_sampling if frame_sampling is not None else self.frame_sampling,
            generator=generator,
        )

    def _decode_and_sample_videos(self, videos, video_metadata=None, do_sample_frames=None, sample_indices_fn=None):
        videos, batched = _split_videos(videos)
        sampler = sample_indices_fn if do_sample_frames else None
        decoded, metadata = [], []
        for index, video in enumerate(videos):
            name = f"videos[{index}]" if batched else "`videos`"
            if _is_video_source(video):
                if isinstance(video, (str, os.PathLike)):
                    name = f"{name} ({str(video)!r})" if batched else repr(str(video))
                frames, video_metadata_i = decode_video(
                    video, None if sampler is None else (lambda meta: sampler(metadata=meta)), name=name
                )
            else:
                frames = frames_to_tensor(video, name)
                video_metadata_i = VideoMetadata(
                    total_num_frames=len(frames), height=frames.shape[-2], width=frames.shape[-1]
                )
                indices = np.arange(len(frames)) if sampler is None else sampler(metadata=video_metadata_i)
                video_metadata_i.frames_indices = list(indices)
                frames = frames[torch.as_tensor(indices)]
            decoded.append(frames)
            metadata.append(video_metadata_i)
        return decoded, metadata

    def _prepare_input_videos(self, videos, do_convert_rgb=None, input_data_format=None, device=None):
        # `_decode_and_sample_videos` already gives channels-first tensors with 1, 3 or 4 channels
        prepared = []
        for video in videos:
            if do_convert_rgb:
                video = self.convert_to_rgb(video)
            prepared.append(video.to(device) if device is not None else video)
        return prepared

    def _validate_preprocess_kwargs(self, size: SizeDict | None = None, do_resize: bool | None = None, **kwargs):
        if do_resize:
            check_square_size(size)
        super()._validate_preprocess_kwargs(size=size, do_resize=do_resize, **kwargs)

    def _preprocess(self, videos, max_frames: int | None = None, **kwargs):
        max_frames = max_frames if max_frames is not None else self.max_frames
        for index, video in enumerate(videos):
            if len(video) > max_frames:
                raise ValueError(
                    f"videos[{index}] has {len(video)} frames but the model takes at most max_frames={max_frames}: "
                    "sample frames (`do_sample_frames=True`, `num_frames`) or pass fewer."
                )
        return super()._preprocess(videos, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        output.pop("generator", None)  # a random state, not configuration
        return output


SCLVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["SCLVideoProcessor", "sample_frame_indices"]
