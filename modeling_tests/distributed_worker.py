"""One rank of `test_distributed.py`: `torchrun --nproc_per_node 2 distributed_worker.py OUT [MODE]`.

Every rank builds the same tiny SCLForPreTraining (float64, dropout off) and the same global batch, keeps its own
contiguous slice of rows, runs forward + backward under MODE (gloo, CPU), and rank 0 saves the rank-averaged loss
terms and the rank-averaged gradients to OUT. MODE: `ddp` (DistributedDataParallel, the default), `fsdp` (FSDP2 as
accelerate prepares it from `examples/accelerate_configs/fsdp.yaml`: one unit per tower and fusion layer) or
`fsdp-checkpointing` (the same with accelerate's activation checkpointing).
"""

import gc
import os
import sys
from pathlib import Path

import torch

WORLD_BATCH = 8
MASK_ID = 4


def build_model():
    from conftest import tiny_config

    from transformers_scl.modeling_scl import SCLForPreTraining

    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = tiny_config(text_config={**tiny_config().text_config.to_dict(), **no_dropout}, **no_dropout)
    torch.manual_seed(0)
    return SCLForPreTraining(config).double()


def global_batch(world_size: int) -> dict[str, torch.Tensor]:
    """The whole batch; ITM negatives and MLM masks are laid out so that each rank's slice is self-contained.

    * ITM negatives are drawn within a rank's batch, so they are given here within each rank's block of rows.
    * The MLM loss is a mean over masked tokens, so every row masks the same number of tokens (2): then the mean of
      the ranks' means is the global mean.
    """
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 390, (WORLD_BATCH, 7), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1::3, -2:] = 0
    input_ids[1::3, -2:] = 1
    mlm_labels = torch.full_like(input_ids, -100)
    mlm_labels[:, 2:4] = input_ids[:, 2:4]
    local = WORLD_BATCH // world_size
    rows = torch.arange(WORLD_BATCH)
    block_start = rows // local * local
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.randn(WORLD_BATCH, 3, 32, 32, generator=generator, dtype=torch.float64),
        "mlm_input_ids": torch.where(mlm_labels != -100, MASK_ID, input_ids),
        "mlm_labels": mlm_labels,
        "mlsc_input_ids": input_ids.index_fill(1, torch.tensor([1, 3]), MASK_ID),
        "itm_labels": (rows % 2 == 0).long(),
        # global index of the next row inside the same rank's block
        "itm_negative_indices": block_start + (rows - block_start + 1) % local,
        "patch_keep_indices": torch.stack([torch.randperm(16, generator=generator)[:3] for _ in range(WORLD_BATCH)]),
    }


def local_slice(batch: dict, rank: int, world_size: int) -> dict:
    local = WORLD_BATCH // world_size
    part = {key: value[rank * local : (rank + 1) * local] for key, value in batch.items()}
    part["itm_negative_indices"] = part["itm_negative_indices"] - rank * local  # indices into the local batch
    return part


def shard(model, activation_checkpointing: bool):
    """FSDP2 as `accelerate launch --config_file examples/accelerate_configs/fsdp.yaml` prepares it on GPUs: that file's
    `fsdp_config` in accelerate's plugin, applied by accelerate's own FSDP2 functions (activation checkpointing, then
    `fully_shard` per unit). On CPU, `Accelerator.prepare` would fall back to DDP, so they are called directly, with
    the few accelerator attributes they read; mixed precision stays off to compare in float64."""
    from types import SimpleNamespace

    import yaml
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_apply_ac, fsdp2_prepare_model

    config_file = Path(__file__).parents[1] / "examples" / "accelerate_configs" / "fsdp.yaml"
    fsdp = yaml.safe_load(config_file.read_text())["fsdp_config"]
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"],
        auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        cpu_offload=fsdp["fsdp_offload_params"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"],
        state_dict_type=fsdp["fsdp_state_dict_type"],
        activation_checkpointing=activation_checkpointing or fsdp["fsdp_activation_checkpointing"],
    )
    accelerator = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin),
        mixed_precision="no",
        device=torch.device("cpu"),
        is_main_process=torch.distributed.get_rank() == 0,
    )
    layer_names = set(plugin.transformer_cls_names_to_wrap)
    layer_count = sum(type(module).__name__ in layer_names for module in model.modules())
    plugin.set_auto_wrap_policy(model)
    if plugin.activation_checkpointing:
        model = fsdp2_apply_ac(accelerator, model)
    model = fsdp2_prepare_model(accelerator, model)
    check_units(model, layer_names, layer_count, checkpointed=plugin.activation_checkpointing)
    return model


