"""Reading regauth's admin listener: metrics parsed with prometheus_client's own parser."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


def get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET on the admin listener."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Scrape:
    samples: dict[Key, float]
    text: str

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def total(self, name: str, **labels: str) -> float:
        """Sum over every label set that includes `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def delta(self, before: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)


def scrape(port: int) -> Scrape:
    status, text = get(port, "/metrics")
    assert status == 200, text
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, text)


def wait_status(port: int, path: str, status: int, timeout: float = 30) -> str:
    """Poll until GET `path` answers `status`; return its body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        try:
            last = get(port, path)
        except OSError as e:
            last = (0, str(e))
        if last[0] == status:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"{path} answered {last}, expected {status}")
