#!/bin/bash
# bench-torch.sh: a LLaMA-shaped pytorch_model.bin (zip and legacy) as a source: mount time,
# first read of hf/ against reading the .bin itself, and against the conversion people run.
#
# Usage: bench/bench-torch.sh [--hidden N] [--layers N] [--runs N] [--cache-dir DIR] [--ckptfs PATH]
#
# Run as root from the top of a built tree. The model (default: Llama-3.2-1B
# shapes, hidden 2048, 16 layers, vocab 128256, bf16, tied embeddings,
# ~2.5 GB) is written once by torch.save into
# ${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench/torch-H-L/{zip,legacy}/.
# Every figure is the best of N runs (default 3), with its baseline from the
# same run, page cache warm:
#  1. mount time: `ckptfs -f` started until the mount answers (the pickle
#     is parsed once; target < 100 ms);
#  2. first read of hf/model.safetensors through a fresh mount, 1 MiB
#     reads, against dd bs=1M of the .bin itself (target >= 0.9x; FUSE
#     transport caps it), and against the same read of hf/ of the same model
#     as safetensors (exported once into the cache), a pure passthrough;
#  3. the conversion people run (torch.load, then every tensor written as
#     safetensors, header and data): its wall time and peak RSS (from
#     /usr/bin/time) against ckptfs's time to mount and read all of hf/ and
#     the daemon's peak RssAnon sampled during the read (targets: time
#     <= 1/5, memory <= 1/10).
set -eu
TOP=$(pwd)
CKPTFS=$TOP/src/ckptfs
PY=/usr/bin/python3
HIDDEN=2048
LAYERS=16
RUNS=3
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ckptfs-bench
while [ $# -gt 0 ]; do
    case $1 in
    --hidden) HIDDEN=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --cache-dir) CACHE=$2; shift 2 ;;
    --ckptfs) CKPTFS=$2; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-torch.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$CKPTFS" ] || { echo "bench-torch.sh: no $CKPTFS (build first)" >&2; exit 2; }
$PY -c 'import torch' || { echo "bench-torch.sh: $PY cannot import torch" >&2; exit 2; }
MODEL=$CACHE/torch-$HIDDEN-$LAYERS
. "$(dirname "$0")/peer.sh"
peer_work bench-torch

if [ ! -f "$MODEL/legacy/pytorch_model.bin" ]; then
    echo "bench-torch: writing the model into $MODEL (once)"
    mkdir -p "$MODEL/zip" "$MODEL/legacy"
    $PY - "$MODEL" "$HIDDEN" "$LAYERS" <<'PY'
import collections, json, os, sys, torch
out, d, L = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
heads, kv, inter, vocab = d // 64, max(1, d // 256), d * 4, 128256
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d, "num_hidden_layers": L,
       "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab,
       "rms_norm_eps": 1e-5, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "max_position_embeddings": 4096}
g = torch.Generator().manual_seed(0)
def w(*shape):
    return (torch.rand(*shape, generator=g) - 0.5).to(torch.bfloat16)
sd = collections.OrderedDict()
sd["model.embed_tokens.weight"] = w(vocab, d)
for i in range(L):
    p = "model.layers.%d." % i
    sd[p + "input_layernorm.weight"] = w(d)
    sd[p + "self_attn.q_proj.weight"] = w(d, d)
    sd[p + "self_attn.k_proj.weight"] = w(kv * 64, d)
    sd[p + "self_attn.v_proj.weight"] = w(kv * 64, d)
    sd[p + "self_attn.o_proj.weight"] = w(d, d)
    sd[p + "post_attention_layernorm.weight"] = w(d)
    sd[p + "mlp.gate_proj.weight"] = w(inter, d)
    sd[p + "mlp.up_proj.weight"] = w(inter, d)
    sd[p + "mlp.down_proj.weight"] = w(d, inter)
sd["model.norm.weight"] = w(d)
for sub, new in (("zip", True), ("legacy", False)):
    torch.save(sd, os.path.join(out, sub, "pytorch_model.bin"), _use_new_zipfile_serialization=new)
    json.dump(cfg, open(os.path.join(out, sub, "config.json"), "w"), indent=2)
PY
fi

cat >"$WORK/convert.py" <<'PY'
import json, struct, sys, torch
sd = torch.load(sys.argv[1], map_location="cpu")
names = sorted(sd, key=lambda k: (-sd[k].element_size(), k))
hdr, off = {"__metadata__": {"format": "pt"}}, 0
dt = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
for k in names:
    n = sd[k].numel() * sd[k].element_size()
    hdr[k] = {"dtype": dt[sd[k].dtype], "shape": list(sd[k].shape), "data_offsets": [off, off + n]}
    off += n
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for k in names:
        t = sd[k].contiguous()
        f.write((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
PY

# The same model as HF safetensors (ckptfs export of hf/, once): its hf/ is
# a passthrough, the same FUSE path without the torch source.
if [ ! -f "$MODEL/st/model.safetensors" ]; then
    "$CKPTFS" export "$MODEL/zip" hf "$MODEL/st" >/dev/null
fi

for fmt in zip legacy; do
    SRC=$MODEL/$fmt
    BIN=$SRC/pytorch_model.bin
    SIZE=$(stat -c %s "$BIN")
    cat "$BIN" >/dev/null # warm
    read_hf_start
    base=() stb=()
    for _ in $(seq "$RUNS"); do
        read_hf_run "$SRC"
        time_s dd if="$BIN" of=/dev/null bs=1M 2>/dev/null
        base+=("$TIME_S")
        mount_src "$MODEL/st"
        time_s dd if="$MNT/hf/model.safetensors" of=/dev/null bs=1M 2>/dev/null
        stb+=("$TIME_S")
        umount_src
    done
    read_hf_best
    BASE=$(printf '%s\n' "${base[@]}" | best)
    STB=$(printf '%s\n' "${stb[@]}" | best)
    time_convert "$BIN"
    printf 'bench-torch %-6s %.2f GB: mount %.0f ms (target < 100)\n' "$fmt" "$(echo "$SIZE / 1000000000" | bc -l)" "$(echo "$MT * 1000" | bc -l)"
    printf 'bench-torch %-6s first read of hf/model.safetensors %.2f GB/s, dd of the .bin %.2f GB/s: %.2fx (target >= 0.9)\n' \
        "$fmt" "$(echo "$SIZE / $RD / 1000000000" | bc -l)" "$(echo "$SIZE / $BASE / 1000000000" | bc -l)" "$(echo "$BASE / $RD" | bc -l)"
    printf 'bench-torch %-6s first read of hf/model.safetensors %.2f GB/s, of hf/ of the same model as safetensors (a passthrough) %.2f GB/s: %.2fx\n' \
        "$fmt" "$(echo "$SIZE / $RD / 1000000000" | bc -l)" "$(echo "$SIZE / $STB / 1000000000" | bc -l)" "$(echo "$STB / $RD" | bc -l)"
    printf 'bench-torch %-6s mount + read all of hf/ %.2f s, torch.load + safetensors write %.2f s: %.3fx the time (target <= 0.2)\n' \
        "$fmt" "$FULL" "$CT" "$(echo "$FULL / $CT" | bc -l)"
    printf 'bench-torch %-6s daemon peak RssAnon %.0f MB, conversion peak RSS %.0f MB: %.3fx the memory (target <= 0.1)\n' \
        "$fmt" "$(echo "$RSS / 1024" | bc -l)" "$(echo "$CM / 1024" | bc -l)" "$(echo "$RSS / $CM" | bc -l)"
done
