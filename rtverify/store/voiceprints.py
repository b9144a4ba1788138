"""Enrolled voices: one human-readable JSON file per voice, written atomically, private to the user.

A voiceprint file (``<store>/<name>.json``, mode 0600, in a 0700 directory) looks like::

    {"format": "rtverify-voiceprint/1", "name": "alice", "model_id": "default-28d2de1d310e",
     "embedding_dim": 256, "embedding": [0.0123, ...], "created": "2025-01-01T12:00:00Z",
     "speech_s": 11.2, "n_takes": 3, "rtverify_version": "0.1.0"}

Only ``embedding`` (and ``model_id``, to refuse a vector from another encoder) affects scores; the
rest is for people. Since issue 12 a voiceprint may also hold ``embedding_narrowband``: the same
takes low-passed at 4 kHz (an 8 kHz telephone band), which narrowband input is scored against.
The field is optional and the format name unchanged: a voiceprint enrolled before has none, and
narrowband input is then scored against its wideband ``embedding`` as before (re-enrolling adds
it); older versions of rtverify read the new files and ignore the field.

Since issue 11 a voiceprint also holds ``models``: the same takes embedded by every other shipped
model, by model id (``{"campp-...": {"embedding_dim": 192, "embedding": [...],
"embedding_narrowband": [...]}}``), so ``--model campp`` scores a voice enrolled with the default
and the reverse. A voiceprint enrolled before has no such entries and is reported under another
model with a one-line "re-enroll" message. A future model update keeps this rule: a voice is
usable under a model whose id is its ``model_id`` or a key of ``models``; a new model (a new id)
needs the voice re-enrolled once, from new takes, because the takes' audio is not kept.

A file that does not parse completely is never used in part: it is reported by
name and skipped while the other voices keep working.

Writes go to a temporary file in the store directory, are fsynced, then put in place with
``os.link`` (fails if the name exists: creating a voice is race-free) or ``os.replace`` (``force``),
and the directory is fsynced, so a crash at any moment leaves the old file or the new one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import stat
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .. import __version__
from ..errors import InputError, StoreError

try:
    import fcntl
except ImportError:  # not POSIX: writers are not serialised (creating a voice still is, by link)
    fcntl = None

logger = logging.getLogger(__name__)

FORMAT = "rtverify-voiceprint/1"
SUFFIX = ".json"
MAX_NAME_CHARS = 64
MAX_NAME_BYTES = 240
"""In UTF-8: the temporary file ``.NAME.XXXXXXXX.tmp`` must fit a file system's 255-byte file
names (60 four-byte characters such as emoji; 64 of any other script)."""
MAX_FILE_BYTES = 1 << 20
"""A voiceprint is a few kilobytes; anything much larger is not one (and is not read whole)."""
STALE_TEMP_S = 3600.0
"""A temporary file this old (seconds) was left by a killed writer and may be removed."""
_FORBIDDEN = set('/\\:*?"<>|')  # separators, plus what other file systems refuse


def validate_name(name: str) -> str:
    """Return the voice name in canonical (NFC) form, or raise :class:`InputError` saying why not.

    Allowed: 1 to 64 printable characters, at most 240 bytes in UTF-8 (letters of any script,
    digits, spaces, ``-_.'``...), not starting with a dot, a dash or a space, not ending with a
    space, without path separators, ``..``, control characters or characters that file systems
    refuse.
    """
    if not isinstance(name, str):
        raise InputError(f"voice name {name!r}: must be text")
    shown = repr(name)
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InputError("voice name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"voice name {shown}: longer than {MAX_NAME_CHARS} characters")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InputError(f"voice name {shown}: longer than {MAX_NAME_BYTES} bytes in UTF-8 "
                         "(too long for a file name)")
    if not name.isprintable():
        raise InputError(f"voice name {shown}: contains control or unprintable characters")
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        raise InputError(f"voice name {shown}: must not contain {' '.join(bad)}")
    if ".." in name:
        raise InputError(f"voice name {shown}: must not contain '..'")
    if name[0] in ".- " or name[-1] == " ":
        raise InputError(f"voice name {shown}: must not start with '.', '-' or a space, "
                         "nor end with a space")
    return name


def names_to_remove(names, undone: str = "nothing was removed") -> list[str]:
    """The voice names of a command on several voices, all or none (every store's
    ``remove_all``, ``voices remove``, ``voices copy``), checked and without repeats, in their
    order; an invalid one is an :class:`InputError` that ends with ``undone``."""
    out = []
    for name in names:
        try:
            out.append(validate_name(name))
        except InputError as err:
            raise InputError(f"{err}; {undone}") from None
    return list(dict.fromkeys(out))


def voices_are(names: list[str], state: str) -> str:
    """``voice 'x' is <state>`` / ``voices 'x', 'y' are <state>``."""
    if len(names) == 1:
        return f"voice {names[0]!r} is {state}"
    return f"voices {', '.join(repr(n) for n in names)} are {state}"


def _not_enrolled(names: list[str]) -> str:
    return voices_are(names, "not enrolled")


def default_store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$RTVERIFY_HOME``, else ``$XDG_DATA_HOME/rtverify``, else ``~/.local/share/rtverify``."""
    env = os.environ if environ is None else environ
    if env.get("RTVERIFY_HOME"):
        return Path(env["RTVERIFY_HOME"]).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "rtverify"
    return Path.home() / ".local" / "share" / "rtverify"


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Voiceprint:
    """One enrolled voice."""

    name: str
    model_id: str
    """The encoder the embedding was made with; another encoder's vectors are meaningless."""
    embedding: np.ndarray
    """float32 ``(dim,)`` unit vector: ``l2_normalize(mean(take vectors))``."""
    created: str
    """UTC time of enrolment, ISO 8601."""
    speech_s: float
    """Voiced speech the takes held (seconds)."""
    n_takes: int
    """Takes (utterances or files) averaged into the embedding."""
    rtverify_version: str = __version__
    narrowband: np.ndarray | None = None
    """float32 ``(dim,)`` unit vector from the same takes low-passed at 4 kHz, scored against
    narrowband input; None for a voiceprint enrolled before band-matched scoring."""
    models: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None
    """The same takes embedded by other models: ``{model_id: (embedding, narrowband or None)}``
    (unit float32 vectors of that model's dimension); None or empty for none."""
    fall_db: Mapping[str, float] | None = None
    """How steeply the takes' speech fell silent, per model id (dB per 10 ms, as each model's
    front-end reads it: :func:`rtverify.core.scoring.fall_db`), so that a probe is judged by how
    much more reverberant it is than the enrolment; None for a voiceprint enrolled before."""

    def for_model(self, model_id: str) -> "Voiceprint | None":
        """This voice as seen by ``model_id``: itself when it was enrolled with it, a copy whose
        ``model_id``/``embedding``/``narrowband`` are that model's entry of :attr:`models`, or
        None when it holds nothing for that model."""
        if model_id == self.model_id:
            return self
        entry = (self.models or {}).get(model_id)
        if entry is None:
            return None
        others = {k: v for k, v in self.models.items() if k != model_id}
        others[self.model_id] = (self.embedding, self.narrowband)  # nothing is lost on a save
        return dataclasses.replace(self, model_id=model_id, embedding=entry[0],
                                   narrowband=entry[1], models=others)

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "name": self.name, "model_id": self.model_id,
             "embedding_dim": int(self.embedding.shape[0]),
             "embedding": [round(float(x), 8) for x in self.embedding],
             "created": self.created, "speech_s": round(float(self.speech_s), 2),
             "n_takes": int(self.n_takes), "rtverify_version": self.rtverify_version}
        if self.narrowband is not None:
            d["embedding_narrowband"] = [round(float(x), 8) for x in self.narrowband]
        if self.fall_db:
            d["fall_db"] = {mid: round(float(v), 3) for mid, v in self.fall_db.items()}
        if self.models:
            d["models"] = {mid: {"embedding_dim": int(e.shape[0]),
                                 "embedding": [round(float(x), 8) for x in e],
                                 **({"embedding_narrowband": [round(float(x), 8) for x in nb]}
                                    if nb is not None else {})}
                           for mid, (e, nb) in self.models.items()}
        return d

    def vector(self, companions: Iterable[str] = ()):
        """The embedding for scoring: a :class:`~rtverify.core.scoring.VoiceVector`, which also
        carries the narrowband embedding (if any) and, of the other models' vectors, those of
        the model ids in ``companions`` that it holds (what the scoring model needs: its short
        expert's, :attr:`EncoderSession.companion_ids`; a large gallery keeps no others)."""
        from ..core.scoring import VoiceVector

        falls = self.fall_db or {}
        out = VoiceVector(self.embedding, self.narrowband, self.speech_s or None,
                          falls.get(self.model_id))
        held = self.models or {}
        out.companions = {mid: VoiceVector(*held[mid], self.speech_s or None, falls.get(mid))
                          for mid in companions if mid in held}
        return out

    @classmethod
    def from_dict(cls, data: object, where: str) -> "Voiceprint":
        """Check every field; raise :class:`StoreError` (naming ``where``) on any problem."""
        def bad(problem: str) -> StoreError:
            return StoreError(f"{where}: damaged voiceprint ({problem})")

        if not isinstance(data, dict):
            raise bad("not a JSON object")
        fmt = data.get("format")
        if fmt != FORMAT:
            newer = _format_version(fmt)
            if newer is not None and newer > _format_version(FORMAT):
                raise StoreError(f"{where}: a voiceprint in a newer rtverify's format ({fmt}; "
                                 f"this version reads {FORMAT}): upgrade rtverify to use it")
            raise bad(f"format is {fmt!r}, expected {FORMAT!r}")
        for key, kind in (("name", str), ("model_id", str), ("created", str),
                          ("embedding", list), ("embedding_dim", int), ("n_takes", int)):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise bad(f"field {key!r} missing or not {kind.__name__}")
        def unit(key: str, part: dict = data, dim: int = data["embedding_dim"]) -> np.ndarray:
            vec = part[key]
            if not isinstance(vec, list):
                raise bad(f"field {key!r} is not a list")
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec):
                raise bad(f"{key} holds something other than numbers")
            if len(vec) != dim or len(vec) == 0:
                raise bad(f"{key} has {len(vec)} values, embedding_dim says {dim}")
            try:
                emb = np.asarray(vec, dtype=np.float64)
            except OverflowError:  # an integer JSON reads but no float holds
                raise bad(f"{key} holds a number out of range") from None
            if not np.isfinite(emb).all():
                raise bad(f"{key} has non-finite values")
            norm = float(np.linalg.norm(emb))
            if not norm > 1e-6:
                raise bad(f"{key} is a zero vector")
            return (emb / norm).astype(np.float32)

        embedding = unit("embedding")
        narrowband = unit("embedding_narrowband") if data.get("embedding_narrowband") is not None \
            else None
        models = {}
        raw_models = data.get("models") or {}
        if not isinstance(raw_models, dict):
            raise bad("field 'models' is not an object")
        for mid, part in raw_models.items():
            if not isinstance(part, dict) or not isinstance(part.get("embedding_dim"), int) or \
                    isinstance(part.get("embedding_dim"), bool) or "embedding" not in part:
                raise bad(f"models[{mid!r}] is not an embedding entry")
            dim = part["embedding_dim"]
            models[mid] = (unit("embedding", part, dim),
                           unit("embedding_narrowband", part, dim)
                           if part.get("embedding_narrowband") is not None else None)
        speech_s = data.get("speech_s", 0.0)
        if not isinstance(speech_s, (int, float)) or isinstance(speech_s, bool) or \
                not _finite(speech_s):
            raise bad("field 'speech_s' is not a number")
        falls = data.get("fall_db") or {}
        if not isinstance(falls, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
                and 0.0 < v < 100.0 for v in falls.values()):
            raise bad("field 'fall_db' is not an object of numbers between 0 and 100")
        return cls(name=data["name"], model_id=data["model_id"],
                   embedding=embedding, created=data["created"],
                   speech_s=float(speech_s), n_takes=data["n_takes"],
                   rtverify_version=str(data.get("rtverify_version", "")),
                   narrowband=narrowband, models=models or None,
                   fall_db={k: float(v) for k, v in falls.items()} or None)


