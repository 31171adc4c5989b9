#!/bin/bash
# bench-native.sh: the native/ view (concat of k,v and gate,up) and the
# fp32 cast view: engine speed in-process, speed through a mount, and
# the numpy conversion script that people run today.
#
# Usage: bench/bench-native.sh [--model-dir DIR] [--ckptfs PATH]
#                              [--cache-dir DIR] [--runs N] [--no-fp32-script]
#
# Run as root (or a user who may mount FUSE filesystems) from the top of
# a built tree. Shares bench-read.sh's cache dir,
# ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench: the llama-1b model
# (generated there with examples/gen-model.py llama-1b if missing), and
# the 1 MiB reader bin/readall (built by this script too if missing).
# Builds bin/membound there (mmap + memcpy, the memcpy bound) and writes
# the numpy conversion script to bin/convert-numpy.py.
#
# Every figure is the best of N runs (default 3), printed beside its
# baseline measured in the same run on the same files; GB = 10^9 bytes.
#  1. engine alone, in-process, no FUSE (source page cache warm):
#       membound        mmap the source, memcpy it into an 8 MiB buffer:
#                       a fresh mapping (page faults included, as any
#                       process that maps the source pays them) and the
#                       same mapping again (the true memcpy bound)
#       ckptfs cat hf/model.safetensors > /dev/null: the memcpy-bound
#                       baseline (a passthrough file is a memcpy from the
#                       mapped source), against it ckptfs cat of
#                       native/model.safetensors and of
#                       hf@fp32/model.safetensors (output GB/s; the bytes
#                       double, so the ratio is of throughputs)
#       ckptfs export native/ into a tmpfs dir (deleted after each run),
#                       beside dd bs=8M of the source into the same tmpfs
#  2. through a mount (a fresh mount each run: cold view cache, source
#     page cache warm): first read of native/model.safetensors and of
#     hf@fp32/model.safetensors with the 1 MiB reader, then a re-read in
#     the same mount; against the source read the same way, cat of the
#     source and the in-process figures.
#  3. the conversion people run today: a numpy script that loads the
#     whole HF checkpoint into memory, builds the native layout (renames,
#     concat k,v and gate,up) and writes native model.safetensors into a
#     dir on the cache's filesystem: wall time, peak RSS (/usr/bin/time
#     -v), extra disk; and its fp32 variant (hf layout cast to fp32).
#     Against it: ckptfs from start to having read all of native/
#     (hf@fp32/) through a fresh mount, the daemon's VmHWM and RssAnon
#     right after (VmHWM counts the mapped source pages; RssAnon is the
#     daemon's own memory), and its peak RssAnon sampled during one more
#     read; extra disk 0. The script's output is checked once against the
#     view (same tensor data, byte for byte).
# Targets: native/ first read >= 0.5x the memcpy-bound baseline (ckptfs
# cat hf/); >= 5x faster than the script at <= 1/10 of its peak memory;
# daemon RSS < 256 MiB.
#
# Everything this script mounts is unmounted on exit, and every temp file
# is removed, even on failure.

set -u

BENCH_NAME=bench-native
USAGE_LINES=2,6
. "$(dirname "$0")/lib.sh" || exit 1

RUNS=3
FP32_SCRIPT=1
BENCH_OPTS="$BENCH_OPTS --runs=RUNS"
BENCH_FLAGS="$BENCH_FLAGS --no-fp32-script=FP32_SCRIPT=0"
bench_args "$@"

positive_int "$RUNS" --runs
bench_paths

require_fuse
command -v cc >/dev/null || die "cc not found"
require_ckptfs
require_numpy
if [ ! -x /usr/bin/time ]; then
	echo "installing the time package (for /usr/bin/time -v)..." >&2
	{ apt-get install -y time >/dev/null 2>&1 ||
	  { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null 2>&1; }; } ||
		die "/usr/bin/time missing and apt-get install time failed"
fi
SHM_BASE=/dev/shm
[ -d "$SHM_BASE" ] && [ -w "$SHM_BASE" ] || die "$SHM_BASE: not a writable directory (tmpfs wanted for export)"

mkdir -p "$CACHE_DIR/bin" || die "$CACHE_DIR: cannot create"
bench_work
SHM=$(mktemp -d "$SHM_BASE/ckptfs-bench-native.XXXXXX") || die "mktemp in $SHM_BASE failed"
CLEANUP_DIRS+=("$SHM")
OUTDIR=$(mktemp -d "$CACHE_DIR/convert.XXXXXX") || die "mktemp in $CACHE_DIR failed"
CLEANUP_DIRS+=("$OUTDIR")
ensure_model

