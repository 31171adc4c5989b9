#!/bin/bash
# bench-lora.sh: a base model with a LoRA adapter merged on read
# (-o lora=), against the base's own view and the numpy merge script
# people run today.
#
# Usage: bench/bench-lora.sh [--model-dir DIR] [--ckptfs PATH]
#                            [--cache-dir DIR] [--runs N] [--r R]
#
# Run as root (or a user who may mount FUSE filesystems) from the top of
# a built tree (a plain build: sanitizers make the merge several times
# slower). The llama-1b model (bf16, 1.2 B parameters) is generated once
# into ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench with
# examples/gen-model.py, an adapter of rank R (default 16, lora_alpha 2R,
# F32, on q,k,v,o,gate,up,down of every layer) beside it with
# tests/gen_lora.py.
#
# Figures (best of N runs, default 3, each beside its baseline measured
# in the same run; GB = 10^9 bytes):
#  1. mount time with the adapter (mount to first stat), and without it.
#  2. first read of merged hf@bf16/ through a fresh mount (memory cache
#     only: every byte computed) against the first read of the base's
#     hf@bf16/ (which a bf16 base serves straight from the source).
#     Target >= 0.5x.
#  3. the peer: a numpy script that loads the base and the adapter,
#     computes W += s * B @ A in fp32 for every module, rounds to bf16 and
#     writes model.safetensors (wall time and peak RSS from
#     /usr/bin/time -v), against ckptfs from start to all of hf@bf16/
#     read through a fresh mount and the daemon's peak RssAnon sampled
#     during the read; runs paired A B A B, the median ratio reported.
#     Targets: <= 1/3 of the script's time, <= 1/10 of its peak memory.
#  4. the disk cache: a mount with a fresh -o cache_dir (default policy:
#     a merged chunk is kept when computing it took longer than reading it
#     back is measured to take)
#     reads hf@bf16/; after unmounting, a second mount reads it again
#     from the disk tier. Target: the second >= 2x the first. The cache
#     counters of the last pair (.ckptfs/stats), the writer's CPU time
#     during the first read among them, are printed beside it.
#     The first of the pair is also the first read a user gets with the
#     default options (its writer stores the whole merged model while the
#     merge runs): against the base's hf@bf16/ of 2, target >= 0.5x.
set -u

BENCH_NAME=bench-lora
USAGE_LINES=2,40
. "$(dirname "$0")/lib.sh"

RUNS=3
R=16
BENCH_OPTS="$BENCH_OPTS --runs=RUNS --r=R"
bench_args "$@"
positive_int "$RUNS" --runs
positive_int "$R" --r
bench_paths
require_fuse
require_ckptfs
require_numpy
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null ||
	die "/usr/bin/time missing (apt-get install time)"
bench_work
ensure_model
build_reader
ADAPTER=$CACHE_DIR/$PRESET-lora-r$R
if [ ! -e "$ADAPTER/adapter_model.safetensors" ]; then
	echo "generating a rank-$R adapter into $ADAPTER (once)..." >&2
	"$PYTHON" "$TOP/tests/gen_lora.py" adapter "$MODEL_DIR" "$ADAPTER.partial" \
		--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --r "$R" --alpha $((2 * R)) ||
		die "gen_lora.py failed"
	mv "$ADAPTER.partial" "$ADAPTER"
fi
OUTDIR=$CACHE_DIR/bench-lora-out
CLEANUP_DIRS+=("$OUTDIR")

mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }

