"""One rank of `test_retrieval.py`'s sharded test: `torchrun --nproc_per_node 2 retrieval_worker.py OUT`.

Every rank builds the same tiny retrieval model and gallery, runs `evaluate_retrieval` inside a gloo process group
(so each rank re-ranks its own shard of the pairs and the shards are summed), and saves what it returns.
"""

import os
import sys

import torch


def build():
    from conftest import tiny_config

    from transformers_scl.modeling_scl import SCLForImageTextRetrieval

    torch.manual_seed(0)
    model = SCLForImageTextRetrieval(tiny_config()).eval()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 400, (10, 8), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::3, 5:] = 0
    pixel_values = torch.randn(5, 3, 32, 32, generator=generator)
    return model, input_ids, attention_mask, pixel_values, torch.arange(10) // 2


def main(out_path: str):
    import torch.distributed as dist

    from transformers_scl.retrieval import evaluate_retrieval

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        model, input_ids, attention_mask, pixel_values, txt2img = build()
        with torch.no_grad():
            result = evaluate_retrieval(
                model, input_ids, attention_mask, pixel_values, txt2img=txt2img, k=3, pair_batch_size=4, progress=False
            )
        torch.save(
            {"scores_i2t": result.scores_i2t, "scores_t2i": result.scores_t2i, "metrics": result.metrics},
            f"{out_path}.rank{dist.get_rank()}",
        )
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main(sys.argv[1])
