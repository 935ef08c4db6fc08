"""regauth: an auth proxy for container registries (see README.md)."""