# read_view NAME OPTS VIEW: mount with OPTS (fresh), read every file of
# VIEW; sets T_MOUNT (start to mounted), T_READ, T_ALL, T_UMOUNT (the
# unmount, until the daemon exits), BYTES, ANON (peak RssAnon in kB,
# sampled every 20 ms).
read_view() {
	local name=$1 opts=$2 view=$3 t0 t1 t2 files
	t0=$(now)
	# shellcheck disable=SC2086
	mount_fs "$name" "$CKPTFS" -f $opts "$MODEL_DIR" "$WORK/$name"
	stat "$MNT/README" >/dev/null
	t1=$(now)
	anon_start
	mapfile -t files < <(view_files "$MNT/$view")
	read_gbs "$MNT/$view" "${files[@]}"
	t2=$(now)
	anon_stop
	cp "$MNT/.ckptfs/stats" "$WORK/stats.json" 2>/dev/null || : >"$WORK/stats.json"
	local u0
	u0=$(now)
	umount_fs
	T_UMOUNT=$(elapsed "$u0" "$(now)")
	BYTES=$LAST_BYTES
	T_MOUNT=$(elapsed "$t0" "$t1")
	T_READ=$(elapsed "$t1" "$t2")
	T_ALL=$(elapsed "$t0" "$t2")
	ANON=$ANON_PEAK
}

LORA="-o lora=$ADAPTER,cache_dir=none"
echo "bench-lora: $MODEL_DIR ($(du -sh "$MODEL_DIR" | cut -f1)), adapter r=$R ($(du -sh "$ADAPTER" | cut -f1)), $(nproc) CPUs, $RUNS runs"
echo "$("$CKPTFS" --version | grep '^BLAS')"
echo "load at start:$(uptime | sed 's/.*load average://')"

echo "-- 1. mount time"
MB='' ML=''
for _ in $(seq "$RUNS"); do
	read_view base "-o cache_dir=none" .ckptfs >/dev/null
	MB=$(least "$MB" "$T_MOUNT")
	read_view lora "$LORA" .ckptfs >/dev/null
	ML=$(least "$ML" "$T_MOUNT")
done
echo "mount with the adapter: $(fmts "$ML")  (base alone: $(fmts "$MB"))"

echo "-- 2. first read of hf@bf16/ through a fresh mount"
GB='' GL=''
for _ in $(seq "$RUNS"); do
	read_view base "-o cache_dir=none" hf@bf16
	GB=$(best "$GB" "$GBS")
	read_view lora "$LORA" hf@bf16
	GL=$(best "$GL" "$GBS")
done
r2=$(ratio "$GL" "$GB")
echo "merged hf@bf16/: $(fmt "$GL")  (base hf@bf16/: $(fmt "$GB"); ratio $r2, target >= 0.5: $(verdict "$r2" 0.5))"

echo "-- 3. the numpy merge script against a mount"
SCRIPT=$WORK/merge-numpy.py
cat >"$SCRIPT" <<'EOF'
# Load the base and the adapter whole, W += s * B @ A in fp32, round to
# bf16 (nearest even), write one model.safetensors: what a merge script does.
import json, os, struct, sys
import numpy as np

