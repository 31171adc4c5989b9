#!/usr/bin/python3
"""check_partition.py - independent oracle for ckptfs's partition views.

Usage: check_partition.py [--tp-hf] [--per-layer-native] SRC MNT
       check_partition.py --stats N K SRC MNT

SRC is a HuggingFace checkpoint directory, MNT a ckptfs mount of it.  The
safetensors reader and the casts are those of stlib.py, the native layout
table that of check_native.py (imported, not copied); what each rank, stage
and layer file
must hold is computed here with numpy from the rules of the brief, not from
ckptfs's partition code:

  per-layer/  embed.safetensors, layer-000.safetensors ... (one per decoder
              block), head.safetensors and index.json, nothing else; every
              tensor of the model (HF names, or native ones with
              --per-layer-native) in exactly one file, bit for bit: embed =
              token and position embeddings (embed_tokens, wte, wpe /
              embed, pos_embed), layer-NNN = every tensor of block NNN (MoE
              experts and router included), head = final norm and lm_head;
              index.json: weight_map maps each tensor to its file, nothing
              else, total_size = the bytes of all tensors;
  tp-N/       the listed tp-N are exactly the N in 2..heads with heads % N
              == 0, kv_heads % N == 0 or N % kv_heads == 0, intermediate %
              N == 0 (computed here from config.json); tp-3 (when invalid),
              tp-0, tp-1, tp-02, tp-<2*heads>, tp-3@bf16 and rank-N are
              ENOENT; tp-N holds rank-0..rank-N-1, each exactly config.json
              and model.safetensors.  Per tensor, native names by default
              (HF names of the LLaMA family with --tp-hf):
                column (q, gate, up, their biases; gate_up: each half):
                  rank r = rows [r*R/N, (r+1)*R/N);
                k, v (and each half of fused kv): whole KV heads; with N >
                  kv_heads rank r holds KV head r // (N / kv_heads), every
                  rank's copy is checked;
                row (o, down, expert w2/down): columns [r*C/N, (r+1)*C/N);
                  o and down biases whole on every rank;
                vocab (embed, lm_head): rows of the table padded with zero
                  rows to a multiple of N, the padding all zero bits;
                anything else (norms, position embeddings, routers): whole.
              Every shard is compared bit for bit with the slice of the
              tensor computed from SRC, and the shards concatenated along
              the split dim give back the whole tensor (kv: k and v apart).
              config.json = the source's plus tp_size, tp_rank,
              tp_num_attention_heads, tp_num_key_value_heads,
              tp_intermediate_size, tp_vocab_size_padded;
  pp-N/       listed for N in 2..min(layers, 8), pp-1 and the next N are
              ENOENT; stage k holds layers [start, end) where the first
              layers % N stages have one layer more, stage 0 the
              embeddings, the last stage the final norm and lm_head (a copy
              of the embedding when tied); the stages' union is the model,
              no tensor twice; config.json = the source's plus pp_size,
              pp_stage, pp_layer_start, pp_layer_end (exclusive); names as
              tp-N's;
  casts       tp-2@fp32/rank-1 (and its cast of what tp-2/rank-1 serves),
              tp-<max>@bf16/rank-0, pp-2@fp16/stage-<last>, per-layer@fp32:
              the casts of the expected tensors (round to nearest even),
              config.json torch_dtype; none of them listed at the root;
  README      names every valid tp-N and no other.
Every section is run and every failure reported; exit 1 if any.

--stats N K: for a fresh mount: .ckptfs/stats shows nothing read yet; then
tp-N/rank-K/model.safetensors is read with O_DIRECT (page cache bypassed)
and must equal the expected shard; .ckptfs/stats then shows views == {"tp-N":
file size}, bytes_served == file size, bytes_generated == the header, the
source file read at least the shard's source bytes and at most
(partitioned bytes)/N + (k, v bytes)/min(N, kv_heads) + replicated bytes
(+ the source's safetensors header as slack), every other file untouched.
"""

