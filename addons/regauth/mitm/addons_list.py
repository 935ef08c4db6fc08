"""The addons regauth adds to a mitmproxy master, in order.

Order matters: option policing first (a refused option stops everything), then the
configuration snapshot, the shared login-limit store, the request handler, the response
rewriter, the metrics observer, the recorder (it records what the rewriter left), the admin
listener, and the guard last (it kills whatever no decision allowed).
"""

from __future__ import annotations

from regauth.metrics import Metrics
from regauth.mitm import error_pages
from regauth.mitm import framing
from regauth.mitm import jwt_view
from regauth.mitm import stream_isolation
from regauth.mitm.admin import AdminServer
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.guard import RegauthGuard
from regauth.mitm.metrics_observer import MetricsObserver
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter
from regauth.mitm.shared_state import SharedState


def make_addons() -> list[object]:
    error_pages.install()
    framing.install()
    stream_isolation.install()
    jwt_view.register()
    config = ConfigLoader()
    states = FlowStates()
    handler = RequestHandler(config, states)
    recorder = Recorder(config, states)
    # Operations (issue 10): the shared login-limit store, the metrics observer (after the
    # rewriter, before the recorder drops each flow's state) and the admin listener.
    shared = SharedState(handler)
    observer = MetricsObserver(Metrics(), states)
    admin = AdminServer(observer.metrics, config, recorder, observer, shared)
    return [OptionPolicy(), config, shared, handler, ResponseRewriter(states), observer,
            recorder, admin, RegauthGuard()]
