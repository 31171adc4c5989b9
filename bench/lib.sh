# bench/lib.sh: what the bench/*.sh scripts share; sourced by them.
#
# Before sourcing, a script sets BENCH_NAME (its name in messages) and
# USAGE_LINES (the lines of its header comment that -h prints, as for
# sed -n). The library sets the defaults every script shares (TOP,
# CACHE_DIR, MODEL_DIR, CKPTFS, PYTHON, PRESET), the options that set
# them (BENCH_OPTS and BENCH_FLAGS, for bench_args) and the EXIT trap that unmounts
# everything mounted with mount_fs, stops every process in PIDS and
# removes WORK and the directories in CLEANUP_DIRS.

usage() {
	sed -n "${USAGE_LINES}p" "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

die() {
	echo "$BENCH_NAME: $*" >&2
	exit 1
}

TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench
MODEL_DIR=
CKPTFS=./src/ckptfs
PYTHON=${PYTHON:-/usr/bin/python3}
PRESET=llama-1b

# ---------------------------------------------------------------------
# Arguments.

# The options that take a value, as OPTION=VARIABLE; a script appends its
# own. Each is accepted as "OPTION VALUE" and as "OPTION=VALUE".
BENCH_OPTS="--model-dir=MODEL_DIR --ckptfs=CKPTFS --cache-dir=CACHE_DIR"

# The options that take no value, as OPTION=VARIABLE=VALUE (VALUE may be
# empty): the option sets VARIABLE to VALUE. A script appends its own.
BENCH_FLAGS=

# bench_arg ARGS...: take the option at $1 (one of BENCH_OPTS or
# BENCH_FLAGS, or -h, --help); sets NSHIFT to the number of words it used.
# Anything else is an unknown argument: usage, exit 2.
bench_arg() {
	local spec opt rest
	case $1 in -h|--help) usage 0 ;; esac
	for spec in $BENCH_FLAGS; do
		if [ "$1" = "${spec%%=*}" ]; then
			rest=${spec#*=}
			printf -v "${rest%%=*}" '%s' "${rest#*=}"
			NSHIFT=1
			return
		fi
	done
	for spec in $BENCH_OPTS; do
		opt=${spec%%=*}
		case $1 in
		"$opt")
			[ $# -ge 2 ] || usage 2
			printf -v "${spec#*=}" '%s' "$2"
			NSHIFT=2
			return
			;;
		"$opt"=*)
			printf -v "${spec#*=}" '%s' "${1#*=}"
			NSHIFT=1
			return
			;;
		esac
	done
	echo "$BENCH_NAME: unknown argument: $1" >&2
	usage 2
}

# bench_args "$@": every argument, through bench_arg.
bench_args() {
	while [ $# -gt 0 ]; do
		bench_arg "$@"
		shift "$NSHIFT"
	done
}

# positive_int VALUE OPTION: die unless VALUE is a positive integer.
positive_int() {
	case $1 in ''|*[!0-9]*|0) die "$2 wants a positive integer" ;; esac
}

