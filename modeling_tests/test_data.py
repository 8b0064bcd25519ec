"""Loaders, the example transform with skip-and-count, collators and modality-grouped batching."""

import json
import logging
import os

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import tiny_config
from datasets import Dataset, IterableDataset
from torch.utils.data import ConcatDataset, DataLoader

from transformers_scl.data import (
    MediaTextTransform,
    ModalityGroupedBatchSampler,
    PretrainingDatasets,
    SCLDataCollator,
    SCLPretrainingCollator,
    SCLVQACollator,
    SeededBatchSampler,
    SeededDataset,
    SkipCounter,
    SkipReportCallback,
    answer_vocabulary,
    build_answer_vocabulary,
    caption_groups,
    decode_image,
    image_text_pairs,
    load_caption_pairs,
    load_image_text_folder,
    load_karpathy_captions,
    load_video_text_folder,
    load_vqa,
    make_synthetic_image_text,
    make_synthetic_pairs,
    make_synthetic_video_text,
    make_synthetic_vqa,
    render_video,
    seeded_rank_batch_sampler,
    train_caption_tokenizer,
    truncate,
    unique_captions,
    video_text_pairs,
    vqa_soft_score,
    write_synthetic_images,
    write_synthetic_videos,
)
from transformers_scl.data.synthetic import COLORS
from transformers_scl.image_processing_scl import SCLImageProcessor
from transformers_scl.modeling_scl import SCLForPreTraining
from transformers_scl.processing_scl import SCLProcessor
from transformers_scl.video_processing_scl import SCLVideoProcessor, decode_video

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def scenes():
    """Six synthetic scenes with two paraphrased captions each."""
    return make_synthetic_image_text(6, seed=0, captions_per_image=2)


@pytest.fixture(scope="module")
def image_folder(scenes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    write_synthetic_images(scenes, folder)
    return folder


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_synthetic_videos(make_synthetic_video_text(3, seed=0), folder)
    return folder


@pytest.fixture
def processor(tokenizer):
    return SCLProcessor(
        SCLImageProcessor(size=IMAGE_SIZE), SCLVideoProcessor(size=IMAGE_SIZE, num_frames=4), tokenizer
    )


@pytest.fixture
def cache_dir(tmp_path):
    return str(tmp_path / "hf_cache")  # keep the `datasets` cache of these tests out of the user's home


def rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def write_json(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


# -------------------------------------------------------------------------------------------- caption pairs


def test_caption_lists_become_one_row_per_caption_sharing_the_image_id(scenes):
    pairs = image_text_pairs(scenes.select(range(3)))
    assert len(pairs) == 6
    assert pairs["image_id"] == [0, 0, 1, 1, 2, 2]
    assert pairs["caption"] == [caption for captions in scenes["caption"][:3] for caption in captions]
    assert np.array_equal(np.array(pairs[1]["image"]), np.array(scenes[0]["image"]))  # still a decodable image


def test_string_captions_keep_their_row_and_get_the_row_index_as_image_id():
    data = Dataset.from_dict({"picture": ["a.png", "b.png"], "text": [" a dog ", "a cat"]})
    pairs = image_text_pairs(data, image_column="picture", caption_column="text")
    assert rows(pairs) == [
        {"image": "a.png", "caption": "a dog", "image_id": 0},
        {"image": "b.png", "caption": "a cat", "image_id": 1},
    ]


def test_an_id_column_becomes_the_group_key_and_rows_without_captions_are_dropped():
    data = Dataset.from_dict({"video": ["x.mp4", "y.mp4"], "caption": [["up", "rising"], []], "clip": ["c7", "c9"]})
    pairs = video_text_pairs(data, id_column="clip")
    assert rows(pairs) == [
        {"video": "x.mp4", "caption": "up", "video_id": "c7"},
        {"video": "x.mp4", "caption": "rising", "video_id": "c7"},
    ]


def test_a_missing_column_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"\['caption'\] not found.*available columns: \['image', 'text'\]"):
        image_text_pairs(Dataset.from_dict({"image": ["a.png"], "text": ["a"]}))


def test_a_caption_that_is_not_text_is_rejected():
    with pytest.raises(TypeError, match="caption must be a string or a list of strings"):
        image_text_pairs(Dataset.from_dict({"image": ["a.png"], "caption": [[1, 2]]}))


def test_streaming_data_gives_the_same_pairs_as_map_style_data(scenes):
    expected = image_text_pairs(scenes)
    streamed = image_text_pairs(scenes.to_iterable_dataset())
    assert isinstance(streamed, IterableDataset)
    streamed_rows = list(streamed)
    assert [r["caption"] for r in streamed_rows] == expected["caption"]
    assert [r["image_id"] for r in streamed_rows] == expected["image_id"]
    # streamed images stay encoded until MediaTextTransform decodes them (and skips unreadable ones)
    assert np.array_equal(np.array(decode_image(streamed_rows[3]["image"])), np.array(expected[3]["image"]))


def test_streaming_from_a_generator_without_known_columns():
    def generate():
        yield {"image": "a.png", "caption": ["one", "two"]}
        yield {"image": "b.png", "caption": "three"}

    pairs = image_text_pairs(IterableDataset.from_generator(generate))
    assert [(r["caption"], r["image_id"]) for r in pairs] == [("one", 0), ("two", 0), ("three", 1)]


def test_caption_groups_map_captions_to_images_and_back():
    text_to_image, image_to_texts, image_ids = caption_groups([7, 7, 3, 7, 3, 9])
    assert text_to_image == [0, 0, 1, 0, 1, 2]
    assert image_to_texts == [[0, 1, 3], [2, 4], [5]]
    assert image_ids == [7, 3, 9]


# ------------------------------------------------------------------------------------------------- folders


def test_image_folder_with_metadata_jsonl_round_trips_images_and_captions(scenes, image_folder, cache_dir):
    pairs = load_image_text_folder(image_folder, cache_dir=cache_dir)
    assert len(pairs) == 12
    assert pairs["caption"][:2] == scenes[0]["caption"]
    assert pairs["image_id"][:4] == [0, 0, 1, 1]
    for row in (0, 5, 11):
        original = np.array(scenes[pairs[row]["image_id"]]["image"])
        assert np.array_equal(np.array(pairs[row]["image"]), original)  # PNG files are lossless


def test_jpeg_image_folder_decodes_to_the_drawn_colours(scenes, tmp_path, cache_dir):
    write_synthetic_images(scenes.select(range(2)), tmp_path, image_format="jpeg")
    pairs = load_image_text_folder(tmp_path, cache_dir=cache_dir)
    assert sorted(os.listdir(tmp_path))[:2] == ["000000.jpg", "000001.jpg"]
    obj = scenes[0]["objects"][0]
    pixel = np.array(pairs[0]["image"])[obj["y"], obj["x"]].astype(int)
    assert np.abs(pixel - COLORS[obj["color"]]).max() < 30  # lossy, but the shape keeps its colour


def test_image_folder_reads_the_metadata_of_a_split_subfolder(scenes, tmp_path, cache_dir):
    write_synthetic_images(scenes.select(range(2)), tmp_path / "validation")
    pairs = load_image_text_folder(tmp_path, split="validation", cache_dir=cache_dir)
    assert pairs["image_id"] == [0, 0, 1, 1]


def test_streaming_image_folder_yields_paths_in_the_same_order(image_folder, cache_dir):
    streamed = list(load_image_text_folder(image_folder, streaming=True))
    expected = load_image_text_folder(image_folder, cache_dir=cache_dir)
    assert [r["caption"] for r in streamed] == expected["caption"]
    assert streamed[0]["image"] == str(image_folder / "000000.png")


def test_folder_without_metadata_is_reported_with_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"No metadata.jsonl in {tmp_path}"):
        load_image_text_folder(tmp_path)


