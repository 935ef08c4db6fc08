"""The wire vocabulary, pure: what clients and registries send, parsed against its grammar
and bounded (OCI names and references, scopes, routes, challenges, Authorization headers,
registry errors, URLs, strict JSON, request-head bounds, the PROXY protocol). No I/O."""
