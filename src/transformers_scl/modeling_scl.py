"""PyTorch SCL model: a video-capable CLIP vision tower, a RoBERTa text tower and METER-style co-attention fusion.

The file reads in the order data flows: outputs, vision tower (embeddings, frame attention, layers), fusion
(attention, cross layers, poolers), shared heads, the pre-trained base class, the base model, then task heads.
Facts cite `SCL_SPEC.md` sections (the original implementation's behaviour).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_scl import SCLConfig, SCLVisionConfig

logger = logging.get_logger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SCLVisionModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_frames * (1 + num_kept_patches), hidden_size)`):
        Tower output after the final LayerNorm, ordered `[frame CLS_1 … frame CLS_F, patches of frame 1, …, patches of
        frame F]` (spec §1.2), so `last_hidden_state[:, :F]` are the frame-CLS tokens.
    patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept_patches)`, *optional*):
        Positions of the patches kept by patch dropping, the same in every frame; `None` without dropping.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Embedding output and each layer's output, in the same token order as `last_hidden_state`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Per layer, the frame-local attention weights of shape `(batch_size * num_frames, heads, T, T)` with
        `T = 1 + num_kept_patches` (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    patch_keep_indices: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SCLModelOutput(ModelOutput):
    r"""
    text_features (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`):
        Fused text tokens (output of the last text co-attention layer).
    image_features (`torch.FloatTensor` of shape `(batch_size, num_frames * (1 + num_patches), hidden_size)`):
        Fused image tokens, ordered `[frame CLS…, patches…]`.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, 2 * hidden_size)`):
        `concat(text pooler(text CLS), image pooler(mean of frame CLS))`, the input of the ITM/VQA heads (spec §1.4).
    text_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`):
        Unimodal text tokens after `cross_modal_text_transform` (before token-type embeddings); ITC reads `[:, 0]`.
        Can be passed back as `text_embeds` to skip the text tower.
    image_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames * (1 + num_patches), hidden_size)`):
        Unimodal image tokens after `cross_modal_image_transform`; ITC reads the mean of `[:, :num_frames]`. Can be
        passed back as `image_embeds` (with `num_frames`) to skip the vision tower.
    patch_keep_indices (`torch.LongTensor`, *optional*):
        Patches kept when the image was patch-dropped.
    hidden_states (`tuple`, *optional*):
        Four tuples: text tower, vision tower, text fusion stream, image fusion stream (each starting with its input).
    attentions (`tuple`, *optional*):
        Six tuples: text tower, vision tower (frame-local), text fusion self, text fusion cross, image fusion self,
        image fusion cross.
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    patch_keep_indices: torch.LongTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Attention kernel shared by both towers' custom modules (the `eager` entry of the attention interface)
# ---------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def _attention_interface(config) -> Callable:
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


# ---------------------------------------------------------------------------------------------------------------------
# Vision tower (spec §1.2)
# ---------------------------------------------------------------------------------------------------------------------


def frames_to_sequence(frames: torch.Tensor) -> torch.Tensor:
    """`(B, F, T, D)` frame-major tokens → `(B, F*T, D)` ordered `[CLS_1 … CLS_F, patches_1 … patches_F]`."""
    batch_size, _, _, dim = frames.shape
    return torch.cat([frames[:, :, 0], frames[:, :, 1:].reshape(batch_size, -1, dim)], dim=1)


