#!/usr/bin/python3
"""check_native.py - independent oracle for ckptfs's native/ and VIEW@DTYPE/.

Usage: check_native.py [options] SRC MNT

SRC is a HuggingFace checkpoint directory; MNT a ckptfs mount of SRC, or
(with --native-source DIR) of DIR, a copy of a native/ view of SRC.  The
safetensors files are parsed here by a small reader of our own and every
expected tensor is computed with numpy from the table of the brief (not
from ckptfs's layout files):

  LLaMA family (llama, mistral, mixtral, qwen2, qwen3, gemma): renames; kv =
    concat(dim 0: k, v) for weights and biases; gate_up = concat(gate, up);
    Mixtral routers and experts (gate_up = concat(w1, w3), down = w2);
  phi3: q = the first heads*head_dim rows of qkv_proj, kv = the rest;
    gate_up = gate_up_proj;
  gpt2 (with or without "transformer."): Conv1D weights transposed,
    c_attn split at d into q and kv (weight and bias), attn.bias and
    attn.masked_bias dropped.

Checked:
  native/    the files are config.json (the source's, same JSON), the
             source's side files byte for byte, and model.safetensors or
             model-0000K-of-0000N.safetensors + model.safetensors.index.json
             (index: total_size, every tensor mapped to the file holding
             it, nothing else); each file: header padded to 8, tensors in
             the reference writer's order (descending dtype size, then name)
             both in the header and in the data, data_offsets tiling the
             data area up to EOF; __metadata__ format=pt, ckptfs.layout
             and for gpt2 ckptfs.prefix; every tensor's dtype, shape and
             bytes equal to the numpy computation, bit for bit;
             with --shard-size: each shard's data at most that many bytes
             (unless it holds one tensor);
  hf/        the source's files byte for byte, or with --native-source the
             HF tensors computed back (equal to SRC's except the dropped
             GPT-2 buffers), config.json and side files as in SRC;
  VIEW@DTYPE hf@, native@ for fp32, fp16 and bf16: every float tensor cast
             from the source with round-to-nearest-even (bf16 computed from
             the float32 bits here; NaN must stay NaN, any payload),
             integer tensors unchanged, config.json torch_dtype;
             tensors@fp32/fp16/bf16: one .npy per source tensor, '<f4',
             '<f2' and '<f4' (bf16 values widened) for float tensors;
  names      ls of the root has no '@' entry, os.listdir of hf@bf16 works,
             hf@int8, nope@fp32, hf@, @bf16, hf@fp64 are ENOENT.
With --dtype D (a mount made with -o dtype=D) hf/, native/ and tensors/
must be the D cast of the source and the @ views are not checked.

Exits 0 when everything matches, 1 with a message on the first mismatch.
"""

import argparse
import io
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stlib import (CASTS, DTYPES, T, Mismatch, cast, compare,  # noqa: E402
                   compare_set, expect_enoent, fail, is_float, npy_name,
                   parse_safetensors, read_file, to_float)

# npy dtype of tensors/ for an uncast integer tensor
NPY_INT = {k: np.dtype(d.npy).str for k, d in DTYPES.items()
           if d.kind == "int"}
LLAMA_FAMILY = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma"}
ST_RE = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
INDEX = "model.safetensors.index.json"


