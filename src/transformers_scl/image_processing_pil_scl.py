"""SCL image processor, PIL backend, and the torch-free input checks shared by every SCL processor.

The transform is SCL's evaluation transform `clip_test` (spec §1.2): an exact square bicubic resize that ignores the
aspect ratio, rescale by 1/255, then CLIP mean/std normalization. There is no crop (after a square resize the original
CenterCrop is a no-op) and no padding, so every image of a batch has the same shape and needs no pixel mask.
"""

import os
from typing import Any

import numpy as np
import PIL.Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict

# spec §1.2: 288 px for pre-training and NLVR2; fine-tuned VQA / retrieval checkpoints use 384 (save with `size=384`).
DEFAULT_IMAGE_SIZE = {"height": 288, "width": 288}
VALID_CHANNEL_COUNTS = (1, 3, 4)  # grayscale, RGB, RGBA: all convertible to RGB


def load_image_file(path: str | os.PathLike) -> PIL.Image.Image:
    """Open and fully decode an image file, raising an error that names the file if that is impossible."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"Image file {str(path)!r} is a directory, not an image file.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image file {str(path)!r} does not exist.")
    try:
        with PIL.Image.open(path) as image:
            image.load()  # decode now: a truncated file otherwise fails later, far from its name
            return image.copy()
    except (OSError, PIL.UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ValueError(f"Cannot read image file {str(path)!r}: {error}") from error


def fetch_image_files(images: Any, fetch_url) -> Any:
    """Replace local file paths (also inside lists) by decoded PIL images; hand URLs to `fetch_url`."""
    if isinstance(images, (list, tuple)):
        return [fetch_image_files(image, fetch_url) for image in images]
    if isinstance(images, str) and images.startswith(("http://", "https://")):
        return fetch_url(images)
    if isinstance(images, (str, os.PathLike)):
        return load_image_file(images)
    return images


def check_image_array(image: Any, name: str) -> None:
    """Reject arrays/tensors that are not (H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4}."""
    shape = tuple(image.shape)
    if len(shape) == 2:
        return
    if len(shape) == 3 and (shape[-1] in VALID_CHANNEL_COUNTS or shape[0] in VALID_CHANNEL_COUNTS):
        return
    raise ValueError(
        f"{name} has shape {shape}: expected an image of shape (H, W), (H, W, C) or (C, H, W) with C = 1 (grayscale), "
        "3 (RGB) or 4 (RGBA)."
    )


def check_finite(array: Any, name: str) -> None:
    """Reject float pixels that are NaN or infinite: the model would turn them into NaN outputs without a word."""
    if isinstance(array, np.ndarray):
        if not np.issubdtype(array.dtype, np.floating):
            return
        bad = int(array.size - np.isfinite(array).sum())
    elif hasattr(array, "is_floating_point"):  # a torch tensor (torch is not imported by this module)
        if not array.is_floating_point():
            return
        bad = int(array.numel() - array.isfinite().sum())
    else:
        return
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite pixel value(s) (NaN or infinity) out of {int(np.prod(array.shape))}; "
            "pixels must be finite numbers."
        )


def _is_array(value: Any) -> bool:
    # numpy arrays and torch tensors, without importing torch here
    return hasattr(value, "shape") and hasattr(value, "ndim")


def _leaves(images: Any) -> list:
    if _is_array(images) and images.ndim == 4:  # a batch (B, H, W, C) or (B, C, H, W)
        return list(images)
    if isinstance(images, (list, tuple)):
        return [leaf for item in images for leaf in _leaves(item)]
    return [images]


def flatten_images(images: Any) -> list:
    """
    Turn one image, a batch array (B, H, W, C) / (B, C, H, W), or a (nested) list of images into a flat list, checking
    each image and naming the bad one (`images[i]`, its index in the flat list) in the error.
    """
    flat = _leaves(images)
    if not flat:
        raise ValueError("`images` is empty: pass at least one image.")
    for index, image in enumerate(flat):
        name = f"images[{index}]" if isinstance(images, (list, tuple)) or len(flat) > 1 else "`images`"
        if isinstance(image, PIL.Image.Image):
            continue
        if not _is_array(image):
            raise TypeError(
                f"{name} must be a PIL image, a numpy array, a torch tensor or a file path; got {type(image).__name__}."
            )
        check_image_array(image, name)
        check_finite(image, name)
    return flat


def check_square_size(size: SizeDict | None) -> None:
    """SCL resizes to an exact (height, width), never by shortest edge (spec §1.2 `clip_test`)."""
    if size is not None and (size.height is None or size.width is None):
        raise ValueError(
            f"SCL resizes to an exact size: `size` must be {{'height': h, 'width': w}} or an int, got {dict(size)}."
        )


class SCLEvalTransformDefaults:
    """The eval transform of spec §1.2 `clip_test` (square bicubic resize, rescale, CLIP normalization), as processor
    defaults; the image processors and the video processor (every frame) share them."""

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = DEFAULT_IMAGE_SIZE
    default_to_square = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True


class SCLImageProcessingMixin(SCLEvalTransformDefaults):
    """What both image backends share: the transform's defaults, file and batch handling, and the square-size check."""

    model_input_names = ["pixel_values"]
    do_pad = False

    def fetch_images(self, image_url_or_urls):
        return fetch_image_files(image_url_or_urls, super().fetch_images)

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        return flatten_images(self.fetch_images(images))

    def _validate_preprocess_kwargs(self, size: SizeDict | None = None, do_resize: bool | None = None, **kwargs):
        if do_resize:
            check_square_size(size)
        super()._validate_preprocess_kwargs(size=size, do_resize=do_resize, **kwargs)


class SCLImageProcessorPil(SCLImageProcessingMixin, PilBackend):
    """
    SCL image processor (PIL/NumPy backend): square bicubic resize to `size` (default 288x288), rescale by 1/255, CLIP
    normalization (spec §1.2 `clip_test`). Outputs `pixel_values` of shape (B, 3, H, W).

    Accepts PIL images, numpy arrays, torch tensors and local image file paths. Grayscale and RGBA inputs are converted
    to RGB; other channel counts are rejected.
    """

    def process_image(self, image, *args, **kwargs) -> np.ndarray:
        if _is_array(image) and image.ndim == 2:
            # PilBackend's RGB conversion cannot infer the layout of an (H, W) array: make it (H, W, 1)
            image = image[..., None]
        return super().process_image(image, *args, **kwargs)


SCLImageProcessorPil.register_for_auto_class("AutoImageProcessor")

__all__ = ["SCLEvalTransformDefaults", "SCLImageProcessingMixin", "SCLImageProcessorPil"]
