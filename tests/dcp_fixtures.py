#!/usr/bin/python3
"""dcp_fixtures.py - write torch Distributed Checkpoint directories for tests/mount-dcp.sh.

Usage: dcp_fixtures.py write KIND HF_DIR OUTDIR
       dcp_fixtures.py verify HF_DIR OUTDIR      (with Debian's torch; see below)
       dcp_fixtures.py hostile CASE HF_DIR OUTDIR    (CASE: see HOSTILE)

torch 2.x (which has dcp.save) is not in Debian, so this writer follows
torch/distributed/checkpoint (metadata.py, filesystem.py, default_planner)
and torch/serialization.py: the .metadata and every item's data.pkl are
made by CPython's own pickle.Pickler from stand-in classes registered under
torch's module names (so GLOBAL/STACK_GLOBAL, NEWOBJ, BUILD, the enum and
torch.Size reductions are what CPython emits for the real classes), and each
tensor chunk is a torch.save zip archive written here: stored entries,
data 64-byte aligned through an "FB" local extra field (PyTorchFileWriter's
padding), CRC-32s, and the ZIP64 end record + locator that torch's
miniz writer (MZ_ZIP_FLAG_WRITE_ZIP64) always appends.

Kinds (HF names under "model.", as trainers' state dicts hold them):
  old    era before torch 2.3: TensorProperties from
         torch.distributed._shard.sharded_tensor.metadata, the enum member
         pickled as ENUM(0) (Python < 3.11), no storage_meta; items with
         data.pkl, data/N, version only; 2 ranks, dim-0 and dim-1 chunks
  new    torch >= 2.4: checkpoint.metadata classes, getattr(ENUM, 'NAME'),
         storage_meta with a PosixPath checkpoint_id; items with
         .format_version, .storage_alignment, byteorder,
         .data/serialization_id; 3 ranks (torch.chunk splits, so small
         dims leave empty chunks); step and optimizer entries
  kf     KempnerForge's names (token_embedding.embedding, layers.N.attention.q_proj,
         attention_norm, mlp_norm, output_head.proj), 2 ranks, torch >= 2.4
  titan  torchtitan's names (tok_embeddings, attention.wq..wo, feed_forward.w1/w2/w3,
         attention_norm, ffn_norm, output), wq/wk rows permuted by its
         _reverse_permute (interleaved rotary), 3 ranks, torch >= 2.4
  pp     pp0/ and pp1/ stage directories, 4 ranks each (TP 2 x FSDP 2 grid
         for row-parallel weights), layers split between the stages, the
         torch >= 2.4 era, config.json beside the stages
  tied   a tied model (no lm_head.weight in HF_DIR): lm_head.weight added as
         its own copy of model.embed_tokens.weight, as DCP saves both names
  tied-differs  the same with lm_head.weight = -embed_tokens (a head trained
         apart under a config that says tied); `verify` does not apply
  titan-tied  torchtitan's names for a tied model (`tie` makes one of
         tiny-llama): output.weight its own copy of tok_embeddings.weight
  titan-freqs  titan plus the complex64 freqs_cis buffer [2 x max positions,
         head_dim / 2] that older torchtitan saved (persistent=True)
Replicated tensors (norms, 0-dim) are one chunk saved by one rank (DCP's
dedup), spread over the ranks.

`verify` proves the fixtures real: every item loads with torch.load
(Debian's torch 1.13) and equals the HF tensor's chunk; every .metadata
unpickles with pickle.Unpickler given independent stand-in classes, and its
chunks and storage_data name those items.
"""
import collections
import copyreg
import dataclasses
import enum
import io
import json
import os
import pathlib
import pickle
import shutil
import struct
import sys
import types
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402

ST_TO_TORCH = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
               "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "C64": "complex64"}
STORAGE = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
           "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
           "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage", "complex64": "ComplexFloatStorage"}


