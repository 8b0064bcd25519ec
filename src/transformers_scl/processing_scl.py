"""SCL processor: one callable for text (RoBERTa BPE), images and videos, and the checks of what enters the model."""

import os
from typing import Any, Literal

from transformers.configuration_utils import PreTrainedConfig
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import ImageInput
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput
from transformers.video_utils import VideoInput

from .image_processing_scl import SCLImageProcessor
from .video_processing_scl import SCLVideoProcessor, SCLVideoProcessorKwargs, _is_per_sample_list, _split_videos

DEFAULT_MAX_TEXT_LENGTH = 50  # spec §1.3: `max_text_len` 50, captions padded to it
TEXT_PAIRING_MODES = ("pairs", "broadcast", "independent")

# Text towers whose position ids start after the padding index (RoBERTa's `create_position_ids_from_input_ids`), so
# `pad_token_id + 1` rows of the position table are never used by a token.
_POSITIONS_AFTER_PADDING_INDEX = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "roberta-prelayernorm",
    "data2vec-text",
    "longformer",
    "xmod",
}


def text_limits_from_config(config: PreTrainedConfig | dict) -> dict[str, int | None]:
    """What the text tower of an SCL model (`SCLConfig` or its `config.json` dict) accepts, as `SCLProcessor`
    arguments: `max_text_length`, the longest token sequence its position table holds (RoBERTa: 514 rows hold 512
    tokens, the first `pad_token_id + 1` rows being unused), and `text_vocab_size`."""
    text = config.get("text_config") if isinstance(config, dict) else getattr(config, "text_config", None)
    if text is None:
        return {"max_text_length": None, "text_vocab_size": None}
    text = text if isinstance(text, dict) else text.to_dict()
    positions = text.get("max_position_embeddings")
    if positions is not None and text.get("model_type") in _POSITIONS_AFTER_PADDING_INDEX:
        positions -= (text.get("pad_token_id") or 0) + 1
    return {"max_text_length": positions, "text_vocab_size": text.get("vocab_size")}


class SCLProcessorKwargs(ProcessingKwargs, total=False):
    r"""
    text_pairing (`str`, *optional*, defaults to `"pairs"`):
        How texts go with images or videos passed in the same call. `"pairs"`: text i belongs to image/video i, so
        the counts must match. `"broadcast"`: one text, repeated for every image/video (e.g. one question about many
        images). `"independent"`: texts and media are separate sets, e.g. the class prompts and the images of
        zero-shot classification, which scores every image against every text.
    """

    videos_kwargs: SCLVideoProcessorKwargs
    text_pairing: Literal["pairs", "broadcast", "independent"]


