"""Faster routes through the fusion layers, for the tasks that read only part of their output (spec §2, §3.1).

`SCLModel.fuse` runs every co-attention layer for every token of both streams, like `CLIPEncoder`. Pre-training and
retrieval scoring fuse the same images with several batches of texts and read only some outputs. `fuse_passes`
walks the same layers (`SCLModel.cross_modal_text_layers` / `cross_modal_image_layers`) for a list of
`FusionPass`es that share one batch of images, and saves what no output needs:

* **shared image work**: the passes go through the first layer together; what depends on the image alone, the image
  stream's self-attention and the text stream's cross-attention keys and values of the image, runs once per image
  however many texts (`image_index`) and passes read it. The middle layers run once for all passes' rows;
* **unused stream**: a stream whose output no one reads (`text_output` / `image_output` `None`, e.g. the image
  stream of the MLM pass) skips its last layer;
* **stop-gradient targets**: a last layer whose output is only a target (`"no_grad"`) runs without autograd, and a
  pass that produces no prediction at all runs without autograd from its first layer;
* **CLS tokens only** (`cls_only`): the last layer computes the text CLS and the frame CLS tokens only, the tokens
  `pooler_output` and the completion losses read. They still attend to every token of both streams, so they equal
  the full layer's. This saves about 3/4 of the last layer (not its key and value projections).

Every route equals the plain `SCLModel.fuse` at the tokens it returns, in value and in gradient
(`test_fusion_planning.py`). Under training dropout the passes that share the first layer's image work share its
dropout masks.
"""

from dataclasses import dataclass

import torch

GRAD, NO_GRAD = "grad", "no_grad"


@dataclass
class FusionPass:
    """One fusion of texts with images of the shared batch.

    text_embeds: `(P, L, H)` unimodal text tokens (`SCLModel.encode_text`).
    attention_mask: `(P, L)` 1 on real text tokens.
    image_index: `(P,)` the image row each text is fused with; `None` pairs text `i` with image `i`.
    text_output / image_output: how the stream's last layer runs: `"grad"`, `"no_grad"` (its output is only a
        stop-gradient target) or `None` (unused: skipped, and its features are `None`).
    cls_only: run the last layer for the text CLS and the frame CLS tokens only.
    """

    text_embeds: torch.Tensor
    attention_mask: torch.Tensor
    image_index: torch.LongTensor | None = None
    text_output: str | None = GRAD
    image_output: str | None = GRAD
    cls_only: bool = False

    def __post_init__(self):
        for name in ("text_output", "image_output"):
            if getattr(self, name) not in (GRAD, NO_GRAD, None):
                raise ValueError(f"`{name}` must be 'grad', 'no_grad' or None, got {getattr(self, name)!r}.")

    @property
    def needs_grad(self) -> bool:
        return GRAD in (self.text_output, self.image_output)


@dataclass
class FusedPass:
    """The last layer's outputs of a pass: `(P, L, H)` text and `(P, F(1+N), H)` image features, or `(P, 1, H)` and
    `(P, F, H)` with `cls_only`; `None` for a skipped stream."""

    text_features: torch.Tensor | None
    image_features: torch.Tensor | None


def fuse_passes(
    model, image_embeds: torch.Tensor, passes: list[FusionPass], num_frames: int = 1, image_token_type_idx: int = 1
) -> list[FusedPass]:
    """Run `passes` over the images `image_embeds` `(B, F(1+N), H)` through `model`'s (an `SCLModel`) fusion layers.

    Passes that need a gradient run together, passes that only produce targets together without autograd.
    """
    results = [None] * len(passes)
    for needs_grad in (True, False):
        group = [index for index, fusion_pass in enumerate(passes) if fusion_pass.needs_grad == needs_grad]
        if not group:
            continue
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            fused = _fuse_group(model, image_embeds, [passes[i] for i in group], num_frames, image_token_type_idx)
        for index, output in zip(group, fused):
            results[index] = output
    return results


