"""The console shows decisions, refusals and errors by default; connection churn and routine
forwarded requests only with `-v` (issue 26 item 8). A real registry behind a real regauth."""

from __future__ import annotations

import json
import re

from tests.support import httpclient
from tests.support.policies import SERVICE
from tests.support.proxy import ProxyProcess

CHURN = re.compile(r"client connect|client disconnect|server connect|server disconnect")


def exercise(proxy: ProxyProcess) -> None:
    """A granted token, a refused login, a refused pull, and a forwarded request."""
    granted = httpclient.get_token(proxy.port, proxy.ca, ["repository:public/app:pull"], SERVICE)
    assert granted.status == 200, granted.body
    refused = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:demo/app:push"], SERVICE, ("ci", "not-the-password")
    )
    assert refused.status == 401, refused.body
    token = json.loads(granted.body)["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    # Pulling elsewhere than the token grants: 401 insufficient_scope, a refusal.
    denied = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/private/app/manifests/1", bearer)
    assert denied.status == 401, denied.body
    forwarded = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/", bearer)
    assert forwarded.status == 200, forwarded.body
    proxy.records()  # every flow ended (and was logged) before the output is read


def test_default_console_has_decisions_and_refusals_but_no_churn(
    write_policy, make_registry, make_proxy
) -> None:
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url)
    exercise(proxy)
    output = proxy.output()
    assert "token for anonymous: repository:public/app:pull → granted" in output, output
    assert "token refused" in output, output
    assert "insufficient_scope" in output, output
    assert not CHURN.search(output), output
    # The routine forwarded request is in the exchange log, not on the console.
    assert not re.search(r"regauth: 127\.0\.0\.1 200 anonymous", output), output
    assert any(r.get("status") == 200 and r.get("path") == "/v2/" for r in proxy.records())


def test_verbose_console_also_has_churn_and_routine_requests(
    write_policy, make_registry, make_proxy
) -> None:
    registry = make_registry()
    proxy = make_proxy(write_policy(), registry.url, env={"REGAUTH_VERBOSE": "1"})
    exercise(proxy)
    output = proxy.output()
    assert "token for anonymous: repository:public/app:pull → granted" in output, output
    assert "client connect" in output and "client disconnect" in output, output
    assert "server connect" in output, output
    assert re.search(r"regauth: 127\.0\.0\.1 200 anonymous", output), output
