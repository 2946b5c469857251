"""Resumable, checksum-verified downloads and safe archive extraction.

``download(name, root)`` fetches a registered archive (:data:`ARCHIVES`) over HTTP(S), resuming an
interrupted transfer from its ``.part`` file with a ``Range`` request, verifies the SHA-256 digest
and/or size (a mismatch deletes the file and raises :class:`ChecksumError`), then unpacks it into
``root`` with :func:`safe_extract`. URL, digest and size can be overridden per call (the tests point
them at a server on 127.0.0.1).

Safety: :func:`check_archive` vets every member before anything is written (absolute paths, ``..``,
links leaving the folder directly or through other links, members under links, devices, and the
archive-bomb limits :data:`DEFAULT_MAX_BYTES` / :data:`DEFAULT_MAX_MEMBERS`); tar archives are also
extracted with Python's ``filter="data"``, and a Python without it is refused. Extracted folders get
ordinary permissions (0777/0666 less the umask), not the 0700 that the tar filter leaves. Every failure
is a :class:`~strrnn.data.errors.DataError` with a one-line message naming the URL, host or archive.

Digests: the Speech Commands SHA-256 values below are the ones torchaudio's ``SPEECHCOMMANDS`` dataset
records for the same official URLs; they could not be re-verified by downloading from this machine
(no internet access). No size is recorded for them (unconfirmed). The UCI HAR archive has no
recorded digest or size (unverified; a warning says so when it is downloaded).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import lzma
import os
import platform
import re
import secrets
import shutil
import socket
import stat
import tarfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import (
    ArchiveTooLargeError,
    ChecksumError,
    CorruptArchiveError,
    DataError,
    DownloadError,
    UnsafeArchiveError,
    UnsupportedPythonError,
)


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        """The archive's file name: the URL path's last component, percent-decoded (``download`` if none)."""
        path = urllib.parse.urlsplit(self.url).path
        name = PurePosixPath(urllib.parse.unquote(path).replace("\\", "/")).name
        return name if name not in ("", ".", "..") else "download"


ARCHIVES: dict[str, Archive] = {
    "speech_commands_v0.01": Archive(
        "https://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        sha256="743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    ),
    "speech_commands_v0.02": Archive(
        "https://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
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


#: Default limits for :func:`safe_extract` against archive bombs: total uncompressed bytes of regular
#: files and number of members. Speech Commands v0.02 (the largest registered archive) unpacks to about
#: 2.4 GB in about 106,000 members; override per call with ``max_bytes=`` / ``max_members=``.
DEFAULT_MAX_BYTES = 10 * 2**30
DEFAULT_MAX_MEMBERS = 1_000_000

#: Exceptions that mean "the archive's bytes are damaged" (as opposed to an unsafe member or a full disk).
_CORRUPT = (
    tarfile.ReadError,
    tarfile.CompressionError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    lzma.LZMAError,
)


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of the file at ``path``, read in ``chunk``-byte blocks."""
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


def _total_of(content_range: str | None) -> int | None:
    """The complete size from a ``Content-Range`` header (``bytes a-b/N`` or ``bytes */N``), if stated."""
    m = re.fullmatch(r"\s*bytes\s+(?:\d+-\d+|\*)\s*/\s*(\d+)\s*", content_range or "")
    return int(m.group(1)) if m else None


def _start_of(content_range: str | None) -> int | None:
    """The first byte position from a ``Content-Range: bytes a-b/N`` header, if stated."""
    m = re.match(r"\s*bytes\s+(\d+)-", content_range or "")
    return int(m.group(1)) if m else None