def freqs_cis(cfg):
    """torchtitan's precompute_freqs_cis(head_dim, 2 * max_seq_len, theta), the
    complex64 buffer older versions saved (persistent=True)."""
    hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    freqs = 1.0 / (cfg.get("rope_theta", 10000.0) ** (np.arange(0, hd, 2)[: hd // 2].astype(np.float32) / hd))
    ang = np.outer(np.arange(2 * cfg.get("max_position_embeddings", 256), dtype=np.float32), freqs).astype(np.float32)
    return stlib.T("C64", list(ang.shape), (np.cos(ang) + 1j * np.sin(ang)).astype(np.complex64))


def load_hf(d):
    """[(name, stlib.T)] of every safetensors file of d, sorted by name; dtypes
    DCP fixtures do not write here (float8) are left out."""
    return sorted((n, t) for n, t in stlib.read_dir(d).items() if t.dtype in ST_TO_TORCH)


# ------------------------------------------------------------ stand-in torch

def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


def install_torch(era):
    """Register classes under torch's module names, shaped like the real ones
    for pickling. Returns a namespace of them."""
    torch = module("torch")
    utils = module("torch._utils")
    ser = module("torch.serialization")
    module("torch.distributed")
    module("torch.distributed.checkpoint")
    md = module("torch.distributed.checkpoint.metadata")
    fs = module("torch.distributed.checkpoint.filesystem")
    module("torch.distributed._shard")
    module("torch.distributed._shard.sharded_tensor")
    shard = module("torch.distributed._shard.sharded_tensor.metadata")

    class Size(tuple):
        # torch.Size.__reduce__: (torch.Size, (tuple(self),))
        def __reduce__(self):
            return (Size, (tuple(self),))
    Size.__module__, Size.__qualname__ = "torch", "Size"
    torch.Size = Size

    class dtype:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):  # a string: pickled as the global torch.NAME
            return self.name
    for n in STORAGE:
        d = dtype(n)
        d.__module__ = "torch"
        setattr(torch, n, d)
    for n in set(STORAGE.values()):
        setattr(torch, n, type(n, (), {"__module__": "torch"}))

    class layout:
        pass
    strided = layout()

    def _get_layout(name):
        raise AssertionError
    _get_layout.__module__, _get_layout.__qualname__ = "torch.serialization", "_get_layout"
    ser._get_layout = _get_layout
    copyreg.pickle(layout, lambda v: (_get_layout, ("torch.strided",)))  # torch/serialization.py

    def _rebuild_tensor_v2(*a):
        raise AssertionError
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    home = shard if era == "old" else md

    class MemFormat(enum.Enum):
        TORCH_CONTIGUOUS_FORMAT = 0
        TORCH_CHANNELS_LAST = 1
        TORCH_PRESERVE_FORMAT = 2
        if era == "old":
            # Enum.__reduce_ex__ of Python < 3.11: the class called with the value.
            def __reduce_ex__(self, proto):
                return (self.__class__, (self._value_,))
    MemFormat.__module__ = home.__name__
    MemFormat.__qualname__ = MemFormat.__name__ = "MEM_FORMAT_ENCODING" if era == "old" else "_MEM_FORMAT_ENCODING"
    setattr(home, MemFormat.__name__, MemFormat)

    def dc(mod, name, fields, frozen=False, extra=None):
        cls = dataclasses.make_dataclass(name, fields, frozen=frozen, namespace=extra or {})
        cls.__module__ = mod.__name__
        setattr(mod, name, cls)
        return cls

    def props_getstate(self):
        return (self.dtype, self.layout, self.requires_grad, MemFormat.TORCH_CONTIGUOUS_FORMAT, self.pin_memory)
    TensorProperties = dc(home, "TensorProperties",
                          [("dtype", object), ("layout", object), ("requires_grad", bool),
                           ("memory_format", object), ("pin_memory", bool)],
                          extra={"__getstate__": props_getstate})
    Chunk = dc(md, "ChunkStorageMetadata", [("offsets", object), ("sizes", object)])
    TSM = dc(md, "TensorStorageMetadata", [("properties", object), ("size", object), ("chunks", list)])
    BSM = dc(md, "BytesStorageMetadata", [])
    # index: field(hash=False, compare=False), so a dict keeps one entry per (fqn, offset)
    Index = dc(md, "MetadataIndex", [("fqn", str), ("offset", object),
                                     ("index", object, dataclasses.field(default=None, hash=False, compare=False))],
               frozen=True)
    if era == "old":
        Metadata = dc(md, "Metadata", [("state_dict_metadata", dict), ("planner_data", object),
                                       ("storage_data", object)])
        StorageMeta = None
    else:
        StorageMeta = dc(md, "StorageMeta", [("checkpoint_id", object), ("save_id", object), ("load_id", object),
                                             ("modules", list)])
        Metadata = dc(md, "Metadata", [("state_dict_metadata", dict), ("planner_data", object),
                                       ("storage_data", object), ("storage_meta", object), ("version", object)])

    def info_getstate(self):  # filesystem.py: None fields are left out
        return {k: v for k, v in self.__dict__.items() if v is not None}
    Info = dc(fs, "_StorageInfo", [("relative_path", str), ("offset", int), ("length", int),
                                   ("transform_descriptors", object)],
              extra={"__getstate__": info_getstate} if era != "old" else None)
    return types.SimpleNamespace(torch=torch, strided=strided, Size=Size, TensorProperties=TensorProperties,
                                 Chunk=Chunk, TSM=TSM, BSM=BSM, Index=Index, Metadata=Metadata,
                                 StorageMeta=StorageMeta, Info=Info, rebuild=_rebuild_tensor_v2)


# ------------------------------------------------------------ torch.save archives

def zip_archive(records, prefix="archive"):
    """A stored zip as PyTorchFileWriter writes it: 64-byte aligned data."""
    out = bytearray()
    central = bytearray()
    for name, data in records:
        fname = (prefix + "/" + name).encode()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        hdr_len = 30 + len(fname)
        pad = (-(len(out) + hdr_len + 4)) % 64
        extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB" field of padding
        ofs = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0x0808 & 0, 0, 0, 0x21, crc, len(data), len(data),
                           len(fname), len(extra)) + fname + extra
        assert len(out) % 64 == 0
        out += data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 20, 0, 0, 0, 0x21, crc, len(data),
                               len(data), len(fname), 0, 0, 0, 0, 0o100644 << 16, ofs) + fname
    cd_ofs = len(out)
    out += central
    z64 = len(out)
    n = len(records)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 45, 0, 0, n, n, len(central), cd_ofs)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_ofs, 0)
    return bytes(out)


