#!/bin/bash
# bench-gguf.sh: gguf/ on a 1B LLaMA (bf16): mount to first token in llama.cpp, and Q8_0 read speed.
#
# Usage: bench/bench-gguf.sh [--model-dir DIR] [--ckptfs PATH] [--cache-dir DIR] [--nlc-dir DIR] [--runs N]
#                            [--part all|ttft|read]
#
# Run as root from the top of a built tree (build without sanitizers for
# figures). The llama-1b model of bench-read.sh's cache dir is used through
# hard links in CACHE_DIR/llama-1b-gguf, with a byte-level BPE tokenizer of
# 128256 tokens generated there (the shared model's tokenizer is a
# WordLevel stub). llama.cpp is node-llama-cpp's prebuilt CPU build from
# NLC_DIR (default ~/.cache/ckptfs-test/node-llama-cpp, as tests/mount-gguf.sh).
# Source page cache warm throughout (the cold case is the view's cache).
#  1. time to first token: from starting the mount to llama.cpp having
#     loaded gguf@f16/ (gguf@q8_0/) from it, mapped (llama.cpp's default,
#     also the faster way over FUSE here: its WILLNEED advice makes the
#     kernel read the file ahead in asynchronous requests, where --no-mmap
#     reads one tensor at a time), and produced one token for a short prompt: with an empty cache
#     dir (cold), then a new mount on the same cache dir (warm: Q8_0 chunks
#     from the disk tier); against the peer path: bench/gguf-convert-numpy.py
#     writing the GGUF (a numpy re-implementation of convert_hf_to_gguf.py),
#     then llama.cpp loading it. Target: ckptfs <= 1/5 of the peer's time.
#     The split: llama.cpp alone on the finished local file (page cache
#     warm: its own load and first token, the floor of both paths), ckptfs'
#     read of the whole view through a fresh mount (cold, warm), and what
#     each path adds to llama.cpp's own time: ckptfs (TTFT - llama.cpp
#     alone) against the converter's time.
#  2. read speed of gguf@q8_0/model.gguf (quantising) through a fresh mount,
#     cold (empty cache dir) and warm (a new mount on the same cache dir),
#     against hf/model.safetensors through a fresh mount, 1 MiB reads.
#     Targets: >= 0.3x cold, >= 0.9x warm. Also the cold read with no disk
#     tier (-o cache_dir=none), which shows the cost of writing the entries.
# Figures are the best of N runs (default 2); peer runs alternate with ours.
# --part ttft (read) runs part 1 (2) alone; default all.

BENCH_NAME=bench-gguf
USAGE_LINES=2,34
. "$(dirname "$0")/lib.sh" || exit 1

NLC_DIR=${CKPTFS_NLC_DIR:-$HOME/.cache/ckptfs-test/node-llama-cpp}
RUNS=2
PART=all
BENCH_OPTS="$BENCH_OPTS --nlc-dir=NLC_DIR --runs=RUNS --part=PART"
bench_args "$@"
positive_int "$RUNS" --runs
case $PART in all|ttft|read) ;; *) die "--part wants all, ttft or read" ;; esac
bench_paths
require_fuse
require_ckptfs
require_numpy
ensure_model
[ -f "$NLC_DIR/node_modules/node-llama-cpp/package.json" ] ||
	die "no node-llama-cpp in $NLC_DIR (run tests/mount-gguf.sh once, or npm install it there)"
bench_work
build_reader

SRC=$CACHE_DIR/llama-1b-gguf
if [ ! -f "$SRC/tokenizer.json" ]; then
	mkdir -p "$SRC" || die "cannot create $SRC"
	ln -f "$MODEL_DIR/model.safetensors" "$SRC/model.safetensors" || die "cannot hard-link the model into $SRC"
	cp "$MODEL_DIR/config.json" "$SRC/config.json"
	"$PYTHON" - "$SRC" <<'PY' || die "cannot write the tokenizer"