def test_video_folder_gives_video_paths_and_captions(video_folder, cache_dir):
    pairs = load_video_text_folder(video_folder, cache_dir=cache_dir)
    assert pairs.column_names == ["caption", "video_id", "direction", "video"]
    assert pairs["video"] == [str(video_folder / f"00000{i}.mp4") for i in range(3)]
    assert all(caption.endswith(direction) for caption, direction in zip(pairs["caption"], pairs["direction"]))


# ----------------------------------------------------------------------------------------------- Karpathy


@pytest.fixture(scope="module")
def karpathy_coco(scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    images = []
    for index, (subset, split) in enumerate([("train2014", "train"), ("val2014", "restval"), ("val2014", "test")]):
        (root / subset).mkdir(exist_ok=True)
        filename = f"COCO_{subset}_{index:012d}.jpg"
        scenes[index]["image"].save(root / subset / filename)
        sentences = [{"raw": caption, "tokens": caption.split()} for caption in scenes[index]["caption"]]
        images.append(
            {"filepath": subset, "filename": filename, "imgid": index, "split": split, "sentences": sentences}
        )
    return write_json(root / "dataset_coco.json", {"images": images, "dataset": "coco"}), root


def test_karpathy_coco_selects_splits_and_joins_filepath_and_filename(karpathy_coco, scenes):
    annotation_file, root = karpathy_coco
    train = load_karpathy_captions(annotation_file, root, split=("train", "restval"))
    assert train["image_id"] == [0, 0, 1, 1]
    assert train["caption"] == scenes["caption"][0] + scenes["caption"][1]
    assert train[2]["image"].size == (64, 64)
    test = load_karpathy_captions(annotation_file, root, split="test")
    assert test["image_id"] == [2, 2]
    assert test.cast_column("image", test.features["image"].__class__(decode=False))[0]["image"]["path"] == str(
        root / "val2014" / "COCO_val2014_000000000002.jpg"
    )


def test_karpathy_flickr_images_live_directly_under_the_image_root(scenes, tmp_path):
    scenes[0]["image"].save(tmp_path / "1000092795.jpg")
    record = {"filename": "1000092795.jpg", "split": "test", "sentences": [{"raw": "Two dogs play ."}]}
    annotation_file = write_json(tmp_path / "dataset_flickr30k.json", {"images": [record], "dataset": "flickr30k"})
    pairs = load_karpathy_captions(annotation_file, tmp_path, split="test")
    assert rows(pairs.cast_column("image", pairs.features["image"].__class__(decode=False))) == [
        {
            "image": {"bytes": None, "path": str(tmp_path / "1000092795.jpg")},
            "caption": "Two dogs play .",
            "image_id": 0,
        }
    ]


def test_karpathy_streaming_yields_the_same_pairs(karpathy_coco):
    annotation_file, root = karpathy_coco
    streamed = load_karpathy_captions(annotation_file, root, split="train", streaming=True)
    assert isinstance(streamed, IterableDataset)
    assert [r["image_id"] for r in streamed] == [0, 0]


def test_karpathy_rejects_unknown_and_absent_splits(karpathy_coco, tmp_path):
    annotation_file, root = karpathy_coco
    with pytest.raises(ValueError, match="Unknown Karpathy split"):
        load_karpathy_captions(annotation_file, root, split="validation")
    flickr = write_json(tmp_path / "f.json", {"images": [{"filename": "a.jpg", "split": "test", "sentences": []}]})
    with pytest.raises(ValueError, match=r"No image of split\(s\) \['restval'\].*its splits are \['test'\]"):
        load_karpathy_captions(flickr, tmp_path, split="restval")


# ---------------------------------------------------------------------------------------------------- VQA


def vqa_record(question_id, image_id, answers, answer_type="other"):
    majority = max(set(answers), key=answers.count)
    return {
        "question_id": question_id,
        "image_id": image_id,
        "answer_type": answer_type,
        "multiple_choice_answer": majority,
        "answers": [
            {"answer": answer, "answer_confidence": "yes", "answer_id": i + 1} for i, answer in enumerate(answers)
        ],
    }


@pytest.fixture
def vqa_files(scenes, tmp_path):
    """Three questions on two COCO-named synthetic images, in the VQAv2 file format."""
    for image_id in (1, 2):
        scenes[image_id]["image"].save(tmp_path / f"COCO_val2014_{image_id:012d}.jpg")
    questions = {
        "data_subtype": "val2014",
        "questions": [
            {"question_id": 10, "image_id": 1, "question": "What color is the circle?"},
            {"question_id": 11, "image_id": 1, "question": "How many shapes are there?"},
            {"question_id": 20, "image_id": 2, "question": "Is there a square?"},
        ],
    }
    annotations = {
        "annotations": [
            vqa_record(10, 1, ["Red"] * 6 + ["orange"] * 3 + ["pink"]),
            vqa_record(11, 1, ["two"] * 9 + ["3"], "number"),
            vqa_record(20, 2, ["yes"] * 8 + ["no"] * 2, "yes/no"),
        ]
    }
    return write_json(tmp_path / "questions.json", questions), write_json(tmp_path / "annotations.json", annotations)


def test_soft_scores_are_the_official_accuracy_of_an_answer():
    assert [round(vqa_soft_score(count), 6) for count in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    assert [vqa_soft_score(count, leave_one_out=False) for count in (1, 2, 3, 4)] == [1 / 3, 2 / 3, 1.0, 1.0]


def test_answer_vocabulary_keeps_normalized_majority_answers_seen_min_count_times():
    annotations = [
        {"multiple_choice_answer": answer} for answer in ["Yes", "no", "yes", "two", "2", "cat", "yes.", "no", "dog"]
    ]
    assert build_answer_vocabulary(annotations, min_count=2) == ["yes", "no", "2"]  # in order of first occurrence
    assert build_answer_vocabulary(annotations, min_count=3) == ["yes"]


def test_vqa_loader_gives_questions_images_and_soft_score_targets(vqa_files, tmp_path):
    questions_file, annotations_file = vqa_files
    data = load_vqa(questions_file, annotations_file, image_root=tmp_path, min_answer_count=1)
    vocabulary = answer_vocabulary(data)
    assert vocabulary == ["red", "2", "yes"]
    first = data[0]
    assert first["question"] == "What color is the circle?" and first["image_id"] == 1
    assert first["answers"][:7] == ["red"] * 6 + ["orange"]
    assert first["answer_ids"] == [0] and first["answer_scores"] == [1.0]  # orange/pink are not in the vocabulary
    assert data[1]["answer_ids"] == [1] and data[1]["answer_scores"] == [1.0]  # "two" normalizes to "2"
    assert data["answer_type"] == ["other", "number", "yes/no"]
    assert first["image"].size == (64, 64)


def test_validation_questions_use_the_training_vocabulary(vqa_files):
    questions_file, annotations_file = vqa_files
    data = load_vqa(questions_file, annotations_file, answer_vocabulary=["no", "orange", "red", "yes"])
    assert data[0]["answer_ids"] == [1, 2]
    assert data[0]["answer_scores"] == pytest.approx([0.9, 1.0])
    assert data[2]["answer_ids"] == [0, 3] and data[2]["answer_scores"] == pytest.approx([0.6, 1.0])
    assert "image" not in data.column_names


def test_test_questions_without_answers_need_a_vocabulary(vqa_files):
    questions_file, _ = vqa_files
    with pytest.raises(ValueError, match="answer_vocabulary"):
        load_vqa(questions_file)
    data = load_vqa(questions_file, answer_vocabulary=["yes"])
    assert data["answer_ids"] == [[], [], []] and data["answers"] == [[], [], []]


def test_questions_and_annotations_of_different_splits_are_rejected(vqa_files, tmp_path):
    questions_file, _ = vqa_files
    other = write_json(tmp_path / "other.json", {"annotations": [vqa_record(99, 5, ["no"] * 10)]})
    with pytest.raises(ValueError, match="3 questions .* have no annotation"):
        load_vqa(questions_file, other)


def test_vqa_streaming_keeps_the_answer_vocabulary(vqa_files):
    questions_file, annotations_file = vqa_files
    data = load_vqa(questions_file, annotations_file, min_answer_count=1, streaming=True)
    assert isinstance(data, IterableDataset)
    assert answer_vocabulary(data) == ["red", "2", "yes"]
    assert [row["answer_ids"] for row in data] == [[0], [1], [2]]


# ---------------------------------------------------------------------------------------- example transform


def test_transform_turns_image_caption_rows_into_model_inputs(scenes, processor, tokenizer):
    transform = MediaTextTransform(processor)
    data = transform.apply_to(image_text_pairs(scenes))
    example = data[0]
    assert example["input_ids"] == tokenizer(scenes[0]["caption"][0])["input_ids"]  # truncated, not padded
    assert example["pixel_values"].shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert example["image_id"] == 0 and "image" not in example
    assert transform.skip_counter.seen == 1 and transform.skip_counter.skipped == 0


def test_transform_accepts_a_plain_callable_for_images(scenes, tokenizer):
    transform = MediaTextTransform(
        tokenizer=tokenizer, image_transform=lambda image: torch.from_numpy(np.array(image)).permute(2, 0, 1)
    )
    example = transform.apply_to(image_text_pairs(scenes))[0]
    assert torch.equal(example["pixel_values"], torch.from_numpy(np.array(scenes[0]["image"])).permute(2, 0, 1))


def test_transform_truncates_text_to_max_length(scenes, processor):
    example = MediaTextTransform(processor, max_length=5).apply_to(image_text_pairs(scenes))[0]
    assert len(example["input_ids"]) == 5 and example["input_ids"][-1] == 2  # still ends with </s>


def test_transform_rejects_a_pixel_transform_of_the_wrong_layout(scenes, tokenizer):
    transform = MediaTextTransform(tokenizer=tokenizer, image_transform=lambda image: torch.zeros(IMAGE_SIZE, 3))
    with pytest.raises(ValueError, match=r"returned shape \(32, 3\), expected \(3, H, W\)"):
        transform.apply_to(image_text_pairs(scenes))[0]


def test_transform_needs_a_tokenizer_and_a_pixel_transform(tokenizer):
    with pytest.raises(ValueError, match="needs a `tokenizer`"):
        MediaTextTransform(image_transform=lambda image: image)
    with pytest.raises(ValueError, match="needs `video_transform`"):
        MediaTextTransform(tokenizer=tokenizer, modality="video")


def test_transform_decodes_and_samples_real_video_files(video_folder, processor, cache_dir):
    data = MediaTextTransform(processor, modality="video").apply_to(
        load_video_text_folder(video_folder, cache_dir=cache_dir)
    )
    batch = SCLDataCollator(processor.tokenizer)([data[i] for i in range(3)])
    assert batch["pixel_values_videos"].shape == (3, 4, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_written_video_files_show_the_captioned_motion(video_folder):
    clips = make_synthetic_video_text(3, seed=0)
    shifts = {"up": (-1, 0), "down": (1, 0), "left": (-1, 1), "right": (1, 1)}
    for example in clips:
        frames, _ = decode_video(str(video_folder / f"{example['video_id']:06d}.mp4"))
        frames = frames.permute(0, 2, 3, 1).numpy().astype(int)
        assert len(frames) == 8
        assert np.abs(frames - render_video(example)).mean() < 3  # near-lossless H.264

        def error(direction, frames=frames, step=example["step"]):  # how well a shifted frame t predicts t + 1
            sign, axis = shifts[direction]
            return sum(np.abs(np.roll(frames[t], sign * step, axis) - frames[t + 1]).sum() for t in range(7))

        assert min(shifts, key=error) == example["direction"]


def test_avi_container_is_written_and_decoded(tmp_path):
    write_synthetic_videos(make_synthetic_video_text(1, seed=1), tmp_path, container="avi")
    frames, _ = decode_video(str(tmp_path / "000000.avi"))
    assert frames.shape == (8, 3, 64, 64)


def test_synthetic_clips_are_rendered_lazily_through_load_media(processor):
    transform = MediaTextTransform(processor, modality="video", load_media=render_video)
    example = transform.apply_to(make_synthetic_video_text(2, seed=0))[1]
    assert example["pixel_values_videos"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert example["direction"] in example["caption"]


# -------------------------------------------------------------------------------------------- skip and count


@pytest.fixture
def folder_with_bad_files(scenes, tmp_path):
    """Six good PNGs, one file that is not an image, one truncated PNG and one missing file."""
    write_synthetic_images(scenes.select(range(6)), tmp_path)
    (tmp_path / "not_an_image.png").write_text("this is text")
    good = (tmp_path / "000000.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    with open(tmp_path / "metadata.jsonl", "a") as metadata:
        for name in ("not_an_image.png", "truncated.png", "missing.png"):
            metadata.write(json.dumps({"file_name": name, "caption": f"a {name}", "image_id": 100}) + "\n")
    return tmp_path


def test_bad_image_files_are_logged_skipped_and_counted(folder_with_bad_files, processor, cache_dir, caplog):
    pairs = load_image_text_folder(folder_with_bad_files, cache_dir=cache_dir)
    transform = MediaTextTransform(processor)
    data = transform.apply_to(pairs)
    with caplog.at_level(logging.WARNING, logger="transformers_scl.data.preprocess"):
        batch = SCLDataCollator(processor.tokenizer)(data.__getitems__(list(range(len(data)))))
    assert batch["pixel_values"].shape[0] == len(pairs) - 3 == 12
    assert batch["input_ids"].shape[0] == 12
    assert (transform.skip_counter.seen, transform.skip_counter.skipped) == (15, 3)
    for name in ("not_an_image.png", "truncated.png", "missing.png"):
        assert any(name in record.getMessage() for record in caplog.records)
    assert transform.skip_counter.summary() == ("Skipped 3 of 15 examples because their media could not be decoded.")


def test_bad_files_are_skipped_when_streaming(folder_with_bad_files, processor):
    transform = MediaTextTransform(processor)
    data = transform.apply_to(load_image_text_folder(folder_with_bad_files, streaming=True))
    examples = list(data)
    assert sum(example["pixel_values"] is None for example in examples) == 3
    assert transform.skip_counter.skipped == 3


def test_bad_video_files_are_skipped_and_counted(video_folder, processor, tmp_path, cache_dir):
    (tmp_path / "broken.mp4").write_bytes((video_folder / "000000.mp4").read_bytes()[:200])
    data = Dataset.from_dict(
        {"video": [str(video_folder / "000001.mp4"), str(tmp_path / "broken.mp4")], "caption": ["a", "b"]}
    )
    transform = MediaTextTransform(processor, modality="video")
    batch = SCLDataCollator(processor.tokenizer)(transform.apply_to(data).__getitems__([0, 1]))
    assert batch["pixel_values_videos"].shape[0] == 1
    assert transform.skip_counter.skipped == 1


def test_skips_in_dataloader_workers_are_counted_in_the_main_process(folder_with_bad_files, processor, cache_dir):
    transform = MediaTextTransform(processor)
    data = transform.apply_to(load_image_text_folder(folder_with_bad_files, cache_dir=cache_dir))
    loader = DataLoader(data, batch_size=5, num_workers=2, collate_fn=SCLDataCollator(processor.tokenizer))
    assert sum(len(batch["input_ids"]) for batch in loader) == 12
    assert (transform.skip_counter.seen, transform.skip_counter.skipped) == (15, 3)


def test_a_batch_of_only_bad_files_fails_loudly(processor):
    with pytest.raises(RuntimeError, match="All 2 examples of this batch were skipped"):
        SCLDataCollator(processor.tokenizer)([{"input_ids": [0, 2], "pixel_values": None}] * 2)


def test_skip_report_callback_logs_the_summary_at_the_end_of_training(caplog):
    counter = SkipCounter()
    counter.record_success()
    counter.record_skip("a.png", OSError("truncated"))
    with caplog.at_level(logging.WARNING, logger="transformers_scl.data.preprocess"):
        SkipReportCallback(counter).on_train_end(args=None, state=None, control=None)
    assert caplog.records[-1].getMessage() == "Skipped 1 of 2 examples because their media could not be decoded."


def test_skip_counter_copies_share_the_counts():
    import copy

    counter = SkipCounter()
    copy.deepcopy(counter).record_skip("x.png", OSError("bad"))
    assert counter.skipped == 1 and counter.seen == 1


# ------------------------------------------------------------------------------------------------ collators


def image_example(ids, value=0.0, **extra):
    return {"input_ids": ids, "pixel_values": torch.full((3, 4, 4), value), **extra}


def test_collator_right_pads_text_with_the_pad_id_and_a_zero_mask(tokenizer):
    batch = SCLDataCollator(tokenizer)([image_example([0, 70, 2]), image_example(torch.tensor([0, 2]))])
    assert batch["input_ids"].tolist() == [[0, 70, 2], [0, 2, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4)


def test_collator_keeps_given_attention_masks_and_pads_to_a_multiple(tokenizer):
    examples = [image_example([0, 70, 2, 1], attention_mask=[1, 1, 1, 0]), image_example([0, 2])]
    batch = SCLDataCollator(tokenizer, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_collator_stacks_video_clips(tokenizer):
    clips = [{"input_ids": [0, 2], "pixel_values_videos": torch.rand(4, 3, 8, 8)} for _ in range(3)]
    batch = SCLDataCollator(tokenizer)(clips)
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 8, 8) and "pixel_values" not in batch


def test_collator_rejects_a_batch_mixing_images_and_videos(tokenizer):
    clip = {"input_ids": [0, 2], "pixel_values_videos": torch.rand(4, 3, 4, 4)}
    with pytest.raises(ValueError, match="mixes images .* and videos .*ModalityGroupedBatchSampler"):
        SCLDataCollator(tokenizer)([image_example([0, 2]), clip])


def test_collator_rejects_pixels_of_different_sizes(tokenizer):
    examples = [image_example([0, 2]), {"input_ids": [0, 2], "pixel_values": torch.zeros(3, 8, 8)}]
    with pytest.raises(ValueError, match="same image size"):
        SCLDataCollator(tokenizer)(examples)


def test_collator_passes_label_fields_and_drops_everything_else(tokenizer):
    examples = [image_example([0, 2], labels=1, caption="a"), image_example([0, 2], labels=0, caption="b")]
    batch = SCLDataCollator(tokenizer)(examples)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels", "pixel_values"]
    assert batch["labels"].tolist() == [1, 0]


def test_vqa_collator_builds_dense_soft_score_targets(tokenizer):
    examples = [
        image_example([0, 2], answer_ids=[3, 0], answer_scores=[1.0, 0.3]),
        image_example([0, 2], answer_ids=[], answer_scores=[]),
    ]
    labels = SCLVQACollator(tokenizer, num_labels=4)(examples)["labels"]
    assert labels.tolist() == [[pytest.approx(0.3), 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="out of range"):
        SCLVQACollator(tokenizer, num_labels=3)(examples)


@pytest.fixture
def caption_examples(tokenizer):
    captions = ["a red circle to the left of a blue square", "a green triangle moving up", "a"]
    return [image_example(tokenizer(c)["input_ids"], value=i) for i, c in enumerate(captions)]


def test_pretraining_collator_adds_mlm_and_mlsc_inputs_under_the_masking_rules(tokenizer, caption_examples):
    batch = SCLPretrainingCollator(tokenizer, seed=0)(caption_examples)
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "mlm_input_ids",
        "mlm_labels",
        "mlsc_input_ids",
    }
    special = (batch["attention_mask"] == 0) | torch.isin(batch["input_ids"], torch.tensor([0, 1, 2]))
    assert (batch["mlm_labels"][special] == -100).all()
    assert torch.equal(batch["mlsc_input_ids"][special], batch["input_ids"][special])
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert (batch["mlsc_input_ids"] == tokenizer.mask_token_id).sum(dim=1).tolist() == [
        int((n - 2) * 0.4) + 1 for n in real
    ]


def test_pretraining_collator_is_reproducible_under_a_seed(tokenizer, caption_examples):
    examples = caption_examples * 4  # 12 captions, so different seeds almost surely differ
    first = SCLPretrainingCollator(tokenizer, seed=3)(examples)
    again = SCLPretrainingCollator(tokenizer, seed=3)(examples)
    other = SCLPretrainingCollator(tokenizer, seed=4)(examples)
    for key in ("mlm_input_ids", "mlm_labels", "mlsc_input_ids"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["mlsc_input_ids"], other["mlsc_input_ids"])


def test_pretraining_collator_reads_masking_rates_from_the_config(tokenizer, caption_examples):
    collator = SCLPretrainingCollator.from_config(tokenizer, tiny_config(text_mask_ratio=0.75, mlm_probability=0.5))
    assert (collator.mlm_probability, collator.text_mask_ratio) == (0.5, 0.75)
    batch = collator(caption_examples)
    real = batch["attention_mask"].sum(dim=1).tolist()
    assert (batch["mlsc_input_ids"] == tokenizer.mask_token_id).sum(dim=1).tolist() == [
        int((n - 2) * 0.75) + 1 for n in real
    ]


def test_vqa_pipeline_gives_questions_pixels_and_dense_targets(processor):
    data = make_synthetic_vqa(3, seed=0)
    transformed = MediaTextTransform(processor, text_column="question").apply_to(data)
    batch = SCLVQACollator(processor.tokenizer, num_labels=len(answer_vocabulary(data)))(
        transformed.__getitems__([0, 1, 2])
    )
    assert batch["pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["labels"].sum(dim=1).tolist() == [1.0, 1.0, 1.0]
    assert batch["labels"].argmax(dim=1).tolist() == [ids[0] for ids in data["answer_ids"]]


@pytest.mark.parametrize("modality", ["image", "video"])
def test_pretraining_batches_are_accepted_by_the_pretraining_model(processor, modality):
    if modality == "image":
        data = MediaTextTransform(processor).apply_to(image_text_pairs(make_synthetic_image_text(4, seed=0)))
    else:
        data = MediaTextTransform(processor, modality="video", load_media=render_video).apply_to(
            make_synthetic_video_text(4, seed=0)
        )
    batch = SCLPretrainingCollator(processor.tokenizer, mlm_probability=0.5, seed=0)(data.__getitems__([0, 1, 2, 3]))
    torch.manual_seed(0)
    loss = SCLForPreTraining(tiny_config())(**batch).loss
    assert torch.isfinite(loss) and loss > 0


# ------------------------------------------------------------------------------------------------ sampling


def test_grouped_batches_hold_one_modality_and_cover_every_example_once():
    groups = ["image"] * 10 + ["video"] * 7
    sampler = ModalityGroupedBatchSampler(groups, batch_size=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4 + 3
    assert all(len({groups[i] for i in batch}) == 1 for batch in batches)
    assert sorted(i for batch in batches for i in batch) == list(range(17))


def test_grouped_batches_are_reshuffled_each_epoch_and_reproducible():
    sampler = ModalityGroupedBatchSampler([0] * 8 + [1] * 8, batch_size=4, seed=1)
    epoch_0 = list(sampler)
    sampler.set_epoch(1)
    epoch_1 = list(sampler)
    assert epoch_0 != epoch_1
    sampler.set_epoch(0)
    assert list(sampler) == epoch_0


def test_grouped_sampler_can_drop_incomplete_batches_and_keep_order():
    sampler = ModalityGroupedBatchSampler.from_lengths([5, 3], batch_size=2, shuffle=False, drop_last=True)
    assert list(sampler) == [[0, 1], [2, 3], [5, 6]] and len(sampler) == 3


def test_dataloader_over_images_and_videos_yields_single_modality_batches(scenes, processor):
    images = MediaTextTransform(processor).apply_to(image_text_pairs(scenes))
    videos = MediaTextTransform(processor, modality="video", load_media=render_video).apply_to(
        make_synthetic_video_text(5, seed=0)
    )
    sampler = ModalityGroupedBatchSampler.from_lengths([len(images), len(videos)], batch_size=4, seed=0)
    loader = DataLoader(
        ConcatDataset([images, videos]), batch_sampler=sampler, collate_fn=SCLPretrainingCollator(processor.tokenizer)
    )
    batches = list(loader)
    assert sorted(len(b["input_ids"]) for b in batches) == [1, 4, 4, 4, 4]
    assert sum("pixel_values" in b for b in batches) == 3 and sum("pixel_values_videos" in b for b in batches) == 2
    assert all("mlsc_input_ids" in b for b in batches)


def test_decoded_image_is_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    PIL.Image.new("L", (4, 4), 128).save(gray)
    assert decode_image(str(gray)).mode == "RGB"
    assert decode_image({"bytes": gray.read_bytes(), "path": None}).size == (4, 4)
    with pytest.raises(TypeError, match="An image must be"):
        decode_image(42)


# ---------------------------------------------------------------------------------------------------------------------
# Per-example seeds (exact resume without touching the global RNG), caption helpers, one loader for every source
# ---------------------------------------------------------------------------------------------------------------------


class _RandomRows(torch.utils.data.Dataset):
    """Each read draws from torch's global RNG, as the training augmentation does."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return {"value": torch.rand(3), "index": index}


def test_seeded_reads_depend_on_seed_epoch_and_index_only_and_leave_the_global_rng_alone():
    sampler = SeededBatchSampler(ModalityGroupedBatchSampler([0] * 8, batch_size=4, seed=1), seed=5)
    dataset = SeededDataset(_RandomRows())
    keys = [key for batch in sampler for key in batch]
    assert sorted(index for index, _ in keys) == list(range(8))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = [dataset[key]["value"] for key in keys]
    assert torch.equal(torch.get_rng_state(), state)  # the model's draws are not shifted by data loading
    torch.manual_seed(123)  # whatever ran before does not matter
    torch.testing.assert_close([dataset[key]["value"] for key in reversed(keys)], first[::-1])
    sampler.set_epoch(1)  # a new epoch: a new order and new draws for the same examples
    assert sampler.batch_sampler.epoch == 1
    redrawn = dict(key for batch in sampler for key in batch)
    assert all(redrawn[index] != seed for index, seed in keys)


def test_seeded_rank_batch_sampler_slices_seeded_single_modality_global_batches():
    lengths = [10, 7]  # images 0-9, videos 10-16
    ranks = [seeded_rank_batch_sampler(lengths, 2, num_replicas=2, rank=rank, seed=3) for rank in (0, 1)]
    batches = [list(sampler) for sampler in ranks]
    assert len(ranks[0]) == len(batches[0]) == len(batches[1]) == 10 // 4 + 7 // 4  # incomplete global batches dropped
    for batch_0, batch_1 in zip(*batches):
        indices = [index for index, _ in batch_0 + batch_1]
        assert len(batch_0) == len(batch_1) == 2 and len(set(indices)) == 4
        assert len({index < 10 for index in indices}) == 1  # one modality per global step
    expected = SeededBatchSampler(ModalityGroupedBatchSampler.from_lengths(lengths, 4, drop_last=True, seed=3), 3)
    assert [key for batch in expected for key in batch] == [key for pair in zip(*batches) for b in pair for key in b]
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != batches[0]
    with pytest.raises(ValueError, match="No part has enough examples"):
        seeded_rank_batch_sampler([3, 3], 2, num_replicas=2)


def test_pretraining_datasets_attach_the_training_augmentation_and_the_eval_transform(scenes, processor):
    images = image_text_pairs(scenes, id_column="image_id")
    videos = make_synthetic_pairs("video", 3, seed=0, image_size=32, num_frames=6)
    data = PretrainingDatasets.from_pairs(
        {"image": (images, images.select(range(4))), "video": (videos, None)},
        processor,
        image_size=IMAGE_SIZE,
        num_frames=3,
        load_media={"video": render_video},
    )
    assert data.modality_sizes == [12, 3] and len(data.train_dataset()) == 15
    assert list(data.eval) == ["image"]  # no held-out videos: no video evaluation
    torch.manual_seed(0)
    first, again = data.train["image"][0]["pixel_values"], data.train["image"][0]["pixel_values"]
    assert first.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and not torch.equal(first, again)  # random crops
    assert torch.equal(data.eval["image"][0]["pixel_values"], data.eval["image"][0]["pixel_values"])
    assert data.train["video"][0]["pixel_values_videos"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    streaming = PretrainingDatasets.from_pairs(
        {"image": (images.to_iterable_dataset(), None)}, processor, image_size=IMAGE_SIZE, num_frames=3
    )
    assert streaming.modality_sizes is None and streaming.train_dataset() is streaming.train["image"]


def test_pretraining_masks_follow_the_examples_sample_seeds(tokenizer):
    collator = SCLPretrainingCollator(tokenizer)
    examples = [
        {"input_ids": tokenizer(f"a red circle number {i} to the left of a blue square")["input_ids"]}
        | {"pixel_values": torch.zeros(3, 4, 4), "sample_seed": 1000 + i}
        for i in range(4)
    ]
    torch.manual_seed(0)
    first = collator(examples)
    torch.manual_seed(1)
    again = collator(examples)
    assert torch.equal(first["mlm_input_ids"], again["mlm_input_ids"])
    assert torch.equal(first["mlsc_input_ids"], again["mlsc_input_ids"])
    other = collator([{**example, "sample_seed": example["sample_seed"] + 7} for example in examples])
    assert not torch.equal(first["mlsc_input_ids"], other["mlsc_input_ids"])


def test_truncate_and_unique_captions():
    pairs = Dataset.from_dict({"caption": ["a", "b", "a", "c", "b"], "image_id": [0, 1, 2, 3, 4]})
    assert unique_captions(pairs)["image_id"] == [0, 1, 3]
    assert len(truncate(pairs, 2)) == 2 and len(truncate(pairs, 50)) == 5 and truncate(None, 3) is None
    assert len(list(truncate(pairs.to_iterable_dataset(), 3))) == 3
    with pytest.raises(ValueError, match="non-negative"):
        truncate(pairs, -1)


def test_load_caption_pairs_reads_a_flat_folder_as_training_data(tmp_path):
    write_synthetic_images(make_synthetic_image_text(6, seed=0, captions_per_image=2), tmp_path / "flat")
    train = load_caption_pairs(tmp_path / "flat", "image", "train")
    assert len(train) == 12 and {"image", "caption", "image_id"} <= set(train.column_names)
    assert load_caption_pairs(tmp_path / "flat", "image", "validation") is None
    with pytest.raises(ValueError, match="Karpathy"):
        (tmp_path / "captions.json").write_text("{}")
        load_caption_pairs(tmp_path / "captions.json", "image", "train")


def test_synthetic_pairs_hold_out_one_row_per_distinct_caption():
    held_out = make_synthetic_pairs("video", 60, split="test", seed=1, image_size=32)
    assert len(set(held_out["caption"])) == len(held_out) < 60
    assert len(make_synthetic_pairs("image", 10, split="train", captions_per_image=2)) == 20


def test_caption_tokenizer_is_a_roberta_bpe_learnt_from_the_captions(tmp_path):
    captions = [f"a {color} {shape} moving up" for color in ("red", "green") for shape in ("circle", "square")] * 5
    tokenizer = train_caption_tokenizer(captions, vocab_size=300, save_dir=tmp_path)
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 4]
    assert tokenizer.tokenize("a red circle moving up") == ["a", "Ġred", "Ġcircle", "Ġmoving", "Ġup"]
    assert (tmp_path / "tokenizer_config.json").is_file()
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        train_caption_tokenizer(captions, vocab_size=100, save_dir=tmp_path)
