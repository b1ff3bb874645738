#!/usr/bin/env bash
# Schema registry for development and tests: Apicurio Registry 2.4.2 (Confluent-compatible API), built from Maven Central.
#
#   bash scripts/registry.sh fetch          build the registry with Maven into $REGISTRY_HOME (once, ~2 min; then cached)
#   bash scripts/registry.sh start          fetch if needed, start on 127.0.0.1 with H2 file storage, wait until ready
#   bash scripts/registry.sh stop           SIGTERM the recorded pid, SIGKILL it after 30 s
#   bash scripts/registry.sh status         exit 0 running, 1 process up but not answering, 3 stopped
#   bash scripts/registry.sh logs [-f] [N]  last N (100) lines of its log, -f to follow
#   bash scripts/registry.sh reset          stop it and delete its data (a local registry whose ids drifted from
#                                           the catalog, e.g. after switching branches); `topics create` refills it
#
# Needs bash, java and (for the first fetch) mvn; no Python, no curl. Clients use the Confluent API at
# http://127.0.0.1:<port>/apis/ccompat/v6. Settings mirror services/settings.py:
#   STOCKLEDGER_REGISTRY_PORT (8081), STOCKLEDGER_REGISTRY_HOME (~/.cache/stockledger/registry: the build, shared by
#   clones), STOCKLEDGER_REGISTRY_RUN_DIR (var/registry, relative to the repo root: H2 data, log, pid file),
#   STOCKLEDGER_REGISTRY_HEAP_MIB (384), STOCKLEDGER_REGISTRY_START_TIMEOUT_S (90),
#   STOCKLEDGER_CDS (on | off: the class-data archive next to the build, see scripts/lib.sh).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
SRC_DIR="$SCRIPT_DIR/registry"  # pom.xml + the one config file Quarkus needs (see the pom's comments)

HOST=127.0.0.1
PORT=${STOCKLEDGER_REGISTRY_PORT:-8081}
REGISTRY_HOME_DIR=${STOCKLEDGER_REGISTRY_HOME:-${HOME:?HOME is not set}/.cache/stockledger/registry}
RUN_DIR=${STOCKLEDGER_REGISTRY_RUN_DIR:-var/registry}
HEAP_MIB=${STOCKLEDGER_REGISTRY_HEAP_MIB:-384}
START_TIMEOUT_S=${STOCKLEDGER_REGISTRY_START_TIMEOUT_S:-90}
STOP_TIMEOUT_S=30
API_PATH=/apis/ccompat/v6

