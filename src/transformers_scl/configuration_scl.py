"""SCL model configuration.

Defaults reproduce the base model of "Seeing What You Miss: Vision-Language Pre-training with Semantic Completion
Learning" (Ji et al., CVPR 2023): an 11-block CLIP ViT-B/16 vision tower, a RoBERTa-base text tower and 6+6
METER-style co-attention fusion layers (spec §1).
"""

import json

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

PRETRAINING_OBJECTIVES = ("mlm", "itm", "itc", "mvsc", "mlsc")


def check_probability(name: str, value: float | None) -> None:
    """A dropout probability must be in [0, 1): torch refuses a negative one only once training starts."""
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")


def parse_config_overrides(overrides: str | dict | None) -> dict:
    """Config overrides as a dict, from a JSON object string (e.g. a `--config_overrides` argument) or a dict."""
    if isinstance(overrides, dict):
        return dict(overrides)
    try:
        parsed = json.loads(overrides) if overrides else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"Config overrides must be a JSON object, got {overrides!r}: {error}") from error
    if not isinstance(parsed, dict):
        raise ValueError(f"Config overrides must be a JSON object, got {overrides!r}.")
    return parsed


def _deep_update(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        is_nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_update(merged[key], value) if is_nested else value
    return merged


@strict
class SCLVisionConfig(PreTrainedConfig):
    r"""
    Configuration of the SCL vision tower: a CLIP ViT with learned temporal embeddings and frame-CLS attention.

    The fields are CLIPVisionConfig's, plus `max_frames`. `num_hidden_layers` defaults to 11: SCL (like METER) drops
    the last block of CLIP ViT-B/16 (spec §1.2).

    Args:
        max_frames (`int`, *optional*, defaults to 8):
            Number of rows of the temporal embedding table, i.e. the largest number of video frames the tower accepts.
    """

    model_type = "scl_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 11
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 288
    patch_size: int = 16
    max_frames: int = 8
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    attention_dropout: int | float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0

    def validate_architecture(self):
        """Part of `@strict` validation: reject shapes the tower cannot build."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"vision_config.hidden_size ({self.hidden_size}) is not divisible by "
                f"vision_config.num_attention_heads ({self.num_attention_heads})."
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"vision_config.image_size ({self.image_size}) is not divisible by "
                f"vision_config.patch_size ({self.patch_size})."
            )
        if self.max_frames < 1:
            raise ValueError(f"vision_config.max_frames must be at least 1, got {self.max_frames}.")
        check_probability("vision_config.attention_dropout", self.attention_dropout)
        if self.num_hidden_layers < 1:
            raise ValueError(f"vision_config.num_hidden_layers must be at least 1, got {self.num_hidden_layers}.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@strict
class SCLConfig(PreTrainedConfig):
    r"""
    Configuration of an SCL model: vision tower, RoBERTa text tower, co-attention fusion, and the pre-training and
    task heads. `SCLConfig()` is the paper's base model (spec §1.5: ~319M backbone parameters).

    Args:
        text_config (`dict` or `RobertaConfig`, *optional*):
            The text tower, any `AutoConfig` text model (RoBERTa-base by default).
        vision_config (`dict` or `SCLVisionConfig`, *optional*):
            The vision tower.
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the fusion layers.
        num_fusion_layers (`int`, *optional*, defaults to 6):
            Co-attention layers per stream (6 text + 6 image).
        num_attention_heads (`int`, *optional*, defaults to 12):
            Heads of every fusion attention.
        intermediate_size (`int`, *optional*, defaults to 3072):
            Feed-forward width of the fusion layers.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the fusion feed-forward layers and of the MLM head transform.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            LayerNorm epsilon of the fusion layers and heads (the BertConfig default the reference inherits, §1.1).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout after every dense sub-layer of the fusion layers.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout of the fusion attention probabilities.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal init of every newly created fusion and head weight.
        num_token_types (`int`, *optional*, defaults to 2):
            Rows of the modality token-type table (text 0, image 1; NLVR2 grows it to 3).
        image_size (`int`, *optional*, defaults to 288):
            Default input resolution (pre-training; 384 for VQA/retrieval fine-tuning, 224 for video).
        num_frames (`int`, *optional*, defaults to 4):
            Default number of frames sampled from a video. At most `vision_config.max_frames`.
        itc_projection_dim (`int`, *optional*, defaults to 512):
            Output size of the ITC projection heads.
        itc_temperature_init (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable ITC temperature (a divisor, as in the reference).
        scl_temperature (`float`, *optional*, defaults to 0.03):
            Fixed temperature of the semantic-completion contrast (MVSC and MLSC).
        image_mask_ratio (`float`, *optional*, defaults to 0.8):
            Fraction of patches dropped for masked vision semantic completion.
        text_mask_ratio (`float`, *optional*, defaults to 0.4):
            Fraction of real tokens replaced by `<mask>` for masked language semantic completion.
        mlm_probability (`float`, *optional*, defaults to 0.15):
            MLM masking probability.
        pretraining_objectives (`list[str]`, *optional*):
            Objectives computed by `SCLForPreTraining`, a subset of `("mlm", "itm", "itc", "mvsc", "mlsc")`.
        mlm_weight, itm_weight, itc_weight, mvsc_weight, mlsc_weight (`float`, *optional*):
            Per-loss weights. ITC is 0.5 (`con_weight`), the others 1.0 (spec §2).
        itm_hard_negatives (`bool`, *optional*, defaults to `False`):
            Sample ITM negatives from ITC similarities (ALBEF) instead of uniformly within the batch.
        num_retrieval_negatives (`int`, *optional*, defaults to 15):
            Negative texts per image for the retrieval fine-tuning loss (spec §3.1).
    """

    model_type = "scl"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="roberta"),
        "vision_config": SCLVisionConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | SCLVisionConfig | None = None

    # fusion (spec §1.4)
    hidden_size: int = 768
    num_fusion_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    num_token_types: int = 2

    # inputs
    image_size: int = 288
    num_frames: int = 4

    # pre-training (spec §2)
    itc_projection_dim: int = 512
    itc_temperature_init: float = 0.07
    scl_temperature: float = 0.03
    image_mask_ratio: float = 0.8
    text_mask_ratio: float = 0.4
    mlm_probability: float = 0.15
    pretraining_objectives: list[str] | tuple[str, ...] = PRETRAINING_OBJECTIVES
    mlm_weight: float = 1.0
    itm_weight: float = 1.0
    itc_weight: float = 0.5
    mvsc_weight: float = 1.0
    mlsc_weight: float = 1.0
    itm_hard_negatives: bool = False

    # downstream (spec §3)
    num_retrieval_negatives: int = 15

    # SCL's MLM decoder is not tied to the RoBERTa word embeddings (spec §1.1).
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # A vision config given without an image size (or none at all) takes the model's: one resolution, set once.
        if self.vision_config is None:
            self.vision_config = {"image_size": self.image_size}
        elif isinstance(self.vision_config, dict) and "image_size" not in self.vision_config:
            self.vision_config = {**self.vision_config, "image_size": self.image_size}
        super().__post_init__(**kwargs)
        self.pretraining_objectives = list(self.pretraining_objectives)

    def with_overrides(self, overrides: str | dict | None) -> "SCLConfig":
        """A new config with `overrides` (a dict or a JSON object string) merged in. Nested dicts edit single fields of
        the sub-configs: `{"text_config": {"num_hidden_layers": 6}}` keeps the rest of `text_config`."""
        return type(self).from_dict(_deep_update(self.to_dict(), parse_config_overrides(overrides)))

    def validate_architecture(self):
        """Part of `@strict` validation: reject inconsistent configurations with a message naming the fields."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads ({self.num_attention_heads})."
            )
        vision = self.vision_config
        if vision is not None:
            vision.validate_architecture()
            if self.num_frames > vision.max_frames:
                raise ValueError(
                    f"num_frames ({self.num_frames}) exceeds vision_config.max_frames ({vision.max_frames}): the "
                    "temporal embedding has one row per frame."
                )
            if self.image_size % vision.patch_size != 0:
                raise ValueError(
                    f"image_size ({self.image_size}) is not divisible by vision_config.patch_size ({vision.patch_size})."
                )
            if self.image_size != vision.image_size:
                raise ValueError(
                    f"image_size ({self.image_size}) differs from vision_config.image_size ({vision.image_size}), the "
                    "resolution of the position table: set both to the same value (to fine-tune at another "
                    "resolution, resize the position embeddings, spec §3.2)."
                )
        text = self.text_config
        if text is not None and text.hidden_size % text.num_attention_heads != 0:
            raise ValueError(
                f"text_config.hidden_size ({text.hidden_size}) is not divisible by "
                f"text_config.num_attention_heads ({text.num_attention_heads})."
            )
        if text is not None:
            for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
                check_probability(f"text_config.{name}", getattr(text, name, None))
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            check_probability(name, getattr(self, name))
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}.")
        if self.num_token_types < 2:
            raise ValueError(f"num_token_types must be at least 2 (text and image), got {self.num_token_types}.")
        for name in ("image_mask_ratio", "text_mask_ratio", "mlm_probability"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        for name in ("itc_temperature_init", "scl_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        unknown = set(self.pretraining_objectives) - set(PRETRAINING_OBJECTIVES)
        if unknown:
            raise ValueError(
                f"Unknown pretraining_objectives {sorted(unknown)}; choose from {list(PRETRAINING_OBJECTIVES)}."
            )


__all__ = ["SCLConfig", "SCLVisionConfig", "PRETRAINING_OBJECTIVES", "parse_config_overrides"]
