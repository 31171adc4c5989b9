#!/usr/bin/python3
"""gen-many-tensors.py - a LLaMA-shaped checkpoint with a great many tiny tensors.

Usage: gen-many-tensors.py NTENSORS OUTDIR [--shards S] [--zero]

Tiny dimensions (hidden 8, 2 heads, 1 KV head, intermediate 16, vocab 16,
bf16) and as many layers as it takes to reach NTENSORS tensors (9 per layer,
plus the embeddings, the final norm and lm_head), split over S shards
(default 8) with a model.safetensors.index.json, the way transformers
writes them. With --zero every tensor has a zero-length first dimension,
so the data area is empty and only the headers are large.

What it measures is the work ckptfs does per tensor (headers, indexes,
directory building), not bytes. Standard library only.
"""
import argparse
import json
import os
import struct

HIDDEN, HEADS, KV_HEADS, INTER, VOCAB = 8, 2, 1, 16, 16
HEAD_DIM = HIDDEN // HEADS


def tensors(nlayers, zero):
    z = (lambda s: [0] + s[1:]) if zero else (lambda s: s)
    yield "model.embed_tokens.weight", z([VOCAB, HIDDEN])
    for i in range(nlayers):
        p = "model.layers.%d." % i
        yield p + "input_layernorm.weight", z([HIDDEN])
        yield p + "self_attn.q_proj.weight", z([HEADS * HEAD_DIM, HIDDEN])
        yield p + "self_attn.k_proj.weight", z([KV_HEADS * HEAD_DIM, HIDDEN])
        yield p + "self_attn.v_proj.weight", z([KV_HEADS * HEAD_DIM, HIDDEN])
        yield p + "self_attn.o_proj.weight", z([HIDDEN, HEADS * HEAD_DIM])
        yield p + "post_attention_layernorm.weight", z([HIDDEN])
        yield p + "mlp.gate_proj.weight", z([INTER, HIDDEN])
        yield p + "mlp.up_proj.weight", z([INTER, HIDDEN])
        yield p + "mlp.down_proj.weight", z([HIDDEN, INTER])
    yield "model.norm.weight", z([HIDDEN])
    yield "lm_head.weight", z([VOCAB, HIDDEN])


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def write_shard(path, items):
    """items: [(name, shape)], bf16, written in name order (all one dtype)."""
    items = sorted(items)
    header = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, shape in items:
        n = numel(shape) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [pos, pos + n]}
        pos += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    # bf16 values 1.0 + small steps, so nothing is NaN
    block = b"".join(struct.pack("<H", 0x3F80 + (i % 64)) for i in range(4096))
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        left = pos
        while left:
            k = min(left, len(block))
            f.write(block[:k])
            left -= k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ntensors", type=int)
    ap.add_argument("outdir")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--zero", action="store_true")
    a = ap.parse_args()
    nlayers = max(1, (a.ntensors - 3 + 8) // 9)
    os.makedirs(a.outdir, exist_ok=True)
    ts = list(tensors(nlayers, a.zero))
    nsh = max(1, min(a.shards, len(ts)))
    per = (len(ts) + nsh - 1) // nsh
    weight_map, total = {}, 0
    for k in range(nsh):
        part = ts[k * per:(k + 1) * per]
        if not part:
            nsh = k
            break
    for k in range(nsh):
        part = ts[k * per:(k + 1) * per]
        name = "model-%05d-of-%05d.safetensors" % (k + 1, nsh)
        write_shard(os.path.join(a.outdir, name), part)
        for t, shape in part:
            weight_map[t] = name
            total += numel(shape) * 2
    with open(os.path.join(a.outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": HIDDEN, "num_attention_heads": HEADS,
              "num_key_value_heads": KV_HEADS, "intermediate_size": INTER,
              "num_hidden_layers": nlayers, "vocab_size": VOCAB,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16"}
    with open(os.path.join(a.outdir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print("%d tensors, %d layers, %d shards" % (len(ts), nlayers, nsh))


if __name__ == "__main__":
    main()
