#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) for development and tests, run from Maven Central jars.
#
#   bash scripts/kafka.sh fetch          copy the broker jars into $KAFKA_HOME/<version>/libs (once)
#   bash scripts/kafka.sh start          fetch if needed, format storage once, start, wait until ready
#   bash scripts/kafka.sh stop           SIGTERM the recorded pid, SIGKILL it after 30 s
#   bash scripts/kafka.sh status         exit 0 running, 1 process up but not answering, 3 stopped
#   bash scripts/kafka.sh logs [-f] [N]  last N (100) lines of the server log, -f to follow
#
# Needs bash, java, openssl and (for the first fetch) mvn. The client listener is SASL_SSL (SCRAM-SHA-512)
# with the StandardAuthorizer (docs/SECURITY.md): the first start makes a local CA and broker certificate
# (in STOCKLEDGER_KAFKA_TLS_DIR, outside the clone), a password per principal (the 0600 credentials file),
# and formats the storage with those SCRAM credentials; every start applies the ACLs with
# `.venv/bin/stockledger acls apply` (so SASL mode needs `make install` first). The controller listener is
# TLS with client certificates, on loopback. STOCKLEDGER_KAFKA_SECURITY=plaintext runs an open broker
# (no authentication, no ACLs): development only. If .venv/bin/python has kafka-python, start also waits
# for a real metadata answer, not just an open port. Settings mirror services/settings.py:
#   STOCKLEDGER_KAFKA_PORT (9092), STOCKLEDGER_KAFKA_CONTROLLER_PORT (9093), STOCKLEDGER_KAFKA_VERSION (3.9.1),
#   STOCKLEDGER_KAFKA_HOME (~/.cache/stockledger/kafka: jars, shared by clones),
#   STOCKLEDGER_KAFKA_RUN_DIR (var/kafka, relative to the repo root: config, data, logs, pid file),
#   STOCKLEDGER_KAFKA_HEAP_MIB (512), STOCKLEDGER_KAFKA_START_TIMEOUT_S (90),
#   STOCKLEDGER_KAFKA_SECURITY (sasl_ssl | plaintext), STOCKLEDGER_KAFKA_TLS_DIR (~/.cache/stockledger/tls),
#   STOCKLEDGER_KAFKA_CREDENTIALS_FILE (<run dir>/credentials.properties),
#   STOCKLEDGER_KAFKA_JIT (quick: C1 only, the default for this short-lived broker | full: C1 + C2),
#   STOCKLEDGER_CDS (on | off: the class-data archive in $KAFKA_HOME/<version>/cds, see scripts/lib.sh).
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
POM="$SCRIPT_DIR/kafka/pom.xml"

HOST=127.0.0.1
PORT=${STOCKLEDGER_KAFKA_PORT:-9092}
CONTROLLER_PORT=${STOCKLEDGER_KAFKA_CONTROLLER_PORT:-9093}
VERSION=${STOCKLEDGER_KAFKA_VERSION:-3.9.1}
KAFKA_HOME_DIR=${STOCKLEDGER_KAFKA_HOME:-${HOME:?HOME is not set}/.cache/stockledger/kafka}
RUN_DIR=${STOCKLEDGER_KAFKA_RUN_DIR:-var/kafka}
HEAP_MIB=${STOCKLEDGER_KAFKA_HEAP_MIB:-512}
START_TIMEOUT_S=${STOCKLEDGER_KAFKA_START_TIMEOUT_S:-90}
JIT=${STOCKLEDGER_KAFKA_JIT:-quick}
STOP_TIMEOUT_S=30
SECURITY=${STOCKLEDGER_KAFKA_SECURITY:-sasl_ssl}
TLS_DIR=${STOCKLEDGER_KAFKA_TLS_DIR:-$HOME/.cache/stockledger/tls}
BROKER_CN=stockledger-broker  # the controller listener's principal is User:CN=$BROKER_CN (a super user)

