"""Downloads against a local HTTP server (resume, checksum refusal) and safe extraction."""

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest_data import make_speech_tree

import strrnn.data as data
from strrnn.data import ChecksumError, UnsafeArchiveError, fetch, safe_extract


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
        blob = open(path, "rb").read()
        rng = self.headers.get("Range")
        self.state.setdefault("ranges", []).append(rng)
        if rng and not self.state.get("ignore_range"):
            start = int(rng.split("=")[1].split("-")[0])
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


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    RangeHandler.state = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
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
        data.ARCHIVES["speech_commands_v0.01"].url == "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz"
    )
    assert data.ARCHIVES["speech_commands_v0.02"].url.endswith("speech_commands_v0.02.tar.gz")
    assert len(data.ARCHIVES["speech_commands_v0.01"].sha256) == 64
