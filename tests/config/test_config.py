"""Settings: every bad option is a typed error naming the option and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_litestream import ConfigError, Settings
from asgi_litestream._config.urls import redact_url


def build(tmp_path: Path, **options: Any) -> Settings:
    options.setdefault("database", tmp_path / "app.db")
    options.setdefault("replica_url", f"file://{tmp_path}/replica")
    return Settings.from_options(environ={}, **options)


BAD_OPTIONS = [
    ({"replica_url": None}, "replica_url"),
    ({"replica_url": "ftp://host/x"}, "replica_url"),
    ({"replica_url": "file://relative/x"}, "replica_url"),
    ({"replica_url": "s3://bk/x"}, "replica_url"),
    ({"replica_url": "s3:///x"}, "replica_url"),
    ({"replica_url": "sftp://host/x"}, "replica_url"),
    ({"replica_url": "s3://bucket/$HOME"}, "replica_url"),
    ({"replica_url": "s3://[bucket/x"}, "replica_url"),
    ({"replica_url": "sftp://u:pw12@host:99999/x"}, "replica_url"),
    ({"role": "follower", "dashboard_path": "/_ls/page", "status_token": "t0ken-x"},
     "dashboard_path"),
    ({"database": None}, "database"),
    ({"database": []}, "database"),
    ({"database": "sqlite://"}, "database"),
    ({"database": "sqlite:///:memory:"}, "database"),
    ({"database": ":memory:"}, "database"),
    ({"database": "/no/such/folder/app.db"}, "database"),
    ({"database": 42}, "database"),
    ({"name": "has spaces"}, "name"),
    ({"sync_interval": 0}, "sync_interval"),
    ({"startup_timeout": -1}, "startup_timeout"),
    ({"flush_timeout": float("inf")}, "flush_timeout"),
    ({"stop_timeout": "5"}, "stop_timeout"),
    ({"max_restarts": -1}, "max_restarts"),
    ({"max_restarts": 2.5}, "max_restarts"),
    ({"log_level": "loud"}, "log_level"),
    ({"status_path": "status"}, "status_path"),
    ({"secret_access_key": ""}, "secret_access_key"),
]


@pytest.mark.parametrize(("options", "option"), BAD_OPTIONS)
def test_bad_option_names_itself_and_the_fix(
    tmp_path: Path, options: dict[str, Any], option: str
) -> None:
    """Each bad option raises ConfigError naming the option and a fix."""
    with pytest.raises(ConfigError) as error:
        build(tmp_path, **options)
    assert error.value.option == option
    assert str(error.value).startswith(option)
    assert "Fix: " in str(error.value)


def test_database_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    """A folder given as the database is refused with a fix."""
    with pytest.raises(ConfigError, match="is a directory"):
        build(tmp_path, database=tmp_path)


def test_sqlalchemy_urls_map_to_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///rel, sqlite:////abs and sqlite+aiosqlite:/// all name files."""
    monkeypatch.chdir(tmp_path)
    settings = build(tmp_path, database=["sqlite:///a.db", f"sqlite+aiosqlite:///{tmp_path}/b.db",
                                         f"sqlite:///{tmp_path}/c.db?check_same_thread=false"])
    assert [db.path for db in settings.databases] == [
        tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"]


def test_several_databases_share_a_base_url_by_stem(tmp_path: Path) -> None:
    """With several databases, each replicates to <replica_url>/<file stem>."""
    settings = build(tmp_path, database=[tmp_path / "app.db", tmp_path / "users.db"],
                     replica_url="s3://bucket/prod?endpoint=http://127.0.0.1:9000")
    assert [db.replica_url for db in settings.databases] == [
        "s3://bucket/prod/app?endpoint=http://127.0.0.1:9000&region=us-east-1",
        "s3://bucket/prod/users?endpoint=http://127.0.0.1:9000&region=us-east-1",
    ]


def test_same_stem_twice_is_refused(tmp_path: Path) -> None:
    """Two databases with one stem would share a replica: refused."""
    (tmp_path / "a").mkdir()
    with pytest.raises(ConfigError, match="share the file stem"):
        build(tmp_path, database=[tmp_path / "app.db", tmp_path / "a" / "app.db"])


def test_replica_mapping_gives_each_database_its_url(tmp_path: Path) -> None:
    """replica_url may map each database to its own replica."""
    settings = Settings.from_options(environ={}, replica_url={
        tmp_path / "a.db": "file:///backups/a", str(tmp_path / "b.db"): "s3://bucket/b"})
    assert [(db.path.name, db.replica_url) for db in settings.databases] == [
        ("a.db", "file:///backups/a"), ("b.db", "s3://bucket/b")]


def test_environment_fills_unset_options(tmp_path: Path) -> None:
    """ASGI_LITESTREAM_* variables configure everything when no keyword is given."""
    environ = {
        "ASGI_LITESTREAM_DATABASE": f"{tmp_path}/a.db,{tmp_path}/b.db",
        "ASGI_LITESTREAM_REPLICA_URL": "s3://bucket/app",
        "ASGI_LITESTREAM_NAME": "orders",
        "ASGI_LITESTREAM_STATUS_PATH": "",
        "ASGI_LITESTREAM_SYNC_INTERVAL": "0.5",
        "ASGI_LITESTREAM_MAX_RESTARTS": "3",
        "ASGI_LITESTREAM_DOWNLOAD": "no",
        "AWS_ACCESS_KEY_ID": "AKIAENVKEY",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
    }
    settings = Settings.from_env(environ)
    assert len(settings.databases) == 2
    assert settings.name == "orders"
    assert settings.status_path is None
    assert settings.sync_interval == 0.5
    assert settings.max_restarts == 3
    assert settings.download is False
    assert settings.secrets() == ["AKIAENVKEY", "env-secret"]


def test_bad_environment_variable_is_named(tmp_path: Path) -> None:
    """A malformed variable is reported under its own name."""
    with pytest.raises(ConfigError, match="ASGI_LITESTREAM_STARTUP_TIMEOUT"):
        Settings.from_env({"ASGI_LITESTREAM_DATABASE": str(tmp_path / "a.db"),
                           "ASGI_LITESTREAM_REPLICA_URL": "s3://bucket/app",
                           "ASGI_LITESTREAM_STARTUP_TIMEOUT": "soon"})


def test_keywords_beat_the_environment(tmp_path: Path) -> None:
    """An explicit keyword wins over its environment variable."""
    settings = Settings.from_options(
        environ={"ASGI_LITESTREAM_NAME": "from-env"}, name="from-kwarg",
        database=tmp_path / "a.db", replica_url="s3://bucket/app")
    assert settings.name == "from-kwarg"


def test_config_file_and_repr_hold_no_secret(tmp_path: Path) -> None:
    """Secrets go only to the child's environment: not the YAML, not a repr."""
    settings = build(tmp_path, replica_url="sftp://me:hunter2pw@host:22/backups",
                     access_key_id="AKIASECRETID", secret_access_key="s3cr3t-key")
    text = settings.to_yaml(socket_path=tmp_path / "ctl.sock")
    for secret in ("hunter2pw", "AKIASECRETID", "s3cr3t-key"):
        assert secret not in text
        assert secret not in repr(settings)
    env = settings.child_env({"AWS_CA_BUNDLE": "/etc/ca.pem", "HOME": "/root"})
    assert "AWS_CA_BUNDLE" not in env
    assert env["LITESTREAM_SECRET_ACCESS_KEY"] == "s3cr3t-key"
    url = yaml.safe_load(text)["dbs"][0]["replica"]["url"]
    variable = url.split("${")[1].split("}")[0]
    assert env[variable] == "hunter2pw"


def test_keys_given_hide_the_environments_pair_from_litestream(tmp_path: Path) -> None:
    """Keys given: the environment's AWS pair is not passed on (Litestream 0.5.17 would
    prefer it to LITESTREAM_*); a session token is, for temporary keys given."""
    ambient = {"AWS_ACCESS_KEY_ID": "AKIAAMBIENT", "AWS_SECRET_ACCESS_KEY": "ambient",
               "AWS_SESSION_TOKEN": "token", "AWS_REGION": "eu-west-1"}
    settings = build(tmp_path, replica_url="s3://bucket/app",
                     access_key_id="AKIAGIVEN", secret_access_key="given")
    env = settings.child_env(ambient)
    assert "AWS_ACCESS_KEY_ID" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert (env["LITESTREAM_ACCESS_KEY_ID"], env["LITESTREAM_SECRET_ACCESS_KEY"]) == (
        "AKIAGIVEN", "given")
    assert env["AWS_SESSION_TOKEN"] == "token" and env["AWS_REGION"] == "eu-west-1"
    # Keys from the environment: the same keys, under Litestream's own names.
    from_env = Settings.from_env({"ASGI_LITESTREAM_DATABASE": str(tmp_path / "a.db"),
                                  "ASGI_LITESTREAM_REPLICA_URL": "s3://bucket/app",
                                  **ambient})
    env = from_env.child_env(ambient)
    assert "AWS_ACCESS_KEY_ID" not in env
    assert (env["LITESTREAM_ACCESS_KEY_ID"], env["LITESTREAM_SECRET_ACCESS_KEY"]) == (
        "AKIAAMBIENT", "ambient")


def test_no_keys_pass_the_default_chain_untouched(tmp_path: Path) -> None:
    """No keys given: every variable of the AWS default chain reaches Litestream as it
    is (only AWS_CA_BUNDLE, which Litestream 0.5 cannot start with, is dropped)."""
    chain = {"AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/app",
             "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/token",
             "AWS_ROLE_SESSION_NAME": "app",
             "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/secrets/pod",
             "AWS_PROFILE": "prod", "AWS_CONFIG_FILE": "/etc/aws/config",
             "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9", "AWS_REGION": "eu-west-1"}
    settings = build(tmp_path, replica_url="s3://bucket/app")
    env = settings.child_env({**chain, "AWS_CA_BUNDLE": "/etc/ca.pem"})
    assert settings.credentials_source == "default chain"
    assert {k: env[k] for k in chain} == chain and "AWS_CA_BUNDLE" not in env
    assert not any(k.startswith("LITESTREAM_ACCESS") or k.startswith("LITESTREAM_SECRET")
                   for k in env)


def test_redact_url_hides_passwords_and_secret_query_values() -> None:
    """Userinfo passwords and secret-looking query values become ***."""
    assert redact_url("sftp://me:pw@host:22/p?key=k&region=x") == (
        "sftp://me:***@host:22/p?key=***&region=x")


def test_generated_config_lists_every_database(tmp_path: Path) -> None:
    """The YAML Litestream gets has every database, JSON logs and the socket."""
    settings = build(tmp_path, database=[tmp_path / "a.db", tmp_path / "b.db"],
                     sync_interval=0.25)
    config = yaml.safe_load(settings.to_yaml(socket_path=tmp_path / "ctl.sock"))
    assert [d["path"] for d in config["dbs"]] == [str(tmp_path / "a.db"), str(tmp_path / "b.db")]
    assert config["dbs"][0]["replica"]["sync-interval"] == "250ms"
    assert config["logging"]["type"] == "json"
    assert config["socket"] == {"enabled": True, "path": str(tmp_path / "ctl.sock")}


def test_secret_references_keep_the_host_and_the_encoding(tmp_path: Path) -> None:
    """An IPv6 host keeps its brackets; a secret query value stays URL-encoded."""
    settings = build(tmp_path, replica_url="sftp://me:pw99@[fd00::5]:22/x?sas=sig%3Dab%2Bcd%26x")
    url = yaml.safe_load(settings.to_yaml())["dbs"][0]["replica"]["url"]
    assert url.startswith("sftp://me:${ASGI_LITESTREAM_REPLICA_0_PASSWORD}@[fd00::5]:22/x?sas=")
    env = settings.child_env({})
    assert env["ASGI_LITESTREAM_REPLICA_0_SAS"] == "sig%3Dab%2Bcd%26x"
    assert "sig=ab+cd&x" in settings.secrets()


def test_a_sqlalchemy_engine_or_url_names_its_database(tmp_path: Path) -> None:
    """database=engine (SQLAlchemy, async, SQLModel) or engine.url: the file it opens
    (a URL is a named tuple, never taken for a list); a non-SQLite engine is refused."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    db = tmp_path / "app.db"
    engine = create_engine(f"sqlite:///{db}")
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    from sqlmodel import create_engine as sqlmodel_engine

    for handle in (engine, engine.url, make_url(f"sqlite+pysqlite:///{db}"), [engine.url],
                   async_engine, sqlmodel_engine(f"sqlite:///{db}")):
        settings = Settings.from_options(environ={}, database=handle,
                                         replica_url=f"file://{tmp_path}/r")
        assert [d.path for d in settings.databases] == [db]
    engine.dispose()
    with pytest.raises(ConfigError, match="not a SQLite engine"):
        Settings.from_options(environ={}, database=make_url("postgresql://u@h/db"),
                              replica_url=f"file://{tmp_path}/r")
    with pytest.raises(ConfigError, match="not a database file path"):
        Settings.from_options(environ={}, database=make_url("sqlite://"),
                              replica_url=f"file://{tmp_path}/r")


def test_a_django_alias_names_its_database(tmp_path: Path) -> None:
    """database="django:default" reads settings.DATABASES (in a fresh interpreter, so
    that Django's global settings stay out of this one); a wrong alias names the fix."""
    (tmp_path / "proj_settings.py").write_text(textwrap.dedent(f"""
        SECRET_KEY = "x"
        DATABASES = {{
            "default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{tmp_path}/app.db"}},
            "other": {{"ENGINE": "django.db.backends.postgresql", "NAME": "x"}},
        }}
    """))
    script = textwrap.dedent(f"""
        from asgi_litestream import ConfigError, Settings
        s = Settings.from_options(environ={{}}, database="django:default",
                                  replica_url="file://{tmp_path}/r")
        print(s.databases[0].path)
        for alias in ("other", "missing"):
            try:
                Settings.from_options(environ={{}}, database="django:" + alias,
                                      replica_url="file://{tmp_path}/r")
            except ConfigError as exc:
                print(exc)
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "proj_settings",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    path, other, missing = result.stdout.splitlines()
    assert path == str(tmp_path / "app.db")
    assert "Litestream replicates SQLite only" in other
    assert "use one of default, other" in missing
