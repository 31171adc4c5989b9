#!/usr/bin/python3
"""check_dcp.py - oracle for a mounted torch DCP directory (tests/mount-dcp.sh).

Usage: check_dcp.py HF_DIR MNT REF_MNT [--naming kf|titan]

HF_DIR is the safetensors model the DCP fixture was written from
(tests/dcp_fixtures.py), MNT the ckptfs mount of the DCP directory, REF_MNT a
ckptfs mount of HF_DIR itself.
  hf/        parsed here (stlib): every tensor the fixture wrote, same dtype,
             shape and bytes as numpy read from HF_DIR; nothing else;
  tensors/   numpy.load of every NAME.npy equals the same arrays (a
             trainer's names and rotary row order are HF's by then, as in
             every view: the catalog renames them, naming.h; with --naming,
             no file keeps the trainer's name);
  hf@bf16/   tensor by tensor equal to REF_MNT's hf@bf16/ (the cast of the
             same values), over the tensors the fixture wrote;
  native/, tp-2/, per-layer/, pp-2/ (when the architecture has them): every
             file byte-identical to REF_MNT's (the same tensors through the
             same layout), and the same file names.
Exits 1 with a message on the first mismatch.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dcp_fixtures  # noqa: E402
import stlib  # noqa: E402


def read_view(d):
    return stlib.read_dir(d, True)


def same(what, got, want):
    if got.dtype != want.dtype or list(got.shape) != list(want.shape):
        stlib.fail("%s: %s %s, expected %s %s" % (what, got.dtype, got.shape, want.dtype, want.shape))
    if got.raw() != want.raw():
        stlib.fail("%s: bytes differ" % what)


def files_below(d):
    out = []
    for root, _, fs in os.walk(d):
        out += [os.path.relpath(os.path.join(root, f), d) for f in fs]
    return sorted(out)


def main():
    hf, mnt, ref = sys.argv[1:4]
    expect = dict(dcp_fixtures.load_hf(hf))
    cfg = json.load(open(os.path.join(hf, "config.json")))
    naming = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--naming" else None
    for n, t in expect.items():
        # the trainer's own names are gone from every view, tensors/ included
        k = dcp_fixtures.hf_to_kf_key(n) if naming == "kf" else \
            dcp_fixtures.hf_to_titan(n, t, cfg)[0] if naming == "titan" and not n.endswith(".bias") else n
        if k != n and os.path.exists(os.path.join(mnt, "tensors", stlib.npy_name(k))):
            stlib.fail("tensors/: %s keeps the trainer's name" % k)
    got = read_view(os.path.join(mnt, "hf"))
    if sorted(got) != sorted(expect):
        stlib.fail("hf/: tensors %s, expected %s" % (sorted(got), sorted(expect)))
    for n, t in expect.items():
        same("hf/%s" % n, got[n], t)
    for n, t in expect.items():
        a = np.load(os.path.join(mnt, "tensors", stlib.npy_name(n)))
        want = t.arr
        if t.dtype == "BF16":  # tensors/ widens bf16 to float32 exactly
            bits = np.frombuffer(t.raw(), dtype=np.uint16).astype(np.uint32) << 16
            want = bits.view(np.float32).reshape(t.shape)
        if t.dtype == "BOOL":
            want = want.astype(np.bool_)
        if a.shape != want.shape or a.tobytes() != np.ascontiguousarray(want).tobytes():
            stlib.fail("tensors/%s: numpy.load gives other values" % n)
    gb, rb = read_view(os.path.join(mnt, "hf@bf16")), read_view(os.path.join(ref, "hf@bf16"))
    for n in expect:
        same("hf@bf16/%s" % n, gb[n], rb[n])
    nviews = 0
    for view in ("native", "tp-2", "per-layer", "pp-2"):
        a, b = os.path.join(mnt, view), os.path.join(ref, view)
        if not os.path.isdir(b):
            continue
        fa, fb = files_below(a), files_below(b)
        if fa != fb:
            stlib.fail("%s/: files %s, reference %s" % (view, fa, fb))
        for f in fa:
            if stlib.read_file(os.path.join(a, f)) != stlib.read_file(os.path.join(b, f)):
                stlib.fail("%s/%s differs from the reference mount" % (view, f))
        nviews += 1
    print("check_dcp: %d tensors in hf/, tensors/, hf@bf16/ and %d layout views match" % (len(expect), nviews))


if __name__ == "__main__":
    main()