# The safetensors files of the source (one file, or the shards).
ST_FILES=()
while IFS= read -r f; do
	ST_FILES+=("$f")
done < <(find "$MODEL_DIR"/ -mindepth 1 -maxdepth 1 -type f -name '*.safetensors' -printf '%f\n' | LC_ALL=C sort)
[ ${#ST_FILES[@]} -gt 0 ] || die "$MODEL_DIR: no .safetensors files"
[ -e "$MODEL_DIR/model.safetensors" ] ||
	die "$MODEL_DIR: sharded source; this benchmark reads model.safetensors of each view (use a single-file model)"

# ---------------------------------------------------------------------
# Helpers, built once in the cache dir.

build_reader

MEMBOUND=$CACHE_DIR/bin/membound
cat >"$WORK/membound.c" <<'EOF'
/* membound FILE: mmap FILE read-only and memcpy it, 8 MiB at a time (the
 * chunk of ckptfs cat/export), into one 8 MiB buffer, twice: first on the
 * fresh mapping (page faults included), then on the same mapping again
 * (the true memcpy bound). Prints: bytes seconds_fresh seconds_mapped. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (8u << 20)

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long pass(const unsigned char *src, size_t n, unsigned char *buf)
{
	unsigned long sum = 0;

	for (size_t off = 0; off < n; off += CHUNK) {
		size_t k = n - off < CHUNK ? n - off : CHUNK;

		memcpy(buf, src + off, k);
		sum += buf[k - 1]; /* the copy is used: not optimised away */
	}
	return sum;
}

int main(int argc, char **argv)
{
	struct stat st;
	unsigned char *buf;
	void *src;
	double t0, t1, t2;
	unsigned long s;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: membound FILE\n");
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0) {
		perror(argv[1]);
		return 1;
	}
	buf = malloc(CHUNK);
	if (!buf)
		return 1;
	memset(buf, 0, CHUNK);
	t0 = mono();
	src = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (src == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	s = pass(src, st.st_size, buf);
	t1 = mono();
	s += pass(src, st.st_size, buf);
	t2 = mono();
	printf("%lld %.6f %.6f\n", (long long)st.st_size, t1 - t0, t2 - t1);
	fprintf(stderr, "(checksum %lu)\n", s);
	return 0;
}
EOF
if [ ! -x "$MEMBOUND" ] || ! cmp -s "$WORK/membound.c" "$CACHE_DIR/bin/membound.c"; then
	cc -O2 -Wall -o "$MEMBOUND" "$WORK/membound.c" || die "cannot build membound"
	cp "$WORK/membound.c" "$CACHE_DIR/bin/membound.c"
fi

# The conversion script people run today.
CONVERT=$CACHE_DIR/bin/convert-numpy.py
cat >"$CONVERT" <<'EOF'
#!/usr/bin/env python3
"""convert-numpy.py SRC_DIR OUT_FILE native|fp32

What people run today instead of a view: load the whole HF safetensors
checkpoint into memory as numpy arrays, build the new state dict, write
it out as one safetensors file.
  native  LLaMA native fused layout: renames, attn.kv = concat(k, v),
          mlp.gate_up = concat(gate, up) along dim 0
  fp32    the HF layout with every floating tensor cast to float32
          (BF16 widened exactly; F16 converted by numpy)
"""
import json
import os
import re
import sys

import numpy as np

# numpy has no bfloat16: BF16 is carried as uint16 bits.
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
          "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
          "BOOL": np.bool_}
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
         "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def load_file(path, out):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        base = 8 + n
        for name, info in header.items():
            begin, end = info["data_offsets"]
            dt = DTYPES[info["dtype"]]
            f.seek(base + begin)
            a = np.fromfile(f, dtype=dt, count=(end - begin) // np.dtype(dt).itemsize)
            out[name] = (info["dtype"], a.reshape(info["shape"]))


def load(src):
    tensors = {}
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        load_file(os.path.join(src, fn), tensors)
    return tensors


RENAMES = [
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"layers.\1.attn_norm.weight"),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", r"layers.\1.attn.q.\2"),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"layers.\1.attn.o.weight"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"layers.\1.mlp_norm.weight"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"layers.\1.mlp.down.weight"),
    (r"model\.norm\.weight", "final_norm.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
]
CONCATS = [
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)", (".k_proj.", ".v_proj."), r"layers.\1.attn.kv.\2"),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", (".gate_proj.", ".up_proj."), r"layers.\1.mlp.gate_up.weight"),
]


