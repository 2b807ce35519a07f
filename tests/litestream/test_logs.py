"""Litestream's log lines: levels, fields, and secrets scrubbed in every form."""

from __future__ import annotations

import json
import logging

import pytest

from asgi_litestream._litestream.logs import LitestreamLog, parse_log_line, parse_record, scrub


def test_json_line_keeps_its_level_and_fields() -> None:
    """The first "level" is the log level; later duplicates stay as fields."""
    line = ('{"time":"t","level":"WARN","msg":"compaction failed","db":"app.db",'
            '"level":2,"error":"boom boom"}')
    assert parse_log_line(line) == (
        logging.WARNING, 'compaction failed db=app.db error="boom boom"', "app.db")


def test_plain_error_lines_are_errors() -> None:
    """Start-up failures arrive as plain "Error: ..." text."""
    assert parse_log_line("Error: config file not found")[0] == logging.ERROR
    assert parse_log_line("something else")[0] == logging.INFO


def test_scrub_catches_escaped_secrets() -> None:
    """A secret with quotes or backslashes is caught raw, JSON-escaped and Go-quoted
    inside JSON."""
    secret = 'pa"ss\\word'
    go_quoted = json.dumps(f"sftp://u:{secret}@h")  # how Go's %q renders the URL
    line = json.dumps({"level": "ERROR", "msg": "x", "url": go_quoted})
    assert secret not in scrub(line, [secret])
    _, message, _ = parse_log_line(scrub(line, [secret]))
    assert "word" not in message
    assert scrub(f"raw {secret}", [secret]) == "raw ***"


@pytest.mark.parametrize(("line", "shown"), [
    ("X-Amz-Security-Token: FQoGZXIvYXdzEBYa/+=", "X-Amz-Security-Token: ***"),
    ("GET /bk/x?X-Amz-Credential=ASIA1&X-Amz-Security-Token=FQo%2Fb%3D&X-Amz-Date=1",
     "GET /bk/x?X-Amz-Credential=ASIA1&X-Amz-Security-Token=***&X-Amz-Date=1"),
    ("Action=AssumeRoleWithWebIdentity&RoleArn=arn&WebIdentityToken=eyJhb.c.d&Version=1",
     "Action=AssumeRoleWithWebIdentity&RoleArn=arn&WebIdentityToken=***&Version=1"),
    ("<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>wJal/r+K</SecretAccessKey>"
     "<SessionToken>FQoG/Z+=</SessionToken>",
     "<AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>***</SecretAccessKey>"
     "<SessionToken>***</SessionToken>"),
    ("SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=0a1b",
     "SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=0a1b"),
    # The instance metadata's answer and its token header; SSO's answer.
    ('{"Code" : "Success", "AccessKeyId" : "ASIA1", "SecretAccessKey" : "wJal/r+K", '
     '"Token" : "IQoJ/Z+=", "Expiration" : "2026-12-06T05:00:00Z"}',
     '{"Code" : "Success", "AccessKeyId" : "ASIA1", "SecretAccessKey" : "***", '
     '"Token" : "***", "Expiration" : "2026-12-06T05:00:00Z"}'),
    ("X-aws-ec2-metadata-token: AQAEAFd1=", "X-aws-ec2-metadata-token: ***"),
    ('{"roleCredentials":{"accessKeyId":"ASIA1","secretAccessKey":"s/1","sessionToken":"t"}}',
     '{"roleCredentials":{"accessKeyId":"ASIA1","secretAccessKey":"***","sessionToken":"***"}}'),
    # The same JSON, escaped once inside a JSON log line.
    (r'{"msg":"dump","body":"{\"SecretAccessKey\" : \"wJal\", \"Token\":\"IQo\"}"}',
     r'{"msg":"dump","body":"{\"SecretAccessKey\" : \"***\", \"Token\":\"***\"}"}'),
])
def test_scrub_hides_the_credentials_an_sdk_request_dump_shows(line: str,
                                                                shown: str) -> None:
    """LITESTREAM_S3_DEBUG dumps requests and answers: a session token (header or
    presigned URL), a web identity token, STS's answer are hidden though nobody gave
    their values; the names of signed headers stay."""
    assert scrub(line, []) == shown


def test_a_slog_text_line_is_read_with_its_quoted_values() -> None:
    """Go-quoted values (spaces, escaped quotes) come back as plain strings; the first
    of a repeated key wins."""
    record = parse_record(
        'time=2026-11-30T13:37:19.245Z level=INFO msg="follow: applied updates" '
        'replica=file from_txid=0000000000000002 to_txid=0000000000000003 '
        'err="a \\"quoted\\" word" level=2')
    assert record == {"time": "2026-11-30T13:37:19.245Z", "level": "INFO",
                      "msg": "follow: applied updates", "replica": "file",
                      "from_txid": "0000000000000002", "to_txid": "0000000000000003",
                      "err": 'a "quoted" word'}
    assert parse_record("Error: no matching backup files available") is None
    assert parse_record("[1, 2]") is None


def test_text_and_json_lines_are_read_alike() -> None:
    """One reader for both formats: a text line gets its level and fields as a JSON
    line does (`restore -f` writes text, `replicate` JSON)."""
    text = 'time=t level=WARN msg="sync failed" db=app.db error="boom boom"'
    as_json = '{"time":"t","level":"WARN","msg":"sync failed","db":"app.db","error":"boom boom"}'
    assert parse_log_line(text) == parse_log_line(as_json) == (
        logging.WARNING, 'sync failed db=app.db error="boom boom"', "app.db")


def test_a_record_is_logged_at_its_level_scrubbed_and_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A record read once (the follower acts on it) is logged without reading it again:
    at its level, secrets scrubbed, kept as the database's last error."""
    caplog.set_level(logging.INFO, logger="asgi_litestream")
    log = LitestreamLog(["hunter2"])
    record = parse_record('time=t level=ERROR msg="follow: failed" db=c.db '
                          'url="sftp://u:hunter2@h/x"')
    assert record is not None
    log.record(record, pid=7)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, 'litestream[7]: follow: failed db=c.db url=sftp://u:***@h/x')]
    assert log.errors_of("c.db") == ["follow: failed db=c.db url=sftp://u:***@h/x"]
