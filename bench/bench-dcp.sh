#!/bin/bash
# bench-dcp.sh: a torch DCP step directory (4 ranks x 2 pipeline stages) as a
# source: mount time, first read of hf@bf16/, and the conversion people run.
#
# Usage: bench/bench-dcp.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR]
#                           [--preset NAME] [--runs N]
#
# Run as root (or a user who may mount FUSE filesystems) from the top of a
# built tree. In the cache dir (${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench)
# the model (llama-1b by default, from examples/gen-model.py) is written once
# as DCP by tests/dcp_fixtures.py (kind pp: pp0/ and pp1/, 4 ranks each, a TP
# x FSDP grid for row-parallel weights) into PRESET-dcp/.
#
# Every figure is the best of N runs (default 3) beside its baseline from
# the same run; GB = 10^9 bytes; the source page cache is warm for both sides.
#  1. mount time: from starting the daemon to the mount answering stat
#     (target < 200 ms).
#  2. first read through a fresh mount of every file of hf@bf16/ with the
#     1 MiB reader, against reading every .distcp file the same way
#     (target >= 0.9x); beside it, the same read of hf/ of the safetensors
#     model itself (a passthrough: the FUSE transport bound of this machine).
#  3. the conversion people run: a numpy script that unpickles each stage's
#     .metadata, reads every chunk's item, assembles whole tensors in memory
#     and writes model.safetensors (what loading every stage into a model and
#     saving does): wall time and peak RSS (/usr/bin/time -v); against it
#     ckptfs from start to having read all of hf/ through a fresh mount and
#     the daemon's peak RssAnon sampled during that read
#     (targets <= 1/5 of the time, <= 1/10 of the memory).
#
# Everything mounted is unmounted on exit and temp files are removed.

set -u

BENCH_NAME=bench-dcp
USAGE_LINES=4,6
. "$(dirname "$0")/lib.sh" || exit 1

RUNS=3
BENCH_OPTS="$BENCH_OPTS --runs=RUNS --preset=PRESET"
bench_args "$@"
positive_int "$RUNS" --runs
bench_paths
require_fuse
require_ckptfs
require_numpy
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"

mkdir -p "$CACHE_DIR/bin" || die "$CACHE_DIR: cannot create"
bench_work
OUTDIR=$(mktemp -d "$CACHE_DIR/convert-dcp.XXXXXX") || die "mktemp in $CACHE_DIR failed"
CLEANUP_DIRS+=("$OUTDIR")
ensure_model
build_reader

DCP=$CACHE_DIR/$PRESET-dcp
if [ ! -e "$DCP/pp1/.metadata" ]; then
	echo "writing $PRESET as DCP into $DCP (once)..." >&2
	rm -rf "$DCP.partial"
	"$PYTHON" "$TOP/tests/dcp_fixtures.py" write pp "$MODEL_DIR" "$DCP.partial" >&2 || die "dcp_fixtures.py failed"
	mv "$DCP.partial" "$DCP" || die "cannot move $DCP.partial"
fi
DISTCP=()
while IFS= read -r f; do DISTCP+=("$f"); done < <(cd "$DCP" && find pp* -name '*.distcp' | LC_ALL=C sort)

CONVERT=$CACHE_DIR/bin/convert-dcp-numpy.py
cat >"$CONVERT" <<'EOF'
# convert-dcp-numpy.py TESTS_DIR DCP_DIR OUT: every stage's .metadata
# unpickled (stand-in classes), every chunk read and placed, whole tensors
# in memory, then OUT/model.safetensors written.
import io, json, os, struct, sys, zipfile
import numpy as np
sys.path.insert(0, sys.argv[1])
import dcp_fixtures as fx
NP = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "int64": np.int64}
ST = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64"}
state = {}
for stage in sorted(d for d in os.listdir(sys.argv[2]) if d.startswith("pp")):
    d = os.path.join(sys.argv[2], stage)
    meta = fx.StandinUnpickler(open(os.path.join(d, ".metadata"), "rb")).load().state
    infos = {(k.state["fqn"], tuple(k.state["offset"]) if k.state["offset"] is not None else None): v.state
             for k, v in meta["storage_data"].items()}
    for fqn, tsm in meta["state_dict_metadata"].items():
        if not fqn.startswith("model.") or not hasattr(tsm, "state") or "chunks" not in tsm.state:
            continue
        s = tsm.state
        dt = s["properties"].state[0][1]
        full = np.empty(tuple(s["size"]), dtype=NP[dt])
        for c in s["chunks"]:
            off, size = tuple(c.state["offsets"]), tuple(c.state["sizes"])
            if 0 in size:
                continue
            info = infos[(fqn, off)]
            with open(os.path.join(d, info["relative_path"]), "rb") as fh:
                fh.seek(info["offset"])
                z = zipfile.ZipFile(io.BytesIO(fh.read(info["length"])))
            rec = [n for n in z.namelist() if n.endswith("/data/0")][0]
            full[tuple(slice(o, o + n) for o, n in zip(off, size))] = np.frombuffer(z.read(rec), NP[dt]).reshape(size)
        state[fqn[len("model."):]] = (ST[dt], full)
