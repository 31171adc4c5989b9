"""gen_lora.py - write a PEFT-format LoRA adapter (adapter_config.json +
adapter_model.safetensors) for a base checkpoint, or turn a base into a
checkpoint that carries its own LoRA pairs (nanoGPT-LoRA naming).

    gen_lora.py adapter BASE OUT --targets q_proj,v_proj [--r 8] [--alpha 16]
        [--rslora] [--fan-in-fan-out] [--rank-pattern JSON] [--alpha-pattern JSON]
        [--save lm_head] [--dtype F32|BF16] [--adapter-name default] [--seed N]
        [--config-extra JSON]
    gen_lora.py pairs BASE OUT --targets q_proj --embed model.embed_tokens
        [--r 4] [--alpha 16]

Shapes come from the base's safetensors headers; A and B are random (B
not zero, so the delta is visible).  Written with numpy only; used by
tests/mount-lora.sh and bench/bench-lora.sh.
"""

import argparse
import json
import os
import re
import shutil
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402


def write_st(path, tensors, meta=None):
    """tensors: list of (name, dtype, ndarray of the storage dtype)."""
    hdr, off = {}, 0
    if meta:
        hdr["__metadata__"] = meta
    for name, dt, arr in tensors:
        n = arr.nbytes
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, arr in tensors:
            f.write(np.ascontiguousarray(arr).tobytes())


def base_tensors(base):
    return stlib.read_dir(base)


def storage(arr32, dt):
    if dt == "BF16":
        return stlib.bf16_bits(arr32).reshape(arr32.shape)
    return arr32.astype(np.float32)


def pattern_value(patterns, module, default):
    best = None
    for k, v in patterns.items():
        if re.fullmatch(r"(.*\.)?" + re.escape(k), module) and (best is None or len(k) > len(best[0])):
            best = (k, v)
    return best[1] if best else default


def cmd_adapter(a):
    rng = np.random.default_rng(a.seed)
    base = base_tensors(a.base)
    targets = a.targets.split(",")
    rp = json.loads(a.rank_pattern) if a.rank_pattern else {}
    ap = json.loads(a.alpha_pattern) if a.alpha_pattern else {}
    tail = "." + a.adapter_name if a.adapter_name else ""
    with open(os.path.join(a.base, "config.json")) as f:
        gpt2 = json.load(f).get("model_type") == "gpt2"
    out = []
    for name in sorted(base):
        if not name.endswith(".weight"):
            continue
        module = name[:-len(".weight")]
        if module.split(".")[-1] not in targets:
            continue
        w = base[name]
        r = pattern_value(rp, module, a.r)
        rows, cols = w.shape
        # GPT-2's Conv1D is [in, out] whatever the config says (PEFT forces fan_in_fan_out)
        conv1d = gpt2 and module.split(".")[-1] in ("c_attn", "c_proj", "c_fc")
        i, o = (rows, cols) if a.fan_in_fan_out or conv1d else (cols, rows)
        A = rng.standard_normal((r, i)).astype(np.float32) * 0.1
        B = rng.standard_normal((o, r)).astype(np.float32) * 0.1
        pm = a.module_prefix + module
        out.append(("base_model.model.%s.lora_A%s.weight" % (pm, tail), a.dtype, storage(A, a.dtype)))
        out.append(("base_model.model.%s.lora_B%s.weight" % (pm, tail), a.dtype, storage(B, a.dtype)))
    if a.embed:  # PEFT's Embedding: lora_embedding_A [r, vocab], lora_embedding_B [dim, r]
        vocab, dim = base[a.embed + ".weight"].shape
        A = rng.standard_normal((a.r, vocab)).astype(np.float32) * 0.1
        B = rng.standard_normal((dim, a.r)).astype(np.float32) * 0.1
        out.append(("base_model.model.%s.lora_embedding_A%s" % (a.embed, tail), a.dtype, storage(A, a.dtype)))
        out.append(("base_model.model.%s.lora_embedding_B%s" % (a.embed, tail), a.dtype, storage(B, a.dtype)))
    saves = [s for s in (a.save or "").split(",") if s]
    for s in saves:
        t = base[s + ".weight"]
        v = rng.standard_normal(t.shape).astype(np.float32) * 0.05
        out.append(("base_model.model.%s.weight" % s, "F32", v))
    os.makedirs(a.out, exist_ok=True)
    write_st(os.path.join(a.out, "adapter_model.safetensors"), out, {"format": "pt"})
    cfg = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.r, "lora_alpha": a.alpha,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": a.fan_in_fan_out,
        "use_rslora": a.rslora, "use_dora": False,
        "target_modules": targets + ([a.embed.split(".")[-1]] if a.embed else []),
        "rank_pattern": rp, "alpha_pattern": ap, "modules_to_save": saves or None,
        "base_model_name_or_path": os.path.abspath(a.base), "inference_mode": True,
    }
    if a.config_extra:
        cfg.update(json.loads(a.config_extra))
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("a test adapter\n")


