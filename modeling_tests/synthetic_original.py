"""Tiny checkpoints in the original SCL format (IIGROUP/SCL Lightning `.ckpt`, spec §6.1–§6.3), for conversion tests.

The keys and shape rules follow spec §6.2 exactly, at tiny sizes: text width 32 (2 layers, vocabulary 400, 66
positions), vision width 32 (2 residual blocks, patch 8, 32px images, 4x4 grid), fusion width 32 (2+2 layers), ITC
projections to 16, and the unused MAE decoder at width 16. Every tensor is random, so a swapped key shows up.
"""

import torch

TEXT, VISION, FUSION, DECODER, PROJECTION = 32, 32, 32, 16, 16
VOCAB, POSITIONS, LAYERS, PATCH, GRID, FRAMES = 400, 66, 2, 8, 4, 8
NUM_VQA_LABELS = 10

# The reference's pre-training config (spec §6.3), shrunk to the sizes above.
TRAINING_CONFIG = {
    "exp_name": "mlm_itm_cl_scl",
    "seed": 0,
    "datasets": ["coco", "vg", "sbu", "gcc"],
    "loss_names": {"itm": 1, "mlm": 1, "vqa": 0, "nlvr2": 0, "irtr": 0, "mae": 0, "con": 1, "scl": 1},
    "batch_size": 4096,
    "image_size": GRID * PATCH,
    "patch_size": PATCH,
    "num_frames": 4,
    "tokenizer": "roberta-base",
    "vocab_size": VOCAB,
    "max_text_len": 50,
    "vqav2_label_size": 3129,
    "mlm_prob": 0.15,
    "num_layers": 12,
    "num_top_layer": LAYERS,
    "mlp_ratio": 2,
    "drop_rate": 0.1,
    "hidden_size": FUSION,
    "num_heads": 4,
    "mask_ratio": 0.8,
    "mtm_ratio": 0.4,
    "learning_rate": 2e-5,
    "max_steps": 100000,
    "con_weight": 0.5,
    "precision": 16,
}


def _linear(state, prefix, out_features, in_features, generator, bias=True):
    state[f"{prefix}.weight"] = torch.randn(out_features, in_features, generator=generator)
    if bias:
        state[f"{prefix}.bias"] = torch.randn(out_features, generator=generator)


def _layer_norm(state, prefix, size, generator):
    state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(size, generator=generator)
    state[f"{prefix}.bias"] = 0.1 * torch.randn(size, generator=generator)


def _bert_attention(state, prefix, generator):
    for name in ("query", "key", "value"):
        _linear(state, f"{prefix}.self.{name}", FUSION, FUSION, generator)
    _linear(state, f"{prefix}.output.dense", FUSION, FUSION, generator)
    _layer_norm(state, f"{prefix}.output.LayerNorm", FUSION, generator)


