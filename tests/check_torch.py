#!/usr/bin/python3
"""check_torch.py - a ckptfs mount of a torch checkpoint against torch.load, the oracle.

Usage: check_torch.py SRC MNT [--ref REF_MNT] [--nanogpt | --same-as-ref]

SRC holds the torch files (pytorch_model.bin, shards + index, or ckpt.pt);
torch.load reads them (state dict under 'model' for ckpt.pt, prefixes
'_orig_mod.' and 'module.' stripped). Checks, bit for bit:
  hf/            safetensors (one file or shards + index) holding every tensor
                 except tied copies (lm_head.weight sharing its bytes with
                 another tensor), in the reference writer's order; with
                 --nanogpt the nn.Linear weights transposed to GPT-2's Conv1D
  tensors/       one .npy per tensor of the state dict (BF16 widened to <f4);
                 with --nanogpt the GPT-2 (Conv1D) forms
  hf@fp32/       every float tensor cast to fp32
  hf/config.json present (generated for nanoGPT: GPT-2 keys from model_args)
With --same-as-ref (trainer files in Meta's naming, converted to HF's),
the oracle is REF_MNT instead: hf/ holds its tensors bit for bit, tensors/
its .npy files, and config.json its model dimensions.
With --ref, REF_MNT is a mount of the same model as safetensors: native/ and
tp-2/ safetensors files must be equal byte for byte, and per-layer/ too when
both hold the same tensors.
"""
import argparse
import filecmp
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402

LINEAR = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
            torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
            torch.bool: "BOOL"}


def strip(k):
    while True:
        if k.startswith("module."):
            k = k[7:]
        elif k.startswith("_orig_mod."):
            k = k[10:]
        else:
            return k


