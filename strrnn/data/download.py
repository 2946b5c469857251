"""Resumable, checksum-verified downloads and safe archive extraction.

``download(name, root)`` fetches a registered archive (:data:`ARCHIVES`) over HTTP(S), resuming an
interrupted transfer from its ``.part`` file with a ``Range`` request, verifies the SHA-256 digest
and/or size (a mismatch deletes the file and raises :class:`ChecksumError`), then unpacks it into
``root`` with :func:`safe_extract`. URL, digest and size can be overridden per call (the tests point
them at a server on 127.0.0.1).

Digests: the Speech Commands SHA-256 values below are the ones torchaudio's ``SPEECHCOMMANDS`` dataset
records for the same official URLs; they could not be re-verified by downloading from this machine
(no internet access). No size is recorded for them (unconfirmed). The UCI HAR archive has no
recorded digest or size (unverified; a warning says so when it is downloaded).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import ChecksumError, UnsafeArchiveError


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        return urllib.request.url2pathname(PurePosixPath(self.url.split("?")[0]).name)


ARCHIVES: dict[str, Archive] = {
    "speech_commands_v0.01": Archive(
        "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        sha256="743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    ),
    "speech_commands_v0.02": Archive(
        "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    ),
    "har": Archive("https://archive.ics.uci.edu/ml/machine-learning-databases/00240/UCI%20HAR%20Dataset.zip"),
}
ALIASES = {
    "google12": "speech_commands_v0.01",
    "google13": "speech_commands_v0.01",
    "google30": "speech_commands_v0.01",
    "google35": "speech_commands_v0.02",
    "speech_commands": "speech_commands_v0.01",
    "har2": "har",
    "har6": "har",
}


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None, size: int | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink(missing_ok=True)
        raise ChecksumError(f"{path.name}: size {actual_size} bytes, expected {size}; the file was deleted")
    if sha256 is not None:
        digest = sha256_of(path)
        if digest.lower() != sha256.lower():
            path.unlink(missing_ok=True)
            raise ChecksumError(
                f"{path.name}: SHA-256 {digest} does not match the expected {sha256}; the file was deleted"
            )


def fetch(
    url: str,
    path: str | os.PathLike,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    progress: bool = True,
    chunk: int = 1 << 16,
) -> Path:
    """Download ``url`` to ``path`` (resuming ``path.part``), verify it, and return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _verify(path, sha256, size)  # a complete earlier download: reuse it if it still checks out
        return path
    part = path.with_name(path.name + ".part")
    from tqdm.auto import tqdm

    total = size
    bar = tqdm(desc=path.name, unit="B", unit_scale=True, disable=not progress, leave=False)
    last_error: Exception | None = None
    try:
        for attempt in range(retries + 1):
            have = part.stat().st_size if part.exists() else 0
            if total is not None and have >= total:
                break
            req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    if have and resp.status == 206:
                        mode = "ab"
                        crange = resp.headers.get("Content-Range", "")
                        if "/" in crange and crange.rsplit("/", 1)[1].isdigit():
                            total = int(crange.rsplit("/", 1)[1])
                    else:  # server ignored the range (or a fresh start): begin again
                        mode, have = "wb", 0
                        length = resp.headers.get("Content-Length")
                        if length and length.isdigit():
                            total = int(length)
                    bar.reset(total=total)
                    bar.update(have)
                    with open(part, mode) as f:
                        while block := resp.read(chunk):
                            f.write(block)
                            bar.update(len(block))
                got = part.stat().st_size
                if total is None or got >= total:
                    break
                last_error = OSError(f"transfer ended early at {got} of {total} bytes")
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:  # range not satisfiable: we already have every byte
                    break
                if exc.code < 500:
                    raise
                last_error = exc
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            if attempt < retries:
                time.sleep(min(0.2 * 2**attempt, 5.0))
        else:
            raise OSError(
                f"download of {url} failed after {retries + 1} attempts "
                f"({part.stat().st_size if part.exists() else 0} bytes kept in {part} for a later "
                f"resume): {last_error}"
            )
    finally:
        bar.close()
    _verify(part, sha256, size if size is not None else total)
    os.replace(part, path)
    return path


