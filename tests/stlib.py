"""stlib.py - the pieces the test oracles share (check_mount.py,
check_native.py, check_partition.py).

A small safetensors reader of our own (no safetensors package, nothing
shared with ckptfs), the dtype table, the exact widening of BF16 and the
8-bit floats to float32, the round-to-nearest-even casts to fp32, fp16 and
bf16, and the bitwise comparisons with their failure helpers.  Imported by
the oracles from their own directory (they are run as
`python3 $srcdir/tests/check_X.py`, which puts tests/ first on sys.path).
"""

import collections
import errno
import json
import math
import os
import struct

import numpy as np

MAX_HEADER = 100000000


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


# ------------------------------------------------------------ dtypes

# size in bytes, numpy dtype of the raw bytes, numpy dtype of the values
# (BF16 and the 8-bit floats widened to float32 exactly), kind
DType = collections.namedtuple("DType", "size raw npy kind")
DTYPES = {
    "F64": DType(8, "<f8", "<f8", "float"),
    "F32": DType(4, "<f4", "<f4", "float"),
    "F16": DType(2, "<f2", "<f2", "float"),
    "BF16": DType(2, "<u2", "<f4", "float"),
    "F8_E4M3": DType(1, "u1", "<f4", "float"),
    "F8_E5M2": DType(1, "u1", "<f4", "float"),
    "I64": DType(8, "<i8", "<i8", "int"),
    "I32": DType(4, "<i4", "<i4", "int"),
    "I16": DType(2, "<i2", "<i2", "int"),
    "I8": DType(1, "i1", "i1", "int"),
    "U64": DType(8, "<u8", "<u8", "int"),
    "U32": DType(4, "<u4", "<u4", "int"),
    "U16": DType(2, "<u2", "<u2", "int"),
    "U8": DType(1, "u1", "u1", "int"),
    "BOOL": DType(1, "u1", "?", "int"),
}

# -o dtype / VIEW@DTYPE name -> (safetensors dtype, config.json torch_dtype)
CASTS = {"fp32": ("F32", "float32"), "fp16": ("F16", "float16"),
         "bf16": ("BF16", "bfloat16")}


def is_float(dtype):
    return DTYPES[dtype].kind == "float"


def encode_name(name):
    """A tensor name as a file name of tensors/ ('%' -> %25, '/' -> %2F)."""
    return name.replace("%", "%25").replace("/", "%2F")


def npy_name(name):
    return encode_name(name) + ".npy"


# ------------------------------------------------------------ safetensors

