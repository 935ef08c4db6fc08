from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE
from tests.support.tools import skopeo


def test_registry_in_token_mode_accepts_regauth_tokens(token_registry_proxy, layout):
    registry, proxy = token_registry_proxy
    path, digest = layout
    reply = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:demo/app:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    )
    assert reply.status == 200, reply.body
    result = skopeo(
        "copy",
        "--dest-cert-dir",
        str(proxy.certs_dir),
        "--dest-creds",
        f"ci:{PASSWORDS['ci']}",
        f"oci:{path}:latest",
        f"docker://{proxy.netloc}/demo/app:1",
    )
    assert result.ok, result.output
