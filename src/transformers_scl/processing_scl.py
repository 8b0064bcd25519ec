"""SCL processor: one callable for text (RoBERTa BPE), images and videos."""

from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin


class SCLProcessor(ProcessorMixin):
    r"""
    Wraps an `SCLImageProcessor`, an `SCLVideoProcessor` and a RoBERTa tokenizer into one processor.

    Text is padded and truncated to 50 tokens by default (spec §1.3: `max_text_len` 50, captions padded to
    `max_length`); override per call with e.g. `max_length=40` or `padding="longest"`.

    Args:
        image_processor (`SCLImageProcessor`):
            Turns images into `pixel_values` (B, 3, H, W).
        video_processor (`SCLVideoProcessor`):
            Turns videos into `pixel_values_videos` (B, F, 3, H, W).
        tokenizer (`RobertaTokenizer`):
            Byte-level BPE tokenizer giving `input_ids` and `attention_mask`.
    """

    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 50}  # spec §1.3

    def __init__(self, image_processor, video_processor, tokenizer):
        super().__init__(image_processor, video_processor, tokenizer)

    def __call__(self, images=None, text=None, videos=None, **kwargs) -> BatchFeature:
        """
        Process any of `images`, `text` and `videos`. Returns a `BatchFeature` with `input_ids` and `attention_mask`
        (for text), `pixel_values` (for images) and `pixel_values_videos` (for videos). Keyword arguments go to the
        sub-processor that accepts them, e.g. `return_tensors="pt"`, `max_length=40`, `num_frames=8`,
        `frame_sampling="random"`, `seed=0`, `size=384`.
        """
        return super().__call__(images=images, text=text, videos=videos, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if isinstance(text, (list, tuple)):
            if not text:
                raise ValueError("`text` is empty: pass a string or a non-empty list of strings.")
            for index, sample in enumerate(text):
                if not isinstance(sample, str):
                    raise TypeError(f"text[{index}] must be a string, got {type(sample).__name__}: {sample!r}.")
        elif text is not None and not isinstance(text, str):
            raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}: {text!r}.")
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)


SCLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["SCLProcessor"]
