# peer.sh -- for benchmarks that race ckptfs against a conversion script: a timed mount, a timed
# first read of hf/, the conversion timed, and the peak anonymous memory of a process. Sourced.
# (Not bench/lib.sh: its best, cleanup and defaults differ from these scripts'.)

now() { date +%s.%N; }
# the smallest of the numbers on stdin
best() { sort -g | head -n 1; }

# peer_work NAME: WORK (a temp dir), MNT in it, and the EXIT trap that unmounts and removes them
peer_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    MNT=$WORK/mnt
    mkdir "$MNT"
    DAEMON=
    trap peer_cleanup EXIT
}
peer_cleanup() {
    mountpoint -q "$MNT" && fusermount3 -u "$MNT"
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null
    rm -rf "$WORK"
}

# time_s CMD...: run CMD; TIME_S: its wall time in seconds
time_s() {
    local s e
    s=$(now)
    "$@"
    e=$(now)
    TIME_S=$(echo "$e - $s" | bc -l)
}

# mount_src SRC: start the daemon (DAEMON), wait until the mount answers; MOUNT_S: the seconds it took
mount_src() {
    local t0 t1
    t0=$(now)
    "$CKPTFS" -f "$1" "$MNT" >"$WORK/daemon.log" 2>&1 &
    DAEMON=$!
    until mountpoint -q "$MNT" && stat "$MNT/hf" >/dev/null 2>&1; do
        kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 1; }
        sleep 0.002
    done
    t1=$(now)
    MOUNT_S=$(echo "$t1 - $t0" | bc -l)
}
umount_src() {
    fusermount3 -u "$MNT"
    wait "$DAEMON" || true
    DAEMON=
}
# peak RssAnon (kB) of PID while it lives or until the flag file goes away
sample_rss() {
    local pid=$1 flag=$2 peak=0 v
    while [ -e "$flag" ]; do
        v=$(awk '/^RssAnon/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
        sleep 0.01
    done
    echo "$peak"
}

# read_hf_start: empty what read_hf_run gathers
read_hf_start() {
    mt=() rd=() full=() rss=()
}

# read_hf_run SRC: mount SRC, read hf/model.safetensors through it once (dd bs=1M) while sampling
# the daemon's RssAnon, unmount; appends to the caller's arrays mt (mount s), rd (read s), full
# (mount + read s) and rss (kB)
read_hf_run() {
    local sampler
    mount_src "$1"
    mt+=("$MOUNT_S")
    touch "$WORK/flag"
    sample_rss "$DAEMON" "$WORK/flag" >"$WORK/rss" &
    sampler=$!
    time_s dd if="$MNT/hf/model.safetensors" of=/dev/null bs=1M 2>/dev/null
    rm -f "$WORK/flag"
    wait "$sampler"
    rss+=("$(cat "$WORK/rss")")
    rd+=("$TIME_S")
    full+=("$(echo "$TIME_S + $MOUNT_S" | bc -l)")
    umount_src
}

# read_hf_best: MT, RD, FULL: the best of what read_hf_run gathered; RSS: the smallest peak
read_hf_best() {
    MT=$(printf '%s\n' "${mt[@]}" | best)
    RD=$(printf '%s\n' "${rd[@]}" | best)
    FULL=$(printf '%s\n' "${full[@]}" | best)
    RSS=$(printf '%s\n' "${rss[@]}" | sort -g | head -n 1)
}

# time_convert ARG...: $PY $WORK/convert.py ARG... OUT, RUNS times under /usr/bin/time; CT: the
# best wall seconds, CM: the smallest peak RSS (kB)
time_convert() {
    local ct=() cm=() t m
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$WORK/time" "$PY" "$WORK/convert.py" "$@" "$WORK/out.safetensors"
        read -r t m <"$WORK/time"
        ct+=("$t") cm+=("$m")
        rm -f "$WORK/out.safetensors"
    done
    CT=$(printf '%s\n' "${ct[@]}" | best)
    CM=$(printf '%s\n' "${cm[@]}" | best)
}