import json, os, sys
sys.path.insert(0, os.path.join(os.environ.get("TOP", "."), "tests"))
import check_gguf as cg
tok, cfg = cg.gpt2_tokenizer()
n = json.load(open(os.path.join(sys.argv[1], "config.json")))["vocab_size"]
vocab = {t: i for t, i in tok["model"]["vocab"].items() if t != "<|endoftext|>"}
k = 0
while len(vocab) < n - 1:
    vocab["\u0100filler%d" % k] = len(vocab)
    k += 1
vocab["<|endoftext|>"] = n - 1
tok["model"]["vocab"] = vocab
tok["added_tokens"][0]["id"] = n - 1
json.dump(tok, open(os.path.join(sys.argv[1], "tokenizer.json"), "w"))
json.dump(cfg, open(os.path.join(sys.argv[1], "tokenizer_config.json"), "w"))
PY
fi
export TOP
PROMPT="once upon a time the little llama read"

# first_token FILE [nommap]: llama.cpp loads FILE and makes one token.
first_token() {
	node "$TOP/tests/gguf_llama.mjs" "$NLC_DIR/node_modules" "$1" "$PROMPT" 1 ${2:-} >"$WORK/llama.json" 2>"$WORK/llama.err" ||
		{ cat "$WORK/llama.err" >&2; die "llama.cpp failed on $1"; }
}

# ttft_ckptfs VARIANT CACHEDIR: TT = seconds from mount start to the first token.
ttft_ckptfs() {
	local t0 t1
	t0=$(now)
	mount_fs ttft "$CKPTFS" -f -o cache_dir="$2" "$SRC" "$WORK/ttft"
	first_token "$MNT/gguf@$1/model.gguf"
	t1=$(now)
	umount_fs
	TT=$(elapsed "$t0" "$t1")
}

# read_view VARIANT CACHEDIR: RT = seconds from mount start to the whole view read.
read_view() {
	local t0 t1
	t0=$(now)
	mount_fs rv "$CKPTFS" -f -o cache_dir="$2" "$SRC" "$WORK/rv"
	(cd "$MNT/gguf@$1" && "$READER" model.gguf >/dev/null) || die "reading gguf@$1 failed"
	t1=$(now)
	umount_fs
	RT=$(elapsed "$t0" "$t1")
}

# ttft_peer VARIANT: TT = seconds to convert with numpy and make the first
# token, CONV = the conversion alone, LOAD = llama.cpp alone on the local file.
ttft_peer() {
	local t0 t1 t2 t3
	t0=$(now)
	"$PYTHON" "$TOP/bench/gguf-convert-numpy.py" "$SRC" "$WORK/peer.gguf" "$1" || die "the numpy converter failed"
	t1=$(now)
	first_token "$WORK/peer.gguf"
	t2=$(now)
	# llama.cpp alone on the finished local file (page cache warm): the floor of both paths
	first_token "$WORK/peer.gguf"
	t3=$(now)
	rm -f "$WORK/peer.gguf"
	TT=$(elapsed "$t0" "$t2")
	CONV=$(elapsed "$t0" "$t1")
	LOAD=$(elapsed "$t2" "$t3")
}

minf() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }
sub0() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; printf "%.1f", (d > 0) ? d : 0 }'; }

