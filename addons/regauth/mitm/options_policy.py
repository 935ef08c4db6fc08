"""Fail closed on mitmproxy options that would let requests bypass regauth's decisions."""

from __future__ import annotations

from mitmproxy import ctx
from mitmproxy import exceptions

from regauth.mitm.config_loader import upstream_from_modes

# Options that pass traffic around the addon (ignore/allow/tcp/udp hosts), change requests after
# regauth decided (map_remote, modify_headers, keep_host_header), replay flows to other hosts,
# add credentials of their own, crash per-flow streaming, allow request smuggling, or write
# flows to disk before regauth scrubbed their secrets.
FORBIDDEN_OPTIONS = frozenset({
    "ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts", "keep_host_header",
    "upstream_auth", "map_remote", "modify_headers", "map_local", "client_replay",
    "server_replay", "stream_large_bodies", "validate_inbound_headers", "save_stream_file",
})


class OptionPolicy:
    """Refuses forbidden option values however they are given (command line, config file,
    mitmweb, console); mitmproxy rolls a refused run-time change back."""

    def configure(self, updated: set[str]) -> None:
        for name in sorted(updated & FORBIDDEN_OPTIONS):
            if getattr(ctx.options, name) != ctx.options.default(name):
                raise exceptions.OptionsError(
                    f"mitmproxy option {name} is not allowed with regauth: it would let "
                    "requests bypass regauth's decisions or keep secrets it removes")
        if "mode" in updated and list(ctx.options.mode) != list(ctx.options.default("mode")):
            # mitmproxy applies --set before --mode, so the default mode is not yet an error
            # (running() refuses to serve if it stays); any other mode list must be exactly
            # the one reverse proxy regauth guards.
            try:
                upstream_from_modes(list(ctx.options.mode))
            except ValueError as e:
                raise exceptions.OptionsError(f"regauth: {e}") from None
