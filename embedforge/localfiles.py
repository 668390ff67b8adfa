"""The files a recipe's path names (a file, a folder or a glob), kept inside the folder it names.

A folder of documents or data is often written to by others: a link placed in it that points elsewhere (a
system file, another team's data) would be read, trained on and quoted in a published card. Only a file the
recipe names itself may lie elsewhere.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

from embedforge.errors import EmbedforgeError

GLOB_CHARS = set("*?[")


def named_root(location: str) -> Path:
    """The folder a path names: the folder itself, or a glob's part before its first wildcard."""
    target = Path(location).expanduser()
    if target.is_dir():
        return target
    parts = []
    for part in target.parts:
        if GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts and len(parts) < len(target.parts) else target.parent


def confined_files(location: str, wanted: Callable[[Path], bool], field: str) -> list[Path]:
    """The files under `location` that `wanted` accepts, sorted; a link out of the named folder is refused."""
    target = Path(location).expanduser()
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if wanted(p) and p.is_file())
    else:
        files = sorted(Path(p) for p in glob.glob(str(target), recursive=True) if Path(p).is_file())
        if files == [target]:
            return files  # named by the recipe itself
    root = named_root(location).resolve()
    for path in files:
        if not path.resolve().is_relative_to(root):
            raise EmbedforgeError(
                f"{field}: {path} links to {path.resolve()}, outside {named_root(location)}; only files inside the "
                "folder are read (copy the file in, or name it in the recipe itself)"
            )
    return files