def original_state_dict(variant: str = "video", heads: str = "pretraining", seed: int = 0) -> dict[str, torch.Tensor]:
    """An original SCL state dict.

    Args:
        variant: `"video"` (commit 928b1cd, has `temporal_embed`) or `"glscl"` (HEAD, has `visual_mask_token`).
        heads: `"pretraining"`, `"vqa"`, `"nlvr2"`, `"retrieval"` or `"none"`.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    t = "text_transformer"
    state[f"{t}.embeddings.word_embeddings.weight"] = torch.randn(VOCAB, TEXT, generator=g)
    state[f"{t}.embeddings.position_embeddings.weight"] = torch.randn(POSITIONS, TEXT, generator=g)
    state[f"{t}.embeddings.token_type_embeddings.weight"] = torch.randn(1, TEXT, generator=g)
    _layer_norm(state, f"{t}.embeddings.LayerNorm", TEXT, g)
    state[f"{t}.embeddings.position_ids"] = torch.arange(POSITIONS)[None]
    for i in range(LAYERS):
        layer = f"{t}.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            _linear(state, f"{layer}.attention.self.{name}", TEXT, TEXT, g)
        _linear(state, f"{layer}.attention.output.dense", TEXT, TEXT, g)
        _layer_norm(state, f"{layer}.attention.output.LayerNorm", TEXT, g)
        _linear(state, f"{layer}.intermediate.dense", 2 * TEXT, TEXT, g)
        _linear(state, f"{layer}.output.dense", TEXT, 2 * TEXT, g)
        _layer_norm(state, f"{layer}.output.LayerNorm", TEXT, g)
    _linear(state, f"{t}.pooler.dense", TEXT, TEXT, g)

    v = "vision_transformer.visual"
    state[f"{v}.conv1.weight"] = 0.1 * torch.randn(VISION, 3, PATCH, PATCH, generator=g)
    state[f"{v}.class_embedding"] = torch.randn(VISION, generator=g)
    state[f"{v}.positional_embedding"] = torch.randn(GRID * GRID + 1, VISION, generator=g)
    if variant == "video":
        state[f"{v}.temporal_embed"] = torch.randn(1, FRAMES, VISION, generator=g)
    elif variant == "glscl":
        state[f"{v}.visual_mask_token"] = torch.randn(1, VISION, generator=g)
    else:
        raise ValueError(variant)
    _layer_norm(state, f"{v}.ln_pre", VISION, g)
    for i in range(LAYERS):
        block = f"{v}.transformer.resblocks.{i}"
        state[f"{block}.attn.in_proj_weight"] = 0.2 * torch.randn(3 * VISION, VISION, generator=g)
        state[f"{block}.attn.in_proj_bias"] = 0.1 * torch.randn(3 * VISION, generator=g)
        _linear(state, f"{block}.attn.out_proj", VISION, VISION, g)
        _layer_norm(state, f"{block}.ln_1", VISION, g)
        _linear(state, f"{block}.mlp.c_fc", 4 * VISION, VISION, g)
        _linear(state, f"{block}.mlp.c_proj", VISION, 4 * VISION, g)
        _layer_norm(state, f"{block}.ln_2", VISION, g)
    _layer_norm(state, f"{v}.ln_post", VISION, g)

    # The unused MAE decoder (spec §1.2): 1 block here, 8 in the release.
    d = "vision_transformer"
    _linear(state, f"{d}.decoder_embed", DECODER, VISION, g)
    state[f"{d}.mask_token"] = torch.zeros(1, 1, DECODER)
    state[f"{d}.decoder_pos_embed"] = torch.randn(1, GRID * GRID + 1, DECODER, generator=g)
    for norm in ("norm1", "norm2"):
        _layer_norm(state, f"{d}.decoder_blocks.0.{norm}", DECODER, g)
    _linear(state, f"{d}.decoder_blocks.0.attn.qkv", 3 * DECODER, DECODER, g)
    _linear(state, f"{d}.decoder_blocks.0.attn.proj", DECODER, DECODER, g)
    _linear(state, f"{d}.decoder_blocks.0.mlp.fc1", 4 * DECODER, DECODER, g)
    _linear(state, f"{d}.decoder_blocks.0.mlp.fc2", DECODER, 4 * DECODER, g)
    _layer_norm(state, f"{d}.decoder_norm", DECODER, g)
    _linear(state, f"{d}.decoder_pred", VISION, DECODER, g)

    _linear(state, "cross_modal_text_transform", FUSION, TEXT, g)
    _linear(state, "cross_modal_image_transform", FUSION, VISION, g)
    token_types = 3 if heads == "nlvr2" else 2
    state["token_type_embeddings.weight"] = torch.randn(token_types, FUSION, generator=g)
    for stream in ("text", "image"):
        for k in range(LAYERS):
            layer = f"cross_modal_{stream}_layers.{k}"
            _bert_attention(state, f"{layer}.attention", g)
            _bert_attention(state, f"{layer}.crossattention", g)
            _linear(state, f"{layer}.intermediate.dense", 2 * FUSION, FUSION, g)
            _linear(state, f"{layer}.output.dense", FUSION, 2 * FUSION, g)
            _layer_norm(state, f"{layer}.output.LayerNorm", FUSION, g)
        _linear(state, f"cross_modal_{stream}_pooler.dense", FUSION, FUSION, g)

    if heads in ("pretraining", "retrieval"):
        _linear(state, "itm_score.fc", 2, 2 * FUSION, g)
        state["cl_temp"] = torch.tensor(0.05)
        for proj in ("vision_proj", "language_proj"):
            _linear(state, f"{proj}.0", FUSION, FUSION, g)
            _layer_norm(state, f"{proj}.1", FUSION, g)
            _linear(state, f"{proj}.3", PROJECTION, FUSION, g)
    if heads == "pretraining":
        _linear(state, "mlm_score.transform.dense", FUSION, FUSION, g)
        _layer_norm(state, "mlm_score.transform.LayerNorm", FUSION, g)
        _linear(state, "mlm_score.decoder", VOCAB, FUSION, g, bias=False)
        state["mlm_score.bias"] = torch.randn(VOCAB, generator=g)
    if heads == "retrieval":
        _linear(state, "rank_output", 1, 2 * FUSION, g)
    if heads == "vqa":
        _linear(state, "vqa_classifier.0", 2 * FUSION, 2 * FUSION, g)
        _layer_norm(state, "vqa_classifier.1", 2 * FUSION, g)
        _linear(state, "vqa_classifier.3", NUM_VQA_LABELS, 2 * FUSION, g)
    if heads == "nlvr2":
        _linear(state, "nlvr2_classifier.0", 2 * FUSION, 4 * FUSION, g)
        _layer_norm(state, "nlvr2_classifier.1", 2 * FUSION, g)
        _linear(state, "nlvr2_classifier.3", 2, 2 * FUSION, g)
    return state


def lightning_checkpoint(state_dict: dict, training_config: dict | None = None, hyper_parameters=None) -> dict:
    """Wrap a state dict as a PyTorch-Lightning 1.3 checkpoint (spec §6.1), optimizer state included."""
    config = dict(TRAINING_CONFIG if training_config is None else training_config)
    exp_avg = {i: {"step": 10, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.ones(3)} for i in range(2)}
    return {
        "epoch": 41,
        "global_step": 99999,
        "pytorch-lightning_version": "1.3.2",
        "state_dict": state_dict,
        "callbacks": {},
        "optimizer_states": [{"state": exp_avg, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]}],
        "lr_schedulers": [{"last_epoch": 99999, "_step_count": 100000}],
        "native_amp_scaling_state": {"scale": 65536.0, "_growth_tracker": 10},
        "hyper_parameters": {"config": config} if hyper_parameters is None else hyper_parameters,
    }


def save_checkpoint(path, variant: str = "video", heads: str = "pretraining", **kwargs) -> dict:
    """Write a Lightning-style checkpoint with `torch.save`; returns its state dict."""
    state = original_state_dict(variant, heads)
    torch.save(lightning_checkpoint(state, **kwargs), path)
    return state