def load_dir_tensors(d, strict, shard_size=None):
    """Read the safetensors of checkpoint directory d.  Returns (tensors
    dict, metadata of each file {file: meta}, data sizes {file: bytes},
    index or None)."""
    files = sorted(os.listdir(d))
    single = "model.safetensors" in files
    shards = [f for f in files if ST_RE.match(f)]
    others = [f for f in files if f.endswith(".safetensors")
              and f != "model.safetensors" and not ST_RE.match(f)]
    if others:
        fail("%s: unexpected safetensors files %s" % (d, others))
    if single and (shards or INDEX in files):
        fail("%s: both model.safetensors and shards/index: %s" % (d, files))
    if not single and not shards:
        fail("%s: no safetensors file (%s)" % (d, files))
    tensors, metas, sizes, where = {}, {}, {}, {}
    stfiles = ["model.safetensors"] if single else shards
    if shards:
        n = len(shards)
        want = ["model-%05d-of-%05d.safetensors" % (k, n)
                for k in range(1, n + 1)]
        if shards != want:
            fail("%s: shard names %s, expected %s" % (d, shards, want))
        if INDEX not in files:
            fail("%s: shards without %s" % (d, INDEX))
    for f in stfiles:
        p = os.path.join(d, f)
        meta, ts = parse_safetensors(p, read_file(p), strict)
        metas[f] = meta
        sizes[f] = sum(e - b for _, _, b, e in ts)
        if shard_size is not None and len(ts) > 1 and sizes[f] > shard_size:
            fail("%s: %d bytes of data in %d tensors, above shard_size %d" %
                 (p, sizes[f], len(ts), shard_size))
        for name, t, _, _ in ts:
            if name in tensors:
                fail("%s: tensor %s also in %s" % (p, name, where[name]))
            tensors[name] = t
            where[name] = f
    index = None
    if shards:
        p = os.path.join(d, INDEX)
        try:
            index = json.loads(read_file(p).decode("utf-8"))
        except ValueError as e:
            fail("%s: not JSON: %s" % (p, e))
        total = index.get("metadata", {}).get("total_size")
        if total != sum(sizes.values()):
            fail("%s: total_size %r, the shards hold %d bytes of data" %
                 (p, total, sum(sizes.values())))
        wm = index.get("weight_map")
        if not isinstance(wm, dict):
            fail("%s: no weight_map" % p)
        for name, f in wm.items():
            if name not in where:
                fail("%s: weight_map names %s, which no shard holds" % (p, name))
            if where[name] != f:
                fail("%s: weight_map maps %s to %s, it is in %s" %
                     (p, name, f, where[name]))
        for name in where:
            if name not in wm:
                fail("%s: %s (in %s) missing from weight_map" %
                     (p, name, where[name]))
        unused = set(stfiles) - set(wm.values())
        if unused:
            fail("%s: shards %s not referenced" % (p, sorted(unused)))
    return tensors, metas, sizes, index


def source_side_files(src):
    """Files of an HF source other than config.json and the weights."""
    out = []
    for f in sorted(os.listdir(src)):
        if f == "config.json" or f == INDEX or f.endswith(".safetensors"):
            continue
        if os.path.isfile(os.path.join(src, f)):
            out.append(f)
    return out


# ------------------------------------------------------------ native layout

def split_rows(t, begin, end):
    return T(t.dtype, [end - begin] + t.shape[1:], t.arr[begin:end])


def concat0(a, b):
    if a.dtype != b.dtype or a.shape[1:] != b.shape[1:]:
        fail("oracle: cannot concat %s %s and %s %s" %
             (a.dtype, a.shape, b.dtype, b.shape))
    return T(a.dtype, [a.shape[0] + b.shape[0]] + a.shape[1:],
             np.concatenate([a.arr, b.arr], axis=0))


def transpose(t):
    if len(t.shape) != 2:
        fail("oracle: transpose of %s" % (t.shape,))
    return T(t.dtype, [t.shape[1], t.shape[0]], t.arr.T)


def layers_of(names, pattern):
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for n in names for m in [rx.match(n)] if m})


def native_llama(hf, cfg):
    out, used = {}, set()

    def take(name):
        used.add(name)
        return hf[name]

    def put(dst, name):
        if name in hf:
            out[dst] = take(name)

    def put_cat(dst, a, b):
        if a in hf or b in hf:
            if a not in hf or b not in hf:
                fail("oracle: %s without %s" % (a if a in hf else b,
                                                b if a in hf else a))
            out[dst] = concat0(take(a), take(b))

    put("embed.weight", "model.embed_tokens.weight")
    for i in layers_of(hf, r"^model\.layers\.(\d+)\."):
        p, q = "model.layers.%d." % i, "layers.%d." % i
        put(q + "attn_norm.weight", p + "input_layernorm.weight")
        for x in ("weight", "bias"):
            put(q + "attn.q." + x, p + "self_attn.q_proj." + x)
            put_cat(q + "attn.kv." + x, p + "self_attn.k_proj." + x,
                    p + "self_attn.v_proj." + x)
        for x in ("q_norm", "k_norm"):  # Qwen3's: no rule reads them, so they keep their HF names
            put(p + "self_attn.%s.weight" % x, p + "self_attn.%s.weight" % x)
        put(q + "attn.o.weight", p + "self_attn.o_proj.weight")
        put(q + "mlp_norm.weight", p + "post_attention_layernorm.weight")
        put_cat(q + "mlp.gate_up.weight", p + "mlp.gate_proj.weight",
                p + "mlp.up_proj.weight")
        put(q + "mlp.down.weight", p + "mlp.down_proj.weight")
        m = p + "block_sparse_moe."
        put(q + "moe.router.weight", m + "gate.weight")
        for e in layers_of(hf, r"^" + re.escape(m) + r"experts\.(\d+)\."):
            x = "%sexperts.%d." % (m, e)
            y = "%smoe.experts.%d." % (q, e)
            put_cat(y + "gate_up.weight", x + "w1.weight", x + "w3.weight")
            put(y + "down.weight", x + "w2.weight")
    put("final_norm.weight", "model.norm.weight")
    put("lm_head.weight", "lm_head.weight")
    return out, used, set()


