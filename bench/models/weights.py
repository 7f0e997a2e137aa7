"""Safe loading of model weights: ``torch.load(..., weights_only=True)`` only, a missing or unfit file in one line
saying which file to put where, and atomic saves. Shared by every model loader (bench/models/)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BenchError

log = logging.getLogger(__name__)


def atomic_torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from collaborators
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------- pretrained and user models

def _need_file(path: Path, subject: str, hint: str) -> Path:
    """``path`` when it is a file; else one line ``<subject> <path> is a directory, not a file; <hint>`` or
    ``<subject> <path> does not exist; <hint>``."""
    from ..checks import special_file

    why = special_file(path)
    if why:
        raise BenchError(f"{subject} {why}; {hint}")
    if path.is_dir():
        raise BenchError(f"{subject} {path} is a directory, not a file; {hint}")
    if not path.is_file():
        raise BenchError(f"{subject} {path} does not exist; {hint}")
    return path


def _shape(t: Any) -> str:
    try:
        return "×".join(map(str, t.shape)) or "scalar"
    except Exception:  # an uninitialised (lazy) parameter
        return "uninitialised"


def _listing(kind: str, items: list[str]) -> str:
    """``<kind> (<first 3 items>; … and N more)``: whole items only, never a cut word."""
    more = f"; … and {len(items) - 3} more" if len(items) > 3 else ""
    return f"{kind} ({'; '.join(items[:3])}{more})"


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The error's type and the first line of its text, shortened at a sentence or word end, never mid-word."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    if len(line) > limit:
        sentence, space = line.rfind(". ", 0, limit), line.rfind(" ", 0, limit)
        if sentence > 0:
            line = line[:sentence + 1]
        elif space > 0:
            line = line[:space].rstrip(",;:") + " …"
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _weights_only_refusal(text: str) -> tuple[str | None, str]:
    """(the refused global's name or None, the one-line reason) of a ``torch.load(weights_only=True)``
    failure; its first line is torch's general advice, the reason comes after it."""
    import re

    reason = ""
    for line in text.splitlines()[1:]:
        line = line.split("WeightsUnpickler error:")[-1].strip()
        if line and not line.startswith(("(1)", "(2)", "Check the documentation", "Please file an issue")):
            reason = line
            break
    found = (re.search(r"GLOBAL\s+([A-Za-z_][\w.]*)", reason)
             or re.search(r"but got <class '([\w.]+)'>", reason)
             or re.search(r"unrecognized function <(?:built-in )?(?:function|class) '?([\w.]+)", reason)
             or re.search(r"Unsupported class\s+([A-Za-z_][\w.]*)", reason))
    name = found.group(1) if found else None
    if name and "." not in name:  # torch names builtins without their module: builtins.exec → exec
        name = f"builtins.{name}"
    return name, reason


def _mismatch_message(model: nn.Module, state: dict, strict: bool) -> str | None:
    """The one-line account of how ``state`` differs from ``model``'s state_dict (None when it fits): how many
    keys are of another shape, missing from the file, unexpected in it, and the first 3 of each with shapes."""
    full = model.state_dict()
    own = {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}
    shape = [f"{k}: file {_shape(state[k])}, model {_shape(v)}" for k, v in own.items()
             if k in state and not nn.parameter.is_lazy(v) and tuple(state[k].shape) != tuple(v.shape)]
    missing = [f"{k}: model {_shape(v)}" for k, v in own.items() if k not in state] if strict else []
    unexpected = [f"{k}: file {_shape(v)}" for k, v in state.items() if k not in full] if strict else []
    parts = []
    if shape:
        parts.append(_listing(f"size mismatch in {len(shape)} key{'s' * (len(shape) > 1)}", shape))
    if missing:
        parts.append(_listing(f"{len(missing)} key{'s' * (len(missing) > 1)} of the model missing from the file",
                              missing))
    if unexpected:
        parts.append(_listing(f"{len(unexpected)} unexpected key{'s' * (len(unexpected) > 1)} in the file",
                              unexpected))
    return "; ".join(parts) or None


def _load_state(model: nn.Module, path: Path, what: str, strict: bool = True) -> None:
    """Load a state_dict file (``weights_only=True``; ``.safetensors`` with safetensors) into ``model``; common
    wrappers are unpacked:
    ``{"state_dict": …}`` / ``{"model": …}`` and the ``module.`` prefix of DataParallel. A file holding other
    Python objects is refused without running any of it; every failure is a one-line ``BenchError``."""
    import pickle

    path = _need_file(Path(path), f"model '{what}':", "put the state_dict there (torch.save(model.state_dict(), path))")
    try:
        if path.suffix == ".safetensors":  # tensors only by design (timm, Hugging Face)
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text:
            name, reason = _weights_only_refusal(text)
            if name:  # a global torch's safe loader does not admit: never imported, never called
                raise BenchError(f"model '{what}': {path} holds Python objects other than tensors ({name}); it was "
                                 f"refused without running it (cannot load it with torch.load(weights_only=True)); "
                                 f"save model.state_dict() with torch.save, not a pickled model") from None
            if reason:  # e.g. 'Unsupported operand 110': garbage bytes, or an old-style pickle
                exc = pickle.UnpicklingError(reason)
        raise BenchError(f"model '{what}': {path} is not a readable PyTorch file (truncated or corrupt?: "
                         f"{_first_line(exc)}); copy or save it again") from None
    except Exception as exc:  # truncated zip, garbage bytes, EOFError, 'PytorchStreamReader failed …'
        detail = "the file is empty" if path.stat().st_size == 0 else _first_line(exc)
        raise BenchError(f"model '{what}': {path} is not a readable PyTorch file (truncated or corrupt?: "
                         f"{detail}); copy or save it again") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"model '{what}': {path} does not hold a state_dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    mismatch = _mismatch_message(model, state, strict)
    if mismatch:
        raise BenchError(f"model '{what}': {path} does not fit the architecture: {mismatch}")
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # what the comparison above does not see (a module's own loading rules)
        raise BenchError(f"model '{what}': {path} does not fit the architecture: {_first_line(exc, 300)}") from None
    if not strict and (result.missing_keys or result.unexpected_keys):
        log.warning("model '%s': %s — missing %s, unexpected %s", what, path, result.missing_keys[:5],
                    result.unexpected_keys[:5])
