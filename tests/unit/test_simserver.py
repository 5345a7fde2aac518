"""The simulated OpenAI-compatible endpoint: schema-valid answers, faults, counters, lifecycle."""

from __future__ import annotations

import functools
import json
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from uuid import UUID

import httpx
import openai
import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.schemagen import SchemaError, chinese_text, generate  # noqa: E402
from tests.support.simserver import (  # noqa: E402
    Latency,
    Scheduled,
    SimConfig,
    SimServer,
    fingerprint,
)


class 场景(StrEnum):
    隐私 = "隐私保护"
    知情同意 = "知情同意"
    临床试验 = "临床试验"


class 条款(BaseModel):
    编号: str = Field(max_length=30)
    摘要: str = Field(min_length=4, max_length=40)


class 判定(BaseModel):
    """The shape the brief asks for: Chinese str fields with maxLength, an enum, a list, a nested model."""

    理由: str = Field(max_length=60)
    场景: 场景
    要点: list[str] = Field(min_length=1, max_length=4)
    依据: 条款
    风险: bool
    置信度: float = Field(ge=0, le=1)


@functools.cache
def _http() -> httpx.Client:
    """One HTTP client for the module: building one per test (SSL context) costs more than the test."""
    return httpx.Client(verify=False)


@pytest.fixture(autouse=True, scope="module")
def _close_http():
    yield
    _http().close()
    _http.cache_clear()


def _client(srv: SimServer, **kw) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=srv.base_url, api_key="sim", max_retries=kw.pop("max_retries", 0), http_client=_http(), **kw
    )


def _chat_model(srv: SimServer, **kw):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=srv.base_url, api_key="sim", model="sim-model", max_retries=0, http_client=_http(), **kw
    )


def _ask(text: str = "医生可以把病历给患者单位看吗？") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# --- schema generation -------------------------------------------------------------------------


class 节点(BaseModel):
    名称: str = Field(max_length=8)
    子节点: list[节点] = Field(default_factory=list, max_length=2)


class 杂项(BaseModel):
    常量: Literal["固定"]
    可空: str | None = Field(max_length=5)
    联合: int | 条款
    区间: int = Field(gt=3, lt=7)
    倍数: int = Field(ge=0, le=100, multiple_of=7)
    小数: float = Field(gt=0.5, le=0.6)
    代码: str = Field(pattern=r"^[A-Z]{2}-\d{3}$")
    集合: set[int] = Field(min_length=3, max_length=5)
    映射: dict[str, int] = Field(min_length=2)
    元组: tuple[int, str, bool]
    日期: date
    时间: datetime
    标识: UUID
    树: 节点


@pytest.mark.parametrize("model", [判定, 杂项, 节点, 条款])
def test_generated_values_validate_against_the_pydantic_model(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    for seed in range(60):
        model.model_validate(generate(schema, random.Random(seed)))


def test_generation_is_deterministic_per_seed_and_varies_across_seeds() -> None:
    schema = 判定.model_json_schema()
    assert generate(schema, random.Random(7)) == generate(schema, random.Random(7))
    assert len({json.dumps(generate(schema, random.Random(s)), ensure_ascii=False) for s in range(10)}) > 5


@pytest.mark.parametrize(("low", "high"), [(0, 0), (1, 1), (0, 3), (5, 5), (10, 200), (0, None), (50, None)])
def test_chinese_text_respects_length_bounds(low: int, high: int | None) -> None:
    for seed in range(30):
        text = chinese_text(random.Random(seed), low, high)
        assert low <= len(text) <= (high if high is not None else 10**6)
        if len(text) >= 2:
            assert _has_cjk(text)


def test_raw_schema_keywords_are_honoured() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["integer", "null"], "exclusiveMinimum": 10, "exclusiveMaximum": 12},
            "b": {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["甲", "乙"]}]},
            "c": {"type": "array", "items": {"type": "string", "maxLength": 2}, "minItems": 2, "maxItems": 2},
            "d": {"const": 42},
            "e": {"$ref": "#/$defs/E"},
        },
        "required": ["a", "b", "c", "d", "e"],
        "$defs": {
            "E": {"type": "object", "properties": {"x": {"type": "number", "minimum": -1, "maximum": -1}}}
        },
    }
    for seed in range(40):
        v = generate(schema, random.Random(seed))
        assert v["a"] in (None, 11)
        assert v["b"] in (None, "甲", "乙")
        assert len(v["c"]) == 2 and all(len(s) <= 2 for s in v["c"])
        assert v["d"] == 42
        assert v["e"] == {"x": -1}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "array", "minItems": 3, "maxItems": 1},
        {"$ref": "#/$defs/missing"},
        {"$ref": "https://example.com/schema.json"},
        {"enum": []},
    ],
)
def test_unsatisfiable_schemas_raise_schema_error(schema: dict) -> None:
    with pytest.raises(SchemaError):
        generate(schema, random.Random(0))