class Entry:
    """One tensor of a safetensors header; begin and end are relative to
    the data area, which starts at data_start."""

    def __init__(self, name, dtype, shape, begin, end, data_start):
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin = begin
        self.end = end
        self.data_start = data_start

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def header_length(path, head, size):
    """The header length N from the first 8 bytes of a file of size bytes."""
    if len(head) < 8:
        fail("%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER or n > size - 8:
        fail("%s: header length %d bad for size %d" % (path, n, size))
    return n


def parse_header(path, n, raw, size):
    """Parse and validate the header (raw, N bytes) of a safetensors file
    of size bytes: JSON without duplicate keys, __metadata__ of strings,
    known dtypes, shapes of non-negative integers, spans that match them
    and tile the data area up to EOF.  Returns (metadata or None, [Entry]
    in header order)."""
    try:
        pairs = json.loads(raw.decode("utf-8"),
                           object_pairs_hook=lambda p: p)
    except (UnicodeDecodeError, ValueError) as e:
        fail("%s: header is not JSON: %s" % (path, e))
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        fail("%s: duplicate keys in the header" % path)
    data_start = 8 + n
    meta = None
    out = []
    for name, info in pairs:
        if name == "__metadata__":
            meta = dict(info)
            for k, v in meta.items():
                if not isinstance(v, str):
                    fail("%s: __metadata__[%r] is not a string" % (path, k))
            continue
        info = dict(info)
        dtype = info.get("dtype")
        if dtype not in DTYPES:
            fail("%s: %s: unknown dtype %r" % (path, name, dtype))
        shape = list(info["shape"])
        begin, end = info["data_offsets"]
        for d in shape:
            if not isinstance(d, int) or d < 0:
                fail("%s: %s: bad shape %r" % (path, name, shape))
        e = Entry(name, dtype, shape, begin, end, data_start)
        if end - begin != e.numel() * DTYPES[dtype].size or begin > end:
            fail("%s: %s: span %d-%d does not match shape %r %s"
                 % (path, name, begin, end, shape, dtype))
        if begin < 0 or data_start + end > size:
            fail("%s: %s: data_offsets %d..%d past the end"
                 % (path, name, begin, end))
        out.append(e)
    pos = 0
    for e in sorted(out, key=lambda e: (e.begin, e.end)):
        if e.begin != pos:
            fail("%s: %s starts at %d, expected %d (gap or overlap)"
                 % (path, e.name, e.begin, pos))
        pos = e.end
    if data_start + pos != size:
        fail("%s: data ends at %d but the file has %d bytes"
             % (path, data_start + pos, size))
    return meta, out


def read_header(path):
    """Read and validate the header of the safetensors file at path (its
    data is not read).  Returns (N, header JSON bytes, metadata, [Entry] in
    header order)."""
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        n = header_length(path, f.read(8), size)
        raw = f.read(n)
    meta, entries = parse_header(path, n, raw, size)
    return n, raw, meta, entries


class T:
    """A tensor: dtype name, shape, raw values (numpy array of the storage
    dtype, C order, in its shape)."""

    def __init__(self, dtype, shape, arr):
        self.dtype = dtype
        self.shape = list(shape)
        self.arr = np.ascontiguousarray(arr).reshape(self.shape)

    def raw(self):
        return self.arr.tobytes()


def read_file(path):
    """The whole file; its length must be st_size."""
    with open(path, "rb") as f:
        data = f.read()
    st = os.stat(path)
    if st.st_size != len(data):
        fail("%s: st_size %d but %d bytes read" % (path, st.st_size, len(data)))
    return data


def parse_safetensors(path, data, strict):
    """Parse one safetensors file from its bytes.  Returns (metadata,
    [(name, T, begin, end)] in header order).  strict: also check what the
    reference writer does (padding, order)."""
    n = header_length(path, data, len(data))
    meta, entries = parse_header(path, n, data[8:8 + n], len(data))
    if strict and n % 8:
        fail("%s: header length %d is not a multiple of 8" % (path, n))
    out = []
    for e in entries:
        arr = np.frombuffer(data, dtype=DTYPES[e.dtype].raw, count=e.numel(),
                            offset=e.data_start + e.begin)
        out.append((e.name, T(e.dtype, e.shape, arr), e.begin, e.end))
    if strict:
        want = sorted(out, key=lambda x: (-DTYPES[x[1].dtype].size, x[0]))
        want = [x[0] for x in want]
        hdr = [x[0] for x in out]
        if hdr != want:
            fail("%s: header order %s, reference writer order %s" %
                 (path, hdr, want))
        dorder = [x[0] for x in sorted(out, key=lambda x: (x[2], x[3]))]
        if dorder != want:
            fail("%s: data order %s, reference writer order %s" %
                 (path, dorder, want))
    return meta, out


def read_dir(d, strict=False):
    """{name: T} of every tensor in the safetensors files of directory d
    (parse_safetensors, strict as there); a name in two files fails."""
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            p = os.path.join(d, f)
            _, ts = parse_safetensors(p, read_file(p), strict)
            for name, t, _, _ in ts:
                if name in out:
                    fail("%s: tensor %s twice" % (d, name))
                out[name] = t
    return out


# ------------------------------------------------------------ widening

def f8_table(ebits, mbits, bias, fn):
    """float32 value of each of the 256 bytes of an 8-bit float format,
    derived from the definition.  fn: E4M3FN style (no inf, only
    S.1111.111 is NaN); otherwise IEEE-like (max exponent = inf/NaN)."""
    out = np.empty(256, dtype=np.float32)
    emax = (1 << ebits) - 1
    for b in range(256):
        s = b >> 7
        e = (b >> mbits) & emax
        m = b & ((1 << mbits) - 1)
        if fn and e == emax and m == (1 << mbits) - 1:
            v = math.nan
        elif not fn and e == emax:
            v = math.inf if m == 0 else math.nan
        elif e == 0:
            v = m / (1 << mbits) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (1 << mbits)) * 2.0 ** (e - bias)
        out[b] = math.copysign(v, -1.0 if s else 1.0)
    return out


F8 = {"F8_E4M3": f8_table(4, 3, 7, fn=True),
      "F8_E5M2": f8_table(5, 2, 15, fn=False)}
F8_E4M3 = F8["F8_E4M3"]
F8_E5M2 = F8["F8_E5M2"]


def _f8_sanity():
    assert F8_E4M3[0x7E] == 448.0 and np.isnan(F8_E4M3[0x7F])
    assert np.isnan(F8_E4M3[0xFF]) and F8_E4M3[0xFE] == -448.0
    assert F8_E4M3[0x01] == 2.0 ** -9 and F8_E4M3[0x38] == 1.0
    assert np.isinf(F8_E5M2[0x7C]) and F8_E5M2[0xFC] == -np.inf
    assert np.isnan(F8_E5M2[0x7D]) and F8_E5M2[0x7B] == 57344.0
    assert F8_E5M2[0x01] == 2.0 ** -16 and F8_E5M2[0x3C] == 1.0
    assert np.signbit(F8_E4M3[0x80]) and np.signbit(F8_E5M2[0x80])
    assert int(np.isnan(F8_E4M3).sum()) == 2
    assert int(np.isnan(F8_E5M2).sum()) == 6


