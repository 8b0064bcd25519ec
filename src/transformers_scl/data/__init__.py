"""Data for SCL: loaders, the example transform, collators, modality-grouped batching and synthetic data.

A typical pipeline::

    pairs = load_karpathy_captions("dataset_coco.json", "coco/images", split=("train", "restval"))
    transform = MediaTextTransform(processor)           # tokenize + decode/process, skip-and-count bad files
    train_data = transform.apply_to(pairs)
    collator = SCLPretrainingCollator(processor.tokenizer, seed=0)
    batch = collator([train_data[i] for i in range(8)])  # input_ids, attention_mask, pixel_values, mlm_*, mlsc_*

With `Trainer`, pass the transformed data set and the collator, and set `remove_unused_columns=False`: the columns of
a lazily transformed data set are not the model's arguments, and the collator already keeps only what the model takes.
Add `SkipReportCallback(transform.skip_counter)` to log how many examples were skipped.
"""

from .captions import split_off_held_out, train_caption_tokenizer, truncate, unique_captions
from .collators import SCLDataCollator, SCLPretrainingCollator, SCLVQACollator
from .loaders import (
    caption_groups,
    image_text_pairs,
    load_caption_pairs,
    load_image_text_folder,
    load_karpathy_captions,
    load_video_text_folder,
    video_text_pairs,
)
from .preprocess import MediaTextTransform, PretrainingDatasets, SkipCounter, SkipReportCallback, decode_image
from .samplers import (
    ModalityGroupedBatchSampler,
    RankSlicedBatchSampler,
    SeededBatchSampler,
    SeededDataset,
    seeded_rank_batch_sampler,
)
from .synthetic import (
    SYNTHETIC_VQA_ANSWERS,
    make_synthetic_image_text,
    make_synthetic_pairs,
    make_synthetic_splits,
    make_synthetic_video_text,
    make_synthetic_vqa,
    render_image,
    render_video,
    write_synthetic_images,
    write_synthetic_videos,
)
from .vqa import answer_vocabulary, build_answer_vocabulary, load_vqa, vqa_answer_features, vqa_soft_score

__all__ = [
    "SYNTHETIC_VQA_ANSWERS",
    "MediaTextTransform",
    "ModalityGroupedBatchSampler",
    "PretrainingDatasets",
    "RankSlicedBatchSampler",
    "SCLDataCollator",
    "SCLPretrainingCollator",
    "SCLVQACollator",
    "SeededBatchSampler",
    "SeededDataset",
    "SkipCounter",
    "SkipReportCallback",
    "answer_vocabulary",
    "build_answer_vocabulary",
    "caption_groups",
    "decode_image",
    "image_text_pairs",
    "load_caption_pairs",
    "load_image_text_folder",
    "load_karpathy_captions",
    "load_video_text_folder",
    "load_vqa",
    "make_synthetic_image_text",
    "make_synthetic_pairs",
    "make_synthetic_splits",
    "make_synthetic_video_text",
    "make_synthetic_vqa",
    "render_image",
    "render_video",
    "seeded_rank_batch_sampler",
    "split_off_held_out",
    "train_caption_tokenizer",
    "truncate",
    "unique_captions",
    "video_text_pairs",
    "vqa_answer_features",
    "vqa_soft_score",
    "write_synthetic_images",
    "write_synthetic_videos",
]
