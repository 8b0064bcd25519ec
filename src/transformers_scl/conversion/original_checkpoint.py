"""Reading an original SCL checkpoint safely: a PyTorch-Lightning `.ckpt` or a plain state dict (spec §6.1).

Files are unpickled with `torch.load(weights_only=True)`, which only rebuilds tensors and plain containers. Lightning
checkpoints also name a few Lightning classes in their metadata (callback classes as keys of `callbacks`, an
`AttributeDict` of hyper-parameters); those names, and only those, are bound to inert stand-ins (`dict` for
`AttributeDict`), so such files load safely without Lightning installed. Any other Python object makes the file refused
unless the caller trusts it (`trust_pickle=True`), because unpickling can run any code. Trusted loading also
substitutes a stand-in for classes whose module is not installed, since only tensors and plain values are needed here.

Before any unpickling, the file itself is checked, so that each failure gets its own message: an empty file, a zip
archive cut short or damaged (an interrupted download, with the size found and the size expected where the archive or
the released file names tell it), a file that is no `torch.save` output at all, and the Python objects the pickle
needs, read from its opcodes (so they are named whatever a torch version's own error message says).
"""

import _compat_pickle
import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
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

    Raises:
        CheckpointFileError: The file is empty, truncated or corrupt, or not a `torch.save` file at all.
        UntrustedCheckpointError: The file holds Python objects that safe loading refuses (each one is named).
    """
    path = str(path)
    if Path(path).is_dir():
        raise FileNotFoundError(f"{path} is a directory, not a checkpoint file.")
    if not Path(path).is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    pickle_globals = _check_file(path)
    try:
        if trust_pickle:
            raw = _torch_load(path, weights_only=False, pickle_module=_LenientPickleModule)
        else:
            raw = _safe_load(path, pickle_globals)
    except (pickle.UnpicklingError, CheckpointFileError):
        raise
    except (EOFError, RuntimeError) as error:  # torch's stream reader: a short record, a bad CRC, …
        # The structure checks passed, so the damage is inside the tensor data.
        raise CheckpointFileError(_damaged(path, f"reading it failed ({type(error).__name__}: {error})")) from error
    return _unpack(path, raw)


# ---------------------------------------------------------------------------------------------------------------------
# File checks: every failure of an interrupted download or a wrong file gets its own message, before torch.load.
# ---------------------------------------------------------------------------------------------------------------------


class CheckpointFileError(ValueError):
    """The file is not a readable `torch.save` checkpoint: empty, truncated or corrupt, or another kind of file."""


# spec §6.1: the released checkpoints and their sizes on the Hub (`jiyatai/SCL`).
RELEASED_CHECKPOINT_SIZES = {"MGSC-100k.ckpt": 4.43e9, "GLSCL-100k.ckpt": 4.43e9}
_ZIP_MAGIC = b"PK\x03\x04"
_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_ZIP64_END_RECORD = b"PK\x06\x06"


def _size(num_bytes: float) -> str:
    """A size for people, e.g. "4.43 GB (4,430,000,000 bytes)"."""
    if num_bytes < 1e6:
        return f"{int(num_bytes):,} bytes"
    scaled = f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"
    return f"{scaled} ({int(num_bytes):,} bytes)"


def _damaged(path: str, detail: str, expected_size: float | None = None) -> str:
    found = os.path.getsize(path)
    if expected_size is None:
        expected_size = RELEASED_CHECKPOINT_SIZES.get(Path(path).name)
        expected = f"; the released {Path(path).name} is {_size(expected_size)}" if expected_size else ""
    else:
        expected = f"; its zip directory says it should be {_size(expected_size)}"
    return (
        f"{path} is an incomplete or corrupt download: {detail}. The file is {_size(found)}"
        f"{expected}. Download it again (and compare its size or checksum with the source)."
    )


def _zip_expected_size(path: str) -> int | None:
    """The size a zip archive declares for itself: where its central directory ends, plus the end records after it.

    A file missing bytes in the middle keeps its end record, whose directory offset then points past the real one.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        file.seek(max(0, size - 65_633))  # end record (22 bytes) + comment (< 64 KiB) + ZIP64 record and locator (76)
        tail = file.read()
    record_at = tail.rfind(_END_OF_CENTRAL_DIRECTORY)
    if record_at < 0 or len(tail) - record_at < 22:
        return None
    directory_size, directory_offset = struct.unpack("<II", tail[record_at + 12 : record_at + 20])
    directory_end_at = record_at  # where the central directory ends in this file
    zip64_at = record_at - 20 - 56
    if zip64_at >= 0 and tail[zip64_at : zip64_at + 4] == _ZIP64_END_RECORD:
        # ZIP64 (torch always writes it; needed over 4 GB): the 64-bit record follows the directory.
        directory_size, directory_offset = struct.unpack("<QQ", tail[zip64_at + 40 : zip64_at + 56])
        directory_end_at = zip64_at
    return directory_offset + directory_size + len(tail) - directory_end_at


