#!/bin/bash
# bench-meta-mp.sh: Meta's model-parallel release (consolidated.00.pth, .01.pth + params.json) as a source:
# mount time, first read of hf/ against reading the .pth files, and against the conversion people run.
#
# Usage: bench/bench-meta-mp.sh [--runs N] [--cache-dir DIR] [--ckptfs PATH]
#
# Run as root from the top of a built tree, after bench/bench-torch.sh has
# written its LLaMA-shaped model (Llama-3.2-1B shapes, bf16, ~2.5 GB) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench/torch-2048-16/ (st/). Its tensors
# are saved once by torch as Meta's LLaMA 3 release in 2 files under Meta's
# names, wq/wk rows in the interleaved rotary order, every weight cut as
# fairscale's parallel layers hold it (tests/torch_fixtures.py meta3-mp;
# meta-mp/ beside it; delete it when done). Every
# figure is the best of N runs (default 3), from the same run, page cache warm:
#  1. mount time: `ckptfs -f` started until the mount answers (both pickles
#     parsed, the slices merged);
#  2. first read of hf/model.safetensors through a fresh mount, 1 MiB reads,
#     against cat of the two .pth files (target >= 0.9x; the merged tensors
#     and the row permutation are computed, not spliced);
#  3. the conversion people run (transformers' convert_llama_weights_to_hf:
#     torch.load of every file, torch.cat, the permutation, a safetensors
#     write): its wall time and peak RSS against ckptfs's time to mount and
#     read all of hf/ and the daemon's peak RssAnon during the read.
set -eu
TOP=$(pwd)
CKPTFS=$TOP/src/ckptfs
PY=/usr/bin/python3
RUNS=3
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench
while [ $# -gt 0 ]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --cache-dir) CACHE=$2; shift 2 ;;
    --ckptfs) CKPTFS=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-meta-mp.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$CKPTFS" ] || { echo "bench-meta-mp.sh: no $CKPTFS (build first)" >&2; exit 2; }
SRC=$CACHE/torch-2048-16/st
[ -f "$SRC/model.safetensors" ] || { echo "bench-meta-mp.sh: no $SRC/model.safetensors (run bench/bench-torch.sh once)" >&2; exit 2; }
MODEL=$CACHE/torch-2048-16/meta-mp
. "$(dirname "$0")/peer.sh"
peer_work bench-meta-mp

if [ ! -f "$MODEL/consolidated.01.pth" ]; then
    echo "bench-meta-mp: writing Meta's release into $MODEL (once)"
    mkdir -p "$MODEL"
    $PY "$TOP/tests/torch_fixtures.py" meta3-mp "$SRC" "$MODEL"
fi

# transformers' convert_llama_weights_to_hf for N files, written as one safetensors file
cat >"$WORK/convert.py" <<'PY'
import json, os, struct, sys, torch
src, out = sys.argv[1], sys.argv[2]
params = json.load(open(os.path.join(src, "params.json")))
files = sorted(f for f in os.listdir(src) if f.endswith(".pth"))
loaded = [torch.load(os.path.join(src, f), map_location="cpu") for f in files]
h, kv = params["n_heads"], params["n_kv_heads"]
def permute(w, n):
    r, c = w.shape
    return w.view(n, r // n // 2, 2, c).transpose(1, 2).reshape(r, c)
cat = lambda k, d: torch.cat([s[k] for s in loaded], dim=d)
sd = {"model.embed_tokens.weight": cat("tok_embeddings.weight", 0), "model.norm.weight": loaded[0]["norm.weight"],
      "lm_head.weight": cat("output.weight", 0)}
for i in range(params["n_layers"]):
    p, q = "model.layers.%d." % i, "layers.%d." % i
    sd[p + "self_attn.q_proj.weight"] = permute(cat(q + "attention.wq.weight", 0), h)
    sd[p + "self_attn.k_proj.weight"] = permute(cat(q + "attention.wk.weight", 0), kv)
    sd[p + "self_attn.v_proj.weight"] = cat(q + "attention.wv.weight", 0)
    sd[p + "self_attn.o_proj.weight"] = cat(q + "attention.wo.weight", 1)
    sd[p + "mlp.gate_proj.weight"] = cat(q + "feed_forward.w1.weight", 0)
    sd[p + "mlp.down_proj.weight"] = cat(q + "feed_forward.w2.weight", 1)
    sd[p + "mlp.up_proj.weight"] = cat(q + "feed_forward.w3.weight", 0)
    sd[p + "input_layernorm.weight"] = loaded[0][q + "attention_norm.weight"]
    sd[p + "post_attention_layernorm.weight"] = loaded[0][q + "ffn_norm.weight"]
del loaded
names = sorted(sd)
hdr, off = {"__metadata__": {"format": "pt"}}, 0
for k in names:
    n = sd[k].numel() * 2
    hdr[k] = {"dtype": "BF16", "shape": list(sd[k].shape), "data_offsets": [off, off + n]}
    off += n
hb = json.dumps(hdr, separators=(",", ":")).encode()
hb += b" " * (-len(hb) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(hb)) + hb)
    for k in names:
        f.write(sd[k].contiguous().view(torch.int16).numpy().tobytes())
PY

SIZE=$(cat "$MODEL"/consolidated.*.pth | wc -c)
cat "$MODEL"/consolidated.*.pth >/dev/null # warm
read_hf_start
base=()
for _ in $(seq "$RUNS"); do
    read_hf_run "$MODEL"
    time_s cat "$MODEL"/consolidated.*.pth >/dev/null
    base+=("$TIME_S")
done
read_hf_best
BASE=$(printf '%s\n' "${base[@]}" | best)
time_convert "$MODEL"
printf 'bench-meta-mp %.2f GB in 2 files: mount %.0f ms\n' "$(echo "$SIZE / 1000000000" | bc -l)" "$(echo "$MT * 1000" | bc -l)"
printf 'bench-meta-mp first read of hf/model.safetensors %.2f GB/s, cat of the .pth files %.2f GB/s: %.2fx\n' \
    "$(echo "$SIZE / $RD / 1000000000" | bc -l)" "$(echo "$SIZE / $BASE / 1000000000" | bc -l)" "$(echo "$BASE / $RD" | bc -l)"
printf 'bench-meta-mp mount + read all of hf/ %.2f s, convert_llama_weights_to_hf (torch) %.2f s: %.3fx the time (target <= 0.2)\n' \
    "$FULL" "$CT" "$(echo "$FULL / $CT" | bc -l)"
printf 'bench-meta-mp peak memory: ckptfs daemon %.0f MB RssAnon, the conversion %.0f MB max RSS: %.3fx (target <= 0.1)\n' \
    "$(echo "$RSS / 1024" | bc -l)" "$(echo "$CM / 1024" | bc -l)" "$(echo "$RSS / $CM" | bc -l)"
echo "bench-meta-mp load: $(uptime)"
