#!/usr/bin/python3
"""check_mount.py - independent oracle for a mounted ckptfs HF source.

Usage: check_mount.py [--arch NAME] SRC MNT

SRC is the source checkpoint directory, MNT the ckptfs mount of it.  The
source safetensors are parsed here with a small reader of our own (no
safetensors package, nothing shared with ckptfs) and the mount is checked
against it:

  hf/        every regular file of SRC, byte-identical, and nothing else;
  tensors/   one NAME.npy per tensor ('%' -> %25, '/' -> %2F), nothing
             else; npy 1.0, data at a multiple of 64; numpy.load (plain and
             mmap_mode='r') gives the dtype, shape and values expected, with
             BF16 and F8_E4M3 / F8_E5M2 widened to float32 exactly (NaN only
             has to stay NaN); xattrs user.ckptfs.{dtype,shape,source};
  every file pread at odd offsets and sizes around every header/data and
             tensor boundary, at random offsets, and past EOF, through the
             page cache and with O_DIRECT (when the file system allows it),
             compared with the whole file read once, whose length must equal
             st_size; then random preads of all files from 8 threads at once;
  README     non-empty text naming the architecture and the tensor count.

Exits 0 when everything matches, 1 with a message on the first mismatch.
"""

import argparse
import ast
import errno
import json
import os
import random
import re
import stat
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stlib import (DTYPES, Mismatch, bit_diff, check_dtype_shape,  # noqa: E402
                   encode_name, fail, npy_name, read_header, widen)

KNOWN_ARCH = {"llama", "mistral", "qwen2", "gemma", "phi3", "mixtral", "gpt2"}


# ------------------------------------------------------------ source reader

class SrcTensor:
    def __init__(self, e, file):
        self.name = e.name
        self.dtype = e.dtype
        self.shape = e.shape
        self.begin = e.begin          # relative to the data area
        self.end = e.end
        self.file = file              # path of the shard
        self.abs_begin = e.data_start + e.begin
        self.abs_end = e.data_start + e.end


def read_safetensors(path):
    """Parse and validate one safetensors file.  Returns (tensors in data
    order, header length N, header JSON bytes, metadata)."""
    n, raw, meta, entries = read_header(path)
    tensors = sorted((SrcTensor(e, path) for e in entries),
                     key=lambda t: (t.begin, t.end))
    return tensors, n, raw, meta


def read_source(src):
    """All tensors of the checkpoint in SRC, as {name: SrcTensor}, plus the
    list of safetensors files."""
    index = os.path.join(src, "model.safetensors.index.json")
    single = os.path.join(src, "model.safetensors")
    out = {}
    files = []
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            idx = json.load(f)
        wm = idx["weight_map"]
        for shard in sorted(set(wm.values())):
            path = os.path.join(src, shard)
            files.append(path)
            ts, _, _, _ = read_safetensors(path)
            for t in ts:
                if wm.get(t.name) != shard:
                    fail("%s: %s not listed in the index" % (shard, t.name))
                out[t.name] = t
        for name, shard in wm.items():
            if name not in out:
                fail("index lists %s in %s, which lacks it" % (name, shard))
        total = sum(t.end - t.begin for t in out.values())
        if idx["metadata"]["total_size"] != total:
            fail("index total_size %s != %d"
                 % (idx["metadata"]["total_size"], total))
    else:
        files.append(single)
        ts, _, _, _ = read_safetensors(single)
        for t in ts:
            out[t.name] = t
    return out, files


def load_raw(t, cache):
    """Raw source values of tensor t as a numpy array (storage dtype)."""
    if t.file not in cache:
        with open(t.file, "rb") as f:
            cache[t.file] = f.read()
    buf = cache[t.file][t.abs_begin:t.abs_end]
    return np.frombuffer(buf, dtype=DTYPES[t.dtype].raw).reshape(t.shape)


# ------------------------------------------------------------ widening

def expected_values(t, raw):
    if t.dtype == "BOOL":
        return raw.astype(bool)
    return widen(t.dtype, raw)


