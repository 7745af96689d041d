"""The manifest of a store, and the file operations a store is built from. Internal API.

`manifest.json` says which sweep a store belongs to (its fingerprint: problems, grid,
settings, chunking, dtype and the versions of flowlin, jax, jaxlib and diffrax) and, for every
shard it adopted, the chunk id, the configurations' coordinates (rows of the flat grid, problem,
width, scale pair, seed) and a SHA-256 checksum of the shard's bytes (every file of a Zarr
shard, with its relative path). It is always replaced atomically (temporary file, `fsync`,
rename), so it is either the old or the new one, never half of each.

Temporary files are named `.tmp-<pid>@<host>-<random><suffix>`: a process removes only its own
temporaries and those of dead processes of its host (`stale_temp`).
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import socket
import uuid


MANIFEST_FILE = "manifest.json"
#: The manifest's layout; a store written with another layout is refused as unreadable.
MANIFEST_VERSION = 1
#: After a shard is recorded the manifest is rewritten at once, unless the last rewrite was
#: less than this many seconds ago ...
FLUSH_INTERVAL_S = 1.0
#: ... or took more than 1/FLUSH_COST_FACTOR of the time since: a sweep of 10⁴ chunks spends
#: at most ~10% of its time rewriting a large manifest. What is not yet flushed when a sweep
#: stops is flushed by the sweep on its way out (also on Ctrl-C); only a SIGKILL or power loss
#: can leave finished shards unrecorded, and a resume recomputes those, with a warning.
FLUSH_COST_FACTOR = 10
_TMP = ".tmp-"
_HASH_BLOCK = 1 << 20


class ManifestError(ValueError):
    """A manifest that exists but cannot be read (not JSON, another layout, fields missing)."""


def temp_name(suffix: str = "") -> str:
    """A temporary file name owned by this process."""
    return f"{_TMP}{os.getpid()}@{socket.gethostname()}-{uuid.uuid4().hex}{suffix}"


def is_temp(name: str) -> bool:
    return name.startswith(_TMP)


def stale_temp(name: str) -> bool:
    """Whether a temporary file was left by a process that no longer runs: one of this host
    whose pid is gone, or one of another host (only the store's lock holder asks, and while it
    holds the lock no other sweep writes here). Never this process's own."""
    try:
        pid_text, rest = name[len(_TMP) :].split("@", 1)
        host, pid = rest.rsplit("-", 1)[0], int(pid_text)
    except ValueError:
        return True  # not one of ours: an older layout's leftover
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


def remove(path: pathlib.Path) -> None:
    """Remove a file or a folder (a Zarr store)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync_file(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: pathlib.Path) -> None:
    """Flush a file, or every file of a folder, to disk (before it is renamed into place)."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                _fsync_file(p)
    else:
        _fsync_file(path)


def checksum(path: pathlib.Path) -> dict:
    """`{"sha256": ..., "bytes": ...}` of a file, or of a folder: every file's relative path
    and bytes, in sorted order (a Zarr store)."""
    h, total = hashlib.sha256(), 0
    files = [(path, "")] if path.is_file() else []
    if path.is_dir():
        files = sorted((p, p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file())
    for p, rel in files:
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
                total += len(block)
        h.update(b"\0")
    return {"sha256": h.hexdigest(), "bytes": total}


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Replace `path` by `data` atomically (temporary file in the same folder, fsync, rename)."""
    tmp = path.parent / temp_name(path.suffix)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


@dataclasses.dataclass
class Manifest:
    """What a store holds: `header` (the sweep: fingerprint, settings, versions, format,
    chunk and configuration counts) and `shards` (chunk index → `{"file", "chunk", "configs",
    "sha256", "bytes"}`)."""

    header: dict
    shards: dict[int, dict]

    @classmethod
    def read(cls, path: pathlib.Path) -> "Manifest | None":
        """The manifest at `path`; None if there is none; `ManifestError` if unreadable."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ManifestError(f"{path.name} is not readable JSON ({e})") from None
        try:
            if raw["manifest_version"] != MANIFEST_VERSION:
                raise ManifestError(
                    f"{path.name} has layout {raw['manifest_version']!r}, this flowlin reads "
                    f"{MANIFEST_VERSION}"
                )
            header, shards = raw["header"], raw["shards"]
            return cls(dict(header), {int(k): dict(v) for k, v in shards.items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"{path.name} lacks its fields ({e!r})") from None

    def save(self, path: pathlib.Path) -> None:
        data = dict(
            manifest_version=MANIFEST_VERSION,
            header=self.header,
            shards={str(k): self.shards[k] for k in sorted(self.shards)},
        )
        write_atomic(path, json.dumps(data, sort_keys=True).encode())
