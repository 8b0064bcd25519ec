"""Two gloo ranks on CPU give the loss and the gradients of one process on the whole batch (losses.py docstring).

Why they must be equal: rank r's loss is the mean over its own rows, its contrastive rows scored against the batch
gathered from both ranks; the all-gather's backward returns to each rank the gradients that *every* rank's loss
sends to its features; DDP then averages the parameter gradients over ranks. So the gradient is that of
mean_r(L_r), and with equal local batches mean_r(L_r) is the global mean over all rows, i.e. the single-process loss.
FSDP2, which shards every tower and fusion layer, must give the same (its reduce-scatter averages as DDP does).
ITM negatives are drawn within a rank, and the MLM mean is over masked tokens, so the batch fixes ITM pairs inside
each rank's rows and masks the same number of tokens per row (see `distributed_worker.global_batch`).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import WORLD_BATCH, build_model, global_batch, uneven_features
from torch.nn import functional as F

from transformers_scl.losses import image_text_contrastive_loss

HERE = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp", "fsdp-checkpointing"])
def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path, mode):
    out = tmp_path / "rank0.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(HERE / "distributed_worker.py"), str(out), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    distributed = torch.load(out)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model()
        output = model(**global_batch(world_size=2))  # the single process sees the whole batch
        output.loss.backward()
    finally:
        torch.set_num_threads(threads)

    assert distributed["itc_logits_shape"] == (WORLD_BATCH // 2, WORLD_BATCH)  # local rows vs gathered columns
    expected = {"loss": output.loss, **output.loss_info}
    assert distributed["losses"].keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(distributed["losses"][name], value.detach(), rtol=1e-9, atol=1e-12, msg=name)
    for name, param in model.named_parameters():
        torch.testing.assert_close(distributed["grads"][name], param.grad, rtol=1e-7, atol=1e-12, msg=name)

    # Uneven local batches (3 + 5 rows): the gather pads and unpads, and each rank's labels point at its own columns.
    text, image = uneven_features()
    text.requires_grad_()
    _, logits_per_text, logits_per_image = image_text_contrastive_loss(text, image, 0.07, return_logits=True)
    ranks = [torch.load(f"{out}.uneven{rank}") for rank in (0, 1)]
    torch.testing.assert_close(torch.cat([r["logits_per_text"] for r in ranks]), logits_per_text.detach())
    for rank, rows in ((0, slice(0, 3)), (1, slice(3, 8))):
        labels = torch.arange(8)[rows]
        local = F.cross_entropy(logits_per_text[rows], labels) + F.cross_entropy(logits_per_image[rows], labels)
        torch.testing.assert_close(ranks[rank]["loss"], local.detach())
    # The gradient each rank gets for its rows is that of the sum of both ranks' losses.
    total = sum(
        F.cross_entropy(logits_per_text[rows], torch.arange(8)[rows])
        + F.cross_entropy(logits_per_image[rows], torch.arange(8)[rows])
        for rows in (slice(0, 3), slice(3, 8))
    )
    (grad,) = torch.autograd.grad(total, text)
    torch.testing.assert_close(torch.cat([r["text_grad"] for r in ranks]), grad)
