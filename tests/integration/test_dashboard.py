"""The status page in a real browser: uvicorn serves the notes app replicating to S3
(moto); headless Chromium (Debian's ``chromium``, which tests/run.sh installs) loads the
page with basic auth, and the test reads the DOM it rendered and its screenshots. No
secret reaches the page, the status route or the metrics route.

UPDATE_SCREENSHOT=1 also copies the screenshot to examples/fastapi_app/dashboard.png
(the README's)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from asgi_litestream import LitestreamLifespan
from tests.helpers import S3, client, lifespan, notes_app
from tests.integration.servers import ROOT, Server, start_server
from tests.web.test_dashboard import Element, Page

pytestmark = pytest.mark.integration

PAGE = "/_litestream/dashboard"
USER, PASSWORD = "ops", "pw-" + uuid.uuid4().hex[:12]
# A secret-looking query value in the replica URL: shown as *** like the credentials.
QUERY_SECRET = "qs-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def chromium_bin() -> str:
    """The browser, or a skip that says how to get it."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine: `bash tests/run.sh` installs Debian's "
                "`chromium` with apt-get when it can (as root, or with sudo -n); install "
                "it to run the browser tests")


def chromium(binary: str, tmp_path: Path, url: str, *args: str) -> str:
    """One headless run with a fresh profile and flags that keep it off the network;
    its stdout (the DOM with --dump-dom)."""
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
               "--no-proxy-server", "--hide-scrollbars", f"--user-data-dir={profile}",
               *args, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def png_size_and_corner(png: Path) -> tuple[int, int, tuple[int, int, int]]:
    """Width, height and the top-left pixel's RGB of an 8-bit RGB(A) PNG. The first
    pixel of the first row is stored raw whatever the row's filter, so no unfiltering."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    idat, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            idat += data[at + 8:at + 8 + length]
        at += 12 + length
    first = zlib.decompressobj().decompress(idat, 16)
    return width, height, (first[1], first[2], first[3])


@dataclass
class Served:
    server: Server
    s3: S3
    database: Path

    @property
    def url(self) -> str:
        return self.server.base + PAGE

    @property
    def signed_url(self) -> str:
        """With the credentials as userinfo: Chromium answers a top-level page's 401
        challenge with them (it ignores userinfo only for subresources)."""
        return self.url.replace("://", f"://{USER}:{PASSWORD}@", 1)

    def page(self) -> httpx.Response:
        return httpx.get(self.url, auth=(USER, PASSWORD), timeout=10)

    def secrets(self) -> list[str]:
        return [self.s3.access_key_id, self.s3.secret_access_key, QUERY_SECRET]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, litestream_bin: Path,
           moto_endpoint: str) -> Iterator[Served]:
    """The Starlette notes app under uvicorn with the page on, replicating to a fresh
    moto bucket; rows written, the first health polls and a verification done (so the
    page has a position, a health, a chart sample and a verification). One server for
    the module: each start costs seconds."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    s3 = S3(endpoint=moto_endpoint, bucket="bk-" + uuid.uuid4().hex[:12],
            access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
            secret_access_key="sEcReT-" + uuid.uuid4().hex)
    s3.create_bucket()
    database = tmp_path / "app.db"
    env = {
        "NOTES_DATABASE": str(database),
        "NOTES_REPLICA_URL": s3.url("app") + f"&sas={QUERY_SECRET}",
        "LITESTREAM_ACCESS_KEY_ID": s3.access_key_id,
        "LITESTREAM_SECRET_ACCESS_KEY": s3.secret_access_key,
        "ASGI_LITESTREAM_BIN_PATH": str(litestream_bin),
        "ASGI_LITESTREAM_DASHBOARD_PATH": PAGE,
        "ASGI_LITESTREAM_DASHBOARD_USER": USER,
        "ASGI_LITESTREAM_DASHBOARD_PASSWORD": PASSWORD,
        "ASGI_LITESTREAM_HEALTH_INTERVAL": "0.25",
        "ASGI_LITESTREAM_SYNC_INTERVAL": "0.25",
        "ASGI_LITESTREAM_VERIFY_INTERVAL": "3",
    }
    server = start_server("uvicorn", tmp_path, env,
                          app="tests.integration.apps.starlette_app:app")
    try:
        for i in range(12):
            server.post_note(f"note {i}")
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while True:
            status = server.get("/_litestream/status").json()
            if status["healthy"] is True and status["verification"] is not None:
                break
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield Served(server, s3, database)
        assert server.stop() in (0, -signal.SIGTERM), server.output()
    finally:
        server.stop(signal.SIGKILL)