def sample_patch_keep_indices(
    batch_size: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.LongTensor:
    """MAE-style random patch subset per sample, shared by every frame of a clip (tube masking, spec §1.2).

    `int(N * (1 - ratio))` patches are kept, with the reference's float rounding (`1 - 0.8 = 0.19999…`, so 25 patches
    keep 4). Indices stay in random order, as in the reference; frame-CLS outputs do not depend on the order.
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if num_keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} keeps no patch out of {num_patches}.")
    noise = torch.rand(batch_size, num_patches, generator=generator, device=generator.device if generator else device)
    return noise.argsort(dim=1)[:, :num_keep].to(device)


class SCLVisionEmbeddings(nn.Module):
    """Patch + frame-CLS embeddings with spatial and learned temporal positions, and optional patch dropping."""

    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.num_patches = config.num_patches
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(self.num_patches + 1, config.hidden_size)
        # spec §1.2: one learned row per frame; images are 1-frame videos and get row 0 on every token.
        self.temporal_embedding = nn.Parameter(torch.zeros(config.max_frames, config.hidden_size))

    def position_embeddings(self, height: int, width: int, interpolate: bool) -> torch.Tensor:
        """`(1 + N, D)` spatial positions, bicubically resized to the input grid when `interpolate` (spec §1.2)."""
        weight = self.position_embedding.weight
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        if grid_h * grid_w == self.num_patches and grid_h == grid_w:
            return weight
        if not interpolate:
            size = self.config.image_size
            raise ValueError(
                f"Input image size ({height}x{width}) doesn't match the model ({size}x{size}); pass "
                "`interpolate_pos_encoding=True` to resize the position embeddings."
            )
        side = int(math.isqrt(self.num_patches))
        grid = weight[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        grid = grid.to(weight.dtype).permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)
        return torch.cat([weight[:1], grid], dim=0)

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        patch_keep_indices: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """`(B, F, C, H, W)` → `(B, F, 1 + K, D)` frame-major tokens (K = kept patches, N without dropping)."""
        batch_size, num_frames, channels, height, width = pixel_values_videos.shape
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values_videos.reshape(-1, channels, height, width).to(weight.dtype))
        patches = patches.flatten(2).transpose(1, 2).reshape(batch_size, num_frames, -1, weight.shape[0])

        positions = self.position_embeddings(height, width, interpolate_pos_encoding)
        temporal = self.temporal_embedding[:num_frames, None, :]  # (F, 1, D)
        # spec §1.2: positions are added before dropping, so kept patches keep their own position.
        patches = patches + positions[1:] + temporal
        if patch_keep_indices is not None:
            index = patch_keep_indices[:, None, :, None].expand(-1, num_frames, -1, patches.shape[-1])
            patches = patches.gather(2, index)
        cls = (self.class_embedding + positions[0] + temporal).expand(batch_size, -1, -1, -1)
        return torch.cat([cls, patches], dim=2)


class SCLVisionAttention(nn.Module):
    """Flexible frame attention (spec §1.2).

    Patch tokens attend within their own frame; each frame-CLS token attends to every token of every frame. Both use
    the same Q/K/V. The frame-local part is one batched attention over `B*F` sequences and the global part has only
    `F` queries, so the cost is `F*T² + F²*T` — linear in the number of frames for `F ≪ T` — and no `(F*T)²` mask is
    ever built. With one frame the global step is the local one, so images get exactly ViT attention.
    """

    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_frames, seq_len, dim = hidden_states.shape
        heads_shape = (batch_size * num_frames, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)
        attention = _attention_interface(self.config)
        dropout = self.dropout if self.training else 0.0

        output, weights = attention(self, query, key, value, None, scaling=self.scale, dropout=dropout, **kwargs)
        output = output.reshape(batch_size, num_frames, seq_len, dim)

        if num_frames > 1:
            # Frame-CLS queries over all F*T keys of their clip.
            cls_query = query[:, :, :1].reshape(batch_size, num_frames, self.num_heads, self.head_dim).transpose(1, 2)

            def all_frames(states):  # (B*F, h, T, d) -> (B, h, F*T, d)
                states = states.reshape(batch_size, num_frames, self.num_heads, seq_len, self.head_dim)
                return states.transpose(1, 2).reshape(batch_size, self.num_heads, num_frames * seq_len, -1)

            cls_output, _ = attention(
                self, cls_query, all_frames(key), all_frames(value), None, scaling=self.scale, dropout=dropout, **kwargs
            )
            cls_output = cls_output.reshape(batch_size, num_frames, 1, dim)
            output = torch.cat([cls_output, output[:, :, 1:]], dim=2)
        return self.out_proj(output), weights


class SCLVisionMLP(nn.Module):
    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SCLVisionEncoderLayer(GradientCheckpointingLayer):
    """CLIP's pre-LN residual block, on frame-major `(B, F, T, D)` tokens."""

    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SCLVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SCLVisionMLP(config)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.layer_norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights


class SCLVisionEncoder(nn.Module):
    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([SCLVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])


# ---------------------------------------------------------------------------------------------------------------------
# Fusion (spec §1.4): METER co-attention layers, names as in the reference's BertCrossLayer
# ---------------------------------------------------------------------------------------------------------------------


class SCLFusionAttention(nn.Module):
    """Multi-head (cross-)attention of one fusion stream; keys/values come from `encoder_hidden_states` if given."""

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = self.query(hidden_states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        key = self.key(source).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        value = self.value(source).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        output, weights = _attention_interface(self.config)(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        return output.flatten(-2), weights


class SCLResidualOutput(nn.Module):
    """Post-LN residual: `LayerNorm(dropout(dense(x)) + residual)` (BERT style, eps 1e-12, spec §1.1)."""

    def __init__(self, config: SCLConfig, input_size: int):
        super().__init__()
        self.dense = nn.Linear(input_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class SCLAttentionBlock(nn.Module):
    def __init__(self, config: SCLConfig):
        super().__init__()
        self.self = SCLFusionAttention(config)
        self.output = SCLResidualOutput(config, config.hidden_size)

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        context, weights = self.self(hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        return self.output(context, hidden_states), weights


class SCLIntermediate(nn.Module):
    def __init__(self, config: SCLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class SCLCrossLayer(GradientCheckpointingLayer):
    """One co-attention layer of a stream: self-attention → cross-attention to the other stream → feed-forward."""

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.attention = SCLAttentionBlock(config)
        self.crossattention = SCLAttentionBlock(config)
        self.intermediate = SCLIntermediate(config)
        self.output = SCLResidualOutput(config, config.intermediate_size)

    def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None, **kwargs):
        hidden_states, self_weights = self.attention(hidden_states, None, attention_mask, **kwargs)
        hidden_states, cross_weights = self.crossattention(
            hidden_states, encoder_hidden_states, encoder_attention_mask, **kwargs
        )
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_weights, cross_weights


class SCLPooler(nn.Module):
    """Linear → tanh on the first token, or on the mean of the first `num_tokens` tokens (frame CLS, spec §1.1)."""

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor, num_tokens: int = 1) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, :num_tokens].mean(dim=1)))


# ---------------------------------------------------------------------------------------------------------------------
# Heads shared by the task models (spec §1.1)
# ---------------------------------------------------------------------------------------------------------------------


class SCLMLMHead(nn.Module):
    """BERT prediction head with an untied decoder (spec §1.1): dense → GELU → LayerNorm → decoder + bias."""

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.transform = nn.Sequential()
        self.transform.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform.transform_act_fn = ACT2FN[config.hidden_act]
        self.transform.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.text_config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.text_config.vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states)) + self.bias


