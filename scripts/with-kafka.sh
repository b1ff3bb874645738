#!/usr/bin/env bash
# Run a command with the local Kafka broker up; stop the broker afterwards if this script started it.
# Used by `make test` and `make demo`, so they clean up even when the command fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_SH="$ROOT/scripts/kafka.sh"

started=0
if ! bash "$KAFKA_SH" status >/dev/null 2>&1; then
  bash "$KAFKA_SH" start || { echo "with-kafka: the broker did not start (see above)" >&2; exit 1; }
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then bash "$KAFKA_SH" stop; fi
}
trap cleanup EXIT INT TERM

"$@"
rc=$?
exit "$rc"