hdr, pos = {}, 0
names = sorted(state)
for n in names:
    dt, a = state[n]
    hdr[n] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [pos, pos + a.nbytes]}
    pos += a.nbytes
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(sys.argv[3], "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for n in names:
        f.write(state[n][1].tobytes())
EOF

echo "bench-dcp: $PRESET as DCP, ${#DISTCP[@]} shard files in 2 stages, best of $RUNS"

# 1. mount time
best_mount=
for _ in $(seq "$RUNS"); do
	t0=$(now)
	mount_fs ckptfs "$CKPTFS" -f -o cache=off "$DCP" "$WORK/ckptfs"
	stat "$MNT/hf@bf16" >/dev/null || die "stat failed"
	t1=$(now)
	umount_fs
	best_mount=$(least "$best_mount" "$(elapsed "$t0" "$t1")")
done
echo "mount time:            $(awk -v s="$best_mount" 'BEGIN { printf "%.0f ms", s * 1000 }')  (target < 200 ms)"

# 2. first read of hf@bf16/ against reading the .distcp files
base=0 view=0 pass=0
for _ in $(seq "$RUNS"); do
	mount_fs ckptfs "$CKPTFS" -f -o cache=off "$MODEL_DIR" "$WORK/ckptfs"
	read_view_gbs "$MNT/hf"
	pass=$(best "$pass" "$GBS")
	umount_fs
	read_gbs "$DCP" "${DISTCP[@]}"
	base=$(best "$base" "$GBS")
	mount_fs ckptfs "$CKPTFS" -f -o cache=off "$DCP" "$WORK/ckptfs"
	read_view_gbs "$MNT/hf@bf16"
	view=$(best "$view" "$GBS")
	umount_fs
done
r=$(ratio "$view" "$base")
echo "first read hf@bf16/:   $(fmt "$view") vs the .distcp files $(fmt "$base"): ${r}x ($(verdict "$r" 0.9) >= 0.9x)"
echo "                       hf/ of the safetensors model (passthrough) $(fmt "$pass"): DCP at $(ratio "$view" "$pass")x of it"

# 3. the numpy conversion against a full read of hf/
conv_s='' conv_kb=0
for _ in $(seq "$RUNS"); do
	rm -f "$OUTDIR/model.safetensors"
	t0=$(now)
	/usr/bin/time -v "$PYTHON" "$CONVERT" "$TOP/tests" "$DCP" "$OUTDIR" 2>"$WORK/time.txt" >/dev/null ||
		{ cat "$WORK/time.txt" >&2; die "the conversion script failed"; }
	t1=$(now)
	conv_s=$(least "$conv_s" "$(elapsed "$t0" "$t1")")
	conv_kb=$(awk '/Maximum resident/ { print $NF }' "$WORK/time.txt")
done
conv_bytes=$(stat -c %s "$OUTDIR/model.safetensors")
ck_s='' ck_kb=0
for _ in $(seq "$RUNS"); do
	t0=$(now)
	mount_fs ckptfs "$CKPTFS" -f -o cache=off "$DCP" "$WORK/ckptfs"
	anon_start
	read_view_gbs "$MNT/hf"
	t1=$(now)
	anon_stop
	umount_fs
	ck_s=$(least "$ck_s" "$(elapsed "$t0" "$t1")")
	ck_kb=$(awk -v a="$ck_kb" -v b="${ANON_PEAK:-0}" 'BEGIN { print (b > a) ? b : a }')
done
echo "conversion (numpy):    $(fmts "$conv_s"), peak RSS $(awk -v k="$conv_kb" 'BEGIN { printf "%.0f MiB", k / 1024 }'), +$(gb "$conv_bytes") on disk"
echo "ckptfs hf/ (mount+read): $(fmts "$ck_s"), daemon peak RssAnon $(awk -v k="$ck_kb" 'BEGIN { printf "%.0f MiB", k / 1024 }'), +0 on disk"
echo "time ratio:            $(ratio "$ck_s" "$conv_s") of the script's (target <= 0.20); memory ratio $(ratio "$ck_kb" "$conv_kb") (target <= 0.10)"