class SCLProcessor(ProcessorMixin):
    r"""
    Wraps an `SCLImageProcessor`, an `SCLVideoProcessor` and a RoBERTa tokenizer into one processor.

    Text is padded and truncated to 50 tokens by default (spec §1.3: `max_text_len` 50, captions padded to
    `max_length`), or to the model's `max_text_length` if that is shorter; override per call with e.g.
    `max_length=40` or `padding="longest"`. Texts and images/videos of one call are pairs unless `text_pairing` says
    otherwise (see `SCLProcessorKwargs`).

    Args:
        image_processor (`SCLImageProcessor`):
            Turns images into `pixel_values` (B, 3, H, W).
        video_processor (`SCLVideoProcessor`):
            Turns videos into `pixel_values_videos` (B, F, 3, H, W).
        tokenizer (`RobertaTokenizer`):
            Byte-level BPE tokenizer giving `input_ids` and `attention_mask`.
        max_text_length (`int`, *optional*):
            Longest token sequence the model's text position table holds (`text_limits_from_config`). Longer
            requests are refused here instead of failing inside the model. When `None` and the processor is loaded
            from a folder that also holds the model's `config.json`, it is read from there.
        text_vocab_size (`int`, *optional*):
            The model's text vocabulary size: token ids at or above it are refused. Found like `max_text_length`.
    """

    valid_processor_kwargs = SCLProcessorKwargs
    text_kwargs = {"padding": "max_length", "truncation": True, "max_length": DEFAULT_MAX_TEXT_LENGTH}

    def __init__(
        self,
        image_processor,
        video_processor,
        tokenizer,
        max_text_length: int | None = None,
        text_vocab_size: int | None = None,
    ):
        for name, value in (("max_text_length", max_text_length), ("text_vocab_size", text_vocab_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")
        self._set_model_limits(max_text_length, text_vocab_size)
        super().__init__(image_processor, video_processor, tokenizer)

    @classmethod
    def from_config(cls, tokenizer, config: PreTrainedConfig) -> "SCLProcessor":
        """A processor for a model of `config` (an `SCLConfig`), e.g. one trained from scratch: square resize to
        `config.image_size`, `config.num_frames` frames per video, the model's text limits, and `tokenizer`."""

        size = {"height": config.image_size, "width": config.image_size}
        video_processor = SCLVideoProcessor(
            size=size, num_frames=config.num_frames, max_frames=config.vision_config.max_frames
        )
        return cls(SCLImageProcessor(size=size), video_processor, tokenizer, **text_limits_from_config(config))

    def _set_model_limits(self, max_text_length: int | None, text_vocab_size: int | None) -> None:
        self.max_text_length = max_text_length
        self.text_vocab_size = text_vocab_size
        if max_text_length is not None and max_text_length < DEFAULT_MAX_TEXT_LENGTH:
            # The default length, capped by the position table. Processor attributes are the lowest-priority
            # defaults (below tokenizer init kwargs and call kwargs), and `to_dict` does not save this one.
            self.text_kwargs = {**type(self).text_kwargs, "max_length": max_text_length}

    def __call__(
        self,
        images: ImageInput | None = None,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] | None = None,
        videos: VideoInput | None = None,
        **kwargs: Unpack[SCLProcessorKwargs],
    ) -> BatchFeature:
        """
        Process any of `images`, `text` and `videos`. Returns a `BatchFeature` with `input_ids` and `attention_mask`
        (for text), `pixel_values` (for images) and `pixel_values_videos` (for videos). Keyword arguments go to the
        sub-processor that accepts them, e.g. `return_tensors="pt"`, `max_length=40`, `num_frames=8`,
        `frame_sampling="random"`, `seed=0`, `size=384`; `text_pairing` is described in `SCLProcessorKwargs`.
        """
        # No `audio` parameter: SCL has no audio tower, and a named parameter would invite inputs to be ignored.
        if kwargs.get("audio") is not None:
            raise ValueError("SCL has no audio input: pass `images`, `videos` and/or `text`.")
        _check_text_type(text)
        text_pairing = kwargs.pop("text_pairing", "pairs")
        if text_pairing not in TEXT_PAIRING_MODES:
            raise ValueError(f"`text_pairing` must be one of {TEXT_PAIRING_MODES}, got {text_pairing!r}.")
        if text is not None and (images is not None or videos is not None):
            text = self._pair_texts_with_media(text, images, videos, text_pairing)
        if text is not None:
            self._check_requested_text_length(kwargs)
        outputs = super().__call__(images=images, text=text, videos=videos, **kwargs)
        if "input_ids" in outputs:
            self._check_token_ids(outputs["input_ids"])
        return outputs

    def _pair_texts_with_media(self, text, images, videos, text_pairing: str):
        if text_pairing == "independent":
            return text
        num_texts = 1 if isinstance(text, str) else len(text)
        counts = {}
        for name, media, count in (("images", images, _num_images), ("videos", videos, _num_videos)):
            if media is not None:
                _check_no_empty_sample(name, media)
                counts[name] = count(media)
        if text_pairing == "broadcast":
            if num_texts != 1:
                raise ValueError(
                    f"text_pairing='broadcast' repeats one text for every image/video, but {num_texts} texts were "
                    "passed."
                )
            if len(set(counts.values())) > 1:
                raise ValueError(f"Cannot broadcast one text over different numbers of media: {counts}.")
            return [text if isinstance(text, str) else text[0]] * next(iter(counts.values()))
        for name, count in counts.items():
            if count != num_texts:
                raise ValueError(
                    f"Got {num_texts} text(s) and {count} {name[:-1]}(s): text i is paired with {name[:-1]} i, so "
                    f"the counts must match. Pass text_pairing='broadcast' to use one text for every {name[:-1]}, or "
                    "text_pairing='independent' for separate sets (e.g. zero-shot classification)."
                )
        return text

    def _check_requested_text_length(self, kwargs: dict) -> None:
        requested = kwargs.get("max_length", kwargs.get("text_kwargs", {}).get("max_length"))
        if self.max_text_length is not None and requested is not None and requested > self.max_text_length:
            raise ValueError(
                f"max_length={requested} is longer than the model's text position table, which holds "
                f"max_text_length={self.max_text_length} tokens (text_config.max_position_embeddings). Use "
                f"max_length <= {self.max_text_length}."
            )

    def _check_token_ids(self, input_ids: Any) -> None:
        rows = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        rows = [rows] if rows and not isinstance(rows[0], list) else rows  # one text without return_tensors
        if not rows:
            return
        length = max(len(row) for row in rows)
        if self.max_text_length is not None and length > self.max_text_length:
            raise ValueError(
                f"The text is {length} tokens long, more than the model's text position table holds "
                f"(max_text_length={self.max_text_length}): truncate it (`truncation=True`, `max_length`)."
            )
        if self.text_vocab_size is not None:
            largest = max((max(row) for row in rows if row), default=-1)
            if largest >= self.text_vocab_size:
                token = self.tokenizer.convert_ids_to_tokens(largest)
                raise ValueError(
                    f"The tokenizer produced token id {largest} ({token!r}), outside the model's vocabulary of "
                    f"{self.text_vocab_size} ids (text_config.vocab_size); the tokenizer has {len(self.tokenizer)} "
                    "tokens. Use the model's tokenizer, or resize the model's embeddings "
                    "(`model.resize_token_embeddings`) and save the processor again."
                )

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs: dict | None = None, **kwargs):
        # A tokenizer saved after a call with `truncation=False` reloads with `max_length: None` (and other `None`s)
        # in its init kwargs, which would override the default text length: an unset value is not a setting.
        if tokenizer_init_kwargs is not None:
            tokenizer_init_kwargs = {key: value for key, value in tokenizer_init_kwargs.items() if value is not None}
        return super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs=tokenizer_init_kwargs, **kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        # Saving as remote code sets `auto_map` on the processor, for `processor_config.json`; `from_pretrained`
        # drops it when loading. Drop it here as well once written, so the saved and the reloaded processor are equal.
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            self.__dict__.pop("auto_map", None)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """`ProcessorMixin.from_pretrained`; the model limits missing from an older `processor_config.json` are read
        from the `config.json` saved beside it, if there is one."""
        result = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        processor = result[0] if isinstance(result, tuple) else result
        if processor.max_text_length is None or processor.text_vocab_size is None:
            hub_kwargs = {
                key: kwargs[key]
                for key in ("cache_dir", "force_download", "local_files_only", "revision", "token", "subfolder")
                if key in kwargs
            }
            try:
                config, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except (OSError, ValueError):  # a processor-only folder or repository
                config = {}
            limits = text_limits_from_config(config)
            processor._set_model_limits(
                processor.max_text_length or limits["max_text_length"],
                processor.text_vocab_size or limits["text_vocab_size"],
            )
        return result


