# peer.sh -- for benchmarks that race ckptfs against a conversion script: a timed mount, and the
# peak anonymous memory of a process. Sourced; the caller sets CKPTFS, MNT and WORK.

now() { date +%s.%N; }
# the smallest of the numbers on stdin
best() { sort -g | head -n 1; }

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
