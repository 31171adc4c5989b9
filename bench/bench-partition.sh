#!/bin/bash
# bench-partition.sh: partition views of the 1B LLaMA (issue 4).
#
# Usage: bench/bench-partition.sh [--model-dir DIR] [--ckptfs PATH]
#
# 1. tp-4/rank-0 read in full through a fresh mount: bytes read from the
#    source (.ckptfs/stats) over the bytes of the model (target <= 0.27),
#    and its throughput against a direct read of the source.
# 2. per-layer/layer-007.safetensors read in full: the daemon's RssAnon
#    growth against the size of one layer + 64 MiB (target: below it).
# 3. The same rank in-process (ckptfs cat, no FUSE) for reference.
set -u

BENCH_NAME=bench-partition
USAGE_LINES=2,4
. "$(dirname "$0")/lib.sh" || exit 1

CKPTFS=$TOP/src/ckptfs
bench_args "$@"
bench_paths
ensure_model

bench_work
bench_mnt
SRC=$MODEL_DIR/model.safetensors

rss_kb() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }

cat "$SRC" >/dev/null
model=$(stat -c %s "$SRC")
t_src=$(secs dd if="$SRC" of=/dev/null bs=1M status=none)
echo "model: $MODEL_DIR ($(gb "$model")); direct read of the source: $(fmt "$(gbs "$model" "$t_src")"); load $(cut -d' ' -f1-3 /proc/loadavg)"

"$CKPTFS" -o cache=off "$MODEL_DIR" "$MNT" || die "mount failed"
rank=$MNT/tp-4/rank-0/model.safetensors
size=$(stat -c %s "$rank")
t_rank=$(secs dd if="$rank" of=/dev/null bs=1M status=none)
read_src=$(mount_stat source_bytes_read/model.safetensors)
computed=$(mount_stat bytes_computed)
echo "tp-4/rank-0 ($(gb "$size")) first read: $(fmt "$(gbs "$size" "$t_rank")")  (direct read of the source: ratio $(ratio "$(gbs "$size" "$t_rank")" "$(gbs "$model" "$t_src")")); computed bytes $computed"
echo "tp-4/rank-0 source bytes read / model bytes: $(awk -v a="$read_src" -v b="$model" 'BEGIN { printf "%.3f", a / b }')  (target <= 0.27: $(awk -v a="$read_src" -v b="$model" 'BEGIN { print (a / b <= 0.27) ? "met" : "NOT met" }'))"
umount_bg

"$CKPTFS" -o cache=off "$MODEL_DIR" "$MNT" || die "mount failed"
pid=$(pgrep -f "ckptfs.* $MNT\$" | head -n 1)
layer=$MNT/per-layer/layer-007.safetensors
ls "$MNT/per-layer" >/dev/null
before=$(rss_kb "$pid")
lsize=$(stat -c %s "$layer")
t_layer=$(secs dd if="$layer" of=/dev/null bs=1M status=none)
after=$(rss_kb "$pid")
growth=$((after - before))
limit=$((lsize / 1024 + 64 * 1024))
echo "per-layer/layer-007 ($(gb "$lsize")): read $(fmt "$(gbs "$lsize" "$t_layer")"); daemon RssAnon $before -> $after kB, growth $growth kB  (target < one layer + 64 MiB = $limit kB: $([ "$growth" -lt "$limit" ] && echo met || echo NOT met))"
umount_bg

t_cat=$(secs sh -c "\"$CKPTFS\" cat -o cache=off \"$MODEL_DIR\" tp-4/rank-0/model.safetensors >/dev/null")
echo "in-process ckptfs cat tp-4/rank-0: $(fmt "$(gbs "$size" "$t_cat")")  (direct read of the source: ratio $(ratio "$(gbs "$size" "$t_cat")" "$(gbs "$model" "$t_src")"))"