def _finite(x: int | float) -> bool:
    """``math.isfinite``, False (not OverflowError) for an integer too large for a float."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def to_json(vp: Voiceprint) -> str:
    """The file's text: one key per line, the embedding on one (long) line."""
    items = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
             for k, v in vp.to_dict().items()]
    return "{\n" + ",\n".join(items) + "\n}\n"


@dataclass(frozen=True)
class StoreEntry:
    """A voice file as found in the store: its voiceprint, or why it cannot be used."""

    name: str
    path: Path
    voiceprint: Voiceprint | None
    problem: str | None
    """One-line message (naming the file) when the voice is unusable under the current model."""


class VoiceChanged(StoreError):
    """``save(..., replacing=old)`` found the stored voice changed since ``old`` was read (or
    removed: :attr:`removed`); nothing was written."""

    def __init__(self, name: str, removed: bool) -> None:
        super().__init__(f"voice {name!r} was {'removed' if removed else 'changed'} since it "
                         "was read; nothing was saved")
        self.removed = removed


def same_voiceprint(now: Voiceprint | None, old: Voiceprint, name: str) -> None:
    """Raise :class:`VoiceChanged` unless ``now`` (the stored voice, None if it is not there or
    cannot be read) is ``old``."""
    if now is None or to_json(now) != to_json(old):
        raise VoiceChanged(name, removed=now is None)


