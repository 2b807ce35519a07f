"""Who sees what on the library's own routes (issue 22, items 1 and 2).

Anyone gets the status route's code and the four fields a probe needs; the details,
the metrics and the page need the one authorization (bearer token, HTTP Basic, or the
app's callable, plain or async, allowing only with ``True``); ``public_details=True``
opens the details and the metrics. The routes run against the real binary; the
option checks need none."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.requests import Request

from asgi_litestream import ConfigError, LitestreamLifespan
from asgi_litestream._config.settings import Settings
from tests.helpers import S3, client, lifespan, notes_app

TOKEN = "tok-" + uuid.uuid4().hex
USER, PASSWORD = "ops", "pw-" + uuid.uuid4().hex[:12]
STATUS, METRICS, PAGE = "/_litestream/status", "/_litestream/metrics", "/_litestream/dashboard"
PROBE_FIELDS = {"status", "state", "healthy", "restarts"}
BEARER = {"authorization": f"Bearer {TOKEN}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def app_for(tmp_path: Path, litestream_bin: Path, **options: Any) -> LitestreamLifespan:
    """The notes app on tmp_path/app.db, replicating to tmp_path/replica, with the page on."""
    db = tmp_path / "app.db"
    options.setdefault("replica_url", f"file://{tmp_path}/replica")
    return LitestreamLifespan(notes_app(db), database=db, bin_path=litestream_bin,
                              dashboard_path=PAGE, **options)


async def until_healthy(http: httpx.AsyncClient) -> None:
    """Until the anonymous strict probe answers 200 (the first poll done)."""
    with anyio.fail_after(20):
        while (await http.get(STATUS + "?strict=1")).status_code != 200:
            await anyio.sleep(0.05)


def assert_probe_only(response: httpx.Response) -> dict[str, Any]:
    """The body is the probe's answer and nothing else."""
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert set(body) == PROBE_FIELDS, body
    return dict(body)


# -- the option checks (no binary) -----------------------------------------------------


def _settings(**options: Any) -> Settings:
    return Settings.from_options(database="/tmp/app.db", replica_url="file:///tmp/replica",
                                 environ={}, **options)


class OneArgument:
    def __call__(self, request: Request) -> bool:
        return True


async def allow_async(request: Request) -> bool:
    return True


@pytest.mark.parametrize("check", [lambda request: True, allow_async, OneArgument(),
                                   lambda request, extra=1: True, lambda *args: True])
def test_a_function_of_one_argument_is_accepted(check: Callable[..., Any]) -> None:
    """dashboard_auth takes any callable that can be called with the request, plain or async."""
    assert _settings(dashboard_auth=check).dashboard_auth is check


@pytest.mark.parametrize(("check", "problem"), [
    ("ops", "must be a callable"), (True, "must be a callable"),
    (lambda: True, "must take one argument"), (lambda a, b: True, "must take one argument"),
    (lambda *, request: True, "must take one argument"),
])
def test_anything_else_is_a_config_error(check: Any, problem: str) -> None:
    """Not callable, or not callable with one argument: ConfigError naming the option."""
    with pytest.raises(ConfigError, match=problem) as caught:
        _settings(dashboard_auth=check)
    assert caught.value.option == "dashboard_auth"


def test_the_page_needs_an_authorization_and_a_token_is_one() -> None:
    """dashboard_path without any authorization fails; a status_token (keyword or
    ASGI_LITESTREAM_STATUS_TOKEN) is one, like Basic credentials or a callable."""
    with pytest.raises(ConfigError, match="needs an authorization"):
        _settings(dashboard_path=PAGE)
    with pytest.raises(ConfigError, match="needs an authorization"):
        _settings(dashboard_path=PAGE, dashboard_user=USER)  # no password
    assert _settings(dashboard_path=PAGE, status_token=TOKEN).status_token == TOKEN
    from_env = Settings.from_options(
        database="/tmp/app.db", replica_url="file:///tmp/replica", dashboard_path=PAGE,
        environ={"ASGI_LITESTREAM_STATUS_TOKEN": TOKEN})
    assert from_env.status_token == TOKEN
    assert TOKEN not in repr(from_env)


