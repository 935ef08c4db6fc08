#!/usr/bin/env bash
# Run the property tests (tests/property/) with the `fuzz` profile: 10,000 examples per target
# (CI runs 1,000), and print examples and time per target.
#   bench/fuzz.sh                      # every target
#   bench/fuzz.sh -k jwt               # extra arguments go to pytest
#   REGAUTH_FUZZ_EXAMPLES=50000 bench/fuzz.sh
# Failures print a @reproduce_failure blob and are saved in .hypothesis/ (git-ignored), so the
# next run replays them first.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
REGAUTH_HYPOTHESIS_PROFILE=fuzz .venv/bin/python -m pytest tests/property -q \
  -p no:cacheprovider --hypothesis-show-statistics "$@" >"$out" 2>&1 || status=$?
.venv/bin/python - "$out" <<'PY'
import re
import sys

text = open(sys.argv[1]).read()
stats = text.split("Hypothesis Statistics", 1)[-1]
rows = []
for block in re.split(r"\n(?=tests/property/\S+::\S+:\n)", stats):
    head = re.match(r"(?:.*\n)?tests/property/(\S+)::(\S+):\n", block)
    if not head:
        continue
    seconds = sum(float(s) for s in re.findall(r"during \w+ phase \(([\d.]+) seconds\)", block))
    counts = [tuple(map(int, m)) for m in
              re.findall(r"(\d+) passing, (\d+) failing, and (\d+) invalid", block)]
    passing = sum(c[0] for c in counts)
    failing = sum(c[1] for c in counts)
    invalid = sum(c[2] for c in counts)
    rows.append((head[1].removesuffix(".py"), head[2].removeprefix("test_"), passing, failing,
                 invalid, seconds))
print(f"{'module':<28} {'target':<58} {'passing':>8} {'failing':>7} {'invalid':>7} "
      f"{'time s':>7} {'ms/ex':>6}")
for module, target, passing, failing, invalid, seconds in rows:
    per = 1000 * seconds / max(passing + failing, 1)
    print(f"{module:<28} {target:<58} {passing:>8} {failing:>7} {invalid:>7} {seconds:>7.1f} "
          f"{per:>6.2f}")
print(f"{len(rows)} targets, {sum(r[2] for r in rows)} passing examples, "
      f"{sum(r[3] for r in rows)} failing, {sum(r[5] for r in rows):.0f} s in hypothesis")
summary = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed)", line)]
print(summary[-1] if summary else text[-3000:])
PY
if [ "$status" -ne 0 ]; then
  grep -E "^(FAILED|ERROR)|Falsifying|reproduce_failure" "$out" || tail -50 "$out"
fi
exit "$status"
