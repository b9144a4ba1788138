"""A small on-disk cache of one embedding per audio file, for one embedder (git-ignored).

``<dir>/<key>.npz`` maps absolute paths to vectors; an entry is reused while the file's size and
modification time are unchanged. No pickle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class EmbeddingStore:
    def __init__(self, directory: Path, key: str) -> None:
        self.path = Path(directory) / f"{key}.npz"
        self._entries: dict[str, tuple[np.ndarray, str, str]] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as z:
                for p, v, s, n in zip(z["paths"], z["vectors"], z["stamps"], z["notes"]):
                    self._entries[str(p)] = (v, str(s), str(n))
        self._dirty = False

    def get(self, path: Path) -> tuple[np.ndarray, str] | None:
        """(vector, note) or None; vectors of files without speech are NaN."""
        hit = self._entries.get(str(path.resolve()))
        if hit is None or hit[1] != _stamp(path):
            return None
        return hit[0], hit[2]

    def put(self, path: Path, vector: np.ndarray, note: str = "") -> None:
        self._entries[str(path.resolve())] = (np.asarray(vector, np.float32), _stamp(path), note)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self._entries)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(keys), vectors=np.stack([self._entries[k][0] for k in keys]),
                 stamps=np.array([self._entries[k][1] for k in keys]),
                 notes=np.array([self._entries[k][2] for k in keys]))
        os.replace(tmp, self.path)
        self._dirty = False
