#!/bin/bash
# bench-read.sh: sequential read throughput of a ckptfs mount, and time
# from starting ckptfs to the first byte of hf/model.safetensors.
#
# Usage: bench/bench-read.sh [--model-dir DIR] [--ckptfs PATH]
#                            [--cache-dir DIR] [--runs N] [--baselines-only]
#
# Run as root (or a user who may mount FUSE filesystems) from the top of
# a built tree. The first run generates a 1B-parameter LLaMA-shaped bf16
# checkpoint (examples/gen-model.py llama-1b, ~2.5 GB) into the cache dir,
# ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench by default, and builds two
# helpers there: libfuse's passthrough_ll example (the stock FUSE
# passthrough baseline) and a small reader. Later runs reuse all three.
#
# What is measured (see BENCH.md); every figure is the best of N runs
# (default 3) and is printed beside its baseline, measured in the same run
# on the same files:
#   source          the source files, page cache warm: the "cat" baseline
#                   (literal cat, which reads 128 KiB at a time, is
#                   printed beside it; the re-read line shows both)
#   first read      through a fresh mount (empty kernel cache for the
#                   view, source page cache warm); baselines: the source
#                   and passthrough_ll mounted on the source directory
#   re-read         the same files again in the same mount (kernel page
#                   cache, keep_cache); baseline: the source, target 0.8;
#                   beside it passthrough_ll -o cache=always re-reading,
#                   the ceiling of any page-cache read through FUSE
#   first byte      from starting ckptfs to the first byte of
#                   hf/model.safetensors, polled in a tight loop;
#                   target < 50 ms
# Every read, of the source or of a mount, is the same loop of buffered
# 1 MiB read(2) calls over the files (what dd bs=1M does, without a
# process per file); wall time is taken with date +%s.%N around it.
# GB/s means 10^9 bytes per second.
#
# Everything this script mounts is unmounted on exit, even on failure.

set -u

usage() {
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

die() {
	echo "bench-read: $*" >&2
	exit 1
}

TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench
MODEL_DIR=
CKPTFS=./src/ckptfs
RUNS=3
BASELINES_ONLY=0
PYTHON=${PYTHON:-/usr/bin/python3}
PRESET=llama-1b

while [ $# -gt 0 ]; do
	case $1 in
	--model-dir) [ $# -ge 2 ] || usage 2; MODEL_DIR=$2; shift 2 ;;
	--model-dir=*) MODEL_DIR=${1#*=}; shift ;;
	--ckptfs) [ $# -ge 2 ] || usage 2; CKPTFS=$2; shift 2 ;;
	--ckptfs=*) CKPTFS=${1#*=}; shift ;;
	--cache-dir) [ $# -ge 2 ] || usage 2; CACHE_DIR=$2; shift 2 ;;
	--cache-dir=*) CACHE_DIR=${1#*=}; shift ;;
	--runs) [ $# -ge 2 ] || usage 2; RUNS=$2; shift 2 ;;
	--runs=*) RUNS=${1#*=}; shift ;;
	--baselines-only) BASELINES_ONLY=1; shift ;;
	-h|--help) usage 0 ;;
	*) echo "bench-read: unknown argument: $1" >&2; usage 2 ;;
	esac
done

