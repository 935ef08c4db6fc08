"""The addons regauth adds to a mitmproxy master, in order (the guard must come last)."""

from __future__ import annotations

from regauth.mitm import error_pages
from regauth.mitm import jwt_view
from regauth.mitm.addon import RegistryAuth
from regauth.mitm.guard import RegauthGuard


def make_addons() -> list[object]:
    error_pages.install()
    jwt_view.register()
    return [RegistryAuth(), RegauthGuard()]