echo "bench-gguf: $SRC ($(gb "$(stat -c %s "$SRC/model.safetensors")") bf16), llama.cpp from $NLC_DIR, best of $RUNS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for v in f16 q8_0; do
	[ "$PART" != read ] || break
	cold= warm= peer= conv= load= rcold= rwarm=
	for r in $(seq "$RUNS"); do
		cdir=$WORK/cache-$v-$r
		ttft_ckptfs "$v" "$cdir"
		cold=$(minf "$cold" "$TT")
		ttft_ckptfs "$v" "$cdir"
		warm=$(minf "$warm" "$TT")
		ttft_peer "$v"
		peer=$(minf "$peer" "$TT")
		conv=$(minf "$conv" "$CONV")
		load=$(minf "$load" "$LOAD")
		rm -rf "$cdir"
		read_view "$v" "$cdir"
		rcold=$(minf "$rcold" "$RT")
		read_view "$v" "$cdir"
		rwarm=$(minf "$rwarm" "$RT")
		rm -rf "$cdir"
	done
	printf 'time to first token, gguf@%s: ckptfs cold %.1f s, warm %.1f s; numpy converter + llama.cpp %.1f s; ratio cold %.2f, warm %.2f (target <= 0.20: %s)\n' \
		"$v" "$cold" "$warm" "$peer" "$(ratio "$cold" "$peer")" "$(ratio "$warm" "$peer")" \
		"$(awk -v a="$cold" -v b="$peer" 'BEGIN { print (a <= 0.2 * b) ? "met" : "NOT met" }')"
	printf '  split, gguf@%s: llama.cpp alone on the local file %.1f s (the floor of both; 0.20 of the peer is %.1f s); ckptfs reads the whole view (mount to last byte) in %.1f s cold, %.1f s warm; on top of llama.cpp alone ckptfs adds %s s cold, %s s warm, the converter %.1f s: ratio %s cold, %s warm\n' \
		"$v" "$load" "$(awk -v p="$peer" 'BEGIN { print 0.2 * p }')" "$rcold" "$rwarm" \
		"$(sub0 "$cold" "$load")" "$(sub0 "$warm" "$load")" "$conv" \
		"$(ratio "$(sub0 "$cold" "$load")" "$conv")" "$(ratio "$(sub0 "$warm" "$load")" "$conv")"
done

[ "$PART" != ttft ] || exit 0
hf= qc= qw= qn=
for r in $(seq "$RUNS"); do
	mount_fs rd "$CKPTFS" -f -o cache_dir="$WORK/rcache" "$SRC" "$WORK/rd"
	read_gbs "$MNT/hf" model.safetensors
	hf=$(best "${hf:-0}" "$GBS")
	umount_fs
	rm -rf "$WORK/rcache"
	mount_fs rd "$CKPTFS" -f -o cache_dir="$WORK/rcache" "$SRC" "$WORK/rd"
	read_gbs "$MNT/gguf@q8_0" model.gguf
	qc=$(best "${qc:-0}" "$GBS")
	umount_fs
	mount_fs rd "$CKPTFS" -f -o cache_dir=none "$SRC" "$WORK/rd"
	read_gbs "$MNT/gguf@q8_0" model.gguf
	qn=$(best "${qn:-0}" "$GBS")
	umount_fs
	mount_fs rd "$CKPTFS" -f -o cache_dir="$WORK/rcache" "$SRC" "$WORK/rd"
	read_gbs "$MNT/gguf@q8_0" model.gguf
	qw=$(best "${qw:-0}" "$GBS")
	# how much of it went to the kernel as ranges of raw cache entries
	spliced=$("$PYTHON" -c 'import json, sys; s = json.load(open(sys.argv[1])); ra = s["readahead"]; print(s["bytes_spliced"], s["cache"]["disk"]["range_bytes"], s["cache"]["disk"]["hits"], s["cache"]["computed_chunks"], ra["requests"], ra["source_bytes_requested"], ra.get("view_bytes_cached", 0))' "$MNT/.ckptfs/stats")
	umount_fs
	rm -rf "$WORK/rcache"
done
echo "first read, hf/model.safetensors:   $(fmt "$hf") (baseline)"
echo "first read, gguf@q8_0 cold:         $(fmt "$qc") = $(ratio "$qc" "$hf")x hf/ (target >= 0.3x: $(verdict "$(ratio "$qc" "$hf")" 0.3))"
echo "  the same without the disk tier (-o cache_dir=none: no entry written): $(fmt "$qn") = $(ratio "$qn" "$hf")x hf/; the writer's share of the cold read is what separates the two"
echo "first read, gguf@q8_0 from cache:   $(fmt "$qw") = $(ratio "$qw" "$hf")x hf/ (target >= 0.9x: $(verdict "$(ratio "$qw" "$hf")" 0.9))"
read -r spl rng hits comp rareq rasrc racached <<<"$spliced"
echo "  (last warm read: $(gb "$spl") spliced, $(gb "$rng") as cache entry ranges, $hits disk hits, $comp chunks computed;" \
	"read-ahead: $rareq requests for $(gb "$rasrc") of source, $(gb "$racached") of view left out as cached)"
