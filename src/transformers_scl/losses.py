"""Contrastive losses of SCL pre-training and their cross-rank gathering (spec §2.3, §2.4).

The functions here take features, never a model. Each rank contrasts its **local rows** against the **global
batch** (all ranks' features gathered, with gradients flowing back to the rank that produced them), and returns the
mean over its local rows. With equal local batches, the mean of the ranks' losses is the loss of one process on the
global batch, and so is the gradient that DDP averages over ranks:

    grad_DDP = 1/R Σ_r Σ_r' ∂L_r'/∂x_r · ∂x_r/∂θ = ∂/∂θ (1/R Σ_r' L_r') = ∂/∂θ L_global

(the inner sum over r' is what the gather's backward, an all-reduce, delivers to rank r).
"""

import torch
import torch.distributed as dist
from torch.nn import functional as F

# spec §2.4: features are L2-normalised with the norm clamped at 1e-8.
NORM_EPS = 1e-8


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if _is_distributed() else 0


def _local_batch_sizes(local_batch: int, device: torch.device) -> list[int]:
    """Every rank's batch size. They can differ: the collator drops undecodable examples (data issue, item 3)."""
    sizes = torch.zeros(dist.get_world_size(), dtype=torch.long, device=device)
    sizes[dist.get_rank()] = local_batch
    dist.all_reduce(sizes)
    return sizes.tolist()


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's slice.

    Written out instead of `torch.distributed.nn.functional.all_gather` (deprecated), whose gloo backward scrambles
    non-contiguous gradients (torch 2.14: the all-to-all writes into `empty_like` buffers with the gradient's strides),
    which is exactly what a transposed similarity matrix produces. Ranks may hold different batch sizes: rows are
    padded to the largest for the collective and the padding is dropped again.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        sizes = _local_batch_sizes(tensor.shape[0], tensor.device)
        largest = max(sizes)
        padded = tensor.new_zeros((largest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        gathered = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(gathered, padded)
        ctx.start = sum(sizes[: dist.get_rank()])
        ctx.local_batch = tensor.shape[0]
        return torch.cat([rows[:size] for rows, size in zip(gathered, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # never reduce in place into autograd's buffer
        dist.all_reduce(grad)  # Σ over ranks of ∂L_rank/∂(gathered batch)
        return grad[ctx.start : ctx.start + ctx.local_batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0; gradients flow back to every rank's own slice.

    Identity when `torch.distributed` is not initialised or has one rank. Ranks may hold different numbers of rows.
    """
    if not _is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def contrastive_labels(local_batch: int, device: torch.device | None = None) -> torch.Tensor:
    """Target column of each local row in the gathered batch: its offset among the ranks' rows, concatenated in
    rank order."""
    offset = 0
    if _is_distributed():
        offset = sum(_local_batch_sizes(local_batch, device or torch.device("cpu"))[: _rank()])
    return torch.arange(local_batch, device=device) + offset


def image_text_contrastive_loss(
    text_features: torch.Tensor,
    image_features: torch.Tensor,
    temperature: torch.Tensor | float,
    return_logits: bool = False,
    normalized: bool = False,
):
    """ITC (spec §2.3): cosine similarity / temperature, cross-entropy text→image plus image→text (summed, not
    averaged), over the batch gathered from every rank.

    Args:
        text_features, image_features: `(local_batch, dim)`, unnormalised; row i of each is a matching pair.
        temperature: a divisor (the learnable `itc_temperature`, no clamp as in the reference). It must stay positive;
            a non-positive value silently inverts the objective.
        return_logits: also return `(logits_per_text, logits_per_image)`, each `(local_batch, global_batch)`.
        normalized: the features are already L2-normalised (the models' ITC embeddings), so they are used as given.
    """
    if text_features.shape != image_features.shape or text_features.dim() != 2:
        raise ValueError(
            "`text_features` and `image_features` must both be (batch, dim); got "
            f"{tuple(text_features.shape)} and {tuple(image_features.shape)}."
        )
    text, image = text_features, image_features
    if not normalized:
        text, image = F.normalize(text, dim=-1, eps=NORM_EPS), F.normalize(image, dim=-1, eps=NORM_EPS)
    logits_per_text = text @ gather_with_grad(image).t() / temperature
    logits_per_image = image @ gather_with_grad(text).t() / temperature
    labels = contrastive_labels(text.shape[0], text.device)
    loss = F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_image, labels)
    return (loss, logits_per_text, logits_per_image) if return_logits else loss


def semantic_completion_loss(prediction: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Semantic-completion NCE (spec §2.4): prediction→target plus target→prediction, target under stop-gradient.

    Both sides are L2-normalised over the **feature** (last) axis; the reference normalised the frame-CLS tensor over
    the frame axis instead (spec §7.2 item 11), which we do not reproduce.

    Args:
        prediction: `(local_batch, dim)` (MLSC: fused text CLS of the masked text) or `(local_batch, frames, dim)`
            (MVSC: fused frame-CLS tokens of the patch-dropped image). Gradients flow through it.
        target: same shape, from the complete modality; detached here.
        temperature: fixed τ (0.03 in SCL).

    Returns the mean over local rows (and, for 3-D inputs, over frames: each frame is its own contrast).
    """
    if prediction.shape != target.shape or prediction.dim() not in (2, 3):
        raise ValueError(
            "`prediction` and `target` must have the same shape, (batch, dim) or (batch, frames, dim); got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}."
        )
    prediction = F.normalize(prediction, dim=-1, eps=NORM_EPS)
    target = F.normalize(target.detach(), dim=-1, eps=NORM_EPS)
    all_prediction = gather_with_grad(prediction)
    all_target = gather_with_grad(target)
    if prediction.dim() == 2:  # one contrast; give it a frame axis of 1
        prediction, target = prediction[:, None], target[:, None]
        all_prediction, all_target = all_prediction[:, None], all_target[:, None]
    # (F, local, dim) @ (F, dim, global) -> (F, local, global): one contrast per frame, batched.
    prediction, target = prediction.transpose(0, 1), target.transpose(0, 1)
    all_prediction, all_target = all_prediction.transpose(0, 1), all_target.transpose(0, 1)
    logits_prediction = prediction @ all_target.transpose(1, 2) / temperature
    logits_target = target @ all_prediction.transpose(1, 2) / temperature
    num_frames, local_batch, global_batch = logits_prediction.shape
    labels = contrastive_labels(local_batch, prediction.device).repeat(num_frames)
    # Frames have equal row counts, so the mean over all (frame, row) pairs is the mean over frames of per-frame means.
    return F.cross_entropy(logits_prediction.reshape(-1, global_batch), labels) + F.cross_entropy(
        logits_target.reshape(-1, global_batch), labels
    )


__all__ = ["contrastive_labels", "gather_with_grad", "image_text_contrastive_loss", "semantic_completion_loss"]
