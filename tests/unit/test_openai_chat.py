"""`OpenAIChat`: the chat-completions wire protocol, its error mapping and its per-event-loop clients.

Deterministic, over `httpx2.MockTransport`; the same model against the simulated endpoint over real
HTTP (faults, Retry-After, dropped connections, canary key) is covered by tests/reliability.
"""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, SecretStr

from medes.llm import LLM, ModelSpec, TransientLLMError
from medes.openai_chat import OpenAIChat, OpenAIRequestError

KEY = "sk-canary-7f3a"


def completion(message: dict, usage: dict | None = None) -> dict:
    return {
        "id": "cmpl-1",
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def model(handler, **kw) -> tuple[OpenAIChat, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return handler(request)

    chat = OpenAIChat(
        model="m",
        base_url="http://llm.test/v1/",
        api_key=SecretStr(KEY),
        transport=httpx2.MockTransport(record),
        **kw,
    )
    return chat, seen


ASK = [SystemMessage("你是助手。"), HumanMessage("医生能收红包吗？")]


def test_text_answer_usage_and_request_body():
    chat, seen = model(
        lambda r: httpx2.Response(200, json=completion({"content": "不能。"})), temperature=0.2
    )
    msg = asyncio.run(chat.ainvoke(ASK, max_tokens=50))
    assert msg.content == "不能。"
    assert msg.usage_metadata == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert msg.response_metadata["finish_reason"] == "stop"
    (request,) = seen
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert body["model"] == "m" and body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "你是助手。"},
        {"role": "user", "content": "医生能收红包吗？"},
    ]


def test_no_key_sends_no_authorization_header():
    chat, seen = model(lambda r: httpx2.Response(200, json=completion({"content": "好"})))
    chat.api_key = None
    chat.invoke(ASK)  # the sync path too
    assert "authorization" not in seen[0].headers


class Verdict(BaseModel):
    risky: bool
    reason: str = Field(max_length=20)


def test_structured_call_through_llm_sends_the_tool_and_parses_its_arguments():
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        assert body["tools"][0]["function"]["name"] == "Verdict"
        assert body["tool_choice"]["function"]["name"] == "Verdict" and body["parallel_tool_calls"] is False
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "Verdict", "arguments": '{"risky": true, "reason": "收受财物"}'},
        }
        return httpx2.Response(200, json=completion({"content": None, "tool_calls": [call]}))

    chat, _ = model(handler)
    llm = LLM(ModelSpec("openai", "m"), model=chat, strategy="function_calling")
    out = asyncio.run(llm.structured(ASK, Verdict, node="judge"))
    assert out.parsed == Verdict(risky=True, reason="收受财物") and out.attempts == 1


def test_unparseable_tool_arguments_are_an_invalid_call_then_a_parse_retry():
    answers = iter(['{"risky": tr', '{"risky": false, "reason": "无"}'])

    def handler(request: httpx2.Request) -> httpx2.Response:
        call = {"id": "c", "type": "function", "function": {"name": "Verdict", "arguments": next(answers)}}
        return httpx2.Response(200, json=completion({"content": None, "tool_calls": [call]}))

    chat, seen = model(handler)
    first = chat.invoke(ASK)
    assert first.tool_calls == [] and first.invalid_tool_calls[0]["args"] == '{"risky": tr'
    llm = LLM(ModelSpec("openai", "m"), model=chat, strategy="function_calling", parse_retries=1)
    out = asyncio.run(llm.structured(ASK, Verdict, node="judge"))
    assert out.parsed == Verdict(risky=False, reason="无") and len(seen) == 2


@pytest.mark.parametrize(
    ("response", "retry_after"),
    [
        (
            httpx2.Response(429, headers={"retry-after-ms": "250"}, json={"error": {"message": "slow down"}}),
            0.25,
        ),
        (httpx2.Response(429, headers={"retry-after": "2"}), 2.0),
        (httpx2.Response(503, text="overloaded"), None),
        (httpx2.Response(200, text="<html>proxy error</html>"), None),  # a 200 that is not a completion
        (httpx2.Response(200, json={"choices": []}), None),
    ],
)
def test_retryable_failures_raise_transient_errors(response, retry_after):
    chat, _ = model(lambda r: response)
    with pytest.raises(TransientLLMError) as info:
        asyncio.run(chat.ainvoke(ASK))
    assert info.value.retry_after == retry_after


@pytest.mark.parametrize(
    "exc", [httpx2.ReadTimeout("slow"), httpx2.ConnectError("refused"), httpx2.RemoteProtocolError("dropped")]
)
def test_timeouts_and_broken_connections_are_transient(exc):
    def handler(request):
        raise exc

    chat, _ = model(handler)
    with pytest.raises(TransientLLMError):
        asyncio.run(chat.ainvoke(ASK))
    with pytest.raises(TransientLLMError):
        chat.invoke(ASK)


def test_client_errors_say_what_the_server_said_and_never_the_key():
    chat, _ = model(lambda r: httpx2.Response(400, json={"error": {"message": "model 'm' not found"}}))
    with pytest.raises(OpenAIRequestError, match="HTTP 400: model 'm' not found") as info:
        asyncio.run(chat.ainvoke(ASK))
    assert KEY not in str(info.value) and KEY not in repr(chat)


def test_llm_retries_transient_failures_and_counts_them():
    answers = iter([httpx2.Response(500), httpx2.Response(429, headers={"retry-after": "0"}), None])

    def handler(request):
        return next(answers) or httpx2.Response(200, json=completion({"content": "可以。"}))

    chat, seen = model(handler)
    llm = LLM(ModelSpec("openai", "m"), model=chat, transport_retries=3, backoff_base_s=0.001)
    out = asyncio.run(llm.text(ASK, node="respond"))
    assert out.text == "可以。" and out.error is None and len(seen) == 3
    (entry,) = llm.ledger.entries
    assert entry.transport_retries == 2 and entry.attempts == 3


def test_one_model_serves_successive_event_loops():
    """A pooled client belongs to its event loop: a second asyncio.run must not reuse a dead one."""
    chat, seen = model(lambda r: httpx2.Response(200, json=completion({"content": "好"})))
    for _ in range(3):
        assert asyncio.run(chat.ainvoke(ASK)).content == "好"
    assert len(seen) == 3


@pytest.mark.parametrize("strategy", ["json_schema", "json_mode"])
def test_json_strategies_ask_through_response_format_and_parse_the_content(strategy):
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        assert "tools" not in body
        if strategy == "json_schema":
            assert body["response_format"]["type"] == "json_schema"
            assert body["response_format"]["json_schema"]["schema"]["properties"]["reason"]["maxLength"] == 20
        else:
            assert body["response_format"] == {"type": "json_object"}
            assert '"risky"' in body["messages"][-1]["content"]  # the schema hint rides with the prompt
        return httpx2.Response(200, json=completion({"content": '{"risky": false, "reason": "合规"}'}))

    chat, seen = model(handler)
    llm = LLM(ModelSpec("openai", "m"), model=chat, strategy=strategy)
    out = asyncio.run(llm.structured(ASK, Verdict, node="judge"))
    assert out.parsed == Verdict(risky=False, reason="合规") and len(seen) == 1