class SCLITMHead(nn.Module):
    """Image–text matching logits from `pooler_output` (2 classes: no match, match)."""

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.fc = nn.Linear(2 * config.hidden_size, 2)

    def forward(self, pooler_output: torch.Tensor) -> torch.Tensor:
        return self.fc(pooler_output)


class SCLITCProjection(nn.Sequential):
    """ITC projection: Linear → LayerNorm → GELU → Linear to `itc_projection_dim` (state-dict indices 0, 1, 3)."""

    def __init__(self, config: SCLConfig):
        super().__init__(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.LayerNorm(config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.itc_projection_dim),
        )


# ---------------------------------------------------------------------------------------------------------------------
# Pre-trained base class
# ---------------------------------------------------------------------------------------------------------------------

# Auto classes written to `config.auto_map` on save; filled by `register_for_auto_class` at the bottom of the file.
_AUTO_MAP_CLASSES: dict[str, type] = {}


class SCLPreTrainedModel(PreTrainedModel):
    config: SCLConfig
    base_model_prefix = "scl"
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["SCLVisionEncoderLayer", "RobertaLayer", "SCLCrossLayer"]
    # The pre-training loss is a sum of batch means: Trainer must not rescale it by token counts (HF notes §3.4).
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        # spec §1.1: new modules get N(0, 0.02) weights, zero biases, unit LayerNorms (`objectives.init_weights`).
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, SCLVisionEmbeddings):
            init.normal_(module.class_embedding, std=module.class_embedding.shape[-1] ** -0.5)
            init.normal_(module.position_embedding.weight, std=std)
            init.normal_(module.patch_embedding.weight, std=std)
            # Zero temporal rows: a CLIP-initialised tower then starts as plain CLIP for images and videos.
            init.zeros_(module.temporal_embedding)
        elif isinstance(module, SCLMLMHead):
            init.zeros_(module.bias)
        elif hasattr(module, "itc_temperature"):
            init.constant_(module.itc_temperature, self.config.itc_temperature_init)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save with a complete `auto_map`, so every SCL Auto class loads the folder with `trust_remote_code=True`."""
        config = getattr(self.config, "vision_config", None) and self.config  # the composite config only
        if config is not None and _AUTO_MAP_CLASSES:
            auto_map = dict(getattr(config, "auto_map", None) or {})
            auto_map["AutoConfig"] = f"{SCLConfig.__module__.split('.')[-1]}.{SCLConfig.__name__}"
            for auto_class, model_class in _AUTO_MAP_CLASSES.items():
                auto_map[auto_class] = f"{model_class.__module__.split('.')[-1]}.{model_class.__name__}"
            config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class SCLVisionModel(SCLPreTrainedModel):
    """The SCL vision tower: an 11-block CLIP ViT on 1-frame images or F-frame videos (spec §1.2).

    Weight names follow transformers' `CLIPVisionModel` (`embeddings`, `pre_layrnorm`, `encoder.layers`,
    `post_layernorm`) so CLIP checkpoints load directly; `post_layernorm` is applied to every token (METER's ln_post).
    """

    config: SCLVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")

    def __init__(self, config: SCLVisionConfig):
        super().__init__(config)
        self.embeddings = SCLVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = SCLVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def _as_video(self, pixel_values, pixel_values_videos) -> torch.Tensor:
        if (pixel_values is None) == (pixel_values_videos is None):
            raise ValueError("Pass exactly one of `pixel_values` (B, 3, H, W) or `pixel_values_videos` (B, F, 3, H, W).")
        if pixel_values is not None:
            if pixel_values.dim() != 4:
                raise ValueError(f"`pixel_values` must be (batch, channels, height, width), got {tuple(pixel_values.shape)}.")
            video = pixel_values.unsqueeze(1)  # spec §1.2: an image is a 1-frame video
        else:
            if pixel_values_videos.dim() != 5:
                raise ValueError(
                    "`pixel_values_videos` must be (batch, frames, channels, height, width), got "
                    f"{tuple(pixel_values_videos.shape)}."
                )
            video = pixel_values_videos
        _, num_frames, channels, height, width = video.shape
        if channels != self.config.num_channels:
            raise ValueError(f"Expected {self.config.num_channels} image channels, got {channels} (shape {tuple(video.shape)}).")
        if num_frames > self.config.max_frames:
            raise ValueError(f"Got {num_frames} frames but the temporal embedding has max_frames={self.config.max_frames}.")
        if num_frames < 1:
            raise ValueError("A video needs at least one frame.")
        if height % self.config.patch_size or width % self.config.patch_size:
            raise ValueError(f"Image size {height}x{width} is not divisible by the patch size {self.config.patch_size}.")
        return video

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool = False,
        patch_keep_indices: torch.LongTensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SCLVisionModelOutput:
        r"""
        patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Explicit patch positions to keep in every frame (patch dropping).
        mask_ratio (`float`, *optional*):
            Drop this fraction of patches, sampled with `generator` (SCL uses 0.8, spec §1.2). Ignored if
            `patch_keep_indices` is given.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        video = self._as_video(pixel_values, pixel_values_videos)
        batch_size, num_frames, _, height, width = video.shape
        num_patches = (height // self.config.patch_size) * (width // self.config.patch_size)
        if patch_keep_indices is None and mask_ratio:
            patch_keep_indices = sample_patch_keep_indices(
                batch_size, num_patches, mask_ratio, generator=generator, device=video.device
            )
        if patch_keep_indices is not None:
            if patch_keep_indices.dim() != 2 or patch_keep_indices.shape[0] != batch_size:
                raise ValueError(
                    f"`patch_keep_indices` must be (batch={batch_size}, kept), got {tuple(patch_keep_indices.shape)}."
                )
            if patch_keep_indices.numel() and (patch_keep_indices.min() < 0 or patch_keep_indices.max() >= num_patches):
                raise ValueError(f"`patch_keep_indices` must lie in [0, {num_patches}).")

        hidden_states = self.embeddings(video, interpolate_pos_encoding, patch_keep_indices)
        hidden_states = self.pre_layrnorm(hidden_states)
        all_hidden_states = (frames_to_sequence(hidden_states),) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.encoder.layers:
            hidden_states, weights = layer(hidden_states, **kwargs)
            if output_hidden_states:
                all_hidden_states += (frames_to_sequence(hidden_states),)
            if output_attentions:
                all_attentions += (weights,)
        last_hidden_state = frames_to_sequence(self.post_layernorm(hidden_states))
        return SCLVisionModelOutput(
            last_hidden_state=last_hidden_state,
            patch_keep_indices=patch_keep_indices,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Base model
# ---------------------------------------------------------------------------------------------------------------------


class SCLModel(SCLPreTrainedModel):
    """SCL two-tower encoder with co-attention fusion (spec §1.1, §1.4).

    `forward` runs towers and fusion; `encode_text`, `encode_image` and `fuse` expose the three stages so that
    pre-training and retrieval can encode each input once and fuse it many times.
    """

    def __init__(self, config: SCLConfig):
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.vision_model = SCLVisionModel(config.vision_config)
        self.cross_modal_text_transform = nn.Linear(config.text_config.hidden_size, config.hidden_size)
        self.cross_modal_image_transform = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.num_token_types, config.hidden_size)
        self.cross_modal_text_layers = nn.ModuleList([SCLCrossLayer(config) for _ in range(config.num_fusion_layers)])
        self.cross_modal_image_layers = nn.ModuleList([SCLCrossLayer(config) for _ in range(config.num_fusion_layers)])
        self.cross_modal_text_pooler = SCLPooler(config)
        self.cross_modal_image_pooler = SCLPooler(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.set_input_embeddings(value)

    # -- stage 1: unimodal towers ------------------------------------------------------------------------------------

    def encode_text(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, ModelOutput]:
        """RoBERTa, then `cross_modal_text_transform`: returns `(text_embeds (B, L, H), tower output)`."""
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got {tuple(input_ids.shape)}.")
        vocab_size = self.config.text_config.vocab_size
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab_size):
            raise ValueError(f"`input_ids` contain ids outside the vocabulary [0, {vocab_size}).")
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return self.cross_modal_text_transform(outputs.last_hidden_state), outputs

    def encode_image(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, SCLVisionModelOutput]:
        """Vision tower, then `cross_modal_image_transform`: returns `(image_embeds (B, F(1+K), H), tower output)`.

        Keyword arguments (`interpolate_pos_encoding`, `patch_keep_indices`, `mask_ratio`, `generator`, …) go to
        [`SCLVisionModel.forward`].
        """
        outputs = self.vision_model(pixel_values=pixel_values, pixel_values_videos=pixel_values_videos, **kwargs)
        return self.cross_modal_image_transform(outputs.last_hidden_state), outputs

    # -- stage 2: fusion ---------------------------------------------------------------------------------------------

    def fuse(
        self,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        image_token_type_idx: int = 1,
        final_text_layer: str = "grad",
        final_image_layer: str = "grad",
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> SCLModelOutput:
        r"""Co-attention fusion of unimodal embeddings (spec §1.4).

        Both streams update in parallel from the previous layer's outputs. `final_text_layer` / `final_image_layer`
        choose how the last layer of a stream runs: `"grad"` (normally), `"no_grad"` (its output is only a
        stop-gradient target, so it needs no autograd graph) or `"skip"` (its output is unused, e.g. the image stream
        of an MLM pass); skipping either stream leaves `pooler_output` as `None`.
        """
        if text_embeds.dim() != 3 or image_embeds.dim() != 3:
            raise ValueError(
                f"`text_embeds` and `image_embeds` must be (batch, length, hidden); got {tuple(text_embeds.shape)} "
                f"and {tuple(image_embeds.shape)}."
            )
        if text_embeds.shape[0] != image_embeds.shape[0]:
            raise ValueError(f"Batch sizes differ: text {text_embeds.shape[0]}, image {image_embeds.shape[0]}.")
        if not 1 <= num_frames <= image_embeds.shape[1]:
            raise ValueError(f"num_frames={num_frames} is invalid for {image_embeds.shape[1]} image tokens.")
        if not 0 <= image_token_type_idx < self.config.num_token_types:
            raise ValueError(
                f"image_token_type_idx={image_token_type_idx} but the token-type table has "
                f"{self.config.num_token_types} rows."
            )
        if attention_mask is not None and attention_mask.shape != text_embeds.shape[:2]:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} does not match the text {tuple(text_embeds.shape[:2])}."
            )
        token_types = self.token_type_embeddings.weight
        text = text_embeds + token_types[0]
        image = image_embeds + token_types[image_token_type_idx]

        # The image is never padded; only text padding is masked (in text self-attention and image cross-attention).
        text_mask = create_bidirectional_mask(self.config, text, attention_mask)
        image_to_text_mask = create_bidirectional_mask(self.config, image, attention_mask, encoder_hidden_states=text)

        text_states = (text,) if output_hidden_states else None
        image_states = (image,) if output_hidden_states else None
        attentions = ((), (), (), ()) if output_attentions else None
        num_layers = len(self.cross_modal_text_layers)
        for index, (text_layer, image_layer) in enumerate(
            zip(self.cross_modal_text_layers, self.cross_modal_image_layers)
        ):
            last = index == num_layers - 1
            text_mode = final_text_layer if last else "grad"
            image_mode = final_image_layer if last else "grad"
            new_text, text_self, text_cross = self._run_stream(
                text_layer, text_mode, text, image, text_mask, None, **kwargs
            )
            new_image, image_self, image_cross = self._run_stream(
                image_layer, image_mode, image, text, None, image_to_text_mask, **kwargs
            )
            text, image = new_text, new_image
            if output_hidden_states:
                text_states += (text,)
                image_states += (image,)
            if output_attentions:
                attentions = tuple(a + (w,) for a, w in zip(attentions, (text_self, text_cross, image_self, image_cross)))

        pooler_output = None
        if text is not None and image is not None:
            pooler_output = torch.cat(
                [self.cross_modal_text_pooler(text), self.cross_modal_image_pooler(image, num_tokens=num_frames)],
                dim=-1,
            )
        return SCLModelOutput(
            text_features=text,
            image_features=image,
            pooler_output=pooler_output,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            hidden_states=(text_states, image_states) if output_hidden_states else None,
            attentions=attentions,
        )

    @staticmethod
    def _run_stream(layer, mode, hidden, other, mask, cross_mask, **kwargs):
        if mode == "skip":
            return None, None, None
        if mode == "no_grad":
            with torch.no_grad():
                return layer(hidden, other, mask, cross_mask, **kwargs)
        if mode != "grad":
            raise ValueError(f"Final-layer mode must be 'grad', 'no_grad' or 'skip', got {mode!r}.")
        return layer(hidden, other, mask, cross_mask, **kwargs)

    # -- everything at once ------------------------------------------------------------------------------------------

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        text_embeds: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        num_frames: int | None = None,
        image_token_type_idx: int = 1,
        interpolate_pos_encoding: bool = False,
        patch_keep_indices: torch.LongTensor | None = None,
        image_mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SCLModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video).
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `vision_config.max_frames` frames.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
            Precomputed unimodal text embeddings (`text_embeds` of an earlier output) instead of `input_ids`.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames * (1 + num_patches), hidden_size)`, *optional*):
            Precomputed unimodal image embeddings instead of pixels; pass `num_frames` for videos.
        num_frames (`int`, *optional*):
            Frames behind `image_embeds` (defaults to 1). Inferred from the pixels otherwise.
        image_token_type_idx (`int`, *optional*, defaults to 1):
            Token-type row added to the image tokens (NLVR2 uses 1 and 2).
        patch_keep_indices / image_mask_ratio / generator:
            Patch dropping of the image (see [`SCLVisionModel.forward`]).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (text_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `text_embeds`.")
        if image_embeds is not None and (pixel_values is not None or pixel_values_videos is not None):
            raise ValueError("Pass either pixels or `image_embeds`, not both.")
        if image_embeds is None and pixel_values is None and pixel_values_videos is None:
            raise ValueError("Pass `pixel_values`, `pixel_values_videos` or `image_embeds`.")

        text_outputs = vision_outputs = None
        if text_embeds is None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            text_embeds, text_outputs = self.encode_text(
                input_ids,
                attention_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
        if image_embeds is None:
            image_embeds, vision_outputs = self.encode_image(
                pixel_values,
                pixel_values_videos,
                interpolate_pos_encoding=interpolate_pos_encoding,
                patch_keep_indices=patch_keep_indices,
                mask_ratio=image_mask_ratio,
                generator=generator,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
            num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        elif num_frames is None:
            num_frames = 1

        outputs = self.fuse(
            text_embeds,
            image_embeds,
            attention_mask,
            num_frames=num_frames,
            image_token_type_idx=image_token_type_idx,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        outputs.patch_keep_indices = vision_outputs.patch_keep_indices if vision_outputs is not None else None
        if output_hidden_states:
            outputs.hidden_states = (
                text_outputs.hidden_states if text_outputs is not None else None,
                vision_outputs.hidden_states if vision_outputs is not None else None,
                *outputs.hidden_states,
            )
        if output_attentions:
            outputs.attentions = (
                text_outputs.attentions if text_outputs is not None else None,
                vision_outputs.attentions if vision_outputs is not None else None,
                *outputs.attentions,
            )
        return outputs

    # -- loading pre-trained towers ----------------------------------------------------------------------------------

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        image_size: int = 288,
        output_loading_info: bool = False,
        **config_kwargs,
    ):
        """Build an SCL model whose towers come from a transformers CLIP checkpoint and a RoBERTa checkpoint.

        The CLIP vision tower loses its last block (spec §1.2) and its position grid is resized bicubically to
        `image_size`. Fusion and heads are freshly initialised. Returns the model, plus a dict of the missing and
        unexpected keys of each tower if `output_loading_info`.
        """
        return _from_vision_text_pretrained(
            cls, vision_model_name_or_path, text_model_name_or_path, image_size, output_loading_info, **config_kwargs
        )


def _vision_config_from_clip(clip_config, image_size: int, max_frames: int) -> SCLVisionConfig:
    vision = getattr(clip_config, "vision_config", clip_config)
    patch = vision.patch_size if isinstance(vision.patch_size, int) else vision.patch_size[0]
    return SCLVisionConfig(
        hidden_size=vision.hidden_size,
        intermediate_size=vision.intermediate_size,
        num_hidden_layers=vision.num_hidden_layers - 1,  # spec §1.2: CLIP's last block is dropped
        num_attention_heads=vision.num_attention_heads,
        num_channels=vision.num_channels,
        image_size=image_size,
        patch_size=patch,
        max_frames=max_frames,
        hidden_act=vision.hidden_act,
        layer_norm_eps=vision.layer_norm_eps,
    )


def _from_vision_text_pretrained(cls, vision_path, text_path, image_size, output_loading_info, **config_kwargs):
    from transformers import CLIPVisionModel

    clip_config = AutoConfig.from_pretrained(vision_path)
    vision_kwargs = config_kwargs.pop("vision_config", None) or {}
    vision_config = _vision_config_from_clip(clip_config, image_size, vision_kwargs.get("max_frames", 8))
    text_tower = AutoModel.from_pretrained(text_path, add_pooling_layer=False)
    config = SCLConfig(
        text_config=text_tower.config.to_dict(), vision_config=vision_config.to_dict(), image_size=image_size, **config_kwargs
    )
    model = cls(config)
    base = getattr(model, model.base_model_prefix, model)

    text_result = base.text_model.load_state_dict(text_tower.state_dict(), strict=False)

    clip_vision = CLIPVisionModel.from_pretrained(vision_path)
    source_grid = clip_vision.config.image_size // vision_config.patch_size
    state = {}
    for key, tensor in clip_vision.state_dict().items():
        key = key.removeprefix("vision_model.")
        if key == "embeddings.position_ids":
            continue
        if key == "embeddings.position_embedding.weight" and source_grid != image_size // vision_config.patch_size:
            tensor = resize_position_embedding(tensor, image_size // vision_config.patch_size)
        state[key] = tensor
    vision_result = base.vision_model.load_state_dict(state, strict=False)

    info = {
        "text_missing_keys": list(text_result.missing_keys),
        "text_unexpected_keys": list(text_result.unexpected_keys),
        "vision_missing_keys": list(vision_result.missing_keys),
        "vision_unexpected_keys": list(vision_result.unexpected_keys),
    }
    for name, keys in info.items():
        if keys:
            logger.warning(f"from_vision_text_pretrained: {name.replace('_', ' ')}: {keys}")
    return (model, info) if output_loading_info else model


def resize_position_embedding(weight: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resize a `(1 + g*g, D)` CLS+grid position table to `(1 + new_grid², D)` bicubically (spec §1.2)."""
    old_grid = int(math.isqrt(weight.shape[0] - 1))
    if old_grid * old_grid != weight.shape[0] - 1:
        raise ValueError(f"Position table of {weight.shape[0]} rows is not 1 + a square grid.")
    grid = weight[1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(weight.dtype)
    return torch.cat([weight[:1], grid], dim=0)


# ---------------------------------------------------------------------------------------------------------------------
# Auto-class registration for remote code (`save_pretrained` copies this file and writes `auto_map`)
# ---------------------------------------------------------------------------------------------------------------------


def _register_for_auto_class(model_class: type, auto_class: str):
    model_class.register_for_auto_class(auto_class)
    _AUTO_MAP_CLASSES[auto_class] = model_class


SCLConfig.register_for_auto_class()
_register_for_auto_class(SCLModel, "AutoModel")

__all__ = [
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLVisionModel",
    "SCLVisionModelOutput",
    "resize_position_embedding",
    "sample_patch_keep_indices",
]
