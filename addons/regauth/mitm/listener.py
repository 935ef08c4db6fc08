"""What the proxy listener accepts: the PROXY protocol from trusted load balancers, and TLS
only (the options of `patches/proxy_header.py` and `patches/first_bytes.py`, which do the work
inside mitmproxy's connection handling).

- `regauth_proxy_protocol` (`--proxy-protocol CIDR[,CIDR...]`): the balancers whose PROXY
  header names the client; required from them, refused from everyone else;
- `regauth_plain_http` (`--allow-plain-http`): serve plain HTTP besides TLS, for test setups
  only (logged as a warning at start).

Each flow of a connection that came through a balancer gets `flow.metadata[proxy_header.VIA]` (the
balancer's address), which the exchange log records as `via`.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy.addonmanager import Loader

from regauth.mitm.patches import proxy_header

logger = logging.getLogger(__name__)


class Listener:
    def load(self, loader: Loader) -> None:
        loader.add_option(
            "regauth_proxy_protocol",
            str,
            "",
            "Networks (CIDR[,CIDR...]) of the load balancers that send a PROXY "
            "protocol header (v1 or v2); required from them, refused from "
            "everyone else. Empty: no PROXY protocol.",
        )
        loader.add_option(
            "regauth_plain_http",
            bool,
            False,
            "Serve plain HTTP on the proxy port besides TLS (test setups only: "
            "clients would send passwords and tokens in clear text).",
        )

    def configure(self, updated: set[str]) -> None:
        if "regauth_proxy_protocol" in updated:
            try:
                networks = proxy_header.parse_networks(ctx.options.regauth_proxy_protocol)
            except ValueError as e:
                raise exceptions.OptionsError(f"regauth_proxy_protocol: {e}") from None
            proxy_header.trust(networks)

    def running(self) -> None:
        if ctx.options.regauth_plain_http:
            logger.warning(
                "WARNING: regauth serves plain HTTP on its proxy port (regauth_plain_http): "
                "passwords and tokens cross the network in clear text; for test setups only"
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        via = proxy_header.current_via()
        if via is not None:
            flow.metadata[proxy_header.VIA] = via
