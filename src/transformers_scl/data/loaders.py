"""Image-text and video-text caption data as one row per (media, caption) pair.

Every loader returns the same columns, so the rest of the pipeline does not care where data came from:

* `image` (a `datasets.Image`) or `video` (a file path, decoded later with PyAV by the video processor; not
  `datasets.Video`, which needs torchcodec);
* `caption`: one string per row; an image with five captions gives five rows;
* `image_id` / `video_id`: the group key shared by all captions of one image or video, which retrieval evaluation
  needs to know every correct caption of an image (`caption_groups`).

Sources: any `datasets.Dataset` or streaming `datasets.IterableDataset` (`image_text_pairs`, `video_text_pairs`), a
folder with an imagefolder-style `metadata.jsonl` (`load_image_text_folder`, `load_video_text_folder`), and the
Karpathy-split caption files of COCO and Flickr30K (`load_karpathy_captions`). Media files are not opened here: a
missing or corrupt file is found, logged and skipped when the example is decoded (`MediaTextTransform`).
"""

import json
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, IterableDataset, Value, load_dataset, load_from_disk
from datasets import Image as ImageFeature

__all__ = [
    "caption_groups",
    "load_caption_pairs",
    "image_text_pairs",
    "load_image_text_folder",
    "load_karpathy_captions",
    "load_video_text_folder",
    "video_text_pairs",
]

AnyDataset = Dataset | IterableDataset


def _require_columns(dataset: AnyDataset, columns: Sequence[str]) -> None:
    available = dataset.column_names
    if available is None:  # a streaming data set whose columns are only known after reading
        return
    missing = [column for column in columns if column not in available]
    if missing:
        raise ValueError(f"Column(s) {missing} not found in the data set; available columns: {available}.")


