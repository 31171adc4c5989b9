#!/bin/bash
# bench-cold.sh: first reads of views when the source is not in the page cache (issue 14).
#
# Usage: bench/bench-cold.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR]
#                            [--runs N] [--views "V1 V2 ..."] [--mount-opts OPTS]
#                            [--compare PATH]
#
# Needs root (/proc/sys/vm/drop_caches). For each view (a directory of the
# mount, or one file of it) the page cache is dropped, a fresh mount is
# made (with an empty ckptfs cache dir) and every file of the view is read
# start to end; then the page cache is dropped again and `dd iflag=direct
# bs=4M` reads as many bytes of the source as the view took from it
# (.ckptfs/stats source_bytes_read). Printed: both times, best of N runs,
# and their ratio (dd time / view time: >= 0.9 is the target), and the
# source bytes the view read against the model's bytes. Also printed: the
# same view read again through a fresh mount with the source still in the
# page cache (warm: the daemon's own ceiling), the read-ahead counters of
# .ckptfs/stats when the daemon has them, and with --compare PATH another
# daemon (e.g. a build of main) measured cold the same way in the same run.
set -u

BENCH_NAME=bench-cold
USAGE_LINES=2,19
. "$(dirname "$0")/lib.sh" || exit 1

CKPTFS=$TOP/src/ckptfs
RUNS=2
VIEWS="hf native hf@fp16 hf@fp32 tp-4/rank-0 pp-2/stage-1 per-layer/layer-003.safetensors"
MOUNT_OPTS=
COMPARE=
BENCH_OPTS="$BENCH_OPTS --runs=RUNS --views=VIEWS --mount-opts=MOUNT_OPTS --compare=COMPARE"
while [ $# -gt 0 ]; do
	bench_arg "$@"
	shift "$NSHIFT"
done
positive_int "$RUNS" --runs
bench_paths
[ "$(id -u)" = 0 ] || die "needs root to drop the page cache"
[ -w /proc/sys/vm/drop_caches ] || die "/proc/sys/vm/drop_caches is not writable"
require_fuse
require_ckptfs
require_numpy
ensure_model

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-bench-cold.XXXXXX") || die "mktemp failed"
build_reader

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# The source files, in order, and the model's bytes.
SOURCES=()
while IFS= read -r f; do SOURCES+=("$MODEL_DIR/$f"); done < <(
	cd "$MODEL_DIR" && ls -1 -- *.safetensors *.bin *.pt *.pth 2>/dev/null | LC_ALL=C sort)
[ ${#SOURCES[@]} -gt 0 ] || die "$MODEL_DIR: no source files"
MODEL_BYTES=0
for f in "${SOURCES[@]}"; do MODEL_BYTES=$((MODEL_BYTES + $(stat -c %s "$f"))); done

stats_field() { # stats_field FILE KEY: a number from a saved .ckptfs/stats (0 if absent)
	"$PYTHON" -c 'import json,sys
j=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("/"):
    j=j.get(k, 0) if isinstance(j, dict) else 0
print(int(sum(j.values())) if isinstance(j, dict) else int(j))' "$1" "$2"
}

# direct_read BYTES: seconds for dd iflag=direct bs=4M of the first BYTES
# bytes of the source files, in order (rounded up to 4 MiB blocks).
direct_read() {
	local need=$1 f size blocks t0 t1
	t0=$(now)
	for f in "${SOURCES[@]}"; do
		[ "$need" -gt 0 ] || break
		size=$(stat -c %s "$f")
		[ "$size" -lt "$need" ] && blocks=$(( (size + 4194303) / 4194304 )) ||
			blocks=$(( (need + 4194303) / 4194304 ))
		dd if="$f" of=/dev/null bs=4M iflag=direct count="$blocks" status=none ||
			die "dd $f failed"
		need=$((need - blocks * 4194304))
	done
	t1=$(now)
	elapsed "$t0" "$t1"
}

# view_read VIEW RUN: a fresh mount, read VIEW; sets VSECS, VBYTES and
# NEED (source bytes the view read); keeps the stats in $WORK/stats.
view_read() {
	local view=$1 run=$2 daemon=${3:-$CKPTFS} t0 t1 files=() opts
	opts="cache_dir=$WORK/cache-$run"
	[ -n "$MOUNT_OPTS" ] && opts="$opts,$MOUNT_OPTS"
	mount_fs "mnt" "$daemon" -f -o "$opts" "$MODEL_DIR" "$WORK/mnt"
	if [ -d "$MNT/$view" ]; then
		while IFS= read -r f; do files+=("$view/$f"); done < <(view_files "$MNT/$view")
	elif [ -f "$MNT/$view" ]; then
		files=("$view")
	else
		die "$view: not in the mount"
	fi
	t0=$(now)
	VBYTES=$(cd "$MNT" && "$READER" "${files[@]}") || die "reading $view failed"
	t1=$(now)
	VSECS=$(elapsed "$t0" "$t1")
	cp "$MNT/.ckptfs/stats" "$WORK/stats"
	NEED=$(stats_field "$WORK/stats" source_bytes_read)
	umount_fs
	rm -rf "$WORK/cache-$run"
}

echo "model: $MODEL_DIR ($(gb "$MODEL_BYTES"), ${#SOURCES[@]} file(s)); runs: $RUNS; load $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$COMPARE" ] && { case $COMPARE in /*) ;; *) COMPARE=$PWD/$COMPARE ;; esac; [ -x "$COMPARE" ] || die "$COMPARE: not an executable"; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
printf '%-32s %8s %6s %7s %7s %7s %6s' view bytes need "cold s" "warm s" "dd s" ratio
[ -n "$COMPARE" ] && printf ' %7s %6s' "cmp s" "cmp"
printf ' %s\n' read-ahead
for view in $VIEWS; do
	best_v= best_d= best_w= best_c=
	for run in $(seq "$RUNS"); do
		if [ -n "$COMPARE" ]; then
			drop_caches
			view_read "$view" "$run" "$COMPARE"
			best_c=$(min "$VSECS" "$best_c")
		fi
		drop_caches
		view_read "$view" "$run"
		best_v=$(min "$VSECS" "$best_v")
		cp "$WORK/stats" "$WORK/stats.cold"
		view_read "$view" "$run"
		best_w=$(min "$VSECS" "$best_w")
		drop_caches
		d=$(direct_read "$NEED")
		best_d=$(min "$d" "$best_d")
	done
	cp "$WORK/stats.cold" "$WORK/stats"
	ra=$(stats_field "$WORK/stats" readahead/source_bytes_requested)
	ahead=$(stats_field "$WORK/stats" readahead/view_bytes_ahead)
	used=$(stats_field "$WORK/stats" readahead/view_bytes_used)
	printf '%-32s %8s %6s %7.2f %7.2f %7.2f %5sx' "$view" "$(gb "$VBYTES")" \
		"$(awk -v a="$NEED" -v b="$MODEL_BYTES" 'BEGIN { printf "%.3f", a / b }')" \
		"$best_v" "$best_w" "$best_d" "$(ratio "$best_d" "$best_v")"
	[ -n "$COMPARE" ] && printf ' %7.2f %5sx' "$best_c" "$(ratio "$best_d" "$best_c")"
	printf ' %s asked; view %s ahead, %s used\n' "$(gb "$ra")" "$(gb "$ahead")" "$(gb "$used")"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
