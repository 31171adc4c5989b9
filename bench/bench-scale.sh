#!/bin/bash
# bench-scale.sh: work per tensor and per JSON value (issue 16, parts 6 and 7).
#
# Usage: bench/bench-scale.sh [--ckptfs PATH] [--cache-dir DIR] [--tensors N] [--runs R]
#
# 1. Scaling with the tensor count: LLaMA-shaped checkpoints of N/10 and N
#    tiny tensors (default N = 100000; 8 shards and an index, made once by
#    bench/gen-many-tensors.py into CACHE_DIR/scale/). For each, through a
#    fresh mount (best of R, default 3): the time to list per-layer/,
#    tp-2/rank-0, native/ and hf/ (the first listing builds the view), and
#    to read every file of it. Baselines in the same run: `ckptfs inspect`
#    (opening the catalog: every header parsed, the floor of any mount)
#    and the time to mount. Each figure is printed with its ratio N vs N/10:
#    linear work gives ~10x, quadratic ~100x (target <= 20x).
# 2. Hostile JSON, refused (made once into CACHE_DIR/scale/): a 96 MB
#    safetensors header holding one 48-million-entry shape list, a 64 MB
#    index.json and a 64 MB config.json of 32 million zeros, and 32,000
#    zero-size tensors h.<i>.w with a gpt2 config. Wall time and peak RSS
#    of `ckptfs inspect` from /usr/bin/time, against the file's size and
#    the time to read it (target: peak RSS <= 2x the file + 64 MB); for
#    the 32,000 tensors, `ckptfs ls SRC per-layer` against `ckptfs inspect`
#    of the same source (target <= 3x).
#
# Everything mounted is unmounted on exit; temp dirs are removed.

set -u

BENCH_NAME=bench-scale
USAGE_LINES=2,4
. "$(dirname "$0")/lib.sh" || exit 1

CKPTFS=$TOP/src/ckptfs
NTENSORS=100000
RUNS=3
BENCH_OPTS="$BENCH_OPTS --tensors=NTENSORS --runs=RUNS"
bench_args "$@"
positive_int "$NTENSORS" --tensors
positive_int "$RUNS" --runs
bench_paths
require_fuse
require_ckptfs
[ -x /usr/bin/time ] || die "/usr/bin/time missing (apt-get install time)"
[ "$NTENSORS" -ge 1000 ] || die "--tensors wants at least 1000"

SCALE=$CACHE_DIR/scale
mkdir -p "$SCALE" || die "$SCALE: cannot create"
bench_work

# gen DIR CMD...: run CMD to make DIR once (into DIR.partial, then renamed)
gen() {
	local dir=$1
	shift
	[ -d "$dir" ] && return 0
	echo "generating $dir (once)..." >&2
	rm -rf "$dir.partial"
	"$@" "$dir.partial" >&2 || { rm -rf "$dir.partial"; die "generating $dir failed"; }
	mv "$dir.partial" "$dir" || die "cannot rename $dir.partial"
}

# secs CMD...: wall seconds of CMD, its output discarded (quieter than lib.sh's)
secs() {
	local t0 t1
	t0=$(now)
	"$@" >/dev/null 2>&1 || die "$* failed"
	t1=$(now)
	elapsed "$t0" "$t1"
}
ms() { awk -v s="$1" 'BEGIN { printf "%8.1f ms", s * 1000 }'; }

list_view() { ls -f "$1" >/dev/null && [ -d "$1" ]; }
read_view() { find "$1" -type f -exec cat {} + >/dev/null; }

# measure SRC: sets T_<what> (best of RUNS) for one source
measure() {
	local src=$1 r v t t0 t1
	T_inspect=
	T_mount=
	for v in per_layer tp2 native hf; do
		eval "T_list_$v= T_read_$v="
	done
	for r in $(seq "$RUNS"); do
		t=$(secs "$CKPTFS" inspect "$src")
		T_inspect=$(least "$T_inspect" "$t")
		for v in per_layer tp2 native hf; do
			case $v in
			per_layer) path=per-layer ;;
			tp2) path=tp-2/rank-0 ;;
			*) path=$v ;;
			esac
			t0=$(now)
			mount_fs mnt "$CKPTFS" -f -o cache=off "$src" "$WORK/mnt"
			t1=$(now)
			T_mount=$(least "$T_mount" "$(elapsed "$t0" "$t1")")
			# timed from the first lookup: resolving tp-2/rank-0 builds tp-2
			t=$(secs list_view "$MNT/$path")
			eval "T_list_$v=\$(least \"\$T_list_$v\" $t)"
			t=$(secs read_view "$MNT/$path")
			eval "T_read_$v=\$(least \"\$T_read_$v\" $t)"
			umount_fs
		done
	done
}

small=$((NTENSORS / 10))
gen "$SCALE/many-$small" /usr/bin/python3 "$TOP/bench/gen-many-tensors.py" "$small"
gen "$SCALE/many-$NTENSORS" /usr/bin/python3 "$TOP/bench/gen-many-tensors.py" "$NTENSORS"

echo "== 1. scaling with the tensor count: $small vs $NTENSORS tensors, best of $RUNS, load $(cut -d' ' -f1-3 /proc/loadavg)"
measure "$SCALE/many-$small"
for k in inspect mount list_per_layer read_per_layer list_tp2 read_tp2 list_native read_native list_hf read_hf; do
	eval "S_$k=\$T_$k"
