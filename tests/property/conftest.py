"""Hypothesis profiles for the property tests.

`ci` (the default) runs 1,000 examples per target; `fuzz` runs 10,000, or REGAUTH_FUZZ_EXAMPLES
(bench/fuzz.sh selects it with REGAUTH_HYPOTHESIS_PROFILE=fuzz). No deadlines: timing belongs
in bench/, and a slow example on a busy CI machine is not a failure. The example database stays
off in CI runs, so they write nothing into the worktree; a failure prints the blob that
reproduces it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck
from hypothesis import settings

_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
}
settings.register_profile("ci", max_examples=1_000, database=None, **_COMMON)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("REGAUTH_FUZZ_EXAMPLES", "10000")), **_COMMON
)
settings.load_profile(os.environ.get("REGAUTH_HYPOTHESIS_PROFILE", "ci"))
