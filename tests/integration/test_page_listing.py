"""The status page's restore-point listing against a hung replica (issue 22, item 6):
one `litestream ltx` at a time, killed when the page stops waiting or goes away. Real
Litestream, real S3 (moto) behind a proxy that can hang."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest

from asgi_litestream import LitestreamLifespan
from asgi_litestream._web import routes as _routes
from tests.helpers import S3, client, lifespan, litestream_children, notes_app
from tests.proxy import Proxy

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PAGE = "/_litestream/dashboard"
TOKEN = "page-listing-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def listings() -> list[int]:
    """Our live `litestream ltx` children."""
    found = []
    for pid in litestream_children():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[1:2] == [b"ltx"]:
            found.append(pid)
    return found


async def test_a_hung_replica_never_piles_up_listings(
    tmp_path: Path, litestream_bin: Path, s3_behind_proxy: tuple[S3, Proxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every page load may list (interval 0), each waits 1 s: 8 concurrent loads and 4
    in a row against a hung replica never run two `ltx` at once, and none is left once
    the loads return; a load whose client goes away takes its listing with it."""
    s3, proxy = s3_behind_proxy
    monkeypatch.setattr(_routes, "_POINTS_EVERY", 0.0)
    monkeypatch.setattr(_routes, "_POINTS_TIMEOUT", 1.0)
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=s3.url(),
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key, bin_path=litestream_bin,
                             dashboard_path=PAGE, status_token=TOKEN)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes/durable", json={"body": "a"})).status_code == 201
        listed = await http.get(PAGE, headers=BEARER)
        assert 'class="restore-point"' in listed.text  # the listing works when answered

        proxy.set_mode("hang")
        counts: list[int] = []
        done = anyio.Event()

        async def sample() -> None:
            while not done.is_set():
                counts.append(len(listings()))
                await anyio.sleep(0.01)

        async def load() -> None:
            page = await http.get(PAGE, headers=BEARER)
            assert page.status_code == 200

        async with anyio.create_task_group() as sampler:
            sampler.start_soon(sample)
            async with anyio.create_task_group() as loads:
                for _ in range(8):
                    loads.start_soon(load)
            for _ in range(4):
                with anyio.fail_after(5):
                    await load()
            with anyio.move_on_after(0.5):  # the client gives up mid-listing
                await http.get(PAGE, headers=BEARER)
            await anyio.sleep(0.2)
            done.set()
        assert max(counts) == 1, counts  # they ran (so the test sees them), one at a time
        assert listings() == []
        proxy.set_mode("pass")  # a quick final flush


async def test_a_hung_replica_leaves_the_other_databases_listed(
    tmp_path: Path, litestream_bin: Path, s3_behind_proxy: tuple[S3, Proxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two databases, one replicating to S3 that hangs, one to a folder: the page
    answers within its timeout, with the folder's restore points and "not known" for
    the hung one (a listing per database, not all or nothing)."""
    s3, proxy = s3_behind_proxy
    monkeypatch.setattr(_routes, "_POINTS_EVERY", 0.0)
    monkeypatch.setattr(_routes, "_POINTS_TIMEOUT", 1.0)
    hung, local = tmp_path / "hung.db", tmp_path / "local.db"
    app = LitestreamLifespan(notes_app(local), bin_path=litestream_bin,
                             replica_url={hung: s3.url("hung"),
                                          local: f"file://{tmp_path}/replica"},
                             access_key_id=s3.access_key_id,
                             secret_access_key=s3.secret_access_key,
                             dashboard_path=PAGE, status_token=TOKEN)
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.post("/notes/durable", json={"body": "a"})).status_code == 201
        proxy.set_mode("hang")
        with anyio.fail_after(4):
            page = (await http.get(PAGE, headers=BEARER)).text
        sections = dict(re.findall(r'data-database="([^"]+)"(.*?)</section>', page, re.S))
        assert 'class="restore-point"' in sections[str(local)]
        assert 'class="note restore-points">not known<' in sections[str(hung)]
        assert listings() == []
        proxy.set_mode("pass")