def native_phi3(hf, cfg):
    out, used = {}, set()
    d = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or d // heads
    qrows = heads * hd

    def put(dst, name):
        if name in hf:
            used.add(name)
            out[dst] = hf[name]

    put("embed.weight", "model.embed_tokens.weight")
    for i in layers_of(hf, r"^model\.layers\.(\d+)\."):
        p, q = "model.layers.%d." % i, "layers.%d." % i
        put(q + "attn_norm.weight", p + "input_layernorm.weight")
        qkv = p + "self_attn.qkv_proj.weight"
        t = hf[qkv]
        used.add(qkv)
        out[q + "attn.q.weight"] = split_rows(t, 0, qrows)
        out[q + "attn.kv.weight"] = split_rows(t, qrows, t.shape[0])
        put(q + "attn.o.weight", p + "self_attn.o_proj.weight")
        put(q + "mlp_norm.weight", p + "post_attention_layernorm.weight")
        put(q + "mlp.gate_up.weight", p + "mlp.gate_up_proj.weight")
        put(q + "mlp.down.weight", p + "mlp.down_proj.weight")
    put("final_norm.weight", "model.norm.weight")
    put("lm_head.weight", "lm_head.weight")
    return out, used, set()


def gpt2_prefix(hf):
    return "transformer." if any(n.startswith("transformer.") for n in hf) \
        else ""


def native_gpt2(hf, cfg):
    out, used, dropped = {}, set(), set()
    pre = gpt2_prefix(hf)
    d = cfg["n_embd"]

    def get(name):
        used.add(name)
        return hf[name]

    def put(dst, name, tr=False):
        if name in hf:
            out[dst] = transpose(get(name)) if tr else get(name)

    put("embed.weight", pre + "wte.weight")
    put("pos_embed.weight", pre + "wpe.weight")
    for i in layers_of(hf, r"^" + re.escape(pre) + r"h\.(\d+)\."):
        p, q = "%sh.%d." % (pre, i), "layers.%d." % i
        for x in ("weight", "bias"):
            put(q + "attn_norm." + x, p + "ln_1." + x)
            put(q + "mlp_norm." + x, p + "ln_2." + x)
        w = get(p + "attn.c_attn.weight")
        if w.shape != [d, 3 * d]:
            fail("oracle: c_attn.weight shape %s" % (w.shape,))
        wt = transpose(w)
        out[q + "attn.q.weight"] = split_rows(wt, 0, d)
        out[q + "attn.kv.weight"] = split_rows(wt, d, 3 * d)
        if p + "attn.c_attn.bias" in hf:
            b = get(p + "attn.c_attn.bias")
            out[q + "attn.q.bias"] = split_rows(b, 0, d)
            out[q + "attn.kv.bias"] = split_rows(b, d, 3 * d)
        put(q + "attn.o.weight", p + "attn.c_proj.weight", tr=True)
        put(q + "attn.o.bias", p + "attn.c_proj.bias")
        put(q + "mlp.up.weight", p + "mlp.c_fc.weight", tr=True)
        put(q + "mlp.up.bias", p + "mlp.c_fc.bias")
        put(q + "mlp.down.weight", p + "mlp.c_proj.weight", tr=True)
        put(q + "mlp.down.bias", p + "mlp.c_proj.bias")
        for x in ("attn.bias", "attn.masked_bias"):
            if p + x in hf:
                dropped.add(p + x)
    put("final_norm.weight", pre + "ln_f.weight")
    put("final_norm.bias", pre + "ln_f.bias")
    put("lm_head.weight", "lm_head.weight")
    return out, used, dropped


