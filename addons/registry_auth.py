"""Entry script for people who run mitmproxy themselves:

    mitmdump -s addons/registry_auth.py --mode reverse:http://127.0.0.1:5000 \
        --set regauth_policy=policies/default.yaml --set confdir=certs/private \
        --set connection_strategy=lazy

`./run_proxy.sh` does not use this file: it embeds the addons in the mitmproxy master
(`regauth serve`), so that a failing script reload or a mistyped option can never leave a proxy
running without them. Script loading cannot give that guarantee (see README, "Fail closed").
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from regauth.mitm.addons_list import make_addons

addons = make_addons()