def load_source(src):
    """[(name, tensor)] as torch.load gives them, and the names of tied copies."""
    files = sorted(f for f in os.listdir(src) if f.endswith((".bin", ".pt", ".pth", ".ckpt")))
    out = []
    for f in files:
        obj = torch.load(os.path.join(src, f), map_location="cpu")
        for k in ("state_dict", "model_state_dict", "model", "module"):
            if isinstance(obj, dict) and isinstance(obj.get(k), dict):
                obj = obj[k]
                break
        out += [(strip(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    # Tied copies: same storage bytes, offset, shape and stride; HF keeps
    # the one that is not lm_head.weight.
    groups = {}
    for k, v in out:
        key = (v.untyped_storage().data_ptr() if hasattr(v, "untyped_storage") else v.storage().data_ptr(),
               v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        groups.setdefault(key, []).append(k)
    dups = set()
    for names in groups.values():
        if len(names) > 1 and all(v.numel() for k, v in out if k in names):
            keep = next((n for n in sorted(names) if n not in ("lm_head.weight", "output.weight")), sorted(names)[0])
            dups |= set(n for n in names if n != keep)
    return out, dups


def raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def read_hf(d):
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    got = stlib.read_dir(d, True)
    if len(files) > 1:
        idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        if sorted(idx["weight_map"]) != sorted(got):
            stlib.fail("%s: index.json names differ from the shards'" % d)
    return got


def expect_tensor(where, name, got, t):
    want_dtype = ST_DTYPE[t.dtype]
    if got.dtype != want_dtype or list(got.shape) != list(t.shape):
        stlib.fail("%s: %s is %s %s, torch has %s %s" % (where, name, got.dtype, got.shape, want_dtype,
                                                       list(t.shape)))
    if got.raw() != raw(t):
        stlib.fail("%s: %s: bytes differ from torch.load" % (where, name))


def same_as_ref(a):
    got, want = read_hf(os.path.join(a.mnt, "hf")), read_hf(os.path.join(a.ref, "hf"))
    if sorted(got) != sorted(want):
        stlib.fail("hf/: tensors differ from the original's: %s" % sorted(set(got) ^ set(want)))
    for k in want:
        if got[k].dtype != want[k].dtype or got[k].shape != want[k].shape or got[k].raw() != want[k].raw():
            stlib.fail("hf/: %s differs from the original's" % k)
    for f in sorted(os.listdir(os.path.join(a.ref, "tensors"))):
        if not filecmp.cmp(os.path.join(a.mnt, "tensors", f), os.path.join(a.ref, "tensors", f), shallow=False):
            stlib.fail("tensors/%s differs from the original's" % f)
    cfg, ref = (json.load(open(os.path.join(m, "hf", "config.json"))) for m in (a.mnt, a.ref))
    for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size"):
        if cfg.get(k) != ref.get(k, ref.get("num_attention_heads") if k == "num_key_value_heads" else None):
            stlib.fail("hf/config.json: %s is %r, the original says %r" % (k, cfg.get(k), ref.get(k)))
    compare_views(a, True)
    print("check_torch.py: %s: %d tensors in hf/ equal to the original's" % (a.src, len(want)))


def compare_views(a, per_layer):
    n = 0
    views = ["native", "tp-2/rank-0", "tp-2/rank-1"] + (["per-layer"] if per_layer else [])
    for view in views:
        d = os.path.join(a.mnt, view)
        for f in sorted(os.listdir(d)):
            if not f.endswith(".safetensors"):
                continue
            if not filecmp.cmp(os.path.join(d, f), os.path.join(a.ref, view, f), shallow=False):
                stlib.fail("%s/%s differs from the safetensors source's" % (view, f))
            n += 1
    if n < 3:
        stlib.fail("only %d files compared with the safetensors source" % n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("mnt")
    ap.add_argument("--ref")
    ap.add_argument("--nanogpt", action="store_true")
    ap.add_argument("--same-as-ref", action="store_true")
    a = ap.parse_args()
    if a.same_as_ref:
        try:
            same_as_ref(a)
        except stlib.Mismatch as e:
            print("check_torch.py: FAIL: %s" % e, file=sys.stderr)
            sys.exit(1)
        return
    tensors, dups = load_source(a.src)
    if a.nanogpt:  # the catalog holds GPT-2's tensors: Conv1D [in, out]
        tensors = [(k, v.t() if k.startswith("transformer.h.") and k.endswith(LINEAR) else v) for k, v in tensors]
    hf_expect = {k: v for k, v in tensors if k not in dups}
    try:
        got = read_hf(os.path.join(a.mnt, "hf"))
        if sorted(got) != sorted(hf_expect):
            stlib.fail("hf/: tensors %s, expected %s" % (sorted(set(got) ^ set(hf_expect)), "the state dict minus "
                                                         "tied copies"))
        for k, v in hf_expect.items():
            expect_tensor("hf/", k, got[k], v)
        cfg = json.load(open(os.path.join(a.mnt, "hf", "config.json")))
        if a.nanogpt:
            for key in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions"):
                if key not in cfg:
                    stlib.fail("hf/config.json: no %s" % key)
            if cfg.get("model_type") != "gpt2":
                stlib.fail("hf/config.json: model_type %r" % cfg.get("model_type"))
        got32 = read_hf(os.path.join(a.mnt, "hf@fp32"))
        for k, v in hf_expect.items():
            w = v.float() if v.is_floating_point() else v
            expect_tensor("hf@fp32/", k, got32[k], w)
        for k, v in tensors:
            p = os.path.join(a.mnt, "tensors", stlib.npy_name(k))
            arr = np.load(p)
            w = v.float() if v.dtype == torch.bfloat16 else v
            if list(arr.shape) != list(w.shape) or arr.tobytes() != raw(w):
                stlib.fail("tensors/%s: differs from torch.load" % stlib.npy_name(k))
        if a.ref:
            # per-layer/ has HF names: comparable when the tensor sets are the same
            # (GPT-2 .bin files add attn.masked_bias buffers that the layouts drop).
            compare_views(a, sorted(read_hf(os.path.join(a.ref, "hf"))) == sorted(hf_expect))
    except stlib.Mismatch as e:
        print("check_torch.py: FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
    print("check_torch.py: %s: %d tensors, %d in hf/ OK" % (a.src, len(tensors), len(hf_expect)))


if __name__ == "__main__":
    main()
