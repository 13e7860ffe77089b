"""Output files of the commands: checked before any work, removed again when a later write fails.

Every file is itself written atomically (temporary file + rename, :mod:`geo3d.utils.atomic`);
:class:`Outputs` adds the run-level promise: a command that fails leaves none of its outputs behind
(the files it had already finished in this run are removed), and a path that cannot be written (a
folder, an unwritable folder, an existing file without ``--overwrite``) is refused before the work.
"""

from __future__ import annotations

import os
from pathlib import Path

from geo3d.errors import Geo3dError


class OutputError(Geo3dError, ValueError):
    """An output path that cannot be written."""


def check_output(path: str | os.PathLike, option: str, suffixes: tuple[str, ...], *, overwrite: bool = True) -> Path:
    """``path`` as a Path after checking that the command can write it (raises :class:`OutputError`)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {parent}")
    return path


class Outputs:
    """Collects the files a run writes; ``with Outputs() as outputs: outputs.add(path)`` after each write
    removes them all if the block raises."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def add(self, path: str | os.PathLike) -> Path:
        self.paths.append(Path(path))
        return Path(path)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            for path in self.paths:
                path.unlink(missing_ok=True)
