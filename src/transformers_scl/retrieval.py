"""Two-stage image/video–text retrieval: ITC over every pair, then cross-encoder re-ranking of each query's top-k.

The reference ranks every (image, text) pair with the fusion model, 125M fusion passes on COCO 5k (spec §3.1, §7.2
item 7), and leaves its `candidate_N` unused. Here (the ALBEF recipe):

1. every image (or video) and every text is encoded **once** (`encode_images`, `encode_texts`), keeping the unimodal
   tokens that fusion consumes and the L2-normalised ITC embeddings;
2. the ITC similarity of all pairs is one matrix product (`itc_similarity`);
3. for each image its `k` most similar texts, and for each text its `k` most similar images, are scored by the rank
   head (`model.score_pairs`) from the cached tokens. A pair that is a candidate in both directions is fused once.
   The fusion reads only `pooler_output`, so its last layer runs at the CLS tokens only, and the pairs go in image
   order, so a batch's image-only first-layer work runs once per image (`image_index`; see `fusion_planning`).

**Final scores.** In each direction a query's top-k candidates get their rank-head score and every other candidate
gets `-inf`, so the ITC stage only selects and the rank head alone orders (as in ALBEF's ITM re-ranking). The recall
at any K ≤ k is therefore the re-ranker's, restricted to the ITC short-list; a ground truth outside the short-list
counts as ranked last. With `k ≥` the gallery size, or `full_ranking=True`, every pair is scored: the reference's
protocol, and the same numbers bit for bit (the pairs are scored in the same batches).

**Memory.** The cache holds every image's tokens: COCO 5k at 384 px is 5000 × 577 × 768 floats, 8.9 GB in float32
(a 1k-video MSRVTT gallery at 224 px and 4 frames is 1000 × 788 × 768, 2.4 GB). Pass `cache_dtype=torch.float16`
(or bfloat16) to halve it and `cache_device="cpu"` to keep it in host memory; batches are moved to the model's
device and dtype as they are scored. Text tokens are stored padded to the longest text and trimmed per batch.

**Several devices.** When `torch.distributed` is initialised, every rank encodes the whole gallery (cheap next to
re-ranking), and the scored pairs are split into one contiguous shard per rank; the shards' scores are summed with
one `all_reduce`, so every rank returns the full score matrices. `rank` / `world_size` can also be given explicitly:
without a process group, a rank then returns only its own shard's scores (zeros elsewhere).
"""

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.collators import SCLDataCollator
from .data.loaders import caption_groups
from .metrics import retrieval_recall


@dataclass
class TextCache:
    """Unimodal text encodings of a gallery of `N` texts.

    embeds: `(N, L, H)` tokens after `cross_modal_text_transform` (fusion input), padded to the longest text.
    attention_mask: `(N, L)` 1 on real tokens.
    features: `(N, D)` L2-normalised ITC embeddings (float32).
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    features: torch.Tensor

    def __len__(self) -> int:
        return self.embeds.shape[0]


@dataclass
class ImageCache:
    """Unimodal image (or video) encodings of a gallery of `N` images.

    embeds: `(N, F(1 + P), H)` tokens after `cross_modal_image_transform` (fusion input).
    features: `(N, D)` L2-normalised ITC embeddings (float32).
    num_frames: `F`, 1 for images.
    """

    embeds: torch.Tensor
    features: torch.Tensor
    num_frames: int = 1

    def __len__(self) -> int:
        return self.embeds.shape[0]


@dataclass
class RetrievalResult:
    """Scores, recalls and timings of `evaluate_retrieval`.

    metrics: recall@K of the final scores (`txt_r1` … image→text, `img_r1` … text→image; see `retrieval_recall`).
    itc_metrics: recall@K of the ITC similarity alone.
    scores_i2t / scores_t2i: `(N_img, N_txt)` / `(N_txt, N_img)` final scores (`-inf` outside each query's top-k).
    itc_scores: `(N_img, N_txt)` ITC cosine similarity.
    num_pairs: number of fused (image, text) pairs.
    timings: seconds spent on `encode`, `itc` and `rerank`, and their `total`.
    """

    metrics: dict[str, float]
    itc_metrics: dict[str, float]
    scores_i2t: torch.Tensor
    scores_t2i: torch.Tensor
    itc_scores: torch.Tensor
    num_pairs: int
    timings: dict[str, float] = field(default_factory=dict)


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _distributed_shard(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    """This process's shard of the work, and whether shards must be summed across a process group."""
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}.")
    return rank, world_size, initialised and world_size > 1


