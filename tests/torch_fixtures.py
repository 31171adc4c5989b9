#!/usr/bin/python3
"""torch_fixtures.py - write torch checkpoints for tests/mount-torch.sh with real torch.save.

Usage: torch_fixtures.py KIND HF_DIR OUTDIR

HF_DIR is a checkpoint from examples/gen-model.py; its tensors (read with
tests/stlib.py) are saved by torch the way real files hold them:
  gpt2-legacy   pytorch_model.bin in the legacy format (_use_new_zipfile_serialization=False),
                with 0-dim attn.masked_bias buffers and lm_head.weight sharing
                the storage of transformer.wte.weight, as HF GPT-2 files do
  llama-zip     pytorch_model.bin (zip); one weight saved transposed (x.t().contiguous().t())
                and model.norm.weight at an offset inside a larger storage
  llama-sharded pytorch_model-0000K-of-00002.bin + pytorch_model.bin.index.json
  nanogpt       ckpt.pt only (no config.json): nanoGPT's dict with model,
                optimizer, model_args, iter_num, best_val_loss, config; names
                with '_orig_mod.', Linear weights [out, in], lm_head tied
  llama2c       ckpt.pt as llama2.c's train.py writes it: Meta's names
                (tok_embeddings, layers.N.attention.wq ...), wq/wk rows in the
                interleaved rotary order, model_args, '_orig_mod.' prefixes
  meta          consolidated.00.pth + params.json (vocab_size -1, rope.freqs),
                Meta's original LLaMA release layout
  meta-mp       Meta's LLaMA 1/2 model-parallel release: consolidated.00.pth and
                .01.pth, each weight cut as fairscale's parallel layers hold it
                (tok_embeddings along dim 1), params.json, rope.freqs
  meta3-mp      the same as LLaMA 3 cuts it (tok_embeddings along dim 0),
                rope_theta 500000 in params.json
  hostile       pytorch_model.bin whose pickle calls os.system (never run:
                the command would create OUTDIR/pwned)
Side files (config.json, tokenizer...) are copied except for the trainer files.
"""
import collections
import json
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stlib  # noqa: E402


def load_hf(d):
    """{name: torch tensor} of every safetensors file of d."""
    out = collections.OrderedDict()
    for name, t in stlib.read_dir(d).items():
        a = np.array(t.arr)
        if t.dtype == "BF16":
            x = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        elif t.dtype == "BOOL":
            x = torch.from_numpy(a.astype(np.bool_))
        else:
            x = torch.from_numpy(a)
        out[name] = x.clone()
    return out


def copy_side(src, dst):
    for f in os.listdir(src):
        if not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))


