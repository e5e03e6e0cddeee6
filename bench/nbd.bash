# NBD servers for the export benchmarks (serve.sh, volume.sh); sourced,
# not run.
#
# nbd_setup NAME TOOL...: checks the tools and the vdisk binary and makes
# $dir, removed at exit after the servers are stopped.
# start_server CMD...: runs an NBD server in the background.
# wait_socket PATH: waits until the server's Unix socket is there.
# stop_servers: stops every server started so far.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vdisk=${VDISK:-$repo/build/vdisk}
pids=()

nbd_setup() {
    local name=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null ||
            { echo "$0: needs $tool" >&2; exit 1; }
    done
    [ -x "$vdisk" ] ||
        { echo "$0: no vdisk binary at $vdisk (set VDISK)" >&2; exit 1; }
    dir=$(mktemp -d "${TMPDIR:-/var/tmp}/vdisk-$name-bench.XXXXXX")
    trap 'stop_servers; rm -rf "$dir"' EXIT
}

start_server() {
    "$@" &
    pids+=($!)
}

wait_socket() {
    for _ in $(seq 200); do
        [ -S "$1" ] && return 0
        sleep 0.05
    done
    echo "$0: server socket $1 did not appear" >&2
    exit 1
}

stop_servers() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
