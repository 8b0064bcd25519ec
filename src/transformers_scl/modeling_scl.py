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
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from .configuration_scl import SCLConfig, SCLVisionConfig
from .losses import NORM_EPS, contrastive_labels, image_text_contrastive_loss, semantic_completion_loss

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
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=False,
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
                self,
                cls_query,
                all_frames(key),
                all_frames(value),
                None,
                scaling=self.scale,
                dropout=dropout,
                **kwargs,
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

    def key_value(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value projections of `source` `(batch, tokens, hidden)`, before the split into heads."""
        return self.key(source), self.value(source)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, key=None, value=None, **kwargs):
        """`key` / `value`: precomputed by `key_value` (e.g. once per image for many pairs) instead of projecting."""
        if key is None:
            key, value = self.key_value(hidden_states if encoder_hidden_states is None else encoder_hidden_states)
        output, weights = _attention_interface(self.config)(
            self,
            self._heads(self.query(hidden_states)),
            self._heads(key),
            self._heads(value),
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

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, key=None, value=None, **kwargs):
        context, weights = self.self(hidden_states, encoder_hidden_states, attention_mask, key, value, **kwargs)
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

    def forward(
        self,
        hidden_states,
        encoder_hidden_states,
        attention_mask=None,
        encoder_attention_mask=None,
        self_attention_output=None,
        encoder_key=None,
        encoder_value=None,
        num_queries: int | None = None,
        only: str | None = None,
        **kwargs,
    ):
        """
        `num_queries`: compute the outputs of the first `num_queries` tokens only (the masks are then built for those
        queries). They still attend to the whole stream and the whole other stream, so they equal the full layer's
        outputs at those tokens.

        `self_attention_output` (the self-attention block's output for every token) and `encoder_key` /
        `encoder_value` (the cross-attention's projections of the other stream): precomputed, when they depend on one
        modality alone and serve several pairs (see `SCLModel.precompute_image_fusion`). Passed positionally, so that
        reentrant activation checkpointing sees them.

        `only` computes one of those parts instead of the layer: `"self_attention"` returns the self-attention block's
        `(output, weights)`, `"encoder_key_value"` the cross-attention's `(key, value)` of `encoder_hidden_states`.
        They go through `forward` so that FSDP gathers the layer's weights and activation checkpointing covers them.
        """
        if only not in (None, "self_attention", "encoder_key_value"):
            raise ValueError(f"`only` must be None, 'self_attention' or 'encoder_key_value', got {only!r}.")
        if only == "encoder_key_value":
            # A linear layer's 3-d output is a view, which FSDP2 warns about in a unit's outputs; the copy is small.
            return tuple(t.clone() for t in self.crossattention.self.key_value(encoder_hidden_states))
        if self_attention_output is None:
            queries = hidden_states if num_queries is None else hidden_states[:, :num_queries]
            hidden_states, self_weights = self.attention(queries, hidden_states, attention_mask, **kwargs)
            if only == "self_attention":
                return hidden_states, self_weights
        else:
            hidden_states, self_weights = self_attention_output[:, :num_queries], None
        hidden_states, cross_weights = self.crossattention(
            hidden_states, encoder_hidden_states, encoder_attention_mask, encoder_key, encoder_value, **kwargs
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
    # The pre-training loss is a sum of batch means: Trainer must not rescale it by token counts (its
    # `num_items_in_batch` path would scale it by the accumulation steps and the world size).
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

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        image_size: int = 288,
        output_loading_info: bool = False,
        **config_kwargs,
    ):
        """Build an SCL model (any SCL class) whose towers come from a transformers CLIP checkpoint and a RoBERTa checkpoint.

        The CLIP vision tower loses its last block (spec §1.2) and its position grid is resized bicubically to
        `image_size`. Fusion and heads are freshly initialised. Returns the model, plus a dict of the missing and
        unexpected keys of each tower if `output_loading_info`.
        """
        return _from_vision_text_pretrained(
            cls, vision_model_name_or_path, text_model_name_or_path, image_size, output_loading_info, **config_kwargs
        )

    @classmethod
    def _load_pretrained_model(cls, model, state_dict, checkpoint_files, load_config):
        # The hook between loading and finalisation (transformers 5.2x, called by `from_pretrained`). Two checkpoint
        # shapes that load here are still size mismatches, which finalisation would turn into an error or a random
        # re-initialisation: a token-type table with fewer rows (NLVR2 grows 2 to 3) and a 0-d `itc_temperature`.
        loading_info, disk_offload_index = super()._load_pretrained_model(
            model, state_dict, checkpoint_files, load_config
        )
        _load_smaller_token_type_table(model, loading_info, state_dict, checkpoint_files)
        _load_scalar_temperature(model, loading_info, state_dict, checkpoint_files)
        return loading_info, disk_offload_index


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
            raise ValueError(
                "Pass exactly one of `pixel_values` (B, 3, H, W) or `pixel_values_videos` (B, F, 3, H, W)."
            )
        if pixel_values is not None:
            if pixel_values.dim() != 4:
                raise ValueError(
                    f"`pixel_values` must be (batch, channels, height, width), got {tuple(pixel_values.shape)}."
                )
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
            raise ValueError(
                f"Expected {self.config.num_channels} image channels, got {channels} (shape {tuple(video.shape)})."
            )
        if num_frames > self.config.max_frames:
            raise ValueError(
                f"Got {num_frames} frames but the temporal embedding has max_frames={self.config.max_frames}."
            )
        if num_frames < 1:
            raise ValueError("A video needs at least one frame.")
        if height % self.config.patch_size or width % self.config.patch_size:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by the patch size {self.config.patch_size}."
            )
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
            if patch_keep_indices.numel() and (
                patch_keep_indices.min() < 0 or patch_keep_indices.max() >= num_patches
            ):
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


@dataclass
class SCLImageFusionCache:
    """The first fusion layer's work that depends on the image alone (see [`SCLModel.precompute_image_fusion`]).

    `image` is the image stream's input (`image_embeds` plus its token type); `self_attention_output` the output of
    the image stream's first self-attention block; `key` / `value` the text stream's first cross-attention key and
    value projections of the image, `(images, tokens, hidden)`.
    """

    image_embeds: torch.Tensor
    image_token_type_idx: int
    image: torch.Tensor
    self_attention_output: torch.Tensor | None
    self_attention_weights: torch.Tensor | None
    key: torch.Tensor
    value: torch.Tensor


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
        pooler_only: bool = False,
        image_index: torch.LongTensor | None = None,
        image_cache: SCLImageFusionCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> SCLModelOutput:
        r"""Co-attention fusion of unimodal embeddings (spec §1.4).

        Both streams update in parallel from the previous layer's outputs. `final_text_layer` / `final_image_layer`
        choose how the last layer of a stream runs: `"grad"` (normally), `"no_grad"` (its output is only a
        stop-gradient target, so it needs no autograd graph) or `"skip"` (its output is unused, e.g. the image stream
        of an MLM pass); skipping either stream leaves `pooler_output` as `None`.

        `pooler_only=True` runs the last layer for the tokens `pooler_output` reads only: the text CLS and the
        `num_frames` frame CLS tokens (ITM, VQA, NLVR2, retrieval scores, the completion targets). They still attend
        to every token of both streams, so their features equal the full layer's; `text_features` is then
        `(batch, 1, hidden)` and `image_features` `(batch, num_frames, hidden)`. Every earlier layer runs in full,
        since the last layer's keys and values span both streams. This saves about 3/4 of the last layer (its
        queries, output projections and feed-forward; not its key and value projections).

        `image_index` `(batch,)` pairs text row i with image row `image_index[i]`, for many texts per image (retrieval
        candidates): `image_embeds` then holds each image once. The same as passing `image_embeds[image_index]`, but
        what depends on the image alone — the first layer's image self-attention and the image keys and values of
        the text stream's first cross-attention — runs once per image instead of once per pair.

        `image_cache` (from `precompute_image_fusion(image_embeds)`) shares that work across `fuse` calls as well.
        """
        if text_embeds.dim() != 3 or image_embeds.dim() != 3:
            raise ValueError(
                f"`text_embeds` and `image_embeds` must be (batch, length, hidden); got {tuple(text_embeds.shape)} "
                f"and {tuple(image_embeds.shape)}."
            )
        if image_index is not None:
            if image_index.shape != text_embeds.shape[:1]:
                raise ValueError(
                    f"`image_index` must be (batch,) = ({text_embeds.shape[0]},), one image row per text row; got "
                    f"{tuple(image_index.shape)}."
                )
            if image_index.numel() and (image_index.min() < 0 or image_index.max() >= image_embeds.shape[0]):
                raise ValueError(f"`image_index` must hold rows of `image_embeds`, in [0, {image_embeds.shape[0]}).")
        elif text_embeds.shape[0] != image_embeds.shape[0]:
            raise ValueError(f"Batch sizes differ: text {text_embeds.shape[0]}, image {image_embeds.shape[0]}.")
        if not 1 <= num_frames <= image_embeds.shape[1]:
            raise ValueError(f"num_frames={num_frames} is invalid for {image_embeds.shape[1]} image tokens.")
        self._check_image_token_type(image_token_type_idx)
        if attention_mask is not None and attention_mask.shape != text_embeds.shape[:2]:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} does not match the text {tuple(text_embeds.shape[:2])}."
            )
        if image_cache is not None:
            if image_cache.image_embeds is not image_embeds:
                raise ValueError(
                    "`image_cache` was built from other `image_embeds`; pass the tensor it was built from."
                )
            if image_cache.image_token_type_idx != image_token_type_idx:
                raise ValueError(
                    f"`image_cache` was built with image_token_type_idx={image_cache.image_token_type_idx}, not "
                    f"{image_token_type_idx}."
                )
        token_types = self.token_type_embeddings.weight
        text = text_embeds + token_types[0]
        image = image_embeds + token_types[image_token_type_idx] if image_cache is None else image_cache.image
        last = len(self.cross_modal_text_layers) - 1

        # The image is never padded; only text padding is masked (in text self-attention and image cross-attention).
        text_mask = create_bidirectional_mask(self.config, text, attention_mask)
        image_to_text_mask = create_bidirectional_mask(self.config, image, attention_mask, encoder_hidden_states=text)
        # The last layer's masks have rows for its queries only (every backend's mask format is built for them).
        final_text_queries = final_image_queries = None
        final_text_mask, final_image_to_text_mask = text_mask, image_to_text_mask
        # torch's compiled CPU flex-attention kernel fails ("index out of bounds ... cur_qSplitSize") once it has been
        # recompiled for dynamic shapes and gets fewer queries than keys; there the full last layer runs and is sliced.
        query_subset = pooler_only and not (
            self.config._attn_implementation == "flex_attention" and text.device.type == "cpu"
        )
        if query_subset:
            final_text_queries, final_image_queries = 1, num_frames
            final_text_mask = create_bidirectional_mask(
                self.config, text[:, :1], attention_mask, encoder_hidden_states=text
            )
            final_image_to_text_mask = create_bidirectional_mask(
                self.config, image[:, :num_frames], attention_mask, encoder_hidden_states=text
            )

        # Many texts per image: what the first layer computes from the image alone runs once per image.
        if image_cache is None and image_index is not None:
            first_queries = final_image_queries if last == 0 else None
            skip_self_attention = last == 0 and final_image_layer == "skip"
            image_cache = self._image_fusion_cache(
                image_embeds, image, image_token_type_idx, first_queries, skip_self_attention, **kwargs
            )
        pairs = slice(None) if image_index is None else image_index
        text_states = (text,) if output_hidden_states else None
        image_states = (image[pairs],) if output_hidden_states else None
        attentions = ((), (), (), ()) if output_attentions else None
        # (mode, mask, queries) of the text stream and of the image stream, in the middle layers and in the last one.
        middle_layer = (("grad", text_mask, None), ("grad", image_to_text_mask, None))
        final_layer = (
            (final_text_layer, final_text_mask, final_text_queries),
            (final_image_layer, final_image_to_text_mask, final_image_queries),
        )
        for index, (text_layer, image_layer) in enumerate(
            zip(self.cross_modal_text_layers, self.cross_modal_image_layers)
        ):
            (text_mode, text_self_mask, text_queries), (image_mode, image_cross_mask, image_queries) = (
                final_layer if index == last else middle_layer
            )
            # The first layer's image-only work comes from the cache, expanded to the pairs.
            cached = (None, None, None)
            if index == 0 and image_cache is not None:
                cached = (image_cache.self_attention_output, image_cache.key, image_cache.value)
                cached = tuple(None if t is None else t[pairs] for t in cached)
            image_self_output, text_cross_key, text_cross_value = cached
            new_text, text_self, text_cross = self._run_stream(
                text_layer,
                text_mode,
                text,
                image,
                text_self_mask,
                None,
                None,
                text_cross_key,
                text_cross_value,
                num_queries=text_queries,
                **kwargs,
            )
            new_image, image_self, image_cross = self._run_stream(
                image_layer,
                image_mode,
                image,
                text,
                None,
                image_cross_mask,
                image_self_output,
                num_queries=image_queries,
                **kwargs,
            )
            if new_image is not None and image_self_output is not None:  # the cache's weights, for these queries
                weights = image_cache.self_attention_weights
                image_self = None if weights is None else weights[pairs][..., :image_queries, :]
            text, image = new_text, new_image
            if output_hidden_states:
                text_states += (text,)
                image_states += (image,)
            if output_attentions:
                attentions = tuple(
                    a + (w,) for a, w in zip(attentions, (text_self, text_cross, image_self, image_cross))
                )

        if pooler_only and not query_subset:
            text = text[:, :1] if text is not None else None
            image = image[:, :num_frames] if image is not None else None
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

    def _check_image_token_type(self, image_token_type_idx: int):
        if not 0 <= image_token_type_idx < self.config.num_token_types:
            raise ValueError(
                f"image_token_type_idx={image_token_type_idx} but the token-type table has "
                f"{self.config.num_token_types} rows."
            )

    @staticmethod
    def _run_stream(layer, mode, *args, **kwargs):
        """One stream's layer, in `mode` "grad", "no_grad" or "skip" (see `fuse`)."""
        if mode == "skip":
            return None, None, None
        if mode not in ("grad", "no_grad"):
            raise ValueError(f"Final-layer mode must be 'grad', 'no_grad' or 'skip', got {mode!r}.")
        if mode == "no_grad":
            with torch.no_grad():
                return layer(*args, **kwargs)
        return layer(*args, **kwargs)

    def precompute_image_fusion(
        self, image_embeds: torch.Tensor, image_token_type_idx: int = 1, **kwargs
    ) -> SCLImageFusionCache:
        """The first fusion layer's work that depends on the image alone, to pass to `fuse` as `image_cache` when the
        same images are fused with several batches of texts (e.g. the ITM, MLM and completion passes of a
        pre-training step): the image stream's first self-attention, and the image keys and values of the text
        stream's first cross-attention. Within one `fuse` call, `image_index` shares the same work by itself.

        Under training dropout, every pair that reads the cache shares its dropout masks.
        """
        if image_embeds.dim() != 3:
            raise ValueError(f"`image_embeds` must be (batch, tokens, hidden), got {tuple(image_embeds.shape)}.")
        self._check_image_token_type(image_token_type_idx)
        image = image_embeds + self.token_type_embeddings.weight[image_token_type_idx]
        return self._image_fusion_cache(image_embeds, image, image_token_type_idx, **kwargs)

    def _image_fusion_cache(
        self, image_embeds, image, image_token_type_idx, num_queries=None, skip_self_attention=False, **kwargs
    ):
        """For a one-layer fuse: `num_queries` runs the image self-attention for the first tokens only
        (`pooler_only`), `skip_self_attention` not at all (the image stream's last layer is skipped)."""
        self_output = self_weights = None
        if not skip_self_attention:
            self_output, self_weights = self.cross_modal_image_layers[0](
                image, None, num_queries=num_queries, only="self_attention", **kwargs
            )
        key, value = self.cross_modal_text_layers[0](None, image, only="encoder_key_value")
        return SCLImageFusionCache(image_embeds, image_token_type_idx, image, self_output, self_weights, key, value)

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

        Other keyword arguments go to [`SCLModel.fuse`], e.g. `pooler_only=True` when only `pooler_output` is read.
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
    if issubclass(cls, SCLVisionModel):
        raise TypeError("from_vision_text_pretrained builds a two-tower SCL model; SCLVisionModel is one tower.")
    from transformers import CLIPVisionModel

    clip_config = AutoConfig.from_pretrained(vision_path)
    vision_kwargs = config_kwargs.pop("vision_config", None) or {}
    vision_config = _vision_config_from_clip(clip_config, image_size, vision_kwargs.get("max_frames", 8))
    text_tower = AutoModel.from_pretrained(text_path, add_pooling_layer=False)
    config = SCLConfig(
        text_config=text_tower.config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_size=image_size,
        **config_kwargs,
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
# Pre-training (spec §2): MLM + ITM + ITC + masked vision / language semantic completion
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SCLLosses(ModelOutput):
    r"""
    The terms of the pre-training loss, each already multiplied by its `config.<name>_weight` (so `loss` is their
    sum, and `itc` carries the reference's 0.5 as its logs do); `None` for an objective that is switched off.

    mlm (`torch.FloatTensor` of shape `()`, *optional*):
        Masked language modeling on the fused text (spec §2.1).
    itm (`torch.FloatTensor` of shape `()`, *optional*):
        Image–text matching, half of the pairs negative (spec §2.2).
    itc (`torch.FloatTensor` of shape `()`, *optional*):
        Image–text contrastive, both directions summed (spec §2.3).
    mvsc (`torch.FloatTensor` of shape `()`, *optional*):
        Masked vision semantic completion (spec §2.4).
    mlsc (`torch.FloatTensor` of shape `()`, *optional*):
        Masked language semantic completion (spec §2.4).
    """

    mlm: torch.FloatTensor | None = None
    itm: torch.FloatTensor | None = None
    itc: torch.FloatTensor | None = None
    mvsc: torch.FloatTensor | None = None
    mlsc: torch.FloatTensor | None = None


@dataclass
class SCLForPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        Weighted sum of the enabled objectives.
    loss_info ([`SCLLosses`], *optional*, returned when `return_loss=True`):
        The weighted terms of `loss`.
    mlm_logits (`torch.FloatTensor` of shape `(num_masked_tokens, vocab_size)`, *optional*):
        MLM scores at the positions where `mlm_labels != -100`, in row-major order (the head is not run elsewhere).
    itm_logits (`torch.FloatTensor` of shape `(batch_size, 2)`, *optional*):
        ITM scores of each text with its own image (label 1) or with a negative image (label 0).
    itm_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        The ITM labels used (given or sampled).
    itc_logits_per_text (`torch.FloatTensor` of shape `(batch_size, global_batch_size)`, *optional*):
        Cosine similarity / `itc_temperature` of each local text with every image gathered from all ranks.
    itc_logits_per_image (`torch.FloatTensor` of shape `(batch_size, global_batch_size)`, *optional*):
        The same for each local image against every text.
    mlm_accuracy (`torch.FloatTensor` of shape `()`, *optional*):
        Fraction of masked tokens predicted exactly (for logging, no gradient).
    itm_accuracy (`torch.FloatTensor` of shape `()`, *optional*):
        Fraction of ITM pairs classified correctly (for logging, no gradient).
    itc_accuracy (`torch.FloatTensor` of shape `()`, *optional*):
        In-batch retrieval R@1 over the gathered batch, the mean of text→image and image→text (for logging).
    """

    loss: torch.FloatTensor | None = None
    loss_info: SCLLosses | None = None
    mlm_logits: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    itc_logits_per_text: torch.FloatTensor | None = None
    itc_logits_per_image: torch.FloatTensor | None = None
    mlm_accuracy: torch.FloatTensor | None = None
    itm_accuracy: torch.FloatTensor | None = None
    itc_accuracy: torch.FloatTensor | None = None

    def to_tuple(self) -> tuple:
        return tuple(self[key].to_tuple() if key == "loss_info" else self[key] for key in self.keys())


def sample_itm_labels(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.LongTensor:
    """spec §2.2: `batch_size // 2` positives (1), the rest negatives (0), in random order."""
    order = torch.randperm(batch_size, generator=generator, device=generator.device if generator else device)
    return (order < batch_size // 2).long().to(device)


def sample_itm_negatives(
    batch_size: int,
    similarity: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.LongTensor:
    """For each text, the index of another image of the batch to pair it with; never its own.

    Without `similarity`, uniform over the other images, drawn independently per text (the reference draws a
    uniformly random dataset image, spec §2.2). With a `(batch, batch)` text-to-image `similarity` (logits), drawn
    from its softmax over the other images: ALBEF-style hard negatives.
    """
    if batch_size < 2:
        raise ValueError(
            f"ITM negatives are other images of the batch, so ITM needs at least 2 samples, got {batch_size}."
        )
    rng_device = generator.device if generator else device
    if similarity is None:
        offsets = torch.randint(1, batch_size, (batch_size,), generator=generator, device=rng_device)
        return ((torch.arange(batch_size, device=rng_device) + offsets) % batch_size).to(device)
    own = torch.eye(batch_size, dtype=torch.bool, device=similarity.device)
    weights = similarity.float().masked_fill(own, float("-inf")).softmax(dim=1)
    return torch.multinomial(weights.to(rng_device), 1, generator=generator).squeeze(1).to(device)


class _SCLContrastiveFeatures:
    """ITC embeddings of the models that hold `scl`, `itc_text_projection`, `itc_image_projection` and
    `itc_temperature` (spec §2.3): unimodal text CLS / mean of the unimodal frame-CLS tokens → projection → L2 norm.
    """

    def itc_text_embeds(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """`(B, L, H)` unimodal text tokens → `(B, itc_projection_dim)` L2-normalised ITC embeddings."""
        return nn.functional.normalize(self.itc_text_projection(text_embeds[:, 0]), dim=-1, eps=NORM_EPS)

    def itc_image_embeds(self, image_embeds: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """`(B, F(1+N), H)` unimodal image tokens → `(B, itc_projection_dim)` L2-normalised ITC embeddings."""
        pooled = image_embeds[:, :num_frames].mean(dim=1)
        return nn.functional.normalize(self.itc_image_projection(pooled), dim=-1, eps=NORM_EPS)

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns:
            `BaseModelOutputWithPooling` whose `pooler_output` `(B, itc_projection_dim)` is the L2-normalised ITC
            embedding and whose `last_hidden_state` `(B, L, hidden_size)` holds the unimodal tokens that fusion
            consumes (cache them with `attention_mask` to score pairs later).
        """
        text_embeds, _ = self.scl.encode_text(input_ids, attention_mask, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=text_embeds, pooler_output=self.itc_text_embeds(text_embeds)
        )

    def get_image_features(
        self, pixel_values: torch.FloatTensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            Images.

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` is the L2-normalised ITC embedding, `last_hidden_state`
            `(B, 1 + N, hidden_size)` the unimodal tokens that fusion consumes.
        """
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(
                f"`pixel_values` must be (batch, 3, height, width); got {shape}. Use get_video_features for videos."
            )
        image_embeds, _ = self.scl.encode_image(
            pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        return BaseModelOutputWithPooling(
            last_hidden_state=image_embeds, pooler_output=self.itc_image_embeds(image_embeds)
        )

    def get_video_features(
        self, pixel_values_videos: torch.FloatTensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`):
            Videos.

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` is the L2-normalised ITC embedding (from the mean of the
            frame-CLS tokens), `last_hidden_state` `(B, F(1 + N), hidden_size)` the unimodal tokens.
        """
        if pixel_values_videos is None or pixel_values_videos.dim() != 5:
            shape = None if pixel_values_videos is None else tuple(pixel_values_videos.shape)
            raise ValueError(f"`pixel_values_videos` must be (batch, frames, 3, height, width); got {shape}.")
        image_embeds, _ = self.scl.encode_image(
            pixel_values_videos=pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        itc = self.itc_image_embeds(image_embeds, num_frames=pixel_values_videos.shape[1])
        return BaseModelOutputWithPooling(last_hidden_state=image_embeds, pooler_output=itc)

    def _add_itc_heads(self, config: SCLConfig):
        self.itc_text_projection = SCLITCProjection(config)
        self.itc_image_projection = SCLITCProjection(config)
        # spec §1.1: learnable divisor, init 0.07, not log-parameterised. Shape (1,), not the reference's scalar:
        # FSDP cannot shard a 0-d parameter. Checkpoints with the scalar load (`_load_scalar_temperature`).
        self.itc_temperature = nn.Parameter(torch.full((1,), config.itc_temperature_init))


class SCLForPreTraining(_SCLContrastiveFeatures, SCLPreTrainedModel):
    r"""SCL pre-training: MLM + ITM + ITC + MVSC + MLSC (spec §2), each switched by `config.pretraining_objectives`
    and weighted by `config.<name>_weight`.

    **Every input is encoded once.** The reference runs four fusion passes and one unimodal pass per step (spec §2:
    ITM, MLM, ITC, SCL pass A, SCL pass B), each recomputing its towers: 5 text-tower and 5 vision-tower runs. Here:

    * the complete text and the complete image go through their towers once. ITC reads their unimodal CLS tokens;
      the ITM pass fuses them, its negatives indexing the cached image embeddings; the MLM pass and SCL pass B reuse
      the image; SCL pass A reuses the text;
    * only the MLM-masked text, the MLSC-masked text and the patch-dropped image (20% of the patches) are encoded
      besides: the three captions in one text-tower call of `3 * batch_size` rows, the images in two vision calls;
    * the last fusion layer of a stream whose output is unused is skipped (the image stream of the MLM pass), and
      the last layer of a stream whose output is only a stop-gradient target runs without autograd (the image
      stream of pass B, the MVSC target; the text stream of pass A, the MLSC target). The other stream of those
      passes is a prediction and keeps its graph: its last layer reads the previous layer's outputs of both
      streams, which are still built with gradients;
    * the ITM pass and both completion passes read only CLS tokens of the last fusion layer, so that layer runs
      for the text CLS and the frame CLS tokens only (`SCLModel.fuse(pooler_only=True)`);
    * the ITM, MLM and pass-B fusions share the first fusion layer's work that depends on the complete image alone
      (`SCLModel.precompute_image_fusion`), and the ITM pass fuses each image once however many texts it serves;
    * a pass that yields only a target (pass A without MVSC, pass B without MLSC) runs entirely without autograd.

    **Why the gradients are the reference's.** Each loss is the same function of the same inputs. Without dropout a
    tower is deterministic, so a recomputed encoding equals the cached one, and autograd sums the gradients of all
    consumers of a cached tensor exactly as the reference's separate recomputations sum theirs. Targets are
    `.detach()`-ed in the reference, so building no graph for them changes nothing. Under training dropout the
    reference draws an independent mask per recomputation and we draw one per tower run: the same expectation,
    different noise; likewise the passes that share the first fusion layer's image-only work share its dropout masks.

    Deviations from the reference: MVSC normalises over the feature axis (spec §2.4, §7.2 item 11); ITM negatives
    are other images of the local batch instead of random dataset images (spec §2.2); `itc_temperature` is divided
    without a clamp as in the reference, so it must stay positive (at the reference's learning rates it does).
    """

    def __init__(self, config: SCLConfig):
        super().__init__(config)
        self.scl = SCLModel(config)
        self.mlm_score = SCLMLMHead(config)
        self.itm_score = SCLITMHead(config)
        self._add_itc_heads(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        mlsc_input_ids: torch.LongTensor | None = None,
        itm_labels: torch.LongTensor | None = None,
        itm_negative_indices: torch.LongTensor | None = None,
        patch_keep_indices: torch.LongTensor | None = None,
        generator: torch.Generator | None = None,
        interpolate_pos_encoding: bool = False,
        return_loss: bool = True,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SCLForPreTrainingOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
            The complete captions.
        mlm_input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            MLM-masked captions (15%, 80/10/10; spec §2.1). Required by `"mlm"`.
        mlm_labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            Original ids at the MLM-masked positions, -100 elsewhere. Required by `"mlm"`.
        mlsc_input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            Captions with up to 40% of the real tokens replaced by `<mask>` (spec §2.4). Required by `"mlsc"` and by
            `"mvsc"` (whose target comes from the masked-text pass).
        itm_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 to pair a text with its own image, 0 with a negative. Sampled (half positive) if not given.
        itm_negative_indices (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Batch index of the negative image of each text (read where `itm_labels` is 0; must differ from the row).
            Sampled if not given, from ITC similarities when `config.itm_hard_negatives`.
        patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Patches kept in the masked image; sampled with `config.image_mask_ratio` if not given.
        generator (`torch.Generator`, *optional*):
            Source of every random draw of this forward (ITM labels and negatives, patch dropping).
        return_loss (`bool`, *optional*, defaults to `True`):
            Compute `loss` and `loss_info`. Without it the semantic-completion passes, which only produce losses, are
            not run.
        """
        objectives = set(self.config.pretraining_objectives)
        self._check_inputs(
            objectives, input_ids, pixel_values, pixel_values_videos, mlm_input_ids, mlm_labels, mlsc_input_ids
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        pixels = {
            "pixel_values": pixel_values,
            "pixel_values_videos": pixel_values_videos,
            "interpolate_pos_encoding": interpolate_pos_encoding,
        }
        fuse_kwargs = {"attention_mask": attention_mask, "num_frames": num_frames, **kwargs}
        losses = {}
        outputs = {}
        want_mvsc, want_mlsc = "mvsc" in objectives, "mlsc" in objectives
        semantic_completion = return_loss and (want_mvsc or want_mlsc)

        # Every caption and the complete image go through their towers once; the passes below share them.
        captions = {}  # name -> (ids, whether a loss differentiates through it)
        if objectives - {"mlm"}:
            captions["complete"] = (input_ids, bool(objectives & {"itc", "itm", "mvsc"}))
        if "mlm" in objectives:
            captions["mlm"] = (mlm_input_ids, True)
        if semantic_completion:
            captions["mlsc"] = (mlsc_input_ids, want_mlsc)
        text_embeds = self._encode_captions(captions, attention_mask, **kwargs)
        image_embeds, _ = self.scl.encode_image(**pixels, **kwargs)

        itc_text = itc_image = None
        if "itc" in objectives or ("itm" in objectives and self.config.itm_hard_negatives):
            with torch.set_grad_enabled(torch.is_grad_enabled() and "itc" in objectives):
                # spec §2.3: unimodal text CLS and the mean of the unimodal frame CLS tokens.
                itc_text = self.itc_text_projection(text_embeds["complete"][:, 0])
                itc_image = self.itc_image_projection(image_embeds[:, :num_frames].mean(dim=1))

        if "itc" in objectives:
            losses["itc"], logits_per_text, logits_per_image = image_text_contrastive_loss(
                itc_text, itc_image, self.itc_temperature, return_logits=True
            )
            outputs.update(itc_logits_per_text=logits_per_text, itc_logits_per_image=logits_per_image)

        # ITM, MLM and pass B fuse the complete images: their first fusion layer's image-only work runs once.
        image_cache = None
        if objectives & {"itm", "mlm"} or semantic_completion:
            with torch.set_grad_enabled(torch.is_grad_enabled() and bool(objectives & {"itm", "mlm", "mlsc"})):
                image_cache = self.scl.precompute_image_fusion(image_embeds, **kwargs)

        if "itm" in objectives:
            itm_labels, image_index = self._itm_pairs(
                input_ids.shape[0], itm_labels, itm_negative_indices, itc_text, itc_image, generator
            )
            fused = self.scl.fuse(
                text_embeds["complete"],
                image_embeds,
                image_index=image_index,
                image_cache=image_cache,
                pooler_only=True,
                **fuse_kwargs,
            )
            outputs["itm_logits"] = self.itm_score(fused.pooler_output)
            outputs["itm_labels"] = itm_labels
            losses["itm"] = nn.functional.cross_entropy(outputs["itm_logits"], itm_labels)

        if "mlm" in objectives:
            # spec §2.1: only the fused text is scored, so the image stream's last layer is not needed.
            fused = self.scl.fuse(
                text_embeds["mlm"], image_embeds, final_image_layer="skip", image_cache=image_cache, **fuse_kwargs
            )
            masked = mlm_labels != -100
            outputs["mlm_logits"] = self.mlm_score(fused.text_features[masked])
            mlm_targets = mlm_labels[masked]
            # A mean over the masked tokens that is 0, not NaN, when a batch has none.
            losses["mlm"] = nn.functional.cross_entropy(
                outputs["mlm_logits"], mlm_targets, reduction="sum"
            ) / masked.sum().clamp(min=1)

        if semantic_completion:
            grad = torch.is_grad_enabled()
            # spec §2.4 pass B: masked text + complete image. Text CLS → MLSC prediction; frame CLS → MVSC target.
            with torch.set_grad_enabled(grad and want_mlsc):
                pass_b = self.scl.fuse(
                    text_embeds["mlsc"],
                    image_embeds,
                    final_text_layer="grad" if want_mlsc else "skip",
                    final_image_layer="no_grad" if want_mvsc else "skip",
                    pooler_only=True,
                    image_cache=image_cache,
                    **fuse_kwargs,
                )
            # spec §2.4 pass A: complete text + patch-dropped image. Frame CLS → MVSC prediction; text CLS → MLSC target.
            with torch.set_grad_enabled(grad and want_mvsc):
                dropped_embeds, _ = self.scl.encode_image(
                    **pixels,
                    patch_keep_indices=patch_keep_indices,
                    mask_ratio=self.config.image_mask_ratio,
                    generator=generator,
                    **kwargs,
                )
                pass_a = self.scl.fuse(
                    text_embeds["complete"],
                    dropped_embeds,
                    final_text_layer="no_grad" if want_mlsc else "skip",
                    final_image_layer="grad" if want_mvsc else "skip",
                    pooler_only=True,
                    **fuse_kwargs,
                )
            temperature = self.config.scl_temperature
            if want_mvsc:  # per-frame contrast of the fused frame-CLS tokens
                losses["mvsc"] = semantic_completion_loss(
                    pass_a.image_features[:, :num_frames], pass_b.image_features[:, :num_frames], temperature
                )
            if want_mlsc:
                losses["mlsc"] = semantic_completion_loss(
                    pass_b.text_features[:, 0], pass_a.text_features[:, 0], temperature
                )

        loss = loss_info = None
        if return_loss:
            loss_info = SCLLosses(
                **{name: getattr(self.config, f"{name}_weight") * value for name, value in losses.items()}
            )
            loss = sum(loss_info.values())
        return SCLForPreTrainingOutput(
            loss=loss, loss_info=loss_info, **outputs, **self._accuracies(outputs, mlm_labels)
        )

    def _encode_captions(self, captions: dict, attention_mask: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        """Text-tower embeddings of same-shape captions, `{name: (ids, needs_grad)}`, in at most two tower calls.

        Captions a loss differentiates through share one call with autograd, the others (stop-gradient targets only)
        one without. The tower treats rows independently, so this equals a call per caption, in larger matmuls.
        """
        embeds = {}
        for needs_grad in (True, False):
            names = [name for name, (_, grad) in captions.items() if grad == needs_grad]
            if not names:
                continue
            ids = torch.cat([captions[name][0] for name in names])
            with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
                encoded, _ = self.scl.encode_text(ids, attention_mask.repeat(len(names), 1), **kwargs)
            embeds.update(zip(names, encoded.chunk(len(names))))
        return embeds

    def _check_inputs(
        self, objectives, input_ids, pixel_values, pixel_values_videos, mlm_input_ids, mlm_labels, mlsc_input_ids
    ):
        if not objectives:
            raise ValueError("config.pretraining_objectives is empty: there is nothing to pre-train.")
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(
                f"`input_ids` must be (batch, length), got {None if input_ids is None else tuple(input_ids.shape)}."
            )
        if (pixel_values is None) == (pixel_values_videos is None):
            raise ValueError("Pass exactly one of `pixel_values` (images) or `pixel_values_videos` (videos).")
        required_by = {"mlm_input_ids": ("mlm",), "mlm_labels": ("mlm",), "mlsc_input_ids": ("mvsc", "mlsc")}
        values = {"mlm_input_ids": mlm_input_ids, "mlm_labels": mlm_labels, "mlsc_input_ids": mlsc_input_ids}
        for name, value in values.items():
            users = [objective for objective in required_by[name] if objective in objectives]
            if users and value is None:
                raise ValueError(
                    f"`{name}` is required by the {users} objective(s) of config.pretraining_objectives; pass it or "
                    "remove the objective."
                )
            if value is not None and value.shape != input_ids.shape:
                raise ValueError(
                    f"`{name}` {tuple(value.shape)} must have the shape of `input_ids` {tuple(input_ids.shape)}."
                )

    def _itm_pairs(self, batch_size, itm_labels, itm_negative_indices, itc_text, itc_image, generator):
        """spec §2.2: the labels and, per text, the batch index of the image it is fused with."""
        device = self.itm_score.fc.weight.device
        rows = torch.arange(batch_size, device=device)
        if itm_labels is None:
            itm_labels = sample_itm_labels(batch_size, generator, device)
        elif itm_labels.shape != (batch_size,):
            raise ValueError(f"`itm_labels` must be ({batch_size},), got {tuple(itm_labels.shape)}.")
        if itm_negative_indices is None:
            similarity = None
            if self.config.itm_hard_negatives:
                with torch.no_grad():  # ALBEF: softmax of the ITC logits, the positive excluded
                    text = nn.functional.normalize(itc_text, dim=-1)
                    image = nn.functional.normalize(itc_image, dim=-1)
                    similarity = text @ image.t() / self.itc_temperature
            itm_negative_indices = sample_itm_negatives(batch_size, similarity, generator, device)
        else:
            if itm_negative_indices.shape != (batch_size,):
                raise ValueError(
                    f"`itm_negative_indices` must be ({batch_size},), got {tuple(itm_negative_indices.shape)}."
                )
            if (itm_negative_indices < 0).any() or (itm_negative_indices >= batch_size).any():
                raise ValueError(f"`itm_negative_indices` must lie in [0, {batch_size}).")
            if ((itm_negative_indices == rows) & (itm_labels == 0)).any():
                raise ValueError("`itm_negative_indices` pairs a negative (label 0) text with its own image.")
        image_index = torch.where(itm_labels.bool(), rows, itm_negative_indices.to(device))
        return itm_labels.to(device), image_index

    @staticmethod
    @torch.no_grad()
    def _accuracies(outputs: dict, mlm_labels: torch.Tensor | None) -> dict:
        accuracies = {}
        if "mlm_logits" in outputs:
            targets = mlm_labels[mlm_labels != -100]
            correct = (outputs["mlm_logits"].argmax(dim=-1) == targets).sum()
            accuracies["mlm_accuracy"] = correct / max(targets.numel(), 1)
        if "itm_logits" in outputs:
            accuracies["itm_accuracy"] = (outputs["itm_logits"].argmax(dim=-1) == outputs["itm_labels"]).float().mean()
        if "itc_logits_per_text" in outputs:
            labels = contrastive_labels(outputs["itc_logits_per_text"].shape[0], outputs["itc_logits_per_text"].device)
            hits = [
                (outputs[key].argmax(dim=-1) == labels).float().mean()
                for key in ("itc_logits_per_text", "itc_logits_per_image")
            ]
            accuracies["itc_accuracy"] = (hits[0] + hits[1]) / 2
        return accuracies


# ---------------------------------------------------------------------------------------------------------------------
# Downstream heads (spec §3.1): VQA, NLVR2, image/video–text retrieval, and zero-shot classification through ITC
# ---------------------------------------------------------------------------------------------------------------------


VQA_NUM_ANSWERS = 3129  # spec §3.2: VQAv2 answers given at least 9 times (`vqav2_label_size`)
NLVR2_ID2LABEL = {0: "False", 1: "True"}


def _has_placeholder_labels(config: SCLConfig) -> bool:
    """True for transformers' default label map `{0: "LABEL_0", 1: "LABEL_1"}`, i.e. when no label set was chosen."""
    return config.id2label is None or config.id2label == {0: "LABEL_0", 1: "LABEL_1"}


class SCLClassifier(nn.Sequential):
    """Linear → LayerNorm → GELU → Linear: the VQA and NLVR2 classifiers (spec §3.1; state-dict indices 0, 1, 3)."""

    def __init__(self, input_size: int, hidden_size: int, num_labels: int):
        super().__init__(
            nn.Linear(input_size, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, num_labels),
        )


class SCLForQuestionAnswering(SCLPreTrainedModel):
    r"""SCL with the VQAv2 answer classifier on `pooler_output` (spec §3.1), for images or videos.

    The answers are `config.id2label`. A config that names no labels (transformers' default two placeholders) gets the
    paper's 3129 answers, with placeholder names; pass `id2label` with the answer strings to name them.
    """

    def __init__(self, config: SCLConfig):
        if _has_placeholder_labels(config):
            config.num_labels = VQA_NUM_ANSWERS
        super().__init__(config)
        self.scl = SCLModel(config)
        self.vqa_classifier = SCLClassifier(2 * config.hidden_size, 2 * config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            VQA soft score of every answer (0, 0.3, 0.6, 0.9 or 1), e.g. from `SCLVQACollator`.

        Other keyword arguments (`text_embeds`, `image_embeds`, `num_frames`, …) go to [`SCLModel.forward`].
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        outputs = self.scl(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            # Only `pooler_output` is classified; a full last layer is run only when its states are returned.
            pooler_only=not (output_attentions or output_hidden_states),
            **kwargs,
        )
        logits = self.vqa_classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"`labels` must be soft scores of shape (batch, num_labels) = {tuple(logits.shape)}, got "
                    f"{tuple(labels.shape)}."
                )
            # spec §3.1: BCE summed over the answers and averaged over the batch (ViLT/BAN convention).
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * labels.shape[1]
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SCLForImagesAndTextClassification(SCLPreTrainedModel):
    r"""NLVR2: is a statement true of a pair of images? (spec §3.1)

    The text is encoded once and fused with each image, the left one with token type 1 and the right one with token
    type 2; the two `pooler_output`s are concatenated and classified (`id2label` `{0: "False", 1: "True"}`).

    The token-type table therefore has 3 rows (`config.num_token_types` is raised to 3). `from_pretrained` on a
    checkpoint with the 2-row pre-training table loads its rows and sets row 2 to a copy of row 1 (spec §1.1).
    """

    def __init__(self, config: SCLConfig):
        config.num_token_types = max(config.num_token_types, 3)
        if _has_placeholder_labels(config):
            config.id2label = dict(NLVR2_ID2LABEL)
            config.label2id = {label: index for index, label in NLVR2_ID2LABEL.items()}
        elif config.num_labels != 2:
            raise ValueError(f"NLVR2 has two labels (False, True); the config names {config.num_labels}.")
        super().__init__(config)
        self.scl = SCLModel(config)
        self.nlvr2_classifier = SCLClassifier(4 * config.hidden_size, 2 * config.hidden_size, 2)
        self.post_init()

    @staticmethod
    def _image_pair(pixel_values) -> torch.Tensor:
        if isinstance(pixel_values, (tuple, list)) and len(pixel_values) == 2:
            if pixel_values[0].shape != pixel_values[1].shape or pixel_values[0].dim() != 4:
                raise ValueError(
                    "The two image tensors must both be (batch, 3, height, width); got "
                    f"{tuple(pixel_values[0].shape)} and {tuple(pixel_values[1].shape)}."
                )
            return torch.stack(list(pixel_values), dim=1)
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 5 or pixel_values.shape[1] != 2:
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            )
            raise ValueError(
                f"`pixel_values` must be (batch, 2, 3, height, width) or a pair of (batch, 3, height, width) tensors, "
                f"got {shape}."
            )
        return pixel_values

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | tuple[torch.FloatTensor, torch.FloatTensor] | None = None,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 2, 3, height, width)`, or a pair of `(batch_size, 3, height, width)` tensors):
            The left and right image of each example.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 if the statement is true of the image pair, else 0.

        `hidden_states` / `attentions` of the output hold, for the left and then the right image, the fusion streams'
        hidden states / attention weights (see [`SCLModel.fuse`]).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        images = self._image_pair(pixel_values)
        batch_size = images.shape[0]
        if input_ids is None or input_ids.shape[0] != batch_size:
            raise ValueError(f"`input_ids` must be (batch={batch_size}, length), one statement per image pair.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        text_embeds, _ = self.scl.encode_text(input_ids, attention_mask)
        image_embeds, _ = self.scl.encode_image(
            images.flatten(0, 1), interpolate_pos_encoding=interpolate_pos_encoding
        )
        image_embeds = image_embeds.unflatten(0, (batch_size, 2))
        fused = [
            # spec §3.1: the left image gets token type 1, the right one token type 2.
            self.scl.fuse(
                text_embeds,
                image_embeds[:, side],
                attention_mask,
                image_token_type_idx=side + 1,
                # Only `pooler_output` is classified; a full last layer is run only when its states are returned.
                pooler_only=not (output_attentions or output_hidden_states),
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
            for side in range(2)
        ]
        logits = self.nlvr2_classifier(torch.cat([output.pooler_output for output in fused], dim=-1))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.view(-1).to(logits.device))
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=tuple(output.hidden_states for output in fused) if output_hidden_states else None,
            attentions=tuple(output.attentions for output in fused) if output_attentions else None,
        )


def _read_checkpoint_tensor(state_dict, checkpoint_files, names) -> torch.Tensor | None:
    """The first of `names` found in `state_dict` or in the checkpoint files (safetensors or torch), else `None`."""
    if state_dict is not None:
        return next((state_dict[name] for name in names if name in state_dict), None)
    for path in checkpoint_files or ():
        if str(path).endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as file:
                keys = set(file.keys())
                found = next((name for name in names if name in keys), None)
                if found is not None:
                    return file.get_tensor(found)
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
            found = next((name for name in names if name in weights), None)
            if found is not None:
                return weights[found]
    return None


def _loaded_parameter(model, tensor: torch.Tensor) -> nn.Parameter:
    """`tensor`, read from the checkpoint, as a parameter on the model's device and dtype that transformers treats as
    loaded (its finalisation must not initialise it again)."""
    reference = model.scl.cross_modal_text_transform.weight  # loaded, so on the model's device (not meta)
    parameter = nn.Parameter(tensor.to(device=reference.device, dtype=reference.dtype))
    parameter._is_hf_initialized = True
    return parameter


def _load_scalar_temperature(model, loading_info, state_dict, checkpoint_files):
    """A checkpoint's 0-d `itc_temperature` (the reference's `cl_temp`, and this package before 0.1) loads into the
    (1,)-shaped parameter, instead of being reported as a size mismatch."""
    entry = next((m for m in loading_info.mismatched_keys if m[0] == "itc_temperature"), None)
    if entry is None or tuple(entry[1]) != () or tuple(entry[2]) != (1,):
        return  # absent, or a genuine mismatch: left to transformers' loading report
    value = _read_checkpoint_tensor(state_dict, checkpoint_files, ("itc_temperature",))
    if value is None:
        return
    model.itc_temperature = _loaded_parameter(model, value.reshape(1))
    loading_info.mismatched_keys.discard(entry)


def _load_smaller_token_type_table(model, loading_info, state_dict, checkpoint_files):
    """spec §1.1: a checkpoint table with fewer token types fills the first rows; each extra row copies its last row.

    transformers reports the smaller table as a size mismatch and drops it; this reads it back from the checkpoint,
    installs the grown table as loaded and clears the mismatch, so neither an error nor a re-initialisation follows.
    """
    target = f"{model.base_model_prefix}.token_type_embeddings.weight"
    entry = next((mismatch for mismatch in loading_info.mismatched_keys if mismatch[0] == target), None)
    if entry is None:
        return
    _, checkpoint_shape, model_shape = entry
    if len(checkpoint_shape) != 2 or checkpoint_shape[1] != model_shape[1] or checkpoint_shape[0] >= model_shape[0]:
        return  # a genuine mismatch: left to transformers' loading report
    table = _read_checkpoint_tensor(state_dict, checkpoint_files, (target, target.split(".", 1)[1]))
    if table is None:
        return
    extra_rows = model_shape[0] - checkpoint_shape[0]
    grown = torch.cat([table, table[-1:].expand(extra_rows, -1)], dim=0)
    model.scl.token_type_embeddings.weight = _loaded_parameter(model, grown)
    loading_info.mismatched_keys.discard(entry)
    logger.info(
        f"Grew {target} from {checkpoint_shape[0]} to {model_shape[0]} token types; the new rows copy row "
        f"{checkpoint_shape[0] - 1} (spec §1.1)."
    )


# -- image/video–text retrieval and ITC zero-shot classification -------------------------------------------------------


@dataclass
class SCLImageTextRetrievalOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        `rank_loss + config.itc_weight * itc_loss` (spec §3.1).
    rank_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Cross-entropy of each image's rank scores, its own text being the target.
    itc_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Image–text contrastive loss over the batch gathered from every rank (unweighted; spec §2.3).
    logits (`torch.FloatTensor` of shape `(batch_size, 1 + num_negatives)`):
        Rank-head score of each image with its candidate texts: its own text (column 0), then its negatives.
    logits_per_image (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
        ITC cosine similarity / `itc_temperature` of every local image with every local text.
    logits_per_text (`torch.FloatTensor` of shape `(batch_size, batch_size)`):
        Transpose of `logits_per_image`.
    itc_text_embeds (`torch.FloatTensor` of shape `(batch_size, itc_projection_dim)`):
        L2-normalised ITC text embeddings.
    itc_image_embeds (`torch.FloatTensor` of shape `(batch_size, itc_projection_dim)`):
        L2-normalised ITC image (or video) embeddings.
    negative_text_indices (`torch.LongTensor` of shape `(batch_size, num_negatives)`, *optional*):
        Batch index of each image's negative texts (given or sampled).
    """

    loss: torch.FloatTensor | None = None
    rank_loss: torch.FloatTensor | None = None
    itc_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itc_text_embeds: torch.FloatTensor | None = None
    itc_image_embeds: torch.FloatTensor | None = None
    negative_text_indices: torch.LongTensor | None = None


@dataclass
class SCLContrastiveOutput(ModelOutput):
    r"""
    logits_per_image (`torch.FloatTensor` of shape `(num_images, num_texts)`):
        ITC cosine similarity / `itc_temperature` of every image (or video) with every text.
    logits_per_text (`torch.FloatTensor` of shape `(num_texts, num_images)`):
        Transpose of `logits_per_image`.
    itc_text_embeds (`torch.FloatTensor` of shape `(num_texts, itc_projection_dim)`):
        L2-normalised ITC text embeddings.
    itc_image_embeds (`torch.FloatTensor` of shape `(num_images, itc_projection_dim)`):
        L2-normalised ITC image (or video) embeddings.
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itc_text_embeds: torch.FloatTensor | None = None
    itc_image_embeds: torch.FloatTensor | None = None


def sample_negative_text_indices(
    batch_size: int, num_negatives: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.LongTensor:
    """For each row of the batch, `min(num_negatives, batch_size - 1)` distinct other rows, uniformly at random.

    The reference draws its 15 negative texts at random from the whole dataset (spec §3.1); in-batch negatives need
    no extra text encodings. A batch smaller than `num_negatives + 1` yields fewer negatives.
    """
    if batch_size < 2:
        raise ValueError(
            f"Retrieval negatives are other texts of the batch, so the batch needs 2 samples, got {batch_size}."
        )
    num_negatives = min(num_negatives, batch_size - 1)
    noise = torch.rand(batch_size, batch_size, generator=generator, device=generator.device if generator else device)
    noise.fill_diagonal_(2.0)  # above every uniform draw: a row's own text sorts last and is never picked
    return noise.argsort(dim=1)[:, :num_negatives].to(device)


class SCLForImageTextRetrieval(_SCLContrastiveFeatures, SCLPreTrainedModel):
    r"""Image/video–text retrieval: the rank head `rank_output` scores a fused (image, text) pair (spec §3.1).

    Training (`return_loss=True`): each image is fused with its own text and `config.num_retrieval_negatives` other
    texts of the batch (or `negative_text_indices`); the loss is the cross-entropy of those 1 + N rank scores with the
    own text as target, plus `config.itc_weight` × the ITC loss that the reference intended and never ran (spec §3.1,
    §7.2 item 1). Every text and image is encoded once; the fused pairs index the cached encodings.

    `from_pretrained` on a pre-training checkpoint (one with `itm_score` but no `rank_output`) initialises
    `rank_output` from the ITM head's "match" row (spec §3.1). The ITM head is kept, frozen, only for that purpose.

    For retrieval over a gallery, `get_text_features` / `get_image_features` / `get_video_features` give the ITC
    embeddings and the unimodal tokens to cache, and `score_pairs` scores cached pairs (see `transformers_scl.retrieval`).
    """

    def __init__(self, config: SCLConfig):
        super().__init__(config)
        self.scl = SCLModel(config)
        self.itm_score = SCLITMHead(config)
        self.itm_score.requires_grad_(False)
        self.rank_output = nn.Linear(2 * config.hidden_size, 1)
        self._add_itc_heads(config)
        self.post_init()

    @torch.no_grad()
    def init_rank_output_from_itm(self):
        """spec §3.1: `rank_output` := the ITM head's "match" row (`itm_score.fc` row 1), weight and bias.

        The reference copies the weight only; the bias shifts every score of a query equally, so it changes no ranking
        and no loss, and copying it makes the initial rank score equal the ITM match logit.
        """
        self.rank_output.weight.copy_(self.itm_score.fc.weight[1:])
        self.rank_output.bias.copy_(self.itm_score.fc.bias[1:])

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = loading_info["missing_keys"]
        if "rank_output.weight" in missing and "itm_score.fc.weight" not in missing:
            model.init_rank_output_from_itm()
            logger.info("Initialised rank_output from the ITM head's match row (spec §3.1).")
        model.itm_score.requires_grad_(False)  # loading replaces the parameters, and with them the frozen flag
        return (model, loading_info) if output_loading_info else model

    def score_pairs(
        self,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        image_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Rank-head score `(P,)` of the aligned rows of unimodal `text_embeds` `(P, L, H)` and `image_embeds`, or of
        text row i with image row `image_index[i]` (each image given once; see [`SCLModel.fuse`])."""
        fused = self.scl.fuse(
            text_embeds,
            image_embeds,
            attention_mask,
            num_frames=num_frames,
            pooler_only=True,
            image_index=image_index,
            **kwargs,
        )
        return self.rank_output(fused.pooler_output).squeeze(-1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        negative_text_indices: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        generator: torch.Generator | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SCLImageTextRetrievalOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
            Text i describes image (or video) i.
        negative_text_indices (`torch.LongTensor` of shape `(batch_size, num_negatives)`, *optional*):
            Batch indices of the texts each image is also ranked against. With `return_loss` and none given,
            `config.num_retrieval_negatives` per image are sampled from the other texts of the batch.
        return_loss (`bool`, *optional*):
            Compute the retrieval loss (spec §3.1).
        generator (`torch.Generator`, *optional*):
            Source of the negative sampling.
        """
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("`input_ids` (batch, length) are required.")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_embeds, _ = self.scl.encode_text(input_ids, attention_mask)
        image_embeds, _ = self.scl.encode_image(
            pixel_values, pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding
        )
        num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        batch_size = image_embeds.shape[0]
        if text_embeds.shape[0] != batch_size:
            raise ValueError(
                f"Got {text_embeds.shape[0]} texts for {batch_size} images; text i must describe image i."
            )

        itc_text = self.itc_text_embeds(text_embeds)
        itc_image = self.itc_image_embeds(image_embeds, num_frames)
        logits_per_image = itc_image @ itc_text.t() / self.itc_temperature

        rows = torch.arange(batch_size, device=text_embeds.device)
        if negative_text_indices is None and return_loss:
            negative_text_indices = sample_negative_text_indices(
                batch_size, self.config.num_retrieval_negatives, generator, text_embeds.device
            )
        if negative_text_indices is not None:
            if negative_text_indices.dim() != 2 or negative_text_indices.shape[0] != batch_size:
                raise ValueError(
                    f"`negative_text_indices` must be (batch={batch_size}, num_negatives), got "
                    f"{tuple(negative_text_indices.shape)}."
                )
            if negative_text_indices.numel() and (
                negative_text_indices.min() < 0 or negative_text_indices.max() >= batch_size
            ):
                raise ValueError(f"`negative_text_indices` must be batch indices in [0, {batch_size}).")
            candidates = torch.cat([rows[:, None], negative_text_indices.to(rows.device)], dim=1)
        else:
            candidates = rows[:, None]
        # Fuse each image with each of its candidate texts, indexing the encodings computed once above.
        num_candidates = candidates.shape[1]
        texts = candidates.flatten()
        logits = self.score_pairs(
            text_embeds[texts],
            image_embeds,
            attention_mask[texts],
            num_frames=num_frames,
            image_index=rows.repeat_interleave(num_candidates),
            **kwargs,
        ).view(batch_size, num_candidates)

        loss = rank_loss = itc_loss = None
        if return_loss:
            if num_candidates < 2:
                raise ValueError("The retrieval loss needs at least one negative text per image.")
            rank_loss = nn.functional.cross_entropy(logits, torch.zeros_like(rows))  # the own text is candidate 0
            loss = rank_loss
            if self.config.itc_weight:
                itc_loss = image_text_contrastive_loss(
                    self.itc_text_projection(text_embeds[:, 0]),
                    self.itc_image_projection(image_embeds[:, :num_frames].mean(dim=1)),
                    self.itc_temperature,
                )
                loss = loss + self.config.itc_weight * itc_loss
        return SCLImageTextRetrievalOutput(
            loss=loss,
            rank_loss=rank_loss,
            itc_loss=itc_loss,
            logits=logits,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            itc_text_embeds=itc_text,
            itc_image_embeds=itc_image,
            negative_text_indices=negative_text_indices,
        )


class SCLForZeroShotImageClassification(_SCLContrastiveFeatures, SCLPreTrainedModel):
    r"""ITC only: cosine similarity / `itc_temperature` of every image (or video) with every text (spec §2.3).

    The model of `pipeline("zero-shot-image-classification")`, which reads `logits_per_image`. It loads the ITC heads
    of a pre-training or retrieval checkpoint; the fusion layers are kept for checkpoint compatibility but not run.
    """

    def __init__(self, config: SCLConfig):
        super().__init__(config)
        self.scl = SCLModel(config)
        self._add_itc_heads(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SCLContrastiveOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_texts, text_length)`):
            The candidate texts (e.g. "a photo of a dog."), any number of them.
        """
        if input_ids is None:
            raise ValueError("`input_ids` are required.")
        text_embeds, _ = self.scl.encode_text(input_ids, attention_mask)
        image_embeds, _ = self.scl.encode_image(
            pixel_values, pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding
        )
        num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        itc_text = self.itc_text_embeds(text_embeds)
        itc_image = self.itc_image_embeds(image_embeds, num_frames)
        logits_per_image = itc_image @ itc_text.t() / self.itc_temperature
        return SCLContrastiveOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            itc_text_embeds=itc_text,
            itc_image_embeds=itc_image,
        )


__all__ = [
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLVisionModel",
    "SCLVisionModelOutput",
    "SCLForPreTraining",
    "SCLForPreTrainingOutput",
    "SCLLosses",
    "sample_itm_labels",
    "sample_itm_negatives",
    "SCLClassifier",
    "SCLContrastiveOutput",
    "SCLForImageTextRetrieval",
    "SCLForImagesAndTextClassification",
    "SCLForQuestionAnswering",
    "SCLForZeroShotImageClassification",
    "SCLImageTextRetrievalOutput",
    "sample_negative_text_indices",
    "resize_position_embedding",
    "sample_patch_keep_indices",
]
