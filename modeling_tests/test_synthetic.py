"""Built-in synthetic data: what the captions, clips and answers say must be visible in the rendered pixels."""

import re
import time

import numpy as np
import pytest
from datasets import Image

from transformers_scl.data import (
    SYNTHETIC_VQA_ANSWERS,
    answer_vocabulary,
    make_synthetic_image_text,
    make_synthetic_splits,
    make_synthetic_video_text,
    make_synthetic_vqa,
    render_video,
)
from transformers_scl.data.synthetic import (
    BACKGROUND,
    CELL_PHRASES,
    COLORS,
    DIRECTIONS,
    SHAPES,
    _scene_key,
    render_image,
)

SIZE = 64
CELL = SIZE / 3
_PHRASE_TO_CELL = {phrase: cell for cell, phrase in CELL_PHRASES.items()}
_NAME = r"an? (\w+) (\w+)"
_CELL_PHRASE = "|".join(_PHRASE_TO_CELL)
SINGLE = re.compile(rf"^{_NAME} ({_CELL_PHRASE})$")
RELATION = re.compile(
    rf"^{_NAME} (to the left of|to the right of|above|below) {_NAME}(?: and {_NAME} ({_CELL_PHRASE}))?$"
)


def color_mask(image: np.ndarray, color: str) -> np.ndarray:
    return np.all(image == COLORS[color], axis=-1)


def colors_in(image: np.ndarray) -> set[str]:
    return {color for color in COLORS if color_mask(image, color).any()}


def centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def grid_cell(mask: np.ndarray) -> tuple[int, int]:
    x, y = centroid(mask)
    return int(y // CELL), int(x // CELL)


def shape_of(mask: np.ndarray) -> str:
    """Classify a shape by how much of its bounding box it fills: square 1, circle ~0.7, triangle ~0.5."""
    ys, xs = np.nonzero(mask)
    fill = mask.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    return "square" if fill > 0.9 else "circle" if fill > 0.6 else "triangle"


def unwrapped(mask: np.ndarray) -> np.ndarray:
    """Roll a mask on the wrap-around canvas so that the shape does not straddle an edge."""
    for shift_y in (0, SIZE // 2):
        for shift_x in (0, SIZE // 2):
            rolled = np.roll(mask, (shift_y, shift_x), axis=(0, 1))
            if not (rolled[0].any() or rolled[-1].any() or rolled[:, 0].any() or rolled[:, -1].any()):
                return rolled
    raise AssertionError("the shape touches every edge")


def motion_of(frames: np.ndarray, step: int) -> str:
    """The direction in which every frame is the previous frame shifted by `step` pixels."""
    shifts = {"up": (-step, 0), "down": (step, 0), "left": (-step, 1), "right": (step, 1)}
    found = [
        direction
        for direction, (shift, axis) in shifts.items()
        if all(np.array_equal(np.roll(frames[t], shift, axis=axis), frames[t + 1]) for t in range(len(frames) - 1))
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_image_text(300, seed=0)


@pytest.fixture(scope="module")
def clips():
    return make_synthetic_video_text(200, seed=0)


# --------------------------------------------------------------------------------------------------- image-text


def test_same_seed_gives_the_same_data_and_another_seed_different_data(scenes):
    again = make_synthetic_image_text(300, seed=0)
    other = make_synthetic_image_text(300, seed=1)
    assert again["caption"] == scenes["caption"]
    assert [np.array(a).tobytes() for a in again["image"][:20]] == [
        np.array(a).tobytes() for a in scenes["image"][:20]
    ]
    assert other["caption"] != scenes["caption"]


def test_every_object_is_drawn_in_its_colour_at_its_centre(scenes):
    for example in scenes:
        image = np.array(example["image"])
        for obj in example["objects"]:
            assert tuple(image[obj["y"], obj["x"]]) == COLORS[obj["color"]]


def test_caption_names_exactly_the_colours_and_shapes_in_the_image(scenes):
    for example in scenes:
        image = np.array(example["image"])
        named = re.findall(r"an? (\w+) (circle|square|triangle)", example["caption"])
        assert {color for color, _ in named} == colors_in(image), example["caption"]
        for color, shape in named:
            assert shape_of(color_mask(image, color)) == shape, example["caption"]


def test_caption_locations_and_relations_match_the_pixels(scenes):
    checked = {"single": 0, "relation": 0, "third": 0}
    for example in scenes:
        image = np.array(example["image"])
        caption = example["caption"]
        if match := SINGLE.match(caption):
            color, _, phrase = match.groups()
            assert grid_cell(color_mask(image, color)) == _PHRASE_TO_CELL[phrase], caption
            checked["single"] += 1
            continue
        match = RELATION.match(caption)
        assert match, f"unexpected caption form: {caption!r}"
        color_a, _, relation, color_b, _, color_c, _, phrase_c = match.groups()
        (row_a, col_a), (row_b, col_b) = grid_cell(color_mask(image, color_a)), grid_cell(color_mask(image, color_b))
        holds = {
            "to the left of": row_a == row_b and col_a < col_b,
            "to the right of": row_a == row_b and col_a > col_b,
            "above": col_a == col_b and row_a < row_b,
            "below": col_a == col_b and row_a > row_b,
        }[relation]
        assert holds, caption
        checked["relation"] += 1
        if color_c:
            assert grid_cell(color_mask(image, color_c)) == _PHRASE_TO_CELL[phrase_c], caption
            checked["third"] += 1
    assert min(checked.values()) > 30  # all three caption forms were exercised


def test_swapping_the_objects_of_a_relation_changes_the_caption():
    captions = make_synthetic_image_text(1000, seed=3)["caption"]
    relations = [RELATION.match(c).groups()[:5] for c in captions if RELATION.match(c)]
    pairs = {(a, b, rel, c, d) for a, b, rel, c, d in relations}
    swapped = {(c, d, rel, a, b) for a, b, rel, c, d in pairs}
    assert pairs & swapped  # both orders of some pair occur ...
    assert len(set(captions)) > 600  # ... and captions are diverse enough for retrieval to be non-trivial


def test_paraphrased_captions_describe_the_same_scene():
    data = make_synthetic_image_text(50, seed=4, captions_per_image=3)
    for example in data:
        captions = example["caption"]
        assert 2 <= len(captions) <= 3 and len(set(captions)) == len(captions)
        color_sets = [set(re.findall(r"an? (\w+) (?:circle|square|triangle)", c)) for c in captions]
        assert all(colors == color_sets[0] for colors in color_sets)


def test_held_out_split_shares_no_scene_with_train():
    splits = make_synthetic_splits("image_text", 400, 400, seed=0)
    train_images = {np.array(image).tobytes() for image in splits["train"]["image"]}
    test_images = {np.array(image).tobytes() for image in splits["test"]["image"]}
    assert len(train_images) == len(test_images) == 400  # no duplicate image within a split either
    assert not train_images & test_images


def test_a_scene_described_from_either_object_is_one_scene():
    # "A left of B" and "B right of A" are the same picture: the no-repeat check and the split must see one scene.
    objects = next(row["objects"] for row in make_synthetic_image_text(50, seed=0) if len(row["objects"]) >= 2)
    swapped = [objects[1], objects[0], *objects[2:]]
    assert np.array_equal(render_image(objects, SIZE), render_image(swapped, SIZE))
    assert _scene_key(swapped) == _scene_key(objects)


@pytest.mark.slow
def test_ten_thousand_scenes_are_ten_thousand_different_images():
    data = make_synthetic_image_text(10_000, seed=5).cast_column("image", Image(decode=False))
    assert len({image["bytes"] for image in data["image"]}) == 10_000


@pytest.mark.slow
def test_generation_is_fast_enough_for_ten_thousand_examples_in_seconds():
    # Ten thousand new scenes: a slowdown of the renderer, or of the no-repeat rejection sampling (which redraws more
    # often as a data set grows), shows here. About 5 s alone on 2 cores; the bound leaves room for a busy machine.
    start = time.perf_counter()
    data = make_synthetic_image_text(10_000, seed=5)
    elapsed = time.perf_counter() - start
    print(f"10000 synthetic image-text examples in {elapsed:.2f}s")
    assert len(data) == 10_000 and data[9_999]["image_id"] == 9_999
    assert elapsed < 60, f"10000 synthetic image-text examples took {elapsed:.0f}s"


# --------------------------------------------------------------------------------------------------- video-text


def test_frames_show_the_captioned_shape_moving_in_the_captioned_direction(clips):
    for example in clips:
        frames = render_video(example)
        assert frames.shape == (8, SIZE, SIZE, 3) and frames.dtype == np.uint8
        (color,) = colors_in(frames[0])
        shape = shape_of(unwrapped(color_mask(frames[0], color)))
        direction = motion_of(frames, example["step"])
        assert re.fullmatch(rf"an? {color} {shape} moving {direction}", example["caption"]), example["caption"]


def test_shape_keeps_its_size_in_every_frame(clips):
    for example in clips.select(range(50)):
        areas = {int((frame != BACKGROUND).any(-1).sum()) for frame in render_video(example)}
        assert len(areas) == 1


def test_a_single_frame_does_not_reveal_the_direction():
    # Where the shape is in a frame is distributed alike for every direction: compare the mean occupancy of each
    # column and row of first frames. A clip kept inside the canvas would show "right" starting left, etc.
    occupancy = {direction: [] for direction in DIRECTIONS}
    for example in make_synthetic_video_text(1500, seed=6):
        first_frame = render_video(dict(example, num_frames=1))[0]
        occupancy[example["direction"]].append((first_frame != BACKGROUND).any(-1))
    profiles = {d: (np.mean(o, axis=0).mean(axis=0), np.mean(o, axis=0).mean(axis=1)) for d, o in occupancy.items()}
    for direction in DIRECTIONS[1:]:
        for axis in range(2):
            # sampling noise is ~0.02; clips kept inside the canvas differ by ~0.3
            assert np.abs(profiles[direction][axis] - profiles[DIRECTIONS[0]][axis]).max() < 0.05


def test_video_splits_share_no_clip():
    splits = make_synthetic_splits("video_text", 300, 300, seed=0)
    key = ("shape", "color", "direction", "x", "y", "size", "step")
    train = set(zip(*(splits["train"][k] for k in key)))
    test = set(zip(*(splits["test"][k] for k in key)))
    assert not train & test


# ---------------------------------------------------------------------------------------------------------- VQA


def test_vqa_uses_the_vqav2_answer_format():
    data = make_synthetic_vqa(100, seed=0)
    vocabulary = answer_vocabulary(data)
    assert vocabulary == list(SYNTHETIC_VQA_ANSWERS)
    for example in data:
        assert [vocabulary[i] for i in example["answer_ids"]] == [example["multiple_choice_answer"]]
        assert example["answer_scores"] == [1.0]
        assert example["answers"] == [example["multiple_choice_answer"]] * 10


def test_image_vqa_answers_are_what_the_image_shows():
    data = make_synthetic_vqa(300, seed=1)
    kinds = set()
    for example in data:
        image, question, answer = np.array(example["image"]), example["question"], example["multiple_choice_answer"]
        shapes = {color: shape_of(color_mask(image, color)) for color in colors_in(image)}
        if match := re.fullmatch(r"what color is the (\w+)\?", question):
            assert shapes[answer] == match[1]
            kinds.add("color")
        elif match := re.fullmatch(r"what shape is the (\w+) object\?", question):
            assert shapes[match[1]] == answer
            kinds.add("shape")
        elif question == "how many shapes are there?":
            assert answer == str(len(shapes))
            kinds.add("count")
        elif match := re.fullmatch(r"is there an? (\w+) (\w+)\?", question):
            assert answer == ("yes" if shapes.get(match[1]) == match[2] else "no")
            kinds.add("exists")
        else:
            raise AssertionError(f"unexpected question {question!r}")
    assert kinds == {"color", "shape", "count", "exists"}


def test_existence_questions_are_balanced():
    answers = [
        e["multiple_choice_answer"] for e in make_synthetic_vqa(600, seed=2) if e["question"].startswith("is there")
    ]
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_video_vqa_answers_are_what_the_clip_shows():
    data = make_synthetic_vqa(200, modality="video", seed=3)
    for example in data:
        frames = render_video(example)
        (color,) = colors_in(frames[0])
        shape = shape_of(unwrapped(color_mask(frames[0], color)))
        direction = motion_of(frames, example["step"])
        question, answer = example["question"], example["multiple_choice_answer"]
        if match := re.fullmatch(r"which direction is the (\w+) moving\?", question):
            assert (match[1], answer) == (shape, direction)
        elif match := re.fullmatch(r"what shape is moving (\w+)\?", question):
            assert (match[1], answer) == (direction, shape)
        elif match := re.fullmatch(r"what color is the moving (\w+)\?", question):
            assert (match[1], answer) == (shape, color)
        elif match := re.fullmatch(r"is the (\w+) moving (\w+)\?", question):
            assert match[1] == shape and answer == ("yes" if match[2] == direction else "no")
        else:
            raise AssertionError(f"unexpected question {question!r}")


def test_invalid_arguments_are_rejected_by_name():
    with pytest.raises(ValueError, match="split"):
        make_synthetic_image_text(1, split="validation")
    with pytest.raises(ValueError, match="num_frames"):
        make_synthetic_video_text(1, num_frames=1)
    with pytest.raises(ValueError, match="modality"):
        make_synthetic_vqa(1, modality="audio")
    with pytest.raises(ValueError, match="kind"):
        make_synthetic_splits("nlvr2", 1, 1)


def test_shapes_and_colours_are_all_used(scenes):
    named = re.findall(r"an? (\w+) (circle|square|triangle)", " ".join(scenes["caption"]))
    assert {color for color, _ in named} == set(COLORS)
    assert {shape for _, shape in named} == set(SHAPES)