case $RUNS in ''|*[!0-9]*|0) die "--runs wants a positive integer" ;; esac
[ -n "$MODEL_DIR" ] || MODEL_DIR=$CACHE_DIR/$PRESET
case $CKPTFS in /*) ;; *) CKPTFS=$PWD/$CKPTFS ;; esac
case $MODEL_DIR in /*) ;; *) MODEL_DIR=$PWD/$MODEL_DIR ;; esac

[ -c /dev/fuse ] || die "/dev/fuse is missing"
command -v fusermount3 >/dev/null || die "fusermount3 not found"
command -v cc >/dev/null || die "cc not found"
pkg-config --exists fuse3 || die "pkg-config cannot find fuse3 (libfuse3-dev)"
if [ "$BASELINES_ONLY" = 0 ] && [ ! -x "$CKPTFS" ]; then
	die "$CKPTFS: not an executable (build it, or pass --ckptfs PATH)"
fi

# ---------------------------------------------------------------------
# Cleanup: unmount everything we mounted, stop every daemon we started.

WORK=
MOUNTS=
PIDS=

cleanup() {
	local m p
	for m in $MOUNTS; do
		if grep -q " $m fuse" /proc/mounts 2>/dev/null; then
			fusermount3 -u "$m" 2>/dev/null ||
				fusermount3 -u -z "$m" 2>/dev/null
		fi
	done
	for p in $PIDS; do
		kill "$p" 2>/dev/null
	done
	[ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { date +%s.%N; }

mkdir -p "$CACHE_DIR/bin" || die "$CACHE_DIR: cannot create"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-bench.XXXXXX") || die "mktemp failed"

# ---------------------------------------------------------------------
# The checkpoint, generated once.

if [ ! -e "$MODEL_DIR/model.safetensors" ] &&
   [ ! -e "$MODEL_DIR/model.safetensors.index.json" ]; then
	[ -e "$MODEL_DIR" ] && die "$MODEL_DIR: exists but holds no model.safetensors"
	GEN=$TOP/examples/gen-model.py
	[ -f "$GEN" ] || die "$GEN: missing, cannot generate the model"
	echo "generating $PRESET into $MODEL_DIR (once)..." >&2
	mkdir -p "$(dirname "$MODEL_DIR")" || die "cannot create $(dirname "$MODEL_DIR")"
	partial=$MODEL_DIR.partial.$$
	rm -rf "$partial"
	if ! "$PYTHON" "$GEN" "$PRESET" "$partial" >&2; then
		rm -rf "$partial"
		die "gen-model.py $PRESET failed"
	fi
	mv "$partial" "$MODEL_DIR" || die "cannot move $partial to $MODEL_DIR"
fi

# The files the hf/ view passes through: the regular files at the top of
# the source (symlinks resolving inside it included; good enough here).
SRC_FILES=()
while IFS= read -r f; do
	SRC_FILES+=("$f")
done < <(find "$MODEL_DIR"/ -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort)
[ ${#SRC_FILES[@]} -gt 0 ] || die "$MODEL_DIR: no files"

# ---------------------------------------------------------------------
# Helpers: the reader and passthrough_ll, built once in the cache dir.

READER=$CACHE_DIR/bin/readall
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

PTLL=$CACHE_DIR/bin/passthrough_ll
EXAMPLES=/usr/share/doc/libfuse3-dev/examples
if [ ! -x "$PTLL" ]; then
	mkdir -p "$CACHE_DIR/src" || die "$CACHE_DIR/src: cannot create"
	for f in passthrough_ll.c passthrough_helpers.h; do
		if [ -f "$EXAMPLES/$f" ]; then
			cp "$EXAMPLES/$f" "$CACHE_DIR/src/$f"
		elif [ -f "$EXAMPLES/$f.gz" ]; then
			gzip -dc "$EXAMPLES/$f.gz" >"$CACHE_DIR/src/$f"
		else
			die "$EXAMPLES/$f: missing (install libfuse3-dev)"
		fi || die "cannot copy $f"
	done
	# shellcheck disable=SC2046
	cc -O2 -Wall -o "$PTLL" "$CACHE_DIR/src/passthrough_ll.c" \
		$(pkg-config --cflags --libs fuse3) -lpthread ||
		die "cannot build passthrough_ll"
fi

# ---------------------------------------------------------------------
# Mounting.

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

# umount_fs: unmount $MNT and wait for its daemon; it must exit 0.
umount_fs() {
	local rc
	fusermount3 -u "$MNT" || die "fusermount3 -u $MNT failed"
	wait "$MNT_PID"
	rc=$?
	PIDS=$(echo "$PIDS" | sed "s/ $MNT_PID\\b//")
	if [ "$rc" != 0 ]; then
		cat "$WORK/$(basename "$MNT").stderr" >&2
		die "daemon for $MNT exited with status $rc after unmount"
	fi
}

# read_gbs DIR FILE...: read the files (relative to DIR); sets GBS (GB/s)
# and LAST_BYTES.
read_gbs() {
	local dir=$1 t0 t1
	shift
	t0=$(now)
	LAST_BYTES=$(cd "$dir" && "$READER" "$@") || die "reading $dir failed"
	t1=$(now)
	GBS=$(awk -v n="$LAST_BYTES" -v s="$(elapsed "$t0" "$t1")" \
		'BEGIN { printf "%.3f", n / s / 1e9 }')
}

# best A B: the larger of two GB/s figures.
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
fmt() { awk -v a="$1" 'BEGIN { printf "%.2f GB/s", a }'; }

# ---------------------------------------------------------------------
# Baseline: the source, page cache warm.

SRC_BYTES=$(cd "$MODEL_DIR" && "$READER" "${SRC_FILES[@]}") || die "reading $MODEL_DIR failed"
SRC=0
for _ in $(seq "$RUNS"); do
	read_gbs "$MODEL_DIR" "${SRC_FILES[@]}"
	SRC=$(best "$SRC" "$GBS")
done

# The literal "cat" of the issue: GNU cat reads 128 KiB at a time.
CAT=0
for _ in $(seq "$RUNS"); do
	t0=$(now)
	(cd "$MODEL_DIR" && cat "${SRC_FILES[@]}") >/dev/null || die "cat $MODEL_DIR failed"
	t1=$(now)
	CAT=$(best "$CAT" "$(awk -v n="$SRC_BYTES" -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", n / s / 1e9 }')")
done

echo "model: $MODEL_DIR ($(awk -v n="$SRC_BYTES" 'BEGIN { printf "%.2f GB", n / 1e9 }') in ${#SRC_FILES[@]} files); best of $RUNS runs; GB = 10^9 bytes"
echo "source read (page cache warm): $(fmt "$SRC")  (cat of the source, 128 KiB reads: $(fmt "$CAT"))"

# ---------------------------------------------------------------------
# Baseline: libfuse's passthrough_ll on the source directory.

PT=0
PT_DIRECT=0
BIG=$(cd "$MODEL_DIR" && ls -S "${SRC_FILES[@]}" | head -n 1)
for _ in $(seq "$RUNS"); do
	mount_fs ptll "$PTLL" -f -o source="$MODEL_DIR" "$WORK/ptll"
	read_gbs "$MNT" "${SRC_FILES[@]}"
	PT=$(best "$PT" "$GBS")
	[ "$LAST_BYTES" = "$SRC_BYTES" ] || die "passthrough_ll read $LAST_BYTES bytes, source has $SRC_BYTES"
	t0=$(now)
	n=$("$READER" --direct "$MNT/$BIG") || die "O_DIRECT read through passthrough_ll failed"
	t1=$(now)
	PT_DIRECT=$(best "$PT_DIRECT" "$(awk -v n="$n" -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.3f", n / s / 1e9 }')")
	umount_fs
done

# The ceiling of any re-read through FUSE: passthrough_ll with
# cache=always (keep_cache) re-reading from the kernel page cache.
PT_RE=0
mount_fs ptll "$PTLL" -f -o source="$MODEL_DIR",cache=always "$WORK/ptll"
read_gbs "$MNT" "${SRC_FILES[@]}"
for _ in $(seq "$RUNS"); do
	read_gbs "$MNT" "${SRC_FILES[@]}"
	PT_RE=$(best "$PT_RE" "$GBS")
done
umount_fs

echo "passthrough_ll first read: $(fmt "$PT")  (source: $(fmt "$SRC"), ratio $(ratio "$PT" "$SRC"))"
echo "passthrough_ll O_DIRECT 4 MiB reads of $BIG (FUSE transport limit): $(fmt "$PT_DIRECT")"
echo "passthrough_ll -o cache=always re-read (FUSE page cache limit): $(fmt "$PT_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$PT_RE" "$SRC"))"

if [ "$BASELINES_ONLY" = 1 ]; then
	echo "(--baselines-only: ckptfs not measured)"
	exit 0
fi

# ---------------------------------------------------------------------
# ckptfs.

# view_files DIR: the regular files of DIR, one per line, sorted.
view_files() {
	find "$1"/ -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort
}

HF_FIRST=0 HF_RE=0 T_FIRST=0 T_RE=0 NS_FIRST=0 HWM=0 ANON=0 T_BYTES=0 NT=0
for run in $(seq "$RUNS"); do
	mount_fs ckptfs "$CKPTFS" -f "$MODEL_DIR" "$WORK/ckptfs"
	HF_FILES=()
	while IFS= read -r f; do HF_FILES+=("$f"); done < <(view_files "$MNT/hf")
	[ "${HF_FILES[*]}" = "${SRC_FILES[*]}" ] ||
		die "hf/ lists '${HF_FILES[*]}', source has '${SRC_FILES[*]}'"
	read_gbs "$MNT/hf" "${HF_FILES[@]}"
	HF_FIRST=$(best "$HF_FIRST" "$GBS")
	[ "$LAST_BYTES" = "$SRC_BYTES" ] || die "hf/ read $LAST_BYTES bytes, source has $SRC_BYTES"
	read_gbs "$MNT/hf" "${HF_FILES[@]}"
	HF_RE=$(best "$HF_RE" "$GBS")
	if [ "$run" = 1 ]; then
		# A fast wrong answer is no answer: the passthrough must be exact.
		for f in "${HF_FILES[@]}"; do
			cmp -s "$MNT/hf/$f" "$MODEL_DIR/$f" || die "hf/$f differs from the source"
		done
	fi
	T_FILES=()
	while IFS= read -r f; do T_FILES+=("$f"); done < <(view_files "$MNT/tensors")
	NT=${#T_FILES[@]}
	[ "$NT" -gt 0 ] || die "tensors/ is empty"
	read_gbs "$MNT/tensors" "${T_FILES[@]}"
	T_FIRST=$(best "$T_FIRST" "$GBS")
	T_BYTES=$LAST_BYTES
	read_gbs "$MNT/tensors" "${T_FILES[@]}"
	T_RE=$(best "$T_RE" "$GBS")
	h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$MNT_PID/status" 2>/dev/null)
	[ -n "$h" ] && [ "$h" -gt "$HWM" ] && HWM=$h
	h=$(awk '/^RssAnon:/ { print $2 }' "/proc/$MNT_PID/status" 2>/dev/null)
	[ -n "$h" ] && [ "$h" -gt "$ANON" ] && ANON=$h
	umount_fs

	mount_fs ckptfs "$CKPTFS" -f -o no_splice "$MODEL_DIR" "$WORK/ckptfs"
	read_gbs "$MNT/hf" "${HF_FILES[@]}"
	NS_FIRST=$(best "$NS_FIRST" "$GBS")
	umount_fs
done

# Time to first byte: from starting ckptfs to the first byte of
# hf/model.safetensors, polled in a tight loop; best of N.
FB_FILE=model.safetensors
[ -e "$MODEL_DIR/$FB_FILE" ] || FB_FILE=${SRC_FILES[0]}
FB=
for _ in $(seq "$RUNS"); do
	MNT=$WORK/ckptfs
	mkdir -p "$MNT"
	t0=$(now)
	"$CKPTFS" -f "$MODEL_DIR" "$MNT" 2>>"$WORK/ckptfs.stderr" &
	MNT_PID=$!
	PIDS="$PIDS $MNT_PID"
	"$READER" --first-byte "$MNT/hf/$FB_FILE" 10 || die "no first byte from ckptfs"
	t1=$(now)
	ms=$(awk -v s="$(elapsed "$t0" "$t1")" 'BEGIN { printf "%.1f", s * 1000 }')
	if [ -z "$FB" ] || awk -v a="$ms" -v b="$FB" 'BEGIN { exit !(a < b) }'; then
		FB=$ms
	fi
	umount_fs
done

verdict() { awk -v a="$1" -v t="$2" 'BEGIN { print (a >= t) ? "met" : "NOT met" }'; }

echo "hf/ first read: $(fmt "$HF_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$HF_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$HF_FIRST" "$PT"))"
echo "hf/ first read, -o no_splice: $(fmt "$NS_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$NS_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$NS_FIRST" "$PT"))"
echo "hf/ re-read: $(fmt "$HF_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$HF_RE" "$SRC"), target >= 0.8: $(verdict "$(ratio "$HF_RE" "$SRC")" 0.8); cat source: $(fmt "$CAT"), ratio $(ratio "$HF_RE" "$CAT"); passthrough_ll cache=always re-read: $(fmt "$PT_RE"), ratio $(ratio "$HF_RE" "$PT_RE"))"
echo "tensors/ first read ($NT files, $(awk -v n="$T_BYTES" 'BEGIN { printf "%.2f GB", n / 1e9 }')): $(fmt "$T_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$T_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$T_FIRST" "$PT"))"
echo "tensors/ re-read: $(fmt "$T_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$T_RE" "$SRC"); passthrough_ll cache=always re-read: $(fmt "$PT_RE"), ratio $(ratio "$T_RE" "$PT_RE"))"
echo "time to first byte of hf/$FB_FILE: $FB ms  (target < 50 ms: $(awk -v a="$FB" 'BEGIN { print (a < 50) ? "met" : "NOT met" }'))"
echo "ckptfs memory after reading hf/ and tensors/: VmHWM $((HWM / 1024)) MiB, RssAnon $((ANON / 1024)) MiB  (source: $(awk -v n="$SRC_BYTES" 'BEGIN { printf "%d", n / 1048576 }') MiB; VmHWM counts the mapped source pages)"
