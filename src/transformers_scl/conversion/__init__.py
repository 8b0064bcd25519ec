"""Importing the original SCL checkpoints (IIGROUP/SCL Lightning `.ckpt` files) into transformers-scl.

`scl-convert-original CKPT OUT_DIR` (or `convert_original_checkpoint`) writes a model folder that
`from_pretrained` loads; `key_mapping` holds the key-by-key rules, `original_checkpoint` the safe file reading.
"""

from .convert_original import ConversionResult, convert_original_checkpoint, detect_task, infer_config, main
from .key_mapping import CheckpointKeyError, map_state_dict
from .original_checkpoint import (
    CheckpointFileError,
    OriginalCheckpoint,
    UntrustedCheckpointError,
    load_original_checkpoint,
)

__all__ = [
    "CheckpointFileError",
    "CheckpointKeyError",
    "ConversionResult",
    "OriginalCheckpoint",
    "UntrustedCheckpointError",
    "convert_original_checkpoint",
    "detect_task",
    "infer_config",
    "load_original_checkpoint",
    "main",
    "map_state_dict",
]
