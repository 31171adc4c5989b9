#!/bin/bash
# bench-cache.sh: what the hot-chunk cache buys on the 1B LLaMA (issue 5).
#
# Usage: bench/bench-cache.sh [--model-dir DIR] [--ckptfs PATH] [--views V1,V2]
#
# For each computed view file (default native@fp32/model.safetensors, a
# widening cast, and hf@fp16/model.safetensors, a narrowing one), one run:
#   off        -o cache=off: every byte recomputed (the baseline)
#   cold       -o cache_policy=always, empty cache dir: compute + queue writes
#   disk       remount, same dir: every chunk read back from the disk tier
#   memory     another mount with a memory tier that holds the view, read
#              once, then an O_DIRECT re-read (bypassing the kernel page
#              cache): served from memory
#   auto       default policy, empty dir, read, remount, read again: how
#              many chunks the policy stored and what the second pass costs
# Each line prints GB/s of view bytes and the ratio to "off". The model is
# generated once into ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench.
# Everything mounted is unmounted on exit.
set -u

BENCH_NAME=bench-cache
USAGE_LINES=2,5
. "$(dirname "$0")/lib.sh" || exit 1

CKPTFS=$TOP/src/ckptfs
VIEWS=native@fp32/model.safetensors,hf@fp16/model.safetensors
BENCH_OPTS="$BENCH_OPTS --views=VIEWS"
bench_args "$@"
bench_paths
ensure_model

bench_work
bench_mnt

mount_it() {
	"$CKPTFS" "$@" "$MODEL_DIR" "$MNT" || die "mount failed"
}
# read_time FILE [direct]: prints seconds
read_time() {
	local flag=
	[ "${2:-}" = direct ] && flag=iflag=direct
	# shellcheck disable=SC2086
	secs dd if="$1" of=/dev/null bs=4M $flag status=none
}
gbps() { echo "scale=2; $1 / $2 / 1000000000" | bc -l; }

cat "$MODEL_DIR/model.safetensors" >/dev/null # source page cache warm
echo "model: $MODEL_DIR; load: $(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -r -a views <<<"$VIEWS"
for view in "${views[@]}"; do
	size=$("$CKPTFS" ls -o cache=off "$MODEL_DIR" "$view" | awk '{print $1}')
	dir=$WORK/cache
	rm -rf "$dir"
	mount_it -o cache=off
	t_off=$(read_time "$MNT/$view")
	umount_bg
	mount_it -o cache_dir="$dir",cache_policy=always,cache_size=20G
	t_cold=$(read_time "$MNT/$view")
	umount_bg
	disk_bytes=$(du -sb "$dir" | cut -f1)
	# from disk with the default memory tier, then (another mount, a memory
	# tier that holds the view) an O_DIRECT re-read served from memory
	mount_it -o cache_dir="$dir",cache_policy=always,cache_size=20G
	t_disk=$(read_time "$MNT/$view")
	hits=$(mount_stat cache/disk/hits)
	umount_bg
	mount_it -o cache_dir="$dir",cache_policy=always,cache_size=20G,mem_cache=8G
	read_time "$MNT/$view" >/dev/null
	t_mem=$(read_time "$MNT/$view" direct)
	memhits=$(mount_stat cache/memory/hits)
	umount_bg
	rm -rf "$dir"
	mount_it -o cache_dir="$dir"
	t_auto1=$(read_time "$MNT/$view")
	stored=$(mount_stat cache/disk/written 2>/dev/null)
	umount_bg
	mount_it -o cache_dir="$dir"
	t_auto2=$(read_time "$MNT/$view")
	skipped=$(mount_stat cache/disk/skipped_by_policy)
	cmbps=$(mount_stat cache/compute_mbps)
	dmbps=$(mount_stat cache/decompress_mbps)
	umount_bg
	echo "== $view ($size bytes)"
	echo "off (recompute):        $(gbps "$size" "$t_off") GB/s"
	echo "cold, policy=always:    $(gbps "$size" "$t_cold") GB/s  (ratio to off $(echo "scale=2; $t_off / $t_cold" | bc -l)); on disk: $disk_bytes bytes (ratio $(echo "scale=2; $size / $disk_bytes" | bc -l))"
	echo "warm from disk:         $(gbps "$size" "$t_disk") GB/s  (ratio to off $(echo "scale=2; $t_off / $t_disk" | bc -l)); disk hits $hits"
	echo "warm from memory:       $(gbps "$size" "$t_mem") GB/s  (ratio to off $(echo "scale=2; $t_off / $t_mem" | bc -l)); memory hits $memhits (O_DIRECT)"
	echo "policy=auto, 1st pass:  $(gbps "$size" "$t_auto1") GB/s; 2nd pass after remount: $(gbps "$size" "$t_auto2") GB/s (ratio to off $(echo "scale=2; $t_off / $t_auto2" | bc -l)); chunks skipped by policy on the 2nd mount: $skipped; compute ${cmbps%.*} MB/s vs decode ${dmbps%.*} MB/s"
done
