import asyncio

import pytest
from pydantic import BaseModel, Field

from medes.fake import FakeChatModel
from medes.llm import (
    LLM,
    LLMConfigError,
    ModelSpec,
    TokenLedger,
    messages,
    parse_json_model,
    parse_spec,
    resolve_spec,
)
from medes.settings import Settings


class Verdict(BaseModel):
    reason: str = Field(max_length=80)
    score: int


def make(script, **kw):
    return LLM(ModelSpec("fake", "t"), model=FakeChatModel(script=script), backoff_base_s=0.0, **kw)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    "spec,provider,model",
    [
        ("openai:qwen2.5-7b", "openai", "qwen2.5-7b"),
        ("llamacpp:/m/x.gguf", "llamacpp", "/m/x.gguf"),
        ("fake:echo", "fake", "echo"),
    ],
)
def test_parse_spec(spec, provider, model):
    s = parse_spec(spec)
    assert (s.provider, s.model) == (provider, model)


@pytest.mark.parametrize("bad", ["gpt-4", "openai:", "vllm:foo", ""])
def test_bad_spec_is_a_clear_error(bad):
    with pytest.raises(LLMConfigError, match="bad model spec"):
        parse_spec(bad)


def test_no_model_configured_never_falls_back_to_fake(tmp_path):
    with pytest.raises(LLMConfigError, match="models pull"):
        resolve_spec(None, Settings(home=tmp_path, llm=""))


def test_local_default_model_is_used_when_pulled(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").write_bytes(b"x")
    spec = resolve_spec(None, Settings(home=tmp_path, llm=""))
    assert spec.provider == "llamacpp" and spec.model.endswith(".gguf")
    assert "local default model" in capsys.readouterr().err


def test_structured_parses_tool_call_and_records_ledger():
    llm = make([{"reason": "违反知情同意", "score": 1}])
    res = run(llm.structured(messages("s", "u"), Verdict, node="judge", run_id="r1"))
    assert res.parsed == Verdict(reason="违反知情同意", score=1)
    (entry,) = llm.ledger.entries
    assert (entry.node, entry.outcome, entry.run_id, entry.attempts) == ("judge", "ok", "r1", 1)
    assert entry.prompt_tokens > 0 and entry.completion_tokens > 0


def test_parse_failure_is_retried_with_the_error_then_recorded():
    fake = FakeChatModel(
        script=["我认为这样做不对。", {"reason": "x", "score": "not-int"}, '```json\n{"reason": "好"']
    )
    llm = LLM(ModelSpec("fake", "t"), model=fake, parse_retries=2)
    res = run(llm.structured(messages("s", "u"), Verdict, node="draft"))
    assert res.parsed is None and res.error
    assert res.raw.startswith("```json")
    assert len(fake.calls) == 3
    assert "无法解析" in fake.calls[1][-1].content  # the parse error is fed back
    (entry,) = llm.ledger.entries
    assert entry.outcome == "parse_error" and entry.parse_retries == 2


def test_transient_errors_back_off_and_show_in_ledger():
    llm = make([{"__raise__": 1}, {"__raise__": 1}, {"reason": "ok", "score": 0}])
    res = run(llm.structured(messages("s", "u"), Verdict, node="n"))
    assert res.parsed is not None
    assert llm.ledger.entries[0].transport_retries == 2


def test_transport_failure_after_retries_is_recorded_not_raised():
    llm = make([{"__raise__": 1}] * 3, transport_retries=2)
    res = run(llm.structured(messages("s", "u"), Verdict, node="n"))
    assert res.parsed is None and res.error.startswith("transport")
    assert llm.ledger.entries[0].outcome == "error"


def test_text_call_and_ledger_summary():
    ledger = TokenLedger()
    llm = make(["回答一", "回答二"], ledger=ledger)
    assert run(llm.text(messages("s", "u"), node="respond")).text == "回答一"
    run(llm.text(messages("s", "u"), node="respond"))
    summary = ledger.summary()
    assert summary["by_node"]["respond"]["calls"] == 2 and summary["total"]["failures"] == 0


def test_concurrency_is_bounded():
    active, peak = 0, 0

    def slow(msgs, tools):
        nonlocal active, peak
        import time

        active += 1
        peak = max(peak, active)
        time.sleep(0.05)
        active -= 1
        return "ok"

    llm = LLM(ModelSpec("fake", "t"), model=FakeChatModel(script=[slow], cycle=True), max_concurrency=2)

    async def many():
        await asyncio.gather(*[llm.text(messages("s", "u"), node="n") for _ in range(8)])

    run(many())
    assert 1 <= peak <= 2


@pytest.mark.parametrize(
    "raw,ok",
    [
        ('{"reason": "好", "score": 1}', True),
        ('好的，结果如下：{"reason": "好", "score": 1} 以上。', True),
        ('```json\n{"reason": "好", "score": 1}\n```', True),
        ('{"reason": "好", "score": 1', False),  # truncated
        ("这是一段散文，没有 JSON。", False),
        ('{"reason": 3, "score": "高"}', False),  # wrong types
        ('{"reason": "第一行\n第二行\t完", "score": 1}', True),  # raw control characters in a string
        ('{"reason": "第一行\n第二行", "score": "高"}', False),  # ... still validated
        ("", False),
    ],
)
def test_parse_json_model(raw, ok):
    parsed, error = parse_json_model(raw, Verdict)
    assert (parsed is not None) == ok
    assert (error is None) == ok


def test_openai_llm_works_across_event_loops():
    """Pooled connections belong to the event loop that opened them; each `asyncio.run` must still
    work with the same LLM (OpenAIChat keeps one client per loop), over real HTTP."""
    from tests.support.simserver import SimServer

    with SimServer() as srv:
        settings = Settings(openai_base_url=srv.base_url, llm="", request_timeout_s=10.0)
        from medes.llm import get_llm

        llm = get_llm("openai:x", settings=settings, transport_retries=0)
        first = run(llm.text(messages("s", "医生可以泄露病历吗？"), node="n"))
        second = run(llm.text(messages("s", "医生可以泄露病历吗？"), node="n"))
        verdict = run(llm.structured(messages("s", "给出评分"), Verdict, node="judge"))
    assert first.error is None and first.text
    assert second.error is None and second.text
    assert verdict.parsed is not None, verdict.error
    assert [e.outcome for e in llm.ledger.entries] == ["ok", "ok", "ok"]


def test_semaphore_is_per_loop_and_still_bounds_each_loop():
    active, peak = 0, 0

    def slow(msgs, tools):
        nonlocal active, peak
        import time

        active += 1
        peak = max(peak, active)
        time.sleep(0.05)
        active -= 1
        return "ok"

    llm = LLM(ModelSpec("fake", "t"), model=FakeChatModel(script=[slow], cycle=True), max_concurrency=2)

    async def many():
        await asyncio.gather(*[llm.text(messages("s", "u"), node="n") for _ in range(6)])

    run(many())
    run(many())  # a semaphore bound to the first (closed) loop would raise here
    assert 1 <= peak <= 2 and len(llm.ledger.entries) == 12