import argparse
import json
import mmap
import os
import re
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_native as cn  # noqa: E402
from stlib import (T, Mismatch, cast, compare, compare_set,  # noqa: E402
                   expect_enoent, fail, parse_safetensors, read_file)

PP_MAX = 8
TP_KEYS = ("tp_size", "tp_rank", "tp_num_attention_heads",
           "tp_num_key_value_heads", "tp_intermediate_size",
           "tp_vocab_size_padded")
PP_KEYS = ("pp_size", "pp_stage", "pp_layer_start", "pp_layer_end")

COL, COL2, KV, KV2, ROW, VOCAB, REPL = ("col", "col2", "kv", "kv2", "row",
                                        "vocab", "replicated")


# ------------------------------------------------------------ model facts

class Dims:
    def __init__(self, cfg):
        if cfg.get("model_type") == "gpt2":
            self.heads = cfg["n_head"]
            self.kv_heads = self.heads
            self.inter = cfg.get("n_inner") or 4 * cfg["n_embd"]
            self.layers = cfg["n_layer"]
        else:
            self.heads = cfg["num_attention_heads"]
            self.kv_heads = cfg.get("num_key_value_heads") or self.heads
            self.inter = cfg["intermediate_size"]
            self.layers = cfg["num_hidden_layers"]
        self.vocab = cfg["vocab_size"]
        self.tied = bool(cfg.get("tie_word_embeddings", True))

    def tp_valid(self, n):
        return (2 <= n <= self.heads and self.heads % n == 0
                and (self.kv_heads % n == 0 or n % self.kv_heads == 0)
                and self.inter % n == 0)


# Groups of per-layer/ and pp-N/: ("embed",), ("layer", i), ("head",)
HF_EMBED = re.compile(r"^(model\.embed_tokens|(transformer\.)?wte|"
                      r"(transformer\.)?wpe)\.weight$")
HF_LAYER = re.compile(r"^(?:model\.layers|(?:transformer\.)?h)\.(\d+)\.")
HF_HEAD = re.compile(r"^(model\.norm\.|(transformer\.)?ln_f\.|lm_head\.weight$)")
NAT_EMBED = re.compile(r"^(embed|pos_embed)\.weight$")
# (or an HF name that no layout rule reads, passed through: Qwen3's q_norm)
NAT_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)\.")
NAT_HEAD = re.compile(r"^(final_norm\.|lm_head\.weight$)")


def group_of(name, native):
    emb, lay, head = (NAT_EMBED, NAT_LAYER, NAT_HEAD) if native else \
        (HF_EMBED, HF_LAYER, HF_HEAD)
    if emb.match(name):
        return ("embed",)
    m = lay.match(name)
    if m:
        return ("layer", int(m.group(1)))
    if head.match(name):
        return ("head",)
    fail("oracle: tensor %s belongs to no group" % name)


def embed_name(ts):
    for n in ("embed.weight", "model.embed_tokens.weight",
              "transformer.wte.weight", "wte.weight"):
        if n in ts:
            return n
    fail("oracle: no token embedding among %s" % sorted(ts)[:5])


