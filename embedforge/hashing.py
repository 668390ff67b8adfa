"""Content hashes: what a fingerprint, a cache key or a "same inputs?" check compares."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: str | Path) -> bytes:
    """The sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as content:
        return hashlib.file_digest(content, "sha256").digest()


def files_digest(files: list[tuple[str, str | Path]], header: bytes = b"") -> str:
    """One digest of named files (each name, then its content's digest), after a header of settings."""
    digest = hashlib.sha256(header)
    for name, path in files:
        digest.update(name.encode())
        digest.update(file_digest(path))
    return digest.hexdigest()[:16]


def folder_digest(folder: Path) -> str:
    """Every file under a folder, by relative path and content: a model folder's identity."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return files_digest([(p.relative_to(folder).as_posix(), p) for p in files])


def frame_digest(frame) -> str:
    """A content hash of a table's rows, independent of where they came from (pandas' own row hashing)."""
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()[:16]
