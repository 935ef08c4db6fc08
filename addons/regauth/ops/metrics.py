"""regauth's Prometheus metrics: definitions, and the labels each decision is counted under.

Everything here is plain values in, counters out (no I/O, no mitmproxy); the adapter
`mitm/metrics_observer.py` feeds it from finished flows, and `mitm/admin.py` serves
`registry` as `/metrics`. Labels never carry repository names, account names, scopes or
secrets: only closed vocabularies, and a rule's 1-based index (or `default`).

Per request (incremented by the observer):
- `regauth_token_requests_total{grant_type,outcome}`: grant_type anonymous, password,
  refresh_token or unknown; outcome issued, invalid_request, invalid_client,
  invalid_credentials, invalid_grant or rate_limited (`token_labels`);
- `regauth_scope_decisions_total{rule,result}`: rule 1-based or `default`; result granted,
  partial or denied;
- `regauth_gate_requests_total{route,outcome}`: route kind (`protocol.routes`) or `none`; outcome
  forwarded, challenged, invalid_token, insufficient_scope or refused (`gate_outcome`);
- `regauth_upstream_request_duration_seconds{route}`: request sent → response headers;
- `regauth_login_failures_total`, `regauth_rate_limited_total`.
Read at scrape time (`add_sampler`, see mitm/admin.py): policy reloads and the last success,
the signing certificate's notAfter, exchange-log records dropped, client connections by
state, upstream and shared-store availability, shared-store errors, and in delegate mode the
delegate check (`regauth_delegate_check{result}` one-hot over `delegate_check.KINDS`,
`regauth_delegate_refusing`, `regauth_delegate_unchecked`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Histogram
from prometheus_client import disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from regauth.gate import GateDecision

# Seconds; registry answers range from sub-millisecond HEADs to multi-second blob commits.
UPSTREAM_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

# Route kinds of `protocol.routes` (a closed vocabulary), plus `none` for requests refused before a
# route was matched.
ROUTES = (
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob",
    "upload-start",
    "upload",
    "referrers",
    "none",
)


def token_labels(
    status: int, record: Mapping[str, object], has_credentials: bool
) -> tuple[str, str]:
    """(grant_type, outcome) of one answered token request.

    `record` is the token service's record (token_service.TokenResponse.record); GET with Basic
    user:password counts as `password`, GET with Basic ":" + refresh token as `refresh_token`
    (README "Refresh tokens").
    """
    credential = record.get("credential")
    grant = record.get("grant_type")
    if isinstance(credential, str):
        grant_type = "password" if credential == "password" else "refresh_token"
    elif grant in ("password", "refresh_token"):
        grant_type = str(grant)
    elif not has_credentials:
        grant_type = "anonymous"
    else:
        grant_type = "unknown"
    if status == 200:
        outcome = "issued"
    elif status == 429:
        outcome = "rate_limited"
    elif status in (400, 401) and grant_type == "refresh_token" and credential is not None:
        outcome = "invalid_grant"
    elif status == 401 and credential == "password":
        outcome = "invalid_credentials"
    elif status == 401:
        outcome = "invalid_client"
    else:
        outcome = "invalid_request"
    return grant_type, outcome


def scope_labels(decision: Mapping[str, object]) -> tuple[str, str]:
    """(rule, result) of one scope decision record (policy.model.ScopeDecision.as_record)."""
    rule = decision.get("rule")
    outcome = decision.get("outcome")
    result = outcome if outcome in ("granted", "partial") else "denied"
    return ("default" if not isinstance(rule, int) else str(rule)), str(result)


def gate_outcome(gate: GateDecision | None, refused_after: bool = False) -> str:
    """What happened to a registry request: `forwarded`, a 401 (`challenged` without a token,
    `invalid_token`, `insufficient_scope`) or `refused` (any other refusal: path grammar,
    method, framing, no policy, no upstream credentials). `refused_after`: the forward decision
    could not be carried out."""
    if gate is None or refused_after:
        return "refused"
    if gate.forward:
        return "forwarded"
    if gate.status == 401:
        challenge = gate.headers.get("WWW-Authenticate", "")
        if 'error="insufficient_scope"' in challenge:
            return "insufficient_scope"
        if 'error="invalid_token"' in challenge:
            return "invalid_token"
        return "challenged"
    return "refused"


class _Sampled(Collector):
    """Metrics read at scrape time from objects that already count (no per-request cost)."""

    def __init__(self, sample: Callable[[], Iterable[Metric]]) -> None:
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        yield from self._sample()


class Metrics:
    """One registry per regauth process (tests make as many as they like).

    The per-request counters are incremented by `token_answered`, `gate_answered` and
    `upstream_answered`; what other components already count (policy reloads, key expiry, log
    losses, connections, store state) is read at scrape time through `add_sampler`.
    """

    def __init__(self) -> None:
        # No `_created` series: they double every scrape and no dashboard of ours reads them.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.token_requests = Counter(
            "regauth_token_requests",
            "Token requests answered",
            ["grant_type", "outcome"],
            registry=r,
        )
        self.scope_decisions = Counter(
            "regauth_scope_decisions", "Scope decisions by rule", ["rule", "result"], registry=r
        )
        self.gate_requests = Counter(
            "regauth_gate_requests", "Registry requests decided", ["route", "outcome"], registry=r
        )
        self.upstream_duration = Histogram(
            "regauth_upstream_request_duration_seconds",
            "Upstream response time (request sent to response headers)",
            ["route"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.login_failures = Counter(
            "regauth_login_failures",
            "Failed password attempts counted by the login limits",
            registry=r,
        )
        self.rate_limited = Counter(
            "regauth_rate_limited", "Token requests refused by the login limits (429)", registry=r
        )
        # labels() takes a lock and builds a key each time; children are cached per label set.
        self._children: dict[tuple[object, ...], object] = {}

    def add_sampler(self, sample: Callable[[], Iterable[Metric]]) -> None:
        """Register a function producing metric families at scrape time."""
        self.registry.register(_Sampled(sample))

    def _child(self, metric: Counter | Histogram, *labels: str):
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def token_answered(
        self, status: int, record: Mapping[str, object], has_credentials: bool
    ) -> None:
        self._child(self.token_requests, *token_labels(status, record, has_credentials)).inc()
        decisions = record.get("decisions")
        if isinstance(decisions, list):
            for decision in decisions:
                if isinstance(decision, dict):
                    self._child(self.scope_decisions, *scope_labels(decision)).inc()
        if record.get("failed_login_counted") is True:
            self.login_failures.inc()
        if "rate_limited" in record:
            self.rate_limited.inc()

    def gate_answered(self, route: str | None, outcome: str) -> None:
        self._child(self.gate_requests, route if route in ROUTES else "none", outcome).inc()

    def upstream_answered(self, route: str | None, seconds: float) -> None:
        self._child(self.upstream_duration, route if route in ROUTES else "none").observe(
            max(0.0, seconds)
        )


def counter(
    name: str,
    documentation: str,
    samples: Iterable[tuple[Mapping[str, str], float]],
    label_names: tuple[str, ...] = (),
) -> CounterMetricFamily:
    """A counter family (`name` without `_total`) from (labels, value) pairs."""
    family = CounterMetricFamily(name, documentation, labels=list(label_names))
    for labels, value in samples:
        family.add_metric([labels[n] for n in label_names], value)
    return family


def gauge(
    name: str,
    documentation: str,
    samples: Iterable[tuple[Mapping[str, str], float]],
    label_names: tuple[str, ...] = (),
) -> GaugeMetricFamily:
    """A gauge family from (labels, value) pairs."""
    family = GaugeMetricFamily(name, documentation, labels=list(label_names))
    for labels, value in samples:
        family.add_metric([labels[n] for n in label_names], value)
    return family
