#!/usr/bin/python3
"""gen-model.py - write synthetic HuggingFace checkpoints for ckptfs tests.

Usage: gen-model.py PRESET OUTDIR [--seed N]

The checkpoints are shaped like real ones (tensor names, shapes, dtypes,
config.json keys, sharding and index.json as transformers writes them)
but hold random values.  The safetensors files are written here, without
the safetensors package, the way its reference writer does:

    u64 little-endian N | N bytes of JSON, padded with spaces to a
    multiple of 8 | data area

The JSON is compact, starts with "__metadata__": {"format": "pt"}, and
lists the tensors in data order: descending dtype alignment, then name.
data_offsets are [begin, end) relative to the data area and tile it with
no gap and no overlap.

Presets:
  tiny-llama     LLaMA, GQA, bf16, 2 layers, untied lm_head, 2 shards;
                 model.norm.weight holds +-0, +-inf, NaNs and subnormals
  gpt2           GPT-2, fp32, one file, names with the "transformer." prefix
  gpt2-noprefix  the same without the prefix
  mixed-dtypes   one file with a tensor of every dtype, scalar, empty,
                 3-d, 1xN and Nx1 tensors; unknown model_type
  llama-1b       Llama-3.2-1B shapes, bf16, tied embeddings, ~2.5 GB
  qwen2          Qwen2, fp16, q/k/v biases, GQA (4 heads, 2 KV heads), tied
                 embeddings (no lm_head.weight), one file; model.norm.weight
                 holds fp16 specials and bf16 rounding ties
  phi3           Phi-3, bf16, fused self_attn.qkv_proj and mlp.gate_up_proj,
                 GQA (8 heads, 2 KV heads: q has 64 rows of qkv_proj, k+v
                 32, so a split in halves is wrong), untied lm_head, one file
  mixtral        Mixtral, bf16, block_sparse_moe with 4 experts (gate, w1,
                 w2, w3), GQA, untied lm_head, one file
  cast-edges     one fp32 file of values at the edges of the fp32 -> bf16
                 and fp32 -> fp16 roundings (ties, overflow, subnormals,
                 NaN payloads) plus an int32 tensor; unknown model_type
  llama-gqa8     LLaMA, bf16, 8 heads / 2 KV heads (head_dim 8, hidden 64),
                 intermediate 96, 3 layers, vocab 100, untied lm_head, one
                 file: tp-2, tp-4 and tp-8 are valid (KV heads replicated
                 past 2 ranks), tp-3 is not; pp-2 is uneven
  qwen2-oddvocab Qwen2 as "qwen2" (q/k/v biases, 4 heads / 2 KV heads, tied
                 embeddings, fp16) with vocab 101, so the vocab-parallel
                 split pads with zero rows
  qwen3          Qwen3, bf16, no biases, per-head self_attn.q_norm/k_norm,
                 head_dim 32 with hidden 64 and 4 heads / 2 KV heads (heads
                 * head_dim != hidden), tied embeddings, one file
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

# safetensors dtype name -> numpy dtype used to store its raw bytes
STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}

CHUNK_ELEMS = 1 << 24


class Tensor:
    """One tensor: either a ready array or a chunk producer.

    produce() yields C-ordered numpy arrays of the storage dtype whose
    sizes add up to numel; big tensors use it so that they are never
    materialised whole."""

    def __init__(self, name, dtype, shape, data=None, produce=None):
        self.name = name
        self.dtype = dtype
        self.shape = [int(d) for d in shape]
        self.itemsize = STORAGE[dtype].itemsize
        numel = 1
        for d in self.shape:
            numel *= d
        self.numel = numel
        self.nbytes = numel * self.itemsize
        if data is not None:
            data = np.ascontiguousarray(data, dtype=STORAGE[dtype])
            if data.size != numel:
                raise ValueError("%s: %d values for shape %s"
                                 % (name, data.size, shape))
        self.data = data
        self.produce = produce

    def chunks(self):
        if self.data is not None:
            yield self.data.reshape(-1)
        else:
            yield from self.produce()


def write_safetensors(path, tensors, metadata=None):
    """Write tensors to path like the reference writer; return the header
    dict actually written (in order)."""
    if metadata is None:
        metadata = {"format": "pt"}
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in " + path)
    order = sorted(tensors, key=lambda t: (-t.itemsize, t.name))
    header = {"__metadata__": metadata}
    off = 0
    for t in order:
        header[t.name] = {"dtype": t.dtype, "shape": t.shape,
                          "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    text = json.dumps(header, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    total = 8 + len(text) + off
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in order:
            written = 0
            for c in t.chunks():
                c = np.ascontiguousarray(c, dtype=STORAGE[t.dtype])
                f.write(memoryview(c).cast("B"))
                written += c.nbytes
            if written != t.nbytes:
                raise RuntimeError("%s: wrote %d bytes, expected %d"
                                   % (t.name, written, t.nbytes))
        if f.tell() != total:
            raise RuntimeError("%s: size %d, expected %d"
                               % (path, f.tell(), total))
    return header, off


def write_json(path, obj):
    # transformers: json.dumps(indent=2, sort_keys=True) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_sharded(outdir, shards):
    """shards: list of tensor lists; writes model-0000K-of-0000N files and
    model.safetensors.index.json."""
    n = len(shards)
    weight_map = {}
    total = 0
    for k, tensors in enumerate(shards, 1):
        fname = "model-%05d-of-%05d.safetensors" % (k, n)
        _, size = write_safetensors(os.path.join(outdir, fname), tensors)
        total += size
        for t in tensors:
            weight_map[t.name] = fname
    write_json(os.path.join(outdir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})


# ---------------------------------------------------------------- values

def bf16_round(x):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaNs)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


BF16_SPECIALS = np.array([
    0x0000,  # +0
    0x8000,  # -0
    0x7F80,  # +inf
    0xFF80,  # -inf
    0x7FC0,  # quiet NaN
    0xFFC1,  # negative NaN with payload
    0x7F81,  # signalling NaN
    0x0001,  # smallest positive subnormal
    0x807F,  # largest negative subnormal
    0x0080,  # smallest normal
    0x7F7F,  # largest finite
    0x3F80,  # 1.0
], dtype=np.uint16)


def normal(rng, shape, std=0.02, mean=0.0, dtype=np.float32):
    return (rng.standard_normal(shape, dtype=np.float32) * std
            + mean).astype(dtype)


def bf16_normal(rng, shape, std=0.02, mean=0.0):
    return bf16_round(normal(rng, shape, std, mean))


def fast_bf16(rng, numel, norm=False):
    """Producer of finite bf16 values without Python loops.

    Weights: random sign and mantissa, exponent 120..123, i.e. values
    with magnitude in [2^-7, 2^-3).  Norms: 1.0 .. 1.24."""
    def produce():
        left = numel
        while left:
            k = min(left, CHUNK_ELEMS)
            raw = rng.integers(0, 1 << 64, size=(k + 3) // 4,
                               dtype=np.uint64, endpoint=False)
            u = raw.view(np.uint16)[:k]
            if norm:
                u &= 0x001F
                u |= 0x3F80
            else:
                u &= 0x81FF
                u |= 0x3C00
            yield u
            left -= k
    return produce


# ---------------------------------------------------------------- files

def write_passthrough(outdir, vocab, bos, eos, gen_extra=None):
    """A small but well-formed tokenizer.json and generation_config.json."""
    tokens = ["<unk>", "<s>", "</s>"]
    tokens += ["tok%d" % i for i in range(len(tokens), vocab)]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False,
             "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i in range(3)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel",
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "unk_token": "<unk>"},
    }
    with open(os.path.join(outdir, "tokenizer.json"), "w",
              encoding="utf-8") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
        f.write("\n")
    gen = {"_from_model_config": True, "bos_token_id": bos,
           "eos_token_id": eos, "transformers_version": "4.45.2"}
    if gen_extra:
        gen.update(gen_extra)
    write_json(os.path.join(outdir, "generation_config.json"), gen)


def llama_tensors(rng, c, fast=False):
    """HF LLaMA state dict, in state-dict order, grouped as
    [embed], [layer 0], ..., [layer L-1], [norm, lm_head]."""
    d = c["hidden_size"]
    heads = c["num_attention_heads"]
    kv = c["num_key_value_heads"]
    hd = d // heads
    inter = c["intermediate_size"]
    vocab = c["vocab_size"]

    def w(name, shape, norm=False):
        numel = 1
        for s in shape:
            numel *= s
        if fast:
            return Tensor(name, "BF16", shape,
                          produce=fast_bf16(rng, numel, norm))
        if norm:
            return Tensor(name, "BF16", shape,
                          bf16_normal(rng, shape, 0.1, 1.0))
        return Tensor(name, "BF16", shape, bf16_normal(rng, shape))

    groups = [[w("model.embed_tokens.weight", [vocab, d])]]
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        groups.append([
            w(p + "input_layernorm.weight", [d], norm=True),
            w(p + "self_attn.q_proj.weight", [heads * hd, d]),
            w(p + "self_attn.k_proj.weight", [kv * hd, d]),
            w(p + "self_attn.v_proj.weight", [kv * hd, d]),
            w(p + "self_attn.o_proj.weight", [d, heads * hd]),
            w(p + "post_attention_layernorm.weight", [d], norm=True),
            w(p + "mlp.gate_proj.weight", [inter, d]),
            w(p + "mlp.up_proj.weight", [inter, d]),
            w(p + "mlp.down_proj.weight", [d, inter]),
        ])
    last = [w("model.norm.weight", [d], norm=True)]
    if not c["tie_word_embeddings"]:
        last.append(w("lm_head.weight", [vocab, d]))
    groups.append(last)
    return groups


def llama_config(**kw):
    c = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "mlp_bias": False,
        "model_type": "llama",
        "pretraining_tp": 1,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "transformers_version": "4.45.2",
        "use_cache": True,
    }
    c.update(kw)
    c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    return c


def gen_tiny_llama(outdir, rng):
    c = llama_config(hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=160, vocab_size=101,
                     torch_dtype="bfloat16", tie_word_embeddings=False,
                     rms_norm_eps=1e-05, max_position_embeddings=256)
    groups = llama_tensors(rng, c)
    # special values, so that bf16 -> f32 widening is tested on them
    norm = groups[-1][0]
    assert norm.name == "model.norm.weight"
    norm.data[:len(BF16_SPECIALS)] = BF16_SPECIALS
    # shard as transformers would with a small max_shard_size:
    # embed + layer 0 | layer 1 + norm + lm_head
    half = 1 + (len(groups) - 2 + 1) // 2
    shard1 = [t for g in groups[:half] for t in g]
    shard2 = [t for g in groups[half:] for t in g]
    write_sharded(outdir, [shard1, shard2])
    write_json(os.path.join(outdir, "config.json"), c)
    write_passthrough(outdir, c["vocab_size"], 1, 2)


def gen_llama_1b(outdir, rng):
    # shapes of meta-llama/Llama-3.2-1B
    c = llama_config(hidden_size=2048, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256,
                     torch_dtype="bfloat16", tie_word_embeddings=True,
                     rms_norm_eps=1e-05, max_position_embeddings=131072,
                     bos_token_id=128000, eos_token_id=128001,
                     rope_theta=500000.0,
                     rope_scaling={"factor": 32.0, "high_freq_factor": 4.0,
                                   "low_freq_factor": 1.0,
                                   "original_max_position_embeddings": 8192,
                                   "rope_type": "llama3"})
    groups = llama_tensors(rng, c, fast=True)
    tensors = [t for g in groups for t in g]
    write_safetensors(os.path.join(outdir, "model.safetensors"), tensors)
    write_json(os.path.join(outdir, "config.json"), c)
    write_passthrough(outdir, 256, 1, 2,
                      {"bos_token_id": 128000, "eos_token_id": 128001,
                       "do_sample": True, "temperature": 0.6, "top_p": 0.9})


def gen_gpt2(outdir, rng, prefix="transformer."):
    d, L, heads, npos, vocab = 48, 2, 4, 32, 67
    c = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": 0,
        "embd_pdrop": 0.1,
        "eos_token_id": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": npos,
        "n_embd": d,
        "n_head": heads,
        "n_inner": None,
        "n_layer": L,
        "n_positions": npos,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "vocab_size": vocab,
    }
    p = prefix
    ts = [Tensor(p + "wte.weight", "F32", [vocab, d], normal(rng, [vocab, d])),
          Tensor(p + "wpe.weight", "F32", [npos, d],
                 normal(rng, [npos, d], 0.01))]
    mask = np.tril(np.ones((npos, npos), dtype=np.float32))
    for i in range(L):
        h = "%sh.%d." % (p, i)
        ts += [
            Tensor(h + "ln_1.weight", "F32", [d], normal(rng, [d], 0.1, 1.0)),
            Tensor(h + "ln_1.bias", "F32", [d], normal(rng, [d], 0.01)),
            Tensor(h + "attn.bias", "F32", [1, 1, npos, npos], mask),
            Tensor(h + "attn.c_attn.weight", "F32", [d, 3 * d],
                   normal(rng, [d, 3 * d])),
            Tensor(h + "attn.c_attn.bias", "F32", [3 * d],
                   normal(rng, [3 * d], 0.01)),
            Tensor(h + "attn.c_proj.weight", "F32", [d, d],
                   normal(rng, [d, d])),
            Tensor(h + "attn.c_proj.bias", "F32", [d],
                   normal(rng, [d], 0.01)),
            Tensor(h + "ln_2.weight", "F32", [d], normal(rng, [d], 0.1, 1.0)),
            Tensor(h + "ln_2.bias", "F32", [d], normal(rng, [d], 0.01)),
            Tensor(h + "mlp.c_fc.weight", "F32", [d, 4 * d],
                   normal(rng, [d, 4 * d])),
            Tensor(h + "mlp.c_fc.bias", "F32", [4 * d],
                   normal(rng, [4 * d], 0.01)),
            Tensor(h + "mlp.c_proj.weight", "F32", [4 * d, d],
                   normal(rng, [4 * d, d])),
            Tensor(h + "mlp.c_proj.bias", "F32", [d],
                   normal(rng, [d], 0.01)),
        ]
    ts += [Tensor(p + "ln_f.weight", "F32", [d], normal(rng, [d], 0.1, 1.0)),
           Tensor(p + "ln_f.bias", "F32", [d], normal(rng, [d], 0.01))]
    write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    write_json(os.path.join(outdir, "config.json"), c)
    write_passthrough(outdir, vocab, 0, 0)


def gen_gpt2_noprefix(outdir, rng):
    gen_gpt2(outdir, rng, prefix="")


def gen_mixed(outdir, rng):
    f64 = rng.standard_normal((3, 5))
    f64.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    f32 = normal(rng, [2, 3, 4], 1.0)
    f32.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 1e-45]
    f16 = normal(rng, [4, 6], 1.0, dtype=np.float16)
    f16.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 6e-8, 65504]
    bf16 = bf16_normal(rng, [2, 3, 5], 1.0)
    bf16[0, 0, :5] = BF16_SPECIALS[:5]
    bf16[1, 0, :5] = BF16_SPECIALS[5:10]
    i64 = rng.integers(-2**40, 2**40, size=(1, 9), dtype=np.int64)
    i64[0, :2] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    i32 = rng.integers(-2**31, 2**31, size=(9, 1), dtype=np.int32)
    i32[:2, 0] = [np.iinfo(np.int32).min, np.iinfo(np.int32).max]
    i16 = rng.integers(-2**15, 2**15, size=(10,), dtype=np.int16)
    i8 = np.arange(-6, 6, dtype=np.int8).reshape(3, 4)
    i8.flat[:2] = [-128, 127]
    u8 = rng.integers(0, 256, size=(5, 5), dtype=np.uint8)
    u8.flat[:2] = [0, 255]
    boolean = (rng.integers(0, 2, size=(2, 7)) == 1).astype(np.uint8)
    every_byte = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ts = [
        Tensor("encoder.f64.weight", "F64", [3, 5], f64),
        Tensor("encoder.f32.cube", "F32", [2, 3, 4], f32),
        Tensor("encoder.f32.scalar", "F32", [],
               np.array([3.25], dtype=np.float32)),
        Tensor("encoder.f32.row", "F32", [1, 7], normal(rng, [1, 7])),
        Tensor("encoder.f32.col", "F32", [7, 1], normal(rng, [7, 1])),
        Tensor("encoder.f16.weight", "F16", [4, 6], f16),
        Tensor("encoder.f16.empty", "F16", [0, 3], np.zeros(0)),
        Tensor("encoder.bf16.cube", "BF16", [2, 3, 5], bf16),
        Tensor("encoder.bf16.scalar", "BF16", [],
               np.array([0xC0A0], dtype=np.uint16)),  # -5.0
        Tensor("encoder.bf16.empty", "BF16", [0, 3], np.zeros(0)),
        Tensor("ids.i64.row", "I64", [1, 9], i64),
        Tensor("ids.i32.col", "I32", [9, 1], i32),
        Tensor("ids.i16", "I16", [10], i16),
        Tensor("ids.i8", "I8", [3, 4], i8),
        Tensor("ids.i64.scalar", "I64", [], np.array([-42])),
        Tensor("bytes.u8", "U8", [5, 5], u8),
        Tensor("mask.bool", "BOOL", [2, 7], boolean),
        Tensor("quant.f8_e4m3.all", "F8_E4M3", [16, 16], every_byte),
        Tensor("quant.f8_e5m2.all", "F8_E5M2", [16, 16], every_byte),
        Tensor("quant.f8_e4m3.empty", "F8_E4M3", [0], np.zeros(0)),
    ]
    write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    write_json(os.path.join(outdir, "config.json"), {
        "architectures": ["SomethingNewModel"],
        "model_type": "something-new",
        "hidden_size": 7,
        "torch_dtype": "float32",
        "transformers_version": "4.45.2",
    })
    write_passthrough(outdir, 16, 1, 2)


# ------------------------------------------------- more LLaMA-family models

def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _weight_maker(rng, dtype):
    """w(name, shape, norm=False, std=0.02) -> Tensor of dtype BF16 or F16
    with normal values (norms around 1.0)."""
    def w(name, shape, norm=False, std=0.02):
        mean = 1.0 if norm else 0.0
        std = 0.1 if norm else std
        if dtype == "BF16":
            return Tensor(name, dtype, shape,
                          bf16_normal(rng, shape, std, mean))
        return Tensor(name, dtype, shape,
                      normal(rng, shape, std, mean, dtype=np.float16))
    return w


# fp16 bit patterns: specials, and values whose bf16 rounding is a tie
# (fp16 has 3 more mantissa bits than bf16: low bits 100 are halfway)
F16_SPECIALS = np.array([
    0x0000,  # +0
    0x8000,  # -0
    0x7C00,  # +inf
    0xFC00,  # -inf
    0x7E00,  # quiet NaN
    0xFE01,  # negative NaN with payload
    0x0001,  # smallest subnormal (2^-24)
    0x83FF,  # largest negative subnormal
    0x7BFF,  # 65504, largest finite
    0x3C04,  # 1 + 2^-8: bf16 tie, rounds down to 1.0 (even)
    0x3C0C,  # 1 + 3*2^-8: bf16 tie, rounds up to 1 + 2^-6
    0xBC14,  # -(1 + 5*2^-8): tie, rounds to even -(1 + 2^-6)
    0x3C05,  # just above a tie: rounds up
    0x3C00,  # 1.0
], dtype=np.uint16)


def _llama_family_layers(w, c, i, qkv_bias=False, fused=False, experts=0, qk_norm=False):
    d = c["hidden_size"]
    heads = c["num_attention_heads"]
    kv = c["num_key_value_heads"]
    hd = c["head_dim"] if "head_dim" in c else d // heads
    inter = c["intermediate_size"]
    p = "model.layers.%d." % i
    ts = [w(p + "input_layernorm.weight", [d], norm=True)]
    if fused:
        ts.append(w(p + "self_attn.qkv_proj.weight",
                    [(heads + 2 * kv) * hd, d]))
    else:
        ts += [w(p + "self_attn.q_proj.weight", [heads * hd, d]),
               w(p + "self_attn.k_proj.weight", [kv * hd, d]),
               w(p + "self_attn.v_proj.weight", [kv * hd, d])]
        if qk_norm:  # Qwen3: an RMSNorm weight over each head of q and of k
            ts += [w(p + "self_attn.q_norm.weight", [hd], norm=True),
                   w(p + "self_attn.k_norm.weight", [hd], norm=True)]
        if qkv_bias:
            ts += [w(p + "self_attn.q_proj.bias", [heads * hd], std=0.1),
                   w(p + "self_attn.k_proj.bias", [kv * hd], std=0.1),
                   w(p + "self_attn.v_proj.bias", [kv * hd], std=0.1)]
    ts += [w(p + "self_attn.o_proj.weight", [d, heads * hd]),
           w(p + "post_attention_layernorm.weight", [d], norm=True)]
    if experts:
        m = p + "block_sparse_moe."
        ts.append(w(m + "gate.weight", [experts, d]))
        for e in range(experts):
            x = "%sexperts.%d." % (m, e)
            ts += [w(x + "w1.weight", [inter, d]),
                   w(x + "w2.weight", [d, inter]),
                   w(x + "w3.weight", [inter, d])]
    elif fused:
        ts += [w(p + "mlp.gate_up_proj.weight", [2 * inter, d]),
               w(p + "mlp.down_proj.weight", [d, inter])]
    else:
        ts += [w(p + "mlp.gate_proj.weight", [inter, d]),
               w(p + "mlp.up_proj.weight", [inter, d]),
               w(p + "mlp.down_proj.weight", [d, inter])]
    return ts


def _llama_family(outdir, rng, c, dtype, specials, **kw):
    w = _weight_maker(rng, dtype)
    ts = [w("model.embed_tokens.weight", [c["vocab_size"], c["hidden_size"]])]
    for i in range(c["num_hidden_layers"]):
        ts += _llama_family_layers(w, c, i, **kw)
    norm = w("model.norm.weight", [c["hidden_size"]], norm=True)
    norm.data[:len(specials)] = specials
    ts.append(norm)
    if not c["tie_word_embeddings"]:
        ts.append(w("lm_head.weight", [c["vocab_size"], c["hidden_size"]]))
    write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    write_json(os.path.join(outdir, "config.json"), c)
    write_passthrough(outdir, c["vocab_size"], c["bos_token_id"],
                      c["eos_token_id"])


def qwen2_config(vocab_size):
    # keys of Qwen/Qwen2-0.5B's config.json
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 160,
        "max_position_embeddings": 256,
        "max_window_layers": 2,
        "model_type": "qwen2",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 256,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def gen_qwen2(outdir, rng):
    _llama_family(outdir, rng, qwen2_config(103), "F16", F16_SPECIALS,
                  qkv_bias=True)


def gen_qwen3(outdir, rng):
    # keys of Qwen/Qwen3-0.6B's config.json (its head_dim, 128, is not
    # hidden / heads either)
    c = dict(qwen2_config(103), architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=32,
             attention_bias=False, torch_dtype="bfloat16", transformers_version="4.51.0")
    for k in ("max_window_layers", "sliding_window", "use_sliding_window"):
        del c[k]
    _llama_family(outdir, rng, c, "BF16", BF16_SPECIALS, qk_norm=True)


def gen_phi3(outdir, rng):
    # keys of microsoft/Phi-3-medium-4k-instruct's config.json (GQA)
    c = {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 96,
        "max_position_embeddings": 256,
        "model_type": "phi3",
        "num_attention_heads": 8,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "original_max_position_embeddings": 256,
        "pad_token_id": 2,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sliding_window": 255,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "vocab_size": 97,
    }
    _llama_family(outdir, rng, c, "BF16", BF16_SPECIALS, fused=True)


def gen_mixtral(outdir, rng):
    # keys of mistralai/Mixtral-8x7B-v0.1's config.json
    c = {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 96,
        "max_position_embeddings": 256,
        "model_type": "mixtral",
        "num_attention_heads": 4,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "num_local_experts": 4,
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.02,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.45.2",
        "use_cache": True,
        "vocab_size": 89,
    }
    _llama_family(outdir, rng, c, "BF16", BF16_SPECIALS,
                  experts=c["num_local_experts"])


def gen_cast_edges(outdir, rng):
    u = [
        0x00000000, 0x80000000,  # +-0
        0x7F800000, 0xFF800000,  # +-inf
        0x7FC00000, 0xFFC12345,  # quiet NaNs, one with payload
        0x7F800001, 0x7FBFFFFF,  # signalling NaNs
        0x3F808000,  # bf16 tie -> 1.0 (even)
        0x3F818000,  # bf16 tie -> up (odd below)
        0xBF808000, 0xBF818000,  # negative ties
        0x3F808001, 0x3F807FFF,  # just above / below a tie
        0x7F7F7FFF,  # rounds to bf16 max 0x7F7F
        0x7F7F8000,  # tie at the top: rounds to inf
        0x7F7FFFFF,  # FLT_MAX -> bf16 inf
        0xFF7FFFFF,  # -FLT_MAX -> -inf
        0x00000001,  # smallest fp32 subnormal -> bf16 +0
        0x00008000,  # subnormal tie -> 0 (even)
        0x00018000,  # subnormal tie -> up
        0x007FFFFF,  # largest subnormal -> bf16 rounds to 0x0080
        0x477FEFFF,  # 65519.996: fp16 -> 65504
        0x477FF000,  # 65520: fp16 tie -> inf
        0x477FE000,  # 65504 exactly
        0x33800000,  # 2^-24: smallest fp16 subnormal
        0x33000000,  # 2^-25: fp16 tie -> 0
        0x33000001,  # just above 2^-25 -> 2^-24
        0x33C00000,  # 1.5 * 2^-24: fp16 tie -> 2^-23
        0x38800000,  # 2^-14: smallest fp16 normal
        0x3F801000,  # 1 + 2^-11: fp16 tie -> 1.0
        0x3F803000,  # 1 + 3*2^-11: fp16 tie -> up
        0x3F800000,  # 1.0
        0xC0A00000,  # -5.0
    ]
    edges = np.array(u, dtype=np.uint32).view(np.float32)
    # random words, with every low-half pattern class represented
    bits = rng.integers(0, 1 << 32, size=(16, 32), dtype=np.uint64)
    bits = bits.astype(np.uint32)
    bits[:, 0] = (bits[:, 0] & 0xFFFF0000) | 0x8000     # exact ties
    bits[:, 1] = (bits[:, 1] & 0xFFFF0000) | 0x7FFF
    bits[:, 2] = (bits[:, 2] & 0xFFFF0000) | 0x8001
    ints = rng.integers(-2**31, 2**31, size=(3, 5), dtype=np.int32)
    ts = [
        Tensor("edges.f32", "F32", [len(u)], edges),
        Tensor("random.f32", "F32", [16, 32], bits.view(np.float32)),
        Tensor("normal.f32", "F32", [8, 8], normal(rng, [8, 8], 100.0)),
        Tensor("ids.i32", "I32", [3, 5], ints),
    ]
    write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    write_json(os.path.join(outdir, "config.json"), {
        "architectures": ["CastEdgesModel"],
        "model_type": "cast-edges",
        "hidden_size": 8,
        "torch_dtype": "float32",
        "transformers_version": "4.45.2",
    })


def gen_llama_gqa8(outdir, rng):
    c = llama_config(hidden_size=64, num_hidden_layers=3,
                     num_attention_heads=8, num_key_value_heads=2,
                     intermediate_size=96, vocab_size=100,
                     torch_dtype="bfloat16", tie_word_embeddings=False,
                     rms_norm_eps=1e-05, max_position_embeddings=256)
    _llama_family(outdir, rng, c, "BF16", BF16_SPECIALS)


def gen_qwen2_oddvocab(outdir, rng):
    # gen_qwen2's config with an odd vocabulary that no N divides
    _llama_family(outdir, rng, qwen2_config(101), "F16", F16_SPECIALS,
                  qkv_bias=True)


PRESETS = {
    "tiny-llama": gen_tiny_llama,
    "gpt2": gen_gpt2,
    "gpt2-noprefix": gen_gpt2_noprefix,
    "mixed-dtypes": gen_mixed,
    "llama-1b": gen_llama_1b,
    "qwen2": gen_qwen2,
    "phi3": gen_phi3,
    "mixtral": gen_mixtral,
    "cast-edges": gen_cast_edges,
    "llama-gqa8": gen_llama_gqa8,
    "qwen2-oddvocab": gen_qwen2_oddvocab,
    "qwen3": gen_qwen3,
}


def main():
    ap = argparse.ArgumentParser(
        description="Write a synthetic HuggingFace checkpoint.",
        epilog="presets: " + ", ".join(PRESETS))
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    PRESETS[a.preset](a.outdir, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
