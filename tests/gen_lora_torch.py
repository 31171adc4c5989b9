"""gen_lora_torch.py - LoRA fixtures written by real torch (torch.save), for
tests/mount-lora-torch.sh.

    gen_lora_torch.py bin ADAPTER OUT [--legacy]
        the adapter ADAPTER (adapter_model.safetensors, from gen_lora.py)
        saved again as OUT/adapter_model.bin, as PEFT does with
        safe_serialization=False (torch.save of the state dict); --legacy
        uses torch's pre-1.6 format. adapter_config.json is copied.
    gen_lora_torch.py hostile ADAPTER OUT
        the same, plus an object whose pickle calls os.system: a file that
        runs code when torch.load'ed without weights_only.
    gen_lora_torch.py model SRC OUT
        the safetensors model SRC (e.g. one with in-checkpoint LoRA pairs
        from gen_lora.py pairs) as OUT/pytorch_model.bin + config.json.
    gen_lora_torch.py ckpt OUT --r 4 --alpha 8
        a nanoGPT-LoRA checkpoint (GPT-2, 2 layers): OUT/ckpt.pt holding
        {'model': state dict, 'model_args': {...lora_rank, lora_alpha}},
        c_attn and c_proj of every block as X.main_weight.weight,
        X.lora_A.weight, X.lora_B.weight (nn.Linear [out, in]), the
        embedding wte too (LoRAEmbedding: A [vocab, r], B [dim, r]), and
        OUT-expected.npz: the merged HF GPT-2 tensors in float64,
        (W + s*B@A)^T with s = lora_alpha / r, and wte + A@B^T.
    gen_lora_torch.py check-ckpt OUT MNT
        MNT/hf/model.safetensors against OUT/expected.npz: every tensor of
        the expected set within the rounding of one fp32 accumulation
        ((r + 2) * 2^-24 * (|W| + s*|B|@|A|), the bound of check_lora.py),
        and a merged tensor differs from the unmerged one.
"""

import argparse
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402


def read_st(p, sd):
    _, ts = stlib.parse_safetensors(p, stlib.read_file(p), False)
    for name, t, _, _ in ts:
        if t.dtype == "BF16":
            x = torch.from_numpy(t.arr.astype(np.int16)).view(torch.bfloat16)
        else:
            x = torch.from_numpy(np.array(t.arr))
        sd[name] = x.reshape(t.shape)
    return sd


def read_adapter(d):
    return read_st(os.path.join(d, "adapter_model.safetensors"), {})


def cmd_model(a):
    sd = {}
    os.makedirs(a.out, exist_ok=True)
    for f in sorted(os.listdir(a.src)):
        p = os.path.join(a.src, f)
        if f.endswith(".safetensors"):
            read_st(p, sd)
        elif f == "config.json":
            shutil.copy(p, a.out)
    torch.save(sd, os.path.join(a.out, "pytorch_model.bin"))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def cmd_bin(a, hostile=False):
    sd = read_adapter(a.adapter)
    os.makedirs(a.out, exist_ok=True)
    shutil.copy(os.path.join(a.adapter, "adapter_config.json"), a.out)
    if hostile:
        sd["extra"] = RunsCode()
    torch.save(sd, os.path.join(a.out, "adapter_model.bin"),
               _use_new_zipfile_serialization=not getattr(a, "legacy", False))