@pytest.mark.anyio
async def test_before_startup_the_status_route_says_only_not_started() -> None:
    """Before the lifespan starts: 503 and the four probe fields, for anyone."""
    app = LitestreamLifespan(notes_app(Path("/nonexistent/app.db")), database="x.db",
                             replica_url="file:///nowhere", status_token=TOKEN)
    async with client(app) as http:
        for headers in ({}, BEARER):
            response = await http.get(STATUS, headers=headers)
            assert response.status_code == 503
            assert assert_probe_only(response) == {
                "status": "down", "state": "not started", "healthy": False, "restarts": 0}
        assert (await http.get(METRICS)).status_code == 503


# -- the routes, with the real binary ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
async def test_an_async_check_that_says_no_is_refused(tmp_path: Path,
                                                      litestream_bin: Path) -> None:
    """Item 1: `async def deny(request): return False` refuses the page (403, it used to
    be 200), the details and the metrics; an async check that says True allows them."""
    seen: list[str] = []

    async def check(request: Request) -> bool:
        seen.append(request.url.path)
        return request.headers.get("x-team") == "ops"

    app = app_for(tmp_path, litestream_bin, dashboard_auth=check)
    async with lifespan(app) as state, client(app, state) as http:
        denied = await http.get(PAGE)
        assert denied.status_code == 403
        assert b"data-database" not in denied.content
        assert (await http.get(METRICS)).status_code == 403
        assert_probe_only(await http.get(STATUS))
        ops = {"x-team": "ops"}
        page = await http.get(PAGE, headers=ops)
        assert page.status_code == 200
        assert f'data-database="{tmp_path / "app.db"}"'.encode() in page.content
        assert (await http.get(METRICS, headers=ops)).status_code == 200
        assert "databases" in (await http.get(STATUS, headers=ops)).json()
    assert seen.count(PAGE) == 2


