"""Plain-dict checkpoints and atomic file writes.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
torch.load(path, weights_only=True) on any device. Every file is written to a temporary name in
the same folder and renamed over the target, so a reader never sees half a file and a crash never
destroys the previous good copy. Long per-series lists are packed on the way out and unpacked on
the way in (pack, unpack). What the dict holds, the format's versions and every migration of an
older one: run.py (RunMeta).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import LstmcastError
from .outputs import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from .run import FORMAT_VERSION, READABLE_VERSIONS  # noqa: F401 (re-exported; run.py owns the format)

BEST, LAST = "model.pt", "last.pt"
_PLAIN = {str, int, float, bool, type(None)}

# Per-series lists (ids, timestamps, scaling numbers) of PACK_MIN or more entries are packed when
# saved: torch.load(weights_only=True) unpickles a list element by element in Python (about 0.45 s
# per 100,000 strings), while one string and one tensor load in milliseconds. A payload with a
# packed list is written as format PACKED_VERSION (older lstmcast then refuses it in one line);
# smaller runs are written exactly as before.
PACK_MIN = 1024
PACKED_VERSION = 5
_PACKED = "__lstmcast_packed__"


def on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (through dicts, lists and tuples) moved to the CPU and
    detached: a checkpoint of a GPU-trained run must load where there is no GPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        # Per-series lists (ids, timestamps) hold no tensors: kept as they are, not rebuilt (their
        # element types gathered in C: a Python loop over 100,000 ids cost a second per save).
        if set(map(type, value)) <= _PLAIN:
            return value
        return type(value)(on_cpu(item) for item in value)
    return value


def pack(value: Any) -> tuple[Any, bool]:
    """(`value` with every long list of strings (None allowed) or of floats packed, whether any
    was). Strings: {_PACKED: "str", "text": all of them joined, "lengths": int32 tensor, -1 for
    None}; floats: {_PACKED: "float", "values": float64 tensor}. unpack() restores them exactly."""
    if isinstance(value, dict):
        items = {key: pack(item) for key, item in value.items()}
        return {key: item for key, (item, _) in items.items()}, any(done for _, done in items.values())
    if isinstance(value, (list, tuple)):
        kinds = set(map(type, value))
        if isinstance(value, list) and len(value) >= PACK_MIN:
            if str in kinds and kinds <= {str, type(None)}:
                lengths = torch.tensor([-1 if item is None else len(item) for item in value], dtype=torch.int32)
                return {_PACKED: "str", "text": "".join(item for item in value if item is not None),
                        "lengths": lengths}, True
            if kinds == {float}:
                return {_PACKED: "float", "values": torch.tensor(value, dtype=torch.float64)}, True
        if kinds <= _PLAIN:
            return value, False
        items = [pack(item) for item in value]
        return type(value)(item for item, _ in items), any(done for _, done in items)
    return value, False


def unpack(value: Any) -> Any:
    """The inverse of pack: every packed list back as a list of str / None or of float."""
    if isinstance(value, dict):
        kind = value.get(_PACKED)
        if kind == "float":
            return value["values"].tolist()
        if kind == "str":
            text, out, at = value["text"], [], 0
            for length in value["lengths"].tolist():
                if length < 0:
                    out.append(None)
                else:
                    out.append(text[at: at + length])
                    at += length
            return out
        return {key: unpack(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not set(map(type, value)) <= _PLAIN:
        return type(value)(unpack(item) for item in value)
    return value


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write `payload` (CPU tensors only, whatever device trained it) atomically to `path`, its
    long per-series lists packed (format PACKED_VERSION when any was)."""
    packed, any_packed = pack({"format_version": FORMAT_VERSION, **payload})
    if any_packed:   # the version it unpacks to is kept beside the one that says "packed"
        packed = {**packed, "format_version": PACKED_VERSION, "unpacked_version": packed["format_version"]}
    buffer = io.BytesIO()
    torch.save(on_cpu(packed), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, require: tuple[str, ...] = (),
                    upgrade: Callable[[dict], dict] | None = None) -> dict[str, Any]:
    """Load a checkpoint onto the CPU, whatever device it was trained on; `require`: entries it
    must have (a cut-down or foreign dict is the user's to replace, not a crash), checked after
    `upgrade` (run.upgrade_payload: an older layout in today's) when given."""
    path = Path(path)
    if not path.is_file():
        raise LstmcastError(f"{path}: checkpoint not found; is this a run directory made by "
                            f"'lstmcast train'?")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise LstmcastError(f"{path}: not a readable lstmcast checkpoint ({type(exc).__name__})") from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version == PACKED_VERSION and payload.get("unpacked_version") in READABLE_VERSIONS:
        payload = unpack(payload)
        version = payload["format_version"] = payload.pop("unpacked_version")
    if version not in READABLE_VERSIONS:
        raise LstmcastError(f"{path}: checkpoint format {version!r} is not supported by this "
                            f"lstmcast (format {FORMAT_VERSION}); retrain or use a matching version")
    if upgrade is not None:
        payload = upgrade(payload)
    missing = [key for key in require if key not in payload]
    if missing:
        raise LstmcastError(f"{path}: not a complete lstmcast checkpoint (missing {', '.join(missing)}); "
                            f"retrain the run")
    models = payload.get("models")
    if "models" in require and (not isinstance(models, list) or not models):
        raise LstmcastError(f"{path}: holds no trained weights ('models' is {type(models).__name__}"
                            f"{' and empty' if isinstance(models, list) else ''}); retrain the run")
    return payload