say() { printf 'registry.sh: %s\n' "$*"; }
die() { printf 'registry.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

[[ $REGISTRY_HOME_DIR = /* ]] || REGISTRY_HOME_DIR="$REPO_ROOT/$REGISTRY_HOME_DIR"
[[ $RUN_DIR = /* ]] || RUN_DIR="$REPO_ROOT/$RUN_DIR"
for var in PORT HEAP_MIB START_TIMEOUT_S; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "STOCKLEDGER_REGISTRY_$var must be a positive whole number, got '${!var}'"
done

# The build is keyed by the recipe's content: editing the pom rebuilds, two clones with the same recipe share one build.
RECIPE_SHA=$(cd "$SRC_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
BUILD_DIR="$REGISTRY_HOME_DIR/$RECIPE_SHA"
APP_DIR="$BUILD_DIR/quarkus-app"
RUN_JAR="$APP_DIR/quarkus-run.jar"
MARKER="$BUILD_DIR/build.complete"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
LOG_FILE="$LOG_DIR/registry.log"
PID_FILE="$RUN_DIR/registry.pid"
CDS_PENDING="$RUN_DIR/cds-pending"  # the class-data archive the running registry dumps when it stops (scripts/lib.sh)

if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi




# HTTP status of GET $1 on the registry (000 if nothing answers), with bash's /dev/tcp: no curl needed.
http_status() {
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$2" "$0" >&3
        IFS=" " read -r _ code _ <&3 && printf "%s" "$code"' "$HOST" "$PORT" "$1" 2>/dev/null || printf '000'
}


# The pid from the pid file if it is alive and is the registry started with this run dir's data.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid args
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    args=$(pid_args "$pid")
    [[ $args == *quarkus-run.jar* && $args == *"stockledger.registry.run.dir=$RUN_DIR"* ]] || return 1
    echo "$pid"
}

built() { [[ -f $MARKER && -f $RUN_JAR ]]; }

do_fetch() {
    if built; then
        say "registry already built in $APP_DIR"
        return 0
    fi
    mkdir -p "$BUILD_DIR"
    lock 8 "$BUILD_DIR/.build.lock"
    if built; then  # another process finished the build while we waited for the lock
        say "registry already built in $APP_DIR"
        return 0
    fi
    need mvn "install Apache Maven (e.g. apt-get install maven) to build the schema registry"
    local t0 stage
    t0=$(now_ms)
    rm -rf "$BUILD_DIR"/src.partial.*
    stage=$(mktemp -d "$BUILD_DIR/src.partial.XXXXXX")
    cp -R "$SRC_DIR/." "$stage/"
    say "building Apicurio Registry with Maven into $APP_DIR (the first build downloads ~230 MB into ~/.m2: about 2 min)"
    if ! (cd "$stage" && mvn -B -q -Dquarkus.package.type=fast-jar package) >"$stage/mvn.log" 2>&1; then
        tail -n 60 "$stage/mvn.log" >&2
        local kept="$BUILD_DIR/mvn-failed.log"
        cp "$stage/mvn.log" "$kept"
        rm -rf "$stage"
        die "Maven could not build the registry (tail above; full log in $kept)"
    fi
    [[ -f "$stage/target/quarkus-app/quarkus-run.jar" ]] || { rm -rf "$stage"; die "Maven finished but quarkus-run.jar is missing"; }
    rm -f "$MARKER"
    rm -rf "$APP_DIR"
    mv "$stage/target/quarkus-app" "$APP_DIR"
    rm -rf "$stage"
    {
        echo "recipe_sha=$RECIPE_SHA"
        echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$MARKER.tmp"
    mv "$MARKER.tmp" "$MARKER"
    say "built ($(du -sh "$APP_DIR" | cut -f1)) in $(elapsed "$t0")"
}

show_log_tail() {
    if [[ -s $LOG_FILE ]]; then
        echo "----- last 40 lines of $LOG_FILE -----" >&2
        tail -n 40 "$LOG_FILE" >&2
    fi
}

# Ready = the Confluent API lists subjects (the H2 schema is created and the REST layer is up).
wait_ready() {
    local pid=$1 t0=$2 deadline=$((SECONDS + START_TIMEOUT_S))
    while :; do
        if ! pid_alive "$pid"; then
            rm -f "$PID_FILE"
            show_log_tail
            die "the registry (pid $pid) exited during startup (log tail above)"
        fi
        if [[ $(http_status "$API_PATH/subjects") == 200 ]]; then
            say "schema registry ready on http://$HOST:$PORT$API_PATH (pid $pid) after $(elapsed "$t0"); log $LOG_FILE"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            stop_pid "$pid" >&2
            die "the registry did not answer on $HOST:$PORT within ${START_TIMEOUT_S}s (log tail above); stopped it"
        fi
        sleep 0.5
    done
}

do_start() {
    local t0 pid
    t0=$(now_ms)
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"
    lock 9 "$RUN_DIR/.lock"
    if pid=$(running_pid); then
        say "already running on $HOST:$PORT (pid $pid)"
        wait_ready "$pid" "$t0"
        return 0
    fi
    rm -f "$PID_FILE"
    if port_open "$PORT"; then
        die "port $PORT on $HOST is already in use by another process (not the registry of $RUN_DIR); stop it or set STOCKLEDGER_REGISTRY_PORT"
    fi
    need "$JAVA" "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    do_fetch
    say "starting the schema registry on $HOST:$PORT (heap ${HEAP_MIB} MiB, data $DATA_DIR)"
    local detach=() tuning=() cds
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    cds=$(cds_flag "$BUILD_DIR/cds" "$RUN_JAR" "$CDS_PENDING")
    [[ -n $cds ]] && tuning+=("$cds")
    # WRITE_DELAY=0: H2 writes each commit at once (with the default delay a kill -9 lost the last registration).
    # The run-dir property only marks the process as this run dir's registry (see running_pid).
    REGISTRY_DATASOURCE_URL="jdbc:h2:file:$DATA_DIR/registry;WRITE_DELAY=0" \
        "${detach[@]}" nohup "$JAVA" -Xms64m -Xmx"${HEAP_MIB}m" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${tuning[@]}" \
        -Djava.awt.headless=true -Dstockledger.registry.run.dir="$RUN_DIR" \
        -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$PORT" -jar "$RUN_JAR" \
        </dev/null >>"$LOG_FILE" 2>&1 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" "$t0"
}

stop_pid() {  # SIGTERM, wait, then SIGKILL: only ever the given pid
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT_S))
    say "stopping registry pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    local clean=1
    while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.25; done
    if pid_alive "$pid"; then
        say "pid $pid still running after ${STOP_TIMEOUT_S}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        clean=0
        local _
        for _ in {1..20}; do pid_alive "$pid" || break; sleep 0.25; done
    fi
    cds_settle "$CDS_PENDING" "$clean"
    rm -f "$PID_FILE"
}

do_stop() {
    local pid t0
    t0=$(now_ms)
    if [[ -d $RUN_DIR ]]; then lock 9 "$RUN_DIR/.lock"; fi
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    stop_pid "$pid"
    pid_alive "$pid" && die "pid $pid did not exit even after SIGKILL"
    say "stopped in $(elapsed "$t0")"
}

do_status() {
    local pid
    if pid=$(running_pid); then
        if [[ $(http_status "$API_PATH/subjects") == 200 ]]; then
            say "running: pid $pid, http://$HOST:$PORT$API_PATH, run dir $RUN_DIR"
            return 0
        fi
        say "process $pid is up but http://$HOST:$PORT$API_PATH does not answer (starting, or unhealthy: see '$0 logs')"
        return 1
    fi
    if port_open "$PORT"; then
        say "stopped (no registry from $RUN_DIR), but something else listens on $HOST:$PORT"
    else
        say "stopped"
    fi
    return 3
}

do_logs() { tail_log "$LOG_FILE" "$@"; }

usage() { sed -n '2,8s/^# \{0,1\}//p' "$0"; }

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
    fetch) do_fetch ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    logs) do_logs "$@" ;;
    reset)
        do_stop
        rm -rf "$DATA_DIR"
        say "data deleted ($DATA_DIR); the next start is empty: \`stockledger topics create\` registers the catalog" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