def _as_captions(value: Any) -> list[str]:
    """A caption cell (a string or a list of strings) as a list of non-empty, stripped captions."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(caption, str) for caption in value):
        raise TypeError(f"A caption must be a string or a list of strings, got {value!r}.")
    return [caption.strip() for caption in value if caption.strip()]


def _rename_to_standard_columns(
    dataset: AnyDataset, media_column: str, media_name: str, caption_column: str, id_column: str | None, id_name: str
) -> AnyDataset:
    required = [media_column, caption_column] + ([id_column] if id_column else [])
    _require_columns(dataset, required)
    renames = {media_column: media_name, caption_column: "caption"}
    if id_column:
        renames[id_column] = id_name
    renames = {old: new for old, new in renames.items() if old != new}
    if dataset.column_names is not None:
        clashes = [new for new in renames.values() if new in dataset.column_names]
        if clashes:
            raise ValueError(
                f"Cannot rename columns {list(renames)} to {list(renames.values())}: the data set already has "
                f"{clashes}. Remove or rename those columns first."
            )
    return dataset.rename_columns(renames) if renames else dataset


def _pair_features(features: Features | None, id_name: str) -> Features | None:
    """The features after expansion: one string `caption` per row, and an int64 id column if there was none."""
    if features is None:
        return None
    new_features = Features({name: feature for name, feature in features.items()})
    new_features["caption"] = Value("string")
    if id_name not in new_features:
        new_features[id_name] = Value("int64")
    return new_features


def _caption_pairs(
    dataset: AnyDataset, media_column: str, media_name: str, caption_column: str, id_column: str | None, id_name: str
) -> AnyDataset:
    dataset = _rename_to_standard_columns(dataset, media_column, media_name, caption_column, id_column, id_name)

    # Expansion copies the media cell of each row once per caption; keep images encoded (paths or bytes) meanwhile.
    features = dataset.features
    decoded_image = (
        features is not None and isinstance(features.get(media_name), ImageFeature) and features[media_name].decode
    )
    if decoded_image:
        dataset = dataset.cast_column(media_name, ImageFeature(decode=False))
        features = dataset.features

    def expand(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in batch}
        if id_name not in out:
            out[id_name] = []
        for row, index in enumerate(indices):
            for caption in _as_captions(batch["caption"][row]):
                for name, values in batch.items():
                    out[name].append(caption if name == "caption" else values[row])
                if id_name not in batch:
                    out[id_name].append(index)
        return out

    dataset = dataset.map(
        expand,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=_pair_features(features, id_name),
        **({"desc": "One row per caption"} if isinstance(dataset, Dataset) else {}),
    )
    if decoded_image and isinstance(dataset, Dataset):
        # A streaming data set keeps its images undecoded (`datasets` would not decode them after a typed `map`);
        # `MediaTextTransform` decodes them, and skips the unreadable ones.
        dataset = dataset.cast_column(media_name, ImageFeature())
    return dataset


def image_text_pairs(
    dataset: AnyDataset, *, image_column: str = "image", caption_column: str = "caption", id_column: str | None = None
) -> AnyDataset:
    """One row per (image, caption) of any `Dataset` or `IterableDataset`, with columns `image`, `caption`, `image_id`.

    Args:
        dataset: a data set with an image column (a `datasets.Image`, a path or bytes) and a caption column holding a
            string or a list of strings.
        image_column, caption_column: their names; they are renamed to `image` and `caption`.
        id_column: a column identifying the image (renamed `image_id`); by default the row index is used, which for a
            streaming data set counts rows in the order they are read.

    Rows without any caption are dropped. Other columns are kept and repeated for every caption. Expanding a
    map-style data set whose images are stored as bytes stores the bytes once per caption in the cache. In a
    streaming result the `image` column holds undecoded `{"bytes", "path"}` cells (see `decode_image`).
    """
    return _caption_pairs(dataset, image_column, "image", caption_column, id_column, "image_id")


def video_text_pairs(
    dataset: AnyDataset, *, video_column: str = "video", caption_column: str = "caption", id_column: str | None = None
) -> AnyDataset:
    """One row per (video, caption): columns `video` (a file path), `caption`, `video_id`; see `image_text_pairs`."""
    return _caption_pairs(dataset, video_column, "video", caption_column, id_column, "video_id")


def _load_metadata_folder(
    folder: str | os.PathLike, split: str | None, media_name: str, streaming: bool, load_kwargs: dict
) -> AnyDataset:
    root = Path(folder) / split if split else Path(folder)
    metadata_path = root / "metadata.jsonl"
    if not metadata_path.is_file():
        raise FileNotFoundError(f"No metadata.jsonl in {root}: expected one JSON object per line with 'file_name'.")
    dataset = load_dataset("json", data_files=str(metadata_path), split="train", streaming=streaming, **load_kwargs)
    _require_columns(dataset, ["file_name"])
    root = str(root.resolve())
    features = None
    if dataset.features is not None:
        features = Features({name: feature for name, feature in dataset.features.items() if name != "file_name"})
        features[media_name] = Value("string")
    dataset = dataset.map(
        lambda example: {media_name: os.path.join(root, example["file_name"])},
        remove_columns=["file_name"],
        features=features,
    )
    if media_name == "image" and isinstance(dataset, Dataset):
        dataset = dataset.cast_column("image", ImageFeature())
    return dataset


def load_image_text_folder(
    folder: str | os.PathLike,
    *,
    caption_column: str = "caption",
    split: str | None = None,
    streaming: bool = False,
    **load_kwargs,
) -> AnyDataset:
    """Image-caption pairs from a folder of images with an imagefolder-style `metadata.jsonl`.

    Each line of `metadata.jsonl` (in `folder`, or in `folder/split`) holds the image's `file_name`, relative to that
    folder, and its caption(s) under `caption_column`; other fields are kept. Extra keyword arguments go to
    `datasets.load_dataset("json", ...)`, e.g. `cache_dir`. With `streaming=True` the `image` column holds paths,
    which `MediaTextTransform` decodes.
    """
    dataset = _load_metadata_folder(folder, split, "image", streaming, load_kwargs)
    return image_text_pairs(dataset, caption_column=caption_column)


def load_video_text_folder(
    folder: str | os.PathLike,
    *,
    caption_column: str = "caption",
    split: str | None = None,
    streaming: bool = False,
    **load_kwargs,
) -> AnyDataset:
    """Video-caption pairs from a folder of videos with a `metadata.jsonl`; the `video` column holds file paths."""
    dataset = _load_metadata_folder(folder, split, "video", streaming, load_kwargs)
    return video_text_pairs(dataset, caption_column=caption_column)


KARPATHY_SPLITS = ("train", "restval", "val", "test")


def load_karpathy_captions(
    annotation_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    split: str | Sequence[str] = "test",
    streaming: bool = False,
) -> AnyDataset:
    """Caption pairs from a Karpathy-split file: `dataset_coco.json` or `dataset_flickr30k.json`.

    The file is `{"images": [{"filepath"?, "filename", "split", "imgid"?, "sentences": [{"raw"}]}]}`; COCO images
    live in `image_root/filepath/filename`, Flickr30K images (no `filepath`) in `image_root/filename`.

    Args:
        split: one of train/restval/val/test, or several (COCO fine-tuning trains on `("train", "restval")`,
            Flickr30K on `"train"`, spec §3.2).

    Returns:
        Columns `image`, `caption`, `image_id` (the file's `imgid`, else the image's position in the file).
    """
    splits = (split,) if isinstance(split, str) else tuple(split)
    unknown = [name for name in splits if name not in KARPATHY_SPLITS]
    if unknown:
        raise ValueError(f"Unknown Karpathy split(s) {unknown}; choose from {KARPATHY_SPLITS}.")
    with open(annotation_file) as file:
        content = json.load(file)
    if not isinstance(content, dict) or "images" not in content:
        raise ValueError(
            f"{annotation_file} is not a Karpathy-split file: expected a JSON object with an 'images' list."
        )
    columns: dict[str, list] = {"image": [], "caption": [], "image_id": []}
    for position, record in enumerate(content["images"]):
        if record["split"] not in splits:
            continue
        path = os.path.join(image_root, record.get("filepath", ""), record["filename"])
        for sentence in record["sentences"]:
            columns["image"].append(path)
            columns["caption"].append(sentence["raw"].strip())
            columns["image_id"].append(record.get("imgid", position))
    if not columns["image"]:
        present = sorted({record["split"] for record in content["images"]})
        raise ValueError(f"No image of split(s) {list(splits)} in {annotation_file}; its splits are {present}.")
    features = Features({"image": ImageFeature(), "caption": Value("string"), "image_id": Value("int64")})
    dataset = Dataset.from_dict(columns, features=features)
    return dataset.to_iterable_dataset() if streaming else dataset


def _has_metadata(folder: Path, split: str | None = None) -> bool:
    return ((folder / split) if split else folder).joinpath("metadata.jsonl").is_file()


def _karpathy_split(path: Path, split: str, image_root, streaming: bool) -> AnyDataset | None:
    if image_root is None:
        raise ValueError(f"{path} looks like a Karpathy-split caption file: it needs an image root (images only).")
    splits = split.split(",")
    with open(path) as file:
        present = {record["split"] for record in json.load(file)["images"]}
    return (
        load_karpathy_captions(path, image_root, split=splits, streaming=streaming) if set(splits) <= present else None
    )


def _folder_split(path: Path, modality: str, split: str, train_split: str, **kwargs) -> AnyDataset | None:
    if "," in split:
        raise ValueError(f"A metadata.jsonl folder has one sub-folder per split; pass one split, not {split!r}.")
    if not _has_metadata(path, split) and split != train_split:
        return None  # a flat folder is all training data
    load = load_image_text_folder if modality == "image" else load_video_text_folder
    return load(path, split=split if _has_metadata(path, split) else None, **kwargs)


def _saved_split(path: Path, split: str, train_split: str, streaming: bool) -> AnyDataset | None:
    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        dataset = dataset.get(split)
    elif split != train_split:
        dataset = None
    return dataset.to_iterable_dataset() if streaming and dataset is not None else dataset


def _hub_split(source: str, config_name: str | None, split: str, **kwargs) -> AnyDataset | None:
    try:
        return load_dataset(source, config_name, split="+".join(split.split(",")), **kwargs)
    except ValueError as error:
        if "Unknown split" in str(error):
            return None
        raise


def load_caption_pairs(
    source: str | os.PathLike,
    modality: str = "image",
    split: str = "train",
    *,
    train_split: str = "train",
    image_root: str | os.PathLike | None = None,
    media_column: str | None = None,
    caption_column: str = "caption",
    id_column: str | None = None,
    config_name: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> AnyDataset | None:
    """One row per (media, caption) of `split` of any supported source; `None` if the source has no such split.

    Sources: a Karpathy-split JSON file (images under `image_root`; `split` may list several, `"train,restval"`), a
    folder with an imagefolder-style `metadata.jsonl` (one sub-folder per split, or flat: then it is all
    `train_split`), a folder written by `save_to_disk`, or a `datasets` name (`config_name`; several splits join
    with `+`), whose `media_column` (default: `modality`) and `caption_column` are read.
    """
    if modality not in ("image", "video"):
        raise ValueError(f"modality must be 'image' or 'video', got {modality!r}.")
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        return _karpathy_split(path, split, image_root if modality == "image" else None, streaming)
    if path.is_dir() and (_has_metadata(path, split.split(",")[0]) or _has_metadata(path)):
        return _folder_split(path, modality, split, train_split, caption_column=caption_column, streaming=streaming)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file()):
        dataset = _saved_split(path, split, train_split, streaming)
    else:
        dataset = _hub_split(str(source), config_name, split, streaming=streaming, cache_dir=cache_dir)
    if dataset is None:
        return None
    pair = image_text_pairs if modality == "image" else video_text_pairs
    column = media_column or modality
    return pair(dataset, **{f"{modality}_column": column}, caption_column=caption_column, id_column=id_column)


def caption_groups(group_ids: Sequence[Hashable]) -> tuple[list[int], list[list[int]], list[Hashable]]:
    """Retrieval ground truth from the `image_id` (or `video_id`) column of a pairs data set.

    Returns:
        `(text_to_image, image_to_texts, image_ids)`: for each caption row the index of its image, for each image the
        indices of its caption rows, and the distinct image ids in order of first appearance (image index -> id).
    """
    index_of: dict[Hashable, int] = {}
    text_to_image: list[int] = []
    image_to_texts: list[list[int]] = []
    for row, group in enumerate(group_ids):
        if group not in index_of:
            index_of[group] = len(image_to_texts)
            image_to_texts.append([])
        text_to_image.append(index_of[group])
        image_to_texts[index_of[group]].append(row)
    return text_to_image, image_to_texts, list(index_of)
