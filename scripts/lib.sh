#!/usr/bin/env bash
# Helpers shared by scripts/kafka.sh and scripts/registry.sh (sourced; each script defines say/die and HOST).

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((ms / 1000)) $(((ms % 1000) / 100)); }

# Exclusive lock on a file (no-op without flock): lock FD FILE.
lock() {
    command -v flock >/dev/null 2>&1 || return 0
    eval "exec $1>\"\$2\""
    flock "$1"
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" >/dev/null 2>&1; }

# A pid that exists and is not a zombie (a container's pid 1 may never reap it).
pid_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    [[ $state != Z* ]]
}

# The command line of a pid; /proc first: without a terminal ps may cut args at 80 columns (seen under pytest).
pid_args() {
    if [[ -r /proc/$1/cmdline ]]; then
        tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
    else
        COLUMNS=100000 ps -ww -o args= -p "$1" 2>/dev/null || true
    fi
}

# `<script> logs [-f] [LINES]`: the last LINES (100) of a log file, -f to follow.
tail_log() {
    local file=$1 follow=() lines=100 arg
    shift
    for arg in "$@"; do
        case $arg in
            -f | --follow) follow=(-F) ;;
            *[!0-9]* | '') die "usage: $0 logs [-f] [LINES]" ;;
            *) lines=$arg ;;
        esac
    done
    [[ -f $file ]] || die "no log yet at $file"
    exec tail -n "$lines" "${follow[@]}" "$file"
}

# Class-data sharing (AppCDS) for the JVM a script starts: the first start dumps the classes it loaded into an
# archive when that JVM exits on SIGTERM, later starts map the archive instead of loading and verifying every
# class again (the broker's start: ~5.5 s -> ~3.3 s on a 2-core machine). The archive is named after the JVM
# (the java binary and libjvm) and what the script runs ($2), so another JDK or other jars make a new one; one the
# JVM finds unusable is ignored with a warning (-Xshare:auto). (Checking a dump with `java -Xshare:on -version`
# before keeping it was tried: a dynamic archive also checks the class path, so that check refused every dump.)
# STOCKLEDGER_CDS=off leaves it out.
# cds_flag DIR CONTEXT PENDING: prints the JVM flag; PENDING records an archive being dumped by this start.
cds_flag() {
    local dir=$1 context=$2 pending=$3 java libjvm key archive
    if [[ -f $pending ]]; then rm -f "$(<"$pending")" "$pending"; fi  # a dump that never finished (crash, kill -9)
    [[ ${STOCKLEDGER_CDS:-on} == off ]] && return 0
    [[ ${STOCKLEDGER_CDS:-on} == on ]] || die "STOCKLEDGER_CDS must be on or off, got '$STOCKLEDGER_CDS'"
    java=$(readlink -f "$(command -v "$JAVA")") || return 1
    libjvm=$(dirname "$java")/../lib/server/libjvm.so
    key=$(printf '%s\n' "$java" "$(stat -c '%s %Y' "$java" "$libjvm" 2>/dev/null)" "$context" | sha256sum | cut -c1-16)
    archive="$dir/$key.jsa"
    if [[ -s $archive ]]; then
        printf '%s\n' "-XX:SharedArchiveFile=$archive"
    else
        mkdir -p "$dir" || return 1
        printf '%s\n' "$archive.$$.tmp" >"$pending" || return 1
        printf '%s\n' "-XX:ArchiveClassesAtExit=$archive.$$.tmp"
    fi
}

# cds_settle PENDING CLEAN: after the JVM exited, the archive it dumped goes into place if it stopped on SIGTERM
# (CLEAN=1); one cut short by SIGKILL is deleted. A rename, so a concurrent start never maps half a file.
cds_settle() {
    local pending=$1 clean=$2 tmp
    [[ -f $pending ]] || return 0
    tmp=$(<"$pending")
    rm -f "$pending"
    if [[ $clean == 1 && -s $tmp ]]; then
        mv -f "$tmp" "${tmp%.*.tmp}"
    else
        rm -f "$tmp"
    fi
}
