"""The invariant's own parsing and accounting (tests/support/invariant.py): it must be able to
fail, and to fail on exactly the requests nobody decided."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from regauth.mitm.records import _logged_path
from tests.support.invariant import UPSTREAM_PROBE_AGENT
from tests.support.invariant import LogOnly
from tests.support.invariant import RegistryWatch
from tests.support.invariant import Violation
from tests.support.invariant import logged_path
from tests.support.invariant import parse_access_log

# Lines as distribution 2.8.2 (gorilla/handlers' CombinedLoggingHandler) wrote them.
ESCAPED = (
    '127.0.0.1 - - [30/Nov/2026:09:32:15 +0000] "GET /v2/a\\"b\\\\c/tags/list?x=%22&y='
    '\\"z\u00e9 HTTP/1.1" 404 19 "r\\"f" "ua \\"quoted\\" \\\\ back"'
)
LOGRUS = (
    'time="2026-11-30T09:32:01.01Z" level=info msg="response completed" '
    'http.request.method=GET http.request.uri=/v2/ http.request.useragent="x" HTTP/1.1"'
)


def line(method: str, uri: str, agent: str = "", status: int = 200) -> str:
    return (
        f'127.0.0.1 - - [30/Nov/2026:09:32:01 +0000] "{method} {uri} HTTP/1.1" {status} 2 '
        f'"" "{agent}"'
    )


def test_access_log_lines_are_unescaped_exactly() -> None:
    (entry,) = parse_access_log("\n".join([LOGRUS, ESCAPED, "panic: not a request line"]))
    assert entry.method == "GET"
    assert entry.uri == '/v2/a"b\\c/tags/list?x=%22&y="z\u00e9'
    assert entry.user_agent == 'ua "quoted" \\ back'
    assert entry.status == 404 and entry.proto == "HTTP/1.1"


def test_control_and_invalid_bytes_come_back_as_sent() -> None:
    (entry,) = parse_access_log(line("GET", "/v2/?a=\\x01\\t\\xff\\u2028", "a\\nb"))
    assert entry.uri == "/v2/?a=\x01\t\udcff\u2028"
    assert entry.user_agent == "a\nb"


def test_a_line_that_looks_like_an_access_line_must_parse() -> None:
    with pytest.raises(ValueError, match="unparsed access log line"):
        parse_access_log('127.0.0.1 - - [30/Nov/2026:09:32:01 +0000] "GET /v2/ HTTP/1.1" 200')


@pytest.mark.parametrize(
    "target",
    [
        "/v2/",
        "/v2/x/tags/list?n=10&last=a%2Fb",
        "/v2/token?service=s&scope=a&scope=b",
        "/v2/token?password=secret&service=s",
        "/v2/x/blobs/uploads/?mount=sha256:ab&from=a+b",
        "/v2/?token=only",
        "/v2/?a=%ff&b",
        "/v2/?a=b;c=d",
    ],
)
def test_logged_path_matches_the_exchange_log(target: str) -> None:
    flow = tflow.tflow()
    flow.request.path = target
    assert logged_path(target) == _logged_path(flow)


class Logs:
    def __init__(self, tmp_path: Path) -> None:
        self.access = tmp_path / "registry.log"
        self.exchange = tmp_path / "exchange.jsonl"
        self.access.write_text(line("GET", "/v2/", "Python-urllib/3.12") + "\n")  # readiness

    def served(self, *lines: str) -> None:
        with self.access.open("a") as f:
            f.writelines(entry + "\n" for entry in lines)

    def recorded(
        self,
        method: str,
        path: str,
        answered_by: str = "upstream",
        status: int | None = 200,
        error: str | None = None,
    ) -> None:
        record: dict[str, object] = {
            "method": method,
            "path": path,
            "answered_by": answered_by,
            "status": status,
        }
        if error:
            record["error"] = error
        with self.exchange.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def watch(self, **kwargs: object) -> RegistryWatch:
        return RegistryWatch(LogOnly("http://127.0.0.1:9", self.access), [self.exchange], **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def logs(tmp_path: Path) -> Logs:
    return Logs(tmp_path)


def test_every_line_needs_its_own_forward(logs: Logs) -> None:
    watch = logs.watch()  # the readiness probe is the baseline
    logs.recorded("GET", "/v2/")
    logs.recorded("PUT", "/v2/x/manifests/1", answered_by="regauth", status=401)
    logs.served(
        line("GET", "/v2/"), line("GET", "/v2/"), line("PUT", "/v2/cache/evil/manifests/latest")
    )
    result = watch.violation()
    assert list(result.undecided) == [("GET", "/v2/"), ("PUT", "/v2/cache/evil/manifests/latest")]
    assert len(result.undecided[("GET", "/v2/")]) == 1
    assert not result.unseen


def test_a_completed_forward_must_be_in_the_access_log(logs: Logs) -> None:
    watch = logs.watch()
    logs.recorded("GET", "/v2/?a=b c")
    logs.recorded("PATCH", "/v2/x/blobs/uploads/u", status=None, error="cut")  # may be absent
    assert watch.violation() == Violation({}, {("GET", "/v2/?a=b c"): 1})


def test_method_spelling_and_query_are_compared_exactly(logs: Logs) -> None:
    watch = logs.watch()
    logs.recorded("GET", "/v2/")
    logs.recorded("GET", "/v2/x/tags/list?n=1")
    logs.served(line("get", "/v2/"), line("GET", "/v2/x/tags/list?n=2"))
    result = watch.violation()
    assert set(result.undecided) == {("get", "/v2/"), ("GET", "/v2/x/tags/list?n=2")}
    assert set(result.unseen) == {("GET", "/v2/"), ("GET", "/v2/x/tags/list?n=1")}


def test_capability_ids_are_compared_redacted(logs: Logs) -> None:
    watch = logs.watch(redact=lambda text: text.replace("abc", "<id:1>"))
    logs.recorded("POST", "/v2/builds/<id:1>/blobs/uploads/", status=202)
    logs.served(line("POST", "/v2/builds/abc/blobs/uploads/", status=202))
    assert not watch.violation()


def test_direct_requests_are_excluded_by_their_own_agent_only(logs: Logs) -> None:
    watch = logs.watch()
    watch._direct_agents.add("regauth-tests-direct/1")
    logs.served(
        line("GET", "/v2/", "regauth-tests-direct/1"), line("GET", "/v2/", "regauth-tests-direct/2")
    )
    assert list(watch.violation().undecided) == [("GET", "/v2/")]


def test_upstream_probes_are_allowed_only_as_many_as_declared(logs: Logs) -> None:
    watch = logs.watch(upstream_probes=1)
    logs.served(line("GET", "/v2/", UPSTREAM_PROBE_AGENT + "3.12"))
    assert not watch.violation()
    logs.served(line("GET", "/v2/", UPSTREAM_PROBE_AGENT + "3.12"))
    assert len(watch.violation().undecided[("GET", "/v2/")]) == 1


def test_each_violation_is_reported_once(logs: Logs) -> None:
    watch = logs.watch()
    watch.barrier = lambda timeout=10.0: None  # type: ignore[method-assign]
    logs.served(line("DELETE", "/v2/x/blobs/" + "sha256:" + "a" * 64))
    assert watch.check(settle=0.01, timeout=0.05)
    assert not watch.check(settle=0.01, timeout=0.05)
    logs.served(line("DELETE", "/v2/x/blobs/" + "sha256:" + "a" * 64))
    assert watch.check(settle=0.01, timeout=0.05)