def compare_values(what, got, exp):
    check_dtype_shape(what, got, exp)
    if exp.dtype.kind == "f":
        ui = "u%d" % exp.dtype.itemsize
        gb = np.array(got).reshape(-1).view(ui)
        eb = np.array(exp).reshape(-1).view(ui)
        badnan, bad = bit_diff(gb, eb, np.isnan(got), np.isnan(exp))
        if badnan.size:
            i = np.unravel_index(badnan[0], exp.shape)
            fail("%s: NaN mismatch at %s: got %r expected %r"
                 % (what, i, got[i], exp[i]))
    else:
        bad = np.flatnonzero(np.asarray(got != exp).reshape(-1))
    if bad.size:
        i = np.unravel_index(bad[0], exp.shape)
        fail("%s: value mismatch at %s: got %r expected %r (%d values differ)"
             % (what, i, got[i], exp[i], bad.size))


# ------------------------------------------------------------ byte reads

def read_whole(path):
    with open(path, "rb", buffering=0) as f:
        chunks = []
        while True:
            c = f.read(1 << 20)
            if not c:
                break
            chunks.append(c)
    return b"".join(chunks)


def _plan_reads(size, boundaries, rnd, nrandom):
    plan = []
    for b in sorted(set(boundaries) | {0, size}):
        for off in (b - 1, b, b + 1):
            if off >= 0:
                plan.append((off, 1))
        for off, n in ((b - 3, 7), (b - 64, 129), (b - 4093, 4093 * 2)):
            if off >= 0:
                plan.append((off, n))
    for _ in range(nrandom):
        plan.append((rnd.randrange(0, max(size, 1)), 4093))
    for off, n in ((size - 1, 4096), (size, 10), (size + 12345, 100),
                   (0, size + 100)):
        if off >= 0:
            plan.append((off, n))
    return plan


def _do_reads(path, plan, flags):
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        return [(off, n, os.pread(fd, n, off)) for off, n in plan]
    finally:
        os.close(fd)


def check_preads(path, boundaries, rnd, nrandom=24):
    """Odd reads first (fresh open), then the whole file once; compare.
    The reads are done once through the page cache and once with O_DIRECT
    (so that they reach the file system at these very offsets), unless
    the file system refuses O_DIRECT opens with EINVAL."""
    size = os.stat(path).st_size
    plan = _plan_reads(size, boundaries, rnd, nrandom)
    reads = []
    direct = getattr(os, "O_DIRECT", 0)
    if direct:
        try:
            reads += _do_reads(path, plan, direct)
        except OSError as e:
            if e.errno != errno.EINVAL:
                fail("%s: O_DIRECT reads: %s" % (path, e))
            direct = 0
    reads += _do_reads(path, plan, 0)
    whole = read_whole(path)
    if len(whole) != size:
        fail("%s: st_size %d but %d bytes read" % (path, size, len(whole)))
    for off, n, got in reads:
        exp = whole[off:off + n]
        if got != exp:
            fail("%s: pread(%d bytes at %d) returned %d bytes differing from "
                 "the whole-file read (expected %d bytes)"
                 % (path, n, off, len(got), len(exp)))
    return whole, len(reads), bool(direct)