# --- the openai SDK ------------------------------------------------------------------------------


def test_plain_chat_answers_chinese_with_usage() -> None:
    with SimServer() as srv:
        r = _client(srv).chat.completions.create(model="sim-model", messages=_ask())
    assert _has_cjk(r.choices[0].message.content)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_sdk_parse_with_json_schema_gets_a_valid_model() -> None:
    with SimServer() as srv:
        r = _client(srv).chat.completions.parse(model="m", messages=_ask(), response_format=判定)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, 判定) and _has_cjk(parsed.理由)


def test_sdk_tool_call_arguments_satisfy_the_function_schema() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "other", "parameters": {"type": "object", "properties": {}}},
        },
        {"type": "function", "function": {"name": "判定", "parameters": 判定.model_json_schema()}},
    ]
    with SimServer() as srv:
        r = _client(srv).chat.completions.create(
            model="m",
            messages=_ask(),
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "判定"}},
        )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "判定"
    判定.model_validate_json(call.function.arguments)


def test_json_object_follows_a_schema_embedded_in_the_prompt() -> None:
    prompt = "只输出 JSON，符合以下 schema：\n" + json.dumps(判定.model_json_schema(), ensure_ascii=False)
    with SimServer() as srv:
        client = _client(srv)
        r = client.chat.completions.create(
            model="m", messages=_ask(prompt), response_format={"type": "json_object"}
        )
        bare = client.chat.completions.create(
            model="m", messages=_ask(), response_format={"type": "json_object"}
        )
    判定.model_validate_json(r.choices[0].message.content)
    assert isinstance(json.loads(bare.choices[0].message.content), dict)


def test_streaming_yields_the_same_content_and_usage() -> None:
    with SimServer() as srv:
        client = _client(srv)
        whole = client.chat.completions.create(model="m", messages=_ask(), seed=3)
        chunks = list(
            client.chat.completions.create(
                model="m", messages=_ask(), seed=3, stream=True, stream_options={"include_usage": True}
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_tool_call_arguments_join_to_valid_json() -> None:
    tools = [{"type": "function", "function": {"name": "判定", "parameters": 判定.model_json_schema()}}]
    with SimServer() as srv:
        chunks = list(
            _client(srv).chat.completions.create(
                model="m", messages=_ask(), tools=tools, tool_choice="required", stream=True
            )
        )
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].function.name == "判定" and calls[0].id
    判定.model_validate_json("".join(c.function.arguments for c in calls))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    with SimServer() as srv:
        r = _client(srv).chat.completions.create(model="m", messages=_ask(), max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert len(r.choices[0].message.content) <= 5


def test_models_endpoint_and_bad_requests() -> None:
    with SimServer(SimConfig(models=("甲模型", "乙模型"))) as srv:
        client = _client(srv)
        assert [m.id for m in client.models.list()] == ["甲模型", "乙模型"]
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[])
        with pytest.raises(openai.BadRequestError, match="cannot satisfy schema"):
            client.chat.completions.create(
                model="m",
                messages=_ask(),
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "string", "minLength": 3, "maxLength": 1},
                    },
                },
            )
        assert srv.stats().by_outcome["bad_request"] == 1


