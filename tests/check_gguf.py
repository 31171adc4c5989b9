#!/usr/bin/python3
"""check_gguf.py - fixtures and an independent numpy oracle for the gguf/ view.

Usage:
  check_gguf.py gen PRESET OUTDIR        write a tiny model with a real BPE tokenizer
  check_gguf.py check SRC FILE VARIANT   parse FILE (a GGUF) and compare every
                                         header field, key and tensor with the
                                         numpy transformation of SRC
  check_gguf.py expect SRC PROMPT N [VARIANT]
                                         JSON: the prompt's token ids and the
                                         numpy forward pass's greedy
                                         continuation and next-token
                                         probabilities at each step, with the
                                         weights as VARIANT's GGUF holds them
  check_gguf.py compare EXPECT.json LLAMA.json TOL
                                         llama.cpp's tokens and probabilities
                                         against the numpy forward pass

Presets:
  llama3  the llama preset with LLaMA 3 rope scaling (rope_freqs.weight)
  llama   LLaMA, bf16, GQA (4 heads, 2 KV heads), 2 layers, untied lm_head, a
          sentencepiece-style BPE with byte fallback trained here on a few
          sentences (tokenizer.json + tokenizer_config.json, as HF writes
          Llama 2's); weights large enough that a wrong Q/K row order changes
          the logits
  qwen2   Qwen2, fp16, q/k/v biases, GQA, tied embeddings, byte-level BPE
  phi3    Phi-3, bf16, fused qkv_proj and gate_up_proj (kept fused in GGUF),
          GQA, sliding_window, untied lm_head, sentencepiece-style BPE
  mixtral Mixtral, bf16, 4 experts of which 2 are used, untied, sentencepiece
  qwen3moe Qwen3-MoE, bf16, Qwen3's attention, 4 experts of which 2 are used
  qwen3   Qwen3, bf16, no biases, per-head q_norm/k_norm, head_dim 32 with
          hidden 64 / 4 heads (heads * head_dim != hidden), GQA, tied
          embeddings, byte-level BPE split by Qwen's regex (pre "qwen2")
  gpt2    GPT-2, fp32, "transformer." prefix, a byte-level BPE (GPT-2 style)

Variants: "" (source dtype), f32, f16, bf16, q8_0.

Written from the GGUF definition (ggml's gguf.h, gguf-py) and llama.cpp's
converter rules, not from ckptfs: this file never imports the code it tests.
"""

import importlib.util
import json
import math
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stlib  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "genmodel", os.path.join(HERE, "..", "examples", "gen-model.py"))
genmodel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(genmodel)


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


# ------------------------------------------------------------ tokenizers

CORPUS = ("once upon a time there was a little llama that liked to read "
          "files from a mounted file system and the llama read the files "
          "one at a time until the time ran out and then the little llama "
          "slept there")
SP = "\u2581"


def train_bpe(words, nmerges):
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties:
    the smallest pair); words: list of symbol lists."""
    words = [list(w) for w in words]
    merges = []
    for _ in range(nmerges):
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == best:
                    w[i:i + 2] = [w[i] + w[i + 1]]
                else:
                    i += 1
    return merges


def spm_tokenizer():
    """A Llama-2-style tokenizer.json: BPE with byte fallback, U+2581 for
    spaces, a prepended U+2581."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    words = [SP + w for w in CORPUS.split()]
    chars = sorted(set("".join(words)))
    tokens += chars
    merges = train_bpe(words, 60)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False,
             "lstrip": False, "rstrip": False, "normalized": False,
             "special": True} for i in range(3)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SP},
            {"type": "Replace", "pattern": {"String": " "}, "content": SP}]},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ["%s %s" % m for m in merges]},
    }
    cfg = {"add_bos_token": True, "add_eos_token": False,
           "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
           "pad_token": None, "tokenizer_class": "LlamaTokenizer",
           "model_max_length": 128}
    return tok, cfg