def _check_file(path: str) -> set[str]:
    """Check that `path` is a complete `torch.save` file; return the qualified names of the globals its pickle uses."""
    size = os.path.getsize(path)
    if size == 0:
        released = RELEASED_CHECKPOINT_SIZES.get(Path(path).name)
        hint = f" (the released {Path(path).name} is {_size(released)})" if released else ""
        raise CheckpointFileError(
            f"{path} is empty (0 bytes): an interrupted or failed download{hint}. Download it again."
        )
    with open(path, "rb") as file:
        head = file.read(4)
    if head == _ZIP_MAGIC:
        return _check_zip(path)
    if head[:1] == pickle.PROTO:
        return _check_legacy(path)
    raise CheckpointFileError(
        f"{path} is not a PyTorch checkpoint: it is neither a zip archive (the `torch.save` format since torch 1.6) "
        f"nor a legacy `torch.save` file (it starts with bytes {head!r})."
    )


def _check_zip(path: str) -> set[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            size = os.path.getsize(path)
            cut = [entry.filename for entry in entries if entry.header_offset + entry.compress_size > size]
            if cut:
                raise CheckpointFileError(_damaged(path, f"{len(cut)} entries end past the end of the file"))
            pickles = [
                entry for entry in entries if entry.filename.endswith("/data.pkl") or entry.filename == "data.pkl"
            ]
            if not pickles:
                raise CheckpointFileError(
                    f"{path} is not a PyTorch checkpoint: it is a zip archive without the `data.pkl` that `torch.save` "
                    f"writes (entries: {[entry.filename for entry in entries[:5]]})."
                )
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error) as error:
        expected = _zip_expected_size(path)
        detail = (
            "the zip archive has no end (its central directory is missing)"
            if expected is None
            else (f"the zip archive is damaged ({error})")
        )
        raise CheckpointFileError(_damaged(path, detail, expected)) from error
    try:
        return _pickle_globals(io.BytesIO(data))
    except (ValueError, EOFError) as error:  # pickletools reports a malformed stream as ValueError
        raise CheckpointFileError(_damaged(path, f"its data.pkl is not a valid pickle ({error})")) from error


def _check_legacy(path: str) -> set[str]:
    # The legacy format is a series of pickles: magic number, protocol version, system info, then the object.
    with open(path, "rb") as file:
        try:
            magic = _RefusingUnpickler(file).load()
        except Exception:  # anything that is not a plain pickled int: not a torch file
            magic = None
        if magic != torch.serialization.MAGIC_NUMBER:
            raise CheckpointFileError(
                f"{path} is not a PyTorch checkpoint: it is neither a zip archive nor a legacy `torch.save` file "
                "(no torch magic number)."
            )
        try:
            names: set[str] = set()
            for _ in range(3):
                names |= _pickle_globals(file)
            return names
        except (ValueError, EOFError) as error:
            raise CheckpointFileError(
                _damaged(path, f"its pickled content is cut off or damaged ({error})")
            ) from error


class _RefusingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not expected here")


def _stack_global_name(pushed: list[str | None]) -> str:
    """STACK_GLOBAL (protocol 4+) takes module and name from the top of the stack."""
    if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
        return f"{pushed[-2]}.{pushed[-1]}"
    return "<a global whose name is computed at load time>"


