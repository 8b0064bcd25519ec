"""Built-in synthetic data: seeded shape scenes with captions, moving-shape clips, and VQA about both.

Everything here is generated from a `numpy.random.Generator`, so a seed reproduces a data set exactly. The data is
meant for smoke tests, tutorials and CI of the whole pipeline (loaders, processors, collators, training and
evaluation), at a size that runs on a laptop:

* **Image-text** (`make_synthetic_image_text`): one to three coloured shapes (circle, square, triangle; six colours)
  in the cells of a 3x3 grid, captioned with what is where: "a red circle in the top left", "a green triangle above
  a yellow circle", "a red circle to the left of a blue square and a purple triangle at the bottom". Swapping the two
  objects of a relation swaps the caption, so retrieval cannot be solved from the set of colours and shapes alone.
* **Video-text** (`make_synthetic_video_text`): a single shape moving up, down, left or right ("a green triangle
  moving up"). Only a compact spec is stored; `render_video(example)` draws the `(T, H, W, 3)` frames on demand.
  The canvas wraps around and the start is uniform over it, so any single frame has the same distribution for
  every direction: the direction needs at least two frames.
* **VQA** (`make_synthetic_vqa`): questions about colour, shape, count and direction, answerable from the scene,
  in the same answer format as the VQAv2 loader (`answer_ids` with a `ClassLabel` vocabulary, `answer_scores`).

Train and held-out data never share a scene: a scene belongs to the held-out split iff a hash of its spec falls in
one of `HELD_OUT_BUCKETS` buckets, and each split rejects the other's scenes while sampling. Captions (and questions)
do recur across splits, as in real data: only the exact scenes are disjoint.
"""

import functools
import io
import json
import os
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
from datasets import Dataset, DatasetDict, Features, Image, List, Value

from .vqa import vqa_answer_features

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "SYNTHETIC_VQA_ANSWERS",
    "make_synthetic_image_text",
    "make_synthetic_pairs",
    "make_synthetic_splits",
    "make_synthetic_video_text",
    "make_synthetic_vqa",
    "render_image",
    "render_video",
    "write_synthetic_images",
    "write_synthetic_videos",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 190),
    "orange": (250, 140, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("up", "down", "left", "right")
BACKGROUND: tuple[int, int, int] = (235, 235, 235)

# (row, column) of the 3x3 grid -> how a caption names the cell.
CELL_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "in the top left",
    (0, 1): "at the top",
    (0, 2): "in the top right",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "in the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right",
}
# relation of object A to object B -> (phrase, inverse relation), A and B share a row (left/right) or column.
RELATIONS: dict[str, tuple[str, str]] = {
    "left": ("to the left of", "right"),
    "right": ("to the right of", "left"),
    "above": ("above", "below"),
    "below": ("below", "above"),
}
_DIRECTION_STEPS: dict[str, tuple[int, int]] = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}

SYNTHETIC_VQA_ANSWERS: tuple[str, ...] = (*COLORS, *SHAPES, "1", "2", "3", "yes", "no", *DIRECTIONS)
HELD_OUT_BUCKETS = 5  # one scene in five (by spec hash) may only appear in the held-out split

Split = Literal["train", "test"]


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")


def _in_split(spec_key: tuple, split: str) -> bool:
    held_out = zlib.crc32(repr(spec_key).encode()) % HELD_OUT_BUCKETS == 0
    return held_out == (split == "test")


# ------------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------------


def _shape_mask(shape: str, rx: np.ndarray, ry: np.ndarray, radius: float) -> np.ndarray:
    """Pixels covered by a shape, from each pixel's offset (rx, ry) to the shape's centre; `radius` is the half-width
    of its bounding box."""
    if shape == "circle":
        return rx**2 + ry**2 <= radius**2
    if shape == "square":
        return (np.abs(rx) <= radius) & (np.abs(ry) <= radius)
    if shape == "triangle":  # apex up; half-width grows from 0 at the top to `radius` at the base
        depth = ry + radius
        return (depth >= 0) & (depth <= 2 * radius) & (np.abs(rx) <= depth / 2)
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


@functools.lru_cache(maxsize=8)
def _pixel_grid(image_size: int) -> np.ndarray:
    grid = np.mgrid[0:image_size, 0:image_size]
    grid.flags.writeable = False
    return grid