def _head_length(url: str, timeout: float) -> int | None:
    """``Content-Length`` of a HEAD request to ``url``, or ``None`` when the server does not say."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            length = resp.headers.get("Content-Length", "")
            return int(length) if resp.status == 200 and length.isdigit() else None
    except (OSError, http.client.HTTPException):
        return None


def _http_error_message(url: str, exc: urllib.error.HTTPError) -> str:
    hint = {
        404: "there is no file at that address; check the URL (or pass url= with the dataset's new location)",
        410: "the file has been removed from the server; pass url= with the dataset's new location",
        401: "the server requires credentials; download the file by hand",
        403: "the server refused access; check the URL or download the file by hand",
    }.get(exc.code, "check the URL and try again later")
    return f"could not download {url}: HTTP {exc.code} {exc.reason}; {hint}"


def _network_error_message(url: str, exc: BaseException | None, attempts: int, part: Path) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    have = part.stat().st_size if part.exists() else 0
    kept = f"; {have} bytes are kept in {part} and a re-run resumes from there" if have else ""
    offline = "is the network down? Check the connection (and any proxy settings) and re-run"
    if isinstance(exc, urllib.error.HTTPError):
        what, advice = f"the server {host} kept answering HTTP {exc.code} {exc.reason}", "try again later"
    elif isinstance(exc, urllib.error.URLError) and isinstance(reason, socket.gaierror):
        what, advice = f"the host {host} could not be resolved ({reason})", offline
    elif isinstance(exc, urllib.error.URLError):
        what, advice = f"could not connect to {host} ({reason})", offline
    else:
        what, advice = f"the transfer from {host} kept failing ({reason})", offline
    tries = f"{attempts} attempt{'s' * (attempts > 1)}"
    return f"could not download {url} ({tries}): {what}{kept} -- {advice}"


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
    """Download ``url`` to ``path`` (resuming ``path.part``), verify it, and return ``path``.

    An existing ``.part`` is resumed with a ``Range`` request. A ``.part`` that cannot be a prefix of
    the file (larger than the server's total size, or a ``416`` reply whose stated size differs from
    the bytes held) is discarded and the download starts again; after a ``416`` with no stated size a
    ``HEAD`` request is asked for it, and when neither the server nor ``size``/``sha256`` can vouch for
    the bytes held, :class:`DownloadError` says to delete the ``.part``. Transient failures (network
    errors, HTTP 5xx/408/429, a transfer that ends early) are retried ``retries`` times with back-off;
    other HTTP errors and exhausted retries raise :class:`DownloadError` naming the URL and host.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _verify(path, sha256, size)  # a complete earlier download: reuse it if it still checks out
        return path
    part = path.with_name(path.name + ".part")
    from tqdm.auto import tqdm

    total = size
    bar = tqdm(desc=path.name, unit="B", unit_scale=True, disable=not progress, leave=False)
    last_error: BaseException | None = None
    failures = 0
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            if total is not None and have == total:
                break
            if total is not None and have > total:  # cannot be a prefix of the file: start again
                part.unlink()
                have = 0
            req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    crange = resp.headers.get("Content-Range")
                    if have and resp.status == 206:
                        if _start_of(crange) != have:  # not the range we asked for: start again
                            part.unlink()
                            continue
                        mode = "ab"
                        total = _total_of(crange) if _total_of(crange) is not None else total
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
                if total is None or got == total:
                    break
                last_error = OSError(f"transfer ended early at {got} of {total} bytes")
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:  # range not satisfiable: complete, or a bad .part?
                    server_total = _total_of(exc.headers.get("Content-Range")) if exc.headers else None
                    if server_total is None:
                        server_total = _head_length(url, timeout)
                    if server_total is None:
                        server_total = size
                    if server_total is None:
                        if sha256 is not None:
                            break  # the checksum decides (and deletes the file if it is wrong)
                        raise DownloadError(
                            f"{part}: the server refused to resume the download of {url} (HTTP 416) and "
                            f"does not say how large the file is, so the {have} bytes held cannot be "
                            f"checked; delete {part} and download again"
                        ) from exc
                    total = server_total
                    if have != total:
                        part.unlink()  # larger than, or inconsistent with, the file: start again
                    continue
                if exc.code < 500 and exc.code not in (408, 429):
                    raise DownloadError(_http_error_message(url, exc)) from exc
                last_error = exc
            except (OSError, http.client.HTTPException) as exc:
                last_error = exc
            failures += 1
            if failures > retries:
                raise DownloadError(_network_error_message(url, last_error, failures, part)) from last_error
            time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))
    finally:
        bar.close()
    _verify(part, sha256, size if size is not None else total)
    os.replace(part, path)
    return path


def _member_path(name: str) -> PurePosixPath:
    return PurePosixPath(name.replace("\\", "/"))


def _key(parts) -> str:
    """Comparison key of a member path: case- and normalisation-insensitive, as some filesystems are."""
    return unicodedata.normalize("NFC", "/".join(parts)).casefold()


