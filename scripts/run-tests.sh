#!/usr/bin/env bash
# The whole pytest suite (unit and integration); "no tests collected" (pytest exit 5) is a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "run-tests: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