def compute_native(hf, cfg):
    """-> (layout name, native tensors, dropped HF names, extra metadata)."""
    mt = cfg.get("model_type")
    if mt in LLAMA_FAMILY:
        name, fn = "llama", native_llama
    elif mt == "phi3":
        name, fn = "phi3", native_phi3
    elif mt == "gpt2":
        name, fn = "gpt2", native_gpt2
    else:
        return None, None, set(), {}
    out, used, dropped = fn(hf, cfg)
    left = set(hf) - used - dropped
    if left:
        fail("oracle: %s: HF tensors the table does not map: %s" %
             (mt, sorted(left)))
    meta = {"format": "pt", "ckptfs.layout": name}
    if name == "gpt2":
        meta["ckptfs.prefix"] = gpt2_prefix(hf)
    return name, out, dropped, meta


# ------------------------------------------------------------ views

def check_config(path, cfg, torch_dtype):
    try:
        got = json.loads(read_file(path).decode("utf-8"))
    except ValueError as e:
        fail("%s: not JSON: %s" % (path, e))
    want = dict(cfg)
    if torch_dtype is not None:
        want["torch_dtype"] = torch_dtype
    if got != want:
        keys = sorted(set(got) | set(want))
        d = [k for k in keys if got.get(k, "<absent>") != want.get(k, "<absent>")]
        fail("%s: differs from the expected config in %s: got %s, expected %s"
             % (path, d, {k: got.get(k, "<absent>") for k in d},
                {k: want.get(k, "<absent>") for k in d}))


def check_st_view(vdir, expect, meta_want, cfg, side, src, torch_dtype,
                  nan_any, shard_size):
    """A generated safetensors view directory (native/, hf/ of a native
    source, X@DTYPE/)."""
    tensors, metas, _, _ = load_dir_tensors(vdir, True, shard_size)
    for f, meta in metas.items():
        if meta is None:
            fail("%s/%s: no __metadata__" % (vdir, f))
        for k, v in meta_want.items():
            if v is None:
                continue
            if k == "ckptfs.prefix" and v == "" and k not in meta:
                continue
            if meta.get(k) != v:
                fail("%s/%s: __metadata__[%r] = %r, expected %r" %
                     (vdir, f, k, meta.get(k), v))
    compare_set(vdir, tensors, expect, nan_any)
    check_config(os.path.join(vdir, "config.json"), cfg, torch_dtype)
    files = set(os.listdir(vdir))
    for f in side:
        if f not in files:
            fail("%s: side file %s missing" % (vdir, f))
        if read_file(os.path.join(vdir, f)) != read_file(os.path.join(src, f)):
            fail("%s/%s differs from %s/%s" % (vdir, f, src, f))
    allowed = set(side) | {"config.json", "model.safetensors", INDEX}
    extra = [f for f in files if f not in allowed and not ST_RE.match(f)]
    if extra:
        fail("%s: unexpected files %s" % (vdir, sorted(extra)))
    return len(tensors)


def check_npy_view(vdir, srcts, to):
    files = sorted(os.listdir(vdir))
    want = sorted(npy_name(n) for n in srcts)
    if files != want:
        fail("%s: files %s, expected %s" % (vdir, files[:5], want[:5]))
    for name, t in srcts.items():
        p = os.path.join(vdir, npy_name(name))
        got = np.load(io.BytesIO(read_file(p)), allow_pickle=False)
        if not is_float(t.dtype):
            wdt = NPY_INT[t.dtype]
            if got.dtype.str != wdt or list(got.shape) != t.shape:
                fail("%s: %s %s, expected %s %s" %
                     (p, got.dtype.str, list(got.shape), wdt, t.shape))
            if got.tobytes() != t.raw():
                fail("%s: integer values changed" % p)
            continue
        c = cast(t, to)
        if to == "bf16":
            wdt, exp = "<f4", T("F32", t.shape, to_float(c))
        elif to == "fp16":
            wdt, exp = "<f2", c
        else:
            wdt, exp = "<f4", c
        if got.dtype.str != wdt:
            fail("%s: npy dtype %s, expected %s" % (p, got.dtype.str, wdt))
        compare(p, T(exp.dtype, list(got.shape),
                     np.ascontiguousarray(got).view(DTYPES[exp.dtype].raw)),
                exp, True)


