"""SCL image processor, torchvision backend (the default backend; batched and GPU-capable)."""

from transformers.image_processing_backends import TorchvisionBackend

from .image_processing_pil_scl import SCLImageProcessingMixin


class SCLImageProcessor(SCLImageProcessingMixin, TorchvisionBackend):
    r"""
    SCL image processor: square bicubic resize to `size` (default 288x288, ignoring the aspect ratio), rescale by 1/255,
    CLIP normalization (spec §1.2 `clip_test`). Outputs `pixel_values` of shape (B, 3, H, W); no padding, no pixel mask.

    Accepts PIL images, numpy arrays, torch tensors and local image file paths. Grayscale and RGBA inputs are converted
    to RGB; other channel counts are rejected with an error naming the image. `SCLImageProcessorPil` is the PIL
    backend of the same transform.
    """

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