def render_image(objects: Sequence[dict[str, Any]], image_size: int = 64, *, wrap: bool = False) -> np.ndarray:
    """Draw objects (dicts with `shape`, `color`, centre `x`, `y`, half-width `size`) as uint8 (H, W, 3).

    With `wrap=True` the canvas is a torus: a shape crossing an edge reappears on the opposite side.
    """
    yy, xx = _pixel_grid(image_size)
    canvas = np.empty((image_size, image_size, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    half = image_size // 2
    for obj in objects:
        rx, ry = xx - obj["x"], yy - obj["y"]
        if wrap:
            rx, ry = (rx + half) % image_size - half, (ry + half) % image_size - half
        canvas[_shape_mask(obj["shape"], rx, ry, obj["size"])] = COLORS[obj["color"]]
    return canvas


def render_video(example: dict[str, Any]) -> np.ndarray:
    """Draw the frames of a synthetic clip spec (a row of `make_synthetic_video_text`) as uint8 (T, H, W, 3).

    The shape moves `step` pixels per frame and wraps around the edges, so frame t+1 is frame t rolled by `step`.
    """
    size, num_frames = example["image_size"], example["num_frames"]
    dx, dy = _DIRECTION_STEPS[example["direction"]]
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        x = (example["x"] + dx * example["step"] * t) % size
        y = (example["y"] + dy * example["step"] * t) % size
        frames[t] = render_image([dict(example, x=x, y=y)], size, wrap=True)
    return frames


def _png_bytes(array: np.ndarray) -> dict[str, Any]:
    # Encoding ourselves with fast PNG settings is ~10x quicker than letting `datasets` encode arrays.
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


# ------------------------------------------------------------------------------------------------------------------
# Scene sampling
# ------------------------------------------------------------------------------------------------------------------


def _place_in_cell(rng: np.random.Generator, row: int, col: int, image_size: int) -> tuple[int, int, int]:
    """A random (x, y, size) for a shape that fits inside grid cell (row, col) with a 1-pixel margin."""
    cell = image_size / 3
    size = int(rng.integers(max(2, round(cell * 0.25)), max(3, int(cell / 2) - 1), endpoint=True))
    slack = max(0, int(cell / 2) - size - 1)
    x = int(round((col + 0.5) * cell)) + int(rng.integers(-slack, slack, endpoint=True))
    y = int(round((row + 0.5) * cell)) + int(rng.integers(-slack, slack, endpoint=True))
    return x, y, size


_OBJECT_COUNT_WEIGHTS = (0.2, 0.3, 0.5)  # P(1, 2, 3 objects) with max_objects=3


def _sample_scene(rng: np.random.Generator, image_size: int, max_objects: int) -> tuple[list[dict], str | None]:
    """Objects with distinct shapes and colours; the first two (if any) are related along a row or a column."""
    # Favour busier scenes: single objects allow only 162 distinct captions, three objects over 20k.
    weights = np.array(_OBJECT_COUNT_WEIGHTS[:max_objects])
    num_objects = 1 + int(rng.choice(max_objects, p=weights / weights.sum()))
    shapes = rng.choice(len(SHAPES), num_objects, replace=False)
    colors = rng.choice(len(COLORS), num_objects, replace=False)
    color_names = list(COLORS)

    relation = None
    if num_objects == 1:
        cells = [divmod(int(rng.integers(9)), 3)]
    else:
        relation = list(RELATIONS)[int(rng.integers(4))]
        line = int(rng.integers(3))
        first, second = sorted(rng.choice(3, 2, replace=False).tolist())
        if relation in ("left", "right"):  # same row, A left of B for "left"
            a, b = (line, first), (line, second)
        else:  # same column, A above B for "above"
            a, b = (first, line), (second, line)
        if relation in ("right", "below"):
            a, b = b, a
        cells = [a, b]
        if num_objects == 3:
            free = [cell for cell in CELL_PHRASES if cell not in cells]
            cells.append(free[int(rng.integers(len(free)))])

    objects = []
    for shape, color, (row, col) in zip(shapes, colors, cells):
        x, y, size = _place_in_cell(rng, row, col, image_size)
        objects.append(
            {"shape": SHAPES[shape], "color": color_names[color], "x": x, "y": y, "size": size, "row": row, "col": col}
        )
    return objects, relation


def _scene_key(objects: list[dict]) -> tuple:
    """What the picture shows, whatever the order the objects are described in: "A left of B" and "B right of A"
    render the same image, so they must count as one scene (for no repeats, and for the train / test split)."""
    return tuple(sorted((o["shape"], o["color"], o["x"], o["y"], o["size"]) for o in objects))


def _name(obj: dict) -> str:
    return f"{obj['color']} {obj['shape']}"


def _a(phrase: str) -> str:
    """The phrase with its indefinite article: "a red circle", "an orange square"."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _captions(objects: list[dict], relation: str | None) -> list[str]:
    """The canonical caption first, then paraphrases that describe the same scene."""
    if relation is None:
        phrase = CELL_PHRASES[(objects[0]["row"], objects[0]["col"])]
        return [f"{_a(_name(objects[0]))} {phrase}", f"there is {_a(_name(objects[0]))} {phrase}"]
    a, b = objects[0], objects[1]
    phrase, inverse = RELATIONS[relation]
    suffix = ""
    if len(objects) == 3:
        suffix = f" and {_a(_name(objects[2]))} {CELL_PHRASES[(objects[2]['row'], objects[2]['col'])]}"
    return [
        f"{_a(_name(a))} {phrase} {_a(_name(b))}{suffix}",
        f"{_a(_name(b))} {RELATIONS[inverse][0]} {_a(_name(a))}{suffix}",
        f"there is {_a(_name(a))} {phrase} {_a(_name(b))}{suffix}",
    ]


_MAX_ATTEMPTS = 10_000


def _sample_in_split(split: str, sample: Callable[[], Any], key: Callable[[Any], tuple], seen: set) -> Any:
    """Draw until a scene belongs to `split` and is new to this data set (no duplicate images within a split)."""
    for _ in range(_MAX_ATTEMPTS):
        drawn = sample()
        drawn_key = key(drawn)
        if drawn_key not in seen and _in_split(drawn_key, split):
            seen.add(drawn_key)
            return drawn
    raise ValueError(
        f"Could not find a new {split} scene in {_MAX_ATTEMPTS} draws after {len(seen)} scenes: ask for fewer "
        "examples, or allow more variety (more objects, a larger image_size)."
    )


_OBJECT_FEATURE = {
    "shape": Value("string"),
    "color": Value("string"),
    "x": Value("int32"),
    "y": Value("int32"),
    "size": Value("int32"),
    "row": Value("int32"),
    "col": Value("int32"),
}


def make_synthetic_image_text(
    num_examples: int,
    *,
    split: Split = "train",
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = 3,
    captions_per_image: int = 1,
) -> Dataset:
    """Scenes of one to `max_objects` shapes with captions saying what is where.

    Columns: `image` (PNG, `datasets.Image`), `caption` (a string, or a list of `captions_per_image` paraphrases,
    at most 2 for single objects and 3 otherwise), `image_id`, and `objects` (shape, colour, centre `x`/`y`,
    half-width `size`, grid `row`/`col` of each shape) for checks. No image repeats within a data set, and the
    `train` and `test` splits share none.
    """
    _check_split(split)
    if not 1 <= max_objects <= 3:
        raise ValueError(f"max_objects must be 1, 2 or 3, got {max_objects}.")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be at least 1, got {captions_per_image}.")
    if image_size < 24:
        raise ValueError(f"image_size must be at least 24 pixels to fit a 3x3 grid of shapes, got {image_size}.")
    rng = np.random.default_rng(seed)
    seen: set[tuple] = set()
    columns: dict[str, list] = {"image": [], "caption": [], "image_id": [], "objects": []}
    for index in range(num_examples):
        objects, relation = _sample_in_split(
            split, lambda: _sample_scene(rng, image_size, max_objects), lambda s: _scene_key(s[0]), seen
        )
        captions = _captions(objects, relation)
        columns["image"].append(_png_bytes(render_image(objects, image_size)))
        columns["caption"].append(captions[0] if captions_per_image == 1 else captions[:captions_per_image])
        columns["image_id"].append(index)
        columns["objects"].append(objects)
    features = Features(
        {
            "image": Image(),
            "caption": Value("string") if captions_per_image == 1 else List(Value("string")),
            "image_id": Value("int64"),
            "objects": List(_OBJECT_FEATURE),
        }
    )
    return Dataset.from_dict(columns, features=features)


def _sample_clip(rng: np.random.Generator, image_size: int, num_frames: int) -> dict[str, Any]:
    """One shape moving in a straight line on a wrap-around canvas.

    The start is uniform over the whole canvas whatever the direction, and the canvas wraps, so every single frame
    has the same distribution for all directions: only the change between frames tells the direction.
    """
    cell = image_size / 3
    size = int(rng.integers(max(2, round(cell * 0.25)), max(3, int(cell / 2) - 1), endpoint=True))
    step = max(1, round(image_size * 0.35 / max(1, num_frames - 1)))  # the clip travels about a third of the canvas
    return {
        "shape": SHAPES[int(rng.integers(3))],
        "color": list(COLORS)[int(rng.integers(len(COLORS)))],
        "direction": DIRECTIONS[int(rng.integers(4))],
        "x": int(rng.integers(image_size)),
        "y": int(rng.integers(image_size)),
        "size": size,
        "step": step,
        "num_frames": num_frames,
        "image_size": image_size,
    }


def _clip_key(clip: dict) -> tuple:
    return (clip["shape"], clip["color"], clip["direction"], clip["x"], clip["y"], clip["size"], clip["step"])


_CLIP_FEATURES = {
    "shape": Value("string"),
    "color": Value("string"),
    "direction": Value("string"),
    "x": Value("int32"),
    "y": Value("int32"),
    "size": Value("int32"),
    "step": Value("int32"),
    "num_frames": Value("int32"),
    "image_size": Value("int32"),
}


def _check_video_args(image_size: int, num_frames: int) -> None:
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 for motion to be visible, got {num_frames}.")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels for a shape to move, got {image_size}.")


def make_synthetic_pairs(
    modality: str,
    num_examples: int,
    *,
    split: Split = "train",
    seed: int = 0,
    image_size: int = 64,
    num_frames: int = 8,
    max_objects: int = 3,
    captions_per_image: int = 1,
) -> Dataset:
    """Synthetic retrieval / pre-training data as caption pairs (`image`/`video`, `caption`, `image_id`/`video_id`).

    A `"test"` split keeps one row per distinct caption (`unique_captions`), so that every caption of a held-out
    gallery has exactly one right image or clip; its scenes get one canonical caption each.
    """
    from .captions import unique_captions
    from .loaders import image_text_pairs

    held_out = split != "train"
    if modality == "image":
        scenes = make_synthetic_image_text(
            num_examples,
            split=split,
            seed=seed,
            image_size=image_size,
            max_objects=max_objects,
            captions_per_image=1 if held_out else captions_per_image,
        )
        pairs = image_text_pairs(scenes.remove_columns("objects"), id_column="image_id")
    elif modality == "video":
        pairs = make_synthetic_video_text(
            num_examples, split=split, seed=seed, image_size=image_size, num_frames=num_frames
        )
    else:
        raise ValueError(f"modality must be 'image' or 'video', got {modality!r}.")
    return unique_captions(pairs) if held_out else pairs


def make_synthetic_video_text(
    num_examples: int, *, split: Split = "train", seed: int = 0, image_size: int = 64, num_frames: int = 8
) -> Dataset:
    """Clips of one shape moving up/down/left/right, captioned "a green triangle moving up".

    Columns: `caption`, `video_id`, and the clip spec (`shape`, `color`, `direction`, start centre `x`/`y`, half-width
    `size`, pixels per frame `step`, `num_frames`, `image_size`). Frames come from `render_video(example)`; use
    `write_synthetic_videos` for real video files.
    """
    _check_split(split)
    _check_video_args(image_size, num_frames)
    rng = np.random.default_rng(seed)
    seen: set[tuple] = set()
    rows = []
    for index in range(num_examples):
        clip = _sample_in_split(split, lambda: _sample_clip(rng, image_size, num_frames), _clip_key, seen)
        rows.append({"caption": f"{_a(_name(clip))} moving {clip['direction']}", "video_id": index, **clip})
    features = Features({"caption": Value("string"), "video_id": Value("int64"), **_CLIP_FEATURES})
    return Dataset.from_list(rows, features=features)


# ------------------------------------------------------------------------------------------------------------------
# VQA
# ------------------------------------------------------------------------------------------------------------------

_NUMBER_WORDS = {1: "1", 2: "2", 3: "3"}  # VQA answers write numbers as digits (official normalisation)


def _image_question(rng: np.random.Generator, objects: list[dict]) -> tuple[str, str, str]:
    """(question, answer, answer_type) about a scene; every question has exactly one correct answer."""
    kind = ["color", "shape", "count", "exists"][int(rng.integers(4))]
    target = objects[int(rng.integers(len(objects)))]
    if kind == "color":
        return f"what color is the {target['shape']}?", target["color"], "other"
    if kind == "shape":
        return f"what shape is the {target['color']} object?", target["shape"], "other"
    if kind == "count":
        return "how many shapes are there?", _NUMBER_WORDS[len(objects)], "number"
    present = {(o["color"], o["shape"]) for o in objects}
    if rng.random() < 0.5:
        color, shape = target["color"], target["shape"]
    else:  # an absent combination: a colour and a shape that are not drawn together
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = absent[int(rng.integers(len(absent)))]
    return f"is there {_a(color + ' ' + shape)}?", "yes" if (color, shape) in present else "no", "yes/no"


def _video_question(rng: np.random.Generator, clip: dict) -> tuple[str, str, str]:
    kind = ["direction", "shape", "color", "moving"][int(rng.integers(4))]
    if kind == "direction":
        return f"which direction is the {clip['shape']} moving?", clip["direction"], "other"
    if kind == "shape":
        return f"what shape is moving {clip['direction']}?", clip["shape"], "other"
    if kind == "color":
        return f"what color is the moving {clip['shape']}?", clip["color"], "other"
    direction = DIRECTIONS[int(rng.integers(4))]
    answer = "yes" if direction == clip["direction"] else "no"
    return f"is the {clip['shape']} moving {direction}?", answer, "yes/no"


def make_synthetic_vqa(
    num_examples: int,
    *,
    modality: Literal["image", "video"] = "image",
    split: Split = "train",
    seed: int = 0,
    image_size: int = 64,
    num_frames: int = 8,
    max_objects: int = 3,
) -> Dataset:
    """One question per synthetic scene (image) or clip (video), in the VQAv2 loader's format.

    Columns: `question`, `question_id`, `image_id` (or `video_id`), `answers` (ten identical human answers, so the
    official VQA accuracy applies), `multiple_choice_answer`, `answer_type`, `answer_ids` / `answer_scores` (one
    answer, score 1) over the fixed vocabulary `SYNTHETIC_VQA_ANSWERS`, plus the media: `image` and `objects`, or the
    clip spec columns of `make_synthetic_video_text` (frames from `render_video`).
    """
    _check_split(split)
    if modality not in ("image", "video"):
        raise ValueError(f"modality must be 'image' or 'video', got {modality!r}.")
    rng = np.random.default_rng(seed)
    seen: set[tuple] = set()
    label2id = {answer: i for i, answer in enumerate(SYNTHETIC_VQA_ANSWERS)}
    rows = []
    for index in range(num_examples):
        if modality == "image":
            objects, _ = _sample_in_split(
                split, lambda: _sample_scene(rng, image_size, max_objects), lambda s: _scene_key(s[0]), seen
            )
            question, answer, answer_type = _image_question(rng, objects)
            media = {"image": _png_bytes(render_image(objects, image_size)), "image_id": index, "objects": objects}
        else:
            _check_video_args(image_size, num_frames)
            clip = _sample_in_split(split, lambda: _sample_clip(rng, image_size, num_frames), _clip_key, seen)
            question, answer, answer_type = _video_question(rng, clip)
            media = {"video_id": index, **clip}
        rows.append(
            {
                "question": question,
                "question_id": index,
                "answers": [answer] * 10,
                "multiple_choice_answer": answer,
                "answer_type": answer_type,
                "answer_ids": [label2id[answer]],
                "answer_scores": [1.0],
                **media,
            }
        )
    media_features = (
        {"image": Image(), "image_id": Value("int64"), "objects": List(_OBJECT_FEATURE)}
        if modality == "image"
        else {"video_id": Value("int64"), **_CLIP_FEATURES}
    )
    features = Features(
        {
            "question": Value("string"),
            "question_id": Value("int64"),
            "answers": List(Value("string")),
            "multiple_choice_answer": Value("string"),
            "answer_type": Value("string"),
            **vqa_answer_features(SYNTHETIC_VQA_ANSWERS),
            **media_features,
        }
    )
    return Dataset.from_list(rows, features=features)


def make_synthetic_splits(
    kind: Literal["image_text", "video_text", "vqa"], num_train: int, num_test: int, *, seed: int = 0, **kwargs
) -> DatasetDict:
    """A `DatasetDict` with disjoint `train` (seed `seed`) and `test` (seed `seed + 1`) splits of one kind of data."""
    makers = {
        "image_text": make_synthetic_image_text,
        "video_text": make_synthetic_video_text,
        "vqa": make_synthetic_vqa,
    }
    if kind not in makers:
        raise ValueError(f"kind must be one of {sorted(makers)}, got {kind!r}.")
    make = makers[kind]
    return DatasetDict(
        train=make(num_train, split="train", seed=seed, **kwargs),
        test=make(num_test, split="test", seed=seed + 1, **kwargs),
    )


# ------------------------------------------------------------------------------------------------------------------
# Writing files (to exercise the file-based loaders and real decoding)
# ------------------------------------------------------------------------------------------------------------------


def write_synthetic_images(dataset: Dataset, out_dir: str | os.PathLike, *, image_format: str = "png") -> str:
    """Write the images of a synthetic image-text data set as files plus an imagefolder-style `metadata.jsonl`.

    Returns the path of `metadata.jsonl`, whose lines hold `file_name`, `caption` and `image_id`.
    """
    extension = {"png": "png", "jpeg": "jpg", "jpg": "jpg"}.get(image_format.lower())
    if extension is None:
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}.")
    os.makedirs(out_dir, exist_ok=True)
    metadata_path = os.path.join(out_dir, "metadata.jsonl")
    with open(metadata_path, "w") as metadata:
        for example in dataset:
            file_name = f"{example['image_id']:06d}.{extension}"
            example["image"].convert("RGB").save(os.path.join(out_dir, file_name), quality=95)
            record = {"file_name": file_name, "caption": example["caption"], "image_id": example["image_id"]}
            metadata.write(json.dumps(record) + "\n")
    return metadata_path


def write_synthetic_videos(
    dataset: Dataset, out_dir: str | os.PathLike, *, container: Literal["mp4", "avi"] = "mp4", fps: int = 8
) -> str:
    """Encode synthetic clips as real video files with PyAV, plus a `metadata.jsonl` for `load_video_text_folder`.

    mp4 uses H.264 (near-lossless, crf 10), avi uses Motion JPEG. Returns the path of `metadata.jsonl`, whose lines
    hold `file_name`, `caption`, `video_id` and `direction`.
    """
    import av

    codecs = {"mp4": ("libx264", {"crf": "10"}), "avi": ("mjpeg", {"q:v": "2"})}
    if container not in codecs:
        raise ValueError(f"container must be 'mp4' or 'avi', got {container!r}.")
    codec, options = codecs[container]
    os.makedirs(out_dir, exist_ok=True)
    metadata_path = os.path.join(out_dir, "metadata.jsonl")
    with open(metadata_path, "w") as metadata:
        for example in dataset:
            frames = render_video(example)
            file_name = f"{example['video_id']:06d}.{container}"
            with av.open(os.path.join(out_dir, file_name), mode="w") as output:
                stream = output.add_stream(codec, rate=fps, options=options)
                stream.width, stream.height = frames.shape[2], frames.shape[1]
                stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
                for frame in frames:
                    output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                output.mux(stream.encode(None))  # flush the encoder
            record = {
                "file_name": file_name,
                "caption": example["caption"],
                "video_id": example["video_id"],
                "direction": example["direction"],
            }
            metadata.write(json.dumps(record) + "\n")
    return metadata_path