def _fuse_group(model, image_embeds, passes, num_frames, image_token_type_idx) -> list[FusedPass]:
    text_layers, image_layers = model.cross_modal_text_layers, model.cross_modal_image_layers
    if len(passes) == 1:  # no copies, and no gather for a plain pairing (retrieval scores, VQA, ITM alone)
        text_embeds, attention_mask, image_index = (
            passes[0].text_embeds,
            passes[0].attention_mask,
            passes[0].image_index,
        )
    else:
        rows = torch.arange(image_embeds.shape[0], device=image_embeds.device)
        image_index = torch.cat([rows if p.image_index is None else p.image_index for p in passes])
        text_embeds = torch.cat([p.text_embeds for p in passes])
        attention_mask = torch.cat([p.attention_mask for p in passes])
    text, image = model.fusion_inputs(text_embeds, image_embeds, image_token_type_idx)

    last = len(text_layers) - 1
    last_index = image_index  # while the image stream still holds one row per image
    if last > 0:
        text_mask, image_mask = model.fusion.masks(text, image, attention_mask)
        new_text, _, _ = text_layers[0](text, image, text_mask, None, encoder_index=image_index)
        image, _, _ = image_layers[0](image, text, None, image_mask, hidden_index=image_index)
        text, last_index = new_text, None
        for text_layer, image_layer in zip(text_layers[1:last], image_layers[1:last]):
            text, image = text_layer(text, image, text_mask, None)[0], image_layer(image, text, None, image_mask)[0]

    outputs, start = [], 0
    for fusion_pass in passes:
        size = fusion_pass.text_embeds.shape[0]
        pass_rows = slice(start, start + size)
        start += size
        pass_image = image if last_index is not None else image[pass_rows]
        pass_index = last_index[pass_rows] if last_index is not None else None
        outputs.append(
            _last_layer(
                model, fusion_pass, text[pass_rows], pass_image, attention_mask[pass_rows], pass_index, num_frames
            )
        )
    return outputs


def _last_layer(model, fusion_pass, text, image, attention_mask, image_index, num_frames) -> FusedPass:
    """The last layer of each stream that is read, at the tokens that are read."""
    # torch's compiled CPU flex-attention kernel fails ("index out of bounds ... cur_qSplitSize") once recompiled for
    # dynamic shapes and given fewer queries than keys: there the full layer runs and is sliced.
    subset = fusion_pass.cls_only and not (
        model.config._attn_implementation == "flex_attention" and text.device.type == "cpu"
    )
    text_queries, image_queries = (1, num_frames) if subset else (None, None)
    text_mask, image_mask = model.fusion.masks(text, image, attention_mask, text_queries, image_queries)
    text_features = image_features = None
    if fusion_pass.text_output is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and fusion_pass.text_output == GRAD):
            text_features = model.cross_modal_text_layers[-1](
                text, image, text_mask, None, num_queries=text_queries, encoder_index=image_index
            )[0]
    if fusion_pass.image_output is not None:
        with torch.set_grad_enabled(torch.is_grad_enabled() and fusion_pass.image_output == GRAD):
            image_features = model.cross_modal_image_layers[-1](
                image, text, None, image_mask, num_queries=image_queries, hidden_index=image_index
            )[0]
    if fusion_pass.cls_only and not subset:
        text_features = None if text_features is None else text_features[:, :1]
        image_features = None if image_features is None else image_features[:, :num_frames]
    return FusedPass(text_features, image_features)


def pooled_fusion(
    model,
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    num_frames: int = 1,
    image_index: torch.LongTensor | None = None,
    image_token_type_idx: int = 1,
) -> torch.Tensor:
    """`pooler_output` `(P, 2H)` of text row `i` fused with image row `image_index[i]` (or `i`), with the last layer
    at the CLS tokens only: what the ITM, VQA, NLVR2 and retrieval heads read."""
    fusion_pass = FusionPass(text_embeds, attention_mask, image_index, cls_only=True)
    (fused,) = fuse_passes(model, image_embeds, [fusion_pass], num_frames, image_token_type_idx)
    return model.pool(fused.text_features, fused.image_features, num_frames)
