"""Two-stage retrieval (`transformers_scl.retrieval`): ITC top-k candidates, rank-head re-ranking, recall."""

import pytest
import torch
from conftest import tiny_config
from datasets import Dataset
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from transformers_scl.modeling_scl import SCLForImageTextRetrieval
from transformers_scl.retrieval import (
    candidate_pairs,
    encode_images,
    encode_texts,
    evaluate_retrieval,
    score_pairs,
    zero_shot_recall,
)

INF = float("inf")
# ITC similarity (image x text) and rank-head scores of a 3-image, 6-caption gallery; captions 2i, 2i+1 show image i.
ITC = torch.tensor(
    [
        [0.90, 0.10, 0.80, 0.00, 0.20, 0.30],
        [0.10, 0.20, 0.30, 0.90, 0.70, 0.05],
        [0.05, 0.15, 0.20, 0.35, 0.90, 0.80],
    ]
)
RANK = torch.tensor(
    [
        [1.0, 5.0, 2.0, 0.0, 0.0, 3.0],
        [4.0, 0.5, 0.0, 1.0, 3.0, 0.0],
        [0.0, 2.0, 0.0, 6.0, 1.0, 0.5],
    ]
)
TXT2IMG = torch.tensor([0, 0, 1, 1, 2, 2])


class KnownScoresModel(nn.Module):
    """Stands in for `SCLForImageTextRetrieval` with fixed ITC and rank scores.

    Text i is `input_ids` `[i, i, i]` and image j a `(1, 1, 1)` tensor holding j; their "tokens" carry the index, the
    ITC features reproduce `ITC` (one-hot images against `ITC`'s columns) and `score_pairs` looks `RANK` up.
    """

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device and dtype

    def get_text_features(self, input_ids, attention_mask=None):
        return BaseModelOutputWithPooling(
            last_hidden_state=input_ids[..., None].float(), pooler_output=ITC.t()[input_ids[:, 0]]
        )

    def get_image_features(self, pixel_values, interpolate_pos_encoding=False):
        index = pixel_values[:, 0, 0, 0].long()
        return BaseModelOutputWithPooling(
            last_hidden_state=pixel_values[:, 0, 0, :, None].expand(-1, 2, 1), pooler_output=torch.eye(3)[index]
        )

    def score_pairs(self, text_embeds, image_embeds, attention_mask=None, num_frames=1, image_index=None):
        if image_index is not None:
            image_embeds = image_embeds[image_index]
        return RANK[image_embeds[:, 0, 0].long(), text_embeds[:, 0, 0].long()]


def known_gallery():
    input_ids = torch.arange(6)[:, None].expand(-1, 3).contiguous()
    pixel_values = torch.arange(3, dtype=torch.float)[:, None, None, None]
    return input_ids, torch.ones_like(input_ids), pixel_values


def evaluate_known(**kwargs):
    input_ids, attention_mask, pixel_values = known_gallery()
    return evaluate_retrieval(
        KnownScoresModel().eval(), input_ids, attention_mask, pixel_values, txt2img=TXT2IMG, ks=(1, 2), **kwargs
    )


def test_each_query_keeps_the_rank_scores_of_its_itc_top_k_and_minus_infinity_elsewhere():
    result = evaluate_known(k=2, progress=False)
    expected_i2t = torch.tensor(
        [
            [1.0, -INF, 2.0, -INF, -INF, -INF],  # image 0: texts 0 and 2 are its ITC top-2
            [-INF, -INF, -INF, 1.0, 3.0, -INF],
            [-INF, -INF, -INF, -INF, 1.0, 0.5],
        ]
    )
    expected_t2i = torch.tensor(
        [
            [1.0, 4.0, -INF],  # text 0: images 0 and 1 are its ITC top-2
            [-INF, 0.5, 2.0],
            [2.0, 0.0, -INF],
            [-INF, 1.0, 6.0],
            [-INF, 3.0, 1.0],
            [3.0, -INF, 0.5],
        ]
    )
    torch.testing.assert_close(result.scores_i2t, expected_i2t)
    torch.testing.assert_close(result.scores_t2i, expected_t2i)


def test_two_stage_recall_from_known_itc_and_rank_scores():
    metrics = evaluate_known(k=2, progress=False).metrics
    # image→text: image 2's best candidate is its own caption; images 0 and 1 rank another image's caption first.
    assert metrics["txt_r1"] == pytest.approx(100 / 3)
    assert metrics["txt_r2"] == pytest.approx(100.0)
    # text→image: every caption's top candidate is another image; caption 1 lost its image in the ITC stage (rank 2).
    assert metrics["img_r1"] == pytest.approx(0.0)
    assert metrics["img_r2"] == pytest.approx(500 / 6)


