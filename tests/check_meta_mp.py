#!/usr/bin/python3
"""check_meta_mp.py - hf/ of a mounted Meta model-parallel release against a numpy converter.

Usage: check_meta_mp.py SRC MNT LLAMA_VERSION

SRC holds consolidated.NN.pth + params.json. torch.load reads each file (the
oracle for the pickles); from there everything is numpy, following
transformers' convert_llama_weights_to_hf.py: wq wk wv w1 w3 output joined
along dim 0, wo w2 along dim 1, tok_embeddings along dim 0 for LLaMA 3 and
dim 1 before, norms from the first file; wq and wk rows permuted per head
from the interleaved rotary order to the half-split one; Meta's names to
HF's; rope.freqs dropped. hf/ must hold exactly these tensors, bit for bit,
and hf/config.json the dimensions from params.json and the shapes.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402
from check_torch import read_hf  # noqa: E402


def to_np(t):
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def permute(w, heads):
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def main():
    src, mnt, version = sys.argv[1], sys.argv[2], sys.argv[3]
    params = json.load(open(os.path.join(src, "params.json")))
    files = sorted(f for f in os.listdir(src) if f.startswith("consolidated.") and f.endswith(".pth"))
    loaded = [{k: to_np(v) for k, v in torch.load(os.path.join(src, f), map_location="cpu").items()} for f in files]
    heads, layers = params["n_heads"], params["n_layers"]
    kv = params.get("n_kv_heads", heads)

    def cat(name, dim):
        return np.concatenate([sd[name] for sd in loaded], axis=dim)

    want = {"model.embed_tokens.weight": cat("tok_embeddings.weight", 0 if version.startswith("3") else 1),
            "model.norm.weight": loaded[0]["norm.weight"], "lm_head.weight": cat("output.weight", 0)}
    for i in range(layers):
        p, q = "model.layers.%d." % i, "layers.%d." % i
        want[p + "self_attn.q_proj.weight"] = permute(cat(q + "attention.wq.weight", 0), heads)
        want[p + "self_attn.k_proj.weight"] = permute(cat(q + "attention.wk.weight", 0), kv)
        want[p + "self_attn.v_proj.weight"] = cat(q + "attention.wv.weight", 0)
        want[p + "self_attn.o_proj.weight"] = cat(q + "attention.wo.weight", 1)
        want[p + "mlp.gate_proj.weight"] = cat(q + "feed_forward.w1.weight", 0)
        want[p + "mlp.down_proj.weight"] = cat(q + "feed_forward.w2.weight", 1)
        want[p + "mlp.up_proj.weight"] = cat(q + "feed_forward.w3.weight", 0)
        want[p + "input_layernorm.weight"] = loaded[0][q + "attention_norm.weight"]
        want[p + "post_attention_layernorm.weight"] = loaded[0][q + "ffn_norm.weight"]
    try:
        got = read_hf(os.path.join(mnt, "hf"))
        if sorted(got) != sorted(want):
            stlib.fail("hf/: tensors %s differ from the converter's" % sorted(set(got) ^ set(want)))
        for k, w in want.items():
            g = got[k]
            if list(g.shape) != list(w.shape) or g.raw() != np.ascontiguousarray(w).tobytes():
                stlib.fail("hf/%s: %s, the converter gives %s or other bytes" % (k, g.shape, list(w.shape)))
        cfg = json.load(open(os.path.join(mnt, "hf", "config.json")))
        expect = {"hidden_size": params["dim"], "num_hidden_layers": layers, "num_attention_heads": heads,
                  "num_key_value_heads": kv, "vocab_size": want["model.embed_tokens.weight"].shape[0],
                  "intermediate_size": want["model.layers.0.mlp.gate_proj.weight"].shape[0],
                  "rms_norm_eps": params["norm_eps"], "rope_theta": params.get("rope_theta", 10000.0),
                  "model_type": "llama"}
        for k, v in expect.items():
            if cfg.get(k) != v:
                stlib.fail("hf/config.json: %s is %r, expected %r" % (k, cfg.get(k), v))
    except stlib.Mismatch as e:
        print("check_meta_mp.py: FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
    print("check_meta_mp.py: %s: %d files merged, %d tensors equal to the converter's" % (src, len(files), len(want)))


if __name__ == "__main__":
    main()