class Storage:
    def __init__(self, dtype, numel):
        self.dtype, self.numel = dtype, numel


class FakeTensor:
    def __init__(self, ns, dtype, shape, storage):
        self.ns, self.dtype, self.shape, self.storage = ns, dtype, shape, storage

    def __reduce_ex__(self, proto):
        stride, acc = [], 1
        for s in reversed(self.shape):
            stride.insert(0, acc)
            acc *= s
        # Tensor._reduce_ex_internal: (storage, offset, size, stride, requires_grad, backward_hooks)
        return (self.ns.rebuild, (self.storage, 0, self.ns.Size(self.shape), tuple(stride), False,
                                  collections.OrderedDict()))


def torch_save(ns, era, obj, storages):
    """torch.save(obj) into bytes: data.pkl (protocol 2, storages by
    persistent id), then the records torch/serialization.py _save writes."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    keys = {}

    def persistent_id(o):
        if isinstance(o, Storage):
            k = keys.setdefault(id(o), str(len(keys)))
            return ("storage", getattr(ns.torch, STORAGE[o.dtype]), k, "cpu", o.numel)
        return None
    p.persistent_id = persistent_id
    p.dump(obj)
    recs = [("data.pkl", buf.getvalue())]
    if era != "old":
        recs += [(".format_version", b"1"), (".storage_alignment", b"64"), ("byteorder", b"little")]
    for i, raw in enumerate(storages):  # keys "0", "1"... sorted; one storage per chunk here
        recs.append(("data/%d" % i, raw))
    recs.append(("version", b"3\n"))
    if era != "old":
        recs.append((".data/serialization_id", b"1234567890123456789012345678901234567890"))
    return zip_archive(recs)


def save_tensor(ns, era, dtype, arr):
    st = Storage(dtype, int(arr.size))
    return torch_save(ns, era, FakeTensor(ns, dtype, list(arr.shape), st), [np.ascontiguousarray(arr).tobytes()])


# ------------------------------------------------------------ the checkpoint

def chunk_1d(n, parts):
    """torch.chunk along one dim as FSDP2 shards: ceil-sized, the tail empty."""
    cs = -(-n // parts) if n else 0
    return [(min(r * cs, n), max(0, min(cs, n - r * cs))) for r in range(parts)]


def plan_chunks(name, shape, ranks, grid):
    """[(rank, offsets, sizes)]: the chunks one tensor is saved in."""
    if len(shape) == 0 or "norm" in name or name == "freqs_cis" or len(shape) == 1 and shape[0] < ranks:
        return None  # replicated: one chunk, by one rank
    row_parallel = name.endswith("o_proj.weight") or name.endswith("down_proj.weight")
    if len(shape) >= 2 and row_parallel and grid:
        tp, dp = grid
        out = []
        for t, (c0, cn) in enumerate(chunk_1d(shape[1], tp)):
            for d, (r0, rn) in enumerate(chunk_1d(shape[0], dp)):
                out.append((t * dp + d, [r0, c0] + [0] * (len(shape) - 2), [rn, cn] + list(shape[2:])))
        return out
    if len(shape) >= 2 and row_parallel:
        return [(r, [0, o] + [0] * (len(shape) - 2), [shape[0], n] + list(shape[2:]))
                for r, (o, n) in enumerate(chunk_1d(shape[1], ranks))]
    return [(r, [o] + [0] * (len(shape) - 1), [n] + list(shape[1:])) for r, (o, n) in enumerate(chunk_1d(shape[0], ranks))]


def write_dcp(ns, era, tensors, outdir, ranks, grid=None, extras=True, rep_start=0, tamper=None):
    os.makedirs(outdir, exist_ok=True)
    files = {r: bytearray() for r in range(ranks)}
    sdm, storage_data, planner = {}, {}, {}
    if extras:
        # Bytes items first, as _write_files_from_queue writes them.
        for fqn, value in (("step", 10000), ("optim.param_groups", [{"lr": 0.001, "params": [0]}])):
            f = files[0]
            item = torch_save(ns, era, value, [])
            storage_data[ns.Index(fqn, None, None)] = ns.Info("__0_0.distcp", len(f), len(item), None)
            f += item
            sdm[fqn] = ns.BSM()
            planner[fqn] = tuple(fqn.split(".", 1)) if "." in fqn else (fqn,)
    rep = rep_start
    for name, t in tensors:
        fqn = "model." + name
        dt = ST_TO_TORCH[t.dtype]
        arr = t.arr
        plan = plan_chunks(name, list(t.shape), ranks, grid)
        if plan is None:
            plan = [(rep % ranks, [0] * len(t.shape), list(t.shape))]
            rep += 1
        chunks = []
        for i, (r, off, size) in enumerate(plan):
            sl = tuple(slice(o, o + s) for o, s in zip(off, size))
            item = save_tensor(ns, era, dt, arr[sl] if sl else arr)
            f = files[r]
            storage_data[ns.Index(fqn, ns.Size(off), i)] = ns.Info("__%d_0.distcp" % r, len(f), len(item), None)
            f += item
            chunks.append(ns.Chunk(ns.Size(off), ns.Size(size)))
        props = ns.TensorProperties(getattr(ns.torch, dt), ns.strided, False, None, False)
        sdm[fqn] = ns.TSM(props, ns.Size(t.shape), chunks)
        planner[fqn] = ("model", name)
    for r, data in files.items():
        with open(os.path.join(outdir, "__%d_0.distcp" % r), "wb") as fh:
            fh.write(data)
    if era == "old":
        meta = ns.Metadata(sdm, planner, storage_data)
    else:
        sm = ns.StorageMeta(pathlib.PosixPath(os.path.abspath(outdir)), "5e1f3f4b-0000-4000-8000-000000000000", None, [])
        meta = ns.Metadata(sdm, planner, storage_data, sm, None)
    if tamper:
        tamper(ns, meta, outdir)
    with open(os.path.join(outdir, ".metadata"), "wb") as fh:
        pickle.dump(meta, fh, protocol=4)  # filesystem.py finish(): pickle.dump(metadata, f)
    return rep


def kf_to_hf_key(key):
    """KempnerForge's scripts/convert_checkpoint.py _kf_to_hf_key, step for step."""
    key = key.replace("token_embedding.embedding.weight", "model.embed_tokens.weight")
    key = key.replace("output_head.proj.weight", "lm_head.weight")
    if key.startswith("layers."):
        key = "model." + key
        key = key.replace(".attention_norm.", ".input_layernorm.")
        key = key.replace(".mlp_norm.", ".post_attention_layernorm.")
        key = key.replace(".attention.", ".self_attn.")
    elif key == "norm.weight":
        key = "model.norm.weight"
    return key