def _check_member(name: str, kind: str, linkname: str | None = None) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"refusing archive member with an absolute path: {name!r}")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"refusing archive member with a '..' component: {name!r}")
    if kind == "symlink":
        target = PurePosixPath(linkname or "")
        if target.is_absolute():
            raise UnsafeArchiveError(f"refusing symlink {name!r} to an absolute path {linkname!r}")
        resolved = os.path.normpath(str(p.parent / target))
        if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
            raise UnsafeArchiveError(f"refusing symlink {name!r} pointing outside the target: {linkname!r}")
    if kind == "hardlink":
        resolved = os.path.normpath(linkname or "")
        if resolved == ".." or resolved.startswith(("../", "/")):
            raise UnsafeArchiveError(f"refusing hard link {name!r} pointing outside the target: {linkname!r}")
    if kind == "special":
        raise UnsafeArchiveError(f"refusing device/FIFO archive member: {name!r}")


def check_archive(archive: str | os.PathLike) -> list[str]:
    """Validate every member of a tar or zip archive (raises :class:`UnsafeArchiveError`); returns names."""
    archive = str(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            for n in names:
                _check_member(n, "file")
            return names
    with tarfile.open(archive) as tar:
        names = []
        for m in tar.getmembers():
            kind = (
                "symlink"
                if m.issym()
                else "hardlink"
                if m.islnk()
                else "special"
                if (m.ischr() or m.isblk() or m.isfifo())
                else "file"
            )
            _check_member(m.name, kind, m.linkname)
            names.append(m.name)
        return names


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest`` without letting anything escape it.

    Every member is checked *before* anything is written: absolute paths, ``..`` components, links
    that point outside ``dest`` and device files are refused (:class:`UnsafeArchiveError`). The archive
    is unpacked into a temporary sibling folder and moved into place only when complete; top-level
    entries that already exist in ``dest`` raise ``FileExistsError`` unless ``overwrite=True``.
    """
    dest = Path(dest)
    check_archive(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - members were validated above
                    tar.extractall(tmp)
        if not dest.exists():
            os.replace(tmp, dest)
            return dest
        for entry in sorted(tmp.iterdir()):
            target = dest / entry.name
            if target.exists() or target.is_symlink():
                if not overwrite:
                    raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            os.replace(entry, target)
        tmp.rmdir()
        return dest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def download(
    name: str,
    root: str | os.PathLike,
    url: str | None = None,
    sha256: str | None = None,
    size: int | None = None,
    version: str | None = None,
    progress: bool = True,
    keep_archive: bool = False,
    retries: int = 5,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack dataset ``name`` (see :data:`ARCHIVES`, or an alias such as ``google12``) into
    ``root``. ``url``/``sha256``/``size`` override the registry. Returns ``root``."""
    key = ALIASES.get(name, name)
    if key == "speech_commands_v0.01" and version:
        key = f"speech_commands_{version}"
    if key not in ARCHIVES and url is None:
        raise ValueError(f"unknown archive {name!r}; choose one of {sorted(ARCHIVES) + sorted(ALIASES)}")
    spec = ARCHIVES.get(key, Archive(url or ""))
    spec = Archive(
        url or spec.url,
        sha256 if sha256 is not None else spec.sha256,
        size if size is not None else spec.size,
    )
    if spec.sha256 is None and spec.size is None:
        warnings.warn(f"{spec.filename}: no recorded SHA-256 or size; the download cannot be verified", stacklevel=2)
    root = Path(root)
    archive = root.parent / f".{root.name}.downloads" / spec.filename
    fetch(spec.url, archive, spec.sha256, spec.size, retries=retries, timeout=timeout, progress=progress)
    safe_extract(archive, root)
    if not keep_archive:
        archive.unlink(missing_ok=True)
        try:
            archive.parent.rmdir()
        except OSError:
            pass
    return root
