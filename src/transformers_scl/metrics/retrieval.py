"""Image–text retrieval recall@K with several ground-truth captions per image (ALBEF/METER `itm_eval` protocol).

For an image query the rank is the best position of any of its captions in the caption list sorted by descending
score; for a caption query it is the position of its one image. `R@K = 100 * mean(rank < K)`.

Ties are broken against the ground truth: the rank counts every non-ground-truth candidate whose score is greater
than *or equal to* the best ground-truth score. The result is deterministic and never flatters a model: a model that
gives every pair the same score gets rank N - #gt, not rank 0. Without ties this is exactly the argsort rank.

Everything runs on torch tensors (numpy arrays are accepted), on the scores' device, in row chunks with no Python
loop over queries, so a 5k x 25k COCO score matrix needs a few passes over memory and no sort.
"""

from collections.abc import Iterable, Sequence

import numpy as np
import torch

_CHUNK_ELEMENTS = 1 << 24  # score elements compared at once (bounds the temporary mask to ~16M booleans)


def _as_score_matrix(scores, name: str) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"`{name}` must be a non-empty 2-D score matrix, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.double()
    if torch.isnan(scores).any():
        raise ValueError(f"`{name}` contains NaN scores; ranks would be meaningless")
    return scores


def _rows_per_chunk(num_columns: int) -> int:
    return max(1, _CHUNK_ELEMENTS // num_columns)


def txt2img_from_img2txt(img2txt: Iterable[Iterable[int]], num_texts: int | None = None) -> torch.Tensor:
    """Invert `img2txt` (the caption indices of each image) into `txt2img` (the image index of each caption).

    Every caption must belong to exactly one image; `num_texts` (if given) is checked against the captions listed.
    """
    owners = {}
    for image, captions in enumerate(img2txt):
        captions = [int(caption) for caption in np.asarray(captions).reshape(-1)]
        if not captions:
            raise ValueError(f"img2txt[{image}] is empty; every image needs at least one ground-truth caption")
        for caption in captions:
            if caption in owners:
                raise ValueError(f"Caption {caption} is listed under images {owners[caption]} and {image} in img2txt")
            owners[caption] = image
    num_texts = len(owners) if num_texts is None else num_texts
    if sorted(owners) != list(range(num_texts)):
        missing = sorted(set(range(num_texts)) - set(owners))[:5]
        extra = sorted(set(owners) - set(range(num_texts)))[:5]
        raise ValueError(
            f"img2txt must list each caption 0..{num_texts - 1} exactly once; missing {missing}, out of range {extra}"
        )
    return torch.tensor([owners[caption] for caption in range(num_texts)], dtype=torch.long)


def _resolve_txt2img(txt2img, img2txt, num_images: int, num_texts: int, device: torch.device) -> torch.Tensor:
    if txt2img is None and img2txt is None:
        raise ValueError("Pass `txt2img` (image index of each caption) or `img2txt` (caption indices of each image)")
    if txt2img is not None:
        txt2img = torch.as_tensor(txt2img)
        if txt2img.ndim != 1 or txt2img.shape[0] != num_texts or txt2img.is_floating_point():
            raise ValueError(
                f"`txt2img` must be a 1-D integer array with one entry per caption ({num_texts}), "
                f"got dtype {txt2img.dtype} and shape {tuple(txt2img.shape)}"
            )
        txt2img = txt2img.long()
        if txt2img.min() < 0 or txt2img.max() >= num_images:
            raise ValueError(
                f"`txt2img` values must be image indices in [0, {num_images}), got {txt2img.tolist()[:10]}"
            )
    if img2txt is not None:
        if len(img2txt) != num_images:
            raise ValueError(f"`img2txt` has {len(img2txt)} entries but the scores have {num_images} images")
        derived = txt2img_from_img2txt(img2txt, num_texts)
        if txt2img is not None and not torch.equal(derived, txt2img.cpu()):
            raise ValueError("`txt2img` and `img2txt` disagree about which image a caption belongs to")
        txt2img = derived
    images_without_captions = (torch.bincount(txt2img, minlength=num_images) == 0).nonzero().flatten()
    if images_without_captions.numel():
        raise ValueError(f"Images {images_without_captions.tolist()[:10]} have no ground-truth caption")
    return txt2img.to(device)


def image_to_text_ranks(scores_i2t: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """0-based rank of each image's best-ranked ground-truth caption; `scores_i2t` is (N_img, N_txt).

    Rank = number of non-ground-truth captions scoring >= the image's best ground-truth caption (ties count against).
    """
    num_images, num_texts = scores_i2t.shape
    ranks = []
    chunk = _rows_per_chunk(num_texts)
    for start in range(0, num_images, chunk):
        block = scores_i2t[start : start + chunk]
        image_ids = torch.arange(start, start + block.shape[0], device=block.device)
        is_ground_truth = txt2img[None, :] == image_ids[:, None]
        best_ground_truth = block.masked_fill(~is_ground_truth, float("-inf")).amax(dim=1, keepdim=True)
        ranks.append(((block >= best_ground_truth) & ~is_ground_truth).sum(dim=1))
    return torch.cat(ranks)


def text_to_image_ranks(scores_t2i: torch.Tensor, txt2img: torch.Tensor) -> torch.Tensor:
    """0-based rank of each caption's image; `scores_t2i` is (N_txt, N_img).

    Rank = number of other images scoring >= the caption's image (ties count against).
    """
    num_texts, num_images = scores_t2i.shape
    ranks = []
    chunk = _rows_per_chunk(num_images)
    for start in range(0, num_texts, chunk):
        block = scores_t2i[start : start + chunk]
        ground_truth = block.gather(1, txt2img[start : start + chunk, None])
        ranks.append((block >= ground_truth).sum(dim=1) - 1)  # minus the ground-truth image itself
    return torch.cat(ranks)


def retrieval_recall(
    scores_i2t: torch.Tensor | np.ndarray,
    *,
    scores_t2i: torch.Tensor | np.ndarray | None = None,
    txt2img: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    img2txt: Sequence[Sequence[int]] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K in % for image→text (`txt_r*`) and text→image (`img_r*`) retrieval.

    Args:
        scores_i2t: (N_img, N_txt) scores of every caption for every image.
        scores_t2i: (N_txt, N_img) scores of every image for every caption; defaults to `scores_i2t.T`. Pass it when
            the two directions were scored separately (e.g. ITM re-ranking of each direction's top-k).
        txt2img: image index of each caption.
        img2txt: caption indices of each image (5 for COCO/Flickr30K); derived from `txt2img` when omitted. At least
            one of `txt2img` / `img2txt` is required; when both are given they must agree.
        ks: the K values to report.

    Returns:
        `txt_r{k}` and `img_r{k}` for each K, their means `txt_r_mean` / `img_r_mean`, and `r_mean` (mean of all).
    """
    scores_i2t = _as_score_matrix(scores_i2t, "scores_i2t")
    num_images, num_texts = scores_i2t.shape
    if scores_t2i is None:
        scores_t2i = scores_i2t.T
    else:
        scores_t2i = _as_score_matrix(scores_t2i, "scores_t2i").to(scores_i2t.device)
        if scores_t2i.shape != (num_texts, num_images):
            raise ValueError(
                f"`scores_t2i` must be (N_txt, N_img) = ({num_texts}, {num_images}) to match `scores_i2t`, "
                f"got {tuple(scores_t2i.shape)}"
            )
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks):
        raise ValueError(f"`ks` must be positive integers, got {ks}")
    txt2img = _resolve_txt2img(txt2img, img2txt, num_images, num_texts, scores_i2t.device)

    image_ranks = image_to_text_ranks(scores_i2t, txt2img)
    text_ranks = text_to_image_ranks(scores_t2i, txt2img)
    metrics = {}
    for prefix, ranks in (("txt", image_ranks), ("img", text_ranks)):
        recalls = [100.0 * (ranks < k).double().mean().item() for k in ks]
        metrics.update({f"{prefix}_r{k}": recall for k, recall in zip(ks, recalls)})
        metrics[f"{prefix}_r_mean"] = sum(recalls) / len(recalls)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    return metrics