@pytest.mark.anyio
@pytest.mark.integration
async def test_only_true_allows(tmp_path: Path, litestream_bin: Path) -> None:
    """A check's answer counts only when it `is True`: truthy values (1, "yes", [True],
    an object) refuse, from a plain function and from an async one alike."""
    answer: list[Any] = [None]

    async def async_check(request: Request) -> Any:
        return answer[0]

    checks: list[Callable[[Request], Any]] = [lambda request: answer[0], async_check]
    for index, check in enumerate(checks):
        (tmp_path / str(index)).mkdir()
        app = app_for(tmp_path / str(index), litestream_bin, dashboard_auth=check)
        async with lifespan(app) as state, client(app, state) as http:
            for answer[0] in (1, "yes", [True], object(), "True"):
                assert (await http.get(PAGE)).status_code == 403, answer
                assert (await http.get(METRICS)).status_code == 403, answer
                assert_probe_only(await http.get(STATUS))
            answer[0] = True
            assert (await http.get(PAGE)).status_code == 200


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_check_that_raises_refuses_and_is_logged_once(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A check that raises (request.user without the app's middleware, say) refuses:
    the probe still gets its 200, the page a 403, and one warning says why."""
    def check(request: Request) -> bool:
        return bool(request.user.is_authenticated)  # no AuthenticationMiddleware ran

    app = app_for(tmp_path, litestream_bin, dashboard_auth=check)
    with caplog.at_level(logging.WARNING, logger="asgi_litestream"):
        async with lifespan(app) as state, client(app, state) as http:
            await until_healthy(http)
            for _ in range(3):
                assert (await http.get(PAGE)).status_code == 403
                probe = await http.get(STATUS)
                assert probe.status_code == 200
                assert_probe_only(probe)
    raised = [r for r in caplog.records if "dashboard_auth raised" in r.getMessage()]
    assert len(raised) == 1 and raised[0].exc_info is not None


@pytest.mark.anyio
@pytest.mark.integration
async def test_anonymous_requests_learn_what_a_probe_needs_no_more(
    tmp_path: Path, litestream_bin: Path, s3: S3
) -> None:
    """Item 2, on the bytes: with an S3 replica (bucket, endpoint, region, a
    secret-looking query value) and a lease (its holder), an anonymous GET of the status
    route holds the four probe fields only; the metrics and the page answer 401 with
    their challenges; none of the three bodies names the replica, a path, a pid, the
    version or the holder. The token sees it all."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    url = s3.url("tenant-secret-name") + "&sas=qs-" + uuid.uuid4().hex
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=url, bin_path=litestream_bin,
                             access_key_id=s3.access_key_id, lease=True,
                             secret_access_key=s3.secret_access_key, dashboard_path=PAGE,
                             dashboard_user=USER, dashboard_password=PASSWORD,
                             status_token=TOKEN, health_interval=0.25)
    async with lifespan(app) as state, client(app, state) as http:
        await until_healthy(http)
        details = (await http.get(STATUS, headers=BEARER)).json()
        holder = details["lease"]["holder"]
        forbidden = [s3.bucket, s3.endpoint, "127.0.0.1", "us-east-1", "tenant-secret-name",
                     str(tmp_path), "app.db", holder, details["version"], "litestream_",
                     s3.access_key_id, s3.secret_access_key, '"pid"', "replica"]
        for number in (details["pid"], details["worker_pid"], os.getpid()):
            forbidden.append(str(number))
        assert details["version"] in json.dumps(details) and holder  # they are there to hide

        probe = await http.get(STATUS)
        assert probe.status_code == 200
        assert assert_probe_only(probe) == {"status": "running", "state": "running",
                                            "healthy": True, "restarts": 0}
        strict = await http.get(STATUS + "?strict=1")
        assert strict.status_code == 200
        head = await http.head(STATUS)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(probe.content)
        metrics, page = await http.get(METRICS), await http.get(PAGE)
        for refused in (metrics, page):
            assert refused.status_code == 401
            assert refused.headers.get_list("www-authenticate") == [
                'Basic realm="litestream", charset="UTF-8"', 'Bearer realm="litestream"']
            assert refused.headers["cache-control"] == "no-store"
        for where, body in {"status": probe.content, "metrics": metrics.content,
                            "page": page.content}.items():
            for secret in forbidden:
                assert secret.encode() not in body, f"{secret!r} in the anonymous {where}"

        for credentials in (BEARER, basic(USER, PASSWORD)):
            assert (await http.get(STATUS, headers=credentials)).json()["databases"]
            shown = await http.get(METRICS, headers=credentials)
            assert shown.status_code == 200 and b"asgi_litestream_up" in shown.content
            assert (await http.get(PAGE, headers=credentials)).status_code == 200


@pytest.mark.anyio
@pytest.mark.integration
async def test_credentials_that_do_not_pass_are_refused_not_downgraded(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """A wrong token or password gets 401 on every route (the status route included:
    a scraper with a stale token learns it), not the probe's answer."""
    app = app_for(tmp_path, litestream_bin, status_token=TOKEN, dashboard_user=USER,
                  dashboard_password=PASSWORD)
    wrong = [{"authorization": f"Bearer {TOKEN[:-1]}"}, {"authorization": f"Bearer {TOKEN}x"},
             {"authorization": f"Bearer {TOKEN.upper()}"}, {"authorization": "Bearer"},
             {"authorization": f"Basic {TOKEN}"}, {"authorization": "Basic !!!"},
             {"authorization": TOKEN}, basic(USER, "wrong"), basic("nobody", PASSWORD),
             basic(USER, ""), basic(USER.upper(), PASSWORD), basic(USER, TOKEN)]
    async with lifespan(app) as state, client(app, state) as http:
        for headers in wrong:
            for path in (STATUS, METRICS, PAGE):
                refused = await http.get(path, headers=headers)
                assert refused.status_code == 401, (path, headers)
                assert b"databases" not in refused.content
        for headers in (BEARER, {"authorization": f"bearer  {TOKEN} "}, basic(USER, PASSWORD)):
            assert "databases" in (await http.get(STATUS, headers=headers)).json()


@pytest.mark.anyio
@pytest.mark.integration
async def test_public_details_opens_the_details_and_metrics_never_the_page(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """public_details=True: anonymous requests get today's full status and the metrics;
    the page still needs its authorization."""
    app = app_for(tmp_path, litestream_bin, public_details=True, status_token=TOKEN)
    async with lifespan(app) as state, client(app, state) as http:
        status = (await http.get(STATUS)).json()
        assert status["databases"][0]["path"] == str(tmp_path / "app.db")
        assert status["pid"] > 0
        assert (await http.get(METRICS)).status_code == 200
        assert (await http.get(PAGE)).status_code == 401
        assert (await http.get(PAGE, headers=BEARER)).status_code == 200


@pytest.mark.anyio
@pytest.mark.integration
async def test_with_no_authorization_configured_the_metrics_are_401_and_say_why_once(
    tmp_path: Path, litestream_bin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a token, nor Basic credentials, nor a callable, nor public_details: the
    metrics answer 401 (Bearer challenge) and one warning names the fix; the probe works."""
    db = tmp_path / "app.db"
    app = LitestreamLifespan(notes_app(db), database=db, replica_url=f"file://{tmp_path}/r",
                             bin_path=litestream_bin)
    with caplog.at_level(logging.WARNING, logger="asgi_litestream"):
        async with lifespan(app) as state, client(app, state) as http:
            for _ in range(3):
                refused = await http.get(METRICS)
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == 'Bearer realm="litestream"'
                assert refused.content == b"authorization required\n"
            assert (await http.get(STATUS)).status_code == 200
            assert (await http.get(STATUS, headers=BEARER)).status_code == 401
    hints = [r.getMessage() for r in caplog.records if "refused an anonymous" in r.getMessage()]
    assert len(hints) == 1 and "ASGI_LITESTREAM_STATUS_TOKEN" in hints[0]


@pytest.mark.anyio
@pytest.mark.integration
async def test_an_anonymous_probe_still_sees_down_as_503(tmp_path: Path,
                                                         litestream_bin: Path) -> None:
    """Readiness is unchanged for anonymous probes: 503 with state stopped once
    Litestream is stopped, and the same answer with ?strict=1."""
    import asgi_litestream

    app = app_for(tmp_path, litestream_bin, status_token=TOKEN, name="probed")
    async with lifespan(app) as state, client(app, state) as http:
        assert (await http.get(STATUS)).status_code == 200
        await asgi_litestream.stop_litestream("probed")
        for path in (STATUS, STATUS + "?strict=1"):
            down = await http.get(path)
            assert down.status_code == 503
            assert assert_probe_only(down)["state"] == "stopped"


@pytest.mark.anyio
@pytest.mark.integration
async def test_a_follower_answers_anonymous_probes_with_the_four_fields(
    tmp_path: Path, litestream_bin: Path
) -> None:
    """On a read replica too: anonymous status holds only the probe fields (no copy's
    path, no replica), metrics are 401; the token sees the followers' details."""
    primary_db, copy = tmp_path / "app.db", tmp_path / "copy" / "app.db"
    copy.parent.mkdir()
    replica = f"file://{tmp_path}/replica"
    primary = LitestreamLifespan(notes_app(primary_db), database=primary_db,
                                 replica_url=replica, bin_path=litestream_bin)
    async with lifespan(primary) as state, client(primary, state) as http:
        assert (await http.post("/notes/durable", json={"body": "x"})).status_code == 201
    follower = LitestreamLifespan(notes_app(copy), database=copy, replica_url=replica,
                                  bin_path=litestream_bin, role="follower",
                                  status_token=TOKEN, sync_interval=0.25)
    async with lifespan(follower) as state, client(follower, state) as http:
        with anyio.fail_after(20):
            while (await http.get(STATUS)).status_code != 200:
                await anyio.sleep(0.1)
        probe = await http.get(STATUS)
        assert assert_probe_only(probe)["state"] == "following"
        for secret in (str(tmp_path), "app.db", "replica", str(os.getpid())):
            assert secret.encode() not in probe.content
        assert (await http.get(METRICS)).status_code == 401
        details = (await http.get(STATUS, headers=BEARER)).json()
        assert details["role"] == "follower" and details["databases"]
        assert (await http.get(METRICS, headers=BEARER)).status_code == 200


def test_the_docs_say_who_sees_what() -> None:
    """The docs' status-route section names each route's audience and the bypass."""
    page = Path(__file__).resolve().parents[2] / "docs" / "status-and-kubernetes.md"
    section = re.search(r"### Who sees what\n(.*?)\n##+ ", page.read_text(), re.S)
    assert section is not None
    text = section.group(1)
    for needed in ("public_details", "status_token", "ASGI_LITESTREAM_STATUS_TOKEN",
                   "WWW-Authenticate", "middleware"):
        assert needed in text, needed

