"""mitmweb as a read-only window, without a web server: the route table regauth installs, and
its request handlers called in process on regauth's own mitmweb master (README "The exchange
log and mitmweb"). tests/integration/test_mitmweb.py drives a real mitmweb.
"""

from __future__ import annotations

import asyncio
import base64
import json
from io import BytesIO

import pytest
from mitmproxy import http
from mitmproxy import io
from mitmproxy import options as moptions
from mitmproxy.test import tflow
from mitmproxy.test import tutils
from mitmproxy.tools.web import app
from tornado import httputil

from regauth.mitm import launcher
from regauth.mitm.patches import web_window
from tests.unit.mitm.harness import restoring_log_handlers
from tests.unit.mitm.harness import run

PASSWORD = "hunter2-password"
REFRESH = "refresh-token-secret"
SIGNATURE = "c2lnbmF0dXJlLXNlY3JldA"
JWT = f"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjaSJ9.{SIGNATURE}"
SECRETS = (PASSWORD, REFRESH, SIGNATURE, base64.b64encode(f"ci:{PASSWORD}".encode()).decode())

REFUSING = [
    app.ResumeFlows,
    app.KillFlows,
    app.ResumeFlow,
    app.KillFlow,
    app.DuplicateFlow,
    app.ReplayFlow,
    app.RevertFlow,
]


def _token_flow(live: bool = True) -> http.HTTPFlow:
    """A token request with every kind of secret in it, as mitmweb would hold it."""
    basic = base64.b64encode(f"ci:{PASSWORD}".encode()).decode()
    request = tutils.treq(
        method=b"POST",
        path=f"/v2/token?service=r&password={PASSWORD}".encode(),
        headers=http.Headers(
            authorization=f"Basic {basic}", content_type="application/x-www-form-urlencoded"
        ),
        content=f"grant_type=password&username=ci&password={PASSWORD}"
        f"&refresh_token={REFRESH}".encode(),
    )
    body = json.dumps({"token": JWT, "access_token": JWT, "refresh_token": REFRESH}).encode()
    return tflow.tflow(req=request, resp=tutils.tresp(content=body), live=live)


class _Connection:
    """What tornado needs of an HTTP connection to build a request handler."""

    def set_close_callback(self, callback):
        pass


def _handler(master, cls, method="POST", body=None, **path_kwargs):
    request = httputil.HTTPServerRequest(
        method=method,
        uri="/",
        connection=_Connection(),
        headers=httputil.HTTPHeaders({"Content-Type": "application/json"}),
        body=json.dumps(body).encode() if body is not None else b"",
    )
    handler = cls(master.app, request)
    handler.path_kwargs = path_kwargs
    handler.current_user = "signed-in"  # whoever holds mitmweb's token: still read-only
    return handler


def _written(handler) -> bytes:
    return b"".join(handler._write_buffer)


@pytest.fixture(scope="module")
def _master():
    """regauth's mitmweb master (not running: no sockets), built once for these tests."""
    loop = asyncio.new_event_loop()

    async def make():
        return launcher._master_class(web=True)(moptions.Options(), with_termlog=False)

    with restoring_log_handlers():
        try:
            yield loop.run_until_complete(make())
        finally:
            loop.close()


@pytest.fixture
def web(_master):
    """The master with one token flow in its view."""
    _master.view.clear()
    flow = _token_flow()
    _master.view.add([flow])
    return _master, flow


# --- the route table -----------------------------------------------------------------------


def test_install_replaces_every_handler_that_could_change_or_leak_a_flow():
    web_window.install()
    web_window.install()  # idempotent
    targets = dict(app.handlers)
    assert targets[r"/flows/(?P<flow_id>[0-9a-f\-]+)"] is web_window.FlowHandler
    assert targets[r"/flows/dump"] is web_window.DumpFlows
    assert targets[r"/commands/(?P<cmd>[a-z.]+)"] is web_window.ExecuteCommand
    assert (
        sum(
            target in (web_window.FlowContent, web_window.FlowContentView)
            for target in targets.values()
        )
        == 2
    )
    for original in REFUSING:
        [replaced] = [
            t for t in targets.values() if t is not original and t.__name__ == original.__name__
        ]
        assert issubclass(replaced, original)
    assert not set(REFUSING) & set(targets.values())
    assert app.flow_to_json.regauth


