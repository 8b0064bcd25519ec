"""The SCL pre-training losses computed the way the reference does (spec §2): every pass recomputes its towers.

This is the oracle of `test_pretraining.py` and the "recompute everything" variant of
`benchmarks/bench_pretraining.py`. It is written independently of `transformers_scl.losses` and of
`SCLForPreTraining.forward`: plain `model.scl(...)` calls, one per pass, and the formulas of spec §2 spelled out.
Randomness is not drawn here: ITM labels, ITM negatives and kept patches are inputs.
"""

import torch
from torch.nn import functional as F


def _normalise(features: torch.Tensor) -> torch.Tensor:
    # spec §2.4: L2 norm over the feature axis, clamped at 1e-8.
    return features / features.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _two_way_nce(prediction: torch.Tensor, target: torch.Tensor, temperature) -> torch.Tensor:
    """−mean log softmax of the diagonal, rows then columns, summed (spec §2.3 / §2.4)."""
    logits = _normalise(prediction) @ _normalise(target).t() / temperature
    diagonal = torch.arange(logits.shape[0])
    return -logits.log_softmax(dim=1)[diagonal, diagonal].mean() - logits.log_softmax(dim=0)[diagonal, diagonal].mean()


def naive_pretraining_losses(
    model,
    input_ids,
    attention_mask,
    pixel_values=None,
    pixel_values_videos=None,
    mlm_input_ids=None,
    mlm_labels=None,
    mlsc_input_ids=None,
    itm_labels=None,
    itm_negative_indices=None,
    patch_keep_indices=None,
) -> dict[str, torch.Tensor]:
    """Weighted per-objective losses of an `SCLForPreTraining` `model`, recomputing the towers in each pass."""
    config = model.config
    objectives = config.pretraining_objectives
    video = pixel_values_videos is not None
    pixels = pixel_values_videos if video else pixel_values
    num_frames = pixels.shape[1] if video else 1

    def run(text_ids, images, **extra):  # one full reference pass: both towers + fusion
        key = "pixel_values_videos" if video else "pixel_values"
        return model.scl(input_ids=text_ids, attention_mask=attention_mask, **{key: images}, **extra)

    losses = {}
    if "itm" in objectives:  # pass 1: half of the texts paired with another image
        rows = torch.arange(input_ids.shape[0])
        images = pixels[torch.where(itm_labels.bool(), rows, itm_negative_indices)]
        logits = model.itm_score(run(input_ids, images).pooler_output)
        losses["itm"] = F.cross_entropy(logits, itm_labels)
    if "mlm" in objectives:  # pass 2: MLM-masked text
        logits = model.mlm_score(run(mlm_input_ids, pixels).text_features)
        losses["mlm"] = F.cross_entropy(logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
    if "itc" in objectives:  # pass 3: towers only
        text_embeds, _ = model.scl.encode_text(input_ids, attention_mask)
        key = "pixel_values_videos" if video else "pixel_values"
        image_embeds, _ = model.scl.encode_image(**{key: pixels})
        text = model.itc_text_projection(text_embeds[:, 0])
        image = model.itc_image_projection(image_embeds[:, :num_frames].mean(dim=1))
        losses["itc"] = _two_way_nce(text, image, model.itc_temperature)
    if "mvsc" in objectives or "mlsc" in objectives:
        pass_a = run(input_ids, pixels, patch_keep_indices=patch_keep_indices)  # masked image, complete text
        pass_b = run(mlsc_input_ids, pixels)  # complete image, masked text
        tau = config.scl_temperature
        if "mvsc" in objectives:
            per_frame = [
                _two_way_nce(pass_a.image_features[:, f], pass_b.image_features[:, f].detach(), tau)
                for f in range(num_frames)
            ]
            losses["mvsc"] = torch.stack(per_frame).mean()
        if "mlsc" in objectives:
            losses["mlsc"] = _two_way_nce(pass_b.text_features[:, 0], pass_a.text_features[:, 0].detach(), tau)
    return {name: getattr(config, f"{name}_weight") * loss for name, loss in losses.items()}
