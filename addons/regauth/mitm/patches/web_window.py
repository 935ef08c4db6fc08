"""mitmweb as a read-only window onto regauth: it shows flows, it never changes them.

What mitmweb shows or exports is built from a secret-free copy of each flow
(`scrub.display_copy`: no credentials, capability ids shown as `<id:HASH10>`, comments
escaped): the `/updates` websocket and `/flows` (both through `flow_to_json`), `/flows/dump`,
and the content endpoints. Filters match that copy too, so naming a secret or a capability id
in a filter matches nothing. The event log shows console records, made safe by
`log_safety.SafeRecords`. What could change how a request is decided,
modified, routed or replayed is refused with 403 and nothing applied: editing, reverting,
duplicating, replaying, resuming and killing flows, loading flow files, and every command not
in `VIEW_COMMANDS`. Option changes go through `OptionPolicy`, which accepts only view options at
run time (mitmweb answers 400).

The flow list shows each request as the client asked it (the public URL: `display_copy`
undoes reverse mode's rewrite to the upstream), and its comment column, regauth's auth story,
takes the room mitmweb gives the path (`LIST_STYLE`, added to mitmweb's page by `IndexHandler`).

install() replaces the handlers in mitmweb's route table before the web application is
built, and fails loudly if a handler it expects is missing (a mitmproxy upgrade that changes
the web API must be noticed by the test suite).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any
from typing import Protocol
from typing import cast

from mitmproxy import flowfilter
from mitmproxy import http
from mitmproxy import io
from mitmproxy.flow import Flow
from mitmproxy.tools.web import app

from regauth.mitm.options_policy import VIEW_OPTIONS
from regauth.mitm.scrub import display_copy

# Commands that only read or arrange what is shown. Everything else (replay.*, export.*,
# cut.*, save.*, script.run, flow.set/encode/decode/resume/revert/kill, options.*,
# view.flows.create/load/duplicate/remove, inject.*, browser.start, ...) is refused.
VIEW_COMMANDS = frozenset(
    {
        "view.clear",
        "view.clear_unmarked",
        "view.filter.set",
        "view.focus.go",
        "view.focus.next",
        "view.focus.prev",
        "view.order",
        "view.order.options",
        "view.order.reverse",
        "view.order.set",
        "view.properties.inbounds",
        "view.properties.length",
        "view.properties.marked",
        "view.properties.marked.toggle",
        "view.settings.getval",
        "view.settings.setval",
        "view.settings.setval.toggle",
        "view.flows.resolve",
        "flow.mark",
        "flow.mark.toggle",
        "flow.comment",
        "flow.encode.options",
        "flow.set.options",
        "export.formats",
        "eventstore.clear",
        "commands.history.get",
        "commands.history.next",
        "commands.history.prev",
        "commands.history.filter",
        "proxyserver.active_connections",
        "readfile.reading",
        "set",  # only for view options: checked below and again by OptionPolicy
    }
)

_READ_ONLY = "regauth: mitmweb is a read-only window; this would change a flow or how it is handled"


def _refuse(*_args: Any, **_kwargs: Any) -> None:
    raise app.APIError(403, _READ_ONLY)


def _shown(flow: Flow) -> http.HTTPFlow:
    """`display_copy` of a flow from mitmweb's view: regauth's proxy mode carries HTTP only."""
    assert isinstance(flow, http.HTTPFlow)
    return display_copy(flow)


class FlowHandler(app.FlowHandler):
    def put(self, flow_id: str) -> None:
        update = self.json
        if not set(update) <= {"marked", "comment"}:
            _refuse()
        # No flow.backup() (mitmweb's put makes one): a backup would keep what regauth
        # scrubs from the flow later, and travel with every copy of it.
        flow = self.flow
        if "marked" in update:
            flow.marked = update["marked"]
        if "comment" in update:
            flow.comment = update["comment"]
        self.view.update([flow])

    def delete(self, flow_id: str) -> None:
        if self.flow.live:
            _refuse()  # removing a live flow kills it
        super().delete(flow_id)


class FlowContent(app.FlowContent):
    post = _refuse

    @property
    def flow(self) -> http.HTTPFlow:
        return _shown(super().flow)


class FlowContentView(app.FlowContentView):
    @property
    def flow(self) -> http.HTTPFlow:
        return _shown(super().flow)


class DumpFlows(app.DumpFlows):
    # Refused at once, like every post here: a plain function where mitmweb has a coroutine.
    post = _refuse  # type: ignore[assignment]

    def get(self) -> None:
        self.set_header("Content-Disposition", "attachment; filename=flows")
        self.set_header("Content-Type", "application/octet-stream")
        with BytesIO() as out:
            writer = io.FlowWriter(out)
            for flow in self.view:
                writer.add(display_copy(flow))
            self.write(out.getvalue())


class ExecuteCommand(app.ExecuteCommand):
    def post(self, cmd: str) -> None:
        if cmd not in VIEW_COMMANDS:
            raise app.APIError(
                403, f"regauth: command {cmd} is not allowed (mitmweb is a read-only window)"
            )
        if cmd == "set":
            try:
                args = self.json.get("arguments", [])
            except app.APIError:
                args = []
            name = str(args[0]).split("=", 1)[0] if args else ""
            if name not in VIEW_OPTIONS:
                raise app.APIError(
                    403, f"regauth: option {name or '?'} cannot be changed at run time"
                )
        super().post(cmd)


# mitmweb's flow list gives the comment column 150 px (about 20 characters) and the path
# column the rest, so regauth's auth story is cut after a few words (`401 challenge → s…`).
# The story is what the list is watched for: the path column gets a fixed share and the
# comment column the rest (a column the viewer resized keeps its own width: mitmweb sets it
# on the <col> element, which wins over these rules).
LIST_STYLE = """<style id="regauth-flow-list">
.flow-table .col-path{width:30%}
.flow-table .col-comment{width:auto}
</style>"""


class IndexHandler(app.IndexHandler):
    def get(self) -> None:
        # mitmweb's own page (AuthRequestHandler wraps this `get` in its login check as it
        # wraps mitmweb's), with regauth's list layout added to the head.
        page = self.render_string("../index.html").decode()
        self.finish(page.replace("</head>", LIST_STYLE + "</head>", 1))

    post = get  # mitmweb's login form posts here


def _refusing(base: type[app.RequestHandler]) -> type[app.RequestHandler]:
    # type() makes a subclass of `base`; mypy types a three-argument type() call as plain `type`.
    return cast(type[app.RequestHandler], type(base.__name__, (base,), {"post": _refuse}))


_REPLACEMENTS: dict[type, Callable[[], type[app.RequestHandler]]] = {
    app.IndexHandler: lambda: IndexHandler,
    app.FlowHandler: lambda: FlowHandler,
    app.FlowContent: lambda: FlowContent,
    app.FlowContentView: lambda: FlowContentView,
    app.DumpFlows: lambda: DumpFlows,
    app.ExecuteCommand: lambda: ExecuteCommand,
    app.ResumeFlows: lambda: _refusing(app.ResumeFlows),
    app.KillFlows: lambda: _refusing(app.KillFlows),
    app.ResumeFlow: lambda: _refusing(app.ResumeFlow),
    app.KillFlow: lambda: _refusing(app.KillFlow),
    app.DuplicateFlow: lambda: _refusing(app.DuplicateFlow),
    app.ReplayFlow: lambda: _refusing(app.ReplayFlow),
    app.RevertFlow: lambda: _refusing(app.RevertFlow),
}


class _FlowToJson(Protocol):
    """`app.flow_to_json`'s signature (a Callable type would drop the parameter's name)."""

    def __call__(self, flow: Flow) -> dict: ...


def _flow_to_json(original: _FlowToJson) -> _FlowToJson:
    def flow_to_json(flow: Flow) -> dict:
        return original(display_copy(flow) if isinstance(flow, http.HTTPFlow) else flow)

    # The mark that install() has run; a function object takes any attribute.
    flow_to_json.regauth = True  # type: ignore[attr-defined]
    return flow_to_json


class _ShownFilter:
    """A flow filter evaluated on what mitmweb shows (`display_copy`), not on the flow: a
    filter such as `~hq <guess>` must not confirm a secret one guess at a time."""

    def __init__(self, original: flowfilter.TFilter) -> None:
        self.original = original
        self.pattern = original.pattern  # TFilter's one attribute; the rest via __getattr__

    def __call__(self, f: Flow) -> bool:  # TFilter's signature, parameter name included
        return bool(self.original(display_copy(f) if isinstance(f, http.HTTPFlow) else f))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


class _ParseFilter(Protocol):
    """`flowfilter.parse`'s signature (a Callable type would drop the parameter's name)."""

    def __call__(self, s: str) -> flowfilter.TFilter: ...


def _shown_filters(parse: _ParseFilter) -> _ParseFilter:
    def parse_shown(s: str) -> flowfilter.TFilter:
        return _ShownFilter(parse(s))

    # The mark that install() has run; a function object takes any attribute.
    parse_shown.regauth = True  # type: ignore[attr-defined]
    return parse_shown


def install() -> None:
    """Patch mitmweb's route table, flow serialization and flow filters; idempotent."""
    if getattr(app.flow_to_json, "regauth", False):
        return
    routes = [target for _, target in app.handlers]
    missing = [cls.__name__ for cls in _REPLACEMENTS if cls not in routes]
    if missing or not callable(getattr(app, "flow_to_json", None)):
        raise RuntimeError(
            f"mitmweb's web API changed (missing {', '.join(missing)}); "
            "regauth needs mitmproxy 12.3"
        )
    app.handlers[:] = [
        (pattern, _REPLACEMENTS[target]() if target in _REPLACEMENTS else target)
        for pattern, target in app.handlers
    ]
    app.flow_to_json = _flow_to_json(app.flow_to_json)
    # The view (view_filter, flow.mark's filter argument) and mitmweb's filters parse here.
    flowfilter.parse = _shown_filters(flowfilter.parse)
