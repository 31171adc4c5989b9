#!/usr/bin/python3
"""make-seeds.py -- write the seed corpora of the ckptfs fuzz harnesses.

Usage: tests/fuzz/make-seeds.py OUTDIR

Writes OUTDIR/<harness>/<name> for the harnesses safetensors, index, config, jsonscan,
layout, views, lora_config, gguf_vocab, pickle, zip and torch (real torch.save
outputs when torch is installed): small valid inputs of every kind the parsers accept, plus a
catalogue of hand-broken ones (one named case each). Seeds are generated, never
committed; crashes found by fuzzing live in tests/fuzz/regress/ instead.
Standard library only.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def st_bytes(tensors, meta=None, pad=True, header=None):
    """A safetensors file from [(name, dtype, shape)], laid out in order."""
    if header is None:
        h = {}
        if meta is not None:
            h["__metadata__"] = meta
        pos = 0
        for name, dt, shape in tensors:
            n = numel(shape) * DTYPE_SIZE[dt]
            h[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + n]}
            pos += n
        header = json.dumps(h, separators=(",", ":"))
        data_len = pos
    else:
        data_len = sum(numel(s) * DTYPE_SIZE[d] for _, d, s in tensors)
    hb = header.encode()
    if pad:
        hb += b" " * (-len(hb) % 8)
    data = bytes((i * 7 + 1) & 0xFF for i in range(data_len))
    return struct.pack("<Q", len(hb)) + hb + data


def raw_st(header_text, data_len):
    hb = header_text.encode()
    return struct.pack("<Q", len(hb)) + hb + bytes((i * 7 + 1) & 0xFF for i in range(data_len))


def write(outdir, harness, name, data):
    d = os.path.join(outdir, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- model tensor lists (small dims: hidden 8, heads 2, kv heads 1, head_dim 4, intermediate 12, vocab 16) ----

def llama_hf(dt="BF16", layers=1, bias=False, moe=False):
    t = [("model.embed_tokens.weight", dt, [16, 8])]
    for i in range(layers):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", dt, [8]),
              (p + "self_attn.q_proj.weight", dt, [8, 8]),
              (p + "self_attn.k_proj.weight", dt, [4, 8]),
              (p + "self_attn.v_proj.weight", dt, [4, 8]),
              (p + "self_attn.o_proj.weight", dt, [8, 8]),
              (p + "post_attention_layernorm.weight", dt, [8])]
        if bias:
            t += [(p + "self_attn.q_proj.bias", dt, [8]),
                  (p + "self_attn.k_proj.bias", dt, [4]),
                  (p + "self_attn.v_proj.bias", dt, [4])]
        if moe:
            t += [(p + "block_sparse_moe.gate.weight", dt, [2, 8])]
            for e in range(2):
                q = p + f"block_sparse_moe.experts.{e}."
                t += [(q + "w1.weight", dt, [12, 8]), (q + "w3.weight", dt, [12, 8]), (q + "w2.weight", dt, [8, 12])]
        else:
            t += [(p + "mlp.gate_proj.weight", dt, [12, 8]),
                  (p + "mlp.up_proj.weight", dt, [12, 8]),
                  (p + "mlp.down_proj.weight", dt, [8, 12])]
    t += [("model.norm.weight", dt, [8]), ("lm_head.weight", dt, [16, 8])]
    return t


def llama_native(dt="BF16"):
    return [("embed.weight", dt, [16, 8]), ("layers.0.attn_norm.weight", dt, [8]),
            ("layers.0.attn.q.weight", dt, [8, 8]), ("layers.0.attn.kv.weight", dt, [8, 8]),
            ("layers.0.attn.o.weight", dt, [8, 8]), ("layers.0.mlp_norm.weight", dt, [8]),
            ("layers.0.mlp.gate_up.weight", dt, [24, 8]), ("layers.0.mlp.down.weight", dt, [8, 12]),
            ("final_norm.weight", dt, [8]), ("lm_head.weight", dt, [16, 8])]


def gpt2_hf(prefix="", dt="F32"):
    p = prefix
    return [(p + "wte.weight", dt, [16, 8]), (p + "wpe.weight", dt, [4, 8]),
            (p + "h.0.ln_1.weight", dt, [8]), (p + "h.0.ln_1.bias", dt, [8]),
            (p + "h.0.attn.c_attn.weight", dt, [8, 24]), (p + "h.0.attn.c_attn.bias", dt, [24]),
            (p + "h.0.attn.c_proj.weight", dt, [8, 8]), (p + "h.0.attn.c_proj.bias", dt, [8]),
            (p + "h.0.attn.bias", "BOOL", [1, 1, 4, 4]),
            (p + "h.0.ln_2.weight", dt, [8]), (p + "h.0.ln_2.bias", dt, [8]),
            (p + "h.0.mlp.c_fc.weight", dt, [8, 32]), (p + "h.0.mlp.c_fc.bias", dt, [32]),
            (p + "h.0.mlp.c_proj.weight", dt, [32, 8]), (p + "h.0.mlp.c_proj.bias", dt, [8]),
            (p + "ln_f.weight", dt, [8]), (p + "ln_f.bias", dt, [8])]


def gpt2_native(dt="F32"):
    return [("embed.weight", dt, [16, 8]), ("pos_embed.weight", dt, [4, 8]),
            ("layers.0.attn_norm.weight", dt, [8]), ("layers.0.attn_norm.bias", dt, [8]),
            ("layers.0.attn.q.weight", dt, [8, 8]), ("layers.0.attn.kv.weight", dt, [16, 8]),
            ("layers.0.attn.q.bias", dt, [8]), ("layers.0.attn.kv.bias", dt, [16]),
            ("layers.0.attn.o.weight", dt, [8, 8]), ("layers.0.attn.o.bias", dt, [8]),
            ("layers.0.mlp.up.weight", dt, [32, 8]), ("layers.0.mlp.down.weight", dt, [8, 32]),
            ("final_norm.weight", dt, [8]), ("final_norm.bias", dt, [8])]


def phi3_hf(dt="BF16"):
    return [("model.embed_tokens.weight", dt, [16, 8]), ("model.layers.0.input_layernorm.weight", dt, [8]),
            ("model.layers.0.self_attn.qkv_proj.weight", dt, [16, 8]),
            ("model.layers.0.self_attn.o_proj.weight", dt, [8, 8]),
            ("model.layers.0.post_attention_layernorm.weight", dt, [8]),
            ("model.layers.0.mlp.gate_up_proj.weight", dt, [24, 8]),
            ("model.layers.0.mlp.down_proj.weight", dt, [8, 12]),
            ("model.norm.weight", dt, [8]), ("lm_head.weight", dt, [16, 8])]


# ---- safetensors ----

def seeds_safetensors(out):
    h = "safetensors"
    for dt in DTYPE_SIZE:
        write(out, h, f"one-{dt.lower()}", st_bytes([("w", dt, [2, 3])]))
    write(out, h, "scalar", st_bytes([("s", "F32", [])]))
    write(out, h, "empty-object", st_bytes([]))
    write(out, h, "zero-size", st_bytes([("z", "F32", [0, 4]), ("a", "F16", [2]), ("y", "I8", [3, 0])]))
    write(out, h, "eight-dims", st_bytes([("d8", "U8", [1, 2, 1, 2, 1, 2, 1, 1])]))
    write(out, h, "metadata", st_bytes([("a", "F32", [2]), ("b", "BF16", [3])],
                                       meta={"format": "pt", "ckptfs.layout": "llama", "note": "q\"\\\n"}))
    write(out, h, "unpadded", st_bytes([("a", "F32", [2])], pad=False))
    write(out, h, "names-escaped", st_bytes([("a/b%2F\u00e9", "F32", [1]), ("tab\there", "U8", [1])]))
    write(out, h, "llama", st_bytes(llama_hf("F16")))
    write(out, h, "gpt2", st_bytes(gpt2_hf("transformer.")))
    ok1 = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    broken = {
        "too-short": b"\x08\x00\x00",
        "length-huge": struct.pack("<Q", 1 << 62) + b"{}",
        "length-past-eof": struct.pack("<Q", 100) + b"{}      ",
        "length-zero": struct.pack("<Q", 0),
        "not-json": raw_st("{nope}  ", 0),
        "not-object": raw_st("[1,2,3] ", 0),
        "trailing-bytes": raw_st(ok1 + "x", 8),
        "trailing-nul": raw_st(ok1 + "\0", 8),
        "data-short": raw_st(ok1, 7),
        "data-long": raw_st(ok1, 9),
        "gap": raw_st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
        "overlap": raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                          '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
        "duplicate-name": raw_st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                 '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
        "nul-names": raw_st('{"a\\u0000x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                            '"a\\u0000y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
        "empty-name": raw_st('{"":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8),
        "bad-dtype": raw_st('{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}', 8),
        "dtype-not-string": raw_st('{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}', 8),
        "nine-dims": raw_st('{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', 1),
        "shape-negative": raw_st('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', 1),
        "shape-float": raw_st('{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}', 1),
        "shape-huge": raw_st('{"a":{"dtype":"F64","shape":[9007199254740992,9007199254740992],'
                             '"data_offsets":[0,8]}}', 8),
        "shape-2p53": raw_st('{"a":{"dtype":"U8","shape":[0,9007199254740992],"data_offsets":[0,0]}}', 0),
        "offsets-reversed": raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}', 8),
        "offsets-three": raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', 8),
        "offsets-1e300": raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}}', 8),
        "missing-shape": raw_st('{"a":{"dtype":"F32","data_offsets":[0,8]}}', 8),
        "extra-key": raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}', 8),
        "tensor-not-object": raw_st('{"a":[1]}', 0),
        "meta-not-object": raw_st('{"__metadata__":[],"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1),
        "meta-not-string": raw_st('{"__metadata__":{"k":1}}', 0),
        "meta-twice": raw_st('{"__metadata__":{},"__metadata__":{}}', 0),
        "meta-dup-key": raw_st('{"__metadata__":{"k":"1","k":"2"}}', 0),
        "deep-json": raw_st('{"a":' + "[" * 600 + "]" * 600 + "}", 0),
    }
    for name, data in broken.items():
        write(out, h, "bad-" + name, data)


# ---- index.json (the harness's directory holds model-0000{1,2}-of-00002.safetensors, extra.safetensors,
# inside.safetensors -> shard 1, outside.safetensors -> /etc/hostname, config.json, README.md, sub/, up -> ../..)

def seeds_index(out):
    h = "index"
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    ok = {"a": s1, "b": s2, "c": s2}
    variants = {
        "ok": {"metadata": {"total_size": 14}, "weight_map": ok},
        "ok-no-metadata": {"weight_map": ok},
        "ok-reordered": {"weight_map": {"c": s2, "a": s1, "b": s2}},
        "missing-tensor": {"weight_map": {"a": s1, "b": s2}},
        "extra-tensor": {"weight_map": dict(ok, z=s1)},
        "wrong-shard": {"weight_map": {"a": s2, "b": s2, "c": s2}},
        "empty-map": {"weight_map": {}},
        "no-map": {"metadata": {}},
        "map-list": {"weight_map": [s1, s2]},
        "entry-number": {"weight_map": {"a": 1}},
        "shard-missing": {"weight_map": dict(ok, a="model-00003-of-00003.safetensors")},
        "shard-dotdot": {"weight_map": dict(ok, a="../" + s1)},
        "shard-slash": {"weight_map": dict(ok, a="sub/x.safetensors")},
        "shard-absolute": {"weight_map": dict(ok, a="/etc/passwd")},
        "shard-dir": {"weight_map": dict(ok, a="sub")},
        "shard-up": {"weight_map": dict(ok, a="up")},
        "shard-empty-name": {"weight_map": dict(ok, a="")},
        "shard-dot": {"weight_map": dict(ok, a=".")},
        "shard-symlink-in": {"weight_map": {"a": "inside.safetensors", "b": s2, "c": s2}},
        "shard-symlink-in-dup": {"weight_map": dict(ok, x="inside.safetensors")},
        "shard-symlink-out": {"weight_map": dict(ok, a="outside.safetensors")},
        "shard-is-index": {"weight_map": dict(ok, a="model.safetensors.index.json")},
        "shard-is-config": {"weight_map": dict(ok, a="config.json")},
        "shard-is-readme": {"weight_map": dict(ok, a="README.md")},
        "shard-extra": {"weight_map": dict(ok, d="extra.safetensors")},
        "only-extra": {"weight_map": {"d": "extra.safetensors"}},
        "top-list": [1, 2],
    }
    for name, v in variants.items():
        write(out, h, name, json.dumps(v, indent=2) + "\n")
    write(out, h, "dup-key", '{"weight_map":{"a":"%s","a":"%s","b":"%s","c":"%s"}}' % (s1, s1, s2, s2))
    write(out, h, "nul-in-name", '{"weight_map":{"a\\u0000b":"%s","b":"%s","c":"%s"}}' % (s1, s2, s2))
    write(out, h, "trailing", json.dumps({"weight_map": ok}) + " x")
    write(out, h, "empty", "")
    write(out, h, "truncated", json.dumps({"weight_map": ok})[:30])


# ---- config.json ----

def seeds_config(out):
    h = "config"
    base = {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 12, "vocab_size": 16, "torch_dtype": "bfloat16"}
    classes = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
               "mixtral": "MixtralForCausalLM", "qwen2": "Qwen2ForCausalLM", "gemma": "GemmaForCausalLM",
               "phi3": "Phi3ForCausalLM", "unknown": "BertModel"}
    for mt, cls in classes.items():
        c = dict(base, model_type=mt if mt != "unknown" else "bert", architectures=[cls])
        if mt == "gpt2":
            c = {"model_type": "gpt2", "architectures": [cls], "n_embd": 8, "n_layer": 1, "n_head": 2,
                 "vocab_size": 16, "n_inner": None}
        if mt == "mixtral":
            c["num_local_experts"] = 4
        if mt == "gemma":
            c["head_dim"] = 16
        write(out, h, mt, json.dumps(c, indent=2))
        c2 = dict(c)
        del c2["model_type"]
        write(out, h, mt + "-class-only", json.dumps(c2))
    odd = {
        "qwen2moe-class": {"architectures": ["Qwen2MoeForCausalLM"]},
        "class-not-string": {"architectures": [5]},
        "architectures-empty": {"architectures": []},
        "model-type-number": {"model_type": 3, "architectures": ["LlamaForCausalLM"]},
        "dims-negative": dict(base, model_type="llama", hidden_size=-8),
        "dims-float": dict(base, model_type="llama", hidden_size=8.5),
        "dims-huge": dict(base, model_type="llama", hidden_size=1e300, num_attention_heads=1e19),
        "dims-2p53": dict(base, model_type="llama", hidden_size=9007199254740992),
        "dims-strings": dict(base, model_type="llama", hidden_size="8"),
        "heads-zero": dict(base, model_type="llama", num_attention_heads=0),
        "tie-false": dict(base, model_type="llama", tie_word_embeddings=False),
        "tie-string": dict(base, model_type="llama", tie_word_embeddings="yes"),
        "gpt2-heads-big": {"model_type": "gpt2", "n_embd": 2, "n_head": 64},
    }
    for name, c in odd.items():
        write(out, h, name, json.dumps(c))
    for name, text in {"array": "[1,2]", "string": '"llama"', "null": "null", "empty": "",
                       "nested": '{"model_type":{"x":"llama"}}', "truncated": '{"model_type":"lla'}.items():
        write(out, h, name, text)


# ---- layouts ----

def seeds_layout(out):
    h = "layout"
    ldir = os.path.join(REPO, "layouts")
    for f in sorted(os.listdir(ldir)):
        if f.endswith(".json"):
            with open(os.path.join(ldir, f), "rb") as src:
                write(out, h, "repo-" + f[:-5], src.read())

    def lay(rules, **kw):
        d = {"name": kw.pop("name", "t")}
        d.update(kw)
        d["rules"] = [{"out": o, "expr": e} for o, e in rules]
        return json.dumps(d)

    good = {
        "slice-syms": lay([("q.{layer}", "slice(0, 0, heads*head_dim, model.layers.{layer}.self_attn.qkv_proj.weight)"),
                           ("kv.{layer}", "slice(0, heads*head_dim, end, model.layers.{layer}.self_attn.qkv_proj.weight)")]),
        "slice-fracs": lay([("a", "slice(0, 1/4, 3/4, model.embed_tokens.weight)")]),
        "slice-dim1": lay([("w.{layer}", "slice(1, 0, 1/2, model.layers.{layer}.mlp.gate_proj.weight)"),
                           ("v.{layer}", "slice(1, 1/2, end, model.layers.{layer}.mlp.gate_proj.weight)")]),
        "transpose-slice": lay([("t.{layer}", "transpose(slice(0, 0, 4, model.layers.{layer}.self_attn.q_proj.weight))")]),
        "slice-transpose": lay([("t", "slice(1, 2, 6, transpose(transformer.h.0.attn.c_attn.weight))")]),
        "concat-dim1": lay([("kv.{layer}", "concat(1, model.layers.{layer}.self_attn.k_proj.weight, "
                                           "model.layers.{layer}.self_attn.v_proj.weight)")]),
        "concat-three": lay([("x.{layer}", "concat(0, model.layers.{layer}.self_attn.q_proj.weight, "
                                           "model.layers.{layer}.self_attn.k_proj.weight, "
                                           "model.layers.{layer}.self_attn.v_proj.weight)")]),
        "concat-nested": lay([("y", "concat(0, concat(0, lm_head.weight, lm_head.weight), transpose(transpose(lm_head.weight)))")]),
        "concat-same-twice": lay([("y", "concat(0, model.norm.weight, model.norm.weight)")]),
        "text-placeholders": lay([("out.{a}.{b}", "{a}.h.{layer}.{b}")]),
        "experts": lay([("e.{layer}.{expert}", "concat(0, model.layers.{layer}.block_sparse_moe.experts.{expert}.w1.weight, "
                                               "model.layers.{layer}.block_sparse_moe.experts.{expert}.w3.weight)")]),
        "drop-all": lay([("x", "scalar")], drop=["{anything}"]),
        "defaults": lay([("w", "{p}wte.weight")], defaults={"p": "transformer."}),
        "identity": lay([("cube", "cube"), ("lm_head.weight", "lm_head.weight")]),
        "swap": lay([("cube", "col"), ("col", "cube")]),
        "transpose-3d": lay([("t", "transpose(cube)")]),
        "slice-cube-dim2": lay([("s", "slice(2, 1, 3, cube)")]),
        "concat-mixed-dtypes": lay([("m", "concat(0, model.norm.weight, model.layers.0.input_layernorm.weight)")]),
        "zero-size": lay([("z", "concat(0, empty.weight, empty.weight)"), ("s", "slice(0, 0, 0, lm_head.weight)")]),
        "inverse-gpt2-like": lay([("layers.{layer}.attn.q.weight", "slice(0, 0, 1/3, transpose(h.{layer}.attn.c_attn.weight))"),
                                  ("layers.{layer}.attn.kv.weight", "slice(0, 1/3, end, transpose(h.{layer}.attn.c_attn.weight))")]),
        "inverse-frac-frac": lay([("layers.{layer}.attn.kv.weight", "slice(0, 1/4, 3/4, x.{layer})")]),
        "inverse-int-frac": lay([("layers.{layer}.attn.q.weight", "slice(0, 4, 1/2, y.{layer})")]),
        "inverse-frac-int": lay([("layers.{layer}.attn.q.weight", "slice(0, 1/2, 12, y.{layer})")]),
        "inverse-concat": lay([("layers.{layer}.mlp.gate_up.weight", "concat(0, g.{layer}, u.{layer}, w.{layer})")]),
        "many-placeholders": lay([("o{a}{b}{c}{d}", "{a}{b}{c}{d}")]),
    }
    for name, text in good.items():
        write(out, h, name, text)
    deep = "concat(0, " * 40 + "a, b" + ")" * 40
    broken = {
        "not-object": "[]",
        "no-name": json.dumps({"rules": [{"out": "a", "expr": "a"}]}),
        "no-rules": json.dumps({"name": "x"}),
        "rules-empty": json.dumps({"name": "x", "rules": []}),
        "rule-not-object": json.dumps({"name": "x", "rules": [1]}),
        "rule-no-expr": json.dumps({"name": "x", "rules": [{"out": "a"}]}),
        "arch-not-list": lay([("a", "b")], architectures="llama"),
        "arch-not-strings": lay([("a", "b")], architectures=[1]),
        "drop-not-strings": lay([("a", "b")], drop=[None]),
        "defaults-list": lay([("a", "b")], defaults=["x"]),
        "defaults-17": lay([("a", "b")], defaults={f"k{i}": "v" for i in range(17)}),
        "defaults-number": lay([("a", "b")], defaults={"k": 1}),
        "unbalanced": lay([("a", "concat(0, a, b")]),
        "unknown-op": lay([("a", "stack(0, a, b)")]),
        "concat-one": lay([("a", "concat(0, a)")]),
        "dim-9": lay([("a", "concat(9, a, b)")]),
        "dim-word": lay([("a", "slice(x, 0, 1, a)")]),
        "fraction-zero-den": lay([("a", "slice(0, 0/0, end, a)")]),
        "fraction-over-one": lay([("a", "slice(0, 2/1, end, a)")]),
        "bound-unknown-sym": lay([("a", "slice(0, layers, end, a)")]),
        "bound-five-syms": lay([("a", "slice(0, heads*heads*heads*heads*heads, end, a)")]),
        "bound-overflow": lay([("a", "slice(0, 99999999999*99999999999, end, a)")]),
        "bound-star": lay([("a", "slice(0, *, end, a)")]),
        "too-deep": lay([("a", deep)]),
        "trailing-text": lay([("a", "a b")]),
        "empty-expr": lay([("a", "")]),
        "uncovered-out": lay([("a.{layer}", "b")]),
        "uncovered-input": lay([("a.{layer}", "concat(0, b.{layer}, c.{expert})")]),
        "unclosed-brace": lay([("a.{layer", "b.{layer")]),
        "empty-brace": lay([("a.{}", "b.{}")]),
        "long-key": lay([("a.{%s}" % ("k" * 40), "b.{%s}" % ("k" * 40))]),
        "long-name": lay([("a", "x" * 600)]),
        "truncated": lay([("a", "b")])[:20],
    }
    for name, text in broken.items():
        write(out, h, "bad-" + name, text)


# ---- views (input = model.safetensors; config chosen by the harness from the tensor names) ----

def seeds_views(out):
    h = "views"
    write(out, h, "llama-bf16", st_bytes(llama_hf("BF16"), meta={"format": "pt"}))
    write(out, h, "llama-f32-2layers", st_bytes(llama_hf("F32", layers=2)))
    write(out, h, "llama-bias-f16", st_bytes(llama_hf("F16", bias=True)))
    write(out, h, "mixtral-f8", st_bytes(llama_hf("F8_E4M3", moe=True)))
    write(out, h, "llama-native", st_bytes(llama_native("BF16"), meta={"format": "pt", "ckptfs.layout": "llama"}))
    write(out, h, "gpt2-hf", st_bytes(gpt2_hf("")))
    write(out, h, "gpt2-hf-prefix-f16", st_bytes(gpt2_hf("transformer.", "F16")))
    write(out, h, "gpt2-native", st_bytes(gpt2_native(), meta={"format": "pt", "ckptfs.layout": "gpt2",
                                                               "ckptfs.prefix": "transformer."}))
    write(out, h, "phi3-hf", st_bytes(phi3_hf()))
    write(out, h, "llama-mixed-dtypes", st_bytes([("model.embed_tokens.weight", "F64", [16, 8]),
                                                  ("model.layers.0.self_attn.k_proj.weight", "F16", [4, 8]),
                                                  ("model.layers.0.self_attn.v_proj.weight", "BF16", [4, 8]),
                                                  ("model.norm.weight", "F8_E5M2", [8]),
                                                  ("ids", "I64", [3]), ("mask", "BOOL", [2, 2])]))
    write(out, h, "noconfig-odd", st_bytes([("a/b", "F32", [2]), ("a%2Fb", "F16", [3]), ("s", "U8", []),
                                            ("z", "BF16", [0, 3]), ("t\u00e9", "I32", [1, 1, 1, 1, 1, 1, 1, 2])]))
    write(out, h, "empty", st_bytes([]))
    write(out, h, "big-shards", st_bytes([("model.embed_tokens.weight", "F32", [64, 8]),
                                          ("lm_head.weight", "F32", [64, 8]), ("model.norm.weight", "F32", [8])]))
    write(out, h, "kv-uneven", st_bytes([("model.layers.0.self_attn.k_proj.weight", "F32", [4, 8]),
                                         ("model.layers.0.self_attn.v_proj.weight", "F32", [2, 8])]))
    write(out, h, "native-kv-odd", st_bytes([("layers.0.attn.kv.weight", "F32", [3, 8]),
                                             ("layers.0.attn.q.weight", "F32", [8, 8])]))
    write(out, h, "gpt2-cattn-odd", st_bytes([("h.0.attn.c_attn.weight", "F32", [8, 5]),
                                              ("h.0.attn.c_attn.bias", "F32", [7])]))
    write(out, h, "phi3-qkv-short", st_bytes([("model.layers.0.self_attn.qkv_proj.weight", "F32", [4, 8])]))
    write(out, h, "bad-overlap", raw_st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                        '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8))


def torch_saves():
    """[(name, bytes)] of small torch.save outputs (zip and legacy), when torch is installed."""
    try:
        import io
        import collections
        import torch
    except ImportError:
        return []
    out = []
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    sd = collections.OrderedDict([("wte.weight", w), ("lm_head.weight", w), ("b", torch.zeros(3, dtype=torch.bfloat16)),
                                  ("t", w.t()), ("off", w.view(-1)[2:5]), ("s", torch.tensor(1.5))])
    ckpt = {"model": {"_orig_mod." + k: v for k, v in sd.items()}, "iter_num": 5, "model_args": {"n_layer": 1},
            "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95)}]}}
    for name, obj in (("sd", sd), ("ckpt", ckpt)):
        for legacy in (False, True):
            b = io.BytesIO()
            torch.save(obj, b, _use_new_zipfile_serialization=not legacy)
            out.append((f"{name}-{'legacy' if legacy else 'zip'}", b.getvalue()))
    return out


def seeds_pickle(out):
    import pickle
    import zipfile
    import io
    h = "pickle"
    write(out, h, "dict-p2", pickle.dumps({"a": 5, "b": ([1.0, True, None],), "neg": -3, "big": 2**70}, protocol=2))
    write(out, h, "dict-p4", pickle.dumps({"a": 5, "k": "v", "l": list(range(20))}, protocol=4))
    write(out, h, "tensor", b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wctorch._utils\n"
                            b"_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
                            b"0X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K\x03K\x01\x86\x89h\x00)Rtq\x03Rs.")
    write(out, h, "bad-global", b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.")
    for name, data in torch_saves():
        if data[:2] == b"PK":
            z = zipfile.ZipFile(io.BytesIO(data))
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            write(out, h, name, z.read(pkl))
        else:
            write(out, h, name, data[data.index(b".") + 1:][:4096])


def seeds_zip(out):
    import zipfile
    import io
    h = "zip"
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}.")
        z.writestr("archive/data/0", b"\0" * 24)
        z.writestr("archive/version", b"3\n")
    write(out, h, "stored", b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a/x", b"12345678", compress_type=zipfile.ZIP_DEFLATED)
    write(out, h, "deflated", b.getvalue())
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            f.write(b"\1" * 16)
    write(out, h, "zip64", b.getvalue())
    for name, data in torch_saves():
        if data[:2] == b"PK":
            write(out, h, name, data)


def seeds_torch(out):
    for name, data in torch_saves():
        write(out, "torch", name, data)


def seeds_dcp(out):
    # DCP .metadata files of both eras, from the test's writer, in a child
    # process: it registers stand-in torch modules.
    import subprocess
    import tempfile
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, os.path.join(here, "..", "dcp_fixtures.py"), "seed", tmp], check=True)
        for f in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, f), "rb") as fh:
                write(out, "dcp", f, fh.read())


# ---- jsonscan (input = 4 bytes of limits, then any JSON text) ----

def seeds_jsonscan(out):
    h = "jsonscan"
    limits = {"none": b"\0\0\0\0", "tight": b"\x03\x08\x04\x90", "depth2": b"\x02\0\0\0"}
    docs = {
        "object": '{"a": [1, -2.5e3, "x", true, false, null], "b": {"c": {}}}',
        "escapes": '["\\"\\\\\\/\\b\\f\\n\\r\\t", "\\u00e9\\ud83d\\ude00", "caf\u00e9"]',
        "numbers": "[0, -0, 1.5, 1e9, 1E-9, 18446744073709551615, 18446744073709551616, 01]",
        "deep": "[" * 70 + "]" * 70,
        "header": '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}',
        "trailing": '{} x',
        "cut": '{"a": "b',
        "lone-surrogate": '["\\udc00", "\\ud800x"]',
        "nul-escape": '["a\\u0000b"]',
    }
    for ln, lb in limits.items():
        for dn, d in docs.items():
            write(out, h, ln + "-" + dn, lb + d.encode())
    write(out, h, "none-bad-utf8", limits["none"] + b'["\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"]')

# ---- adapter_config.json (PEFT LoRA) ----

def seeds_lora_config(out):
    h = "lora_config"
    ok = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
          "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
          "target_modules": ["q_proj", "v_proj"], "rank_pattern": {}, "alpha_pattern": {},
          "modules_to_save": None, "layer_replication": None}
    cases = {
        "ok": ok,
        "rslora-patterns": dict(ok, use_rslora=True, rank_pattern={"layers.1.self_attn.q_proj": 4},
                                alpha_pattern={"down_proj": 32}, modules_to_save=["lm_head", "score"]),
        "gpt2-fifo": dict(ok, fan_in_fan_out=True, target_modules="c_attn|c_fc"),
        "r0": dict(ok, r=0), "r-float": dict(ok, r=2.5), "r-huge": dict(ok, r=1e300),
        "dora": dict(ok, use_dora=True), "ia3": dict(ok, peft_type="IA3"), "bias-all": dict(ok, bias="all"),
        "pattern-bad": dict(ok, rank_pattern={"q_proj": "x"}), "alpha-nan": dict(ok, lora_alpha="nan"),
        "save-bad": dict(ok, modules_to_save=[1]), "lora-bias": dict(ok, lora_bias=True),
    }
    for name, c in cases.items():
        write(out, h, name, json.dumps(c).encode())
    write(out, h, "trailing", json.dumps(ok).encode() + b" }")
    write(out, h, "truncated", json.dumps(ok).encode()[:40])
def seeds_gguf_vocab(out):
    """Byte 0: vocabulary size - 1 (odd: the gpt2 architecture); then
    tokenizer.json, NUL, tokenizer_config.json."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_gguf", os.path.join(REPO, "tests", "check_gguf.py"))
    cg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cg)
    h = "gguf_vocab"
    for name, (tok, cfg) in (("spm", cg.spm_tokenizer()), ("gpt2", cg.gpt2_tokenizer())):
        n = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
        small = json.loads(json.dumps(tok))
        keep = sorted(small["model"]["vocab"].items(), key=lambda kv: kv[1])[:200]
        small["model"]["vocab"] = dict(keep)
        small["model"]["merges"] = small["model"]["merges"][:20]
        small["added_tokens"] = [a for a in small["added_tokens"] if a["id"] < 200]
        body = json.dumps(small).encode() + b"\0" + json.dumps(cfg).encode()
        write(out, h, name, bytes([199 if name == "spm" else 200]) + body)
        del n
    write(out, h, "wordlevel", b"\x07" + b'{"model":{"type":"WordLevel","vocab":{"a":0}}}')
    write(out, h, "merge-arrays", b"\x07" + b'{"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0,"b":1,"ab":2},'
          b'"merges":[["a","b"]]}}')


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make-seeds.py OUTDIR")
    out = sys.argv[1]
    seeds_safetensors(out)
    seeds_index(out)
    seeds_config(out)
    seeds_layout(out)
    seeds_views(out)
    seeds_pickle(out)
    seeds_zip(out)
    seeds_torch(out)
    seeds_jsonscan(out)
    seeds_lora_config(out)
    seeds_gguf_vocab(out)
    seeds_dcp(out)
    for hname in sorted(os.listdir(out)):
        d = os.path.join(out, hname)
        if os.path.isdir(d):
            print(f"seeds: {hname}: {len(os.listdir(d))} files")


if __name__ == "__main__":
    main()