def test_full_ranking_recall_from_known_rank_scores():
    result = evaluate_known(full_ranking=True, progress=False)
    torch.testing.assert_close(result.scores_i2t, RANK)
    torch.testing.assert_close(result.scores_t2i, RANK.t())
    assert result.num_pairs == 18
    assert result.metrics["txt_r1"] == pytest.approx(100 / 3)  # only image 0 ranks a caption of its own first
    assert result.metrics["txt_r2"] == pytest.approx(100 / 3)
    assert result.itc_metrics["txt_r1"] == pytest.approx(100.0)  # ITC alone ranks an own caption first everywhere


def test_candidate_pairs_are_the_union_of_both_directions_each_fused_once():
    pairs = candidate_pairs(ITC, k=2)
    image_to_text = {(0, 0), (0, 2), (1, 3), (1, 4), (2, 4), (2, 5)}
    text_to_image = {(0, 0), (1, 0), (1, 1), (2, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (1, 4), (2, 5), (0, 5)}
    assert sorted(pairs.tolist()) == sorted(image * 6 + text for image, text in image_to_text | text_to_image)
    assert evaluate_known(k=2, progress=False).num_pairs == len(image_to_text | text_to_image)


def test_k_is_capped_at_the_gallery_size():
    assert candidate_pairs(ITC, k=100).tolist() == list(range(18))
    with pytest.raises(ValueError, match="at least 1"):
        candidate_pairs(ITC, k=0)


# -- with a real (tiny) SCL model --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SCLForImageTextRetrieval(tiny_config()).eval()


@pytest.fixture(scope="module")
def gallery():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 400, (10, 8), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[::3, 5:] = 0  # texts of different lengths
    pixel_values = torch.randn(5, 3, 32, 32, generator=generator)
    return input_ids, attention_mask, pixel_values, torch.arange(10) // 2


def test_two_stage_with_k_at_least_the_gallery_equals_full_ranking_exactly(model, gallery):
    input_ids, attention_mask, pixel_values, txt2img = gallery
    common = dict(txt2img=txt2img, pair_batch_size=7, progress=False)
    full = evaluate_retrieval(model, input_ids, attention_mask, pixel_values, full_ranking=True, **common)
    two_stage = evaluate_retrieval(model, input_ids, attention_mask, pixel_values, k=10, **common)
    assert torch.equal(two_stage.scores_i2t, full.scores_i2t)
    assert torch.equal(two_stage.scores_t2i, full.scores_t2i)
    assert two_stage.metrics == full.metrics
    assert torch.isfinite(full.scores_i2t).all()


def test_rank_scores_of_the_cache_equal_those_of_forward(model, gallery):
    input_ids, attention_mask, pixel_values, txt2img = gallery
    result = evaluate_retrieval(
        model, input_ids, attention_mask, pixel_values, txt2img=txt2img, full_ranking=True, progress=False
    )
    texts = torch.tensor([0, 2, 4, 6, 8])
    with torch.no_grad():
        paired = model(input_ids=input_ids[texts], attention_mask=attention_mask[texts], pixel_values=pixel_values)
    torch.testing.assert_close(result.scores_i2t[torch.arange(5), texts], paired.logits[:, 0])


def test_sharded_re_ranking_sums_to_the_single_process_scores(model, gallery):
    input_ids, attention_mask, pixel_values, _ = gallery
    texts = encode_texts(model, input_ids, attention_mask)
    images = encode_images(model, pixel_values)
    pairs = torch.arange(50)
    single = score_pairs(model, texts, images, pairs, batch_size=8)
    shards = [score_pairs(model, texts, images, pairs, batch_size=8, rank=rank, world_size=3) for rank in range(3)]
    bounds = [(0, 16), (16, 33), (33, 50)]
    for shard, (start, end) in zip(shards, bounds):
        assert torch.count_nonzero(shard[:start]) == 0 and torch.count_nonzero(shard[end:]) == 0
        assert torch.count_nonzero(shard[start:end]) == end - start
    torch.testing.assert_close(sum(shards), single)


def test_a_half_precision_cache_on_cpu_keeps_the_scores_close(model, gallery):
    input_ids, attention_mask, pixel_values, txt2img = gallery
    texts = encode_texts(model, input_ids, attention_mask, cache_device="cpu", cache_dtype=torch.float16)
    images = encode_images(model, pixel_values, cache_device="cpu", cache_dtype=torch.float16)
    assert texts.embeds.dtype == images.embeds.dtype == torch.float16
    assert texts.features.dtype == torch.float32
    pairs = torch.arange(50)
    half = score_pairs(model, texts, images, pairs)
    full = score_pairs(
        model, encode_texts(model, input_ids, attention_mask), encode_images(model, pixel_values), pairs
    )
    torch.testing.assert_close(half, full, atol=2e-3, rtol=0)


def test_a_video_gallery_can_come_in_batches_of_dicts(model):
    videos = torch.randn(3, 4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    batches = [{"pixel_values_videos": videos[:2]}, {"pixel_values_videos": videos[2:]}]
    streamed = encode_images(model, batches)
    at_once = encode_images(model, videos, batch_size=3)
    assert streamed.num_frames == 4 and streamed.embeds.shape == (3, 4 * 17, 32)
    torch.testing.assert_close(streamed.features, at_once.features)
    torch.testing.assert_close(streamed.embeds, at_once.embeds)


def test_video_retrieval_runs_two_stage(model):
    generator = torch.Generator().manual_seed(3)
    videos = torch.randn(3, 2, 3, 32, 32, generator=generator)
    input_ids = torch.randint(5, 400, (6, 6), generator=generator)
    result = evaluate_retrieval(model, input_ids, None, videos, img2txt=[[0, 1], [2, 3], [4, 5]], k=2, progress=False)
    assert result.scores_i2t.shape == (3, 6) and result.scores_t2i.shape == (6, 3)
    assert (torch.isfinite(result.scores_i2t).sum(dim=1) == 2).all()
    assert set(result.timings) == {"encode", "itc", "rerank", "total"}


def test_evaluation_refuses_a_model_in_training_mode(gallery):
    input_ids, attention_mask, pixel_values, txt2img = gallery
    with pytest.raises(ValueError, match="eval"):
        evaluate_retrieval(
            SCLForImageTextRetrieval(tiny_config()), input_ids, attention_mask, pixel_values, txt2img=txt2img
        )


@pytest.mark.slow
def test_two_ranks_shard_the_re_ranking_and_return_the_single_process_scores(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from retrieval_worker import build

    out = tmp_path / "scores"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*command, str(Path(__file__).parent / "retrieval_worker.py"), str(out)],
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model, input_ids, attention_mask, pixel_values, txt2img = build()
    with torch.no_grad():
        single = evaluate_retrieval(
            model, input_ids, attention_mask, pixel_values, txt2img=txt2img, k=3, pair_batch_size=4, progress=False
        )
    for rank in (0, 1):
        shard = torch.load(f"{out}.rank{rank}")
        torch.testing.assert_close(shard["scores_i2t"], single.scores_i2t)
        torch.testing.assert_close(shard["scores_t2i"], single.scores_t2i)
        assert shard["metrics"] == pytest.approx(single.metrics)


class DigitTokenizer:
    """Caption "i" is text i of `KnownScoresModel`: `input_ids` `[i, i, i]`."""

    pad_token_id = 0

    def __call__(self, texts, max_length=None, return_tensors=None, **kwargs):
        assert max_length == 7 and return_tensors == "pt"
        input_ids = torch.tensor([[int(text)] * 3 for text in texts])
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def test_zero_shot_recall_scores_itc_in_both_directions_with_every_caption_of_an_image_correct():
    # The known gallery's captions in another row order: the rows of an image need not be adjacent.
    captions, image_ids = ["0", "2", "1", "3", "4", "5"], [0, 1, 0, 1, 2, 2]
    dataset = Dataset.from_dict({"caption": captions, "image_id": image_ids}).with_transform(
        lambda batch: {
            "input_ids": [[int(caption)] * 3 for caption in batch["caption"]],
            "pixel_values": [torch.full((1, 1, 1), float(image)) for image in batch["image_id"]],
        }
    )
    recall = zero_shot_recall(KnownScoresModel(), dataset, DigitTokenizer(), batch_size=2, max_length=7, ks=(1, 5))
    # Every image's most similar caption (ITC rows) is one of its own; captions 1 and 2 (columns) prefer another image.
    assert recall == pytest.approx(
        {"num_candidates": 3, "i2t_r1": 100.0, "t2i_r1": 400 / 6, "i2t_r5": 100.0, "t2i_r5": 100.0}
    )
