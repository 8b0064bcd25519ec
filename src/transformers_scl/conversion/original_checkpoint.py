"""Reading an original SCL checkpoint safely: a PyTorch-Lightning `.ckpt` or a plain state dict (spec §6.1).

Files are unpickled with `torch.load(weights_only=True)`, which only rebuilds tensors and plain containers. Lightning
checkpoints also name a few Lightning classes in their metadata (callback classes as keys of `callbacks`, an
`AttributeDict` of hyper-parameters); those names, and only those, are bound to inert stand-ins (`dict` for
`AttributeDict`), so such files load safely without Lightning installed. Any other Python object makes the file refused
unless the caller trusts it (`trust_pickle=True`), because unpickling can run any code. Trusted loading also
substitutes a stand-in for classes whose module is not installed, since only tensors and plain values are needed here.
"""

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The checkpoint holds pickled Python objects and was not marked as trusted."""


@dataclass
class OriginalCheckpoint:
    """What the converter needs from an original checkpoint."""

    path: str
    state_dict: dict[str, torch.Tensor]
    training_config: dict[str, Any] | None = None  # `hyper_parameters['config']` (spec §6.3), if present
    metadata: dict[str, Any] = field(default_factory=dict)  # epoch, global_step, pytorch-lightning_version


class _MissingClass(dict):
    """Stand-in for a pickled class whose module is not installed; keeps its items and attributes."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_MissingClass,), {"__module__": f"<missing {module}>"})


class _LenientPickleModule:
    """A `pickle_module` for `torch.load` whose unpickler tolerates classes that cannot be imported."""

    Unpickler = _LenientUnpickler
    load = pickle.load
    loads = pickle.loads
    __name__ = "pickle"


def load_original_checkpoint(path: str | Path, trust_pickle: bool = False) -> OriginalCheckpoint:
    """Read the state dict, training config and run metadata of an original checkpoint.

    Args:
        path: A Lightning `.ckpt` (a dict with `state_dict`, `hyper_parameters`, …), a dict with a `model` entry, or
            a plain state dict saved with `torch.save`.
        trust_pickle: Allow unpickling arbitrary Python objects. Only for a file whose origin you trust.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if trust_pickle:
        raw = _torch_load(path, weights_only=False, pickle_module=_LenientPickleModule)
    else:
        raw = _safe_load(path)
    return _unpack(path, raw)


# Modules whose classes may appear in a Lightning checkpoint's metadata (spec §6.1: PL 1.3 `.ckpt` files).
_LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


def _safe_load(path: str):
    stand_ins: list[tuple[type, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(stand_ins):
                return _torch_load(path, weights_only=True)
        except pickle.UnpicklingError as error:
            match = re.search(r"Unsupported global: GLOBAL (\S+) was not", str(error))
            name = match.group(1) if match else None
            if name is None or not name.startswith(_LIGHTNING_MODULES) or name in {n for _, n in stand_ins}:
                reason = f"it needs {name}" if name else _weights_only_reason(error)
                raise UntrustedCheckpointError(
                    f"{path} contains pickled Python objects that safe loading (`torch.load(weights_only=True)`) "
                    f"refuses ({reason}). Unpickling them can run arbitrary code. If you trust where this file comes "
                    "from, convert it with `--trust-pickle` (`trust_pickle=True`)."
                ) from error
            # An inert stand-in: AttributeDict is a dict; a callback class is only ever a dictionary key.
            stand_in = dict if name.endswith(".AttributeDict") else type(name.rsplit(".", 1)[-1], (), {})
            stand_ins.append((stand_in, name))


def _weights_only_reason(error: Exception) -> str:
    match = re.search(r"WeightsUnpickler error: (.+)", str(error))
    return match.group(1).strip() if match else "unsupported content"


def _torch_load(path: str, **kwargs):
    # mmap keeps a 4.4 GB Lightning file (mostly optimizer state, spec §1.5) out of memory; old non-zip files can't.
    try:
        return torch.load(path, map_location="cpu", mmap=True, **kwargs)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", **kwargs)


def _unpack(path: str, raw: Any) -> OriginalCheckpoint:
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict or a state dict.")
    if "state_dict" in raw:
        state_dict = raw["state_dict"]
    elif "model" in raw and isinstance(raw["model"], dict):
        state_dict = raw["model"]  # spec §3.2: the reference also accepts ckpt['model']
    elif raw and all(isinstance(value, torch.Tensor) for value in raw.values()):
        state_dict = raw
    else:
        raise ValueError(
            f"{path} has no `state_dict` (Lightning) or `model` entry and is not a plain state dict; its top-level "
            f"keys are {sorted(map(str, raw))[:20]}."
        )
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"The state dict in {path} is empty or not a dict.")

    training_config = None
    hyper_parameters = raw.get("hyper_parameters") if state_dict is not raw else None
    if isinstance(hyper_parameters, dict):
        config = hyper_parameters.get("config", hyper_parameters)
        if isinstance(config, dict):
            training_config = {str(key): value for key, value in config.items()}
    metadata = {
        key: raw[key]
        for key in ("epoch", "global_step", "pytorch-lightning_version")
        if state_dict is not raw and key in raw
    }
    return OriginalCheckpoint(path, dict(state_dict), training_config, metadata)


__all__ = ["OriginalCheckpoint", "UntrustedCheckpointError", "load_original_checkpoint"]