say() { printf 'kafka.sh: %s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

[[ $KAFKA_HOME_DIR = /* ]] || KAFKA_HOME_DIR="$REPO_ROOT/$KAFKA_HOME_DIR"
[[ $RUN_DIR = /* ]] || RUN_DIR="$REPO_ROOT/$RUN_DIR"
[[ $TLS_DIR = /* ]] || TLS_DIR="$REPO_ROOT/$TLS_DIR"
[[ $JIT == quick || $JIT == full ]] || die "STOCKLEDGER_KAFKA_JIT must be quick or full, got '$JIT'"
[[ $SECURITY == sasl_ssl || $SECURITY == plaintext ]] \
    || die "STOCKLEDGER_KAFKA_SECURITY must be sasl_ssl or plaintext, got '$SECURITY'"
CREDS_FILE=${STOCKLEDGER_KAFKA_CREDENTIALS_FILE:-$RUN_DIR/credentials.properties}
[[ $CREDS_FILE = /* ]] || CREDS_FILE="$REPO_ROOT/$CREDS_FILE"
for var in PORT CONTROLLER_PORT HEAP_MIB START_TIMEOUT_S; do
    [[ ${!var} =~ ^[1-9][0-9]*$ ]] || die "STOCKLEDGER_KAFKA_$var must be a positive whole number, got '${!var}'"
done
[[ $PORT != "$CONTROLLER_PORT" ]] || die "broker and controller ports must differ (both $PORT)"
[[ $VERSION =~ ^3\.[0-9]+\.[0-9]+$ ]] \
    || die "Kafka $VERSION is not supported by this script: it runs 3.x (log4j 1 via reload4j); 4.x needs log4j2 jars and config"

VERSION_DIR="$KAFKA_HOME_DIR/$VERSION"
LIBS_DIR="$VERSION_DIR/libs"
MARKER="$VERSION_DIR/libs.complete"
DATA_DIR="$RUN_DIR/data"
LOG_DIR="$RUN_DIR/logs"
PID_FILE="$RUN_DIR/kafka.pid"
AUTOSTART_MARKER="$RUN_DIR/autostarted-by-tests"  # written by tests/integration/conftest.py
SERVER_PROPS="$RUN_DIR/server.properties"
LOG4J_PROPS="$RUN_DIR/log4j.properties"
SERVER_LOG="$LOG_DIR/server.log"
CONSOLE_LOG="$LOG_DIR/console.log"
VENV_PY="$REPO_ROOT/.venv/bin/python"
CDS_PENDING="$RUN_DIR/cds-pending"  # the class-data archive the running broker dumps when it stops (scripts/lib.sh)
SCRAM_MARKER="$RUN_DIR/scram-formatted"  # principals whose SCRAM credentials the storage was formatted with
CA_PEM="$TLS_DIR/ca.pem"
BROKER_KEYSTORE="$TLS_DIR/broker-keystore.pem"
PRINCIPALS=""  # filled by ensure_credentials from services/kafka_security.py

if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi




port_owner() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null | head -n 3
    fi
}


# The pid from the pid file if it is alive and is the broker started with this run dir's config.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid args
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    args=$(pid_args "$pid")
    [[ $args == *kafka.Kafka*"$SERVER_PROPS"* ]] || return 1
    echo "$pid"
}

libs_complete() {
    [[ -f $MARKER && -f "$LIBS_DIR/kafka_2.13-$VERSION.jar" ]] || return 1
    grep -qx "pom_sha256=$(sha256sum "$POM" | cut -d' ' -f1)" "$MARKER"
}

do_fetch() {
    if libs_complete; then
        say "Kafka $VERSION jars already fetched in $LIBS_DIR"
        return 0
    fi
    mkdir -p "$VERSION_DIR"
    lock 8 "$VERSION_DIR/.fetch.lock"
    if libs_complete; then  # another process finished the fetch while we waited for the lock
        say "Kafka $VERSION jars already fetched in $LIBS_DIR"
        return 0
    fi
    need mvn "install Apache Maven (e.g. apt-get install maven) to fetch the Kafka jars"
    local t0 stage count
    t0=$(now_ms)
    rm -rf "$VERSION_DIR"/libs.partial.*
    stage=$(mktemp -d "$VERSION_DIR/libs.partial.XXXXXX")
    say "fetching org.apache.kafka:kafka_2.13:$VERSION and its runtime jars with Maven into $LIBS_DIR"
    if ! mvn -q -B -f "$POM" -Dkafka.version="$VERSION" -Dkafka.libs.dir="$stage/libs" \
            dependency:copy-dependencies >"$stage/mvn.log" 2>&1; then
        cat "$stage/mvn.log" >&2
        rm -rf "$stage"
        die "Maven could not fetch Kafka $VERSION (output above)"
    fi
    [[ -f "$stage/libs/kafka_2.13-$VERSION.jar" ]] || { rm -rf "$stage"; die "Maven finished but kafka_2.13-$VERSION.jar is missing"; }
    rm -f "$MARKER"
    rm -rf "$LIBS_DIR"
    mv "$stage/libs" "$LIBS_DIR"
    rm -rf "$stage"
    count=$(find "$LIBS_DIR" -maxdepth 1 -name '*.jar' | wc -l)
    {
        echo "version=$VERSION"
        echo "pom_sha256=$(sha256sum "$POM" | cut -d' ' -f1)"
        echo "jars=$count"
        echo "fetched_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$MARKER.tmp"
    mv "$MARKER.tmp" "$MARKER"
    say "fetched $count jars ($(du -sh "$LIBS_DIR" | cut -f1)) in $(elapsed "$t0")"
}

# The listener block of server.properties: SASL_SSL + ACLs, or the open PLAINTEXT (development only).
listener_config() {
    if [[ $SECURITY == plaintext ]]; then
        cat <<EOF
# STOCKLEDGER_KAFKA_SECURITY=plaintext: no authentication, no authorization (development only).
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
        return
    fi
    cat <<EOF
# Clients: SCRAM-SHA-512 over TLS. Controller: TLS with a client certificate signed by the local CA.
listeners=SASL_SSL://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$PORT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(credential broker)";
ssl.keystore.type=PEM
ssl.keystore.location=$BROKER_KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$CA_PEM
ssl.endpoint.identification.algorithm=https
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:broker;User:CN=$BROKER_CN
EOF
}

write_configs() {
    # The SASL block holds the broker's password: only the owner may read the file.
    (umask 077; { cat <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
log.dirs=$DATA_DIR
num.partitions=6
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=1048577
# Tests delete their topics and stop the broker within a minute; the 60 s default left the files behind.
file.delete.delay.ms=1000
EOF
    listener_config; } >"$SERVER_PROPS.tmp") || die "cannot write $SERVER_PROPS"
    mv "$SERVER_PROPS.tmp" "$SERVER_PROPS"
    cat >"$LOG4J_PROPS" <<EOF
# Written by scripts/kafka.sh: everything goes to files in $LOG_DIR, nothing to the terminal.
log4j.rootLogger=INFO, server

log4j.appender.server=org.apache.log4j.RollingFileAppender
log4j.appender.server.File=$SERVER_LOG
log4j.appender.server.MaxFileSize=20MB
log4j.appender.server.MaxBackupIndex=3
log4j.appender.server.layout=org.apache.log4j.PatternLayout
log4j.appender.server.layout.ConversionPattern=[%d] %p %m (%c)%n

log4j.appender.stateChange=org.apache.log4j.RollingFileAppender
log4j.appender.stateChange.File=$LOG_DIR/state-change.log
log4j.appender.stateChange.MaxFileSize=10MB
log4j.appender.stateChange.MaxBackupIndex=1
log4j.appender.stateChange.layout=org.apache.log4j.PatternLayout
log4j.appender.stateChange.layout.ConversionPattern=[%d] %p %m (%c)%n

log4j.appender.cleaner=org.apache.log4j.RollingFileAppender
log4j.appender.cleaner.File=$LOG_DIR/log-cleaner.log
log4j.appender.cleaner.MaxFileSize=10MB
log4j.appender.cleaner.MaxBackupIndex=1
log4j.appender.cleaner.layout=org.apache.log4j.PatternLayout
log4j.appender.cleaner.layout.ConversionPattern=[%d] %p %m (%c)%n

log4j.logger.state.change.logger=INFO, stateChange
log4j.additivity.state.change.logger=false
log4j.logger.kafka.log.LogCleaner=INFO, cleaner
log4j.additivity.kafka.log.LogCleaner=false
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
EOF
}

# StorageTool runs once per run dir: the data dir keeps meta.properties (cluster id) across restarts.
format_storage() {
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    local cluster_id
    cluster_id=$("$JAVA" -Dlog4j.configuration="file:$LOG4J_PROPS" -cp "$LIBS_DIR/*" \
        kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/format.log" | tail -n 1)
    # Uuid.randomUuid: URL-safe base64 of a random UUID, no padding, never starting with '-'.
    [[ $cluster_id =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]] || die "bad cluster id '$cluster_id' (see $LOG_DIR/format.log)"
    say "formatting $DATA_DIR (cluster id $cluster_id)"
    mkdir -p "$DATA_DIR"
    # SASL mode: every principal's SCRAM credential goes into the first metadata records, so the broker
    # never answers a client before the credentials exist (the passwords are on this command line briefly).
    local scram=() name
    if [[ $SECURITY == sasl_ssl ]]; then
        for name in $PRINCIPALS; do
            scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$(credential "$name")]")
        done
    fi
    if ! "$JAVA" -Dlog4j.configuration="file:$LOG4J_PROPS" -cp "$LIBS_DIR/*" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$SERVER_PROPS" "${scram[@]}" >>"$LOG_DIR/format.log" 2>&1; then
        tail -n 40 "$LOG_DIR/format.log" >&2
        die "formatting the storage in $DATA_DIR failed (log above)"
    fi
    echo "$cluster_id" >"$RUN_DIR/cluster.id"
    if [[ $SECURITY == sasl_ssl ]]; then echo "$PRINCIPALS" >"$SCRAM_MARKER"; else rm -f "$SCRAM_MARKER"; fi
}

# A data dir formatted by an open (plaintext) start has no SCRAM users: nobody could log in. It holds
# development data only; it is moved aside (not deleted) and the storage formatted afresh.
retire_unsecured_storage() {
    [[ $SECURITY == sasl_ssl && -f "$DATA_DIR/meta.properties" && ! -f $SCRAM_MARKER ]] || return 0
    local aside
    aside="$RUN_DIR/data.unsecured-$(date -u +%Y%m%dT%H%M%SZ)"
    mv "$DATA_DIR" "$aside"
    say "the storage in $DATA_DIR was formatted without SCRAM credentials; moved it to $aside (delete it when unneeded)"
}

# ---- TLS material (shared by clones, like the jars) and credentials (per run dir) --------------------

# A local CA (10 years) and a broker certificate (2 years, renewed 30 days before it ends) for
# localhost, 127.0.0.1 and the compose host name kafka; the keystore is the key followed by the chain.
ensure_tls() {
    need openssl "install OpenSSL to make the broker's TLS certificate"
    mkdir -p "$TLS_DIR"
    chmod 700 "$TLS_DIR"
    lock 7 "$TLS_DIR/.lock"
    if [[ ! -s $CA_PEM || ! -s "$TLS_DIR/ca.key" ]]; then
        say "making a local certificate authority in $TLS_DIR"
        (umask 077; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$TLS_DIR/ca.key" -out "$CA_PEM.tmp" -days 3650 -subj "/CN=stockledger local CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null) \
            || die "openssl could not make the CA"
        chmod 644 "$CA_PEM.tmp"
        mv "$CA_PEM.tmp" "$CA_PEM"
        rm -f "$BROKER_KEYSTORE" "$TLS_DIR/broker.pem"
    fi
    if [[ ! -s $BROKER_KEYSTORE ]] || ! openssl x509 -checkend $((30 * 86400)) -noout -in "$TLS_DIR/broker.pem" >/dev/null 2>&1 \
            || ! openssl verify -CAfile "$CA_PEM" "$TLS_DIR/broker.pem" >/dev/null 2>&1; then
        say "making the broker certificate (CN=$BROKER_CN) in $TLS_DIR"
        local ext
        ext=$(mktemp "$TLS_DIR/ext.XXXXXX")
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:kafka" \
            "extendedKeyUsage=serverAuth,clientAuth" "keyUsage=critical,digitalSignature,keyEncipherment" >"$ext"
        (umask 077
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TLS_DIR/broker.key" \
             -out "$TLS_DIR/broker.csr" -subj "/CN=$BROKER_CN" 2>/dev/null \
         && openssl x509 -req -in "$TLS_DIR/broker.csr" -CA "$CA_PEM" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
             -out "$TLS_DIR/broker.pem" -days 730 -extfile "$ext" 2>/dev/null \
         && cat "$TLS_DIR/broker.key" "$TLS_DIR/broker.pem" "$CA_PEM" >"$BROKER_KEYSTORE.tmp") \
            || { rm -f "$ext"; die "openssl could not make the broker certificate"; }
        rm -f "$ext" "$TLS_DIR/broker.csr"
        mv "$BROKER_KEYSTORE.tmp" "$BROKER_KEYSTORE"
    fi
    exec 7>&-
}

# The password of principal $1 from the credentials file (made by ensure_credentials).
credential() {
    local line
    while IFS= read -r line; do
        [[ $line == "$1="* ]] && { printf '%s' "${line#*=}"; return 0; }
    done <"$CREDS_FILE"
    die "no password for principal '$1' in $CREDS_FILE"
}

# Principals come from services/kafka_security.py (the one list); a password is made for each missing one.
ensure_credentials() {
    [[ -x $VENV_PY ]] || die "SASL mode needs the project's virtualenv ($VENV_PY): run 'make install' first"
    PRINCIPALS=$("$VENV_PY" -c 'from services.kafka_security import PRINCIPALS; print(" ".join(PRINCIPALS))') \
        || die "cannot read the principals from services/kafka_security.py"
    mkdir -p "$(dirname "$CREDS_FILE")"
    (umask 077; touch "$CREDS_FILE")
    chmod 600 "$CREDS_FILE"
    local name made=()
    for name in $PRINCIPALS; do
        if ! grep -q "^$name=" "$CREDS_FILE"; then
            printf '%s=%s\n' "$name" "$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" >>"$CREDS_FILE"
            made+=("$name")
        fi
    done
    ((${#made[@]} == 0)) || say "made passwords for ${made[*]} in $CREDS_FILE (mode 0600)"
}

# Runs a project Python command logged in as admin to this broker, whatever the caller's own settings.
py_env() {
    env -u STOCKLEDGER_KAFKA_PRINCIPAL -u STOCKLEDGER_KAFKA_PASSWORDS STOCKLEDGER_KAFKA_SECURITY="$SECURITY" \
        STOCKLEDGER_KAFKA_TLS_DIR="$TLS_DIR" STOCKLEDGER_KAFKA_CREDENTIALS_FILE="$CREDS_FILE" \
        STOCKLEDGER_KAFKA_HOST="$HOST" STOCKLEDGER_KAFKA_PORT="$PORT" "$@"
}

# ACLs live in the metadata log; applying them at every start keeps them equal to the code's GRANTS.
apply_acls() {
    [[ $SECURITY == sasl_ssl ]] || return 0
    if ! py_env "$REPO_ROOT/.venv/bin/stockledger" acls apply >>"$LOG_DIR/acls.log" 2>&1; then
        tail -n 20 "$LOG_DIR/acls.log" >&2
        return 1
    fi
    say "$(tail -n 1 "$LOG_DIR/acls.log")"
}

# Server log lines from before this start are skipped (SERVER_LOG_MARK = line count at launch).
SERVER_LOG_MARK=0
show_log_tail() {
    local lines=0
    [[ -f $SERVER_LOG ]] && lines=$(wc -l <"$SERVER_LOG")
    ((lines >= SERVER_LOG_MARK)) || SERVER_LOG_MARK=0  # rotated meanwhile
    if ((lines > SERVER_LOG_MARK)); then
        echo "----- last 40 lines of $SERVER_LOG -----" >&2
        tail -n +"$((SERVER_LOG_MARK + 1))" "$SERVER_LOG" | tail -n 40 >&2
    else
        echo "----- nothing new in $SERVER_LOG -----" >&2
    fi
    if [[ -s $CONSOLE_LOG ]]; then
        echo "----- last 40 lines of $CONSOLE_LOG (JVM stdout/stderr) -----" >&2
        tail -n 40 "$CONSOLE_LOG" >&2
    fi
}

# Metadata probe with kafka-python, if the venv has it; otherwise an open port has to do.
metadata_probe_available() {
    [[ -x $VENV_PY ]] && "$VENV_PY" -c 'import kafka' >/dev/null 2>&1
}

metadata_probe() {
    py_env timeout 20 "$VENV_PY" -c '
import sys
from kafka import KafkaAdminClient
from services.kafka_security import ADMIN, kafka_python_auth
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], bootstrap_timeout_ms=5000, request_timeout_ms=5000,
                         **kafka_python_auth(ADMIN))
try:
    admin.list_topics()
finally:
    admin.close()
' "$HOST:$PORT" >>"$LOG_DIR/probe.log" 2>&1
}

# Wait for the broker with pid $1 to answer; on failure show the log tail, kill it, exit non-zero.
wait_ready() {
    local pid=$1 t0=$2 probe=tcp deadline=$((SECONDS + START_TIMEOUT_S))
    metadata_probe_available && probe=metadata
    : >"$LOG_DIR/probe.log"
    while :; do
        if ! pid_alive "$pid"; then
            rm -f "$PID_FILE"
            show_log_tail
            die "the broker (pid $pid) exited during startup (log tail above; logs in $LOG_DIR)"
        fi
        if port_open "$PORT" && { [[ $probe == tcp ]] || metadata_probe; }; then
            say "Kafka $VERSION ready on $HOST:$PORT (pid $pid, $probe check) after $(elapsed "$t0"); logs in $LOG_DIR"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            stop_pid "$pid" >&2
            die "the broker did not answer on $HOST:$PORT within ${START_TIMEOUT_S}s (log tail above); stopped it"
        fi
        sleep 0.5
    done
}

do_start() {
    local t0 pid
    t0=$(now_ms)
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    lock 9 "$RUN_DIR/.lock"
    if pid=$(running_pid); then
        if port_open "$PORT"; then
            say "already running on $HOST:$PORT (pid $pid)"
            return 0
        fi
        say "broker process $pid is up but not answering on $HOST:$PORT yet; waiting"
        wait_ready "$pid" "$t0"
        return 0
    fi
    rm -f "$PID_FILE" "$AUTOSTART_MARKER"
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$p"; then
            port_owner "$p" >&2
            die "port $p on $HOST is already in use by another process (not the broker of $RUN_DIR); stop it or set STOCKLEDGER_KAFKA_PORT / STOCKLEDGER_KAFKA_CONTROLLER_PORT"
        fi
    done
    need "$JAVA" "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    do_fetch
    if [[ $SECURITY == sasl_ssl ]]; then
        ensure_tls
        ensure_credentials
    fi
    write_configs
    retire_unsecured_storage
    format_storage
    say "starting Kafka $VERSION on $HOST:$PORT (controller $CONTROLLER_PORT, heap ${HEAP_MIB} MiB, data $DATA_DIR)"
    SERVER_LOG_MARK=0
    [[ -f $SERVER_LOG ]] && SERVER_LOG_MARK=$(wc -l <"$SERVER_LOG")
    local detach=() tuning=()
    command -v setsid >/dev/null 2>&1 && detach=(setsid)
    # A development broker moves a few MB a run: C2's compiler threads were its largest CPU user in a 90 s
    # `make demo` (JFR), so by default only the quick C1 compiler runs (31.7 -> 21.2 CPU s in that demo).
    [[ $JIT == quick ]] && tuning+=(-XX:TieredStopAtLevel=1)
    local cds
    cds=$(cds_flag "$VERSION_DIR/cds" "$(cat "$MARKER") $JIT" "$CDS_PENDING")
    [[ -n $cds ]] && tuning+=("$cds")
    # Background, detached from the terminal; lock fds closed so the broker does not hold them.
    "${detach[@]}" nohup "$JAVA" -Xms"${HEAP_MIB}m" -Xmx"${HEAP_MIB}m" -server \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true "${tuning[@]}" \
        -Dkafka.logs.dir="$LOG_DIR" -Dlog4j.configuration="file:$LOG4J_PROPS" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$SERVER_PROPS" \
        </dev/null >"$CONSOLE_LOG" 2>&1 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" "$t0"
    if ! apply_acls; then
        stop_pid "$pid" >&2
        die "applying the ACLs failed (above; log in $LOG_DIR/acls.log); stopped the broker"
    fi
}

# SIGTERM, wait up to STOP_TIMEOUT_S, then SIGKILL: only ever the given pid.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT_S))
    say "stopping broker pid $pid (SIGTERM)"
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
    rm -f "$PID_FILE" "$AUTOSTART_MARKER"
}

do_stop() {
    local pid t0
    t0=$(now_ms)
    if [[ -d $RUN_DIR ]]; then lock 9 "$RUN_DIR/.lock"; fi
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        if port_open "$PORT"; then
            say "not running from $RUN_DIR, but something else listens on $HOST:$PORT; leaving it alone"
        else
            say "not running"
        fi
        return 0
    fi
    stop_pid "$pid"
    pid_alive "$pid" && die "pid $pid did not exit even after SIGKILL"
    say "stopped in $(elapsed "$t0")"
}

do_status() {
    local pid
    if pid=$(running_pid); then
        if port_open "$PORT"; then
            say "running: Kafka $VERSION, pid $pid, bootstrap $HOST:$PORT, run dir $RUN_DIR"
            return 0
        fi
        say "process $pid is up but $HOST:$PORT does not answer (starting, or unhealthy: see '$0 logs')"
        return 1
    fi
    if port_open "$PORT"; then
        say "stopped (no broker from $RUN_DIR), but something else listens on $HOST:$PORT"
    else
        say "stopped"
    fi
    return 3
}

do_logs() { tail_log "$SERVER_LOG" "$@"; }

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
    fetch) do_fetch ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    logs) do_logs "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