done
measure "$SCALE/many-$NTENSORS"
printf '%-34s %11s %11s %9s  %s\n' figure "$small" "$NTENSORS" ratio "target <= 20x"
row() {
	local name=$1 k=$2 s l
	eval "s=\$S_$k l=\$T_$k"
	printf '%-34s %s %s %8.1fx  %s\n' "$name" "$(ms "$s")" "$(ms "$l")" \
		"$(awk -v a="$l" -v b="$s" 'BEGIN { print (b > 0) ? a / b : 0 }')" \
		"$(awk -v a="$l" -v b="$s" 'BEGIN { print (b > 0 && a / b <= 20) ? "met" : "NOT met" }')"
}
row "baseline: ckptfs inspect" inspect
row "baseline: mount" mount
row "ls per-layer/ (builds it)" list_per_layer
row "read all of per-layer/" read_per_layer
row "ls tp-2/rank-0 (builds tp-2)" list_tp2
row "read all of tp-2/rank-0/" read_tp2
row "ls native/" list_native
row "read all of native/" read_native
row "ls hf/" list_hf
row "read all of hf/" read_hf
printf 'at %s tensors, against ckptfs inspect: ls per-layer/ %.2fx, ls tp-2/rank-0 %.2fx, read native/ %.2fx\n' \
	"$NTENSORS" "$(awk -v a="$T_list_per_layer" -v b="$T_inspect" 'BEGIN { print a / b }')" \
	"$(awk -v a="$T_list_tp2" -v b="$T_inspect" 'BEGIN { print a / b }')" \
	"$(awk -v a="$T_read_native" -v b="$T_inspect" 'BEGIN { print a / b }')"

# ---------------------------------------------------------------------
# 2. Hostile JSON.

hostile() { # hostile KIND OUTDIR: the files of one case
	/usr/bin/python3 - "$1" "$2" <<'EOF'
import json, os, struct, sys
kind, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
def st(path, header, data=b""):
    hb = header.encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + data)
one = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
if kind == "shape":
    st(out + "/model.safetensors", '{"a":{"dtype":"F32","data_offsets":[0,4],"shape":['
       + ",".join(["1"] * 48000000) + "]}}", b"\0" * 4)
elif kind == "index":
    st(out + "/model-00001-of-00001.safetensors", one, b"\0" * 4)
    with open(out + "/model.safetensors.index.json", "w") as f:
        f.write('{"metadata":{"x":[' + ",".join(["0"] * 32000000)
                + ']},"weight_map":{"a":"model-00001-of-00001.safetensors"}}')
elif kind == "config":
    st(out + "/model.safetensors", one, b"\0" * 4)
    with open(out + "/config.json", "w") as f:
        f.write('{"model_type":"llama","x":[' + ",".join(["0"] * 32000000) + "]}")
elif kind == "zero":
    st(out + "/model.safetensors", json.dumps(
        {"h.%d.w" % i: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(32000)}))
    json.dump({"model_type": "gpt2", "n_embd": 8, "n_head": 2, "n_layer": 32000, "vocab_size": 16,
               "n_positions": 8}, open(out + "/config.json", "w"))
EOF
}

echo
echo "== 2. hostile JSON, refused (best of $RUNS: wall time and peak RSS, against the file's size and a read of it)"
printf '%-44s %9s %11s %11s %9s  %s\n' case "file MB" "cat file" "ckptfs" "RSS MB" "RSS <= 2x file + 64 MB"
for c in shape:model.safetensors index:model.safetensors.index.json config:config.json zero:model.safetensors; do
	kind=${c%%:*}
	file=${c#*:}
	dir=$SCALE/hostile-$kind
	[ -d "$dir" ] || { echo "generating $dir (once)..." >&2; hostile "$kind" "$dir.partial" && mv "$dir.partial" "$dir" ||
		die "generating $dir failed"; }
	size=$(stat -c %s "$dir/$file")
	t_read=$(secs cat "$dir/$file")
	# timed CMD...: best wall time and peak RSS (KB) of CMD over RUNS into BEST_T, BEST_M
	timed() {
		local r t m
		BEST_T= BEST_M=
		for r in $(seq "$RUNS"); do
			/usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err"
			read -r t m < <(tail -n 1 "$WORK/time")
			BEST_T=$(least "$BEST_T" "$t")
			BEST_M=$(least "$BEST_M" "$m")
		done
	}
	if [ "$kind" = zero ]; then
		# 32,000 layer groups: listing per-layer/ against opening the source
		timed "$CKPTFS" inspect "$dir"
		t_inspect=$BEST_T
		timed "$CKPTFS" ls "$dir" per-layer
		echo "32,000 zero-size tensors h.<i>.w, gpt2 config.json: ckptfs ls per-layer/ $(ms "$BEST_T") (RSS $((BEST_M / 1024)) MB)," \
			"ckptfs inspect $(ms "$t_inspect"): ratio $(ratio "$BEST_T" "$t_inspect") (target <= 3:" \
			"$(awk -v a="$BEST_T" -v b="$t_inspect" 'BEGIN { print (a <= 3 * b) ? "met" : "NOT met" }'))"
		continue
	fi
	timed "$CKPTFS" inspect "$dir"
	msg=$(grep -v '^Command exited' "$WORK/err" | head -n 1 | cut -c1-110)
	printf '%-44s %9.1f %s %s %9.1f  %s\n' "$kind ($file)" "$(awk -v s="$size" 'BEGIN { print s / 1e6 }')" \
		"$(ms "$t_read")" "$(ms "$BEST_T")" "$(awk -v m="$BEST_M" 'BEGIN { print m / 1024 }')" \
		"$(awk -v m="$BEST_M" -v s="$size" 'BEGIN { print (m * 1024 <= 2 * s + 64 * 1048576) ? "met" : "NOT met" }')"
	[ -n "$msg" ] && echo "    $msg"
done
exit 0
