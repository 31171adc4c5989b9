"""check_lora.py - the oracle of tests/mount-lora.sh: a mount's merged views
against W + s * B @ A computed by numpy in float64 from the base and the
adapter files (independent of ckptfs: its own reading of
adapter_config.json and PEFT's naming).

    check_lora.py BASE MNT [--adapter DIR]... [--pairs] [--scale S] [--tp N]...

The bound tested: a merged element of a 16-bit view (BF16, F16) is within
one unit in the last place of the output dtype of the float64 reference
(the only freedom is the order of an fp32 accumulation, which can move a
value across one rounding boundary); of an F32 view, within
(r + 2) * 2^-24 * (|W| + |s| * |B| @ |A|) of it (the classic bound of an
fp32 dot product of r terms plus the add).  Elements that are not merged
are bit for bit.  At least one merged element must differ from the base,
so a mount that ignores the adapter fails.

Then exactly, bit for bit, against the mount's own merged hf/: native/ is
the layout of hf/ (check_native's table), every tp-N rank and pp-2 stage
the split of native/, per-layer/ the split of hf/ (check_partition's), hf@bf16 and the 16-bit casts round once (so
they are checked against the reference, not against hf/), tensors/ holds
hf/ widened.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_native as cn  # noqa: E402
import check_partition as cp  # noqa: E402
from stlib import T, Mismatch, compare, compare_set, fail, to_float  # noqa: E402
import stlib  # noqa: E402
import gen_lora  # noqa: E402


class Ref:
    """A merged tensor: float64 reference, error scale, total rank."""

    def __init__(self, w):
        self.w = w
        self.ref = to_float(w).astype(np.float64)
        self.mag = np.abs(self.ref)
        self.rank = 0
        self.replaced = None


def conv1d(cfg, module):
    return cfg.get("model_type") == "gpt2" and module.split(".")[-1] in ("c_attn", "c_proj", "c_fc")


def apply_adapter(refs, base, cfg, d, scale):
    with open(os.path.join(d, "adapter_config.json")) as f:
        ac = json.load(f)
    ad = gen_lora.base_tensors(d)
    pre = "base_model.model."
    mods = {}
    for name, t in ad.items():
        assert name.startswith(pre), name
        rest = name[len(pre):]
        for tag in (".lora_embedding_A", ".lora_embedding_B", ".lora_A", ".lora_B"):
            if tag + "." in rest or rest.endswith(tag):
                module = rest[:rest.index(tag)]
                mods.setdefault(module, {})[tag[-1]] = t
                mods[module]["emb"] = "embedding" in tag
                break
        else:
            target = rest if rest in base else rest[len("transformer."):]
            refs.setdefault(target, Ref(base[target])).replaced = stlib.cast(
                t, {"F32": "fp32", "BF16": "bf16", "F16": "fp16"}[base[target].dtype])
    for module, ab in sorted(mods.items()):
        name = module + ".weight"
        if name not in base:
            name = name[len("transformer."):]
        A = to_float(ab["A"]).astype(np.float64)
        B = to_float(ab["B"]).astype(np.float64)
        r = gen_lora.pattern_value(ac.get("rank_pattern") or {}, module, ac["r"])
        alpha = gen_lora.pattern_value(ac.get("alpha_pattern") or {}, module, ac.get("lora_alpha", 8))
        if A.shape[0] != r:
            fail("oracle: %s: A has %d rows, r %d" % (module, A.shape[0], r))
        s = alpha / math.sqrt(r) if ac.get("use_rslora") else alpha / r
        if scale is not None:
            s = scale
        delta, mag = B @ A, np.abs(B) @ np.abs(A)
        if ab["emb"] or ac.get("fan_in_fan_out") or conv1d(cfg, module):
            delta, mag = delta.T, mag.T  # PEFT: transpose(B @ A, fan_in_fan_out); embeddings always
        ref = refs.setdefault(name, Ref(base[name]))
        ref.ref = ref.ref + np.float64(np.float32(s)) * delta
        ref.mag = ref.mag + abs(s) * mag
        ref.rank += r


def apply_pairs(base, cfg, scale):
    """-> (base with pairs renamed, refs)"""
    out, refs = dict(base), {}
    for name in sorted(base):
        if not name.endswith(".main_weight.weight"):
            continue
        m = name[:-len(".main_weight.weight")]
        w, a, b = base[name], base[m + ".lora_A.weight"], base[m + ".lora_B.weight"]
        for k in (name, m + ".lora_A.weight", m + ".lora_B.weight"):
            del out[k]
        out[m + ".weight"] = w
        A, B = to_float(a).astype(np.float64), to_float(b).astype(np.float64)
        if a.shape[1] == w.shape[1] and b.shape[0] == w.shape[0]:
            delta, mag, r = B @ A, np.abs(B) @ np.abs(A), a.shape[0]
            s = cfg["lora_alpha"] / r if scale is None else scale
        else:
            delta, mag, r = A @ B.T, np.abs(A) @ np.abs(B).T, a.shape[1]
            s = 1.0 if scale is None else scale
        ref = Ref(w)
        ref.ref = ref.ref + np.float64(np.float32(s)) * delta
        ref.mag = ref.mag + abs(s) * mag
        ref.rank = r
        refs[m + ".weight"] = ref
    return out, refs


def ordered(bits, nbits):
    """Sign-magnitude float bits -> integers that order like the values."""
    b = bits.astype(np.int64)
    sign = 1 << (nbits - 1)
    return np.where(b & sign, -(b & (sign - 1)), b)


def check_merged(what, got, ref, dtype):
    if got.dtype != dtype or got.shape != list(ref.w.shape):
        fail("%s: %s %s, expected %s %s" % (what, got.dtype, got.shape, dtype, ref.w.shape))
    if ref.replaced is not None:
        exp = ref.replaced if dtype == ref.replaced.dtype else stlib.cast(
            ref.replaced, {"F32": "fp32", "BF16": "bf16", "F16": "fp16"}[dtype])
        compare(what + " (modules_to_save)", got, exp, False)
        return
    g = to_float(got).astype(np.float64)
    if dtype == "F32":
        tol = (ref.rank + 2) * 2.0 ** -24 * ref.mag
        bad = np.flatnonzero(np.abs(g - ref.ref) > tol)
    else:
        eb = stlib.bf16_bits(ref.ref) if dtype == "BF16" else ref.ref.astype(np.float16).view(np.uint16)
        gb = got.arr.view(np.uint16)
        bad = np.flatnonzero(np.abs(ordered(gb.reshape(-1), 16) - ordered(eb.reshape(-1), 16)) > 1)
    if bad.size:
        i = bad[0]
        fail("%s: %d of %d elements off the reference; first at %d: got %r, reference %r" %
             (what, bad.size, g.size, i, g.reshape(-1)[i], ref.ref.reshape(-1)[i]))
    if np.array_equal(g, to_float(ref.w).astype(np.float64)) and dtype == ref.w.dtype:
        fail("%s: equal to the base weight: the adapter was not merged" % what)


def check_view(vdir, base, refs, dtype_of):
    got, _, _, _ = cn.load_dir_tensors(vdir, False)
    if set(got) != set(base):
        fail("%s: tensors differ: missing %s, unexpected %s" %
             (vdir, sorted(set(base) - set(got)), sorted(set(got) - set(base))))
    for name in sorted(base):
        dt = dtype_of(base[name])
        if name in refs:
            check_merged("%s: %s" % (vdir, name), got[name], refs[name], dt)
        else:
            exp = base[name] if dt == base[name].dtype else stlib.cast(
                base[name], {"F32": "fp32", "BF16": "bf16", "F16": "fp16"}[dt])
            compare("%s: %s" % (vdir, name), got[name], exp, True)
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("mnt")
    ap.add_argument("--adapter", action="append", default=[])
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--scale", type=float)
    ap.add_argument("--tp", type=int, action="append", default=[])
    a = ap.parse_args()
    try:
        with open(os.path.join(a.base, "config.json")) as f:
            cfg = json.load(f)
        base = gen_lora.base_tensors(a.base)
        refs = {}
        if a.pairs:
            base, refs = apply_pairs(base, cfg, a.scale)
        for d in a.adapter:
            apply_adapter(refs, base, cfg, d, a.scale)
        if not refs:
            fail("oracle: nothing to merge")
        hf = check_view(os.path.join(a.mnt, "hf"), base, refs, lambda t: t.dtype)
        print("check_lora: hf/ within the bound of the reference (%d merged tensors)" % len(refs))
        for to, dt in (("bf16", "BF16"), ("fp16", "F16"), ("fp32", "F32")):
            check_view(os.path.join(a.mnt, "hf@" + to), base, refs,
                       lambda t, dt=dt: dt if stlib.is_float(t.dtype) else t.dtype)
        print("check_lora: hf@bf16, hf@fp16, hf@fp32 rounded once from the reference")
        _, nat_exp, _, _ = cn.compute_native(hf, cfg)
        nat, _, _, _ = cn.load_dir_tensors(os.path.join(a.mnt, "native"), False)
        compare_set(os.path.join(a.mnt, "native"), nat, nat_exp)
        print("check_lora: native/ is the layout of the merged hf/, bit for bit")
        dims = cp.Dims(cfg)
        for n in a.tp:
            d = os.path.join(a.mnt, "tp-%d" % n)
            exp, roles = cp.tp_expected(nat, dims, True, n)
            got = {r: cp.load_rank_dir(os.path.join(d, "rank-%d" % r)) for r in range(n)}
            for r in range(n):
                compare_set(os.path.join(d, "rank-%d" % r), got[r], exp[r])
            print("check_lora: tp-%d ranks are the split of the merged native/, bit for bit" % n)
        cp.check_per_layer(a.mnt, hf, dims, False)
        cp.check_pp(a.mnt, nat, cfg, dims, True, 2)
        print("check_lora: per-layer/ and pp-2 are the merged hf/ and native/ split, bit for bit")
        for name, t in sorted(hf.items()):
            p = os.path.join(a.mnt, "tensors", stlib.npy_name(name))
            arr = np.load(p)
            want = to_float(t)
            if arr.shape != tuple(t.shape) or not np.array_equal(arr.view(np.uint8), np.ascontiguousarray(want).view(np.uint8)):
                fail("%s: not hf/'s %s widened" % (p, name))
        print("check_lora: tensors/ is hf/ widened, bit for bit")
    except Mismatch as e:
        print("check_lora: FAIL: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