def to_native(sd):
    out = {}
    for name, (dt, a) in sd.items():
        for pat, rep in RENAMES:
            if re.fullmatch(pat, name):
                out[re.sub(pat, rep, name)] = (dt, a)
                break
        else:
            for pat, (first, other), rep in CONCATS:
                if re.fullmatch(pat, name):
                    second = name.replace(first, other)
                    dt2, b = sd[second]
                    assert dt2 == dt, name
                    out[re.sub(pat, rep, name)] = (dt, np.concatenate([a, b], axis=0))
                    break
            else:
                if not re.search(r"\.(v_proj|up_proj)\.", name):
                    raise SystemExit("convert-numpy: no rule for tensor " + name)
    return out


def to_fp32(sd):
    out = {}
    for name, (dt, a) in sd.items():
        if dt == "BF16":
            out[name] = ("F32", (a.astype(np.uint32) << 16).view(np.float32))
        elif dt in ("F16", "F64"):
            out[name] = ("F32", a.astype(np.float32))
        else:
            out[name] = (dt, a)
    return out


def save(path, sd, metadata):
    # The reference writer's order: descending dtype alignment, then name.
    names = sorted(sd, key=lambda k: (-SIZES[sd[k][0]], k))
    header = {"__metadata__": metadata}
    off = 0
    for k in names:
        dt, a = sd[k]
        header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for k in names:
            np.ascontiguousarray(sd[k][1]).tofile(f)


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("native", "fp32"):
        raise SystemExit(__doc__)
    src, dst, mode = sys.argv[1:]
    sd = load(src)
    new = to_native(sd) if mode == "native" else to_fp32(sd)
    save(dst, new, {"format": "pt"})


main()
EOF

mib() { awk -v k="$1" 'BEGIN { printf "%d MiB", k / 1024 }'; }
verdict_le() { awk -v a="$1" -v t="$2" 'BEGIN { print (a <= t) ? "met" : "NOT met" }'; }

# view_size PATH: the size of a view file, from ckptfs ls.
view_size() {
	local dir=${1%/*} base=${1##*/}
	"$CKPTFS" ls "$MODEL_DIR" "$dir" | awk -v f="$base" '$2 == f { print $1 }'
}

# status_kb PID FIELD: a /proc/PID/status figure in kB.
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null; }

# data_start FILE: where a safetensors file's data starts (8 + header).
data_start() {
	local n
	n=$(od -An -t u8 -N 8 "$1" | tr -d ' ') || return 1
	echo $((8 + n))
}

