"""Output paths of the tools' CLIs, made (or refused) BEFORE the work: never a traceback after it.

Every CLI in :mod:`sspo.tools` that writes a file or a folder calls :func:`output_file` or
:func:`output_folder` on its output flags first: missing parent folders are made; a path under a file, a
file where a folder is wanted (or the reverse) or a folder that cannot be written is one
:class:`OutputPathError` naming the flag, the path in the way and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["OutputPathError", "output_file", "output_folder"]


class OutputPathError(ValueError):
    """An output path that cannot be written: the message names the flag, the path and the fix."""


def output_folder(path: str | Path, flag: str) -> Path:
    """Make the folder ``path`` (and its parents) now, or raise :class:`OutputPathError`; returns it."""
    path = Path(path).expanduser()
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == path else f"lies under the file {blocking}"
        raise OutputPathError(f"{flag} {path} {where}, not a folder. Fix: pass a folder path for {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(f"{flag} {path}: cannot make the folder ({err.strerror}). Fix: pass a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: the folder is not writable. Fix: pass a folder you can write to")
    return path


def output_file(path: str | Path, flag: str) -> Path:
    """Make the parent folders of the file ``path`` now (refusing a folder at ``path``); returns it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder: pass a file path, e.g. {path / 'out'}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputPathError(f"{flag} {path} lies under the file {blocking}. Fix: pass a path in a folder")
    output_folder(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path}: the file is not writable. Fix: pass another path or fix its permissions")
    return path