# Tensor-parallel roles, from the rules of the brief.
NAT_ROLES = [
    (r"layers\.\d+\.attn\.q\.(weight|bias)", COL),
    (r"layers\.\d+\.attn\.kv\.(weight|bias)", KV2),
    (r"layers\.\d+\.attn\.o\.weight", ROW),
    (r"layers\.\d+\.attn\.o\.bias", REPL),
    (r"layers\.\d+\.mlp\.gate_up\.weight", COL2),
    (r"layers\.\d+\.mlp\.up\.(weight|bias)", COL),
    (r"layers\.\d+\.mlp\.down\.weight", ROW),
    (r"layers\.\d+\.mlp\.down\.bias", REPL),
    (r"layers\.\d+\.moe\.experts\.\d+\.gate_up\.weight", COL2),
    (r"layers\.\d+\.moe\.experts\.\d+\.down\.weight", ROW),
    (r"layers\.\d+\.moe\.router\.weight", REPL),
    (r"layers\.\d+\.(attn|mlp)_norm\.(weight|bias)", REPL),
    (r"model\.layers\.\d+\.self_attn\.[qk]_norm\.weight", REPL),  # passed through
    (r"final_norm\.(weight|bias)", REPL),
    (r"pos_embed\.weight", REPL),
    (r"(embed|lm_head)\.weight", VOCAB),
]
HF_ROLES = [
    (r"model\.layers\.\d+\.self_attn\.q_proj\.(weight|bias)", COL),
    (r"model\.layers\.\d+\.self_attn\.[kv]_proj\.(weight|bias)", KV),
    (r"model\.layers\.\d+\.self_attn\.o_proj\.weight", ROW),
    (r"model\.layers\.\d+\.self_attn\.o_proj\.bias", REPL),
    (r"model\.layers\.\d+\.mlp\.(gate|up)_proj\.(weight|bias)", COL),
    (r"model\.layers\.\d+\.mlp\.down_proj\.weight", ROW),
    (r"model\.layers\.\d+\.mlp\.down_proj\.bias", REPL),
    (r"model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w[13]\.weight",
     COL),
    (r"model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\.w2\.weight", ROW),
    (r"model\.layers\.\d+\.block_sparse_moe\.gate\.weight", REPL),
    (r"model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)"
     r"\.weight", REPL),
    # Qwen3's RMSNorm over each head of q and k: one weight of head_dim that
    # every head (so every rank) uses, as Megatron replicates it
    (r"model\.layers\.\d+\.self_attn\.[qk]_norm\.weight", REPL),
    (r"model\.norm\.weight", REPL),
    (r"(model\.embed_tokens|lm_head)\.weight", VOCAB),
]


def tp_role(name, native):
    for rx, role in NAT_ROLES if native else HF_ROLES:
        if re.fullmatch(rx, name):
            return role
    fail("oracle: no tensor-parallel rule for %s" % name)


# ------------------------------------------------------------ shards

rows = cn.split_rows


def cat(dim, parts):
    a = np.concatenate([p.arr for p in parts], axis=dim)
    return T(parts[0].dtype, list(a.shape), a)