def load(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            data = fh.read()
        n = struct.unpack("<Q", data[:8])[0]
        h = json.loads(data[8:8 + n])
        for k, v in h.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            raw = np.frombuffer(data, np.uint8, e - b, 8 + n + b)
            dt = {"BF16": np.uint16, "F32": np.float32, "F16": np.float16}[v["dtype"]]
            out[k] = (v["dtype"], raw.view(dt).reshape(v["shape"]))
    return out

def f32(dt, a):
    return (a.astype(np.uint32) << 16).view(np.float32) if dt == "BF16" else a.astype(np.float32)

def bf16(x):
    u = x.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

base, ad = load(sys.argv[1]), load(sys.argv[2])
cfg = json.load(open(os.path.join(sys.argv[2], "adapter_config.json")))
s = np.float32(cfg["lora_alpha"] / cfg["r"])
pre = "base_model.model."
for k in list(ad):
    if k.endswith(".lora_A.weight"):
        m = k[len(pre):-len(".lora_A.weight")]
        A = f32(*ad[k])
        B = f32(*ad[pre + m + ".lora_B.weight"])
        dt, w = base[m + ".weight"]
        base[m + ".weight"] = ("BF16", bf16(f32(dt, w) + s * (B @ A)))
hdr, off = {"__metadata__": {"format": "pt"}}, 0
names = sorted(base)
for k in names:
    dt, a = base[k]
    hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
    off += a.nbytes
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
os.makedirs(sys.argv[3], exist_ok=True)
with open(os.path.join(sys.argv[3], "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for k in names:
        f.write(base[k][1].tobytes())
EOF
ratios=() mems=() ST='' SR=0 CT='' CA=0
for _ in $(seq "$RUNS"); do
	rm -rf "$OUTDIR"
	/usr/bin/time -v -o "$WORK/time.txt" "$PYTHON" "$SCRIPT" "$MODEL_DIR" "$ADAPTER" "$OUTDIR" ||
		die "the numpy merge script failed"
	st=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$WORK/time.txt")
	sr=$(awk -F': ' '/Maximum resident/ { print $2 }' "$WORK/time.txt")
	rm -rf "$OUTDIR"
	read_view lora "$LORA" hf@bf16
	ratios+=("$(awk -v a="$T_ALL" -v b="$st" 'BEGIN { printf "%.4f", a / b }')")
	mems+=("$(awk -v a="$ANON" -v b="$sr" 'BEGIN { printf "%.4f", a / b }')")
	ST=$(least "$ST" "$st")
	CT=$(least "$CT" "$T_ALL")
	[ "$sr" -gt "$SR" ] && SR=$sr
	[ "$ANON" -gt "$CA" ] && CA=$ANON
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
tr=$(median "${ratios[@]}")
mr=$(median "${mems[@]}")
echo "numpy merge script: $(fmts "$ST"), peak RSS $(mib "$SR"), extra disk $(gb "$BYTES")"
echo "ckptfs, start to all of merged hf@bf16/ read ($(gb "$BYTES")): $(fmts "$CT"), daemon peak RssAnon $(mib "$CA"), extra disk 0"
echo "  time ratio ckptfs/script (median of pairs) $tr, target <= 0.33: $(awk -v a="$tr" 'BEGIN { print (a <= 0.3334) ? "met" : "NOT met" }')"
echo "  memory ratio peak RssAnon/script RSS (median) $mr, target <= 0.1: $(awk -v a="$mr" 'BEGIN { print (a <= 0.1) ? "met" : "NOT met" }')"

echo "-- 4. the disk cache (default policy)"
# disk_counts: the cache counters of the last read_view's mount, on one line.
disk_counts() {
	"$PYTHON" -c 'import json, sys
try:
    c = json.load(open(sys.argv[1]))["cache"]
except (OSError, ValueError, KeyError):
    sys.exit(0)
d = c["disk"]
print("computed %d chunks, written %d, skipped by policy %d, dropped %d, pending %d, writer trials %d, writer CPU %.2f s, disk hits %d (ranges %d)"
      % (c["computed_chunks"], d["written"], d["skipped_by_policy"], d["dropped"], d["pending"], d.get("trials", 0),
         d.get("writer_cpu_seconds", 0), d["hits"], d["range_hits"]))' "$WORK/stats.json"
}
W1='' W2='' C1='' C2=''
for _ in $(seq "$RUNS"); do
	rm -rf "$WORK/cache"
	read_view lora "-o lora=$ADAPTER,cache_dir=$WORK/cache" hf@bf16
	W1=$(best "$W1" "$GBS")
	C1=$(disk_counts)
	U1=$T_UMOUNT
	R1=$T_READ
	read_view lora "-o lora=$ADAPTER,cache_dir=$WORK/cache" hf@bf16
	W2=$(best "$W2" "$GBS")
	C2=$(disk_counts)
done
r4=$(ratio "$W2" "$W1")
r5=$(ratio "$W1" "$GB")
echo "second mount, disk tier warm: $(fmt "$W2")  (first mount: $(fmt "$W1"); ratio $r4, target >= 2: $(verdict "$r4" 2)); cache $(du -sh "$WORK/cache" | cut -f1)"
echo "first mount with the disk tier (what a user gets by default) against the base's hf@bf16/ of section 2: ratio $r5, target >= 0.5: $(verdict "$r5" 0.5)"
echo "  last first mount: $C1 (during a read of $(fmts "$R1"), on $(nproc) CPUs); its unmount (the writer names what it holds once on disk) $(fmts "$U1")"
echo "  last second mount: $C2"
echo "load at end:$(uptime | sed 's/.*load average://')"
