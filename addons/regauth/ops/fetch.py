"""HTTP requests regauth itself sends to the upstream's token realm (inject mode, Bearer).

The only network I/O of the upstream token flow (`regauth.upstream_auth` decides everything
else): redirects are never followed (credentials must not travel to another host), no proxy
from the environment is used, responses are read up to `MAX_TOKEN_RESPONSE` bytes, and every
request names itself (`User-Agent: regauth-upstream-auth`) so the registry's access log tells
regauth's own requests apart. Raises `UpstreamAuthError` when the realm cannot be reached.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from regauth.upstream_auth import MAX_TOKEN_RESPONSE
from regauth.upstream_auth import USER_AGENT
from regauth.upstream_auth import Fetcher
from regauth.upstream_auth import HttpResult
from regauth.upstream_auth import UpstreamAuthError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def make_fetcher(ssl_context: ssl.SSLContext | None, timeout: float = 15.0) -> Fetcher:
    opener = urllib.request.build_opener(
        _NoRedirect(),
        urllib.request.HTTPSHandler(context=ssl_context),
        urllib.request.ProxyHandler({}),
    )

    def fetch(url: str, headers: dict[str, str]) -> HttpResult:
        # A name of its own, so the registry's access log tells regauth's own requests apart.
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
        try:
            with opener.open(request, timeout=timeout) as response:
                return HttpResult(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read(MAX_TOKEN_RESPONSE),
                    tuple(response.headers.get_all("www-authenticate") or ()),
                )
        except urllib.error.HTTPError as e:
            return HttpResult(
                e.code,
                {k.lower(): v for k, v in e.headers.items()},
                e.read(MAX_TOKEN_RESPONSE),
                tuple(e.headers.get_all("www-authenticate") or ()),
            )
        except (OSError, ValueError) as e:
            raise UpstreamAuthError(f"cannot reach {urlsplit(url).netloc}: {e}") from None

    return fetch