def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def gpt2_tokenizer():
    """A byte-level BPE like GPT-2's: 256 byte symbols, merges, and
    <|endoftext|> as the last id."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = [("" if i == 0 else b2u[0x20]) + w
             for i, w in enumerate(CORPUS.split())]
    merges = train_bpe(words, 60)
    for a, b in merges:
        if a + b not in tokens:
            tokens.append(a + b)
    tokens.append("<|endoftext|>")
    eot = len(tokens) - 1
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": eot, "content": "<|endoftext|>",
                          "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": ["%s %s" % m for m in merges]},
    }
    cfg = {"add_prefix_space": False, "bos_token": "<|endoftext|>",
           "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
           "model_max_length": 128, "tokenizer_class": "GPT2Tokenizer"}
    return tok, cfg


def bpe_encode(symbols, ranks):
    """Merge the lowest-ranked adjacent pair, leftmost first, until none."""
    s = list(symbols)
    while True:
        best = None
        for i in range(len(s) - 1):
            r = ranks.get((s[i], s[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return s
        i = best[1]
        s[i:i + 2] = [s[i] + s[i + 1]]


def tokenize(tok, cfg, text):
    """Token ids of text (with BOS when the tokenizer adds it)."""
    vocab = tok["model"]["vocab"]
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(tok["model"]["merges"])}
    ids = []
    if tok["model"]["byte_fallback"]:
        if cfg.get("add_bos_token"):
            ids.append(vocab[cfg["bos_token"]])
        for p in bpe_encode(SP + text.replace(" ", SP), ranks):
            if p in vocab:
                ids.append(vocab[p])
            else:
                ids += [vocab["<0x%02X>" % b] for b in p.encode("utf-8")]
        return ids
    b2u = bytes_to_unicode()
    for i, w in enumerate(text.split(" ")):
        sym = [b2u[b] for b in (("" if i == 0 else " ") + w).encode("utf-8")]
        ids += [vocab[p] for p in bpe_encode(sym, ranks)]
    return ids


# ------------------------------------------------------------ fixtures

def write_tok(outdir, tok, cfg):
    with open(os.path.join(outdir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
    genmodel.write_json(os.path.join(outdir, "tokenizer_config.json"), cfg)


def gen_llama(outdir, rng):
    tok, tcfg = spm_tokenizer()
    vocab = len(tok["model"]["vocab"])
    c = genmodel.llama_config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, vocab_size=vocab,
        torch_dtype="bfloat16", tie_word_embeddings=False,
        rms_norm_eps=1e-05, max_position_embeddings=128)
    d, hd = c["hidden_size"], c["head_dim"]
    heads, kv, inter = c["num_attention_heads"], c["num_key_value_heads"], c["intermediate_size"]
    T = genmodel.Tensor

    def w(name, shape, std):
        return T(name, "BF16", shape, genmodel.bf16_normal(rng, shape, std))

    def norm(name):
        return T(name, "BF16", [d], genmodel.bf16_normal(rng, [d], 0.2, 1.0))

    ts = [w("model.embed_tokens.weight", [vocab, d], 1.0)]
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        ts += [norm(p + "input_layernorm.weight"),
               w(p + "self_attn.q_proj.weight", [heads * hd, d], 0.5),
               w(p + "self_attn.k_proj.weight", [kv * hd, d], 0.5),
               w(p + "self_attn.v_proj.weight", [kv * hd, d], 0.2),
               w(p + "self_attn.o_proj.weight", [d, heads * hd], 0.2),
               norm(p + "post_attention_layernorm.weight"),
               w(p + "mlp.gate_proj.weight", [inter, d], 0.2),
               w(p + "mlp.up_proj.weight", [inter, d], 0.2),
               w(p + "mlp.down_proj.weight", [d, inter], 0.2)]
    ts += [norm("model.norm.weight"), w("lm_head.weight", [vocab, d], 0.3)]
    genmodel.write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    genmodel.write_json(os.path.join(outdir, "config.json"), c)
    write_tok(outdir, tok, tcfg)


def bf16_weights(rng):
    """A maker of random bf16 tensors: w(name, shape, std, mean=0)."""
    def w(name, shape, std, mean=0.0):
        return genmodel.Tensor(name, "BF16", shape, genmodel.bf16_normal(rng, shape, std, mean))
    return w


def gen_phi3(outdir, rng):
    """Phi-3 (Phi-3-mini-4k's keys): bf16, fused qkv_proj and gate_up_proj,
    GQA, a sliding window, untied lm_head; no Q/K permutation in GGUF."""
    tok, tcfg = spm_tokenizer()
    vocab = len(tok["model"]["vocab"])
    # Phi-3's chat tokens, added past the sentencepiece vocabulary as in its
    # tokenizer.json (llama.cpp's phi3 vocabulary looks them up by text)
    for t in ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"):
        tok["added_tokens"].append({"id": vocab, "content": t, "single_word": False, "lstrip": False,
                                    "rstrip": t != "<|endoftext|>", "normalized": False, "special": True})
        vocab += 1
    d, heads, kv, inter = 64, 4, 2, 128
    hd = d // heads
    c = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": d,
         "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": kv,
         "intermediate_size": inter, "vocab_size": vocab, "max_position_embeddings": 128,
         "original_max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
         "rope_scaling": None, "sliding_window": 127, "tie_word_embeddings": False,
         "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}
    w = bf16_weights(rng)
    ts = [w("model.embed_tokens.weight", [vocab, d], 1.0)]
    for i in range(2):
        p = "model.layers.%d." % i
        ts += [w(p + "input_layernorm.weight", [d], 0.2, 1.0),
               w(p + "self_attn.qkv_proj.weight", [(heads + 2 * kv) * hd, d], 0.3),
               w(p + "self_attn.o_proj.weight", [d, heads * hd], 0.2),
               w(p + "post_attention_layernorm.weight", [d], 0.2, 1.0),
               w(p + "mlp.gate_up_proj.weight", [2 * inter, d], 0.2),
               w(p + "mlp.down_proj.weight", [d, inter], 0.2)]
    ts += [w("model.norm.weight", [d], 0.2, 1.0), w("lm_head.weight", [vocab, d], 0.3)]
    genmodel.write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    genmodel.write_json(os.path.join(outdir, "config.json"), c)
    write_tok(outdir, tok, tcfg)


def gen_llama3(outdir, rng):
    """The llama preset with LLaMA 3 rope scaling, whose small
    original_max_position_embeddings puts the rotary wavelengths in all
    three of its ranges (kept, scaled, smoothed)."""
    gen_llama(outdir, rng)
    p = os.path.join(outdir, "config.json")
    c = load_json(outdir, "config.json")
    c["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    c["rope_theta"] = 500000.0
    genmodel.write_json(p, c)


def llama3_factors(cfg):
    """convert_hf_to_gguf.py's rope_freqs for rope_type llama3 (float32 freqs)."""
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    base = cfg.get("rope_theta", 10000.0)
    freqs = (1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
    factor, lo, hi = rs.get("factor", 8.0), rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    out = []
    for f in freqs:
        w = 2 * math.pi / float(f)
        if w < old / hi:
            out.append(1.0)
        elif w > old / lo:
            out.append(factor)
        else:
            sm = (old / w - lo) / (hi - lo)
            out.append(1 / ((1 - sm) / factor + sm))
    return np.array(out, dtype=np.float32)


def qwen_model(outdir, rng, c, tok, tcfg, dtype, bias=False, qk_norm=False):
    """Write a Qwen2/Qwen3 of config c: q/k/v biases (Qwen2), or an RMSNorm
    weight over each head of q and k (Qwen3), in dtype (F16 or BF16); with
    c's num_experts, Qwen3-MoE's router and experts for the dense MLP; an
    lm_head unless c ties it."""
    d, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd, inter, vocab = c.get("head_dim") or d // heads, c["intermediate_size"], c["vocab_size"]
    T = genmodel.Tensor

    def w(name, shape, std, mean=0.0):
        if dtype == "BF16":
            return T(name, dtype, shape, genmodel.bf16_normal(rng, shape, std, mean))
        return T(name, dtype, shape, genmodel.normal(rng, shape, std, mean).astype(np.float16))

    ts = [w("model.embed_tokens.weight", [vocab, d], 1.0)]
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        ts.append(w(p + "input_layernorm.weight", [d], 0.2, 1.0))
        for x, rows, std in (("q", heads * hd, 0.3), ("k", kv * hd, 0.3), ("v", kv * hd, 0.2)):
            ts.append(w(p + "self_attn.%s_proj.weight" % x, [rows, d], std))
            if bias:
                ts.append(w(p + "self_attn.%s_proj.bias" % x, [rows], 0.1 if x != "v" else 0.2))
            if qk_norm and x != "v":
                ts.append(w(p + "self_attn.%s_norm.weight" % x, [hd], 0.2, 1.0))
        ts += [w(p + "self_attn.o_proj.weight", [d, heads * hd], 0.2),
               w(p + "post_attention_layernorm.weight", [d], 0.2, 1.0)]
        if c.get("num_experts"):
            ts.append(w(p + "mlp.gate.weight", [c["num_experts"], d], 0.5))
            for e in range(c["num_experts"]):
                x, mi = p + "mlp.experts.%d." % e, c["moe_intermediate_size"]
                ts += [w(x + "gate_proj.weight", [mi, d], 0.2), w(x + "up_proj.weight", [mi, d], 0.2),
                       w(x + "down_proj.weight", [d, mi], 0.2)]
        else:
            ts += [w(p + "mlp.gate_proj.weight", [inter, d], 0.2), w(p + "mlp.up_proj.weight", [inter, d], 0.2),
                   w(p + "mlp.down_proj.weight", [d, inter], 0.2)]
    ts.append(w("model.norm.weight", [d], 0.2, 1.0))
    if not c["tie_word_embeddings"]:
        ts.append(w("lm_head.weight", [vocab, d], 0.3))
    genmodel.write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    genmodel.write_json(os.path.join(outdir, "config.json"), c)
    write_tok(outdir, tok, tcfg)


def gen_qwen2(outdir, rng):
    """Qwen2: fp16, q/k/v biases, GQA, tied embeddings (no lm_head), a
    byte-level BPE; no Q/K permutation in GGUF."""
    tok, tcfg = gpt2_tokenizer()
    c = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 128, "vocab_size": len(tok["model"]["vocab"]), "max_position_embeddings": 128,
         "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": True,
         "torch_dtype": "float16", "hidden_act": "silu"}
    qwen_model(outdir, rng, c, tok, tcfg, "F16", bias=True)


# Qwen2's (and Qwen3's) split: one digit at a time, a letter run with one
# leading non-letter; llama.cpp's "qwen2" pre-tokenizer.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen_tokenizer():
    """gpt2_tokenizer's vocabulary split by Qwen's regex, as Qwen2's and Qwen3's are."""
    tok, tcfg = gpt2_tokenizer()
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    return tok, tcfg


def gen_qwen3(outdir, rng):
    """Qwen3: bf16, no biases, q_norm/k_norm over each head, an explicit
    head_dim that is not hidden / heads, GQA, tied embeddings (no lm_head);
    no Q/K permutation in GGUF."""
    tok, tcfg = qwen_tokenizer()
    c = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
         "intermediate_size": 128, "vocab_size": len(tok["model"]["vocab"]), "max_position_embeddings": 128,
         "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": True,
         "torch_dtype": "bfloat16", "hidden_act": "silu", "attention_bias": False}
    qwen_model(outdir, rng, c, tok, tcfg, "BF16", qk_norm=True)