def check_names(mnt, has_native):
    root = os.listdir(mnt)
    at = [e for e in root if "@" in e]
    if at:
        fail("ls %s lists %s" % (mnt, at))
    for v in ("hf@bf16", "hf@fp16", "hf@fp32", "tensors@fp16"):
        try:
            os.listdir(os.path.join(mnt, v))
        except OSError as e:
            fail("os.listdir(%s/%s): %s" % (mnt, v, e))
    bad = ["hf@int8", "nope@fp32", "hf@", "@bf16", "hf@fp64", "README@fp32"]
    if not has_native:
        bad.append("native@fp32")
    for v in bad:
        expect_enoent(os.path.join(mnt, v))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", help="the HF checkpoint directory")
    ap.add_argument("mnt", help="the ckptfs mount")
    ap.add_argument("--native-source", metavar="DIR",
                    help="MNT is a mount of DIR, a copy of native/ of SRC")
    ap.add_argument("--shard-size", type=int, metavar="BYTES",
                    help="the mount's -o shard_size, in bytes")
    ap.add_argument("--dtype", choices=sorted(CASTS),
                    help="the mount's -o dtype")
    a = ap.parse_args()
    src, mnt = a.src, a.mnt
    try:
        cfg = json.loads(read_file(os.path.join(src, "config.json")))
        hf, _, _, _ = load_dir_tensors(src, False)
        layout, native, dropped, nmeta = compute_native(hf, cfg)
        side = source_side_files(src)
        hf_exp = {n: t for n, t in hf.items() if n not in dropped}
        n = 0
        if a.dtype:
            # every base view is the cast; nothing else is checked
            to = a.dtype
            tdt = CASTS[to][1]
            c = {k: cast(t, to) for k, t in hf.items()}
            n += check_st_view(os.path.join(mnt, "hf"), c, {"format": "pt"},
                               cfg, side, src, tdt, True, a.shard_size)
            if native is not None:
                c = {k: cast(t, to) for k, t in native.items()}
                n += check_st_view(os.path.join(mnt, "native"), c, nmeta, cfg,
                                   side, src, tdt, True, a.shard_size)
            check_npy_view(os.path.join(mnt, "tensors"), hf, to)
            print("check_native: %s: -o dtype=%s: %d tensors match" %
                  (mnt, to, n))
            return 0
        if a.native_source:
            if native is None:
                fail("--native-source with model_type %r" %
                     cfg.get("model_type"))
            nsrc = a.native_source
            # native/ is the source's files, byte for byte
            want = sorted(os.listdir(nsrc))
            got = sorted(os.listdir(os.path.join(mnt, "native")))
            if got != want:
                fail("%s/native: files %s, the source has %s" %
                     (mnt, got, want))
            for f in want:
                if read_file(os.path.join(mnt, "native", f)) != \
                        read_file(os.path.join(nsrc, f)):
                    fail("%s/native/%s differs from %s/%s" %
                         (mnt, f, nsrc, f))
            n += check_st_view(os.path.join(mnt, "hf"), hf_exp,
                               {"format": "pt"}, cfg, side, src, None, False,
                               a.shard_size)
            # HF tensors come back exactly, dtype, shape and bytes
            srcts = native
        else:
            # hf/ is the source's files, byte for byte
            want = sorted(f for f in os.listdir(src)
                          if os.path.isfile(os.path.join(src, f)))
            got = sorted(os.listdir(os.path.join(mnt, "hf")))
            if got != want:
                fail("%s/hf: files %s, the source has %s" % (mnt, got, want))
            for f in want:
                if read_file(os.path.join(mnt, "hf", f)) != \
                        read_file(os.path.join(src, f)):
                    fail("%s/hf/%s differs from the source" % (mnt, f))
            if native is not None:
                n += check_st_view(os.path.join(mnt, "native"), native, nmeta,
                                   cfg, side, src, None, False, a.shard_size)
            elif os.path.exists(os.path.join(mnt, "native")):
                fail("%s/native exists for model_type %r" %
                     (mnt, cfg.get("model_type")))
            srcts = hf
            hf_exp = hf     # nothing is dropped from an HF source's hf@
        for to in sorted(CASTS):
            tdt = CASTS[to][1]
            c = {k: cast(t, to) for k, t in hf_exp.items()}
            n += check_st_view(os.path.join(mnt, "hf@" + to), c,
                               {"format": "pt"}, cfg, side, src, tdt, True,
                               a.shard_size)
            if native is not None:
                c = {k: cast(t, to) for k, t in native.items()}
                n += check_st_view(os.path.join(mnt, "native@" + to), c,
                                   nmeta, cfg, side, src, tdt, True,
                                   a.shard_size)
            check_npy_view(os.path.join(mnt, "tensors@" + to), srcts, to)
        check_names(mnt, native is not None)
    except Mismatch as e:
        print("check_native: FAIL: %s" % e, file=sys.stderr)
        return 1
    print("check_native: %s: layout %s, %d tensors in generated views match"
          % (mnt, layout, n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