def cmd_pairs(a):
    """Copy BASE to OUT with each target X.weight split into
    X.main_weight.weight + X.lora_A.weight + X.lora_B.weight."""
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    targets = a.targets.split(",")
    for f in sorted(os.listdir(a.base)):
        p = os.path.join(a.base, f)
        if f.endswith(".safetensors"):
            meta, ts = stlib.parse_safetensors(p, stlib.read_file(p), False)
            out = []
            for name, t, _, _ in ts:
                module = name[:-len(".weight")] if name.endswith(".weight") else None
                linear = module and module.split(".")[-1] in targets
                emb = module and module == a.embed
                if not (linear or emb):
                    out.append((name, t.dtype, t.arr))
                    continue
                R, C = t.shape
                out.append((module + ".main_weight.weight", t.dtype, t.arr))
                if linear:  # nn.Linear(C, r), nn.Linear(r, R)
                    A = rng.standard_normal((a.r, C)).astype(np.float32) * 0.1
                    B = rng.standard_normal((R, a.r)).astype(np.float32) * 0.1
                else:  # nn.Embedding(R, r), nn.Linear(r, C)
                    A = rng.standard_normal((R, a.r)).astype(np.float32) * 0.1
                    B = rng.standard_normal((C, a.r)).astype(np.float32) * 0.1
                out.append((module + ".lora_A.weight", t.dtype, storage(A, t.dtype)))
                out.append((module + ".lora_B.weight", t.dtype, storage(B, t.dtype)))
            write_st(os.path.join(a.out, f), out, meta)
        elif f == "config.json":
            with open(p) as fh:
                cfg = json.load(fh)
            cfg["lora_alpha"] = a.alpha
            with open(os.path.join(a.out, f), "w") as fh:
                json.dump(cfg, fh, indent=2)
        elif f.endswith(".index.json"):
            continue  # rewritten below
        else:
            shutil.copy(p, os.path.join(a.out, f))
    idx = os.path.join(a.base, "model.safetensors.index.json")
    if os.path.exists(idx):
        wm = {}
        for f in sorted(os.listdir(a.out)):
            if f.endswith(".safetensors"):
                p = os.path.join(a.out, f)
                _, ts = stlib.parse_safetensors(p, stlib.read_file(p), False)
                for name, _, _, _ in ts:
                    wm[name] = f
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as fh:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, fh, indent=2)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("adapter")
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--targets", required=True)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16)
    p.add_argument("--rslora", action="store_true")
    p.add_argument("--fan-in-fan-out", action="store_true")
    p.add_argument("--rank-pattern")
    p.add_argument("--alpha-pattern")
    p.add_argument("--save")
    p.add_argument("--embed", default="", help="an embedding module to adapt, e.g. model.embed_tokens")
    p.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
    p.add_argument("--adapter-name", default="")
    p.add_argument("--module-prefix", default="", help='e.g. "transformer." for a GPT-2 base stored without it')
    p.add_argument("--config-extra")
    p.add_argument("--seed", type=int, default=1)
    q = sub.add_parser("pairs")
    q.add_argument("base")
    q.add_argument("out")
    q.add_argument("--targets", required=True)
    q.add_argument("--embed", default="")
    q.add_argument("--r", type=int, default=4)
    q.add_argument("--alpha", type=float, default=16)
    q.add_argument("--seed", type=int, default=2)
    a = ap.parse_args()
    (cmd_adapter if a.cmd == "adapter" else cmd_pairs)(a)


if __name__ == "__main__":
    main()