def test_install_fails_loudly_when_mitmwebs_api_changed(monkeypatch):
    web_window.install()
    originals = [
        (
            p,
            next(
                (
                    c
                    for c in web_window._REPLACEMENTS
                    if c.__name__ == t.__name__ and issubclass(t, c)
                ),
                t,
            ),
        )
        for p, t in app.handlers
    ]
    monkeypatch.setattr(app, "flow_to_json", lambda flow: {})
    monkeypatch.setattr(app, "handlers", [(p, t) for p, t in originals if t is not app.KillFlow])
    with pytest.raises(RuntimeError, match=r"mitmweb's web API changed \(missing KillFlow\)"):
        web_window.install()


# --- what mitmweb shows ----------------------------------------------------------------------


def test_flow_json_for_the_list_and_the_live_updates_holds_no_secret():
    web_window.install()
    flow = _token_flow()
    shown = json.dumps(app.flow_to_json(flow))
    assert not [s for s in SECRETS if s in shown]
    assert json.loads(shown)["id"] == flow.id
    assert PASSWORD in flow.request.raw_content.decode()  # the flow itself is not changed
    tcp = tflow.ttcpflow()
    assert app.flow_to_json(tcp)["id"] == tcp.id  # other flows as mitmproxy shows them


def test_the_flow_list_holds_no_secret(web):
    master, _ = web
    handler = _handler(master, app.Flows, "GET")
    handler.get()
    assert not [s for s in SECRETS if s in _written(handler).decode()]


@pytest.mark.parametrize("message", ["request", "response"])
def test_the_content_endpoints_show_the_display_copy(web, message):
    master, flow = web
    content = _handler(master, web_window.FlowContent, "GET", flow_id=flow.id)
    content.get(flow.id, message)
    view = _handler(master, web_window.FlowContentView, "GET", flow_id=flow.id)
    assert view.flow.id == flow.id
    for text in (_written(content).decode(), repr(view.flow.get_state())):
        assert not [s for s in SECRETS if s in text]


def test_a_flow_dump_holds_no_secret(web):
    master, flow = web
    handler = _handler(master, web_window.DumpFlows, "GET")
    handler.get()
    dumped = list(io.FlowReader(BytesIO(_written(handler))).stream())
    assert [f.id for f in dumped] == [flow.id]
    assert not [s for s in SECRETS if s in repr(dumped[0].get_state())]


# --- what mitmweb may not do -----------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [
        web_window.FlowContent,
        web_window.DumpFlows,
        *[web_window._REPLACEMENTS[c]() for c in REFUSING],
    ],
)
def test_changing_loading_replaying_resuming_killing_is_refused(cls, web):
    master, flow = web
    handler = _handler(master, cls, "POST", flow_id=flow.id)
    before = flow.get_state()
    with pytest.raises(app.APIError) as refused:
        handler.post(flow.id)
    assert refused.value.status_code == 403
    assert flow.get_state() == before and flow.live and len(master.view) == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"request": {"host": "attacker.example"}},
        {"response": {"code": 200}},
        {"marked": ":x:", "request": {"path": "/v2/"}},
    ],
)
def test_editing_a_flow_is_refused(edit, web):
    master, flow = web
    before = flow.get_state()
    with pytest.raises(app.APIError) as refused:
        _handler(master, web_window.FlowHandler, "PUT", edit, flow_id=flow.id).put(flow.id)
    assert refused.value.status_code == 403 and flow.get_state() == before


def test_marking_and_commenting_a_flow_is_allowed(web):
    master, flow = web
    _handler(
        master,
        web_window.FlowHandler,
        "PUT",
        {"marked": ":star:", "comment": "seen"},
        flow_id=flow.id,
    ).put(flow.id)
    assert flow.marked == ":star:" and flow.comment == "seen"


