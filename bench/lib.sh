# shellcheck shell=bash
# shellcheck disable=SC2034 # sets variables for the scripts that source it
# Shared by bench/run and bench/mix (sourced, not run): Debian packages on demand, the
# binary under test, a temporary work directory with its clean-up, and databases and
# servers in either mode.
#
# LISTINGS_BIN: a prebuilt `listings` to measure; without it `cargo build --release`.

install_missing() { # command, Debian package
    command -v "$1" >/dev/null && return
    echo "bench: installing $2 (Debian package)" >&2
    apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }
}

# listings_binary: sets $binary, LISTINGS_BIN or a fresh release build.
listings_binary() {
    if [ -n "${LISTINGS_BIN:-}" ]; then
        binary=$(realpath "$LISTINGS_BIN")
    else
        cargo build --release --quiet
        binary=$PWD/target/release/listings
    fi
}

# bench_start: the work directory, and the clean-up of everything the bench makes:
# processes in $pids, PostgreSQL databases in $databases, Redis prefixes in $prefixes.
bench_start() {
    work=$(mktemp -d)
    pids=()
    databases=()
    prefixes=()
    trap cleanup EXIT
    with_postgres=""
    if [ -n "${BENCH_DATABASE_URL:-}" ] && [ -n "${BENCH_REDIS_URL:-}" ]; then
        with_postgres=1
    fi
}

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for database in "${databases[@]}"; do
        psql "$BENCH_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
    done
    for prefix in "${prefixes[@]}"; do
        for pattern in "{$prefix}*" "$prefix*"; do
            redis-cli -u "$BENCH_REDIS_URL" --scan --pattern "$pattern" | xargs -r -d '\n' redis-cli -u "$BENCH_REDIS_URL" DEL >/dev/null || true
        done
    done
    rm -rf "$work"
}

# database_name NAME: the PostgreSQL database of NAME's data.
database_name() { echo "listings_bench_${1//-/_}_$$"; }

# mode_env NAME MODE: the environment of a server or command in MODE, on its own data.
mode_env() {
    local name=$1 mode=$2
    case $mode in
    embedded) echo "DATABASE_URL=$work/$name.sqlite3" ;;
    postgres)
        echo "DATABASE_URL=${BENCH_DATABASE_URL%/*}/$(database_name "$name") REDIS_URL=$BENCH_REDIS_URL LISTINGS_CACHE_PREFIX=listings-bench-$name-$$:"
        ;;
    esac
}

# prepare NAME MODE COUNT: a fresh database with COUNT generated listings.
prepare() {
    local name=$1 mode=$2 count=$3 settings
    read -ra settings <<<"$(mode_env "$name" "$mode")"
    if [ "$mode" = postgres ]; then
        databases+=("$(database_name "$name")")
        prefixes+=("listings-bench-$name-$$:")
        psql "$BENCH_DATABASE_URL" -qc "CREATE DATABASE $(database_name "$name")"
    fi
    (cd "$work" && env "${settings[@]}" "$binary" migrate >/dev/null && env "${settings[@]}" "$binary" seed --count "$count" --seed 1 >/dev/null 2>&1)
}

# start_listings NAME MODE LOG [serve options...]: serves NAME's data, logging to
# $work/LOG.log; sets $port, $admin_port (its /metrics), $server_pid and $server_log.
start_listings() {
    local name=$1 mode=$2 settings
    server_log=$work/$3.log
    shift 3
    read -ra settings <<<"$(mode_env "$name" "$mode")"
    (cd "$work" && exec env "${settings[@]}" RUST_LOG="${BENCH_RUST_LOG:-warn,listings::startup=info,listings::dashboard=info}" \
        "$binary" serve "$@" --bind 127.0.0.1:0 --admin-bind 127.0.0.1:0 2>"$server_log") &
    server_pid=$!
    pids+=("$server_pid")
    port="" admin_port=""
    for _ in $(seq 1 100); do
        port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p;T;q' "$server_log")
        admin_port=$(sed -n 's/.*dashboard on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p;T;q' "$server_log")
        [ -n "$port" ] && [ -n "$admin_port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] && [ -n "$admin_port" ] || { echo "bench: $name did not start" >&2; cat "$server_log" >&2; exit 1; }
}

# sample PORT NAME: the value of the metric NAME at the admin address on PORT.
sample() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

peak_memory() { awk '/VmHWM/ { printf "%.1f MB", $2 / 1024 }' "/proc/$1/status"; }
