#!/usr/bin/python3
"""gguf-convert-numpy.py - the peer of gguf/: a numpy re-implementation of
llama.cpp's convert_hf_to_gguf.py for LLaMA (names, Q/K permutation, F32
norms, the matrices cast or quantised to Q8_0), writing OUT.gguf.

Usage: gguf-convert-numpy.py SRC OUT.gguf VARIANT   (f16, q8_0, ...)

The same transformations as tests/check_gguf.py computes (it is the test
oracle), loaded whole and written as one file, the way the converter works.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import check_gguf as cg  # noqa: E402


def put_value(f, t, v):
    if t == 8:
        b = v.encode("utf-8")
        f.write(struct.pack("<Q", len(b)) + b)
    elif t == 9:
        et, items = v
        f.write(struct.pack("<IQ", et, len(items)))
        for x in items:
            put_value(f, et, x)
    else:
        f.write(struct.pack("<" + cg.Reader.SCALAR[t], v))


def main(src, out, variant):
    tensors = cg.gguf_tensors(src)
    first = next(t for _, t in tensors if len(t.shape) >= 2)
    cfg = cg.load_json(src, "config.json")
    arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}[cfg["model_type"]]
    kv = cg.expected_kv(src, variant, arch, tensors[0][1].shape[0], cg.expected_type("x.weight", first, ""))
    data = []
    for name, t in tensors:
        typ = cg.expected_type(name, t, variant)
        data.append((name, t.shape, typ, cg.expected_bytes(t, typ)))
    with open(out, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(data), len(kv)))
        for k, (t, v) in kv.items():
            put_value(f, 8, k)
            f.write(struct.pack("<I", t))
            put_value(f, t, v)
        off = 0
        for name, shape, typ, b in data:
            put_value(f, 8, name)
            f.write(struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in reversed(shape)))
            f.write(struct.pack("<IQ", cg.GGML[typ], off))
            off += (len(b) + 31) // 32 * 32
        f.write(b"\0" * (-f.tell() % 32))
        for _, _, _, b in data:
            f.write(b)
            f.write(b"\0" * (-len(b) % 32))


if __name__ == "__main__":
    main(*sys.argv[1:4])
