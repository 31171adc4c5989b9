#!/bin/bash
# bench-load.sh: the long load test - 16 reader threads at random offsets
# and sizes over hf/, native/, tp-4/rank-*/ and native@fp32/ of a 1B model
# for 60 s, every byte checked; prints reads, bytes, errors, p99 latency
# and the daemon's memory.
#
# Usage: bench/bench-load.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR]
#                            [--seconds S] [--threads N] [--buffered] [-o OPTS]
#
# Run as root (or a user who may mount FUSE filesystems) from the top of a
# built tree.  The model is the one bench/bench-read.sh uses: a 1B LLaMA
# (examples/gen-model.py llama-1b, ~2.5 GB) in the cache dir,
# ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench by default, generated on the
# first run.
#
# What runs: the model is mounted with the default options (memory cache
# and a disk cache in a temporary directory below the cache dir; -o OPTS
# adds options), then tests/load.py reads it: the expected bytes of every
# file (~12.4 GB for llama-1b) are written once with `ckptfs cat` into a
# temporary directory below the cache dir (removed on exit; the time this
# takes is printed and is not part of the run), then N threads (16) read
# for S seconds (60) with O_DIRECT, so that every read is answered by the
# daemon and not by the kernel's page cache (--buffered reads through the
# page cache instead).  Sizes are log-uniform from 1 byte to 2 MiB
# (rounded up to 4 KiB under O_DIRECT), offsets anywhere in the file, one
# read in five near or past EOF.  p50/p99 are of single pread calls.
# Daemon memory is VmHWM (peak resident) and RssAnon (anonymous resident,
# i.e. not the mapped source) from /proc/PID/status after the run.
#
# Exit status: 0 when the run had no error and no wrong byte, 1 otherwise.
# Everything this script mounts is unmounted on exit, even on failure.

set -u

BENCH_NAME=bench-load
USAGE_LINES=2,8
. "$(dirname "$0")/lib.sh" || exit 1

SECONDS_RUN=60
THREADS=16
DIRECT=--direct
MOUNT_OPTS=
VIEWS=hf,native,tp-4,native@fp32
BENCH_OPTS="$BENCH_OPTS --seconds=SECONDS_RUN --threads=THREADS -o=MOUNT_OPTS"
BENCH_FLAGS="$BENCH_FLAGS --buffered=DIRECT="
bench_args "$@"

positive_int "$SECONDS_RUN" --seconds
positive_int "$THREADS" --threads
bench_paths

require_fuse
require_ckptfs
require_numpy
[ -f "$TOP/tests/load.py" ] || die "$TOP/tests/load.py is missing"

mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR"
ensure_model

WORK=$(mktemp -d "$CACHE_DIR/load.XXXXXX") || die "mktemp in $CACHE_DIR failed"
mkdir "$WORK/expect" "$WORK/disk-cache"

# the expected bytes need about as much room as the files under the views
need_kb=$(( $("$CKPTFS" ls "$MODEL_DIR" hf | awk '{ s += $1 } END { print int(s / 1024) }') * 6 ))
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
[ "$free_kb" -gt "$need_kb" ] ||
	die "$WORK: $((free_kb / 1024)) MiB free, the expected bytes need about $((need_kb / 1024)) MiB"

opts=cache_dir=$WORK/disk-cache
[ -z "$MOUNT_OPTS" ] || opts=$opts,$MOUNT_OPTS
echo "bench-load: $MODEL_DIR ($(du -sh "$MODEL_DIR" | cut -f1)), ckptfs -o $opts"
mount_fs mnt "$CKPTFS" -f -o "$opts" "$MODEL_DIR" "$WORK/mnt"
PID=$MNT_PID
stat "$MNT" >/dev/null || die "stat $MNT failed"

"$PYTHON" "$TOP/tests/load.py" "$MNT" "$MODEL_DIR" --ckptfs "$CKPTFS" \
	--threads "$THREADS" --seconds "$SECONDS_RUN" --views "$VIEWS" $DIRECT \
	--pid "$PID" --expect-dir "$WORK/expect" | tee "$WORK/load.out"
load_rc=${PIPESTATUS[0]}

alive=yes
kill -0 "$PID" 2>/dev/null || alive=no
fusermount3 -u "$MNT" || echo "bench-load: fusermount3 -u $MNT failed" >&2
for _ in $(seq 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
drc=0
wait "$PID" || drc=$?
forget_pid "$PID"

"$PYTHON" - "$WORK/load.out" "$load_rc" "$alive" "$drc" <<'EOF'
import json, sys
res = None
for line in open(sys.argv[1]):
    if line.startswith("load.py: result "):
        res = json.loads(line[len("load.py: result "):])
load_rc, alive, drc = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
print("bench-load: ---- summary ----")
if res is None:
    print("bench-load: load.py gave no result (status %d)" % load_rc)
    sys.exit(0)
print("bench-load: %d threads, %.1f s, %s, %d files" % (
    res["threads"], res["seconds"], "O_DIRECT" if res["direct"] else "buffered", res["files"]))
print("bench-load: reads      %d" % res["reads"])
print("bench-load: bytes      %d (%.2f GB, %.1f MB/s)" % (res["bytes"], res["bytes"] / 1e9, res["MB_per_s"]))
print("bench-load: errors     %d, wrong bytes in %d reads" % (res["errors"], res["mismatches"]))
print("bench-load: latency    p50 %.3f ms, p99 %.3f ms, max %.3f ms" % (res["p50_ms"], res["p99_ms"], res["max_ms"] or 0))
if res.get("daemon_VmHWM_kB") is not None:
    print("bench-load: daemon     VmHWM %.1f MiB, RssAnon %.1f MiB" % (
        res["daemon_VmHWM_kB"] / 1024, res["daemon_RssAnon_kB"] / 1024))
print("bench-load: daemon alive after the run: %s; exit status after unmount: %d" % (alive, drc))
EOF

[ "$load_rc" -eq 0 ] && [ "$alive" = yes ] && [ "$drc" -eq 0 ] || exit 1
exit 0