def _check_text_type(text: Any) -> None:
    if isinstance(text, (list, tuple)):
        if not text:
            raise ValueError("`text` is empty: pass a string or a non-empty list of strings.")
        for index, sample in enumerate(text):
            if not isinstance(sample, str):
                raise TypeError(f"text[{index}] must be a string, got {type(sample).__name__}: {sample!r}.")
    elif text is not None and not isinstance(text, str):
        raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}: {text!r}.")


def _is_empty_list(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and len(item) == 0


def _num_videos(videos: Any) -> int:
    """Samples in a `videos` argument: like `SCLVideoProcessor`'s batching, but a nested per-sample list counts once."""
    if isinstance(videos, (list, tuple)) and videos and all(isinstance(item, (list, tuple)) for item in videos):
        if all(_is_empty_list(item) or _is_per_sample_list(item) for item in videos):
            return len(videos)
    return len(_split_videos(videos)[0])


def _check_no_empty_sample(name: str, media) -> None:
    """A sample given as an empty list has no image/video to fuse its text with."""
    if not isinstance(media, (list, tuple)):
        return
    empty = [i for i, item in enumerate(media) if _is_empty_list(item)]
    if empty:
        raise ValueError(
            f"{name}[{empty[0]}] is empty: SCL fuses every text with its {name[:-1]}, so a sample without "
            f"one cannot share a batch with the others (samples without media: {empty})."
        )


def _num_images(images: Any) -> int:
    """Samples in an `images` argument: a list holds one entry per sample (an entry may itself be a list, e.g. an
    NLVR2 pair), a 4-d array is a batch, anything else is one image."""
    if isinstance(images, (list, tuple)):
        return len(images)
    if hasattr(images, "ndim") and images.ndim == 4:
        return images.shape[0]
    return 1


SCLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["SCLProcessor", "SCLProcessorKwargs", "text_limits_from_config"]
