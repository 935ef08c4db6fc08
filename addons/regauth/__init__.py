"""regauth: an auth proxy for container registries, built on mitmproxy (see README.md).

`addons/` is the source root: this package, plus `addons/registry_auth.py`, the entry script
for `mitmdump -s` users. The mitmproxy addons live in `regauth.mitm`, not in `addons/`.

The package map: a sans-IO core that decides, adapters that carry decisions out, tools.

- the deciders, at the top: `front` (every request), `gate` (registry routes),
  `token_service` and `token_trace` (the token endpoint, with its wire shapes in
  `token_request` and the certificate and job-token identities in `token_credentials`),
  `delegate_check` (may delegate mode
  forward?), `upstream_auth` (regauth's own upstream credentials), `runtime` (the snapshot,
  `Active`, every request is decided with);
- `protocol/`: the wire vocabulary, pure: OCI grammars, scopes, routes, challenges,
  Authorization headers, registry errors, URLs, strict JSON, request-head bounds, the PROXY
  protocol;
- `policy/`: the policy's model and decisions (`model`), the strict YAML loader with
  `file:line:column` problems (`load` with `reader`, `load_rules`, `load_upstreams`,
  `load_keys`, `yamlpos`), repository patterns on RE2 (`patterns`, `linear_regex`);
- `tokens/`: signing keys (`keyring`, `keyids`, `keystate`), issuing (`issue`: access,
  refresh and job tokens), verifying (`verify`, `claims`), keys a registry refused
  (`refused_keys`);
- `mtls/`: client certificates as identities: subjects and chain verification (`identity`),
  the deny list (`revocations`);
- `logins/`: bcrypt checks and caches (`credentials`), failed-login limits (`limits`), the fair
  login queue (`queue`), job-token records and revocations (`job_tokens`), the Redis store
  shared by replicas (`redis_store`);
- `ops/`: what operators run and read: the exchange log (its record `exchange_record`,
  written by `exchange_log`, linked into `conversations`), `metrics`, `health`, key files
  (`pki`, the client CA in `client_ca`), the embedded registry (`registry_process`), trust
  instructions, escaping for terminals (`safe_text`), the upstream token fetcher (`fetch`),
  the default public URL;
- `mitm/`: mitmproxy adapters, one addon per concern, in the order of `mitm/addons_list.py`;
  `mitm/patches/` lists every private mitmproxy, mitmweb and hyper-h2 object replaced;
- `tools/`: the operator commands (`policy check/test/diff/explain`, `replay`, `trace`,
  `certs`, `certs client/revoke`, `token issue/list/revoke`); `cli` parses arguments and
  dispatches, nothing else.

The life of a request:

1. `mitm.listener` and `mitm.patches` accept the connection (PROXY header, TLS only, bounds);
2. `mitm.request_handler` turns the request's line and headers into a `front.RequestView`;
3. `front.decide` returns one decision: `Respond`, `Forward`, `IssueToken` or `ReadTokenForm`
   (registry routes through `gate`, token requests through `token_service` and `policy`);
4. the request handler carries it out: answers, forwards (`mitm.response_rewriter` rewrites
   what the registry answers), or runs the login queue (`mitm.login_pool`);
5. `mitm.recorder` writes the exchange record (`ops.exchange_record`, built by
   `mitm.records`, appended by `ops.exchange_log`) and the mitmweb comment;
6. `mitm.fail_closed` kills whatever no decision allowed, and contains any exception as a 500.

I/O: `front`, `gate`, `token_service`, `token_credentials`, `protocol/`, `mtls/`,
`policy/model`, `policy/patterns` and `tokens/issue`/`verify` never do any. Network and
process I/O (`socket`, `ssl`, `subprocess`, `urllib.request`, `http.client`, `redis`) is
allowed only in `ops/`, `logins/redis_store`, `mitm/`, `tools/` and `cli` (ruff's banned-api
rule, `tests/unit/test_boundary.py`). Reading the operator's own files stays with its concern:
`policy/load`, `policy/load_keys`, `tokens/keystate`, `ops/pki`, `ops/client_ca` and
`logins/job_tokens`.
"""
