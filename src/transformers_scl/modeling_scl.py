"""PyTorch SCL model: a video-capable CLIP vision tower, a RoBERTa text tower and METER-style co-attention fusion.

The file reads in the order data flows: outputs, vision tower (embeddings, frame attention, layers, encoder), fusion
(attention, cross layers, the fusion encoder, poolers), shared heads, the pre-trained base class, the base model, then
task heads. Faster routes through the fusion layers for tasks that read part of its output live in
`fusion_planning.py`. Facts cite `spec §N` sections (the original implementation's behaviour).

`torch.compile(model, fullgraph=True)` traces `SCLModel` (images and videos) and the pre-training step, forward and
backward (`modeling_tests/test_compile.py`). Checks that read tensor values (index ranges) run in eager mode only.
Known limits: the pre-training MLM logits are gathered at the masked tokens, a value-dependent shape that needs
`torch._dynamo.config.capture_dynamic_output_shape_ops = True`; the random draws a forward makes when ITM labels,
negatives or kept patches are not given (with a `torch.Generator`) are not covered by the tests: give them from the
collator for a full graph.
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
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    ModelOutput,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, auto_docstring, logging
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_scl import SCLConfig, SCLVisionConfig
from .fusion_planning import GRAD, NO_GRAD, FusedPass, FusionPass, fuse_passes, pooled_fusion
from .losses import NORM_EPS, contrastive_labels, image_text_contrastive_loss, semantic_completion_loss
from .masking import (  # the samplers live with the masks; imported here for the heads (and old imports)
    sample_itm_labels,
    sample_itm_negatives,
    sample_negative_text_indices,
    sample_patch_keep_indices,
)

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
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The fusion streams' states, flat: the text stream's input and each text layer's output
        (`num_fusion_layers + 1` tensors of shape `(batch_size, text_length, hidden_size)`), then the same for the
        image stream. The towers' own hidden states are in `text_model_output` / `vision_model_output`.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The text stream's self-attention weights, one per fusion layer, of shape
        `(batch_size, num_heads, text_length, text_length)`. Each of the four attentions of a fusion layer has its
        own field (below), so that the tensors of a field share one shape.
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The text stream's cross-attention weights (text queries, image keys), one per fusion layer, of shape
        `(batch_size, num_heads, text_length, image_length)`.
    image_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The image stream's self-attention weights, one per fusion layer, of shape
        `(batch_size, num_heads, image_length, image_length)`.
    image_cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The image stream's cross-attention weights (image queries, text keys), one per fusion layer, of shape
        `(batch_size, num_heads, image_length, text_length)`.
    text_model_output ([`~modeling_outputs.BaseModelOutput`], *optional*):
        The text tower's output (with its `hidden_states` / `attentions` when asked); `None` when `text_embeds` were
        given.
    vision_model_output ([`SCLVisionModelOutput`], *optional*):
        The vision tower's output; `None` when `image_embeds` were given.
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    patch_keep_indices: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: ModelOutput | None = None

    def to_tuple(self) -> tuple:
        return tuple(self[key].to_tuple() if key.endswith("_model_output") else self[key] for key in self.keys())


@dataclass
class SCLFusionOutput(ModelOutput):
    r"""
    text_features (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`):
        Output of the last text co-attention layer.
    image_features (`torch.FloatTensor` of shape `(batch_size, image_length, hidden_size)`):
        Output of the last image co-attention layer.
    hidden_states / attentions / cross_attentions / image_attentions / image_cross_attentions:
        As in [`SCLModelOutput`].
    """

    text_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


# The fusion's four attention fields, in the order of the weights an `SCLCrossLayer` pair returns.
FUSION_ATTENTION_FIELDS = ("attentions", "cross_attentions", "image_attentions", "image_cross_attentions")


@dataclass
class SCLSequenceClassifierOutput(SequenceClassifierOutput):
    r"""
    The output of the VQA and NLVR2 heads: [`~modeling_outputs.SequenceClassifierOutput`] with the fusion's states.

    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Classification loss.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Classification scores (before sigmoid / softmax).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The fusion streams' states, as in [`SCLModelOutput`]. NLVR2 fuses the text with each image, so this and the
        attention fields hold the left image's fusion tensors, then the right image's.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The text stream's self-attention weights, one per fusion layer (as in [`SCLModelOutput`]).
    cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The text stream's cross-attention weights, one per fusion layer.
    image_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The image stream's self-attention weights, one per fusion layer.
    image_cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The image stream's cross-attention weights, one per fusion layer.
    """

    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_attentions: tuple[torch.FloatTensor, ...] | None = None
    image_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


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
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
        CLIP-style contrastive loss: image `i` matches text `i` (spec §2.3, both directions averaged).
    logits_per_image (`torch.FloatTensor` of shape `(num_images, num_texts)`):
        ITC cosine similarity / `itc_temperature` of every image (or video) with every text.
    logits_per_text (`torch.FloatTensor` of shape `(num_texts, num_images)`):
        Transpose of `logits_per_image`.
    itc_text_embeds (`torch.FloatTensor` of shape `(num_texts, itc_projection_dim)`):
        L2-normalised ITC text embeddings.
    itc_image_embeds (`torch.FloatTensor` of shape `(num_images, itc_projection_dim)`):
        L2-normalised ITC image (or video) embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itc_text_embeds: torch.FloatTensor | None = None
    itc_image_embeds: torch.FloatTensor | None = None


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


def check_index_range(indices: torch.Tensor, upper: int, name: str, what: str = ""):
    """Raise a clear error if `indices` leave `[0, upper)`.

    Reading the values forces a host sync and breaks `torch.compile(fullgraph=True)`, so the check runs in eager mode
    only; under compilation an out-of-range index fails in the indexing kernel instead.
    """
    if torch.compiler.is_compiling() or not indices.numel():
        return
    if indices.min() < 0 or indices.max() >= upper:
        raise ValueError(f"`{name}` must lie in [0, {upper}){what}.")


# ---------------------------------------------------------------------------------------------------------------------
# Vision tower (spec §1.2)
# ---------------------------------------------------------------------------------------------------------------------


def frames_to_sequence(frames: torch.Tensor) -> torch.Tensor:
    """`(B, F, T, D)` frame-major tokens → `(B, F*T, D)` ordered `[CLS_1 … CLS_F, patches_1 … patches_F]`.

    A view for one frame (images), where both orders agree."""
    batch_size, num_frames, _, dim = frames.shape
    if num_frames == 1:
        return frames.flatten(1, 2)
    return torch.cat([frames[:, :, 0], frames[:, :, 1:].reshape(batch_size, -1, dim)], dim=1)


def sequence_to_frames(sequence: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Inverse of `frames_to_sequence`: `(B, F*T, D)` → `(B, F, T, D)`."""
    batch_size, length, dim = sequence.shape
    if num_frames == 1:
        return sequence.unsqueeze(1)
    cls = sequence[:, :num_frames, None]
    patches = sequence[:, num_frames:].reshape(batch_size, num_frames, length // num_frames - 1, dim)
    return torch.cat([cls, patches], dim=2)


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

    def forward(
        self, hidden_states: torch.Tensor, num_frames: int = 1, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states`: `(B, F*T, D)` in the tower's `[frame CLS…, patches…]` order."""
        hidden_states = sequence_to_frames(hidden_states, num_frames)
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
        return self.out_proj(frames_to_sequence(output)), weights


class SCLVisionMLP(nn.Module):
    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SCLVisionEncoderLayer(GradientCheckpointingLayer):
    """CLIP's pre-LN residual block; tokens in the tower's `(B, F*T, D)` `[frame CLS…, patches…]` order."""

    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SCLVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SCLVisionMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, num_frames: int = 1, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.self_attn(self.layer_norm1(hidden_states), num_frames, **kwargs)
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights


class SCLVisionEncoder(nn.Module):
    def __init__(self, config: SCLVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([SCLVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1, **kwargs) -> BaseModelOutput:
        for layer in self.layers:
            hidden_states, _ = layer(hidden_states, num_frames, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


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

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, encoder_index=None, **kwargs):
        """`encoder_index` `(batch,)`: row `i` attends to row `encoder_index[i]` of the keys' source, whose rows are
        then projected once each (several texts fused with one image)."""
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key, value = self.key(source), self.value(source)
        if encoder_index is not None:
            key, value = key[encoder_index], value[encoder_index]
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

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, encoder_index=None, **kwargs):
        context, weights = self.self(hidden_states, encoder_hidden_states, attention_mask, encoder_index, **kwargs)
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
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        num_queries: int | None = None,
        hidden_index: torch.LongTensor | None = None,
        encoder_index: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the stream's new states and the self- and cross-attention weights.

        The defaults give the plain layer. The other arguments let one call serve many (text, image) pairs without
        repeating work (see `fusion_planning.py`); the outputs equal the plain layer's at the rows and tokens they keep:

        num_queries: outputs for the first `num_queries` tokens only (the masks are then built for those queries);
            they still attend to every token of both streams.
        hidden_index: `(pairs,)` rows of `hidden_states` each output row continues: the self-attention runs once per
            row of `hidden_states`, then is repeated for the pairs (one image, several texts).
        encoder_index: `(pairs,)` rows of `encoder_hidden_states` each pair attends to: their keys and values are
            projected once per row.
        """
        queries = hidden_states if num_queries is None else hidden_states[:, :num_queries]
        hidden_states, self_weights = self.attention(queries, hidden_states, attention_mask, **kwargs)
        if hidden_index is not None:
            hidden_states = hidden_states[hidden_index]
            self_weights = None if self_weights is None else self_weights[hidden_index]
        hidden_states, cross_weights = self.crossattention(
            hidden_states, encoder_hidden_states, encoder_attention_mask, encoder_index, **kwargs
        )
        hidden_states = self.output(self.intermediate(hidden_states), hidden_states)
        return hidden_states, self_weights, cross_weights


class SCLFusionEncoder(nn.Module):
    """The 6+6 co-attention layers (spec §1.4): both streams update in parallel from the previous layer's outputs.

    Text padding is masked in the text self-attention and in the image cross-attention; the image is never padded.
    """

    def __init__(self, config: SCLConfig):
        super().__init__()
        self.config = config
        self.text_layers = nn.ModuleList([SCLCrossLayer(config) for _ in range(config.num_fusion_layers)])
        self.image_layers = nn.ModuleList([SCLCrossLayer(config) for _ in range(config.num_fusion_layers)])

    def masks(self, text, image, attention_mask, num_text_queries=None, num_image_queries=None):
        """The text self-attention mask and the image-to-text cross-attention mask in the attention backend's format.

        `num_*_queries`: masks for the first tokens of a stream only (a last layer run at the CLS tokens).
        """
        if num_text_queries is None:
            text_mask = create_bidirectional_mask(self.config, text, attention_mask)
        else:
            queries = text[:, :num_text_queries]
            text_mask = create_bidirectional_mask(self.config, queries, attention_mask, encoder_hidden_states=text)
        image_queries = image if num_image_queries is None else image[:, :num_image_queries]
        image_mask = create_bidirectional_mask(self.config, image_queries, attention_mask, encoder_hidden_states=text)
        return text_mask, image_mask

    def forward(
        self,
        text: torch.Tensor,
        image: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        **kwargs,
    ) -> SCLFusionOutput:
        text_mask, image_mask = self.masks(text, image, attention_mask)
        text_states, image_states, weights = [text], [image], []  # weights: one 4-tuple per layer
        for text_layer, image_layer in zip(self.text_layers, self.image_layers):
            new_text, text_self, text_cross = text_layer(text, image, text_mask, None, **kwargs)
            image, image_self, image_cross = image_layer(image, text, None, image_mask, **kwargs)
            text = new_text
            text_states.append(text)
            image_states.append(image)
            weights.append((text_self, text_cross, image_self, image_cross))
        return SCLFusionOutput(
            text_features=text,
            image_features=image,
            # Two streams: transformers' output recorder keeps one list per key, so the streams are collected here.
            hidden_states=tuple(text_states + image_states) if output_hidden_states else None,
            **{
                field: tuple(kind) if output_attentions else None
                for field, kind in zip(FUSION_ATTENTION_FIELDS, zip(*weights))
            },
        )


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
        if isinstance(module, SCLVisionEmbeddings):
            factor = module.config.initializer_factor  # CLIP's scale of the vision embeddings' init
            init.normal_(module.class_embedding, std=module.class_embedding.shape[-1] ** -0.5 * factor)
            init.normal_(module.position_embedding.weight, std=module.config.initializer_range * factor)
            init.normal_(module.patch_embedding.weight, std=module.config.initializer_range * factor)
            # Zero temporal rows: a CLIP-initialised tower then starts as plain CLIP for images and videos.
            init.zeros_(module.temporal_embedding)
        elif isinstance(module, SCLMLMHead):
            init.zeros_(module.bias)
        elif hasattr(module, "itc_temperature"):
            init.constant_(module.itc_temperature, self.config.itc_temperature_init)

    def output_flags(self, output_attentions, output_hidden_states) -> tuple:
        """`output_attentions` / `output_hidden_states`, the config's where not given."""
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return output_attentions, output_hidden_states

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


class SCLVisionModel(SCLPreTrainedModel):
    """The SCL vision tower: an 11-block CLIP ViT on 1-frame images or F-frame videos (spec §1.2).

    Weight names follow transformers' `CLIPVisionModel` (`embeddings`, `pre_layrnorm`, `encoder.layers`,
    `post_layernorm`) so CLIP checkpoints load directly; `post_layernorm` is applied to every token (METER's ln_post).
    """

    config: SCLVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    _can_record_outputs = {
        "hidden_states": SCLVisionEncoderLayer,
        "attentions": OutputRecorder(SCLVisionAttention, index=1),
    }

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

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool = False,
        patch_keep_indices: torch.LongTensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SCLVisionModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video).
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `max_frames` frames.
        patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Explicit patch positions to keep in every frame (patch dropping).
        mask_ratio (`float`, *optional*):
            Drop this fraction of patches, sampled with `generator` (SCL uses 0.8, spec §1.2). Ignored if
            `patch_keep_indices` is given.
        generator (`torch.Generator`, *optional*):
            Source of the patches `mask_ratio` drops.
        """
        video = self._as_video(pixel_values, pixel_values_videos)
        batch_size, num_frames, _, height, width = video.shape
        if patch_keep_indices is None and mask_ratio:
            num_patches = (height // self.config.patch_size) * (width // self.config.patch_size)
            patch_keep_indices = sample_patch_keep_indices(
                batch_size, num_patches, mask_ratio, generator=generator, device=video.device
            )
        if patch_keep_indices is not None and (
            patch_keep_indices.dim() != 2 or patch_keep_indices.shape[0] != batch_size
        ):
            raise ValueError(
                f"`patch_keep_indices` must be (batch={batch_size}, kept), got {tuple(patch_keep_indices.shape)}."
            )
        if patch_keep_indices is not None:
            num_patches = (height // self.config.patch_size) * (width // self.config.patch_size)
            check_index_range(patch_keep_indices, num_patches, "patch_keep_indices")

        hidden_states = self.embeddings(video, interpolate_pos_encoding, patch_keep_indices)
        hidden_states = self.pre_layrnorm(frames_to_sequence(hidden_states))
        hidden_states = self.encoder(hidden_states, num_frames, **kwargs).last_hidden_state
        return SCLVisionModelOutput(
            last_hidden_state=self.post_layernorm(hidden_states), patch_keep_indices=patch_keep_indices
        )


# ---------------------------------------------------------------------------------------------------------------------
# Base model
# ---------------------------------------------------------------------------------------------------------------------


class SCLModel(SCLPreTrainedModel):
    """SCL two-tower encoder with co-attention fusion (spec §1.1, §1.4).

    `forward` encodes the text, encodes the image or video, fuses and pools. `encode_text`, `encode_image` and `fuse`
    expose the stages, so that a task can encode each input once and fuse it many times.

    `add_fusion_layers=False` builds the two towers and their cross-modal transforms only (as `add_pooling_layer`
    in BERT): the encoder of a task that never fuses (zero-shot ITC). Loading a full checkpoint into it reports the
    fusion weights as unexpected keys and ignores them.
    """

    def __init__(self, config: SCLConfig, add_fusion_layers: bool = True):
        super().__init__(config)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.vision_model = SCLVisionModel(config.vision_config)
        self.cross_modal_text_transform = nn.Linear(config.text_config.hidden_size, config.hidden_size)
        self.cross_modal_image_transform = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        object.__setattr__(self, "fusion", None)
        if add_fusion_layers:
            self._add_fusion_layers(config)
        self.post_init()

    def _add_fusion_layers(self, config: SCLConfig):
        self.token_type_embeddings = nn.Embedding(config.num_token_types, config.hidden_size)
        fusion = SCLFusionEncoder(config)
        # The encoder runs the layers; SCLModel registers them under the reference checkpoints' names
        # (`cross_modal_text_layers.N…`, spec §5), so the encoder itself is kept out of the module tree.
        self.cross_modal_text_layers = fusion.text_layers
        self.cross_modal_image_layers = fusion.image_layers
        object.__setattr__(self, "fusion", fusion)
        self.cross_modal_text_pooler = SCLPooler(config)
        self.cross_modal_image_pooler = SCLPooler(config)

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.set_input_embeddings(value)

    # -- the stages ---------------------------------------------------------------------------------------------------

    def encode_text(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, ModelOutput]:
        """RoBERTa, then `cross_modal_text_transform`: returns `(text_embeds (B, L, H), tower output)`."""
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got {tuple(input_ids.shape)}.")
        check_index_range(input_ids, self.config.text_config.vocab_size, "input_ids", ": ids outside the vocabulary")
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

    def fusion_inputs(
        self, text_embeds: torch.Tensor, image_embeds: torch.Tensor, image_token_type_idx: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The streams' inputs: the unimodal embeddings plus their token-type rows (0 for text)."""
        if not 0 <= image_token_type_idx < self.config.num_token_types:
            raise ValueError(
                f"image_token_type_idx={image_token_type_idx} but the token-type table has "
                f"{self.config.num_token_types} rows."
            )
        token_types = self.token_type_embeddings.weight
        return text_embeds + token_types[0], image_embeds + token_types[image_token_type_idx]

    def pool(self, text_features: torch.Tensor, image_features: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """`pooler_output`: text pooler on the text CLS ‖ image pooler on the mean of the frame CLS (spec §1.4)."""
        return torch.cat(
            [
                self.cross_modal_text_pooler(text_features),
                self.cross_modal_image_pooler(image_features, num_tokens=num_frames),
            ],
            dim=-1,
        )

    def fuse(
        self,
        text_embeds: torch.Tensor,
        image_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        image_token_type_idx: int = 1,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> SCLModelOutput:
        r"""Co-attention fusion of unimodal embeddings (spec §1.4) and pooling.

        `text_embeds` `(B, L, H)` and `image_embeds` `(B, F(1+N), H)` are the `text_embeds` / `image_embeds` of an
        earlier output (or of `encode_text` / `encode_image`); `attention_mask` `(B, L)` masks the text padding.
        """
        if self.fusion is None:
            raise ValueError("This SCLModel was built with `add_fusion_layers=False`: it encodes but cannot fuse.")
        if text_embeds.dim() != 3 or image_embeds.dim() != 3:
            raise ValueError(
                f"`text_embeds` and `image_embeds` must be (batch, length, hidden); got {tuple(text_embeds.shape)} "
                f"and {tuple(image_embeds.shape)}."
            )
        if text_embeds.shape[0] != image_embeds.shape[0]:
            raise ValueError(f"Batch sizes differ: text {text_embeds.shape[0]}, image {image_embeds.shape[0]}.")
        if not 1 <= num_frames <= image_embeds.shape[1]:
            raise ValueError(f"num_frames={num_frames} is invalid for {image_embeds.shape[1]} image tokens.")
        if attention_mask is not None and attention_mask.shape != text_embeds.shape[:2]:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} does not match the text {tuple(text_embeds.shape[:2])}."
            )
        text, image = self.fusion_inputs(text_embeds, image_embeds, image_token_type_idx)
        fused = self.fusion(text, image, attention_mask, bool(output_hidden_states), output_attentions, **kwargs)
        return SCLModelOutput(
            text_features=fused.text_features,
            image_features=fused.image_features,
            pooler_output=self.pool(fused.text_features, fused.image_features, num_frames),
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            hidden_states=_select_hidden_states(fused.hidden_states, output_hidden_states),
            **{field: getattr(fused, field) for field in FUSION_ATTENTION_FIELDS},
        )

    @can_return_tuple
    @auto_docstring
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
        output_hidden_states: bool | list[int] | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Patch positions to keep in every frame (patch dropping; see [`SCLVisionModel.forward`]).
        image_mask_ratio (`float`, *optional*):
            Drop this fraction of the patches instead, sampled with `generator`.
        generator (`torch.Generator`, *optional*):
            Source of the patches `image_mask_ratio` drops.
        output_hidden_states (`bool` or `list[int]`, *optional*):
            Return the fusion streams' hidden states (and the towers' in `text_model_output` / `vision_model_output`);
            a list of indices keeps only those entries of the flat `hidden_states` (the others are `None`) and asks
            the towers for all of theirs.
        """
        if (input_ids is None) == (text_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `text_embeds`.")
        if image_embeds is not None and (pixel_values is not None or pixel_values_videos is not None):
            raise ValueError("Pass either pixels or `image_embeds`, not both.")
        if image_embeds is None and pixel_values is None and pixel_values_videos is None:
            raise ValueError("Pass `pixel_values`, `pixel_values_videos` or `image_embeds`.")
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        tower_flags = {"output_attentions": output_attentions, "output_hidden_states": bool(output_hidden_states)}

        text_outputs = vision_outputs = None
        if text_embeds is None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            text_embeds, text_outputs = self.encode_text(input_ids, attention_mask, **tower_flags)
        if image_embeds is None:
            image_embeds, vision_outputs = self.encode_image(
                pixel_values,
                pixel_values_videos,
                interpolate_pos_encoding=interpolate_pos_encoding,
                patch_keep_indices=patch_keep_indices,
                mask_ratio=image_mask_ratio,
                generator=generator,
                **tower_flags,
            )
            num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]

        outputs = self.fuse(
            text_embeds,
            image_embeds,
            attention_mask,
            num_frames=num_frames or 1,
            image_token_type_idx=image_token_type_idx,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        outputs.patch_keep_indices = vision_outputs.patch_keep_indices if vision_outputs is not None else None
        outputs.text_model_output, outputs.vision_model_output = text_outputs, vision_outputs
        return outputs


def _select_hidden_states(hidden_states: tuple | None, selection: bool | list[int] | None) -> tuple | None:
    """`output_hidden_states` may be a list of indices into the flat tuple: keep those, `None` elsewhere."""
    if hidden_states is None or isinstance(selection, bool) or selection is None:
        return hidden_states
    selection = [selection] if isinstance(selection, int) else selection
    kept = {index % len(hidden_states) for index in selection}
    return tuple(state if index in kept else None for index, state in enumerate(hidden_states))


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

    def itc_logits(self, itc_text: torch.Tensor, itc_image: torch.Tensor) -> torch.Tensor:
        """`(num_images, num_texts)` cosine similarity / `itc_temperature` of ITC embeddings (spec §2.3)."""
        return itc_image @ itc_text.t() / self.itc_temperature

    def itc_loss(self, itc_text: torch.Tensor, itc_image: torch.Tensor, return_logits: bool = False):
        """The ITC loss of matching rows (spec §2.3), over the batch gathered from every rank."""
        return image_text_contrastive_loss(
            itc_text, itc_image, self.itc_temperature, return_logits=return_logits, normalized=True
        )

    @can_return_tuple
    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        Returns:
            `BaseModelOutputWithPooling` whose `pooler_output` `(B, itc_projection_dim)` is the L2-normalised ITC
            embedding and whose `last_hidden_state` `(B, L, hidden_size)` holds the unimodal tokens that fusion
            consumes (cache them with `attention_mask` to score pairs later). `hidden_states` / `attentions` are the
            text tower's, when asked.
        """
        text_embeds, outputs = self.scl.encode_text(input_ids, attention_mask, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=text_embeds,
            pooler_output=self.itc_text_embeds(text_embeds),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _image_features(self, pixel_values, pixel_values_videos, **kwargs) -> BaseModelOutputWithPooling:
        image_embeds, outputs = self.scl.encode_image(pixel_values, pixel_values_videos, **kwargs)
        num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        return BaseModelOutputWithPooling(
            last_hidden_state=image_embeds,
            pooler_output=self.itc_image_embeds(image_embeds, num_frames),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.FloatTensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            Images.

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` is the L2-normalised ITC embedding, `last_hidden_state`
            `(B, 1 + N, hidden_size)` the unimodal tokens that fusion consumes; `hidden_states` / `attentions` are the
            vision tower's, when asked.
        """
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(
                f"`pixel_values` must be (batch, 3, height, width); got {shape}. Use get_video_features for videos."
            )
        return self._image_features(pixel_values, None, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)

    @can_return_tuple
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
        return self._image_features(
            None, pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )

    def _add_itc_heads(self, config: SCLConfig):
        self.itc_text_projection = SCLITCProjection(config)
        self.itc_image_projection = SCLITCProjection(config)
        # spec §1.1: learnable divisor, init 0.07, not log-parameterised. Shape (1,), not the reference's scalar:
        # FSDP cannot shard a 0-d parameter. Checkpoints with the scalar load (`conversion.upgrade`).
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
      for the text CLS and the frame CLS tokens only;
    * the ITM, MLM and pass-B fusions run through the fusion layers together and share the first layer's work that
      depends on the complete image alone; the ITM pass fuses each image once however many texts it serves;
    * a pass that yields only a target (pass A without MVSC, pass B without MLSC) runs entirely without autograd.

    These routes are planned in one place, `fusion_planning.fuse_passes`, over the same layers as `SCLModel.fuse`.

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

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        # The MLM bias is a separate parameter (the reference's layout, spec §6.2), so `resize_token_embeddings`
        # does not see it: follow the decoder's new vocabulary, keeping the old rows and zeros for new tokens.
        self.mlm_score.decoder = new_embeddings
        old_bias = self.mlm_score.bias
        vocab_size = new_embeddings.out_features
        if old_bias.shape[0] != vocab_size:
            bias = old_bias.new_zeros(vocab_size)
            kept = min(vocab_size, old_bias.shape[0])
            bias[:kept] = old_bias.detach()[:kept]
            self.mlm_score.bias = nn.Parameter(bias, requires_grad=old_bias.requires_grad)

    @can_return_tuple
    @auto_docstring
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
        **kwargs,
    ) -> SCLForPreTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video), e.g. from [`SCLProcessor`].
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `vision_config.max_frames` frames. Pass either `pixel_values` or `pixel_values_videos`.
        mlm_input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            MLM-masked captions (15%, 80/10/10; spec §2.1). For `"mlm"`.
        mlm_labels (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            The original ids at the masked positions of `mlm_input_ids`, -100 elsewhere.
        mlsc_input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
            Captions with up to 40% of the real tokens masked (spec §2.4). For `"mlsc"` and `"mvsc"`.
        itm_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 pairs a text with its own image, 0 with the image at its `itm_negative_indices` entry. Both are sampled
            if not given (negatives from ITC similarities when `config.itm_hard_negatives`).
        itm_negative_indices (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The batch row of each text's negative image (read where `itm_labels` is 0).
        patch_keep_indices (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Patches kept in the masked image; sampled with `config.image_mask_ratio` if not given.
        generator (`torch.Generator`, *optional*):
            Source of every random draw of this forward.
        return_loss (`bool`, *optional*, defaults to `True`):
            Compute `loss` and `loss_info` (the semantic-completion passes, which only produce losses, need it).
        """
        objectives = set(self.config.pretraining_objectives)
        self._check_inputs(
            objectives, input_ids, pixel_values, pixel_values_videos, mlm_input_ids, mlm_labels, mlsc_input_ids
        )
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
        pixels = {"pixel_values": pixel_values, "pixel_values_videos": pixel_values_videos}
        pixels["interpolate_pos_encoding"] = interpolate_pos_encoding
        semantic_completion = return_loss and bool(objectives & {"mvsc", "mlsc"})
        # Every caption and the complete image go through their towers once; the passes below share them.
        captions = self._captions(objectives, semantic_completion, input_ids, mlm_input_ids, mlsc_input_ids)
        text_embeds = self._encode_captions(captions, attention_mask, **kwargs)
        image_embeds, _ = self.scl.encode_image(**pixels, **kwargs)

        losses, outputs = {}, {}
        itc_text, itc_image = self._itc_embeds(objectives, text_embeds, image_embeds, num_frames)
        if "itc" in objectives:
            losses["itc"], *logits = self.itc_loss(itc_text, itc_image, return_logits=True)
            outputs["itc_logits_per_text"], outputs["itc_logits_per_image"] = logits
        image_index = None
        if "itm" in objectives:
            outputs["itm_labels"], image_index = self._itm_pairs(
                input_ids.shape[0], itm_labels, itm_negative_indices, itc_text, itc_image, generator
            )
        # ITM, MLM and pass B fuse the complete images (spec §2): one planned run (see `fusion_planning`).
        passes = self._complete_image_passes(objectives, semantic_completion, text_embeds, attention_mask, image_index)
        fused = dict(zip(passes, fuse_passes(self.scl, image_embeds, list(passes.values()), num_frames)))
        self._matching_and_mlm_heads(objectives, fused, num_frames, mlm_labels, losses, outputs)
        if semantic_completion:
            pass_a = self._masked_image_pass(
                objectives, pixels, text_embeds["complete"], attention_mask, patch_keep_indices, generator, **kwargs
            )
            losses.update(self._semantic_completion_losses(objectives, pass_a, fused["mlsc"], num_frames))
        loss = loss_info = None
        if return_loss:
            loss_info = SCLLosses(**{n: getattr(self.config, f"{n}_weight") * term for n, term in losses.items()})
            loss = sum(loss_info.values())
        accuracies = self._accuracies(outputs, mlm_labels)
        return SCLForPreTrainingOutput(loss=loss, loss_info=loss_info, **outputs, **accuracies)

    def _matching_and_mlm_heads(self, objectives, fused, num_frames, mlm_labels, losses, outputs):
        """spec §2.2 ITM on the pooled CLS tokens of its pairs; spec §2.1 MLM on the fused masked text."""
        if "itm" in objectives:
            itm = fused["itm"]
            outputs["itm_logits"] = self.itm_score(self.scl.pool(itm.text_features, itm.image_features, num_frames))
            losses["itm"] = nn.functional.cross_entropy(outputs["itm_logits"], outputs["itm_labels"])
        if "mlm" in objectives:
            outputs["mlm_logits"], losses["mlm"] = self._mlm(fused["mlm"].text_features, mlm_labels)

    def _masked_image_pass(self, objectives, pixels, text_embeds, attention_mask, patch_keep_indices, generator, **kw):
        """spec §2.4 pass A: complete text + patch-dropped image. Frame CLS → MVSC prediction; text CLS → MLSC
        target."""
        num_frames = 1 if pixels["pixel_values"] is not None else pixels["pixel_values_videos"].shape[1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and "mvsc" in objectives):
            dropped_embeds, _ = self.scl.encode_image(
                **pixels,
                patch_keep_indices=patch_keep_indices,
                mask_ratio=self.config.image_mask_ratio,
                generator=generator,
                **kw,
            )
        fusion_pass = self._completion_pass(objectives, text_embeds, attention_mask, masked="image")
        return fuse_passes(self.scl, dropped_embeds, [fusion_pass], num_frames)[0]

    @staticmethod
    def _captions(objectives, semantic_completion, input_ids, mlm_input_ids, mlsc_input_ids) -> dict:
        """The captions to encode, `{name: (ids, whether a loss differentiates through their encoding)}`."""
        captions = {}
        if objectives - {"mlm"}:
            captions["complete"] = (input_ids, bool(objectives & {"itc", "itm", "mvsc"}))
        if "mlm" in objectives:
            captions["mlm"] = (mlm_input_ids, True)
        if semantic_completion:
            captions["mlsc"] = (mlsc_input_ids, "mlsc" in objectives)
        return captions

    def _itc_embeds(self, objectives, text_embeds, image_embeds, num_frames) -> tuple:
        """ITC embeddings (spec §2.3), for the ITC loss and for hard ITM negatives; `(None, None)` if neither."""
        if "itc" not in objectives and not ("itm" in objectives and self.config.itm_hard_negatives):
            return None, None
        with torch.set_grad_enabled(torch.is_grad_enabled() and "itc" in objectives):
            itc_text = self.itc_text_embeds(text_embeds["complete"])
            return itc_text, self.itc_image_embeds(image_embeds, num_frames)

    @staticmethod
    def _completion_pass(objectives, text_embeds, attention_mask, masked: str) -> FusionPass:
        """A semantic-completion pass (spec §2.4) at the CLS tokens. The masked modality's stream is the prediction
        (with gradients), the complete one's the stop-gradient target; a stream whose loss is off is skipped."""
        want_mvsc, want_mlsc = "mvsc" in objectives, "mlsc" in objectives
        if masked == "image":  # pass A
            text_output, image_output = NO_GRAD if want_mlsc else None, GRAD if want_mvsc else None
        else:  # pass B
            text_output, image_output = GRAD if want_mlsc else None, NO_GRAD if want_mvsc else None
        return FusionPass(text_embeds, attention_mask, None, text_output, image_output, cls_only=True)

    def _complete_image_passes(self, objectives, semantic_completion, text_embeds, attention_mask, image_index):
        """The fusions of the complete images: ITM (its pairs, CLS only), MLM (the image stream's last layer is
        unused, spec §2.1) and pass B (masked text, complete image, spec §2.4)."""
        passes = {}
        if "itm" in objectives:
            passes["itm"] = FusionPass(text_embeds["complete"], attention_mask, image_index, cls_only=True)
        if "mlm" in objectives:
            passes["mlm"] = FusionPass(text_embeds["mlm"], attention_mask, image_output=None)
        if semantic_completion:
            passes["mlsc"] = self._completion_pass(objectives, text_embeds["mlsc"], attention_mask, masked="text")
        return passes

    def _mlm(self, text_features, mlm_labels) -> tuple[torch.Tensor, torch.Tensor]:
        """spec §2.1: MLM logits at the masked tokens only, and their mean cross-entropy (0, not NaN, without any)."""
        masked = mlm_labels != -100
        logits = self.mlm_score(text_features[masked])
        loss = nn.functional.cross_entropy(logits, mlm_labels[masked], reduction="sum") / masked.sum().clamp(min=1)
        return logits, loss

    def _semantic_completion_losses(self, objectives, pass_a: FusedPass, pass_b: FusedPass, num_frames) -> dict:
        """spec §2.4: MVSC contrasts the fused frame CLS tokens per frame, MLSC the fused text CLS."""
        losses, temperature = {}, self.config.scl_temperature
        if "mvsc" in objectives:
            losses["mvsc"] = semantic_completion_loss(
                pass_a.image_features[:, :num_frames], pass_b.image_features[:, :num_frames], temperature
            )
        if "mlsc" in objectives:
            losses["mlsc"] = semantic_completion_loss(
                pass_b.text_features[:, 0], pass_a.text_features[:, 0], temperature
            )
        return losses

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
                    similarity = self.itc_logits(itc_image, itc_text)  # (texts, images)
            itm_negative_indices = sample_itm_negatives(batch_size, similarity, generator, device)
        else:
            if itm_negative_indices.shape != (batch_size,):
                raise ValueError(
                    f"`itm_negative_indices` must be ({batch_size},), got {tuple(itm_negative_indices.shape)}."
                )
            check_index_range(itm_negative_indices, batch_size, "itm_negative_indices")
            if not torch.compiler.is_compiling() and ((itm_negative_indices == rows) & (itm_labels == 0)).any():
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


def _pooled_output(model, input_ids, attention_mask, pixel_values, pixel_values_videos, interpolate_pos_encoding):
    """`SCLModel.forward(...).pooler_output` by the route that runs the last fusion layer at the CLS tokens only."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    text_embeds, _ = model.encode_text(input_ids, attention_mask)
    image_embeds, _ = model.encode_image(
        pixel_values, pixel_values_videos, interpolate_pos_encoding=interpolate_pos_encoding
    )
    num_frames = 1 if pixel_values is not None else pixel_values_videos.shape[1]
    return pooled_fusion(model, text_embeds, image_embeds, attention_mask, num_frames)


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
    @auto_docstring(
        custom_intro="""
        Without `input_ids`, or when states are returned, the inputs and other keyword arguments (`text_embeds`,
        `image_embeds`, `num_frames`, …) go to [`SCLModel.forward`]; otherwise only `pooler_output` is computed, with
        the last fusion layer at the CLS tokens only (`fusion_planning.pooled_fusion`).
        """
    )
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        labels: torch.FloatTensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        **kwargs,
    ) -> SCLSequenceClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video), e.g. from [`SCLProcessor`].
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `vision_config.max_frames` frames. Pass either `pixel_values` or `pixel_values_videos`.
        labels (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            VQA soft score of every answer (0, 0.3, 0.6, 0.9 or 1), e.g. from `SCLVQACollator`.
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
        outputs = None
        if output_attentions or output_hidden_states or input_ids is None:
            outputs = self.scl(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                pixel_values_videos=pixel_values_videos,
                interpolate_pos_encoding=interpolate_pos_encoding,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                **kwargs,
            )
            pooler_output = outputs.pooler_output
        else:  # only `pooler_output` is classified: the last fusion layer runs at the CLS tokens only
            pooler_output = _pooled_output(
                self.scl, input_ids, attention_mask, pixel_values, pixel_values_videos, interpolate_pos_encoding
            )
        logits = self.vqa_classifier(pooler_output)
        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"`labels` must be soft scores of shape (batch, num_labels) = {tuple(logits.shape)}, got "
                    f"{tuple(labels.shape)}."
                )
            # spec §3.1: BCE summed over the answers and averaged over the batch (ViLT/BAN convention).
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)) * labels.shape[1]
        return SCLSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=None if outputs is None else outputs.hidden_states,
            **{field: None if outputs is None else getattr(outputs, field) for field in FUSION_ATTENTION_FIELDS},
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
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | tuple[torch.FloatTensor, torch.FloatTensor] | None = None,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        **kwargs,
    ) -> SCLSequenceClassifierOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 2, 3, height, width)`, or a pair of `(batch_size, 3, height, width)` tensors):
            The left and right image of each example.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 if the statement is true of the image pair, else 0.
        output_hidden_states (`bool` or `list[int]`, *optional*):
            Return the fusion streams' hidden states: the left image's fusion tensors (as in [`SCLModelOutput`]),
            then the right image's, in one flat tuple (the attention fields likewise). A list of indices selects
            from that flat tuple.
        """
        output_attentions, output_hidden_states = self.output_flags(output_attentions, output_hidden_states)
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
        # spec §3.1: the left image gets token type 1, the right one token type 2.
        if output_attentions or output_hidden_states:
            fused = [
                self.scl.fuse(
                    text_embeds,
                    image_embeds[:, side],
                    attention_mask,
                    image_token_type_idx=side + 1,
                    output_attentions=output_attentions,
                    output_hidden_states=bool(output_hidden_states),
                    **kwargs,
                )
                for side in range(2)
            ]
            pooled = [output.pooler_output for output in fused]
        else:  # only `pooler_output` is classified: the last fusion layer runs at the CLS tokens only
            pooled = [
                pooled_fusion(
                    self.scl, text_embeds, image_embeds[:, side], attention_mask, image_token_type_idx=side + 1
                )
                for side in range(2)
            ]
        logits = self.nlvr2_classifier(torch.cat(pooled, dim=-1))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.view(-1).to(logits.device))
        hidden_states = fused[0].hidden_states + fused[1].hidden_states if output_hidden_states else None
        return SCLSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=_select_hidden_states(hidden_states, output_hidden_states),
            **{
                field: getattr(fused[0], field) + getattr(fused[1], field) if output_attentions else None
                for field in FUSION_ATTENTION_FIELDS
            },
        )


# -- image/video–text retrieval and ITC zero-shot classification -------------------------------------------------------


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
        text row i with image row `image_index[i]` (each image given once, its image-only fusion work done once).

        Only `pooler_output` is read, so the last fusion layer runs at the CLS tokens only (`fusion_planning`)."""
        if attention_mask is None:
            attention_mask = text_embeds.new_ones(text_embeds.shape[:2], dtype=torch.long)
        if image_index is not None:
            if image_index.shape != text_embeds.shape[:1]:
                raise ValueError(
                    f"`image_index` must be (batch,) = ({text_embeds.shape[0]},), one image row per text row; got "
                    f"{tuple(image_index.shape)}."
                )
            check_index_range(image_index, image_embeds.shape[0], "image_index")
        elif text_embeds.shape[0] != image_embeds.shape[0]:
            raise ValueError(f"Batch sizes differ: text {text_embeds.shape[0]}, image {image_embeds.shape[0]}.")
        pooled = pooled_fusion(self.scl, text_embeds, image_embeds, attention_mask, num_frames, image_index)
        return self.rank_output(pooled).squeeze(-1)

    @can_return_tuple
    @auto_docstring
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
        **kwargs,
    ) -> SCLImageTextRetrievalOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
            Text i describes image (or video) i.
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video), e.g. from [`SCLProcessor`].
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `vision_config.max_frames` frames. Pass either `pixel_values` or `pixel_values_videos`.
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
        logits_per_image = self.itc_logits(itc_text, itc_image)

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
            check_index_range(negative_text_indices, batch_size, "negative_text_indices")
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
                itc_loss = self.itc_loss(itc_text, itc_image)
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

    The model of `pipeline("zero-shot-image-classification")`, which reads `logits_per_image`. It holds the towers,
    their cross-modal transforms and the ITC heads, under the keys of every SCL checkpoint, so it loads a pre-training
    or retrieval checkpoint; the fusion layers, which ITC never runs, are not built, and loading reports their weights
    as unexpected keys (as CLIPModel does for a bigger checkpoint).
    """

    def __init__(self, config: SCLConfig):
        super().__init__(config)
        self.scl = SCLModel(config, add_fusion_layers=False)
        self._add_itc_heads(config)
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> SCLContrastiveOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_texts, text_length)`):
            The candidate texts (e.g. "a photo of a dog."), any number of them.
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images (an image is a 1-frame video), e.g. from [`SCLProcessor`].
        pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, height, width)`, *optional*):
            Videos, at most `vision_config.max_frames` frames. Pass either `pixel_values` or `pixel_values_videos`.
        return_loss (`bool`, *optional*):
            Return the ITC loss (spec §2.3), text `i` matching image `i` (as many texts as images).
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
        logits_per_image = self.itc_logits(itc_text, itc_image)
        loss = None
        if return_loss:
            if itc_text.shape[0] != itc_image.shape[0]:
                raise ValueError(
                    f"`return_loss` pairs text i with image i; got {itc_text.shape[0]} texts and "
                    f"{itc_image.shape[0]} images."
                )
            loss = self.itc_loss(itc_text, itc_image)
        return SCLContrastiveOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            itc_text_embeds=itc_text,
            itc_image_embeds=itc_image,
        )


__all__ = [
    "SCLModel",
    "SCLModelOutput",
    "SCLPreTrainedModel",
    "SCLSequenceClassifierOutput",
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
