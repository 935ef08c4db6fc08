"""Workload identity federation (issue 24): CI systems log in with the OIDC ID tokens their
platform issues (GitHub Actions, GitLab CI, Kubernetes service accounts, any OIDC issuer), and
policy rules match the tokens' claims.

- `claim_rules`: claim conditions of rules (exact, glob, one of) and the subject template.
- `jwks`: an issuer's JSON Web Key Set, parsed within bounds, cached, refetched on an unknown
  `kid` at most once per interval, the last good keys kept when a fetch fails.
- `id_token`: verification of one ID token against one configured issuer (RFC 7519, OpenID
  Connect Core §3.1.3.7), fail closed, every refusal with a reason `trace` names.

Sans-IO: the JWKS bytes come through a fetch callable (ops/jwks_fetch.py does the HTTPS).
"""