def hf_to_kf_key(key):
    """The names a KempnerForge Transformer's state_dict has for an HF key."""
    if key == "model.embed_tokens.weight":
        return "token_embedding.embedding.weight"
    if key == "lm_head.weight":
        return "output_head.proj.weight"
    if key == "model.norm.weight":
        return "norm.weight"
    key = key[len("model."):]
    key = key.replace(".input_layernorm.", ".attention_norm.").replace(".post_attention_layernorm.", ".mlp_norm.")
    key = key.replace(".self_attn.", ".attention.")
    assert kf_to_hf_key(key) == "model." + key.replace(".attention_norm.", ".input_layernorm.").replace(
        ".mlp_norm.", ".post_attention_layernorm.").replace(".attention.", ".self_attn.")
    return key


TITAN = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
         "lm_head.weight": "output.weight"}
TITAN_LAYER = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
               "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1", "mlp.up_proj": "feed_forward.w3",
               "mlp.down_proj": "feed_forward.w2", "input_layernorm": "attention_norm",
               "post_attention_layernorm": "ffn_norm"}


def reverse_permute(w, n_heads):
    """torchtitan's _reverse_permute (from_hf): HF split-half rows to interleaved."""
    d1, d2 = w.shape
    return np.ascontiguousarray(w.reshape(n_heads, 2, d1 // n_heads // 2, d2).transpose(0, 2, 1, 3).reshape(d1, d2))


def hf_to_titan(name, t, cfg):
    """torchtitan's from_hf for one tensor: its name and stlib.T."""
    if name in TITAN:
        return TITAN[name], t
    parts = name.split(".")  # model.layers.N.<module>.weight
    key = TITAN_LAYER[".".join(parts[3:-1])]
    arr = t.arr
    if key == "attention.wq":
        arr = reverse_permute(arr, cfg["num_attention_heads"])
    elif key == "attention.wk":
        arr = reverse_permute(arr, cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    return "layers.%s.%s.%s" % (parts[2], key, parts[-1]), stlib.T(t.dtype, t.shape, arr)


def dcp_named(hf):
    """{name: stlib.T} of the tensors under every naming a fixture may hold:
    HF's, KempnerForge's and torchtitan's (same values where names meet)."""
    out = {}
    cfg_path = os.path.join(hf, "config.json")
    cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
    hf_tensors = load_hf(hf)
    names = {n for n, _ in hf_tensors}
    if cfg.get("tie_word_embeddings", True) and "lm_head.weight" not in names and "model.embed_tokens.weight" in names:
        # a tied model saved by DCP: the head's own copy of the embedding (kind tied)
        hf_tensors.append(("lm_head.weight", dict(hf_tensors)["model.embed_tokens.weight"]))
    for n, t in hf_tensors:
        out[n] = t
        if n.startswith("model.layers.") or n in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
            out[hf_to_kf_key(n)] = t
            if "num_attention_heads" in cfg and not n.endswith(".bias"):  # torchtitan's Llama has none
                k, v = hf_to_titan(n, t, cfg)
                out[k] = v
    if "num_attention_heads" in cfg:
        out["freqs_cis"] = freqs_cis(cfg)  # kind titan-freqs
    return out


def write(kind, hf, out):
    era = "old" if kind == "old" else "new"
    ns = install_torch(era)
    tensors = load_hf(hf)
    if kind == "kf":
        # dcp.save({"model": model.state_dict()}) of a KempnerForge Transformer
        tensors = sorted(((hf_to_kf_key(n), t) for n, t in tensors), key=lambda x: x[0])
        for n, _ in tensors:
            assert dict(load_hf(hf)).get(kf_to_hf_key(n)) is not None, n
    if kind in ("titan", "titan-tied", "titan-freqs"):
        # dcp.save of a torchtitan model: its own names, wq/wk rows interleaved
        cfg = json.load(open(os.path.join(hf, "config.json")))
        tensors = sorted((hf_to_titan(n, t, cfg) for n, t in tensors), key=lambda x: x[0])
    if kind == "titan-freqs":
        # older torchtitan registered freqs_cis with persistent=True: a complex64 buffer in the state dict
        tensors = sorted(tensors + [("freqs_cis", freqs_cis(cfg))], key=lambda x: x[0])
    if kind in ("tied", "tied-differs", "titan-tied"):
        # dcp.save of a model whose lm_head is tied to embed_tokens: both names
        # are in the state dict and DCP writes each as its own copy. In
        # tied-differs the head was trained apart (a wrong config.json).
        en, hn = ("tok_embeddings.weight", "output.weight") if kind == "titan-tied" else \
            ("model.embed_tokens.weight", "lm_head.weight")
        emb = dict(tensors)[en]
        head = stlib.T(emb.dtype, emb.shape, -emb.arr) if kind == "tied-differs" else emb
        tensors = sorted(tensors + [(hn, head)], key=lambda x: x[0])
    if kind == "pp":
        os.makedirs(out)
        def stage(n):
            if n.startswith("model.layers."):
                return 0 if int(n.split(".")[2]) == 0 else 1
            return 0 if "embed" in n else 1
        rep = write_dcp(ns, era, [x for x in tensors if stage(x[0]) == 0], os.path.join(out, "pp0"), 4, grid=(2, 2))
        write_dcp(ns, era, [x for x in tensors if stage(x[0]) == 1], os.path.join(out, "pp1"), 4, grid=(2, 2),
                  extras=False, rep_start=rep)
    else:
        write_dcp(ns, era, tensors, out, {"old": 2, "kf": 2, "titan": 3}.get(kind, 3))
    # config.json and the side files (tokenizer...) in the step directory, beside .metadata or the stages
    for f in os.listdir(hf):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(hf, f), os.path.join(out, f))


# ------------------------------------------------------------ hostile .metadata

EMBED = "model.model.embed_tokens.weight"


def move_chunk(ns, meta, offsets=None, sizes=None, path=None, length_add=0):
    """Change chunk 1 of EMBED and its storage_data entry."""
    tsm = meta.state_dict_metadata[EMBED]
    c = tsm.chunks[1]
    key = [k for k in meta.storage_data if k.fqn == EMBED and tuple(k.offset) == tuple(c.offsets)][0]
    info = meta.storage_data.pop(key)
    if offsets is not None:
        c.offsets = ns.Size(offsets)
    if sizes is not None:
        c.sizes = ns.Size(sizes)
    if path is not None:
        info.relative_path = path
    info.length += length_add
    meta.storage_data[ns.Index(EMBED, c.offsets, 1)] = info


class Hostile:
    def __init__(self, out):
        self.out = out

    def __reduce__(self):
        return (os.system, ("touch %s/pwned" % self.out,))


HOSTILE = {
    "global": lambda ns, m, out: setattr(m, "planner_data", {"x": Hostile(out)}),
    "overlap": lambda ns, m, out: move_chunk(ns, m, offsets=[40, 0]),
    "hole": lambda ns, m, out: move_chunk(ns, m, sizes=[40, 64]),
    "past-end": lambda ns, m, out: move_chunk(ns, m, sizes=[60, 64]),
    "escape": lambda ns, m, out: move_chunk(ns, m, path="../__1_0.distcp"),
    "short-shard": lambda ns, m, out: move_chunk(ns, m, length_add=1 << 20),
}


def tie(hf, out):
    """A copy of the HF model HF with tied embeddings: lm_head.weight left out
    of one model.safetensors, tie_word_embeddings true (what save_pretrained
    writes for a tied model), the side files as they are."""
    os.makedirs(out)
    ts = [(n, t) for n, t in load_hf(hf) if n != "lm_head.weight"]
    head, blob = {}, bytearray()
    for n, t in ts:
        head[n] = {"dtype": t.dtype, "shape": t.shape, "data_offsets": [len(blob), len(blob) + len(t.raw())]}
        blob += t.raw()
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + blob)
    for f in os.listdir(hf):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(hf, f), os.path.join(out, f))
    cfg = json.load(open(os.path.join(out, "config.json")))
    cfg["tie_word_embeddings"] = True
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)