def _format_version(fmt: object) -> int | None:
    """N of ``rtverify-voiceprint/N``, else None."""
    head, _, n = fmt.rpartition("/") if isinstance(fmt, str) else ("", "", "")
    return int(n) if head == FORMAT.rpartition("/")[0] and n.isdigit() else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_voiceprint(vp: Voiceprint, where: str, model_id: str | None, dim: int | None
                     ) -> Voiceprint:
    """The model-id and dimension checks every store makes on a voiceprint it reads; returns the
    voice as ``model_id`` sees it (:meth:`Voiceprint.for_model`)."""
    if model_id is not None:
        seen = vp.for_model(model_id)
        if seen is None:
            raise StoreError(f"{where}: voice {vp.name!r} was enrolled with model {vp.model_id} "
                             f"and holds no embedding for {model_id}; re-enroll it "
                             f"(rtverify enroll --name {vp.name!r} --force ...)")
        vp = seen
    if dim is not None and vp.embedding.shape[0] != dim:
        raise StoreError(f"{where}: damaged voiceprint (its embedding has "
                         f"{vp.embedding.shape[0]} values, model {vp.model_id} makes {dim})")
    return vp


class VoiceprintStore:
    """The directory of voiceprints.

    :param root: the store directory; ``None`` means :func:`default_store_dir`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_dir()

    def path_for(self, name: str) -> Path:
        return self.root / (validate_name(name) + SUFFIX)

    # -- writing ----------------------------------------------------------------------
    def ensure_dir(self) -> Path:
        """Create the store directory (0700) if needed; tighten a looser existing one."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.root.is_dir():
                raise StoreError(f"{self.root}: voice store is not a directory")
            mode = stat.S_IMODE(self.root.stat().st_mode)
            if mode & 0o077:
                logger.warning("%s: voice store was readable by others (mode %o); setting 0700",
                               self.root, mode)
                os.chmod(self.root, 0o700)
        except FileExistsError:
            raise StoreError(f"{self.root}: voice store is not a directory") from None
        except OSError as err:
            raise StoreError(f"{self.root}: cannot create the voice store "
                             f"({err.strerror})") from None
        return self.root

    @contextlib.contextmanager
    def _write_lock(self):
        """Serialise the writers of this store (every process's ``save`` and ``remove``): an
        exclusive ``flock`` on the store directory itself, so no lock file is left in it. Where
        the directory cannot be locked (no ``flock``), writes go on unserialised."""
        fd = None
        if fcntl is not None:
            try:
                fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                logger.debug("%s: cannot lock the voice store (%s)", self.root, err.strerror)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def save(self, vp: Voiceprint, *, force: bool = False,
             replacing: Voiceprint | None = None) -> Path:
        """Write ``vp`` atomically. Without ``force`` an existing voice of that name is refused
        (checked by the final link itself, so two enrolments cannot both win). With
        ``replacing`` (and ``force``), ``vp`` is written only if the stored voice still is
        ``replacing``, checked under the store's write lock (:class:`VoiceChanged` if not), so
        that two read-modify-writes (``enroll --add``) cannot both win and lose one change."""
        final = self.path_for(vp.name)
        self.ensure_dir()
        self._remove_stale_temp_files()
        doc = to_json(vp)
        # what is written must read back (as the PostgreSQL store checks): never put a
        # voiceprint in place that every later read would refuse as damaged
        Voiceprint.from_dict(json.loads(doc), str(final))
        data = doc.encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{vp.name}.", suffix=".tmp", dir=self.root)
        except OSError as err:
            raise StoreError(f"{self.root}: cannot write to the voice store "
                             f"({err.strerror})") from None
        try:
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as err:
                raise StoreError(f"{final}: cannot write voiceprint ({err.strerror})") from None
            with self._write_lock():
                if replacing is not None:
                    try:
                        now = self.load(vp.name)
                    except (StoreError, InputError):
                        now = None
                    same_voiceprint(now, replacing, vp.name)
                try:
                    if force:
                        os.replace(tmp, final)
                    else:
                        self._link_new(tmp, final, vp.name)
                except OSError as err:  # e.g. a directory of that name in the way (--force)
                    raise StoreError(f"{final}: cannot put the voiceprint in place "
                                     f"({err.strerror})") from None
                _fsync_dir(self.root)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return final

    def _remove_stale_temp_files(self) -> None:
        """Temporary files left by a writer that was killed (older than STALE_TEMP_S, so never
        one that a running enrolment is still writing)."""
        now = time.time()
        for path in self.root.glob(".*.tmp"):
            try:
                if now - path.stat().st_mtime > STALE_TEMP_S:
                    path.unlink()
                    logger.debug("removed stale temporary file %s", path)
            except OSError:
                pass

    def _link_new(self, tmp: str, final: Path, name: str) -> None:
        exists = StoreError(f"voice {name!r} is already enrolled ({final}); "
                            "use --force to replace it")
        try:
            os.link(tmp, final)
        except FileExistsError:
            raise exists from None
        except OSError:
            # No hard links on this file system: claim the name exclusively, then replace it.
            # A reader may briefly see an empty file there (reported as damaged), never a
            # partial one.
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                raise exists from None
            os.replace(tmp, final)

    def remove(self, name: str) -> Path:
        path = self.path_for(name)
        try:
            with self._write_lock():
                path.unlink()
        except FileNotFoundError:
            raise StoreError(f"voice {name!r} is not enrolled (store: {self.root})") from None
        except OSError as err:
            raise StoreError(f"{path}: cannot remove ({err.strerror})") from None
        _fsync_dir(self.root)
        return path

    def remove_all(self, names: list[str]) -> list[Path]:
        """Remove several voices, all or none: every name is checked (valid, enrolled) before
        any file is removed, so one missing name removes nothing. (Another process removing one
        of them in between still ends in an error naming what was removed.)"""
        names = names_to_remove(names)
        missing = [n for n in names if not self.exists(n)]
        if missing:
            raise StoreError(f"{_not_enrolled(missing)} (store: {self.root}); nothing was removed")
        done: list[Path] = []
        for name in names:
            try:
                done.append(self.remove(name))
            except StoreError as err:
                if not done:
                    raise
                removed = ", ".join(repr(n) for n in names[:len(done)])
                raise StoreError(f"{err}; {removed} removed before that") from None
        return done

    # -- reading ----------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the voice files present (usable or not), sorted."""
        try:
            files = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StoreError(f"{self.root}: voice store is not a directory") from None
        except OSError as err:
            raise StoreError(f"{self.root}: cannot read the voice store ({err.strerror})") from None
        return sorted(p.name[:-len(SUFFIX)] for p in files
                      if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def stamps(self) -> dict[str, tuple[int, int, int, int]]:
        """Each voice file's ``(inode, mtime_ns, ctime_ns, size)`` by name (as :meth:`names`),
        without reading any: what a follower compares to see which voices changed. Every
        :meth:`save` puts a new file (a new inode) in place, so a rewrite is seen even when it
        lands in the same timestamp tick with the same size; one ``stat`` per voice."""
        out = {}
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    out[entry.name[:-len(SUFFIX)]] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
                                                      st.st_size)
        except FileNotFoundError:
            return {}
        except NotADirectoryError:
            raise StoreError(f"{self.root}: voice store is not a directory") from None
        except OSError as err:
            raise StoreError(f"{self.root}: cannot read the voice store ({err.strerror})") from None
        return out

    def exists(self, name: str) -> bool:
        path = self.path_for(name)
        try:
            os.lstat(path)  # a link or anything else of that name is taken, too
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as err:  # a store the user may not search (mode 000, another user's)
            raise StoreError(f"{self.root}: cannot read the voice store ({err.strerror})") from None
        return True

    def load(self, name: str, model_id: str | None = None, dim: int | None = None) -> Voiceprint:
        """One voice; :class:`StoreError` if it is missing, damaged, or (when ``model_id`` and
        ``dim`` are given) made with another model or of another dimension than it makes."""
        path = self.path_for(name)
        raw = self._read(path, name)
        if len(raw) > MAX_FILE_BYTES:
            raise StoreError(f"{path}: damaged voiceprint (larger than {MAX_FILE_BYTES} bytes)")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:  # (deep nesting)
            raise StoreError(f"{path}: damaged voiceprint (not valid JSON: {err})") from None
        vp = Voiceprint.from_dict(data, str(path))
        if unicodedata.normalize("NFC", vp.name) != path.name[:-len(SUFFIX)]:
            raise StoreError(f"{path}: damaged voiceprint (it is for {vp.name!r}, "
                             "not the name of its file)")
        return check_voiceprint(vp, str(path), model_id, dim)

    def _read(self, path: Path, name: str) -> bytes:
        """The file's bytes (at most MAX_FILE_BYTES + 1). Only a regular file is read: a symbolic
        link (which could point anywhere) is refused, and a FIFO or device planted in the store
        can neither block the reader nor feed it endlessly."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise StoreError(f"voice {name!r} is not enrolled (store: {self.root}); "
                             "`rtverify voices` lists the enrolled ones") from None
        except OSError as err:
            try:
                link = path.is_symlink()
            except OSError:  # the store itself cannot be searched: say what open said
                link = False
            if link:
                raise StoreError(f"{path}: not a voiceprint (a symbolic link; voiceprints are "
                                 "regular files in the store)") from None
            raise StoreError(f"{path}: cannot read voiceprint ({err.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"{path}: not a voiceprint (not a regular file)")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise StoreError(f"{path}: cannot read voiceprint ({err.strerror})") from None
        finally:
            os.close(fd)

    def entries(self, model_id: str | None = None, dim: int | None = None) -> list[StoreEntry]:
        """Every voice file with its voiceprint or its problem."""
        out = []
        for name in self.names():
            path = self.root / (name + SUFFIX)
            try:
                out.append(StoreEntry(name, path, self.load(name, model_id, dim), None))
            except (StoreError, InputError) as err:
                out.append(StoreEntry(name, path, None, str(err)))
        return out

    def load_usable(self, model_id: str, names: list[str] | None = None, dim: int | None = None,
                    companions: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], list[str]]:
        """Embeddings by name for scoring (each a :class:`~rtverify.core.scoring.VoiceVector`:
        the wideband embedding, carrying the narrowband one and the ``companions`` models'
        vectors, see :meth:`Voiceprint.vector`), and the problems met.

        With ``names``, each named voice must load (a problem is an error). Without, every
        usable voice is returned and the unusable ones are only reported.
        """
        if names:
            return {validate_name(n): self.load(n, model_id, dim).vector(companions)
                    for n in names}, []
        usable, problems = {}, []
        for entry in self.entries(model_id, dim):
            if entry.voiceprint is not None:
                usable[entry.name] = entry.voiceprint.vector(companions)
            else:
                problems.append(entry.problem)
        return usable, problems
