import asyncio

import pytest

from medes.fake import FakeChatModel
from medes.graphs.ask import answer_mcq, ask, format_answer, mcq_schema, normalize_options
from medes.llm import LLM, LLMConfigError, ModelSpec
from medes.records import Provision, Source
from tests.support.fakes import FakeIndex


def prov(title, article, text):
    return Provision(id=f"{title}#{article}", source=Source(title=title), article=article, text=text)


P1 = prov("中华人民共和国医师法", "第二十五条", "医师在诊疗活动中应当向患者说明病情、医疗措施。")
P2 = prov("医疗机构管理条例", "第三十二条", "医疗机构施行手术应当取得患者同意。")


def llm_with(script):
    fake = FakeChatModel(script=script)
    return LLM(ModelSpec("fake", "ask"), model=fake, backoff_base_s=0.0), fake


def run(coro):
    return asyncio.run(coro)


def test_retrieval_only_answer_lists_ranked_provisions_and_says_so():
    index = FakeIndex([P1, P2])
    res = run(ask("医生需要告知病情吗？", index, llm=None, k=2))
    assert res.mode == "retrieval-only" and res.model == ""
    assert "仅检索结果" in res.answer and "《中华人民共和国医师法》第二十五条" in res.answer
    assert [c.id for c in res.citations] == [P1.id, P2.id] and [c.rank for c in res.hits] == [1, 2]
    assert index.queries == [("医生需要告知病情吗？", 2)]


def test_no_hits_says_nothing_was_found():
    res = run(ask("天气如何", FakeIndex([]), llm=None))
    assert res.mode == "retrieval-only" and res.answer == "未检索到相关条款。" and res.citations == []


def test_llm_answer_cites_only_retrieved_provisions():
    llm, fake = llm_with([{"answer": "应当告知病情。", "cited_ids": [P1.id]}])
    res = run(ask("医生需要告知病情吗？", FakeIndex([P1, P2]), llm=llm))
    assert res.mode == "llm" and res.answer == "应当告知病情。" and res.model == "fake:ask"
    assert [c.id for c in res.citations] == [P1.id] and len(res.hits) == 2
    assert f"[{P2.id}]" in fake.calls[0][-1].content
    assert "依据：" in format_answer(res) and "《中华人民共和国医师法》第二十五条" in format_answer(res)


def test_invented_citation_falls_back_to_retrieval_with_the_reason():
    bad = {"answer": "见刑法。", "cited_ids": ["刑法#第一条"]}
    llm, _ = llm_with([bad, bad, bad])
    res = run(ask("问题", FakeIndex([P1]), llm=llm))
    assert res.mode == "retrieval-only" and "unparseable" in res.error and "仅检索结果" in res.answer
    assert "注意" in format_answer(res)


def test_unavailable_llm_is_reported_not_faked():
    class Broken(FakeChatModel):
        def _generate(self, *a, **kw):
            raise LLMConfigError("llamacpp models need the `local` extra")

    llm = LLM(ModelSpec("fake", "x"), model=Broken())
    res = run(ask("问题", FakeIndex([P1]), llm=llm))
    assert res.mode == "retrieval-only" and "local" in res.error


# ---------------------------------------------------------------- MCQ


def test_mcq_single_answer_is_a_letter_enum():
    schema = mcq_schema(["A", "B", "C"], multi=False, reasoning_chars=0).model_json_schema()
    assert schema["properties"]["answer"]["enum"] == ["A", "B", "C"]
    llm, fake = llm_with([{"answer": "C"}])
    res = run(answer_mcq(llm, "哪项是医师的权利？", ["爱岗敬业", "尊重隐私", "人身安全不受侵犯"]))
    assert res.letters == "C" and res.error is None
    user = fake.calls[0][-1].content
    assert "C. 人身安全不受侵犯" in user and "参考条款" not in user


def test_mcq_multi_returns_sorted_unique_letters_and_uses_provisions():
    llm, fake = llm_with([{"reasoning": "买卖违法", "answers": ["E", "A", "B", "A"]}])
    res = run(
        answer_mcq(
            llm,
            "哪些违法？",
            {"A": "a", "B": "b", "C": "c", "D": "d", "E": "e"},
            multi=True,
            provisions=[P1],
            reasoning_chars=100,
        )
    )
    assert res.letters == "ABE" and res.reasoning == "买卖违法"
    assert "不定项" in fake.calls[0][0].content and f"[{P1.id}]" in fake.calls[0][-1].content


def test_mcq_letter_outside_the_options_is_a_recorded_error():
    llm, _ = llm_with([{"answer": "E"}] * 3)
    res = run(answer_mcq(llm, "q", ["x", "y"]))
    assert res.letters == "" and res.error and res.raw


def test_options_need_two_entries():
    with pytest.raises(ValueError):
        normalize_options(["only"])


# ---------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, medes_home):
    from typer.testing import CliRunner

    import medes.cli

    monkeypatch.setattr(medes.cli, "_open_index", lambda index, required: FakeIndex([P1, P2]))
    return lambda *args: CliRunner().invoke(medes.cli.app, list(args))


def test_ask_cli_no_llm_prints_ranked_provisions(cli):
    import json

    res = cli("ask", "医生需要告知病情吗？", "--no-llm", "--json", "-k", "1")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mode"] == "retrieval-only" and [c["id"] for c in out["citations"]] == [P1.id]


def test_ask_cli_without_configured_llm_says_it_is_retrieval_only(cli):
    res = cli("ask", "医生需要告知病情吗？")
    assert res.exit_code == 0 and "仅检索结果" in res.stdout and "retrieval-only" in res.stderr


def test_ask_cli_mcq_with_a_scripted_model(cli, tmp_path):
    import json

    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"answers": ["B", "A"]}]), encoding="utf-8")
    res = cli(
        "ask",
        "哪些做法合规？",
        "--mcq",
        "--multi",
        "--option",
        "告知病情",
        "--option",
        "取得同意",
        "--option",
        "买卖器官",
        "--llm",
        f"fake:{script}",
    )
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "AB"


def test_ask_cli_mcq_needs_an_llm(cli):
    res = cli("ask", "q", "--mcq", "--no-llm", "--option", "a", "--option", "b")
    assert res.exit_code == 1 and "needs an LLM" in res.output