def test_the_page_is_refused_without_valid_credentials(served: Served) -> None:
    """401 with a Basic challenge without credentials, with a wrong user or password,
    or a garbled header; 200 with them, HTML that no cache keeps."""
    refused = httpx.get(served.url, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Basic realm="litestream"')
    assert "data-database" not in refused.text
    for auth in ((USER, "wrong"), ("nobody", PASSWORD), (USER, ""), (USER.upper(), PASSWORD)):
        assert httpx.get(served.url, auth=auth, timeout=10).status_code == 401, auth
    garbled = httpx.get(served.url, headers={"authorization": "Basic !!!"}, timeout=10)
    assert garbled.status_code == 401
    page = served.page()
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert f'data-database="{served.database}"' in page.text


def test_the_page_renders_in_chromium(
    chromium_bin: str, served: Served, tmp_path: Path
) -> None:
    """Chromium gets the 401 without credentials and renders the page with them: state,
    health, the database, its replica redacted, its chart; light and dark, desktop and
    phone widths (screenshots under tmp_path)."""
    # Without credentials Chromium stops at the challenge (headless: an empty page).
    denied = Page(chromium(chromium_bin, tmp_path, served.url, "--dump-dom")).root
    assert not denied.find(id="state") and not denied.find(class_="database")

    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        # The chart samples the delay every 10 s: write on for a line, not a dot.
        deadline = time.monotonic() + 60
        while int(re.findall(r'data-samples="(\d+)"', served.page().text)[0]) < 3:
            assert time.monotonic() < deadline
            served.server.post_note("one more")
            time.sleep(0.5)

    dom = Page(chromium(chromium_bin, tmp_path, served.signed_url, "--dump-dom")).root
    assert dom.one(id="state").attrs["data-state"] == "running"
    assert dom.one(id="state").text == "running"
    assert dom.one(id="health").attrs["data-healthy"] == "true"
    summary = dom.one(id="summary")
    assert summary.one("dd", data_field="role").text == "leader"
    assert summary.one("dd", data_field="status").text == "running"
    assert summary.one("dd", data_field="uptime").text.endswith(" s")
    assert summary.one("dd", data_field="litestream").text.startswith("0.5.17 · pid ")
    assert summary.one("dd", data_field="verification").text.startswith("ok · ")
    database: Element = dom.one(data_database=str(served.database))
    assert database.one(class_="health").attrs["data-healthy"] == "true"
    replica = database.one(class_="replica").text
    assert replica.startswith(f"s3://{served.s3.bucket}/app?") and "sas=***" in replica
    assert int(database.one("dd", data_field="local-txid").text) >= 1
    chart = database.one("svg", class_="lag-chart")
    # One sample every 10 s: a fresh server has drawn a dot (or more: a line).
    assert int(chart.attrs["data-samples"] or 0) >= 1
    assert chart.find("circle") or chart.find("polyline")

    shots = {}
    for name, flags in {"desktop": ("--window-size=1000,900",),
                        "phone": ("--window-size=390,1500",),
                        "dark": ("--window-size=1000,900", "--force-dark-mode")}.items():
        shots[name] = tmp_path / f"dashboard-{name}.png"
        chromium(chromium_bin, tmp_path, served.signed_url, *flags,
                 f"--screenshot={shots[name]}")
    width, height, corner = png_size_and_corner(shots["desktop"])
    assert (width, height) == (1000, 900) and min(corner) > 200, corner  # light
    width, _, corner = png_size_and_corner(shots["phone"])
    assert width == 390
    _, _, corner = png_size_and_corner(shots["dark"])
    assert max(corner) < 60, corner  # prefers-color-scheme: dark
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shots["desktop"],
                        ROOT / "examples" / "fastapi_app" / "dashboard.png")


def test_no_secret_reaches_the_page_the_status_or_the_metrics(
    chromium_bin: str, served: Served, tmp_path: Path
) -> None:
    """The S3 access key id, secret key and the replica URL's secret query value appear
    in none of: the page, the DOM Chromium rendered, the status route, the metrics."""
    bodies = {
        "page": served.page().text,
        "rendered DOM": chromium(chromium_bin, tmp_path, served.signed_url, "--dump-dom"),
        "status": served.server.get("/_litestream/status").text,
    }
    assert "sas=***" in bodies["page"] and "sas=***" in bodies["status"]
    metrics = served.server.get("/_litestream/metrics")
    if metrics.status_code != 404:
        assert metrics.status_code == 200
        bodies["metrics"] = metrics.text
    for where, body in bodies.items():
        for secret in served.secrets():
            assert secret not in body, f"{secret!r} in the {where}"
    assert PASSWORD not in bodies["page"]


@pytest.mark.anyio
async def test_an_app_supplied_authorization_refuses_with_403(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """dashboard_auth: the app's callable sees the request; False is a 403."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db,
                             replica_url=f"file://{tmp_path}/replica", bin_path=litestream_bin,
                             dashboard_path=PAGE,
                             dashboard_auth=lambda request: request.headers.get("x-team") == "ops")
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.get(PAGE)).status_code == 403
        assert (await http.get(PAGE, headers={"x-team": "dev"})).status_code == 403
        shown = await http.get(PAGE, headers={"x-team": "ops"})
        assert shown.status_code == 200
        assert f'data-database="{db}"' in shown.text