# bench_paths: the model dir defaults to CACHE_DIR/PRESET; CKPTFS,
# MODEL_DIR and CACHE_DIR made absolute.
bench_paths() {
	[ -n "$MODEL_DIR" ] || MODEL_DIR=$CACHE_DIR/$PRESET
	case $CKPTFS in /*) ;; *) CKPTFS=$PWD/${CKPTFS#./} ;; esac
	case $MODEL_DIR in /*) ;; *) MODEL_DIR=$PWD/$MODEL_DIR ;; esac
	case $CACHE_DIR in /*) ;; *) CACHE_DIR=$PWD/$CACHE_DIR ;; esac
}

require_fuse() {
	[ -c /dev/fuse ] || die "/dev/fuse is missing"
	command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 not found"
}

require_ckptfs() {
	[ -x "$CKPTFS" ] || die "$CKPTFS: not an executable (build it, or pass --ckptfs PATH)"
}

require_numpy() {
	"$PYTHON" -c 'import numpy' 2>/dev/null || die "$PYTHON cannot import numpy (set PYTHON=)"
}

# ---------------------------------------------------------------------
# Cleanup: unmount everything mounted, stop every process started (PIDS:
# daemons, and poll:PID for samplers, stopped first), remove every temp
# dir. The exit status is kept.

WORK=
MOUNTS=
PIDS=
CLEANUP_DIRS=()

cleanup() {
	local m p d
	for p in $PIDS; do
		case $p in poll:*) kill "${p#poll:}" 2>/dev/null ;; esac
	done
	for m in $MOUNTS; do
		if grep -q " $m fuse" /proc/mounts 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null ||
				fusermount3 -u -z "$m" 2>/dev/null
		fi
	done
	for p in $PIDS; do
		case $p in poll:*) ;; *) kill "$p" 2>/dev/null ;; esac
	done
	# a daemon flushes its disk cache before it exits: wait (10 s at most)
	# before its directories go
	for p in $PIDS; do
		case $p in poll:*) continue ;; esac
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	[ -n "$WORK" ] && rm -rf "$WORK"
	for d in "${CLEANUP_DIRS[@]}"; do
		[ -n "$d" ] && rm -rf "$d"
	done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_work: WORK, a temp dir of this run (removed on exit).
bench_work() {
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-$BENCH_NAME.XXXXXX") || die "mktemp failed"
}

# bench_mnt: MNT, a mount point in WORK that cleanup unmounts (for a
# daemon started without mount_fs).
bench_mnt() {
	MNT=$WORK/mnt
	mkdir -p "$MNT"
	MOUNTS="$MOUNTS $MNT"
}

# forget_pid PID: PID has been waited for; cleanup leaves it alone.
forget_pid() {
	PIDS=$(echo "$PIDS" | sed "s/ $1\\b//")
}

# ---------------------------------------------------------------------
# The checkpoint, generated once.

# ensure_model: generate $PRESET into $MODEL_DIR unless it holds a model.
ensure_model() {
	local gen partial
	if [ -e "$MODEL_DIR/model.safetensors" ] ||
	   [ -e "$MODEL_DIR/model.safetensors.index.json" ]; then
		return 0
	fi
	[ -e "$MODEL_DIR" ] && die "$MODEL_DIR: exists but holds no model.safetensors"
	gen=$TOP/examples/gen-model.py
	[ -f "$gen" ] || die "$gen: missing, cannot generate the model"
	echo "generating $PRESET into $MODEL_DIR (once)..." >&2
	mkdir -p "$(dirname "$MODEL_DIR")" || die "cannot create $(dirname "$MODEL_DIR")"
	partial=$MODEL_DIR.partial.$$
	rm -rf "$partial"
	if ! "$PYTHON" "$gen" "$PRESET" "$partial" >&2; then
		rm -rf "$partial"
		die "gen-model.py $PRESET failed"
	fi
	mv "$partial" "$MODEL_DIR" || die "cannot move $partial to $MODEL_DIR"
}

# ---------------------------------------------------------------------
# The reader, built once in the cache dir (again when its source changes).

# build_reader: sets READER to CACHE_DIR/bin/readall, built if need be
# (the source is written to WORK).
build_reader() {
	READER=$CACHE_DIR/bin/readall
	command -v cc >/dev/null || die "cc not found"
	mkdir -p "$CACHE_DIR/bin" || die "$CACHE_DIR: cannot create"
	cat >"$WORK/readall.c" <<'EOF'
/* readall: read files start to end with read(2) and a 1 MiB buffer
 * (O_DIRECT and 4 MiB with --direct); print the byte count.
 * readall --first-byte FILE SECONDS: open and read FILE in a tight loop
 * until one byte comes back; exit 1 after SECONDS. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int first_byte(const char *path, double limit)
{
	double start = mono();
	char c;

	for (;;) {
		int fd = open(path, O_RDONLY);

		if (fd >= 0) {
			ssize_t n = read(fd, &c, 1);

			close(fd);
			if (n == 1)
				return 0;
		}
		if (mono() - start > limit) {
			fprintf(stderr, "readall: %s: no byte after %g s\n",
				path, limit);
			return 1;
		}
		sched_yield();
	}
}

int main(int argc, char **argv)
{
	unsigned long long total = 0;
	size_t bs = 1 << 20;
	int flags = O_RDONLY;
	void *buf;
	int i = 1;

	if (argc == 4 && strcmp(argv[1], "--first-byte") == 0)
		return first_byte(argv[2], atof(argv[3]));
	if (argc > 1 && strcmp(argv[1], "--direct") == 0) {
		flags |= O_DIRECT;
		bs = 4 << 20;
		i++;
	}
	if (posix_memalign(&buf, 4096, bs) != 0) {
		fprintf(stderr, "readall: out of memory\n");
		return 1;
	}
	for (; i < argc; i++) {
		int fd = open(argv[i], flags);
		ssize_t n;

		if (fd < 0) {
			fprintf(stderr, "readall: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
		while ((n = read(fd, buf, bs)) > 0)
			total += n;
		if (n < 0) {
			fprintf(stderr, "readall: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
		close(fd);
	}
	printf("%llu\n", total);
	return 0;
}
EOF
	if [ ! -x "$READER" ] || ! cmp -s "$WORK/readall.c" "$CACHE_DIR/bin/readall.c"; then
		cc -O2 -Wall -o "$READER" "$WORK/readall.c" || die "cannot build the reader"
		cp "$WORK/readall.c" "$CACHE_DIR/bin/readall.c"
	fi
}

# ---------------------------------------------------------------------
# Mounting and timing.

now() { date +%s.%N; }

# Seconds (float) from $1 to $2.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# mount_fs NAME CMD...: start CMD (a FUSE daemon in the foreground whose
# last argument is the mountpoint $WORK/NAME) and wait until it is mounted.
# Sets MNT and MNT_PID.
mount_fs() {
	local name=$1 deadline
	shift
	MNT=$WORK/$name
	mkdir -p "$MNT"
	case " $MOUNTS " in *" $MNT "*) ;; *) MOUNTS="$MOUNTS $MNT" ;; esac
	"$@" 2>>"$WORK/$name.stderr" &
	MNT_PID=$!
	PIDS="$PIDS $MNT_PID"
	deadline=$(( $(date +%s) + 30 ))
	until grep -q " $MNT fuse" /proc/mounts; do
		if ! kill -0 "$MNT_PID" 2>/dev/null; then
			cat "$WORK/$name.stderr" >&2
			die "$1 exited before mounting $MNT"
		fi
		[ "$(date +%s)" -le "$deadline" ] || die "$1: $MNT not mounted after 30 s"
		sleep 0.01
	done
}

# umount_bg: unmount $MNT of a ckptfs started without -f (not by
# mount_fs), and wait until that daemon is gone: it flushes its disk
# cache before it exits.
umount_bg() {
	fusermount3 -u "$MNT"
	while pgrep -f "ckptfs.* $MNT\$" >/dev/null; do sleep 0.1; done
}

# mount_stat KEY/KEY...: a figure of $MNT/.ckptfs/stats (keys joined by
# /, as names hold dots: source_bytes_read/model.safetensors).
mount_stat() {
	"$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("/"): j=j[k]
print(j)' "$MNT/.ckptfs/stats" "$1"
}

# anon_start: sample the RssAnon of the daemon $MNT_PID every 20 ms, in
# the background, until anon_stop or its exit.
anon_start() {
	: >"$WORK/anon.txt"
	( while kill -0 "$MNT_PID" 2>/dev/null; do
		awk '$1 == "RssAnon:" { print $2 }' "/proc/$MNT_PID/status" >>"$WORK/anon.txt" 2>/dev/null
		sleep 0.02
	  done ) &
	ANON_POLLER=$!
	PIDS="$PIDS poll:$ANON_POLLER"
}

# anon_stop: stop the sampler; ANON_PEAK: the largest RssAnon seen (kB).
anon_stop() {
	kill "$ANON_POLLER" 2>/dev/null
	wait "$ANON_POLLER" 2>/dev/null
	PIDS=$(echo "$PIDS" | sed "s/ poll:$ANON_POLLER\\b//")
	ANON_PEAK=$(sort -n "$WORK/anon.txt" | tail -n 1)
}

# umount_fs: unmount $MNT and wait for its daemon; it must exit 0.
umount_fs() {
	local rc
	fusermount3 -u "$MNT" || die "fusermount3 -u $MNT failed"
	wait "$MNT_PID"
	rc=$?
	forget_pid "$MNT_PID"
	if [ "$rc" != 0 ]; then
		cat "$WORK/$(basename "$MNT").stderr" >&2
		die "daemon for $MNT exited with status $rc after unmount"
	fi
}

# gbs BYTES SECONDS: GB/s.
gbs() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f", n / s / 1e9 }'; }

# read_gbs DIR FILE...: read the files (relative to DIR) with the reader;
# sets GBS (GB/s), SECS and LAST_BYTES.
read_gbs() {
	local dir=$1 t0 t1
	shift
	t0=$(now)
	LAST_BYTES=$(cd "$dir" && "$READER" "$@") || die "reading $dir failed"
	t1=$(now)
	SECS=$(elapsed "$t0" "$t1")
	GBS=$(gbs "$LAST_BYTES" "$SECS")
}

# read_view_gbs DIR: read every file of DIR (view_files) with read_gbs.
read_view_gbs() {
	local files
	mapfile -t files < <(view_files "$1")
	read_gbs "$1" "${files[@]}"
}

# secs CMD...: the wall seconds of CMD, which must succeed.
secs() {
	local t0 t1
	t0=$(now)
	"$@" || die "$* failed"
	t1=$(now)
	elapsed "$t0" "$t1"
}

# best A B: the larger of two GB/s figures.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmt() { awk -v a="$1" 'BEGIN { printf "%.2f GB/s", a }'; }
gb() { awk -v n="$1" 'BEGIN { printf "%.2f GB", n / 1e9 }'; }
# least A B: the smaller of two figures, A empty meaning none yet.
least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
fmts() { awk -v a="$1" 'BEGIN { printf "%.2f s", a }'; }
verdict() { awk -v a="$1" -v t="$2" 'BEGIN { print (a >= t) ? "met" : "NOT met" }'; }

# view_files DIR: the regular files of DIR, one per line, sorted.
view_files() {
	find "$1"/ -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort
}
