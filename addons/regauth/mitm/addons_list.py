"""The addons regauth adds to a mitmproxy master, in order. Order matters: the listener's addons
first (the PROXY protocol and what a connection's first bytes may be, `proxy_header` and
`first_bytes`), connection limits next (a refused connection goes no further), option policing
next (a refused option stops everything; the launcher also moves it to the very front of
mitmproxy's chain), then the configuration snapshot, the embedded registry when regauth runs
one (it holds requests while the registry restarts, before they are decided), the delegate gate
(in delegate mode it holds or refuses requests until the registry is known to check regauth's
tokens, also before they are decided), the shared login-limit store, the client certificates
(each connection's verified identity, read when a request is decided), the request handler, the
response rewriter, the upstream key watch (it reads the upstream's challenges the rewriter
kept), the metrics observer (before the recorder drops each flow's state), the recorder (it
records what they left), the log reopener (signals that reopen the recorder's log), the admin
listener (its upstream probe also runs the delegate check),
and the fail-closed guard last (it kills whatever no decision allowed).
"""

from __future__ import annotations

from regauth.mitm import jwt_view
from regauth.mitm import patches
from regauth.mitm.admin import AdminServer
from regauth.mitm.client_certs import ClientCertificates
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.conn_limits import ConnectionLimits
from regauth.mitm.delegate_gate import DelegateGate
from regauth.mitm.embedded_registry import EmbeddedRegistry
from regauth.mitm.fail_closed import FailClosedGuard
from regauth.mitm.federation_keys import FederationKeys
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.listener import Listener
from regauth.mitm.log_reopen import LogReopen
from regauth.mitm.login_store import SharedState
from regauth.mitm.metrics_observer import MetricsObserver
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter
from regauth.mitm.tls_failures import TlsFailures
from regauth.mitm.upstream_keys import UpstreamKeyWatch
from regauth.ops.metrics import Metrics


def make_addons(embedded: EmbeddedRegistry | None = None) -> list[object]:
    patches.install_all()
    jwt_view.register()
    config = ConfigLoader()
    states = FlowStates()
    handler = RequestHandler(config, states)
    recorder = Recorder(config, states)
    keys = UpstreamKeyWatch(states)
    # Operations (issue 10): the shared login-limit store, the metrics observer and the admin
    # listener.
    shared = SharedState(handler)
    # OIDC federation (issue 24): the federated issuers' key sets, for the token endpoint.
    federation = FederationKeys(config, handler)
    observer = MetricsObserver(Metrics(), states)
    # Delegate mode forwards only while the registry checks regauth's tokens (issue 20, A2):
    # the admin listener's upstream probe runs the check, the gate holds or refuses requests.
    delegate = DelegateGate(config)
    # Log rotation (issue 26): SIGHUP/SIGUSR1 and the admin listener reopen the exchange log.
    reopener = LogReopen(recorder)
    admin = AdminServer(observer.metrics, config, recorder, observer, shared, delegate, reopener)
    # The listener's addons first: what a connection's first bytes may be, the PROXY protocol
    # (a flow's `via` is set before anything records it), then the connection limits.
    first: list[object] = [Listener(), ConnectionLimits(), OptionPolicy(), config]
    if embedded is not None:
        embedded.attach(config)
        first.append(embedded)
    first.append(delegate)
    return [
        *first,
        shared,
        federation,
        ClientCertificates(config),  # before the handler: it reads the verdict per request
        handler,
        ResponseRewriter(states),
        keys,
        observer,
        recorder,
        TlsFailures(recorder),  # failed handshakes into the recorder's exchange log
        reopener,
        admin,
        FailClosedGuard(),
    ]
