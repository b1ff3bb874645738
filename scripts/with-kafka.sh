#!/usr/bin/env bash
# Run a command with the local Kafka broker and schema registry up; stop whichever this script started afterwards.
# Used by `make test`, `make demo` and `make bench`, so they clean up even when the command fails. The command
# gets STOCKLEDGER_REGISTRY_URL pointing at the local registry (the codec then takes its schema ids from it),
# unless STOCKLEDGER_REGISTRY_URL is already set (empty: run without the registry, embedded schema ids).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_SH="$ROOT/scripts/kafka.sh"
REGISTRY_SH="$ROOT/scripts/registry.sh"

kafka_started=0
registry_started=0
cleanup() {
  if [ "$registry_started" = 1 ]; then bash "$REGISTRY_SH" stop; fi
  if [ "$kafka_started" = 1 ]; then bash "$KAFKA_SH" stop; fi
}
trap cleanup EXIT INT TERM

want_registry=0
if [ -z "${STOCKLEDGER_REGISTRY_URL+set}" ] && ! bash "$REGISTRY_SH" status >/dev/null 2>&1; then
  want_registry=1
fi
# The registry and the broker start side by side (the registry needs no broker: H2 file storage); about
# 2 s saved on every `make demo` / `make test`.
registry_pid=""
if [ "$want_registry" = 1 ]; then
  bash "$REGISTRY_SH" start &
  registry_pid=$!
  registry_started=1  # from here on the trap stops it, whatever happens below
fi
if ! bash "$KAFKA_SH" status >/dev/null 2>&1; then
  if ! bash "$KAFKA_SH" start; then
    [ -n "$registry_pid" ] && wait "$registry_pid"  # let its start finish, so the trap can stop it by pid
    echo "with-kafka: the broker did not start (see above)" >&2
    exit 1
  fi
  kafka_started=1
fi
if [ -n "$registry_pid" ] && ! wait "$registry_pid"; then
  echo "with-kafka: the schema registry did not start (see above)" >&2
  exit 1
fi
if [ -z "${STOCKLEDGER_REGISTRY_URL+set}" ]; then
  export STOCKLEDGER_REGISTRY_URL="http://127.0.0.1:${STOCKLEDGER_REGISTRY_PORT:-8081}/apis/ccompat/v6"
fi

"$@"
rc=$?
exit "$rc"
