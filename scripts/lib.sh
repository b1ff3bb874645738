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