def check_concurrent(contents, seed, nthreads=8, nreads=150):
    """Several threads pread random ranges of all the files at once (with
    O_DIRECT when the file system takes it, so that the reads reach the
    daemon concurrently) and compare with the contents read before."""
    import threading
    paths = sorted(contents)
    errors = []
    direct = getattr(os, "O_DIRECT", 0)

    def worker(k):
        rnd = random.Random(seed * 1000 + k)
        fds = {}
        try:
            for p in paths:
                try:
                    fds[p] = os.open(p, os.O_RDONLY | direct)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    fds[p] = os.open(p, os.O_RDONLY)
            for _ in range(nreads):
                p = rnd.choice(paths)
                data = contents[p]
                off = rnd.randrange(0, len(data) + 64)
                n = rnd.choice((1, 3, 4093, 4096, 65537, 200000))
                try:
                    got = os.pread(fds[p], n, off)
                except OSError as e:
                    if e.errno != errno.EINVAL or not direct:
                        raise
                    os.close(fds[p])
                    fds[p] = os.open(p, os.O_RDONLY)
                    got = os.pread(fds[p], n, off)
                if got != data[off:off + n]:
                    errors.append("%s: concurrent pread(%d bytes at %d) "
                                  "returned wrong bytes" % (p, n, off))
                    return
        except OSError as e:
            errors.append("concurrent reads: %s" % e)
        finally:
            for fd in fds.values():
                os.close(fd)

    threads = [threading.Thread(target=worker, args=(k,))
               for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail(errors[0])
    return nthreads * nreads


# ------------------------------------------------------------ npy

def parse_npy(path, buf):
    if buf[:6] != b"\x93NUMPY":
        fail("%s: no npy magic" % path)
    if buf[6:8] != b"\x01\x00":
        fail("%s: npy version %d.%d, expected 1.0" % (path, buf[6], buf[7]))
    (hl,) = struct.unpack("<H", buf[8:10])
    off = 10 + hl
    if off % 64:
        fail("%s: npy data starts at %d, not a multiple of 64" % (path, off))
    text = buf[10:off]
    if not text.endswith(b"\n"):
        fail("%s: npy header does not end with a newline" % path)
    try:
        d = ast.literal_eval(text.decode("latin1"))
    except (ValueError, SyntaxError) as e:
        fail("%s: npy header not a dict literal: %s" % (path, e))
    if sorted(d) != ["descr", "fortran_order", "shape"]:
        fail("%s: npy header keys %s" % (path, sorted(d)))
    if d["fortran_order"] is not False:
        fail("%s: fortran_order is %r" % (path, d["fortran_order"]))
    return d, off


def check_xattrs(path, t):
    def get(key):
        try:
            v = os.getxattr(path, key)
        except OSError as e:
            fail("%s: getxattr %s: %s" % (path, key, e.strerror))
        if b"\0" in v:
            fail("%s: %s contains a NUL byte: %r" % (path, key, v))
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            fail("%s: %s is not UTF-8: %r" % (path, key, v))

    names = os.listxattr(path)
    for key in ("user.ckptfs.dtype", "user.ckptfs.shape",
                "user.ckptfs.source"):
        if key not in names:
            fail("%s: listxattr %s lacks %s" % (path, names, key))
    dt = get("user.ckptfs.dtype")
    if not re.match(r"%s(?![A-Za-z0-9_])" % re.escape(t.dtype), dt):
        fail("%s: user.ckptfs.dtype %r, expected %r first"
             % (path, dt, t.dtype))
    sh = get("user.ckptfs.shape")
    try:
        shv = json.loads(sh)
    except ValueError:
        fail("%s: user.ckptfs.shape %r is not JSON" % (path, sh))
    if shv != t.shape:
        fail("%s: user.ckptfs.shape %r, expected %r" % (path, sh, t.shape))
    src = get("user.ckptfs.source")
    base = os.path.basename(t.file)
    if base not in src:
        fail("%s: user.ckptfs.source %r does not name %s" % (path, src, base))
    rng = "%d-%d" % (t.abs_begin, t.abs_end)
    if not re.search(r"(?<![0-9])%s(?![0-9])" % rng, src):
        fail("%s: user.ckptfs.source %r lacks the byte range %s"
             % (path, src, rng))
    return dt, sh, src


# ------------------------------------------------------------ tree walk

def regular_files(root):
    """{relative path: path} of the files below root; directories are
    listed too, with a trailing '/'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for dn in dirnames:
            p = os.path.join(dirpath, dn)
            out[os.path.relpath(p, root) + "/"] = p
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            out[os.path.relpath(p, root)] = p
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", help="architecture word README must contain "
                    "(default: from config.json model_type, or 'unknown')")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("src")
    ap.add_argument("mnt")
    a = ap.parse_args()
    src, mnt = a.src, a.mnt
    rnd = random.Random(a.seed)
    cache = {}
    nreads = 0
    ndirect = 0
    contents = {}

    tensors, files = read_source(src)
    print("check_mount: source %s: %d tensors in %d safetensors file(s)"
          % (src, len(tensors), len(files)))

    # --- hf/: identity of the source directory
    hf = os.path.join(mnt, "hf")
    st = os.stat(hf)
    if not stat.S_ISDIR(st.st_mode):
        fail("%s is not a directory" % hf)
    want = regular_files(src)
    got = regular_files(hf)
    if sorted(want) != sorted(got):
        fail("hf/ lists %s, source has %s" % (sorted(got), sorted(want)))
    boundaries_of = {}
    for f in files:
        ts, n, _, _ = read_safetensors(f)
        b = [8, 8 + n]
        for t in ts:
            b += [t.abs_begin, t.abs_end]
        boundaries_of[os.path.relpath(f, src)] = b
    for rel in sorted(want):
        if rel.endswith("/"):
            continue
        st = os.stat(got[rel])
        if not stat.S_ISREG(st.st_mode):
            fail("%s is not a regular file" % got[rel])
        with open(want[rel], "rb") as f:
            sbytes = f.read()
        if st.st_size != len(sbytes):
            fail("%s: st_size %d, source has %d bytes"
                 % (got[rel], st.st_size, len(sbytes)))
        bnd = boundaries_of.get(rel, [len(sbytes) // 2])
        whole, k, d = check_preads(got[rel], bnd, rnd)
        contents[got[rel]] = whole
        nreads += k
        ndirect += d
        if whole != sbytes:
            i = next(i for i in range(len(whole)) if whole[i] != sbytes[i])
            fail("%s differs from the source at byte %d" % (got[rel], i))
        print("check_mount: hf/%s: %d bytes identical" % (rel, len(whole)))

    # --- tensors/
    tdir = os.path.join(mnt, "tensors")
    listing = sorted(os.listdir(tdir))
    expect = sorted(npy_name(n) for n in tensors)
    if listing != expect:
        extra = sorted(set(listing) - set(expect))
        missing = sorted(set(expect) - set(listing))
        fail("tensors/: extra %s, missing %s" % (extra, missing))
    for name in sorted(tensors):
        t = tensors[name]
        path = os.path.join(tdir, npy_name(name))
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            fail("%s is not a regular file" % path)
        raw = load_raw(t, cache)
        exp = expected_values(t, raw)
        npy_dtype = np.dtype(DTYPES[t.dtype].npy)
        if exp.dtype != npy_dtype:
            raise AssertionError("oracle dtype table")
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        d, off = parse_npy(path, head)
        if np.dtype(d["descr"]) != npy_dtype:
            fail("%s: descr %r, expected %r" % (path, d["descr"], npy_dtype.str))
        if tuple(d["shape"]) != tuple(t.shape):
            fail("%s: npy shape %r, expected %r" % (path, d["shape"], t.shape))
        if st.st_size != off + exp.nbytes:
            fail("%s: st_size %d, expected %d + %d"
                 % (path, st.st_size, off, exp.nbytes))
        whole, k, d = check_preads(path, [8, 10, off, off + exp.itemsize],
                                   rnd, 8)
        contents[path] = whole
        nreads += k
        ndirect += d
        arr = np.load(path)
        compare_values(path, arr, exp)
        got = np.frombuffer(whole[off:], dtype=npy_dtype).reshape(t.shape)
        compare_values(path + " (bytes)", got, exp)
        if exp.nbytes:
            mm = np.load(path, mmap_mode="r")
            compare_values(path + " (mmap)", np.asarray(mm), exp)
            del mm
        else:
            # numpy cannot mmap an empty array; load must still work
            np.load(path, mmap_mode="r")
        dt, sh, srcx = check_xattrs(path, t)
        print("check_mount: tensors/%s.npy: %s %s -> %s; xattr %r %r %r"
              % (encode_name(name), t.dtype, t.shape, npy_dtype.str,
                 dt, sh, srcx))

    # --- all files at once, from several threads
    k = check_concurrent(contents, a.seed)
    nreads += k
    print("check_mount: %d concurrent preads from 8 threads: identical" % k)

    # --- README
    readme = os.path.join(mnt, "README")
    rbytes = read_whole(readme)
    if os.stat(readme).st_size != len(rbytes):
        fail("README: st_size %d but %d bytes read"
             % (os.stat(readme).st_size, len(rbytes)))
    if not rbytes.strip():
        fail("README is empty")
    try:
        text = rbytes.decode("utf-8")
    except UnicodeDecodeError:
        fail("README is not UTF-8 text")
    arch = a.arch
    if arch is None:
        mt = None
        cfg = os.path.join(src, "config.json")
        if os.path.exists(cfg):
            with open(cfg, encoding="utf-8") as f:
                mt = json.load(f).get("model_type")
        arch = mt if mt in KNOWN_ARCH else "unknown"
    if arch.lower() not in text.lower():
        fail("README does not mention the architecture %r:\n%s" % (arch, text))
    if not re.search(r"(?<![0-9])%d(?![0-9])" % len(tensors), text):
        fail("README does not mention the tensor count %d:\n%s"
             % (len(tensors), text))
    print("check_mount: README: %d bytes, mentions %r and %d tensors"
          % (len(rbytes), arch, len(tensors)))

    print("check_mount: OK: %d hf entries, %d tensors, %d preads compared "
          "(%d files also read with O_DIRECT)"
          % (len(want), len(tensors), nreads, ndirect))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as e:
        print("check_mount: FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print("check_mount: FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)