def col_part(t, n, r, what):
    R = t.shape[0]
    if R % n:
        fail("oracle: %s: %d rows do not split %d ways" % (what, R, n))
    return rows(t, r * R // n, (r + 1) * R // n)


def kv_part(t, n, r, kvh, what):
    R = t.shape[0]
    if R % kvh:
        fail("oracle: %s: %d rows are not %d KV heads" % (what, R, kvh))
    hd = R // kvh
    if n <= kvh:
        per = kvh // n
        return rows(t, r * per * hd, (r + 1) * per * hd)
    h = r // (n // kvh)
    return rows(t, h * hd, (h + 1) * hd)


def vocab_padded(t, n):
    V = t.shape[0]
    return (V + n - 1) // n * n


def vocab_part(t, n, r):
    V = t.shape[0]
    per = vocab_padded(t, n) // n
    a, b = r * per, (r + 1) * per
    real = rows(t, min(a, V), min(b, V))
    pad = b - max(a, V)
    if pad <= 0:
        return real
    z = np.zeros([pad] + t.shape[1:], dtype=t.arr.dtype)
    return cat(0, [real, T(t.dtype, z.shape, z)])


def shard(t, role, n, r, kvh, what):
    if role == REPL:
        return t
    if role == COL:
        return col_part(t, n, r, what)
    if role == ROW:
        if len(t.shape) != 2 or t.shape[1] % n:
            fail("oracle: %s: shape %s does not split %d ways on dim 1" %
                 (what, t.shape, n))
        C = t.shape[1]
        a = t.arr[:, r * C // n:(r + 1) * C // n]
        return T(t.dtype, list(a.shape), a)
    if role == COL2:
        if t.shape[0] % 2:
            fail("oracle: %s: odd rows %d" % (what, t.shape[0]))
        h = t.shape[0] // 2
        return cat(0, [col_part(rows(t, 0, h), n, r, what),
                       col_part(rows(t, h, 2 * h), n, r, what)])
    if role == KV:
        return kv_part(t, n, r, kvh, what)
    if role == KV2:
        h = t.shape[0] // 2
        return cat(0, [kv_part(rows(t, 0, h), n, r, kvh, what),
                       kv_part(rows(t, h, 2 * h), n, r, kvh, what)])
    if role == VOCAB:
        return vocab_part(t, n, r)
    fail("oracle: role %s" % role)


def nbytes(t):
    return t.arr.nbytes


def rank_source_bytes(full, role, n, r, kvh):
    """Bytes of the source that rank r's shard of a tensor is made of
    (the zero padding is made of none)."""
    if role == VOCAB:
        V = full.shape[0]
        per = vocab_padded(full, n) // n
        real = max(0, min((r + 1) * per, V) - min(r * per, V))
        return real * nbytes(full) // V if V else 0
    return nbytes(shard(full, role, n, r, kvh, "?"))


def check_reassembly(name, full, role, shards, n, kvh):
    """Concatenating the shards along the split dim gives the tensor back."""
    what = "reassembly of %s from %d ranks" % (name, n)
    if role == REPL:
        return
    if role in (COL, ROW):
        got = cat(0 if role == COL else 1, shards)
    elif role == COL2:
        h = [s.shape[0] // 2 for s in shards]
        got = cat(0, [rows(s, 0, k) for s, k in zip(shards, h)] +
                  [rows(s, k, 2 * k) for s, k in zip(shards, h)])
    elif role == VOCAB:
        allr = cat(0, shards)
        V = full.shape[0]
        if allr.shape[0] != vocab_padded(full, n):
            fail("%s: %d rows, expected %d" % (what, allr.shape[0],
                                               vocab_padded(full, n)))
        pad = allr.arr[V:]
        if pad.size and np.any(pad.view("u%d" % pad.itemsize) != 0):
            fail("%s: padding rows %d..%d are not all zero bits" %
                 (what, V, allr.shape[0]))
        got = rows(allr, 0, V)
    else:
        # k and v: per part; with N > kv_heads the ranks of one KV head
        # hold copies, take one rank per head
        parts = [shards] if role == KV else \
            [[rows(s, 0, s.shape[0] // 2) for s in shards],
             [rows(s, s.shape[0] // 2, s.shape[0]) for s in shards]]
        step = n // kvh if n > kvh else 1
        got = cat(0, [cat(0, p[::step]) for p in parts])
    compare(what, got, full, False)


# ------------------------------------------------------------ views

def listdir(p):
    try:
        return sorted(os.listdir(p))
    except OSError as e:
        fail("listdir %s: %s" % (p, e))


def check_members(d, kind, n):
    """d lists exactly KIND-0 .. KIND-<n-1>; KIND-<n> is ENOENT."""
    want = ["%s-%d" % (kind, k) for k in range(n)]
    if listdir(d) != sorted(want):
        fail("%s: lists %s, expected %s" % (d, listdir(d), want))
    expect_enoent(os.path.join(d, "%s-%d" % (kind, n)))


def load_st(path):
    """One generated safetensors file: reference writer's format, metadata
    format=pt; -> {name: T}."""
    meta, ts = parse_safetensors(path, read_file(path), True)
    if meta is None or meta.get("format") != "pt":
        fail("%s: __metadata__ %r, expected format=pt" % (path, meta))
    return {name: t for name, t, _, _ in ts}


def check_cfg(path, cfg, extra, torch_dtype=None):
    want = dict(cfg)
    want.update(extra)
    cn.check_config(path, want, torch_dtype)


def load_rank_dir(d):
    files = listdir(d)
    if files != ["config.json", "model.safetensors"]:
        fail("%s: files %s, expected config.json and model.safetensors" %
             (d, files))
    return load_st(os.path.join(d, "model.safetensors"))


def check_per_layer(mnt, base, dims, native, vdir="per-layer", to=None):
    d = os.path.join(mnt, vdir)
    want_files = {("embed",): "embed.safetensors",
                  ("head",): "head.safetensors"}
    for i in range(dims.layers):
        want_files[("layer", i)] = "layer-%03d.safetensors" % i
    exp = {}
    for name, t in base.items():
        g = group_of(name, native)
        if g not in want_files:
            fail("oracle: %s: group %s outside %d layers" %
                 (name, g, dims.layers))
        exp.setdefault(want_files[g], {})[name] = \
            cast(t, to) if to else t
    files = listdir(d)
    want = sorted(set(exp) | {"index.json"})
    if files != want:
        fail("%s: files %s, expected %s" % (d, files, want))
    where = {}
    for f in sorted(exp):
        got = load_st(os.path.join(d, f))
        for name in got:
            if name in where:
                fail("%s: %s in both %s and %s" % (d, name, where[name], f))
            where[name] = f
        compare_set("%s/%s" % (d, f), got, exp[f], nan_any=bool(to))
    try:
        idx = json.loads(read_file(os.path.join(d, "index.json")))
    except ValueError as e:
        fail("%s/index.json: not JSON: %s" % (d, e))
    if idx.get("weight_map") != where:
        wm = idx.get("weight_map") or {}
        bad = sorted(k for k in set(wm) | set(where)
                     if wm.get(k) != where.get(k))
        fail("%s/index.json: weight_map wrong for %s: got %s, files hold %s"
             % (d, bad[:4], [wm.get(k) for k in bad[:4]],
                [where.get(k) for k in bad[:4]]))
    total = sum(nbytes(t) for ts in exp.values() for t in ts.values())
    if idx.get("metadata", {}).get("total_size") != total:
        fail("%s/index.json: total_size %r, the files hold %d bytes" %
             (d, idx.get("metadata", {}).get("total_size"), total))
    return len(where)


def tp_expected(base, dims, native, n):
    """-> ({rank: {name: T}}, {name: role})"""
    roles = {name: tp_role(name, native) for name in base}
    exp = {r: {name: shard(t, roles[name], n, r, dims.kv_heads,
                           "%s (tp-%d)" % (name, n))
               for name, t in base.items()} for r in range(n)}
    return exp, roles


def tp_extra(dims, n, r):
    return {"tp_size": n, "tp_rank": r,
            "tp_num_attention_heads": dims.heads // n,
            "tp_num_key_value_heads": max(dims.kv_heads // n, 1),
            "tp_intermediate_size": dims.inter // n,
            "tp_vocab_size_padded": (dims.vocab + n - 1) // n * n}


def check_tp(mnt, base, cfg, dims, native, n):
    d = os.path.join(mnt, "tp-%d" % n)
    check_members(d, "rank", n)
    exp, roles = tp_expected(base, dims, native, n)
    got = {}
    for r in range(n):
        rd = os.path.join(d, "rank-%d" % r)
        got[r] = load_rank_dir(rd)
        compare_set(rd, got[r], exp[r])
        check_cfg(os.path.join(rd, "config.json"), cfg, tp_extra(dims, n, r))
    for name, t in base.items():
        check_reassembly("tp-%d %s" % (n, name), t, roles[name],
                         [got[r][name] for r in range(n)], n, dims.kv_heads)
    return got, exp


def pp_ranges(layers, n):
    base, extra = divmod(layers, n)
    out, s = [], 0
    for k in range(n):
        e = s + base + (1 if k < extra else 0)
        out.append((s, e))
        s = e
    return out


def pp_expected(base, dims, native, n):
    rng = pp_ranges(dims.layers, n)
    exp = {k: {} for k in range(n)}
    for name, t in base.items():
        g = group_of(name, native)
        if g == ("embed",):
            k = 0
        elif g == ("head",):
            k = n - 1
        else:
            k = [j for j, (s, e) in enumerate(rng) if s <= g[1] < e][0]
        exp[k][name] = t
    if "lm_head.weight" not in base:
        if not dims.tied:
            fail("oracle: untied model without lm_head.weight")
        exp[n - 1]["lm_head.weight"] = base[embed_name(base)]
    return exp, rng


def check_pp(mnt, base, cfg, dims, native, n):
    d = os.path.join(mnt, "pp-%d" % n)
    check_members(d, "stage", n)
    exp, rng = pp_expected(base, dims, native, n)
    seen = {}
    for k in range(n):
        sd = os.path.join(d, "stage-%d" % k)
        got = load_rank_dir(sd)
        compare_set(sd, got, exp[k])
        layers = sorted({g[1] for g in map(lambda x: group_of(x, native), got)
                         if g[0] == "layer"})
        if layers != list(range(*rng[k])):
            fail("%s: layers %s, expected %d..%d" % (sd, layers, rng[k][0],
                                                     rng[k][1] - 1))
        for name in got:
            if name in seen and name != "lm_head.weight":
                fail("%s: %s also in stage %d" % (sd, name, seen[name]))
            seen.setdefault(name, k)
        s, e = rng[k]
        check_cfg(os.path.join(sd, "config.json"), cfg,
                  {"pp_size": n, "pp_stage": k, "pp_layer_start": s,
                   "pp_layer_end": e})
    missing = set(base) - set(seen)
    if missing:
        fail("%s: the stages miss %s" % (d, sorted(missing)))


def check_root(mnt, dims):
    root = listdir(mnt)
    at = [e for e in root if "@" in e]
    if at:
        fail("ls %s lists %s" % (mnt, at))
    tp = sorted(int(m.group(1)) for e in root
                for m in [re.fullmatch(r"tp-(\d+)", e)] if m)
    want = [n for n in range(2, dims.heads + 1) if dims.tp_valid(n)]
    if tp != want:
        fail("%s: lists tp-%s, the valid N are %s" % (mnt, tp, want))
    pp = sorted(int(m.group(1)) for e in root
                for m in [re.fullmatch(r"pp-(\d+)", e)] if m)
    wpp = list(range(2, min(dims.layers, PP_MAX) + 1))
    if pp != wpp:
        fail("%s: lists pp-%s, expected %s" % (mnt, pp, wpp))
    if "per-layer" not in root:
        fail("%s: no per-layer/" % mnt)
    bad = ["tp-0", "tp-1", "tp-02", "tp-%d" % (2 * dims.heads), "tp-",
           "pp-0", "pp-1", "pp-%d" % (min(dims.layers, PP_MAX) + 1)]
    bad += ["tp-%d" % n for n in range(2, dims.heads + 1)
            if not dims.tp_valid(n)]
    if not dims.tp_valid(3):
        bad.append("tp-3@bf16")
    for b in bad:
        expect_enoent(os.path.join(mnt, b))
    return want, wpp


def check_readme(mnt, valid):
    text = read_file(os.path.join(mnt, "README")).decode("utf-8", "replace")
    named = sorted({int(x) for x in re.findall(r"\btp-(\d+)\b", text)})
    if named != valid:
        fail("%s/README names tp-%s, the valid ones are tp-%s" %
             (mnt, named, valid))


def check_casts(mnt, base, cfg, dims, native, hf_native_pl, pl_base, tps, pps):
    n = 0
    if 2 in tps:
        exp, _ = tp_expected(base, dims, native, 2)
        rd = os.path.join(mnt, "tp-2@fp32", "rank-1")
        got = load_rank_dir(rd)
        compare_set(rd, got, {k: cast(t, "fp32")
                              for k, t in exp[1].items()}, True)
        served = load_rank_dir(os.path.join(mnt, "tp-2", "rank-1"))
        compare_set(rd + " (against the fp32 cast of tp-2/rank-1)", got,
                    {k: cast(t, "fp32") for k, t in served.items()}, True)
        check_cfg(os.path.join(rd, "config.json"), cfg, tp_extra(dims, 2, 1),
                  "float32")
        n += len(got)
    if tps:
        m = max(tps)
        exp, _ = tp_expected(base, dims, native, m)
        rd = os.path.join(mnt, "tp-%d@bf16" % m, "rank-0")
        got = load_rank_dir(rd)
        compare_set(rd, got, {k: cast(t, "bf16")
                              for k, t in exp[0].items()}, True)
        check_cfg(os.path.join(rd, "config.json"), cfg, tp_extra(dims, m, 0),
                  "bfloat16")
        n += len(got)
    if 2 in pps:
        exp, rng = pp_expected(base, dims, native, 2)
        sd = os.path.join(mnt, "pp-2@fp16", "stage-1")
        got = load_rank_dir(sd)
        compare_set(sd, got, {k: cast(t, "fp16")
                              for k, t in exp[1].items()}, True)
        check_cfg(os.path.join(sd, "config.json"), cfg,
                  {"pp_size": 2, "pp_stage": 1, "pp_layer_start": rng[1][0],
                   "pp_layer_end": rng[1][1]}, "float16")
        n += len(got)
    n += check_per_layer(mnt, pl_base, dims, hf_native_pl,
                         "per-layer@fp32", "fp32")
    return n


# ------------------------------------------------------------ stats

def read_stats(mnt):
    p = os.path.join(mnt, ".ckptfs", "stats")
    with open(p, "rb") as f:
        data = f.read()
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as e:
        fail("%s: not JSON: %s (%r)" % (p, e, data[:200]))


def read_direct(path):
    """The file's bytes with O_DIRECT reads into an aligned buffer."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 1 << 20)
    out = bytearray()
    try:
        while True:
            k = os.preadv(fd, [buf], len(out))
            if k == 0:
                break
            out += buf[:k]
    finally:
        os.close(fd)
        buf.close()
    return bytes(out)


def stats_case(src, mnt, cfg, dims, base, n, k):
    st0 = read_stats(mnt)
    touched = {f: b for f, b in st0.get("source_bytes_read", {}).items() if b}
    if touched or st0.get("bytes_served") or st0.get("views"):
        fail("fresh mount: stats before any read show views %s, "
             "source_bytes_read %s, bytes_served %s" %
             (st0.get("views"), touched, st0.get("bytes_served")))
    path = os.path.join(mnt, "tp-%d" % n, "rank-%d" % k, "model.safetensors")
    data = read_direct(path)
    size = os.stat(path).st_size
    if len(data) != size:
        fail("%s: O_DIRECT read %d bytes, st_size %d" % (path, len(data), size))
    meta, ts = parse_safetensors(path, data, True)
    got = {name: t for name, t, _, _ in ts}
    exp, roles = tp_expected(base, dims, True, n)
    compare_set(path + " (O_DIRECT)", got, exp[k])
    (hlen,) = struct.unpack("<Q", data[:8])
    st = read_stats(mnt)

    # the test's own classification of the rank's bytes
    part = kv = repl = 0
    need = 0
    for name, t in base.items():
        role = roles[name]
        if role == REPL:
            repl += nbytes(t)
        elif role in (KV, KV2):
            kv += nbytes(t)
        else:
            part += nbytes(t)
        need += rank_source_bytes(t, role, n, k, dims.kv_heads)
    bound = part // n + kv // min(n, dims.kv_heads) + repl
    srcs = st.get("source_bytes_read", {})
    stfiles = [f for f in srcs if f.endswith(".safetensors")]
    if stfiles != ["model.safetensors"] or \
            not os.path.isfile(os.path.join(src, "model.safetensors")):
        fail("stats: source_bytes_read names %s, expected model.safetensors"
             % sorted(srcs))
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        (shdr,) = struct.unpack("<Q", f.read(8))
    slack = 8 + shdr
    got_src = srcs["model.safetensors"]
    print("check_partition: tp-%d/rank-%d: %d bytes served, source read %d; "
          "shard needs %d; bound %d = partitioned %d/%d + kv %d/%d + "
          "replicated %d (+ %d header slack); model %d bytes" %
          (n, k, size, got_src, need, bound, part, n, kv,
           min(n, dims.kv_heads), repl, slack, part + kv + repl))
    errs = []
    if got_src > bound + slack:
        errs.append("source_bytes_read[model.safetensors] = %d, above the "
                    "rank's share %d + header %d" % (got_src, bound, slack))
    if got_src < need:
        errs.append("source_bytes_read[model.safetensors] = %d, below the "
                    "%d source bytes the shard is made of" % (got_src, need))
    other = {f: b for f, b in srcs.items() if f != "model.safetensors" and b}
    if other:
        errs.append("other source files read: %s" % other)
    if st.get("views") != {"tp-%d" % n: size}:
        errs.append("views %s, expected {'tp-%d': %d}" %
                    (st.get("views"), n, size))
    if st.get("bytes_served") != size:
        errs.append("bytes_served %s, expected %d" %
                    (st.get("bytes_served"), size))
    if st.get("bytes_generated") != 8 + hlen:
        errs.append("bytes_generated %s, expected the header's %d" %
                    (st.get("bytes_generated"), 8 + hlen))
    if (st.get("bytes_from_source", 0) + st.get("bytes_computed", 0)
            != size - 8 - hlen):
        errs.append("bytes_from_source %s + bytes_computed %s != the %d "
                    "bytes of tensor data" % (st.get("bytes_from_source"),
                                              st.get("bytes_computed"),
                                              size - 8 - hlen))
    if not st.get("reads"):
        errs.append("reads %s" % st.get("reads"))
    if errs:
        fail("stats after reading %s: %s\n  stats: %s" %
             (path, "; ".join(errs), json.dumps(st, sort_keys=True)))


# ------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("mnt")
    ap.add_argument("--tp-hf", action="store_true",
                    help="the mount has -o tp=hf (tp-N, pp-N in HF names)")
    ap.add_argument("--per-layer-native", action="store_true",
                    help="the mount has -o per_layer=native")
    ap.add_argument("--stats", nargs=2, type=int, metavar=("N", "K"),
                    help="fresh mount: read tp-N/rank-K, check .ckptfs/stats")
    a = ap.parse_args()
    src, mnt = a.src, a.mnt
    errors = []

    def section(title, fn, *args):
        try:
            return fn(*args)
        except Mismatch as e:
            errors.append("%s: %s" % (title, e))
            print("check_partition: FAIL: %s: %s" % (title, e),
                  file=sys.stderr)
            return None

    try:
        cfg = json.loads(read_file(os.path.join(src, "config.json")))
        dims = Dims(cfg)
        hf, _, _, _ = cn.load_dir_tensors(src, False)
        layout, native, _, _ = cn.compute_native(hf, cfg)
        if native is None:
            fail("oracle: no native layout for %r" % cfg.get("model_type"))
    except Mismatch as e:
        print("check_partition: FAIL: %s" % e, file=sys.stderr)
        return 1

    if a.stats:
        n, k = a.stats
        section("stats", stats_case, src, mnt, cfg, dims, native, n, k)
        return 1 if errors else 0

    tp_native = not a.tp_hf
    base = native if tp_native else hf
    pl_base = native if a.per_layer_native else hf
    got = section("root", check_root, mnt, dims)
    tps, pps = got if got else ([n for n in range(2, dims.heads + 1)
                                 if dims.tp_valid(n)],
                                list(range(2, min(dims.layers, PP_MAX) + 1)))
    section("README", check_readme, mnt, tps)
    ntensors = section("per-layer", check_per_layer, mnt, pl_base, dims,
                       a.per_layer_native) or 0
    for n in tps:
        if section("tp-%d" % n, check_tp, mnt, base, cfg, dims, tp_native, n):
            ntensors += len(base) * n
    for n in pps:
        section("pp-%d" % n, check_pp, mnt, base, cfg, dims, tp_native, n)
    section("casts", check_casts, mnt, base, cfg, dims, tp_native,
            a.per_layer_native, pl_base, tps, pps)
    if errors:
        print("check_partition: %s: %d section(s) failed" %
              (mnt, len(errors)), file=sys.stderr)
        return 1
    print("check_partition: %s: layout %s, %s names (per-layer %s): "
          "per-layer, tp-%s, pp-%s and casts match (%d shards)" %
          (mnt, layout, "native" if tp_native else "HF",
           "native" if a.per_layer_native else "HF", tps, pps, ntensors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