def _check_member(name: str, kind: str, linkname: str | None = None) -> None:
    p = _member_path(name)
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


def _check_links(members: list[tuple[str, str, str | None]]) -> None:
    """Refuse link tricks that a member-by-member check cannot see (chained symlinks).

    ``members`` holds ``(name, kind, linkname)`` for the whole archive. Every symlink and hard link is
    known up front, whatever its position in the archive, and two rules keep every path inside the
    extraction folder:

    * no member may lie *under* a link member (``sub/a/x`` when ``sub/a`` is a link), and no name may be
      used both by a link and by another member;
    * a link target, walked component by component from the link's folder (the archive root for hard
      links), may not pass *through* a link member: only its last component may name one.

    With those rules every folder that a target's ``..`` steps out of is a real folder of the archive,
    so the lexical resolution used by :func:`_check_member` is the one the filesystem will perform.
    """
    links = {_key(_member_path(n).parts) for n, kind, _ in members if kind in ("symlink", "hardlink")}
    if not links:
        return
    seen: dict[str, int] = {}
    for name, _, _ in members:
        parts = _member_path(name).parts
        for i in range(1, len(parts)):
            if _key(parts[:i]) in links:
                raise UnsafeArchiveError(
                    f"refusing archive member {name!r}: its path goes through the link {'/'.join(parts[:i])!r}"
                )
        key = _key(parts)
        seen[key] = seen.get(key, 0) + 1
        if key in links and seen[key] > 1:
            raise UnsafeArchiveError(f"refusing archive: {name!r} is both a link and another member")
    for name, kind, linkname in members:
        if kind not in ("symlink", "hardlink"):
            continue
        walk = list(_member_path(name).parent.parts) if kind == "symlink" else []
        steps = [c for c in (linkname or "").replace("\\", "/").split("/") if c not in ("", ".")]
        for i, comp in enumerate(steps):
            if comp == "..":
                if not walk:
                    raise UnsafeArchiveError(f"refusing link {name!r} pointing outside the target: {linkname!r}")
                walk.pop()
            else:
                walk.append(comp)
                if i < len(steps) - 1 and _key(walk) in links:
                    raise UnsafeArchiveError(
                        f"refusing link {name!r} -> {linkname!r}: the target goes through another link "
                        f"({'/'.join(walk)!r})"
                    )


def _too_large(archive: str, what: str, limit: int, name: str) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"refusing to extract {archive}: it holds more than {limit:,} {what} (an archive bomb?); "
        f"if you trust it, pass a larger {name}= to safe_extract/download"
    )


def _corrupt(archive: str | os.PathLike, exc: BaseException) -> CorruptArchiveError:
    return CorruptArchiveError(
        f"{archive} is corrupt or truncated ({type(exc).__name__}: {exc}); delete it and download it "
        "again (e.g. re-run with --download)"
    )


def check_archive(
    archive: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS
) -> list[str]:
    """Validate every member of a tar or zip archive without extracting anything; returns the names.

    Raises :class:`UnsafeArchiveError` for an absolute path, a ``..`` component, a link pointing outside
    (also through a chain of links, see :func:`_check_links`), a device or FIFO;
    :class:`ArchiveTooLargeError` when the regular files add up to more than ``max_bytes`` or there are
    more than ``max_members`` members (counting stops at the limit); :class:`CorruptArchiveError` when
    the archive cannot be read to its end.
    """
    archive = str(archive)
    members: list[tuple[str, str, str | None]] = []
    total = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                infos = z.infolist()
                if len(infos) > max_members:
                    raise _too_large(archive, "members", max_members, "max_members")
                for info in infos:
                    _check_member(info.filename, "file")
                    total += info.file_size
                    if total > max_bytes:
                        raise _too_large(archive, "bytes uncompressed", max_bytes, "max_bytes")
                    members.append((info.filename, "file", None))
            return [n for n, _, _ in members]
        with tarfile.open(archive) as tar:
            for m in tar:  # streamed, so a huge member list is stopped at the limit
                if len(members) >= max_members:
                    raise _too_large(archive, "members", max_members, "max_members")
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
                if m.isreg():
                    total += m.size
                    if total > max_bytes:
                        raise _too_large(archive, "bytes uncompressed", max_bytes, "max_bytes")
                members.append((m.name, kind, m.linkname))
    except _CORRUPT as exc:
        raise _corrupt(archive, exc) from exc
    _check_links(members)
    return [n for n, _, _ in members]


