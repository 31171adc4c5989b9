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

BENCH_NAME=bench-read
USAGE_LINES=2,6
. "$(dirname "$0")/lib.sh" || exit 1

RUNS=3
BASELINES_ONLY=0
BENCH_OPTS="$BENCH_OPTS --runs=RUNS"
BENCH_FLAGS="$BENCH_FLAGS --baselines-only=BASELINES_ONLY=1"
bench_args "$@"

positive_int "$RUNS" --runs
bench_paths

require_fuse
command -v cc >/dev/null || die "cc not found"
pkg-config --exists fuse3 || die "pkg-config cannot find fuse3 (libfuse3-dev)"
[ "$BASELINES_ONLY" = 1 ] || require_ckptfs

mkdir -p "$CACHE_DIR/bin" || die "$CACHE_DIR: cannot create"
bench_work
ensure_model

# The files the hf/ view passes through: the regular files at the top of
# the source (symlinks resolving inside it included; good enough here).
SRC_FILES=()
while IFS= read -r f; do
	SRC_FILES+=("$f")
done < <(find "$MODEL_DIR"/ -mindepth 1 -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort)
[ ${#SRC_FILES[@]} -gt 0 ] || die "$MODEL_DIR: no files"

# ---------------------------------------------------------------------
# Helpers: the reader and passthrough_ll, built once in the cache dir.

build_reader

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
	CAT=$(best "$CAT" "$(gbs "$SRC_BYTES" "$(elapsed "$t0" "$t1")")")
done

echo "model: $MODEL_DIR ($(gb "$SRC_BYTES") in ${#SRC_FILES[@]} files); best of $RUNS runs; GB = 10^9 bytes"
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
	PT_DIRECT=$(best "$PT_DIRECT" "$(gbs "$n" "$(elapsed "$t0" "$t1")")")
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

echo "hf/ first read: $(fmt "$HF_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$HF_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$HF_FIRST" "$PT"))"
echo "hf/ first read, -o no_splice: $(fmt "$NS_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$NS_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$NS_FIRST" "$PT"))"
echo "hf/ re-read: $(fmt "$HF_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$HF_RE" "$SRC"), target >= 0.8: $(verdict "$(ratio "$HF_RE" "$SRC")" 0.8); cat source: $(fmt "$CAT"), ratio $(ratio "$HF_RE" "$CAT"); passthrough_ll cache=always re-read: $(fmt "$PT_RE"), ratio $(ratio "$HF_RE" "$PT_RE"))"
echo "tensors/ first read ($NT files, $(gb "$T_BYTES")): $(fmt "$T_FIRST")  (source: $(fmt "$SRC"), ratio $(ratio "$T_FIRST" "$SRC"); passthrough_ll: $(fmt "$PT"), ratio $(ratio "$T_FIRST" "$PT"))"
echo "tensors/ re-read: $(fmt "$T_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$T_RE" "$SRC"); passthrough_ll cache=always re-read: $(fmt "$PT_RE"), ratio $(ratio "$T_RE" "$PT_RE"))"
echo "time to first byte of hf/$FB_FILE: $FB ms  (target < 50 ms: $(awk -v a="$FB" 'BEGIN { print (a < 50) ? "met" : "NOT met" }'))"
echo "ckptfs memory after reading hf/ and tensors/: VmHWM $((HWM / 1024)) MiB, RssAnon $((ANON / 1024)) MiB  (source: $(awk -v n="$SRC_BYTES" 'BEGIN { printf "%d", n / 1048576 }') MiB; VmHWM counts the mapped source pages)"
