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

usage() {
	sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

die() {
	echo "bench-load: $*" >&2
	exit 1
}

TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench
MODEL_DIR=
CKPTFS=./src/ckptfs
SECONDS_RUN=60
THREADS=16
DIRECT=--direct
MOUNT_OPTS=
PYTHON=${PYTHON:-/usr/bin/python3}
PRESET=llama-1b
VIEWS=hf,native,tp-4,native@fp32

while [ $# -gt 0 ]; do
	case $1 in
	--model-dir) [ $# -ge 2 ] || usage 2; MODEL_DIR=$2; shift 2 ;;
	--model-dir=*) MODEL_DIR=${1#*=}; shift ;;
	--ckptfs) [ $# -ge 2 ] || usage 2; CKPTFS=$2; shift 2 ;;
	--ckptfs=*) CKPTFS=${1#*=}; shift ;;
	--cache-dir) [ $# -ge 2 ] || usage 2; CACHE_DIR=$2; shift 2 ;;
	--cache-dir=*) CACHE_DIR=${1#*=}; shift ;;
	--seconds) [ $# -ge 2 ] || usage 2; SECONDS_RUN=$2; shift 2 ;;
	--seconds=*) SECONDS_RUN=${1#*=}; shift ;;
	--threads) [ $# -ge 2 ] || usage 2; THREADS=$2; shift 2 ;;
	--threads=*) THREADS=${1#*=}; shift ;;
	--buffered) DIRECT=; shift ;;
	-o) [ $# -ge 2 ] || usage 2; MOUNT_OPTS=$2; shift 2 ;;
	-h|--help) usage 0 ;;
	*) echo "bench-load: unknown argument: $1" >&2; usage 2 ;;
	esac
done

case $SECONDS_RUN in ''|*[!0-9]*|0) die "--seconds wants a positive integer" ;; esac
case $THREADS in ''|*[!0-9]*|0) die "--threads wants a positive integer" ;; esac
[ -n "$MODEL_DIR" ] || MODEL_DIR=$CACHE_DIR/$PRESET
case $CKPTFS in /*) ;; *) CKPTFS=$PWD/${CKPTFS#./} ;; esac
case $MODEL_DIR in /*) ;; *) MODEL_DIR=$PWD/$MODEL_DIR ;; esac
case $CACHE_DIR in /*) ;; *) CACHE_DIR=$PWD/$CACHE_DIR ;; esac

[ -c /dev/fuse ] || die "/dev/fuse is missing"
command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 is not installed"
[ -x "$CKPTFS" ] || die "$CKPTFS is not an executable (build first, or --ckptfs PATH)"
"$PYTHON" -c 'import numpy' 2>/dev/null || die "$PYTHON cannot import numpy (set PYTHON)"
[ -f "$TOP/tests/load.py" ] || die "$TOP/tests/load.py is missing"

mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR"
if [ ! -f "$MODEL_DIR/config.json" ]; then
	echo "bench-load: generating $PRESET into $MODEL_DIR (once)"
	"$PYTHON" "$TOP/examples/gen-model.py" "$PRESET" "$MODEL_DIR.tmp" >/dev/null ||
		die "generating $PRESET failed"
	mv "$MODEL_DIR.tmp" "$MODEL_DIR" || die "cannot move $MODEL_DIR.tmp into place"
fi

WORK=$(mktemp -d "$CACHE_DIR/load.XXXXXX") || die "mktemp in $CACHE_DIR failed"
MNT=$WORK/mnt
PID=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$PID" ]; then
		if awk -v p="$MNT" '$2 == p { f = 1 } END { exit !f }' /proc/self/mounts; then
			fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
		fi
		for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$PID" 2>/dev/null && kill -KILL "$PID"
		wait "$PID" 2>/dev/null
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir "$MNT" "$WORK/expect" "$WORK/disk-cache"

# the expected bytes need about as much room as the files under the views
need_kb=$(( $("$CKPTFS" ls "$MODEL_DIR" hf | awk '{ s += $1 } END { print int(s / 1024) }') * 6 ))
free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
[ "$free_kb" -gt "$need_kb" ] ||
	die "$WORK: $((free_kb / 1024)) MiB free, the expected bytes need about $((need_kb / 1024)) MiB"

opts=cache_dir=$WORK/disk-cache
[ -z "$MOUNT_OPTS" ] || opts=$opts,$MOUNT_OPTS
echo "bench-load: $MODEL_DIR ($(du -sh "$MODEL_DIR" | cut -f1)), ckptfs -o $opts"
"$CKPTFS" -f -o "$opts" "$MODEL_DIR" "$MNT" >"$WORK/ckptfs.log" 2>&1 &
PID=$!
deadline=$(($(date +%s) + 30))
until awk -v p="$MNT" '$2 == p { f = 1 } END { exit !f }' /proc/self/mounts; do
	kill -0 "$PID" 2>/dev/null || { cat "$WORK/ckptfs.log" >&2; die "ckptfs exited before mounting"; }
	[ "$(date +%s)" -lt "$deadline" ] || die "$MNT not mounted after 30 s"
	sleep 0.05
done
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
PID=

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
