"""Readiness: whether a regauth process should receive traffic (no I/O here).

Kubernetes sends a replica traffic only while `/readyz` answers 200 (`mitm/admin.py`); this
module says when that is (the shipped HAProxy config checks `/healthz` instead, so that a
registry outage, which makes every replica unready at once, reaches clients as regauth's
`503 UNAVAILABLE` rather than as a closed connection):

- a policy and a signing key are loaded (without them every request is refused with 503);
- the signing certificate has not expired (registries check the `x5c` certificate);
- the upstream registry answered the probe (`GET /v2/`, any HTTP status counts: a 401 is an
  alive registry) within the last `window` seconds;
- in delegate mode, the delegate check passed (`regauth.delegate_check`): the registry
  challenges anonymous requests for regauth's realm and service and accepts regauth's tokens.

Warnings (the delegate check's opt-out) do not make a replica unready; `/readyz` shows them as
`warning: …` lines after `ready`.

Liveness (`/healthz`) is simpler: the handler runs on the proxy's event loop, so any answer
proves that the process and its loop respond.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]  # why not ready; empty when ready
    warnings: tuple[str, ...] = ()  # shown, but no reason to be unready

    def body(self) -> str:
        head = "ready\n" if self.ready else "".join(f"not ready: {r}\n" for r in self.reasons)
        return head + "".join(f"warning: {w}\n" for w in self.warnings)


def readiness(
    policy_loaded: bool,
    signer_not_after: float | None,
    upstream_answered: float | None,
    upstream_error: str | None,
    now: float,
    window: float,
    *,
    delegate: str | None = None,
    warnings: Sequence[str] = (),
) -> Readiness:
    """`signer_not_after` and `upstream_answered` are Unix times (None: no key / never
    answered); `upstream_error` is the last probe failure, for the reason text; `delegate` is
    why the delegate check does not pass (None: it passes, or does not apply); `warnings` are
    lines shown whatever the outcome."""
    reasons: list[str] = []
    if not policy_loaded:
        reasons.append("no valid policy and signing key loaded")
    elif signer_not_after is None:
        reasons.append("no signing key loaded")
    elif signer_not_after <= now:
        reasons.append("the token-signing certificate has expired")
    if upstream_answered is None:
        reasons.append(
            "the upstream registry has not answered yet"
            + (f" ({upstream_error})" if upstream_error else "")
        )
    elif now - upstream_answered > window:
        reasons.append(
            f"the upstream registry has not answered for {now - upstream_answered:.0f}"
            f" s" + (f" ({upstream_error})" if upstream_error else "")
        )
    if delegate:
        reasons.append(delegate)
    return Readiness(not reasons, tuple(reasons), tuple(warnings))