def test_removing_a_live_flow_is_refused_and_a_finished_one_allowed(web):
    master, flow = web
    with pytest.raises(app.APIError):
        _handler(master, web_window.FlowHandler, "DELETE", flow_id=flow.id).delete(flow.id)
    assert flow.live and flow.error is None and len(master.view) == 1
    flow.live = False
    _handler(master, web_window.FlowHandler, "DELETE", flow_id=flow.id).delete(flow.id)
    assert len(master.view) == 0


@pytest.mark.parametrize(
    "cmd",
    [
        "replay.client",
        "replay.server.file",
        "flow.resume",
        "flow.kill",
        "flow.set",
        "flow.revert",
        "view.flows.load",
        "view.flows.create",
        "view.flows.duplicate",
        "options.load",
        "options.reset",
        "script.run",
        "save.file",
        "export.file",
        "cut.save",
        "browser.start",
        "intercept.inner",
    ],
)
def test_commands_that_could_change_anything_are_refused(cmd, web):
    master, _ = web
    with pytest.raises(app.APIError, match=f"command {cmd} is not allowed") as refused:
        _handler(master, web_window.ExecuteCommand, "POST", {"arguments": []}).post(cmd)
    assert refused.value.status_code == 403


@pytest.mark.parametrize("arguments", [["stickyauth", ".*"], ["scripts=x.py"], ["mode"], []])
def test_set_is_refused_for_anything_but_view_options(arguments, web):
    master, _ = web
    with pytest.raises(app.APIError, match="cannot be changed at run time") as refused:
        _handler(master, web_window.ExecuteCommand, "POST", {"arguments": arguments}).post("set")
    assert refused.value.status_code == 403
    assert master.options.stickyauth is None and master.options.scripts == []


@restoring_log_handlers()
@run
async def test_view_commands_run():
    master = launcher._master_class(web=True)(moptions.Options(), with_termlog=False)
    master.addons.get("optionpolicy").running()
    flow = _token_flow()
    master.view.add([flow])
    handler = _handler(
        master, web_window.ExecuteCommand, "POST", {"arguments": ["view_filter", "~q"]}
    )
    handler.post("set")
    assert json.loads(_written(handler)) == {"value": None}
    assert master.options.view_filter == "~q"
    handler = _handler(master, web_window.ExecuteCommand, "POST", {"arguments": ["@all", ":star:"]})
    handler.post("flow.mark")
    assert flow.marked == ":star:"


@restoring_log_handlers()
@run
async def test_the_options_endpoint_refuses_everything_but_view_options_while_running():
    master = launcher._master_class(web=True)(moptions.Options(), with_termlog=False)
    master.addons.get("optionpolicy").running()
    with pytest.raises(app.APIError) as refused:
        _handler(master, app.Options, "PUT", {"stickyauth": ".*"}).put()
    assert refused.value.status_code == 400 and "regauth:" in refused.value.log_message
    assert master.options.stickyauth is None
    _handler(master, app.Options, "PUT", {"web_theme": "dark"}).put()
    assert master.options.web_theme == "dark"


def test_the_index_page_gives_the_comment_column_the_room(web):
    """mitmweb's page with regauth's list layout in its head (the auth story is the comment);
    tests/integration/test_mitmweb_list.py looks at it in a browser."""
    master, _ = web
    assert dict(app.handlers)[r"/"] is web_window.IndexHandler
    handler = _handler(master, web_window.IndexHandler, method="GET")
    handler.finish = lambda chunk=None: handler._write_buffer.append(chunk.encode())
    handler.get()
    page = _written(handler).decode()
    assert page.count(web_window.LIST_STYLE) == 1
    assert page.index(web_window.LIST_STYLE) < page.index("</head>")
    assert ".flow-table .col-comment{width:auto}" in web_window.LIST_STYLE
    assert "index-" in page  # mitmweb's own bundle still loads
    anonymous = _handler(master, web_window.IndexHandler, method="GET")
    anonymous.current_user = None
    anonymous.finish = lambda chunk=None: None
    anonymous.render = lambda *a, **k: None  # the login form
    anonymous.get()
    assert anonymous.get_status() == 403  # mitmweb's token is still required