def gpt2_legacy(src, dst):
    sd = load_hf(src)
    out = collections.OrderedDict()
    for k, v in sd.items():
        out[k] = v
        if k.endswith(".attn.bias"):
            out[k[:-len("bias")] + "masked_bias"] = torch.tensor(-1e4)
    out["lm_head.weight"] = out["transformer.wte.weight"]  # one storage, as tied modules save
    torch.save(out, os.path.join(dst, "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    copy_side(src, dst)


def llama_state(src):
    sd = load_hf(src)
    k = "model.layers.0.mlp.down_proj.weight"
    sd[k] = sd[k].t().contiguous().t()  # same values, stored transposed
    n = sd["model.norm.weight"]
    big = torch.cat([torch.zeros(5, dtype=n.dtype), n, torch.zeros(3, dtype=n.dtype)])
    sd["model.norm.weight"] = big[5:5 + n.numel()]  # storage offset 5
    return sd


def llama_zip(src, dst):
    torch.save(llama_state(src), os.path.join(dst, "pytorch_model.bin"))
    copy_side(src, dst)


def llama_sharded(src, dst):
    sd = load_hf(src)
    names = list(sd)
    half = len(names) // 2
    wm = {}
    total = 0
    for i, part in enumerate((names[:half], names[half:])):
        fn = "pytorch_model-%05d-of-00002.bin" % (i + 1)
        torch.save(collections.OrderedDict((k, sd[k]) for k in part), os.path.join(dst, fn))
        for k in part:
            wm[k] = fn
            total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(dst, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    copy_side(src, dst)


LINEAR = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def nanogpt(src, dst):
    sd = load_hf(src)
    cfg = json.load(open(os.path.join(src, "config.json")))
    model = collections.OrderedDict()
    for k, v in sd.items():
        if k.endswith(LINEAR):
            v = v.t().contiguous()  # nn.Linear [out, in]
        model["_orig_mod." + k] = v
    model["_orig_mod.lm_head.weight"] = model["_orig_mod.transformer.wte.weight"]
    params = [v for k, v in model.items() if not k.endswith("attn.bias")]
    opt = torch.optim.AdamW([torch.nn.Parameter(p.clone()) for p in params[:3]], lr=6e-4, betas=(0.9, 0.95))
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    opt.step()
    model_args = dict(n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                      block_size=cfg["n_positions"], bias=True, vocab_size=cfg["vocab_size"], dropout=0.0)
    ckpt = {"model": model, "optimizer": opt.state_dict(), "model_args": model_args, "iter_num": 5000,
            "best_val_loss": torch.tensor(2.875), "config": {"batch_size": 12, "learning_rate": 6e-4,
                                                            "dataset": "openwebtext", "compile": True}}
    torch.save(ckpt, os.path.join(dst, "ckpt.pt"))


def to_meta(src):
    """HF LLaMA tensors back to Meta's names and rotary row order (the
    inverse of convert_llama_weights_to_hf's permute), and the arguments."""
    sd = load_hf(src)
    cfg = json.load(open(os.path.join(src, "config.json")))
    d, h = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", h)

    def unpermute(w, heads):
        rows, cols = w.shape
        return w.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols).contiguous()

    out = collections.OrderedDict()
    out["tok_embeddings.weight"] = sd["model.embed_tokens.weight"]
    for i in range(cfg["num_hidden_layers"]):
        p, q = "model.layers.%d." % i, "layers.%d." % i
        out[q + "attention.wq.weight"] = unpermute(sd[p + "self_attn.q_proj.weight"], h)
        out[q + "attention.wk.weight"] = unpermute(sd[p + "self_attn.k_proj.weight"], kv)
        out[q + "attention.wv.weight"] = sd[p + "self_attn.v_proj.weight"]
        out[q + "attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        out[q + "feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        out[q + "feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
        out[q + "feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        out[q + "attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        out[q + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    out["norm.weight"] = sd["model.norm.weight"]
    if "lm_head.weight" in sd:
        out["output.weight"] = sd["lm_head.weight"]
    else:
        out["output.weight"] = out["tok_embeddings.weight"]
    args = dict(dim=d, n_layers=cfg["num_hidden_layers"], n_heads=h, n_kv_heads=kv, vocab_size=cfg["vocab_size"],
                multiple_of=32, norm_eps=cfg.get("rms_norm_eps", 1e-5), max_seq_len=cfg.get("max_position_embeddings", 256),
                dropout=0.0)
    return out, args


def llama2c(src, dst):
    sd, args = to_meta(src)
    model = collections.OrderedDict(("_orig_mod." + k, v) for k, v in sd.items())
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 5e-4, "params": []}]},
                "model_args": args, "iter_num": 2000, "best_val_loss": torch.tensor(1.25),
                "config": {"batch_size": 128, "vocab_source": "llama2"}}, os.path.join(dst, "ckpt.pt"))


def meta(src, dst):
    sd, args = to_meta(src)
    args["vocab_size"] = -1  # as Meta's params.json says
    hd = args["dim"] // args["n_heads"]
    sd["rope.freqs"] = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    torch.save(sd, os.path.join(dst, "consolidated.00.pth"))
    with open(os.path.join(dst, "params.json"), "w") as f:
        json.dump({k: v for k, v in args.items() if k not in ("max_seq_len", "dropout")}, f)


def split_mp(sd, n, emb_dim):
    """Meta's model-parallel files: each weight cut as fairscale's parallel
    layers hold it (column-parallel wq wk wv w1 w3 output along dim 0,
    row-parallel wo w2 along dim 1, tok_embeddings along emb_dim), the rest
    replicated; every slice its own storage, as each rank saved its own."""
    col = ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "feed_forward.w1.weight",
           "feed_forward.w3.weight")
    shards = [collections.OrderedDict() for _ in range(n)]
    for k, v in sd.items():
        d = 0 if k == "output.weight" or k.endswith(col) else \
            1 if k.endswith(("attention.wo.weight", "feed_forward.w2.weight")) else \
            emb_dim if k == "tok_embeddings.weight" else None
        # tensor_split: the tiny model's vocab (101) is odd, so output is cut 51 + 50
        pieces = [v] * n if d is None else torch.tensor_split(v, n, dim=d)
        for i, p in enumerate(pieces):
            shards[i][k] = p.clone()
    return shards


def meta_mp(src, dst):
    """LLaMA 1/2: consolidated.00.pth + .01.pth, tok_embeddings split along dim 1, rope.freqs."""
    sd, args = to_meta(src)
    args["vocab_size"] = -1
    hd = args["dim"] // args["n_heads"]
    sd["rope.freqs"] = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    for i, shard in enumerate(split_mp(sd, 2, 1)):
        torch.save(shard, os.path.join(dst, "consolidated.%02d.pth" % i))
    with open(os.path.join(dst, "params.json"), "w") as f:
        json.dump({k: v for k, v in args.items() if k not in ("max_seq_len", "dropout")}, f)


def meta3_mp(src, dst):
    """LLaMA 3: tok_embeddings split along dim 0 (VocabParallelEmbedding), rope_theta in params.json."""
    sd, args = to_meta(src)
    for i, shard in enumerate(split_mp(sd, 2, 0)):
        torch.save(shard, os.path.join(dst, "consolidated.%02d.pth" % i))
    args["rope_theta"] = 500000.0
    with open(os.path.join(dst, "params.json"), "w") as f:
        json.dump({k: v for k, v in args.items() if k not in ("max_seq_len", "dropout")}, f)


class Pwn:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, ("touch " + self.path,))


def hostile(src, dst):
    torch.save({"w": torch.zeros(2), "x": Pwn(os.path.join(dst, "pwned"))}, os.path.join(dst, "pytorch_model.bin"))


KINDS = {"gpt2-legacy": gpt2_legacy, "llama-zip": llama_zip, "llama-sharded": llama_sharded,
         "nanogpt": nanogpt, "llama2c": llama2c, "meta": meta, "meta-mp": meta_mp, "meta3-mp": meta3_mp,
         "hostile": hostile}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in KINDS:
        sys.exit("usage: torch_fixtures.py {%s} HF_DIR OUTDIR" % ",".join(KINDS))
    os.makedirs(sys.argv[3], exist_ok=True)
    KINDS[sys.argv[1]](sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