def gen_qwen3moe(outdir, rng):
    """Qwen3-MoE: Qwen3's attention, a router and 4 experts of which each
    token uses 2 (weights normalised), untied lm_head; GGUF stacks each
    layer's experts."""
    tok, tcfg = qwen_tokenizer()
    c = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
         "intermediate_size": 128, "moe_intermediate_size": 64, "num_experts": 4, "num_experts_per_tok": 2,
         "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
         "vocab_size": len(tok["model"]["vocab"]), "max_position_embeddings": 128, "rms_norm_eps": 1e-06,
         "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
         "attention_bias": False}
    qwen_model(outdir, rng, c, tok, tcfg, "BF16", qk_norm=True)


def gen_mixtral(outdir, rng):
    """Mixtral: LLaMA's attention (Q/K permuted in GGUF), a router and 4
    experts (w1 gate, w3 up, w2 down) of which each token uses 2, untied
    lm_head, a sentencepiece-style BPE; GGUF stacks each layer's experts."""
    tok, tcfg = spm_tokenizer()
    vocab = len(tok["model"]["vocab"])
    d, heads, kv, inter, ne = 64, 4, 2, 96, 4
    hd = d // heads
    c = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": d,
         "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": kv,
         "intermediate_size": inter, "num_local_experts": ne, "num_experts_per_tok": 2, "vocab_size": vocab,
         "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
         "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}
    w = bf16_weights(rng)
    ts = [w("model.embed_tokens.weight", [vocab, d], 1.0)]
    for i in range(2):
        p = "model.layers.%d." % i
        m = p + "block_sparse_moe."
        ts += [w(p + "input_layernorm.weight", [d], 0.2, 1.0),
               w(p + "self_attn.q_proj.weight", [heads * hd, d], 0.5),
               w(p + "self_attn.k_proj.weight", [kv * hd, d], 0.5),
               w(p + "self_attn.v_proj.weight", [kv * hd, d], 0.2),
               w(p + "self_attn.o_proj.weight", [d, heads * hd], 0.2),
               w(p + "post_attention_layernorm.weight", [d], 0.2, 1.0),
               w(m + "gate.weight", [ne, d], 0.5)]
        for e in range(ne):
            x = "%sexperts.%d." % (m, e)
            ts += [w(x + "w1.weight", [inter, d], 0.2), w(x + "w2.weight", [d, inter], 0.2),
                   w(x + "w3.weight", [inter, d], 0.2)]
    ts += [w("model.norm.weight", [d], 0.2, 1.0), w("lm_head.weight", [vocab, d], 0.3)]
    genmodel.write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    genmodel.write_json(os.path.join(outdir, "config.json"), c)
    write_tok(outdir, tok, tcfg)


def gen_gpt2(outdir, rng):
    tok, tcfg = gpt2_tokenizer()
    vocab = len(tok["model"]["vocab"])
    d, L, ctx = 64, 2, 128
    c = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
         "n_embd": d, "n_layer": L, "n_head": 4, "n_ctx": ctx,
         "n_positions": ctx, "n_inner": None, "vocab_size": vocab,
         "layer_norm_epsilon": 1e-05, "activation_function": "gelu_new",
         "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
         "torch_dtype": "float32", "tie_word_embeddings": True}
    T = genmodel.Tensor

    def w(name, shape, std, mean=0.0):
        return T(name, "F32", shape, genmodel.normal(rng, shape, std, mean))

    p = "transformer."
    ts = [w(p + "wte.weight", [vocab, d], 0.5), w(p + "wpe.weight", [ctx, d], 0.1)]
    for i in range(L):
        h = p + "h.%d." % i
        ts += [w(h + "ln_1.weight", [d], 0.2, 1.0), w(h + "ln_1.bias", [d], 0.1),
               w(h + "attn.c_attn.weight", [d, 3 * d], 0.3), w(h + "attn.c_attn.bias", [3 * d], 0.1),
               w(h + "attn.c_proj.weight", [d, d], 0.2), w(h + "attn.c_proj.bias", [d], 0.1),
               w(h + "ln_2.weight", [d], 0.2, 1.0), w(h + "ln_2.bias", [d], 0.1),
               w(h + "mlp.c_fc.weight", [d, 4 * d], 0.2), w(h + "mlp.c_fc.bias", [4 * d], 0.1),
               w(h + "mlp.c_proj.weight", [4 * d, d], 0.2), w(h + "mlp.c_proj.bias", [d], 0.1),
               T(h + "attn.bias", "F32", [1, 1, ctx, ctx],
                 np.tril(np.ones((ctx, ctx), dtype=np.float32)))]
    ts += [w(p + "ln_f.weight", [d], 0.2, 1.0), w(p + "ln_f.bias", [d], 0.1)]
    genmodel.write_safetensors(os.path.join(outdir, "model.safetensors"), ts)
    genmodel.write_json(os.path.join(outdir, "config.json"), c)
    write_tok(outdir, tok, tcfg)