def _normalise_modes(root: Path, dir_mode: int) -> None:
    """Give every extracted folder ``dir_mode`` and every file the matching read/write (and, for files
    whose owner could execute them, execute) bits: ``tarfile``'s ``data`` filter leaves folders at 0700."""
    file_mode = dir_mode & 0o666
    for top, _dirs, files in os.walk(root):  # symlinks (to folders or files) are left alone
        os.chmod(top, dir_mode)
        for f in files:
            p = os.path.join(top, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, dir_mode if st.st_mode & stat.S_IXUSR else file_mode)


def _make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh folder in ``parent`` created with the default mode (0777 less the umask), not 0700."""
    while True:
        tmp = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    overwrite: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest`` without letting anything escape it.

    Every member is checked *before* anything is written (:func:`check_archive`): absolute paths, ``..``
    components, links that point outside ``dest`` (directly or through other links), members under a
    link, device files and archives larger than ``max_bytes`` / ``max_members`` are refused
    (:class:`UnsafeArchiveError`); a damaged archive raises :class:`CorruptArchiveError`. Tar archives
    are additionally extracted with Python's ``filter="data"``; a Python without it (before 3.10.12 /
    3.11.4) raises :class:`UnsupportedPythonError` rather than extracting unguarded. The archive is
    unpacked into a temporary sibling folder, given ordinary permissions (folders 0777, files 0666, less
    the umask; executables keep their execute bits) and moved into place only when complete; top-level
    entries that already exist in ``dest`` raise ``FileExistsError`` unless ``overwrite=True``.
    """
    dest = Path(dest)
    is_zip = zipfile.is_zipfile(archive)
    if not is_zip and not hasattr(tarfile, "data_filter"):
        raise UnsupportedPythonError(
            f"refusing to extract {archive}: this Python ({platform.python_version()}) lacks tarfile's "
            "extraction filters (added in 3.8.17, 3.9.17, 3.10.12, 3.11.4 and 3.12), which strrnn needs to "
            "unpack archives safely; upgrade Python"
        )
    check_archive(archive, max_bytes=max_bytes, max_members=max_members)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(dest.parent, f".{dest.name}.extract-")
    dir_mode = stat.S_IMODE(tmp.stat().st_mode) & 0o777
    try:
        try:
            if is_zip:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(tmp, filter="data")
        except tarfile.FilterError as exc:  # pragma: no cover - the pre-check refuses these first
            raise UnsafeArchiveError(f"refusing to extract {archive}: {exc}") from exc
        except _CORRUPT as exc:
            raise _corrupt(archive, exc) from exc
        _normalise_modes(tmp, dir_mode)
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
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Download and unpack dataset ``name`` (see :data:`ARCHIVES`, or an alias such as ``google12``) into
    ``root``. ``url``/``sha256``/``size`` override the registry; ``max_bytes``/``max_members`` are the
    archive-bomb limits of :func:`safe_extract`. Returns ``root``.

    Errors are :class:`~strrnn.data.errors.DataError` subclasses with a one-line message:
    :class:`DownloadError` (HTTP error, unreachable host), :class:`ChecksumError`,
    :class:`CorruptArchiveError` (the damaged archive is deleted, so a re-run downloads it again),
    :class:`UnsafeArchiveError`. Nothing is written under ``root`` unless the whole archive unpacks.
    """
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
    try:
        fetch(spec.url, archive, spec.sha256, spec.size, retries=retries, timeout=timeout, progress=progress)
    except DataError:
        _remove_if_empty(archive.parent)  # a kept .part (for a later resume) keeps the folder
        raise
    try:
        safe_extract(archive, root, max_bytes=max_bytes, max_members=max_members)
    except CorruptArchiveError as exc:
        archive.unlink(missing_ok=True)
        _remove_if_empty(archive.parent)
        cause = exc.__cause__
        raise CorruptArchiveError(
            f"{spec.filename} downloaded from {spec.url} is corrupt or truncated "
            f"({type(cause).__name__}: {cause}); it was deleted, re-run the download (--download) to fetch "
            "it again"
        ) from cause
    if not keep_archive:
        archive.unlink(missing_ok=True)
        _remove_if_empty(archive.parent)
    return root


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
