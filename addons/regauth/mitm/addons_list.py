"""The addons regauth adds to a mitmproxy master, in order.

Order matters: connection limits first (a refused connection goes no further), option
policing next (a refused option stops everything), then the
configuration snapshot, then the request handler, the response rewriter, the recorder (it
records what the rewriter left), and the guard last (it kills whatever no decision allowed).
"""

from __future__ import annotations

from regauth.mitm import error_pages
from regauth.mitm import framing
from regauth.mitm import jwt_view
from regauth.mitm import stream_isolation
from regauth.mitm.config_loader import ConfigLoader
from regauth.mitm.conn_limits import ConnectionLimits
from regauth.mitm.flow_state import FlowStates
from regauth.mitm.guard import RegauthGuard
from regauth.mitm.options_policy import OptionPolicy
from regauth.mitm.recorder import Recorder
from regauth.mitm.request_handler import RequestHandler
from regauth.mitm.response_rewriter import ResponseRewriter


def make_addons() -> list[object]:
    error_pages.install()
    framing.install()
    stream_isolation.install()
    jwt_view.register()
    config = ConfigLoader()
    states = FlowStates()
    return [ConnectionLimits(), OptionPolicy(), config, RequestHandler(config, states),
            ResponseRewriter(states), Recorder(config, states), RegauthGuard()]