_f8_sanity()


def widen(dtype, raw):
    """Exact values of raw (an array of the storage dtype of a safetensors
    dtype): BF16 and the 8-bit floats as float32, the others unchanged."""
    if dtype == "BF16":
        u = raw.astype(np.uint32).reshape(-1)
        u <<= 16
        return u.view(np.float32).reshape(raw.shape)
    if dtype in F8:
        return F8[dtype][raw]
    return raw


def to_float(t):
    """Exact values of a float tensor as float32 or float64."""
    return widen(t.dtype, t.arr)


# ------------------------------------------------------------ casts

def f64_to_f32_odd(x):
    """float64 -> float32 rounding to odd: then RNE to bf16 is the correct
    single rounding of x."""
    y = x.astype(np.float32)
    back = y.astype(np.float64)
    inexact = (back != x) & np.isfinite(x) & np.isfinite(y)
    toward0 = np.where(np.abs(back) > np.abs(x),
                       np.nextafter(y, np.float32(0)), y)
    u = toward0.view(np.uint32) | np.uint32(1)
    return np.where(inexact, u.view(np.float32), y)


def bf16_bits(x):
    """float32 (or float64) values -> bf16 bits, round to nearest even."""
    if x.dtype == np.float64:
        x = f64_to_f32_odd(x)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    u = x.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16).astype(np.uint16) | 0x0040)
    return r


def cast(t, to):
    """Expected tensor of t cast to fp32/fp16/bf16 (ints unchanged)."""
    if not is_float(t.dtype):
        return t
    dt = CASTS[to][0]
    if t.dtype == dt:
        return t
    v = to_float(t)
    with np.errstate(over="ignore", invalid="ignore"):
        if to == "fp32":
            return T(dt, t.shape, v.astype(np.float32))
        if to == "fp16":
            return T(dt, t.shape, v.astype(np.float16))
        return T(dt, t.shape, bf16_bits(v))


def is_nan(t):
    if not is_float(t.dtype):
        return np.zeros(t.arr.shape, dtype=bool)
    return np.isnan(to_float(t))


# ------------------------------------------------------------ comparisons

def check_dtype_shape(what, got, exp):
    if got.dtype != exp.dtype:
        fail("%s: dtype %s, expected %s" % (what, got.dtype, exp.dtype))
    if got.shape != exp.shape:
        fail("%s: shape %s, expected %s" % (what, got.shape, exp.shape))


def bit_diff(gb, eb, gnan=None, enan=None):
    """gb, eb: the bits of two arrays of one shape; gnan, enan: where they
    hold NaN (None: compare bit for bit).  Returns (the flat indexes where
    only one side is NaN, the flat indexes where the bits differ and the
    expected value is not NaN)."""
    gb, eb = gb.reshape(-1), eb.reshape(-1)
    diff = gb != eb
    if enan is None:
        return np.array([], dtype=np.intp), np.flatnonzero(diff)
    gnan, enan = gnan.reshape(-1), enan.reshape(-1)
    return np.flatnonzero(enan != gnan), np.flatnonzero(diff & ~enan)


def compare(what, got, exp, nan_any):
    """Two T, bitwise; with nan_any a NaN only has to stay a NaN."""
    check_dtype_shape(what, got, exp)
    g = got.arr.reshape(-1)
    e = exp.arr.reshape(-1)
    ub = "u%d" % DTYPES[exp.dtype].size
    gb, eb = g.view(ub), e.view(ub)
    if nan_any:
        en, gn = is_nan(exp).reshape(-1), is_nan(got).reshape(-1)
        badnan, bad = bit_diff(gb, eb, gn, en)
        if badnan.size:
            i = badnan[0]
            fail("%s: element %d: got bits 0x%x, expected 0x%x (NaN %s)" %
                 (what, i, int(gb[i]), int(eb[i]),
                  "lost" if en[i] else "made"))
    else:
        _, bad = bit_diff(gb, eb)
    if bad.size:
        i = bad[0]
        fail("%s: %d of %d elements differ; first at %d: got bits 0x%x, "
             "expected 0x%x" % (what, bad.size, g.size, i, int(gb[i]),
                                int(eb[i])))


def compare_set(where, got, exp, nan_any=False):
    """Two {name: T}: the same names, each tensor as compare() has it."""
    if set(got) != set(exp):
        fail("%s: tensors differ: missing %s, unexpected %s" %
             (where, sorted(set(exp) - set(got)),
              sorted(set(got) - set(exp))))
    for name in sorted(exp):
        compare("%s: %s" % (where, name), got[name], exp[name], nan_any)


# ------------------------------------------------------------ names

def expect_enoent(p):
    try:
        os.stat(p)
    except OSError as e:
        if e.errno != errno.ENOENT:
            fail("stat %s: %s, expected ENOENT" % (p, e))
        return
    fail("stat %s succeeded, expected ENOENT" % p)