def hostile(case, hf, out):
    ns = install_torch("new")
    write_dcp(ns, "new", load_hf(hf), out, 2, tamper=HOSTILE[case])


# ------------------------------------------------------------ verify

class Standin:
    """Any class of the .metadata: records what NEWOBJ/REDUCE and BUILD give."""
    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def standin_class(qual):
    return type(qual, (Standin,), {})


class StandinUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("torch", "Size"): tuple,
        ("torch.serialization", "_get_layout"): lambda name: ("layout", name),
        ("builtins", "getattr"): lambda cls, name: (cls.__name__, name),
        ("pathlib", "PosixPath"): pathlib.PurePosixPath,
    }

    def find_class(self, mod, name):
        if (mod, name) in self.ALLOWED:
            return self.ALLOWED[(mod, name)]
        if mod == "torch" and name in STORAGE:
            return ("dtype", name)
        if mod.startswith("torch.distributed.") or mod == "torch.distributed.checkpoint.filesystem":
            return standin_class(mod + "." + name)
        raise pickle.UnpicklingError("unexpected global %s.%s" % (mod, name))


def verify_dir(d, expect):
    import torch  # Debian's 1.13: the embedded archives must load in it
    meta = StandinUnpickler(open(os.path.join(d, ".metadata"), "rb")).load()
    st = meta.state
    sdm, sdata = st["state_dict_metadata"], st["storage_data"]
    infos = {}
    for k, v in sdata.items():
        ks = k.__dict__ if not hasattr(k, "state") else k.state
        vs = v.state
        infos[(ks["fqn"], tuple(ks["offset"]) if ks["offset"] is not None else None)] = vs
    seen = 0
    for fqn, tsm in sdm.items():
        if type(tsm).__name__.endswith("BytesStorageMetadata"):
            info = infos[(fqn, None)]
            blob = open(os.path.join(d, info["relative_path"]), "rb").read()[info["offset"]:info["offset"] + info["length"]]
            v = torch.load(io.BytesIO(blob))
            if fqn == "step" and v != 10000:
                stlib.fail("%s: step is %r" % (d, v))
            continue
        s = tsm.state
        name = fqn[len("model."):]
        t = expect[name]
        if tuple(s["size"]) != tuple(t.shape):
            stlib.fail("%s: %s size %s" % (d, fqn, s["size"]))
        props = s["properties"].state
        if props[0] != ("dtype", ST_TO_TORCH[t.dtype]) or props[1] != ("layout", "torch.strided"):
            stlib.fail("%s: %s properties %r" % (d, fqn, props))
        for c in s["chunks"]:
            off, size = tuple(c.state["offsets"]), tuple(c.state["sizes"])
            info = infos[(fqn, off)]
            with open(os.path.join(d, info["relative_path"]), "rb") as fh:
                fh.seek(info["offset"])
                blob = fh.read(info["length"])
            x = torch.load(io.BytesIO(blob))
            sl = tuple(slice(o, o + n) for o, n in zip(off, size))
            want = t.arr[sl] if sl else t.arr
            got = x.view(torch.int16).numpy() if x.dtype == torch.bfloat16 else x.numpy()
            if list(x.shape) != list(size) or got.tobytes() != np.ascontiguousarray(want).tobytes():
                stlib.fail("%s: %s chunk %s: torch.load gives other values" % (d, fqn, off))
            seen += 1
    return seen