# same_data A B: the data areas of two safetensors files are equal.
same_data() {
	local a b sa sb
	a=$(data_start "$1") && b=$(data_start "$2") || return 1
	sa=$(stat -c %s "$1") && sb=$(stat -c %s "$2") || return 1
	[ $((sa - a)) = $((sb - b)) ] || return 1
	cmp -s -i "$a:$b" "$1" "$2"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------
# Baselines: the source, page cache warm; membound.

SRC_FILE=$MODEL_DIR/model.safetensors
SRC_BYTES=$(stat -c %s "$SRC_FILE")
"$READER" "$SRC_FILE" >/dev/null || die "reading $SRC_FILE failed"
SRC=0 CAT=0
for _ in $(seq "$RUNS"); do
	read_gbs "$MODEL_DIR" model.safetensors
	SRC=$(best "$SRC" "$GBS")
	t0=$(now)
	cat "$SRC_FILE" >/dev/null || die "cat $SRC_FILE failed"
	t1=$(now)
	CAT=$(best "$CAT" "$(gbs "$SRC_BYTES" "$(elapsed "$t0" "$t1")")")
done

MB_FRESH=0 MB_MAPPED=0
for _ in $(seq "$RUNS"); do
	read -r mb_n mb_fresh mb_mapped < <("$MEMBOUND" "$SRC_FILE" 2>/dev/null)
	[ -n "$mb_mapped" ] || die "membound failed"
	MB_FRESH=$(best "$MB_FRESH" "$(gbs "$mb_n" "$mb_fresh")")
	MB_MAPPED=$(best "$MB_MAPPED" "$(gbs "$mb_n" "$mb_mapped")")
done

# ---------------------------------------------------------------------
# 1. The engine alone: ckptfs cat and export.

NATIVE_BYTES=$(view_size native/model.safetensors)
FP32_BYTES=$(view_size hf@fp32/model.safetensors)
HF_BYTES=$(view_size hf/model.safetensors)
[ -n "$NATIVE_BYTES" ] && [ -n "$FP32_BYTES" ] && [ -n "$HF_BYTES" ] ||
	die "ckptfs ls does not show native/, hf@fp32/ or hf/ model.safetensors"

# cat_gbs PATH BYTES: best GB/s of ckptfs cat PATH > /dev/null.
cat_gbs() {
	local b=0 t0 t1
	for _ in $(seq "$RUNS"); do
		t0=$(now)
		"$CKPTFS" cat "$MODEL_DIR" "$1" >/dev/null || die "ckptfs cat $1 failed"
		t1=$(now)
		b=$(best "$b" "$(gbs "$2" "$(elapsed "$t0" "$t1")")")
	done
	echo "$b"
}
CAT_HF=$(cat_gbs hf/model.safetensors "$HF_BYTES")
CAT_NATIVE=$(cat_gbs native/model.safetensors "$NATIVE_BYTES")
CAT_FP32=$(cat_gbs hf@fp32/model.safetensors "$FP32_BYTES")

EXPORT=0 DD_SHM=0 EXPORT_BYTES=0
for _ in $(seq "$RUNS"); do
	t0=$(now)
	dd if="$SRC_FILE" of="$SHM/source-copy" bs=8M 2>/dev/null || die "dd into $SHM failed"
	t1=$(now)
	rm -f "$SHM/source-copy"
	DD_SHM=$(best "$DD_SHM" "$(gbs "$SRC_BYTES" "$(elapsed "$t0" "$t1")")")
	mkdir "$SHM/export" || die "mkdir $SHM/export failed"
	t0=$(now)
	out=$("$CKPTFS" export "$MODEL_DIR" native/ "$SHM/export" 2>"$WORK/export.stderr") ||
		{ cat "$WORK/export.stderr" >&2; die "ckptfs export native/ failed"; }
	t1=$(now)
	rm -rf "$SHM/export"
	EXPORT_BYTES=$(echo "$out" | sed -n 's/^exported [0-9]* files\{0,1\}, \([0-9]*\) bytes.*/\1/p')
	[ -n "$EXPORT_BYTES" ] || die "cannot parse ckptfs export's output: $out"
	EXPORT=$(best "$EXPORT" "$(gbs "$EXPORT_BYTES" "$(elapsed "$t0" "$t1")")")
done

echo "model: $MODEL_DIR (model.safetensors $(gb "$SRC_BYTES")); best of $RUNS runs; GB = 10^9 bytes; load average at start: $LOAD0 ($(nproc) CPUs)"
echo "source read (page cache warm, 1 MiB reads): $(fmt "$SRC")  (cat of the source: $(fmt "$CAT"))"
echo "-- 1. engine alone, in-process, no FUSE"
echo "memcpy bound (membound: mmap + memcpy 8 MiB chunks), already-mapped source: $(fmt "$MB_MAPPED")  (fresh mapping, page faults included: $(fmt "$MB_FRESH"))"
echo "ckptfs cat hf/model.safetensors (memcpy-bound baseline): $(fmt "$CAT_HF")  (membound fresh mapping: $(fmt "$MB_FRESH"), ratio $(ratio "$CAT_HF" "$MB_FRESH"); already mapped: $(fmt "$MB_MAPPED"), ratio $(ratio "$CAT_HF" "$MB_MAPPED"))"
echo "ckptfs cat native/model.safetensors: $(fmt "$CAT_NATIVE")  (cat hf/: $(fmt "$CAT_HF"), ratio $(ratio "$CAT_NATIVE" "$CAT_HF"); membound already mapped: ratio $(ratio "$CAT_NATIVE" "$MB_MAPPED"))"
echo "ckptfs cat hf@fp32/model.safetensors ($(gb "$FP32_BYTES") out of $(gb "$HF_BYTES")), output: $(fmt "$CAT_FP32")  (cat hf/: $(fmt "$CAT_HF"), ratio of throughputs $(ratio "$CAT_FP32" "$CAT_HF"); source bytes consumed at $(fmt "$(awk -v a="$CAT_FP32" -v n="$HF_BYTES" -v m="$FP32_BYTES" 'BEGIN { print a * n / m }')"))"
echo "ckptfs export native/ into tmpfs ($(gb "$EXPORT_BYTES")): $(fmt "$EXPORT")  (dd bs=8M of the source into the same tmpfs: $(fmt "$DD_SHM"), ratio $(ratio "$EXPORT" "$DD_SHM"); cat native/ to /dev/null: $(fmt "$CAT_NATIVE"), ratio $(ratio "$EXPORT" "$CAT_NATIVE"))"

# ---------------------------------------------------------------------
# 2. Through a mount: fresh mount each run, first read then re-read.

N_FIRST=0 N_RE=0 F_FIRST=0 F_RE=0
for run in $(seq "$RUNS"); do
	mount_fs ckptfs "$CKPTFS" -f "$MODEL_DIR" "$WORK/ckptfs"
	read_gbs "$MNT/native" model.safetensors
	[ "$LAST_BYTES" = "$NATIVE_BYTES" ] || die "native/model.safetensors: read $LAST_BYTES bytes, ckptfs ls says $NATIVE_BYTES"
	N_FIRST=$(best "$N_FIRST" "$GBS")
	read_gbs "$MNT/native" model.safetensors
	N_RE=$(best "$N_RE" "$GBS")
	read_gbs "$MNT/hf@fp32" model.safetensors
	[ "$LAST_BYTES" = "$FP32_BYTES" ] || die "hf@fp32/model.safetensors: read $LAST_BYTES bytes, ckptfs ls says $FP32_BYTES"
	F_FIRST=$(best "$F_FIRST" "$GBS")
	read_gbs "$MNT/hf@fp32" model.safetensors
	F_RE=$(best "$F_RE" "$GBS")
	if [ "$run" = 1 ]; then
		# A fast wrong answer is no answer: the mount must give what cat gives.
		"$CKPTFS" cat "$MODEL_DIR" native/model.safetensors | cmp -s - "$MNT/native/model.safetensors" ||
			die "native/model.safetensors through the mount differs from ckptfs cat"
	fi
	umount_fs
done

echo "-- 2. through a mount (fresh mount each run; 1 MiB reads)"
echo "native/model.safetensors first read: $(fmt "$N_FIRST")  (in-process cat native/: $(fmt "$CAT_NATIVE"), ratio $(ratio "$N_FIRST" "$CAT_NATIVE"); memcpy-bound baseline cat hf/: $(fmt "$CAT_HF"), ratio $(ratio "$N_FIRST" "$CAT_HF"), target >= 0.5: $(verdict "$(ratio "$N_FIRST" "$CAT_HF")" 0.5); membound already mapped: $(fmt "$MB_MAPPED"), ratio $(ratio "$N_FIRST" "$MB_MAPPED"); source: $(fmt "$SRC"), ratio $(ratio "$N_FIRST" "$SRC"); cat source: $(fmt "$CAT"), ratio $(ratio "$N_FIRST" "$CAT"))"
echo "native/model.safetensors re-read: $(fmt "$N_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$N_RE" "$SRC"); cat source: $(fmt "$CAT"), ratio $(ratio "$N_RE" "$CAT"))"
echo "hf@fp32/model.safetensors first read, output: $(fmt "$F_FIRST")  (in-process cat hf@fp32/: $(fmt "$CAT_FP32"), ratio $(ratio "$F_FIRST" "$CAT_FP32"); cat hf/: $(fmt "$CAT_HF"), ratio $(ratio "$F_FIRST" "$CAT_HF"); source: $(fmt "$SRC"), ratio $(ratio "$F_FIRST" "$SRC"); cat source: $(fmt "$CAT"), ratio $(ratio "$F_FIRST" "$CAT"))"
echo "hf@fp32/model.safetensors re-read: $(fmt "$F_RE")  (source: $(fmt "$SRC"), ratio $(ratio "$F_RE" "$SRC"); cat source: $(fmt "$CAT"), ratio $(ratio "$F_RE" "$CAT"))"

# ---------------------------------------------------------------------
# 3. The conversion script against ckptfs.

# script_run MODE: best wall time and peak RSS of the numpy script over
# RUNS runs (sets S_TIME, S_RSS, S_DISK); checks its output once against
# VIEW (native or hf@fp32) through a mount.
script_run() {
	local mode=$1 view=$2 out=$OUTDIR/model.safetensors t0 t1 rss
	S_TIME='' S_RSS='' S_DISK=''
	for run in $(seq "$RUNS"); do
		rm -f "$out"
		t0=$(now)
		/usr/bin/time -v -o "$WORK/time.txt" "$PYTHON" "$CONVERT" "$MODEL_DIR" "$out" "$mode" ||
			die "convert-numpy.py $mode failed"
		t1=$(now)
		S_TIME=$(least "$S_TIME" "$(elapsed "$t0" "$t1")")
		rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.txt")
		[ -n "$rss" ] || die "no peak RSS from /usr/bin/time -v"
		S_RSS=$(least "$S_RSS" "$rss")
		S_DISK=$(stat -c %s "$out")
		if [ "$run" = 1 ]; then
			mount_fs ckptfs "$CKPTFS" -f "$MODEL_DIR" "$WORK/ckptfs"
			same_data "$out" "$MNT/$view/model.safetensors" ||
				die "convert-numpy.py $mode: tensor data differs from $view/model.safetensors"
			umount_fs
		fi
		rm -f "$out"
	done
}

# ckptfs_run VIEW: best time from starting ckptfs to having read every
# file of VIEW through a fresh mount (C_TIME; C_READ the read alone),
# and the daemon's VmHWM and RssAnon right after (C_HWM, C_ANON: the
# largest seen); C_BYTES the bytes read.
ckptfs_run() {
	local view=$1 t0 t1 t2 h
	C_TIME='' C_READ='' C_HWM=0 C_ANON=0
	for _ in $(seq "$RUNS"); do
		t0=$(now)
		mount_fs ckptfs "$CKPTFS" -f "$MODEL_DIR" "$WORK/ckptfs"
		t1=$(now)
		read_view_gbs "$MNT/$view"
		t2=$(now)
		C_BYTES=$LAST_BYTES
		h=$(status_kb "$MNT_PID" VmHWM)
		[ -n "$h" ] && [ "$h" -gt "$C_HWM" ] && C_HWM=$h
		h=$(status_kb "$MNT_PID" RssAnon)
		[ -n "$h" ] && [ "$h" -gt "$C_ANON" ] && C_ANON=$h
		umount_fs
		C_TIME=$(least "$C_TIME" "$(elapsed "$t0" "$t2")")
		C_READ=$(least "$C_READ" "$(elapsed "$t1" "$t2")")
	done
}

# peak_anon VIEW: peak RssAnon of the daemon (kB) while every file of
# VIEW is read through a fresh mount, sampled every 20 ms (an extra,
# untimed run: the sampling costs CPU).
peak_anon() {
	mount_fs ckptfs "$CKPTFS" -f "$MODEL_DIR" "$WORK/ckptfs"
	anon_start
	read_view_gbs "$MNT/$1"
	anon_stop
	umount_fs
	echo "$ANON_PEAK"
}

report3() {
	local what=$1 view=$2 speed mem
	speed=$(ratio "$S_TIME" "$C_TIME")
	mem=$(awk -v a="$C_ANON" -v p="$C_PEAK" -v b="$S_RSS" 'BEGIN { printf "%.4f", ((p > a) ? p : a) / b }')
	echo "numpy script ($what): $(fmts "$S_TIME"), peak RSS $(mib "$S_RSS"), extra disk $(gb "$S_DISK")"
	echo "ckptfs, start to all of $view/ read ($(gb "$C_BYTES")) through a fresh mount: $(fmts "$C_TIME") (read alone $(fmts "$C_READ")), extra disk 0  (script: $(fmts "$S_TIME"); speedup $speed x, target >= 5: $(verdict "$speed" 5))"
	echo "ckptfs daemon memory after reading $view/: RssAnon $(mib "$C_ANON"), peak RssAnon while reading $(mib "$C_PEAK"), VmHWM $(mib "$C_HWM") (VmHWM counts the mapped source pages)  (script peak RSS: $(mib "$S_RSS"); peak RssAnon / script peak RSS = $mem = 1/$(awk -v m="$mem" 'BEGIN { printf "%.0f", (m > 0) ? 1 / m : 0 }'), target <= 1/10: $(verdict_le "$mem" 0.1); peak RssAnon < 256 MiB: $(verdict_le "$C_PEAK" 262143); RssAnon < 256 MiB: $(verdict_le "$C_ANON" 262143); VmHWM < 256 MiB: $(verdict_le "$C_HWM" 262143))"
}

echo "-- 3. the numpy conversion script against a mount (script output in $(dirname "$OUTDIR"), $(df -PT "$OUTDIR" | awk 'NR == 2 { print $2 }'))"
script_run native native
ckptfs_run native
C_PEAK=$(peak_anon native)
report3 "load, native layout, write" native

if [ "$FP32_SCRIPT" = 1 ]; then
	script_run fp32 hf@fp32
	ckptfs_run hf@fp32
	C_PEAK=$(peak_anon hf@fp32)
	report3 "load, cast to fp32, write" hf@fp32
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