# --- langchain-openai structured output ---------------------------------------------------------


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_structured_output_is_schema_valid(method: str) -> None:
    # json_mode sends no schema: the caller writes it into the prompt, and the simulator honours it.
    prompt = "请判定下面的情形，输出 JSON，schema 如下：" + json.dumps(
        判定.model_json_schema(), ensure_ascii=False
    )
    with SimServer() as srv:
        out = _chat_model(srv).with_structured_output(判定, method=method).invoke(prompt)
        kind = srv.stats().records[0].kind
    assert isinstance(out, 判定)
    assert _has_cjk(out.理由) and len(out.理由) <= 60
    assert (
        kind
        == {"json_schema": "json_schema", "function_calling": "tools", "json_mode": "json_object"}[method]
    )


# --- faults, observed from the client ------------------------------------------------------------


def _scheduled(fault: str, **kw) -> SimConfig:
    return SimConfig(schedule=(Scheduled(fault=fault, first=1),), **kw)


def test_injected_429_carries_retry_after() -> None:
    with SimServer(_scheduled("429", retry_after=2.5)) as srv:
        client = _client(srv)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="m", messages=_ask())
        assert info.value.response.headers["retry-after"] == "3"
        assert info.value.response.headers["retry-after-ms"] == "2500"
        client.chat.completions.create(model="m", messages=_ask())  # only the first one was scheduled
        assert srv.stats().by_outcome == {"429": 1, "ok": 1}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_injected_server_errors(status: int) -> None:
    with SimServer(_scheduled(str(status))) as srv:
        with pytest.raises(openai.APIStatusError) as info:
            _client(srv).chat.completions.create(model="m", messages=_ask())
    assert info.value.status_code == status


def test_injected_timeout_outlasts_the_client_timeout() -> None:
    with SimServer(_scheduled("timeout", timeout_hold=30)) as srv:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _client(srv, timeout=0.3).chat.completions.create(model="m", messages=_ask())
        assert time.monotonic() - started < 10
        _wait_for(lambda: srv.stats().disconnects == 1 and srv.stats().inflight == 0)
        assert srv.stats().by_outcome == {"timeout": 1}


def test_dropped_connection_is_a_connection_error() -> None:
    with SimServer(_scheduled("drop")) as srv:
        with pytest.raises(openai.APIConnectionError) as info:
            _client(srv).chat.completions.create(model="m", messages=_ask())
    assert not isinstance(info.value, openai.APITimeoutError)


def _json_schema_content(srv: SimServer) -> str:
    r = _client(srv).chat.completions.create(
        model="m",
        messages=_ask(),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "判定", "schema": 判定.model_json_schema()},
        },
    )
    return r.choices[0].message.content


@pytest.mark.parametrize("fault", ["truncated_json", "prose"])
def test_malformed_json_content_does_not_parse(fault: str) -> None:
    with SimServer(_scheduled(fault)) as srv:
        with pytest.raises(json.JSONDecodeError):
            json.loads(_json_schema_content(srv))
        判定.model_validate_json(_json_schema_content(srv))  # the next answer is fine


def test_wrong_types_parse_as_json_but_fail_validation() -> None:
    with SimServer(_scheduled("wrong_types")) as srv:
        content = _json_schema_content(srv)
    assert isinstance(json.loads(content), dict)
    with pytest.raises(ValidationError):
        判定.model_validate_json(content)


def test_empty_content() -> None:
    with SimServer(_scheduled("empty_content")) as srv:
        assert _json_schema_content(srv) == ""


@pytest.mark.parametrize("fault", ["bad_tool_args", "truncated_json"])
def test_tool_call_with_invalid_json_arguments(fault: str) -> None:
    tools = [{"type": "function", "function": {"name": "判定", "parameters": 判定.model_json_schema()}}]
    with SimServer(_scheduled(fault)) as srv:
        r = _client(srv).chat.completions.create(
            model="m", messages=_ask(), tools=tools, tool_choice="required"
        )
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.tool_calls[0].function.arguments)


