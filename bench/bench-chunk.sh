#!/bin/bash
# bench-chunk.sh: what a reader that hops around a computed view pays for the
# cache's chunk size (-o cache_chunk), at several sizes in the same run.
#
# Usage: bench/bench-chunk.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR]
#                             [--runs N] [--sizes "1MiB 2MiB 4MiB"] [--faults N]
#                             [--part all|faults|whole]
#
# Run as root from the top of a plain (non-sanitizer) build. Uses the
# llama-1b model of bench-lora.sh with its rank-16 adapter (run bench-lora.sh
# once first) and the llama-1b-gguf directory of bench-gguf.sh. Every mount
# is fresh. Sections 1 and 2 mount with -o cache_dir=none (the memory tier
# only) and cache_policy=always, so that every computed byte goes through
# the cache in whole chunks (the default policy lets a tensor whose first
# chunk computed faster than it would read back bypass the cache, and such
# a tensor computes only the bytes asked for, whatever the chunk size). Sizes run interleaved, N rounds (default 2).
#  1. tensor reads: one tensor of the merged hf@bf16/model.safetensors
#     (layer 7's k_proj, 2 MiB; q_proj, 8 MiB; down_proj, 32 MiB; each
#     through a mount of its own), read by its byte range in 1 MiB preads,
#     as a loader hopping between tensors does: computed bytes (.ckptfs/stats cache.computed_bytes) per byte of
#     the tensor, and the time.
#  2. page faults at random: F pages (default 256, the same seeded pages at
#     every size) of a mapping of merged hf@bf16/model.safetensors, then of
#     gguf@q8_0/model.gguf (no adapter), touched one byte each, as
#     llama.cpp's faults on its mapping: computed bytes per byte touched and
#     per byte the kernel asked for (its read-around), and ms per fault.
#  3. whole reads, the daemon's CPU time (user + system, from mount to the
#     end of the unmount, which waits for the disk writer to name its
#     entries: steadier than wall time on a loaded machine) beside the wall
#     GB/s: merged hf@bf16/model.safetensors with cache_dir=none, with a
#     fresh cache_dir (the writer stores every merged chunk), a second mount
#     on it; gguf@q8_0/model.gguf with a fresh cache_dir, a second mount.
#     --part faults (whole) runs 1 and 2 (3) alone; default all.
set -u

BENCH_NAME=bench-chunk
USAGE_LINES=2,33
. "$(dirname "$0")/lib.sh"

RUNS=2
SIZES="1MiB 2MiB 4MiB"
FAULTS=256
PART=all
BENCH_OPTS="$BENCH_OPTS --runs=RUNS --sizes=SIZES --faults=FAULTS --part=PART"
bench_args "$@"
positive_int "$RUNS" --runs
positive_int "$FAULTS" --faults
bench_paths
require_fuse
require_ckptfs
ADAPTER=$CACHE_DIR/$PRESET-lora-r16
GGUF_SRC=$CACHE_DIR/$PRESET-gguf
[ -e "$ADAPTER/adapter_model.safetensors" ] || die "$ADAPTER: no adapter (run bench/bench-lora.sh once)"
[ -e "$GGUF_SRC/tokenizer.json" ] || die "$GGUF_SRC: not prepared (run bench/bench-gguf.sh once)"
case $PART in all|faults|whole) ;; *) die "--part wants all, faults or whole" ;; esac
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-chunk.XXXXXX")
build_reader