def check_units(model, layer_names: set[str], layer_count: int, checkpointed: bool):
    """Each layer of a class named in the accelerate config is inside an FSDP unit of its own (not the root's, not
    shared with another layer), whatever wrapper accelerate puts around it; with activation checkpointing, all of
    each layer is checkpointed.
    """
    from torch.distributed.fsdp import FSDPModule

    assert isinstance(model, FSDPModule), f"the root {type(model).__name__} is not sharded"
    modules = dict(model.named_modules())
    # `fully_shard` swaps a module's class for an `FSDP<name>` subclass: match the layer classes through the MRO.
    layers = {name: module for name, module in modules.items() if _layer_class(module, layer_names)}
    assert len(layers) == layer_count, f"{len(layers)} of the model's {layer_count} layers are left after sharding"
    assert {_layer_class(module, layer_names) for module in layers.values()} == layer_names

    def layers_under(prefix: str) -> list[str]:
        return [other for other in layers if other == prefix or other.startswith(prefix + ".")]

    for name, layer in layers.items():
        # The layer and its ancestors, innermost first, up to the root ("").
        parts = name.split(".")
        path = [".".join(parts[:i]) for i in range(len(parts), -1, -1)]
        unit_name = next(prefix for prefix in path if isinstance(modules[prefix], FSDPModule))
        assert unit_name != "", (
            f"{name} ({_layer_class(layer, layer_names)}) is sharded with the root, not in a unit of its own"
        )
        assert layers_under(unit_name) == [name], f"the FSDP unit {unit_name} holds {layers_under(unit_name)}"
        # Checkpointed: every parameter of the layer sits under a `CheckpointWrapper`, be it around the unit, inside
        # it (accelerate 1.16 wraps the layer) or around each of the layer's children (accelerate 1.8).
        params = [f"{name}.{param_name}" for param_name, _ in layer.named_parameters()]
        wrapped = {"_checkpoint_wrapped_module." in param_name for param_name in params}
        assert wrapped == {checkpointed}, f"{name}: checkpointed parameters {wrapped}, expected {checkpointed}"


def _layer_class(module, layer_names: set[str]) -> str | None:
    return next((cls.__name__ for cls in type(module).__mro__ if cls.__name__ in layer_names), None)


def full_gradients(model) -> dict[str, torch.Tensor]:
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad
        name = name.replace("_checkpoint_wrapped_module.", "")  # accelerate's activation-checkpointing wrapper
        grads[name] = grad.full_tensor() if hasattr(grad, "full_tensor") else grad  # FSDP2 keeps sharded DTensors
    return grads


def main(out_path: str, mode: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    try:
        if mode == "ddp":
            model = DistributedDataParallel(build_model())
        else:
            model = shard(build_model(), activation_checkpointing=mode == "fsdp-checkpointing")
        output = model(**local_slice(global_batch(world_size), rank, world_size))
        output.loss.backward()  # DDP and FSDP average the gradients over ranks
        grads = full_gradients(model.module if mode == "ddp" else model)

        # Each rank's loss is the mean over its own rows: the mean over ranks is the global batch's mean.
        terms = torch.stack([output.loss.detach(), *(value.detach() for value in output.loss_info.values())])
        dist.all_reduce(terms)
        terms /= world_size
        if rank == 0:
            names = ["loss", *output.loss_info.keys()]
            torch.save(
                {
                    "losses": dict(zip(names, terms)),
                    "itc_logits_shape": tuple(output.itc_logits_per_text.shape),
                    "grads": grads,
                },
                out_path,
            )
        uneven_contrast(out_path, rank)
        # Release what holds the group (FSDP's state, the autograd graph) while it exists, and let no rank tear it
        # down while the other still communicates.
        del model, output, grads
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def uneven_features():
    """Feature rows of a global batch of 8 that the ranks split 3 + 5, as after the collator drops bad files."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=generator, dtype=torch.float64), torch.randn(
        8, 6, generator=generator, dtype=torch.float64
    )


def uneven_contrast(out_path: str, rank: int):
    from transformers_scl.losses import image_text_contrastive_loss

    text, image = uneven_features()
    rows = slice(0, 3) if rank == 0 else slice(3, 8)
    text, image = text[rows].requires_grad_(), image[rows].requires_grad_()
    loss, logits_per_text, _ = image_text_contrastive_loss(text, image, 0.07, return_logits=True)
    loss.backward()
    torch.save(
        {"loss": loss.detach(), "logits_per_text": logits_per_text.detach(), "text_grad": text.grad},
        f"{out_path}.uneven{rank}",
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ddp")