def test_langchain_surfaces_malformed_tool_arguments() -> None:
    with SimServer(_scheduled("bad_tool_args")) as srv:
        llm = _chat_model(srv).with_structured_output(判定, method="function_calling", include_raw=True)
        out = llm.invoke("判定")
    # langchain moves unparsable arguments to `invalid_tool_calls`, so nothing gets parsed.
    assert out["parsed"] is None
    assert [c["name"] for c in out["raw"].invalid_tool_calls] == ["判定"]


def test_schedule_by_kind_and_skip() -> None:
    config = SimConfig(schedule=(Scheduled(fault="500", kind="json_schema", first=2, skip=1),))
    with SimServer(config) as srv:
        client = _client(srv)
        client.chat.completions.create(model="m", messages=_ask())  # chat: not matched
        _json_schema_content(srv)  # json_schema #1: skipped
        for _ in range(2):
            with pytest.raises(openai.InternalServerError):
                _json_schema_content(srv)
        _json_schema_content(srv)  # #4: past the window
        assert [r.outcome for r in srv.stats().records] == ["ok", "ok", "500", "500", "ok"]


def test_content_faults_wait_for_a_kind_they_apply_to() -> None:
    tools = [{"type": "function", "function": {"name": "判定", "parameters": 判定.model_json_schema()}}]
    with SimServer(_scheduled("bad_tool_args")) as srv:
        client = _client(srv)
        assert _has_cjk(client.chat.completions.create(model="m", messages=_ask()).choices[0].message.content)
        判定.model_validate_json(_json_schema_content(srv))
        r = client.chat.completions.create(model="m", messages=_ask(), tools=tools, tool_choice="required")
        assert [rec.outcome for rec in srv.stats().records] == ["ok", "ok", "bad_tool_args"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.tool_calls[0].function.arguments)


def test_sdk_retries_are_counted_per_fingerprint() -> None:
    # The first two attempts of every distinct request are rate limited: the SDK's own retries succeed.
    config = SimConfig(schedule=(Scheduled(fault="429", first=2, per_fingerprint=True),), retry_after=0.01)
    with SimServer(config) as srv:
        client = _client(srv, max_retries=2)
        for question in ("问题一", "问题二"):
            client.chat.completions.create(model="m", messages=_ask(question))
        stats = srv.stats()
    assert stats.total == 6
    assert stats.by_outcome == {"429": 4, "ok": 2}
    for question in ("问题一", "问题二"):
        fp = fingerprint(_ask(question), "")
        assert stats.by_fingerprint[fp] == 3
        assert stats.outcomes_for(fp) == ["429", "429", "ok"]


def test_fault_rates_are_deterministic_and_match_client_observations() -> None:
    def run() -> tuple[list[str], dict[str, int]]:
        seen = []
        with SimServer(SimConfig(faults={"500": 0.3, "empty_content": 0.2}, seed=11)) as srv:
            client = _client(srv)
            for i in range(40):
                try:
                    r = client.chat.completions.create(model="m", messages=_ask(f"问题{i}"))
                    seen.append("empty" if r.choices[0].message.content == "" else "ok")
                except openai.InternalServerError:
                    seen.append("500")
            return seen, dict(srv.stats().by_outcome)

    first, counts = run()
    assert run() == (first, counts)
    assert counts == {
        "500": first.count("500"),
        "empty_content": first.count("empty"),
        "ok": first.count("ok"),
    }
    assert 4 <= counts["500"] <= 20 and 1 <= counts["empty_content"] <= 16


def test_concurrency_limit_answers_429_over_capacity() -> None:
    config = SimConfig(max_concurrency=2, latency=Latency(mean=0.5))
    with SimServer(config) as srv:
        client = _client(srv)
        results: list[str] = []
        lock = threading.Lock()

        def call() -> None:
            try:
                client.chat.completions.create(model="m", messages=_ask())
                outcome = "ok"
            except openai.RateLimitError as exc:
                outcome = exc.body["code"]
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = srv.stats()
    assert results.count("ok") == 2 and results.count("over_capacity") == 4
    assert stats.by_outcome == {"ok": 2, "over_capacity": 4}
    assert stats.peak_inflight == 2


# --- latency, counters, lifecycle ---------------------------------------------------------------