def cmd_ckpt(a):
    g = torch.Generator().manual_seed(5)
    C, L, V, P = 32, 2, 64, 16
    sd, exp, mag = {}, {}, {}
    s = a.alpha / a.r

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    # The embedding as nanoGPT-LoRA's LoRAEmbedding: A [V, r], B [C, r],
    # merged unscaled as W + A @ B^T (lora.h); no separate lm_head (tied).
    we, ea, eb = rnd(V, C), rnd(V, a.r), rnd(C, a.r)
    sd["transformer.wte.main_weight.weight"] = we
    sd["transformer.wte.lora_A.weight"] = ea
    sd["transformer.wte.lora_B.weight"] = eb
    we64, ea64, eb64 = (x.double().numpy() for x in (we, ea, eb))
    exp["transformer.wte.weight"] = we64 + ea64 @ eb64.T
    mag["transformer.wte.weight"] = np.abs(we64) + np.abs(ea64) @ np.abs(eb64).T
    exp["transformer.wte.weight.unmerged"] = we64
    sd["transformer.wpe.weight"] = rnd(P, C)
    sd["transformer.ln_f.weight"] = 1 + rnd(C)
    sd["transformer.ln_f.bias"] = rnd(C)
    for i in range(L):
        h = "transformer.h.%d." % i
        for ln in ("ln_1", "ln_2"):
            sd[h + ln + ".weight"] = 1 + rnd(C)
            sd[h + ln + ".bias"] = rnd(C)
        sd[h + "mlp.c_fc.weight"] = rnd(4 * C, C)
        sd[h + "mlp.c_proj.weight"] = rnd(C, 4 * C)
        for mod, out in (("attn.c_attn", 3 * C), ("attn.c_proj", C)):
            w, A, B = rnd(out, C), rnd(a.r, C), rnd(out, a.r)
            sd[h + mod + ".main_weight.weight"] = w
            sd[h + mod + ".lora_A.weight"] = A
            sd[h + mod + ".lora_B.weight"] = B
            w64, A64, B64 = (x.double().numpy() for x in (w, A, B))
            exp[h + mod + ".weight"] = (w64 + s * (B64 @ A64)).T
            mag[h + mod + ".weight"] = (np.abs(w64) + abs(s) * (np.abs(B64) @ np.abs(A64))).T
            exp[h + mod + ".weight.unmerged"] = w64.T
        for mod in ("mlp.c_fc", "mlp.c_proj"):
            exp[h + mod + ".weight"] = sd[h + mod + ".weight"].double().numpy().T
    exp["transformer.wpe.weight"] = sd["transformer.wpe.weight"].double().numpy()
    model_args = dict(n_layer=L, n_head=2, n_embd=C, block_size=P, bias=False, vocab_size=V, dropout=0.0,
                      lora_rank=a.r, lora_alpha=a.alpha, lora_dropout=0.0)
    os.makedirs(a.out, exist_ok=True)
    torch.save({"model": sd, "model_args": model_args, "iter_num": 10, "best_val_loss": 1.5},
               os.path.join(a.out, "ckpt.pt"))
    np.savez(os.path.join(a.out, "..", os.path.basename(a.out) + "-expected.npz"), r=a.r,
             **{"e:" + k: v for k, v in exp.items()}, **{"m:" + k: v for k, v in mag.items()})


def cmd_check_ckpt(a):
    z = np.load(os.path.join(a.out, "..", os.path.basename(a.out) + "-expected.npz"))
    r = int(z["r"])
    p = os.path.join(a.mnt, "hf", "model.safetensors")
    _, ts = stlib.parse_safetensors(p, stlib.read_file(p), False)
    got = {name: t for name, t, _, _ in ts}
    merged = 0
    for key in z.files:
        if not key.startswith("e:") or key.endswith(".unmerged"):
            continue
        name = key[2:]
        if name not in got:
            stlib.fail("%s: no tensor '%s'" % (p, name))
        t = got[name]
        if t.dtype != "F32" or list(t.shape) != list(z[key].shape):
            stlib.fail("%s: '%s' is %s %s, expected F32 %s" % (p, name, t.dtype, t.shape, list(z[key].shape)))
        v = t.arr.astype(np.float64)
        if "m:" + name in z.files:
            bound = (r + 2) * 2.0 ** -24 * z["m:" + name]
            err = np.abs(v - z[key])
            if (err > bound).any():
                stlib.fail("%s: '%s' off the merge by up to %g (bound %g)" % (p, name, err.max(), bound.max()))
            if np.array_equal(v, z["e:" + name + ".unmerged"]):
                stlib.fail("%s: '%s' is the unmerged weight" % (p, name))
            merged += 1
        elif not np.array_equal(v, z[key]):
            stlib.fail("%s: '%s' differs" % (p, name))
    if merged == 0:
        stlib.fail("no merged tensor checked")
    print("check-ckpt: %d merged tensors within the fp32 bound, the others exact" % merged)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("bin", "hostile"):
        p = sub.add_parser(c)
        p.add_argument("adapter")
        p.add_argument("out")
        p.add_argument("--legacy", action="store_true")
    p = sub.add_parser("model")
    p.add_argument("src")
    p.add_argument("out")
    p = sub.add_parser("ckpt")
    p.add_argument("out")
    p.add_argument("--r", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8)
    p = sub.add_parser("check-ckpt")
    p.add_argument("out")
    p.add_argument("mnt")
    a = ap.parse_args()
    if a.cmd == "bin":
        cmd_bin(a)
    elif a.cmd == "hostile":
        cmd_bin(a, hostile=True)
    elif a.cmd == "model":
        cmd_model(a)
    elif a.cmd == "ckpt":
        cmd_ckpt(a)
    else:
        cmd_check_ckpt(a)


if __name__ == "__main__":
    main()
