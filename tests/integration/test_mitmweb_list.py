"""mitmweb's flow list, looked at in a real browser (headless Chromium): the Path column shows
what the client asked (the public URL, not the upstream regauth forwarded to), and the comment
column shows the whole auth story line (issue 26 item 9).

A screenshot of the list is saved in the test's tmp_path and copied to
tests/artifacts/mitmweb-list.png (the path is printed: `pytest -s` shows it).
"""

from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path

from regauth.ops.registry_process import free_port
from tests.support import chromium
from tests.support import httpclient
from tests.support.policies import PASSWORDS
from tests.support.policies import SERVICE

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# For each comment cell of the list: its text, and whether the cell shows all of it.
CELLS = """[...document.querySelectorAll('.flow-table tbody tr')].filter(tr => tr.cells.length > 1)
  .map(tr => ({
    path: tr.querySelector('td.col-path').textContent,
    comment: tr.querySelector('td.col-comment').textContent,
    whole: tr.querySelector('td.col-comment').scrollWidth
        <= tr.querySelector('td.col-comment').clientWidth,
  }))"""
READY = "document.querySelectorAll('.flow-table td.col-comment').length >= 3"


def test_the_list_shows_the_clients_url_and_the_whole_story(
    write_policy, make_registry, make_proxy, tmp_path: Path
) -> None:
    registry = make_registry()
    web_port = free_port()
    proxy = make_proxy(write_policy(), registry.url, web_port=web_port)
    match = re.search(rf"http://127\.0\.0\.1:{web_port}/\?token=(\S+)", proxy.output())
    assert match, proxy.output()
    page = match.group(0)
    challenge = httpclient.request(proxy.port, proxy.ca, "GET", "/v2/demo/app/manifests/1")
    assert challenge.status == 401
    token = httpclient.get_token(
        proxy.port, proxy.ca, ["repository:demo/app:pull,push"], SERVICE, ("ci", PASSWORDS["ci"])
    ).json()["token"]
    httpclient.request(
        proxy.port, proxy.ca, "GET", "/v2/demo/app/tags/list", {"Authorization": f"Bearer {token}"}
    )
    time.sleep(0.5)
    public = f"https://localhost:{proxy.port}"

    dom = html.unescape(chromium.dump_dom(page))
    paths = re.findall(r'<td class="col-path">(.*?)</td>', dom)
    shown = {re.sub(r"<[^>]*>", "", p) for p in paths}  # the text, without the marker's span
    for path in ("/v2/demo/app/manifests/1", "/v2/token", "/v2/demo/app/tags/list"):
        assert any(f"{public}{path}" in p for p in shown), (path, shown)
    # Never the upstream's address (the footer names it, as mitmweb's mode).
    assert not any(f":{registry.port}" in p for p in paths), paths
    comments = set(re.findall(r'<td class="col-comment">(.*?)</td>', dom))
    challenge_story = next(c for c in comments if c.startswith("401 challenge → scope "))
    assert re.fullmatch(
        r"401 challenge → scope repository:demo/app:pull — no token \[conv [0-9a-f]{16}\]",
        challenge_story,
    )
    assert any(
        c.startswith("token for ci: repository:demo/app:pull,push → granted [pull,push]")
        and c.endswith("]")
        for c in comments
    ), comments

    # In the browser's layout, every story is shown whole, not cut with an ellipsis.
    cells = chromium.evaluate(page, CELLS, READY)
    assert isinstance(cells, list) and len(cells) >= 3
    for cell in cells:
        assert cell["whole"], f"cut in the list: {cell['comment']}"
        assert f"{public}/v2/" in cell["path"], cell

    shot = chromium.screenshot(page, tmp_path / "mitmweb-list.png")
    ARTIFACTS.mkdir(exist_ok=True)
    kept = shutil.copy(shot, ARTIFACTS / "mitmweb-list.png")
    print(f"mitmweb list screenshot: {shot} (copied to {kept})")
