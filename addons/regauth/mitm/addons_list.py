"""The addons regauth adds to a mitmproxy master, in order. Order matters: the listener's addons
first (the PROXY protocol and what a connection's first bytes may be, `proxy_header` and
`first_bytes`), connection limits next (a refused connection goes no further), option policing
next (a refused option stops everything; the launcher also moves it to the very front of
mitmproxy's chain), then the configuration snapshot, the embedded registry when regauth runs
one (it holds requests while the registry restarts, before they are decided), the delegate gate
(in delegate mode it holds or refuses requests until the registry is known to check regauth's
tokens, also before they are decided), the shared login-limit store, the request handler, the
response rewriter, the upstream key watch (it reads the upstream's challenges the rewriter
kept), the metrics observer (before the recorder drops each flow's state), the recorder (it
records what they left), the admin listener (its upstream probe also runs the delegate check),
and the guard last (it kills whatever no decision allowed).
"""

from __future__ import annotations

from regauth.metrics import Metrics
from regauth.mitm import body_limits
from regauth.mitm import error_pages
from regauth.mitm import first_bytes
from regauth.mitm import framing
from regauth.mitm import h2_limits
from regauth.mitm import head_limits
from regauth.mitm import jwt_view
from regauth.mitm import proxy_header
from regauth.mitm import stream_isolation
from regauth.mitm.admin import AdminServer
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.conn_limits import ConnectionLimits
from regauth.mitm.delegate_gate import DelegateGate
from regauth.mitm.embedded_registry import EmbeddedRegistry
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.guard import RegauthGuard
from regauth.mitm.metrics_observer import MetricsObserver
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter
from regauth.mitm.shared_state import SharedState
from regauth.mitm.upstream_keys import UpstreamKeyWatch


def make_addons(embedded: EmbeddedRegistry | None = None) -> list[object]:
    error_pages.install()
    framing.install()
    stream_isolation.install()
    head_limits.install()
    h2_limits.install()
    body_limits.install()
    proxy_header.install()
    first_bytes.install()
    jwt_view.register()
    config = ConfigLoader()
    states = FlowStates()
    handler = RequestHandler(config, states)
    recorder = Recorder(config, states)
    keys = UpstreamKeyWatch(states)
    # Operations (issue 10): the shared login-limit store, the metrics observer and the admin
    # listener.
    shared = SharedState(handler)
    observer = MetricsObserver(Metrics(), states)
    # Delegate mode forwards only while the registry checks regauth's tokens (issue 20, A2):
    # the admin listener's upstream probe runs the check, the gate holds or refuses requests.
    delegate = DelegateGate(config)
    admin = AdminServer(observer.metrics, config, recorder, observer, shared, delegate)
    # The listener's addons first: what a connection's first bytes may be, the PROXY protocol
    # (a flow's `via` is set before anything records it), then the connection limits.
    first: list[object] = [proxy_header.ProxyHeaders(), first_bytes.FirstBytes(),
                           ConnectionLimits(), OptionPolicy(), config]
    if embedded is not None:
        embedded.attach(config)
        first.append(embedded)
    first.append(delegate)
    return [*first, shared, handler, ResponseRewriter(states), keys, observer, recorder, admin,
            RegauthGuard()]
