"""ser-download against a local HTTP server: checksums verified, hostile archives refused."""

import hashlib
import http.server
import io
import stat
import threading
import zipfile
from functools import partial

import pytest
import soundfile as sf

from conftest import SR, tone
from ser.data.download import download, main
from ser.errors import ChecksumMismatch, UnsafeArchive


def wav_bytes():
    buf = io.BytesIO()
    sf.write(buf, tone(0.5), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture()
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def ravdess_zip(path, extra=None):
    with zipfile.ZipFile(path, "w") as zf:
        for actor in (1, 2):
            for emotion in (1, 5):
                zf.writestr(f"Actor_{actor:02d}/03-01-{emotion:02d}-01-01-01-{actor:02d}.wav", wav_bytes())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verify_extract(server, tmp_path):
    served, url = server
    md5 = ravdess_zip(served / "r.zip")
    final = download("ravdess", tmp_path / "data", url=f"{url}/r.zip", md5=md5)
    assert final == tmp_path / "data" / "ravdess"
    assert len(list(final.rglob("*.wav"))) == 4 and (final / "SOURCE.json").is_file()
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no staging left


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    served, url = server
    ravdess_zip(served / "r.zip")
    with pytest.raises(ChecksumMismatch):
        download("ravdess", tmp_path / "data", url=f"{url}/r.zip", md5="0" * 32)
    assert not (tmp_path / "data" / "ravdess").exists()
    assert main(["ravdess", "--root", str(tmp_path / "data"), "--url", f"{url}/r.zip", "--sha256", "0" * 64]) == 1


@pytest.mark.parametrize("member", ["../escape.wav", "/abs/escape.wav"])
def test_path_traversal_is_refused(server, tmp_path, member):
    served, url = server
    md5 = ravdess_zip(served / "r.zip", extra={member: b"x"})
    with pytest.raises(UnsafeArchive, match="outside"):
        download("ravdess", tmp_path / "data", url=f"{url}/r.zip", md5=md5)
    assert not (tmp_path / "escape.wav").exists() and not (tmp_path / "data" / "ravdess").exists()


def test_symlink_member_is_refused(server, tmp_path):
    served, url = server
    path = served / "r.zip"
    with zipfile.ZipFile(path, "w") as zf:
        link = zipfile.ZipInfo("Actor_01/link.wav")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match="symbolic link"):
        download("ravdess", tmp_path / "data", url=f"{url}/r.zip", md5=hashlib.md5(path.read_bytes()).hexdigest())