# ------------------------------------------------------------ the source

def load_source(src):
    """{name: stlib.T} of every tensor in SRC's safetensors files."""
    return stlib.read_dir(src)


def load_json(src, name):
    p = os.path.join(src, name)
    if not os.path.exists(p):
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute, in numpy."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def file_order(name):
    """ckptfs writes embeddings, then blocks by number, then the head; by
    name within each."""
    if name.startswith("token_embd."):
        g = 0
    elif name.startswith(("position_embd.", "rope_freqs.")):
        g = 1
    elif name.startswith("blk."):
        g = 2 + int(name.split(".")[1])
    else:
        g = 1 << 40 if name.startswith("output_norm.") else 1 << 41
    return (g, name)


def gguf_tensors(src):
    """[(gguf name, stlib.T)] in the converter's naming and ckptfs's file
    order, before typing."""
    return sorted(_gguf_tensors(src), key=lambda x: file_order(x[0]))


def moe_names(st, h):
    """(router, [{gate, up, down}] by expert) of layer prefix h's experts,
    in Mixtral's or Qwen3-MoE's naming, or None for a dense layer."""
    for router, ex, kinds in (("block_sparse_moe.gate.weight", "block_sparse_moe.experts.%d.",
                               {"gate": "w1", "up": "w3", "down": "w2"}),
                              ("mlp.gate.weight", "mlp.experts.%d.",
                               {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})):
        if h + router in st:
            n = 0
            while h + ex % n + kinds["gate"] + ".weight" in st:
                n += 1
            return h + router, [{k: h + ex % e + v + ".weight" for k, v in kinds.items()} for e in range(n)]
    return None


def _gguf_tensors(src):
    cfg = load_json(src, "config.json")
    st = load_source(src)
    out = []
    if cfg["model_type"] == "gpt2":
        p = "transformer." if "transformer.wte.weight" in st else ""

        def tr(t):
            return stlib.T(t.dtype, t.shape[::-1], t.arr.T)

        out += [("token_embd.weight", st[p + "wte.weight"]),
                ("position_embd.weight", st[p + "wpe.weight"])]
        for i in range(cfg["n_layer"]):
            h = "%sh.%d." % (p, i)
            b = "blk.%d." % i
            out += [(b + "attn_norm.weight", st[h + "ln_1.weight"]),
                    (b + "attn_norm.bias", st[h + "ln_1.bias"]),
                    (b + "attn_qkv.weight", tr(st[h + "attn.c_attn.weight"])),
                    (b + "attn_qkv.bias", st[h + "attn.c_attn.bias"]),
                    (b + "attn_output.weight", tr(st[h + "attn.c_proj.weight"])),
                    (b + "attn_output.bias", st[h + "attn.c_proj.bias"]),
                    (b + "ffn_norm.weight", st[h + "ln_2.weight"]),
                    (b + "ffn_norm.bias", st[h + "ln_2.bias"]),
                    (b + "ffn_up.weight", tr(st[h + "mlp.c_fc.weight"])),
                    (b + "ffn_up.bias", st[h + "mlp.c_fc.bias"]),
                    (b + "ffn_down.weight", tr(st[h + "mlp.c_proj.weight"])),
                    (b + "ffn_down.bias", st[h + "mlp.c_proj.bias"])]
        out += [("output_norm.weight", st[p + "ln_f.weight"]),
                ("output_norm.bias", st[p + "ln_f.bias"])]
        if "lm_head.weight" in st:
            out.append(("output.weight", st["lm_head.weight"]))
        return out
    if cfg["model_type"] == "phi3":  # fused as in HF
        out.append(("token_embd.weight", st["model.embed_tokens.weight"]))
        for i in range(cfg["num_hidden_layers"]):
            h = "model.layers.%d." % i
            b = "blk.%d." % i
            out += sorted([(b + "attn_norm.weight", st[h + "input_layernorm.weight"]),
                           (b + "attn_qkv.weight", st[h + "self_attn.qkv_proj.weight"]),
                           (b + "attn_output.weight", st[h + "self_attn.o_proj.weight"]),
                           (b + "ffn_norm.weight", st[h + "post_attention_layernorm.weight"]),
                           (b + "ffn_up.weight", st[h + "mlp.gate_up_proj.weight"]),
                           (b + "ffn_down.weight", st[h + "mlp.down_proj.weight"])])
        return out + [("output_norm.weight", st["model.norm.weight"]), ("output.weight", st["lm_head.weight"])]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", heads)
    rope = cfg["model_type"] in ("llama", "mistral", "mixtral")

    def perm(t, n):
        return stlib.T(t.dtype, t.shape, permute(t.arr, n)) if rope else t

    out.append(("token_embd.weight", st["model.embed_tokens.weight"]))
    rf = llama3_factors(cfg) if cfg["model_type"] == "llama" else None
    if rf is not None:
        out.append(("rope_freqs.weight", stlib.T("F32", rf.shape, rf)))
    for i in range(cfg["num_hidden_layers"]):
        h = "model.layers.%d." % i
        b = "blk.%d." % i
        layer = [(b + "attn_norm.weight", st[h + "input_layernorm.weight"]),
                 (b + "attn_q.weight", perm(st[h + "self_attn.q_proj.weight"], heads)),
                 (b + "attn_k.weight", perm(st[h + "self_attn.k_proj.weight"], kv)),
                 (b + "attn_v.weight", st[h + "self_attn.v_proj.weight"]),
                 (b + "attn_output.weight", st[h + "self_attn.o_proj.weight"]),
                 (b + "ffn_norm.weight", st[h + "post_attention_layernorm.weight"])]
        moe = moe_names(st, h)
        if moe:  # the router, and each projection's experts stacked: [experts, rows, columns]
            router, experts = moe
            layer.append((b + "ffn_gate_inp.weight", st[router]))
            for kind in ("gate", "up", "down"):
                ts = [st[x[kind]] for x in experts]
                layer.append((b + "ffn_%s_exps.weight" % kind,
                              stlib.T(ts[0].dtype, [len(ts)] + list(ts[0].shape), np.stack([t.arr for t in ts]))))
        else:
            layer += [(b + "ffn_gate.weight", st[h + "mlp.gate_proj.weight"]),
                      (b + "ffn_up.weight", st[h + "mlp.up_proj.weight"]),
                      (b + "ffn_down.weight", st[h + "mlp.down_proj.weight"])]
        for x in "qk":  # Qwen3's per-head norms, F32 as every norm
            n = h + "self_attn.%s_norm.weight" % x
            if n in st:
                layer.append((b + "attn_%s_norm.weight" % x, st[n]))
        for x in "qkv":
            n = h + "self_attn.%s_proj.bias" % x
            if n in st:
                layer.append((b + "attn_%s.bias" % x,
                              perm(st[n], heads if x == "q" else kv) if x != "v" else st[n]))
        out += sorted(layer)
    out.append(("output_norm.weight", st["model.norm.weight"]))
    if "lm_head.weight" in st:
        out.append(("output.weight", st["lm_head.weight"]))
    return out