def _global_name(argument: str, protocol: int) -> str:
    """GLOBAL (protocols 0-3; torch.save writes protocol 2) carries "module name" as its argument."""
    module, qualname = argument.split(" ", 1)
    if protocol < 3:  # Python 2 names, mapped as `pickle` maps them when loading (`__builtin__` -> builtins)
        module, qualname = _compat_pickle.NAME_MAPPING.get((module, qualname), (module, qualname))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{qualname}"


def _pickle_globals(stream) -> set[str]:
    """Qualified names of every global one pickle in `stream` refers to, read from its opcodes without executing it."""
    names: set[str] = set()
    # STACK_GLOBAL (protocol 4+) takes module and name from the stack: track the values that opcodes push, as far as
    # they are strings (pushed directly or fetched from the memo); anything else counts as a non-string.
    pushed: list[str | None] = []
    memo: dict[int, str | None] = {}
    protocol = 0
    for opcode, argument, _ in pickletools.genops(stream):
        name = opcode.name
        if name == "PROTO":
            protocol = argument
        elif name == "FRAME":
            pass
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if name == "MEMOIZE" else int(argument)] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(int(argument)))
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            pushed.append(argument)
        elif name in ("STACK_GLOBAL", "GLOBAL"):
            names.add(_stack_global_name(pushed) if name == "STACK_GLOBAL" else _global_name(argument, protocol))
            pushed.append(None)
        elif name == "STOP":
            break
        else:
            pushed.append(None)
        del pushed[:-2]  # only the top two matter
    return names


# ---------------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------------

# Modules whose classes may appear in a Lightning checkpoint's metadata (spec §6.1: PL 1.3 `.ckpt` files).
_LIGHTNING_MODULES = ("pytorch_lightning.", "lightning.", "lightning_fabric.")


def _allowed_globals() -> set[str] | None:
    """What `torch.load(weights_only=True)` accepts: its built-in allowlist plus the user's safe globals."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except (ImportError, TypeError):  # a private helper; without it, trust torch's own refusal and message
        return None
    for entry in torch.serialization.get_safe_globals():
        obj, name = entry if isinstance(entry, tuple) else (entry, f"{entry.__module__}.{entry.__qualname__}")
        allowed.add(name)
    return allowed


def _refused_globals(names: set[str]) -> list[str]:
    allowed = _allowed_globals()
    if allowed is None:
        return []
    return sorted(name for name in names if name not in allowed and not name.startswith(_LIGHTNING_MODULES))


def _safe_load(path: str, pickle_globals: set[str]):
    # Inert stand-ins for Lightning metadata: AttributeDict is a dict; a callback class is only ever a dictionary key.
    stand_ins = [
        (dict if name.endswith(".AttributeDict") else type(name.rsplit(".", 1)[-1], (), {}), name)
        for name in sorted(pickle_globals)
        if name.startswith(_LIGHTNING_MODULES)
    ]
    refused = _refused_globals(pickle_globals)
    if refused:  # refuse before torch.load: the names come from the file, whatever torch's message says
        raise _untrusted(path, f"it needs {', '.join(refused)}")
    try:
        with torch.serialization.safe_globals(stand_ins):
            return _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        raise _untrusted(path, _weights_only_reason(error)) from error


def _untrusted(path: str, reason: str) -> UntrustedCheckpointError:
    return UntrustedCheckpointError(
        f"{path} contains pickled Python objects that safe loading (`torch.load(weights_only=True)`) refuses "
        f"({reason}). Unpickling them can run arbitrary code. If you trust where this file comes from, convert it "
        "with `--trust-pickle` (`trust_pickle=True`)."
    )


def _weights_only_reason(error: Exception) -> str:
    match = re.search(r"WeightsUnpickler error: (.+)", str(error)) or re.search(
        r"(Trying to load unsupported .+?\.)(?:\s|$)", str(error)
    )
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


__all__ = ["CheckpointFileError", "OriginalCheckpoint", "UntrustedCheckpointError", "load_original_checkpoint"]