# probe MNT FILE MODE: the Python side; prints one line per figure.
probe() {
	"$PYTHON" - "$@" <<'PY'
import json, mmap, os, random, struct, sys, time
mnt, rel, mode, faults = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
path = os.path.join(mnt, rel)

def stats():
    s = json.load(open(os.path.join(mnt, ".ckptfs/stats")))
    return s["cache"]["computed_bytes"], s["bytes_served"]

if mode == "tensors":
    fd = os.open(path, os.O_RDONLY)
    n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
    hdr = json.loads(os.pread(fd, n, 8))
    for t in [sys.argv[5]]:
        b, e = hdr[t]["data_offsets"]
        b, e = b + 8 + n, e + 8 + n
        c0, s0 = stats()
        t0 = time.monotonic()
        for off in range(b, e, 1 << 20):
            os.pread(fd, min(1 << 20, e - off), off)
        dt = time.monotonic() - t0
        c1, s1 = stats()
        print("%s (%.1f MiB): computed/tensor %.2f, served/tensor %.2f, %.1f ms"
              % (t.split(".", 3)[3], (e - b) / 2**20, (c1 - c0) / (e - b), (s1 - s0) / (e - b), dt * 1e3))
    os.close(fd)
else:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    rng = random.Random(1234)
    pages = [rng.randrange(size // 4096) for _ in range(faults)]
    c0, s0 = stats()
    t0 = time.monotonic()
    x = 0
    for p in pages:
        x ^= m[p * 4096]
    dt = time.monotonic() - t0
    c1, s1 = stats()
    touched = faults * 4096
    print("%d random faults: computed/touched %.1f, computed/served %.2f, served %.0f MiB, %.2f ms per fault"
          % (faults, (c1 - c0) / touched, (c1 - c0) / max(1, s1 - s0), (s1 - s0) / 2**20, dt * 1e3 / faults))
    m.close()
    os.close(fd)
PY
}

# cpu_read WHAT SRC VIEWFILE OPTS: mount SRC under /usr/bin/time, read
# VIEWFILE whole, unmount; prints WHAT, the wall GB/s and the daemon's CPU s.
cpu_read() {
	local what=$1 src=$2 file=$3 opts=$4 cpu
	mount_fs w /usr/bin/time -o "$WORK/cpu" -f '%U %S' "$CKPTFS" -f -o "$opts" "$src" "$WORK/w"
	read_gbs "$MNT" "$file"
	umount_fs
	cpu=$(awk '{ printf "%.2f", $1 + $2 }' "$WORK/cpu")
	printf '  %-34s %s, daemon CPU %s s (%.2f s/GB)\n' "$what" "$(fmt "$GBS")" "$cpu" \
		"$(awk -v c="$cpu" -v b="$LAST_BYTES" 'BEGIN { print c / (b / 1e9) }')"
}

# whole SIZE: section 3 at one chunk size.
whole() {
	local s=$1 c=$WORK/cache
	rm -rf "$c"
	cpu_read "merged hf@bf16, cache_dir=none" "$MODEL_DIR" hf@bf16/model.safetensors \
		"lora=$ADAPTER,cache_dir=none,cache_chunk=$s"
	cpu_read "merged hf@bf16, fresh cache_dir" "$MODEL_DIR" hf@bf16/model.safetensors \
		"lora=$ADAPTER,cache_dir=$c,cache_chunk=$s"
	echo "    entries: $(find "$c" -name '*.zst' | wc -l), $(du -sh "$c" | cut -f1)"
	cpu_read "merged hf@bf16, second mount" "$MODEL_DIR" hf@bf16/model.safetensors \
		"lora=$ADAPTER,cache_dir=$c,cache_chunk=$s"
	rm -rf "$c"
	cpu_read "gguf@q8_0, fresh cache_dir" "$GGUF_SRC" gguf@q8_0/model.gguf "cache_dir=$c,cache_chunk=$s"
	cpu_read "gguf@q8_0, second mount" "$GGUF_SRC" gguf@q8_0/model.gguf "cache_dir=$c,cache_chunk=$s"
	rm -rf "$c"
}

echo "bench-chunk: $MODEL_DIR + $ADAPTER, $GGUF_SRC; sizes $SIZES; $RUNS rounds; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$RUNS"); do
	order=$SIZES
	[ $((r % 2)) = 0 ] && order=$(echo "$SIZES" | tr ' ' '\n' | tac | tr '\n' ' ')
	for s in $order; do
		echo "-- round $r, cache_chunk=$s"
		[ "$PART" != whole ] || { whole "$s"; continue; }
		for t in self_attn.k_proj self_attn.q_proj mlp.down_proj; do
			mount_fs m "$CKPTFS" -f -o "lora=$ADAPTER,cache_dir=none,cache_policy=always,cache_chunk=$s" "$MODEL_DIR" "$WORK/m"
			probe "$MNT" hf@bf16/model.safetensors tensors "$FAULTS" "model.layers.7.$t.weight" |
				sed 's/^/  merged hf@bf16 /'
			umount_fs
		done
		mount_fs m "$CKPTFS" -f -o "lora=$ADAPTER,cache_dir=none,cache_policy=always,cache_chunk=$s" "$MODEL_DIR" "$WORK/m"
		probe "$MNT" hf@bf16/model.safetensors faults "$FAULTS" | sed 's/^/  merged hf@bf16 /'
		umount_fs
		mount_fs m "$CKPTFS" -f -o "cache_dir=none,cache_policy=always,cache_chunk=$s" "$GGUF_SRC" "$WORK/m"
		probe "$MNT" gguf@q8_0/model.gguf faults "$FAULTS" | sed 's/^/  gguf@q8_0 /'
		umount_fs
		[ "$PART" != all ] || whole "$s"
	done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