# ------------------------------------------------------------ ggml types

GGML = {"F32": 0, "F16": 1, "Q8_0": 8, "BF16": 30}
GGML_NAME = {v: k for k, v in GGML.items()}


def np_roundf(x):
    """C roundf: halves away from zero (gguf-py's np_roundf)."""
    a = np.abs(x)
    fl = np.floor(a)
    return np.sign(x) * (fl + np.floor(2 * (a - fl)))


def q8_0_numpy(x):
    """ggml's quantize_row_q8_0_ref in float32 numpy: per block of 32 an f16
    scale d = max|x|/127 and int8 round(x * (1/d))."""
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    qs = np_roundf((blocks * idv).astype(np.float32)).astype(np.int8)
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = qs.view(np.uint8)
    return out.tobytes()


def q8_0_ggml(x, lib):
    """The same through llama.cpp's own quantize_row_q8_0_ref (ctypes)."""
    import ctypes
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(x.size // 32 * 34, dtype=np.uint8)
    lib.quantize_row_q8_0_ref(x.ctypes.data_as(ctypes.c_void_p),
                              out.ctypes.data_as(ctypes.c_void_p),
                              ctypes.c_int64(x.size))
    return out.tobytes()


def expected_type(name, t, variant):
    """The converter's type choice for one tensor."""
    if (len(t.shape) <= 1 or name.endswith("_norm.weight") or
            not name.endswith(".weight") or name == "position_embd.weight" or name.endswith("ffn_gate_inp.weight")):
        return "F32"
    if variant == "":
        return {"F32": "F32", "F16": "F16", "BF16": "BF16"}.get(t.dtype, "F32")
    if variant == "q8_0":
        return "Q8_0" if t.shape[-1] % 32 == 0 else "F16"
    return {"f32": "F32", "f16": "F16", "bf16": "BF16"}[variant]


def expected_bytes(t, typ, ggml_lib=None):
    v = stlib.to_float(t)
    if typ == "F32":
        return v.astype(np.float32).tobytes()
    if typ == "F16":
        if t.dtype == "F16":
            return t.raw()
        with np.errstate(over="ignore"):
            return v.astype(np.float16).tobytes()
    if typ == "BF16":
        return t.raw() if t.dtype == "BF16" else stlib.bf16_bits(v).tobytes()
    q = q8_0_numpy(v)
    if ggml_lib is not None and q8_0_ggml(v, ggml_lib) != q:
        fail("numpy q8_0 differs from llama.cpp's quantize_row_q8_0_ref")
    return q


# ------------------------------------------------------------ GGUF reader

class Reader:
    def __init__(self, data):
        self.d = data
        self.p = 0

    def take(self, n):
        if n > len(self.d) - self.p:
            fail("GGUF: truncated at %d (need %d bytes)" % (self.p, n))
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def s(self):
        return self.take(self.u("Q")).decode("utf-8")

    SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
              10: "Q", 11: "q", 12: "d"}

    def value(self, t):
        if t == 8:
            return self.s()
        if t == 9:
            et = self.u("I")
            n = self.u("Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.u(self.SCALAR[t])


def parse_gguf(data):
    r = Reader(data)
    if r.take(4) != b"GGUF":
        fail("GGUF: bad magic")
    version = r.u("I")
    nt, nkv = r.u("Q"), r.u("Q")
    kv = {}
    for _ in range(nkv):
        k = r.s()
        t = r.u("I")
        if k in kv:
            fail("GGUF: duplicate key %s" % k)
        kv[k] = (t, r.value(t))
    infos = []
    for _ in range(nt):
        name = r.s()
        nd = r.u("I")
        ne = [r.u("Q") for _ in range(nd)]
        typ = r.u("I")
        off = r.u("Q")
        infos.append((name, ne, typ, off))
    align = kv.get("general.alignment", (4, 32))[1]
    data_start = (r.p + align - 1) // align * align
    if data[r.p:data_start] != b"\0" * (data_start - r.p):
        fail("GGUF: padding before the data is not zeros")
    return version, kv, infos, data_start, align


def expected_kv(src, variant, arch, ntokens, first_matrix_type):
    cfg = load_json(src, "config.json")
    tok = load_json(src, "tokenizer.json")
    tcfg = load_json(src, "tokenizer_config.json") or {}
    ft = {"": {"F32": 0, "F16": 1, "BF16": 32}[first_matrix_type],
          "f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}[variant]
    U32, F32, STR, BOOL, ARR = 4, 6, 8, 7, 9
    e = {"general.architecture": (STR, arch),
         "general.name": (STR, os.path.basename(os.path.normpath(src))),
         "general.file_type": (U32, ft),
         "general.quantization_version": (U32, 2)}
    if arch == "gpt2":
        e.update({"gpt2.context_length": (U32, cfg["n_ctx"]),
                  "gpt2.embedding_length": (U32, cfg["n_embd"]),
                  "gpt2.feed_forward_length": (U32, 4 * cfg["n_embd"]),
                  "gpt2.block_count": (U32, cfg["n_layer"]),
                  "gpt2.attention.head_count": (U32, cfg["n_head"]),
                  "gpt2.attention.layer_norm_epsilon": (F32, cfg["layer_norm_epsilon"])})
    else:
        a = arch + "."
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        e.update({a + "context_length": (U32, cfg["max_position_embeddings"]),
                  a + "embedding_length": (U32, cfg["hidden_size"]),
                  a + "feed_forward_length": (U32, cfg["intermediate_size"]),
                  a + "block_count": (U32, cfg["num_hidden_layers"]),
                  a + "attention.head_count": (U32, cfg["num_attention_heads"]),
                  a + "attention.head_count_kv": (U32, cfg["num_key_value_heads"]),
                  a + "rope.freq_base": (F32, cfg.get("rope_theta", 10000.0)),
                  a + "attention.layer_norm_rms_epsilon": (F32, cfg["rms_norm_eps"]),
                  a + "rope.dimension_count": (U32, hd),
                  a + "vocab_size": (U32, ntokens)})
        if hd != cfg["hidden_size"] // cfg["num_attention_heads"]:
            e.update({a + "attention.key_length": (U32, hd), a + "attention.value_length": (U32, hd)})
        if "num_experts_per_tok" in cfg:
            e.update({a + "expert_count": (U32, cfg.get("num_local_experts") or cfg["num_experts"]),
                      a + "expert_used_count": (U32, cfg["num_experts_per_tok"])})
            if "moe_intermediate_size" in cfg:
                e[a + "expert_feed_forward_length"] = (U32, cfg["moe_intermediate_size"])
        if arch == "phi3":
            e.update({a + "rope.scaling.original_context_length":
                      (U32, cfg.get("original_max_position_embeddings", cfg["max_position_embeddings"])),
                      a + "attention.sliding_window": (U32, cfg.get("sliding_window") or 0)})
    vocab = tok["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tok["added_tokens"]}
    tokens = [inv.get(i, added[i]["content"] if i in added else "[PAD%d]" % i)
              for i in range(ntokens)]
    spm = tok["model"]["byte_fallback"]
    types = []
    for i, t in enumerate(tokens):
        if i in added:
            ty = 3 if added[i]["special"] else 4
        elif i not in inv:
            ty = 5
        elif spm and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            ty = 6
        else:
            ty = 1
        if t == tok["model"].get("unk_token"):
            ty = 2
        types.append(ty)
    e["tokenizer.ggml.model"] = (STR, "llama" if spm else "gpt2")
    e["tokenizer.ggml.tokens"] = (ARR, (STR, tokens))
    e["tokenizer.ggml.token_type"] = (ARR, (5, types))
    if spm:
        scores = [0.0] * ntokens
        for r, m in enumerate(tok["model"]["merges"]):
            i = vocab.get(m.replace(" ", "", 1))
            if i is not None and scores[i] == 0.0:
                scores[i] = -float(r + 1)
        e["tokenizer.ggml.scores"] = (ARR, (F32, scores))
        e["tokenizer.ggml.add_space_prefix"] = (BOOL, True)
    else:
        e["tokenizer.ggml.merges"] = (ARR, (STR, list(tok["model"]["merges"])))
        split = json.dumps(tok.get("pre_tokenizer"))
        e["tokenizer.ggml.pre"] = (STR, "gpt-2" if arch == "gpt2" else
                                   "llama-bpe" if r"\\p{N}{1,3}" in split else
                                   "qwen2" if r"\\p{L}+|\\p{N}|" in split else "default")
    ids = {t: i for i, t in enumerate(tokens)}
    for key, ck in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", None), ("pad", "pad_token_id")):
        v = tcfg.get(key + "_token")
        if isinstance(v, dict):
            v = v.get("content")
        i = ids.get(v) if v is not None else None
        if i is None and ck and isinstance(cfg.get(ck), int):
            i = cfg[ck]
        if i is not None:
            name = {"unk": "unknown", "pad": "padding"}.get(key, key)
            e["tokenizer.ggml.%s_token_id" % name] = (U32, i)
    for k in ("add_bos_token", "add_eos_token"):
        if isinstance(tcfg.get(k), bool):
            e["tokenizer.ggml." + k] = (BOOL, tcfg[k])
    return e


def same_value(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return np.float32(a) == np.float32(b)
    if isinstance(a, tuple):
        return (a[0] == b[0] and len(a[1]) == len(b[1]) and
                all(same_value(x, y) for x, y in zip(a[1], b[1])))
    return a == b


def check(src, path, variant, ggml_lib_path=None):
    lib = None
    if ggml_lib_path:
        import ctypes
        lib = ctypes.CDLL(ggml_lib_path)
    with open(path, "rb") as f:
        data = f.read()
    if os.stat(path).st_size != len(data):
        fail("%s: st_size %d, read %d bytes" % (path, os.stat(path).st_size, len(data)))
    version, kv, infos, data_start, align = parse_gguf(data)
    if version != 3:
        fail("version %d" % version)
    cfg = load_json(src, "config.json")
    arch = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
            "qwen3_moe": "qwen3moe", "phi3": "phi3", "gpt2": "gpt2"}[cfg["model_type"]]
    want = gguf_tensors(src)
    if [i[0] for i in infos] != [w[0] for w in want]:
        fail("tensor list %s, expected %s" % ([i[0] for i in infos], [w[0] for w in want]))
    first_matrix = next(t for n, t in want if len(t.shape) >= 2)
    ntok = want[0][1].shape[0]
    ekv = expected_kv(src, variant, arch, ntok, expected_type("x.weight", first_matrix, ""))
    for k in sorted(set(kv) | set(ekv)):
        if k not in kv:
            fail("key %s missing" % k)
        if k not in ekv:
            fail("unexpected key %s = %r" % (k, kv[k]))
        if kv[k][0] != ekv[k][0] or not same_value(kv[k][1], ekv[k][1]):
            fail("key %s: %r, expected %r" % (k, str(kv[k])[:200], str(ekv[k])[:200]))
    off = 0
    for (name, ne, typ, toff), (_, t) in zip(infos, want):
        etype = expected_type(name, t, variant)
        if ne != list(reversed(t.shape)):
            fail("%s: ne %s, expected %s" % (name, ne, list(reversed(t.shape))))
        if GGML_NAME.get(typ) != etype:
            fail("%s: type %s, expected %s" % (name, typ, etype))
        if toff != off or toff % align:
            fail("%s: offset %d, expected %d" % (name, toff, off))
        exp = expected_bytes(t, etype, lib)
        got = data[data_start + toff:data_start + toff + len(exp)]
        if name == "rope_freqs.weight" and len(got) == len(exp):
            # computed, not copied: float32 pow may differ in the last bit from torch's
            if not np.allclose(np.frombuffer(got, "<f4"), np.frombuffer(exp, "<f4"), rtol=1e-6, atol=0):
                fail("rope_freqs.weight: %s, expected %s" % (np.frombuffer(got, "<f4"), np.frombuffer(exp, "<f4")))
        elif got != exp:
            bad = next(i for i in range(len(exp)) if i >= len(got) or got[i] != exp[i])
            fail("%s (%s): bytes differ from byte %d of %d" % (name, etype, bad, len(exp)))
        pad = (align - len(exp) % align) % align
        if data[data_start + toff + len(exp):data_start + toff + len(exp) + pad] != b"\0" * pad:
            fail("%s: padding is not zeros" % name)
        off += len(exp) + pad
    if len(data) != data_start + off:
        fail("file is %d bytes, expected %d" % (len(data), data_start + off))
    return len(infos), len(kv)


# ------------------------------------------------------------ forward pass

def q8_0_dequant(x):
    """What llama.cpp computes with after Q8_0: q * d, d rounded to f16;
    blocks of 32 along the last axis."""
    raw = np.frombuffer(q8_0_numpy(x), dtype=np.uint8).reshape(-1, 34)
    d = raw[:, :2].copy().view(np.float16).astype(np.float64)
    q = raw[:, 2:].copy().view(np.int8).astype(np.float64)
    return (q * d).reshape(x.shape)


def source_weights(src, variant):
    """{HF name: float64 array} as the GGUF of `variant` holds them (Q8_0:
    quantised and back, in the GGUF's row orientation; f16/bf16: rounded)."""
    cfg = load_json(src, "config.json")
    gpt2 = cfg["model_type"] == "gpt2"
    out = Weights()
    for k, t in load_source(src).items():
        v = stlib.to_float(t).astype(np.float32)
        conv1d = gpt2 and k.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        g = v.T if conv1d else v
        typ = expected_type("x.weight", stlib.T(t.dtype, g.shape, t.arr.T if conv1d else t.arr), variant) \
            if v.ndim >= 2 and not k.endswith(("wpe.weight", "block_sparse_moe.gate.weight", "mlp.gate.weight")) \
            else "F32"
        if typ == "Q8_0":
            g = q8_0_dequant(g)
        elif typ == "F16":
            g = g.astype(np.float16)
        elif typ == "BF16":
            g = (stlib.bf16_bits(g).astype(np.uint32) << 16).view(np.float32).reshape(g.shape)
        g = np.asarray(g, dtype=np.float64)
        out[k] = g.T if conv1d else g
        out.types[k] = typ
    return out


class Weights(dict):
    """Weights by HF name, with the GGUF type each is stored in."""

    def __init__(self):
        super().__init__()
        self.types = {}

    def mm(self, x, name, transposed):
        """x times a weight matrix as ggml's CPU kernels compute it: for
        F16 and BF16 weights the activations are first converted to the
        weight's type. (ggml also quantises activations to Q8_0 for Q8_0
        weights, but modelling that with the reference quantiser moved numpy
        further from llama.cpp than leaving them in f32, so they are left:
        the Q8_0 tolerance covers it.) transposed: the HF matrix is [out, in]."""
        typ = self.types.get(name, "F32")
        x32 = x.astype(np.float32)
        if typ == "F16":
            x = x32.astype(np.float16).astype(np.float64)
        elif typ == "BF16":
            x = (stlib.bf16_bits(x32).astype(np.uint32) << 16).view(np.float32).reshape(x.shape).astype(np.float64)
        w = self[name]
        return x @ (w.T if transposed else w)

def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def llama_logits(src, ids, st):
    """HF LlamaForCausalLM in float64."""
    cfg = load_json(src, "config.json")
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["hidden_size"]
    hd = cfg.get("head_dim") or d // H
    eps = cfg["rms_norm_eps"]
    n = len(ids)
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (np.arange(0, hd, 2) / hd))
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type") == "llama3":  # transformers' _compute_llama3_parameters
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wl = 2 * math.pi / inv
        scaled = np.where(wl > old / lo, inv / factor, inv)
        sm = (old / wl - lo) / (hi - lo)
        smoothed = (1 - sm) * scaled / factor + sm * scaled
        medium = ~(wl < old / hi) & ~(wl > old / lo)
        inv = np.where(medium, smoothed, scaled)
    ang = np.outer(np.arange(n), inv)
    cos = np.cos(np.concatenate([ang, ang], -1))
    sin = np.sin(np.concatenate([ang, ang], -1))

    def rope(x):  # x: [heads, n, hd]
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    x = st["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rms(x, st[p + "input_layernorm.weight"], eps)
        def proj(x):
            y = st.mm(h, p + "self_attn.%s_proj.weight" % x, True)
            return y + st[p + "self_attn.%s_proj.bias" % x] if p + "self_attn.%s_proj.bias" % x in st else y
        if p + "self_attn.qkv_proj.weight" in st:  # Phi-3: q, k, v are row blocks of one matrix
            qkv = st.mm(h, p + "self_attn.qkv_proj.weight", True)
            qp, kp, vp = np.split(qkv, [H * hd, (H + KV) * hd], -1)
        else:
            qp, kp, vp = proj("q"), proj("k"), proj("v")
        q = qp.reshape(n, H, hd).transpose(1, 0, 2)
        k = kp.reshape(n, KV, hd).transpose(1, 0, 2)
        v = vp.reshape(n, KV, hd).transpose(1, 0, 2)
        if p + "self_attn.q_norm.weight" in st:  # Qwen3: RMSNorm of each head before the rotation
            q = rms(q, st[p + "self_attn.q_norm.weight"], eps)
            k = rms(k, st[p + "self_attn.k_norm.weight"], eps)
        q, k = rope(q), rope(k)
        k = np.repeat(k, H // KV, 0)
        v = np.repeat(v, H // KV, 0)
        a = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(n, H * hd)
        x = x + st.mm(o, p + "self_attn.o_proj.weight", True)
        h = rms(x, st[p + "post_attention_layernorm.weight"], eps)
        moe = moe_names(st, p)
        if moe:  # softmax over the experts, the top k, their weights normalised to 1
            router, experts = moe
            r = st.mm(h, router, True)
            pr = np.exp(r - r.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            k = cfg["num_experts_per_tok"]
            out = np.zeros_like(x)
            for t in range(n):
                top = np.argsort(-pr[t])[:k]
                w = pr[t, top] / pr[t, top].sum()
                for e, we in zip(top, w):
                    names = experts[e]
                    g = st.mm(h[t:t + 1], names["gate"], True)
                    u = st.mm(h[t:t + 1], names["up"], True)
                    out[t] += we * st.mm((g / (1 + np.exp(-g))) * u, names["down"], True)[0]
            x = x + out
            continue
        if p + "mlp.gate_up_proj.weight" in st:  # Phi-3: gate then up, rows of one matrix
            g, u = np.split(st.mm(h, p + "mlp.gate_up_proj.weight", True), 2, -1)
        else:
            g, u = st.mm(h, p + "mlp.gate_proj.weight", True), st.mm(h, p + "mlp.up_proj.weight", True)
        x = x + st.mm((g / (1 + np.exp(-g))) * u, p + "mlp.down_proj.weight", True)
    x = rms(x, st["model.norm.weight"], eps)
    return st.mm(x, "lm_head.weight" if "lm_head.weight" in st else "model.embed_tokens.weight", True)


def gpt2_logits(src, ids, raw):
    """HF GPT2LMHeadModel (gelu_new) in float64."""
    cfg = load_json(src, "config.json")
    p = "transformer." if "transformer.wte.weight" in raw else ""
    st = raw

    def mm(x, name):
        return raw.mm(x, p + name, False)
    d, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = d // H
    n = len(ids)

    def ln(x, w, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * w + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    x = st[p + "wte.weight"][ids] + st[p + "wpe.weight"][:n]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["n_layer"]):
        h = "h.%d." % i
        y = ln(x, st[p + h + "ln_1.weight"], st[p + h + "ln_1.bias"])
        qkv = mm(y, h + "attn.c_attn.weight") + st[p + h + "attn.c_attn.bias"]
        q, k, v = [z.reshape(n, H, hd).transpose(1, 0, 2) for z in np.split(qkv, 3, -1)]
        a = q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(n, d)
        x = x + mm(o, h + "attn.c_proj.weight") + st[p + h + "attn.c_proj.bias"]
        y = ln(x, st[p + h + "ln_2.weight"], st[p + h + "ln_2.bias"])
        x = x + mm(gelu(mm(y, h + "mlp.c_fc.weight") + st[p + h + "mlp.c_fc.bias"]), h + "mlp.c_proj.weight") \
            + st[p + h + "mlp.c_proj.bias"]
    x = ln(x, st[p + "ln_f.weight"], st[p + "ln_f.bias"])
    if "lm_head.weight" in st:
        return raw.mm(x, "lm_head.weight", True)
    return raw.mm(x, p + "wte.weight", True)


def expect(src, prompt, steps, variant):
    """Greedy continuation and next-token probabilities from numpy, with the
    weights as the GGUF of `variant` holds them."""
    cfg = load_json(src, "config.json")
    tok = load_json(src, "tokenizer.json")
    tcfg = load_json(src, "tokenizer_config.json")
    fwd = gpt2_logits if cfg["model_type"] == "gpt2" else llama_logits
    ids = tokenize(tok, tcfg, prompt)
    st = source_weights(src, variant)
    seq = list(ids)
    out = []
    for _ in range(steps):
        logits = fwd(src, seq, st)[-1]
        pr = np.exp(logits - logits.max())
        pr /= pr.sum()
        nxt = int(np.argmax(pr))
        srt = np.sort(pr)[::-1]
        out.append({"token": nxt, "margin": float(srt[0] - srt[1]),
                    "probs": [float(v) for v in pr]})
        seq.append(nxt)
    return {"prompt_ids": ids, "steps": out}


def compare(exp, got, tol):
    """llama.cpp's run (JSON from gguf_llama.mjs) against numpy's."""
    if got["prompt_ids"] != exp["prompt_ids"]:
        fail("llama.cpp tokenized the prompt as %s, the tokenizer gives %s"
             % (got["prompt_ids"], exp["prompt_ids"]))
    worst = 0.0
    for i, (e, g) in enumerate(zip(exp["steps"], got["steps"])):
        if e["margin"] > 2 * tol and g["token"] != e["token"]:
            fail("step %d: llama.cpp picked %d, numpy %d (margin %.4f)" % (i, g["token"], e["token"], e["margin"]))
        if g["token"] != e["token"]:
            break  # a near tie went the other way: later steps differ
        for tid, p in g["probs"]:
            diff = abs(p - e["probs"][tid])
            worst = max(worst, diff)
            if diff > tol:
                fail("step %d: p(token %d) = %.6f in llama.cpp, %.6f in numpy" % (i, tid, p, e["probs"][tid]))
    if len(got["steps"]) != len(exp["steps"]):
        fail("llama.cpp made %d steps, expected %d" % (len(got["steps"]), len(exp["steps"])))
    return worst


def main(argv):
    try:
        if argv[1] == "gen":
            rng = np.random.default_rng(int(argv[4]) if len(argv) > 4 else 0)
            os.makedirs(argv[3], exist_ok=True)
            {"llama": gen_llama, "llama3": gen_llama3, "qwen2": gen_qwen2, "qwen3": gen_qwen3,
             "qwen3moe": gen_qwen3moe, "mixtral": gen_mixtral, "phi3": gen_phi3, "gpt2": gen_gpt2}[argv[2]](argv[3], rng)
        elif argv[1] == "check":
            nt, nkv = check(argv[2], argv[3], argv[4], os.environ.get("GGML_BASE_LIB"))
            print("%s: %d tensors, %d keys: every field and byte as expected" % (argv[3], nt, nkv))
        elif argv[1] == "expect":
            json.dump(expect(argv[2], argv[3], int(argv[4]), argv[5] if len(argv) > 5 else ""), sys.stdout)
        elif argv[1] == "compare":
            with open(argv[2]) as f:
                e = json.load(f)
            with open(argv[3]) as f:
                g = json.load(f)
            worst = compare(e, g, float(argv[4]))
            print("llama.cpp: prompt %s, greedy %s; largest probability difference %.2e (tolerance %s)"
                  % (g["prompt_ids"], [s["token"] for s in g["steps"]], worst, argv[4]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Mismatch as ex:
        print("check_gguf.py: FAIL: %s" % ex, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