def verify(hf, out):
    expect = dcp_named(hf)
    dirs = [out] if os.path.exists(os.path.join(out, ".metadata")) else \
        sorted(os.path.join(out, x) for x in os.listdir(out) if x.startswith("pp"))
    n = sum(verify_dir(d, expect) for d in dirs)
    print("verified %d chunks in %d director%s with torch %s" % (n, len(dirs), "y" if len(dirs) == 1 else "ies",
                                                                  __import__("torch").__version__))


def seed(out):
    """Small .metadata files of each era for the fuzzer's corpus (tests/fuzz/make-seeds.py)."""
    rng = np.random.default_rng(0)
    ts = [("norm.weight", stlib.T("F32", [5], rng.standard_normal(5).astype(np.float32))),
          ("w.weight", stlib.T("F16", [7, 3], rng.standard_normal((7, 3)).astype(np.float16))),
          ("o_proj.weight", stlib.T("I64", [4, 6], np.arange(24, dtype=np.int64))),
          ("scalar", stlib.T("BF16", [], np.array([0x3F80], dtype=np.uint16)))]
    for era in ("old", "new"):
        ns = install_torch(era)
        d = os.path.join(out, "d-" + era)
        write_dcp(ns, era, ts, d, 3 if era == "new" else 2)
        shutil.copy(os.path.join(d, ".metadata"), os.path.join(out, "metadata-" + era))
        shutil.rmtree(d)


def main():
    if sys.argv[1] == "seed":
        seed(sys.argv[2])
    elif sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "hostile":
        hostile(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "tie":
        tie(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "verify":
        verify(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: dcp_fixtures.py write KIND HF_DIR OUTDIR | verify HF_DIR OUTDIR")


if __name__ == "__main__":
    main()