def _synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def encode_texts(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
    cache_device: torch.device | str | None = None,
    cache_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> TextCache:
    """Encode every text once with `model.get_text_features`.

    Args:
        model: an `SCLForImageTextRetrieval` (anything with `get_text_features`).
        input_ids, attention_mask: `(N, L)` tokenised texts (e.g. from `SCLProcessor(text=…)`).
        cache_device: where the cached tokens live (default: the model's device); `"cpu"` for large galleries.
        cache_dtype: dtype of the cached tokens (default: the model's); float16 halves the memory.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"`input_ids` must be (num_texts, length), got {tuple(input_ids.shape)}.")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device, dtype = _model_device_dtype(model)
    cache_device = torch.device(cache_device) if cache_device is not None else device
    embeds, features = [], []
    for start in tqdm(range(0, input_ids.shape[0], batch_size), desc="Encoding texts", disable=not progress):
        ids = input_ids[start : start + batch_size].to(device)
        mask = attention_mask[start : start + batch_size].to(device)
        output = model.get_text_features(input_ids=ids, attention_mask=mask)
        embeds.append(output.last_hidden_state.to(cache_device, cache_dtype or dtype))
        features.append(output.pooler_output.float())
    return TextCache(
        embeds=torch.cat(embeds), attention_mask=attention_mask.to(cache_device), features=torch.cat(features)
    )


def _image_batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    for batch in images:
        if isinstance(batch, dict) or hasattr(batch, "keys"):
            batch = batch.get("pixel_values_videos", batch.get("pixel_values"))
        if not isinstance(batch, torch.Tensor):
            raise TypeError(
                "`images` must be a tensor or an iterable of tensors or of dicts with `pixel_values` / "
                f"`pixel_values_videos`; got a batch of type {type(batch).__name__}."
            )
        yield batch


@torch.no_grad()
def encode_images(
    model,
    images: torch.Tensor | Iterable,
    *,
    batch_size: int = 64,
    cache_device: torch.device | str | None = None,
    cache_dtype: torch.dtype | None = None,
    interpolate_pos_encoding: bool = False,
    progress: bool = False,
) -> ImageCache:
    """Encode every image (or video) once with `model.get_image_features` / `get_video_features`.

    Args:
        images: `(N, 3, H, W)` images, `(N, F, 3, H, W)` videos, or an iterable of such batches (e.g. a `DataLoader`
            yielding tensors or dicts with `pixel_values` / `pixel_values_videos`), so that a large gallery never
            has to sit in memory as pixels.
        batch_size: batch size when `images` is a tensor.
        cache_device, cache_dtype: as in `encode_texts`.
    """
    device, dtype = _model_device_dtype(model)
    cache_device = torch.device(cache_device) if cache_device is not None else device
    embeds, features, num_frames = [], [], None
    total = -(-images.shape[0] // batch_size) if isinstance(images, torch.Tensor) else None
    batches = tqdm(_image_batches(images, batch_size), desc="Encoding images", total=total, disable=not progress)
    for batch in batches:
        pixels = batch.to(device, dtype)
        if batch.dim() == 4:
            output = model.get_image_features(pixels, interpolate_pos_encoding=interpolate_pos_encoding)
        elif batch.dim() == 5:
            output = model.get_video_features(pixels, interpolate_pos_encoding=interpolate_pos_encoding)
        else:
            raise ValueError(f"Image batches must be (B, 3, H, W) or (B, F, 3, H, W), got {tuple(batch.shape)}.")
        frames = 1 if batch.dim() == 4 else batch.shape[1]
        if num_frames is not None and frames != num_frames:
            raise ValueError(
                f"Every video of a gallery needs the same number of frames; got {num_frames} and {frames}."
            )
        num_frames = frames
        embeds.append(output.last_hidden_state.to(cache_device, cache_dtype or dtype))
        features.append(output.pooler_output.float())
    if not embeds:
        raise ValueError("`images` is empty.")
    return ImageCache(embeds=torch.cat(embeds), features=torch.cat(features), num_frames=num_frames)


def itc_similarity(text_cache: TextCache, image_cache: ImageCache) -> torch.Tensor:
    """`(N_img, N_txt)` cosine similarity of the ITC embeddings (float32)."""
    return image_cache.features @ text_cache.features.to(image_cache.features.device).t()


def _top_k(similarity: torch.Tensor, k: int) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`(N_img, k)` top texts of each image and `(k, N_txt)` top images of each text, `k` capped at the gallery."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    num_images, num_texts = similarity.shape
    return similarity.topk(min(k, num_texts), dim=1).indices, similarity.topk(min(k, num_images), dim=0).indices


def candidate_pairs(similarity: torch.Tensor, k: int) -> torch.LongTensor:
    """Flat indices `image * N_txt + text` of the pairs to re-rank, sorted and unique: each image's top-`k` texts
    and each text's top-`k` images by `similarity` (`(N_img, N_txt)`). `k` is capped at the gallery sizes."""
    texts_of_image, images_of_text = _top_k(similarity, k)
    num_images, num_texts = similarity.shape
    image_rows = torch.arange(num_images, device=similarity.device)[:, None]
    text_columns = torch.arange(num_texts, device=similarity.device)[None, :]
    pairs = torch.cat(
        [(image_rows * num_texts + texts_of_image).flatten(), (images_of_text * num_texts + text_columns).flatten()]
    )
    return pairs.unique()


@torch.no_grad()
def score_pairs(
    model,
    text_cache: TextCache,
    image_cache: ImageCache,
    pairs: torch.LongTensor,
    *,
    batch_size: int = 256,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Rank-head score of each flat pair index `image * N_txt + text`, fused in batches from the cached tokens.

    Returns `(P,)` float32 scores on the model's device. The pairs are split into `world_size` contiguous shards and
    this process scores shard `rank` (see the module docstring); with an initialised process group the shards'
    scores are all-reduced so that every rank gets all of them.
    """
    rank, world_size, reduce = _distributed_shard(rank, world_size)
    device, dtype = _model_device_dtype(model)
    num_texts = len(text_cache)
    pairs = pairs.to(device)
    scores = torch.zeros(pairs.shape[0], dtype=torch.float32, device=device)
    start, end = pairs.shape[0] * rank // world_size, pairs.shape[0] * (rank + 1) // world_size
    for batch_start in tqdm(range(start, end, batch_size), desc="Re-ranking", disable=not progress or rank != 0):
        batch = pairs[batch_start : min(batch_start + batch_size, end)]
        images, texts = (
            (batch // num_texts).to(image_cache.embeds.device),
            (batch % num_texts).to(text_cache.embeds.device),
        )
        mask = text_cache.attention_mask[texts]
        length = int(mask.any(dim=0).nonzero().max()) + 1  # trim the padding every text of the batch has
        # The pairs are sorted by image, so a batch holds few images: their image-only fusion work runs once each.
        unique_images, image_index = images.unique(return_inverse=True)
        scores[batch_start : batch_start + batch.shape[0]] = model.score_pairs(
            text_cache.embeds[texts, :length].to(device, dtype),
            image_cache.embeds[unique_images].to(device, dtype),
            mask[:, :length].to(device),
            num_frames=image_cache.num_frames,
            image_index=image_index.to(device),
        ).float()
    if reduce:
        dist.all_reduce(scores)  # every other rank contributes exact zeros to this rank's shard
    return scores


def rerank(
    model,
    text_cache: TextCache,
    image_cache: ImageCache,
    *,
    k: int = 128,
    full_ranking: bool = False,
    similarity: torch.Tensor | None = None,
    batch_size: int = 256,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two-stage scores `(scores_i2t (N_img, N_txt), scores_t2i (N_txt, N_img), number of fused pairs)`.

    Each image's top-`k` texts and each text's top-`k` images by ITC `similarity` get their rank-head score, all
    other entries `-inf`. `full_ranking=True` scores every pair with the rank head (the reference's protocol).
    """
    num_images, num_texts = len(image_cache), len(text_cache)
    device, _ = _model_device_dtype(model)
    if full_ranking:
        pairs = torch.arange(num_images * num_texts, device=device)
    else:
        if similarity is None:
            similarity = itc_similarity(text_cache, image_cache)
        pairs = candidate_pairs(similarity.to(device), k)
    scores = score_pairs(
        model,
        text_cache,
        image_cache,
        pairs,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        progress=progress,
    )
    dense = torch.full((num_images * num_texts,), float("-inf"), device=device)
    dense[pairs] = scores
    dense = dense.view(num_images, num_texts)
    if full_ranking:
        return dense, dense.t().contiguous(), pairs.shape[0]
    # A pair scored for one direction is not a candidate of the other unless it is in that direction's top-k.
    texts_of_image, images_of_text = _top_k(similarity.to(device), k)
    scores_i2t = torch.full_like(dense, float("-inf")).scatter_(1, texts_of_image, dense.gather(1, texts_of_image))
    scores_t2i = torch.full_like(dense, float("-inf")).scatter_(0, images_of_text, dense.gather(0, images_of_text))
    return scores_i2t, scores_t2i.t().contiguous(), pairs.shape[0]


def evaluate_retrieval(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    images: torch.Tensor | Iterable,
    *,
    txt2img: Sequence[int] | torch.Tensor | None = None,
    img2txt: Sequence[Sequence[int]] | None = None,
    k: int = 128,
    full_ranking: bool = False,
    text_batch_size: int = 256,
    image_batch_size: int = 64,
    pair_batch_size: int = 256,
    cache_device: torch.device | str | None = None,
    cache_dtype: torch.dtype | None = None,
    interpolate_pos_encoding: bool = False,
    ks: Sequence[int] = (1, 5, 10),
    progress: bool = True,
) -> RetrievalResult:
    """Encode a gallery, re-rank each query's ITC top-`k` (or every pair with `full_ranking`) and report recall@K.

    Args:
        model: an `SCLForImageTextRetrieval` in eval mode.
        input_ids, attention_mask: `(N_txt, L)` tokenised captions.
        images: `(N_img, 3, H, W)` images, `(N_img, F, 3, H, W)` videos, or an iterable of such batches in gallery
            order.
        txt2img / img2txt: the ground truth, as the image index of each caption or the caption indices of each
            image (several captions per image are fine); see `transformers_scl.metrics.retrieval_recall`.
        k: candidates re-ranked per query (ALBEF/BLIP use 128–256).
        full_ranking: score every pair with the rank head instead.
        cache_device / cache_dtype: where and how the unimodal tokens are cached (see the module docstring).
        ks: the K of recall@K.
        progress: show tqdm progress bars (on rank 0).
    """
    if model.training:
        raise ValueError("Call `model.eval()` first: dropout would make the retrieval scores random.")
    device, _ = _model_device_dtype(model)
    rank, _, _ = _distributed_shard(None, None)
    progress = progress and rank == 0
    timings = {}

    _synchronize(device)
    started = time.perf_counter()
    text_cache = encode_texts(
        model,
        input_ids,
        attention_mask,
        batch_size=text_batch_size,
        cache_device=cache_device,
        cache_dtype=cache_dtype,
        progress=progress,
    )
    image_cache = encode_images(
        model,
        images,
        batch_size=image_batch_size,
        cache_device=cache_device,
        cache_dtype=cache_dtype,
        interpolate_pos_encoding=interpolate_pos_encoding,
        progress=progress,
    )
    _synchronize(device)
    timings["encode"] = time.perf_counter() - started

    started = time.perf_counter()
    similarity = itc_similarity(text_cache, image_cache)
    _synchronize(device)
    timings["itc"] = time.perf_counter() - started

    started = time.perf_counter()
    scores_i2t, scores_t2i, num_pairs = rerank(
        model,
        text_cache,
        image_cache,
        k=k,
        full_ranking=full_ranking,
        similarity=similarity,
        batch_size=pair_batch_size,
        progress=progress,
    )
    _synchronize(device)
    timings["rerank"] = time.perf_counter() - started
    timings["total"] = timings["encode"] + timings["itc"] + timings["rerank"]

    truth = {"txt2img": txt2img, "img2txt": img2txt, "ks": ks}
    return RetrievalResult(
        metrics=retrieval_recall(scores_i2t, scores_t2i=scores_t2i, **truth),
        itc_metrics=retrieval_recall(similarity, **truth),
        scores_i2t=scores_i2t,
        scores_t2i=scores_t2i,
        itc_scores=similarity,
        num_pairs=num_pairs,
        timings=timings,
    )


@torch.no_grad()
def zero_shot_recall(
    model,
    dataset,
    tokenizer,
    *,
    id_column: str = "image_id",
    caption_column: str = "caption",
    batch_size: int = 64,
    max_length: int = 50,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Zero-shot ITC retrieval recall on a held-out caption data set (cosine of the projected unimodal CLS features,
    spec §2.3; no re-ranking), as pre-training evaluates it.

    Args:
        model: an SCL model with `get_text_features` and `get_image_features` / `get_video_features` (unwrapped).
        dataset: a `datasets.Dataset` of (image or video, caption) rows whose format yields processed examples
            (e.g. `MediaTextTransform(...).apply_to(pairs)`); rows sharing `id_column` show the same image/video.
        tokenizer: tokenises the `caption_column` (truncated to `max_length`).
        batch_size: texts and images per forward pass.

    Returns:
        `i2t_r{k}` (image → text) and `t2i_r{k}` (text → image) recall@k in percent for each `k` in `ks`, every
        caption of an image counted as correct, and `num_candidates`, the number of images/videos.
    """
    raw = dataset.with_format(None)  # only the id and caption columns: no decoding
    text_to_image, image_to_texts, _ = caption_groups(raw[id_column])
    tokens = tokenizer(
        list(raw[caption_column]), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    gallery = dataset.select([rows[0] for rows in image_to_texts])  # one row per image / video
    collator = SCLDataCollator(tokenizer, label_names=())
    texts = encode_texts(model, tokens["input_ids"], tokens["attention_mask"], batch_size=batch_size)
    images = encode_images(model, DataLoader(gallery, batch_size=batch_size, collate_fn=collator))
    with torch.autocast(texts.features.device.type, enabled=False):  # float32 scores under a caller's autocast
        similarity = itc_similarity(texts, images).cpu()
    recall = retrieval_recall(similarity, txt2img=text_to_image, ks=ks)
    metrics = {"num_candidates": len(image_to_texts)}
    for k in ks:
        metrics[f"i2t_r{k}"] = recall[f"txt_r{k}"]  # image → text ("text retrieval")
        metrics[f"t2i_r{k}"] = recall[f"img_r{k}"]  # text → image ("image retrieval")
    return metrics


__all__ = [
    "ImageCache",
    "RetrievalResult",
    "TextCache",
    "candidate_pairs",
    "encode_images",
    "encode_texts",
    "evaluate_retrieval",
    "itc_similarity",
    "rerank",
    "score_pairs",
    "zero_shot_recall",
]
