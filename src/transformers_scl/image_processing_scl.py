"""SCL image processor, torchvision backend (the default backend; batched and GPU-capable)."""

from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict

from .image_processing_pil_scl import DEFAULT_IMAGE_SIZE, check_square_size, fetch_image_files, flatten_images


class SCLImageProcessor(TorchvisionBackend):
    r"""
    SCL image processor: square bicubic resize to `size` (default 288x288, ignoring the aspect ratio), rescale by 1/255,
    CLIP normalization (spec §1.2 `clip_test`). Outputs `pixel_values` of shape (B, 3, H, W); no padding, no pixel mask.

    Accepts PIL images, numpy arrays, torch tensors and local image file paths. Grayscale and RGBA inputs are converted
    to RGB; other channel counts are rejected with an error naming the image. `SCLImageProcessorPil` is the PIL
    backend of the same transform.
    """

    model_input_names = ["pixel_values"]
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
    do_pad = False
    do_convert_rgb = True

    def fetch_images(self, image_url_or_urls):
        # local files go through PIL (any format it reads) with an error naming the file
        return fetch_image_files(image_url_or_urls, super().fetch_images)

    def _prepare_images_structure(self, images, expected_ndims: int = 3) -> list:
        return flatten_images(self.fetch_images(images))

    def _validate_preprocess_kwargs(self, size: SizeDict | None = None, do_resize: bool | None = None, **kwargs):
        if do_resize:
            check_square_size(size)
        super()._validate_preprocess_kwargs(size=size, do_resize=do_resize, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        # When saved as remote code, point `AutoImageProcessor` at both backends: the PIL module is imported above, so
        # `save_pretrained` copies it too and `backend="pil"` works after `trust_remote_code=True` loading.
        auto_map = output.get("auto_map")
        if (
            isinstance(auto_map, dict)
            and auto_map.get("AutoImageProcessor") == "image_processing_scl.SCLImageProcessor"
        ):
            output["auto_map"] = {
                **auto_map,
                "AutoImageProcessor": {
                    "torchvision": "image_processing_scl.SCLImageProcessor",
                    "pil": "image_processing_pil_scl.SCLImageProcessorPil",
                },
            }
        return output


SCLImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["SCLImageProcessor"]