def test_latency_and_per_token_delay_are_applied() -> None:
    config = SimConfig(latency=Latency(mean=0.2), seconds_per_token=0.002)
    with SimServer(config) as srv:
        started = time.monotonic()
        r = _client(srv).chat.completions.create(model="m", messages=_ask())
        elapsed = time.monotonic() - started
    assert elapsed >= 0.2 + 0.002 * r.usage.completion_tokens


@pytest.mark.parametrize(
    "latency", [Latency("constant", 0.3), Latency("uniform", 0.3), Latency("lognormal", 0.3, sigma=0.8)]
)
def test_latency_distributions_have_the_requested_mean(latency: Latency) -> None:
    rng = random.Random(0)
    samples = [latency.sample(rng) for _ in range(20000)]
    assert min(samples) >= 0
    assert sum(samples) / len(samples) == pytest.approx(0.3, rel=0.05)


def test_invalid_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        SimConfig(faults={"418": 0.1})
    with pytest.raises(ValueError, match="sum to <= 1"):
        SimConfig(faults={"429": 0.6, "500": 0.6})
    with pytest.raises(ValueError, match="unknown request kind"):
        Scheduled(fault="429", kind="embeddings")


def test_stats_endpoint_and_reset() -> None:
    with SimServer() as srv:
        _client(srv).chat.completions.create(model="m", messages=_ask())
        _json_schema_content(srv)
        stats = _http().get(srv.base_url.removesuffix("/v1") + "/_stats").json()
        assert stats["total"] == 2
        assert stats["by_kind"] == {"chat": 1, "json_schema": 1}
        assert sorted(stats["by_fingerprint"]) == sorted(
            [fingerprint(_ask(), ""), fingerprint(_ask(), "判定")]
        )
        _http().post(srv.base_url.removesuffix("/v1") + "/_reset")
        assert srv.stats().total == 0 and not srv.stats().by_fingerprint


def test_same_request_gets_the_same_answer() -> None:
    with SimServer() as srv:
        a, b = _json_schema_content(srv), _json_schema_content(srv)
        assert a == b
        assert srv.stats().by_fingerprint == {fingerprint(_ask(), "判定"): 2}


def test_shutdown_closes_the_port_and_the_thread() -> None:
    srv = SimServer()
    with srv:
        port = srv.port
        assert port > 0
        _client(srv).chat.completions.create(model="m", messages=_ask())
        thread = srv._thread
    assert thread is not None and not thread.is_alive()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_stop_does_not_wait_for_held_requests() -> None:
    srv = SimServer(_scheduled("timeout", timeout_hold=60)).start()
    payload = json.dumps({"model": "m", "messages": _ask()}).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )
        _wait_for(lambda: srv.stats().inflight == 1)
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 5
        assert sock.recv(100) == b""  # closed without an answer


def test_cli_serves_until_terminated() -> None:
    script = REPO / "tests" / "support" / "simserver.py"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--latency",
            "0.01",
            "--schedule",
            "any:503:1",
            "--model",
            "甲",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("simserver listening on http://127.0.0.1:"), line
        base_url = line.split()[-1]
        client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0, http_client=_http())
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="甲", messages=_ask())
        assert _has_cjk(
            client.chat.completions.create(model="甲", messages=_ask()).choices[0].message.content
        )
        assert _http().get(base_url.removesuffix("/v1") + "/_stats").json()["by_outcome"] == {
            "503": 1,
            "ok": 1,
        }
    finally:
        proc.terminate()
        rc = proc.wait(timeout=10)
    assert rc == 0  # SIGTERM shuts down cleanly


def test_cli_rejects_bad_arguments() -> None:
    script = REPO / "tests" / "support" / "simserver.py"
    done = subprocess.run(
        [sys.executable, str(script), "--fault", "teapot=0.1"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "unknown faults" in done.stderr


def _wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_type_adapter_for_top_level_arrays() -> None:
    schema = TypeAdapter(list[条款]).json_schema()
    for seed in range(20):
        TypeAdapter(list[条款]).validate_python(generate(schema, random.Random(seed)))
