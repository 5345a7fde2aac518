"""A simulated OpenAI-compatible chat endpoint for throughput and fault tests.

Why: the LLM layer, graphs and CLI must be tested against a real HTTP endpoint — retries, timeouts,
concurrency limits and malformed outputs are behaviours of the wire, not of a fake chat model — yet
unit tests may not reach a real model. This server speaks `POST /v1/chat/completions` (plain chat,
`response_format` json_schema / json_object, `tools` + `tool_choice`, optional SSE streaming) and
`GET /v1/models`, answers with schema-valid Chinese content, and injects faults by rate or by a
deterministic schedule. Every request is counted by outcome, kind and fingerprint (`GET /_stats`,
`SimServer.stats()`), so tests can assert what was or was not repeated, and the time-weighted number
of requests in flight is kept (`Stats.load`), so throughput benchmarks can read steady state.
Properties named like the parts of a MedES item (speaker, situation, plan, question, reference,
stem) get plausible clinical text (`scenario_text`), so generated drafts pass medes' gates.

The HTTP layer is a lean asyncio.Protocol (HTTP/1.1, keep-alive, Content-Length bodies): it has to
sustain hundreds of requests per second on a small shared CPU while the client under test runs.

In tests::

    with SimServer(SimConfig(faults={"429": 0.1})) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sim")
        ...
        assert srv.stats().by_outcome["429"] > 0

From a shell: ``python tests/support/simserver.py --port 8099 --latency 0.2 --fault 429=0.05``.

Request kinds: chat, json_schema, json_object (the schema, if any, is read from a JSON schema
written in the prompt), tools. Faults: 429 (with Retry-After), 500/502/503, timeout (held past the
client's timeout), drop (socket closed without an answer), and the content faults truncated_json,
prose, wrong_types, empty_content, bad_tool_args. Over `max_concurrency` the answer is 429 with
outcome `over_capacity`. The fingerprint is a hash of the messages and the schema name (json_schema
name, tool name, "json_object" or ""), so the same question asked again — by a retry, or by a
fallback from json_schema to function_calling under the same name — counts as a repeat. Answers are
deterministic per fingerprint, config seed and request `seed`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.support` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.schemagen import (  # noqa: E402
    SchemaError,
    chinese_answer,
    corrupt_types,
    count_tokens,
    find_embedded_schema,
    generate,
)

KINDS = ("chat", "json_schema", "json_object", "tools")
HTTP_FAULTS = ("429", "500", "502", "503", "timeout", "drop")
CONTENT_FAULTS = ("truncated_json", "prose", "wrong_types", "empty_content", "bad_tool_args")
FAULTS = HTTP_FAULTS + CONTENT_FAULTS
# Content faults only make sense for some request kinds; a rate-drawn fault that does not apply to
# the request's kind is not injected (the request is answered normally and counted "ok").
_APPLIES = {
    "chat": {"empty_content"},
    "json_schema": {"truncated_json", "prose", "wrong_types", "empty_content"},
    "json_object": {"truncated_json", "prose", "wrong_types", "empty_content"},
    "tools": {"truncated_json", "prose", "wrong_types", "empty_content", "bad_tool_args"},
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_MAX_HEAD = 64 * 1024
_MAX_BODY = 32 * 1024 * 1024
_MAX_RECORDS = 200_000


@dataclass(frozen=True)
class Latency:
    """Time to answer before tokens: `constant` (= mean), `uniform` in [low, high] (default
    [0, 2·mean]), or `lognormal` with the given mean and log-space sigma (a heavy right tail)."""

    dist: str = "constant"
    mean: float = 0.0
    low: float | None = None
    high: float | None = None
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.dist not in ("constant", "uniform", "lognormal"):
            raise ValueError(f"latency dist must be constant, uniform or lognormal, got {self.dist!r}")
        if self.mean < 0:
            raise ValueError("latency mean must be >= 0")

    def sample(self, rng: random.Random) -> float:
        if self.dist == "constant" or self.mean == 0 and self.dist == "lognormal":
            return self.mean
        if self.dist == "uniform":
            low = 0.0 if self.low is None else self.low
            high = 2 * self.mean if self.high is None else self.high
            return rng.uniform(low, high)
        mu = math.log(self.mean) - self.sigma**2 / 2  # so that E[X] = mean
        return rng.lognormvariate(mu, self.sigma)


@dataclass(frozen=True)
class Scheduled:
    """A deterministic fault: requests number `skip+1 … skip+first` of `kind` get `fault`.

    Every schedule entry counts the requests of its kind independently — only those its fault can
    apply to (a content fault skips kinds it does not fit, see `_APPLIES`; over-capacity rejections are
    not counted); the first entry whose window holds a request decides. With `per_fingerprint` the
    count runs per distinct request, e.g. "the first attempt of every request gets 429".
    """

    fault: str
    first: int = 1
    kind: str = "any"
    skip: int = 0
    per_fingerprint: bool = False

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; known: {', '.join(FAULTS)}")
        if self.kind != "any" and self.kind not in KINDS:
            raise ValueError(f"unknown request kind {self.kind!r}; known: any, {', '.join(KINDS)}")


@dataclass(frozen=True)
class SimConfig:
    """What the simulated endpoint does. Defaults: instant, unlimited, no faults."""

    latency: Latency = field(default_factory=Latency)
    seconds_per_token: float = 0.0
    """Added latency per completion token (decode speed)."""
    max_concurrency: int | None = None
    """Chat requests in flight above this are answered 429 at once (outcome `over_capacity`)."""
    faults: dict[str, float] = field(default_factory=dict)
    """Fault name → probability per chat request (drawn from a per-request seeded RNG)."""
    schedule: tuple[Scheduled, ...] = ()
    retry_after: float = 1.0
    """Seconds advertised in Retry-After / retry-after-ms on 429 answers."""
    timeout_hold: float = 300.0
    """How long a `timeout` fault holds the request (longer than any client timeout) before answering."""
    seed: int = 0
    models: tuple[str, ...] = ("sim-model",)
    record_requests: bool = True
    """Keep one `RequestRecord` per chat request (capped) for detailed assertions."""

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if any(r < 0 for r in self.faults.values()) or sum(self.faults.values()) > 1:
            raise ValueError(f"fault rates must be >= 0 and sum to <= 1, got {self.faults}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1 or None")


@dataclass(frozen=True)
class RequestRecord:
    """One chat request as the server saw it."""

    seq: int
    kind: str
    fingerprint: str
    schema_name: str
    outcome: str
    model: str
    stream: bool


@dataclass(frozen=True)
class Stats:
    """A consistent snapshot of the counters."""

    total: int
    """Valid chat-completion requests received (malformed ones count only as outcome `bad_request`;
    every HTTP request, whatever its path, is in `by_path`)."""
    by_outcome: Counter[str]
    by_kind: Counter[str]
    by_fingerprint: Counter[str]
    by_path: Counter[str]
    inflight: int
    peak_inflight: int
    disconnects: int
    """Connections the client closed while a request was in progress (e.g. client timeouts)."""
    records: tuple[RequestRecord, ...]
    load: Load = field(default_factory=lambda: Load())
    """Time-weighted in-flight requests (throughput benchmarks: Little's law)."""

    def outcomes_for(self, fingerprint: str) -> list[str]:
        """Outcomes, in order, of every request with this fingerprint (needs `record_requests`)."""
        return [r.outcome for r in self.records if r.fingerprint == fingerprint]

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_outcome": dict(self.by_outcome),
            "by_kind": dict(self.by_kind),
            "by_fingerprint": dict(self.by_fingerprint),
            "by_path": dict(self.by_path),
            "inflight": self.inflight,
            "peak_inflight": self.peak_inflight,
            "disconnects": self.disconnects,
            "load": self.load.to_json(),
        }


@dataclass(frozen=True)
class Load:
    """How busy the endpoint was: the integral of in-flight requests over time, in two windows.

    Why: a finite batch starts with a ramp-up and ends with a ramp-down in which fewer than C
    requests can be in flight (the last threads finish one by one), so end-to-end calls/s ÷ (C/L)
    understates a client that keeps C requests in flight while there is work. The *steady* window
    runs from the first answered request (the first wave is out) to the last arrival (after it,
    nothing new can start): mean in-flight there ÷ C is the client's steady-state efficiency
    (Little's law: throughput = in-flight / latency).
    """

    busy_s: float = 0.0
    """From the first arrival to the last answer (so far)."""
    mean_inflight: float = 0.0
    """Time-weighted mean in-flight requests over `busy_s`."""
    steady_s: float = 0.0
    """From the first answer to the last arrival (0 when the last arrival came before it)."""
    steady_mean_inflight: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


def fingerprint(messages: Any, schema_name: str) -> str:
    """Identity of a request for repeat detection: hash of the messages and the schema name."""
    blob = json.dumps([messages, schema_name], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class _Request:
    """A parsed chat-completions request: what to produce and how the fingerprint is formed."""

    body: dict[str, Any]
    kind: str
    schema_name: str
    schema: dict[str, Any] | None
    tool_name: str | None
    fingerprint: str
    model: str
    stream: bool


class BadRequest(ValueError):
    """The request is not a valid chat-completions request (answered 400)."""


def parse_request(body: dict[str, Any]) -> _Request:
    """Classify a chat-completions body into a kind with its schema (raises BadRequest)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string")
    rf = body.get("response_format") or {}
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    forced = choice == "required" or isinstance(choice, dict)
    kind, name, schema, tool_name = "chat", "", None, None
    if tools and choice != "none" and (forced or rf.get("type") not in ("json_schema", "json_object")):
        kind = "tools"
        tool = tools[0]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            matches = [t for t in tools if (t.get("function") or {}).get("name") == wanted]
            if not matches:
                raise BadRequest(f"tool_choice names {wanted!r}, which is not among the tools")
            tool = matches[0]
        fn = tool.get("function") or {}
        tool_name = fn.get("name")
        if not tool_name:
            raise BadRequest("every tool needs function.name")
        name = tool_name
        schema = fn.get("parameters") or {"type": "object", "properties": {}}
    elif rf.get("type") == "json_schema":
        js = rf.get("json_schema") or {}
        if not isinstance(js.get("schema", {}), dict) or not js.get("name"):
            raise BadRequest("response_format.json_schema needs 'name' and an object 'schema'")
        kind, name, schema = "json_schema", js["name"], js.get("schema", {})
    elif rf.get("type") == "json_object":
        kind, name = "json_object", "json_object"
        schema = find_embedded_schema(_texts(messages))
    elif rf and rf.get("type") != "text":
        raise BadRequest(f"unsupported response_format type {rf.get('type')!r}")
    return _Request(
        body=body,
        kind=kind,
        schema_name=name,
        schema=schema,
        tool_name=tool_name,
        fingerprint=fingerprint(messages, name),
        model=model,
        stream=bool(body.get("stream")),
    )


def _texts(messages: list[Any]) -> list[str]:
    out: list[str] = []
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return out


@dataclass
class _Choice:
    content: str | None
    tool_args: str | None
    finish_reason: str
    completion_tokens: int


class _Sim:
    """The endpoint's behaviour, independent of HTTP: decide faults, build answers, count."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.reset()

    def reset(self, config: SimConfig | None = None) -> None:
        """Zero the counters and restart the schedules (optionally under a new config)."""
        with self.lock:
            if config is not None:
                self.config = config
            self.total = 0
            self.by_outcome: Counter[str] = Counter()
            self.by_kind: Counter[str] = Counter()
            self.by_fingerprint: Counter[str] = Counter()
            self.by_path: Counter[str] = Counter()
            self.inflight = 0
            self.peak_inflight = 0
            self.disconnects = 0
            self.records: list[RequestRecord] = []
            self._area = 0.0  # ∫ inflight dt since the first arrival
            self._changed: float | None = None  # when inflight last changed (None: no request yet)
            self._first_arrival = self._first_done = self._last_arrival = self._last_done = 0.0
            self._area_first_done: float | None = None
            self._area_last_arrival = self._area_last_done = 0.0
            self.schedule_seen: list[Counter[str]] = [Counter() for _ in self.config.schedule]

    def snapshot(self) -> Stats:
        with self.lock:
            return Stats(
                total=self.total,
                by_outcome=Counter(self.by_outcome),
                by_kind=Counter(self.by_kind),
                by_fingerprint=Counter(self.by_fingerprint),
                by_path=Counter(self.by_path),
                inflight=self.inflight,
                peak_inflight=self.peak_inflight,
                disconnects=self.disconnects,
                records=tuple(self.records),
                load=self._load(),
            )

    def _integrate(self) -> float:
        """Advance ∫ inflight dt to now (call under the lock, before inflight changes)."""
        now = time.monotonic()
        if self._changed is None:
            self._first_arrival = now
        else:
            self._area += self.inflight * (now - self._changed)
        self._changed = now
        return now

    def _load(self) -> Load:
        if self._changed is None:
            return Load()
        busy = self._last_done - self._first_arrival
        mean = self._area_last_done / busy if busy > 0 else 0.0
        steady = self._last_arrival - self._first_done
        if self._area_first_done is None or steady <= 0:
            return Load(busy, mean)
        return Load(busy, mean, steady, (self._area_last_arrival - self._area_first_done) / steady)

    def admit(self, req: _Request) -> tuple[int, str]:
        """Count the request and decide its outcome: 'over_capacity', a fault name, or 'ok'."""
        cfg = self.config
        with self.lock:
            self.total += 1
            seq = self.total
            self.by_kind[req.kind] += 1
            self.by_fingerprint[req.fingerprint] += 1
            if cfg.max_concurrency is not None and self.inflight >= cfg.max_concurrency:
                outcome = "over_capacity"
            else:
                outcome = self._scheduled(req) or self._drawn(seq, req) or "ok"
                self._last_arrival = self._integrate()
                self.inflight += 1
                self._area_last_arrival = self._area
                self.peak_inflight = max(self.peak_inflight, self.inflight)
            self.by_outcome[outcome] += 1
            if cfg.record_requests and len(self.records) < _MAX_RECORDS:
                self.records.append(
                    RequestRecord(
                        seq, req.kind, req.fingerprint, req.schema_name, outcome, req.model, req.stream
                    )
                )
        return seq, outcome

    def release(self) -> None:
        with self.lock:
            now = self._integrate()
            self.inflight -= 1
            if self._area_first_done is None:
                self._first_done, self._area_first_done = now, self._area
            self._last_done, self._area_last_done = now, self._area

    def _scheduled(self, req: _Request) -> str | None:
        decided = None
        for entry, seen in zip(self.config.schedule, self.schedule_seen, strict=True):
            if entry.kind not in ("any", req.kind):
                continue
            if entry.fault in CONTENT_FAULTS and entry.fault not in _APPLIES[req.kind]:
                continue  # e.g. bad_tool_args waits for a tools request
            key = req.fingerprint if entry.per_fingerprint else ""
            seen[key] += 1
            if decided is None and entry.skip < seen[key] <= entry.skip + entry.first:
                decided = entry.fault
        return decided

    def _drawn(self, seq: int, req: _Request) -> str | None:
        if not self.config.faults:
            return None
        x = random.Random(_mix(1, self.config.seed, seq)).random()
        for name, rate in self.config.faults.items():
            if x < rate:
                return name if name in HTTP_FAULTS or name in _APPLIES[req.kind] else None
            x -= rate
        return None

    def content_rng(self, req: _Request, index: int) -> random.Random:
        """Same request (messages + schema + seed) → same answer, so repeats are recognisable."""
        seed = req.body.get("seed")
        return random.Random(
            _mix(2, self.config.seed, seed if isinstance(seed, int) else 0, int(req.fingerprint, 16), index)
        )

    def build_choice(self, req: _Request, outcome: str, index: int) -> _Choice:
        rng = self.content_rng(req, index)
        content: str | None = None
        args: str | None = None
        if req.kind == "chat":
            content = "" if outcome == "empty_content" else chinese_answer(rng)
        else:
            value = generate(req.schema, rng) if req.schema is not None else {"回答": chinese_answer(rng, 2)}
            if outcome == "wrong_types":
                value = corrupt_types(value)
            text = json.dumps(value, ensure_ascii=False)
            if outcome == "truncated_json":
                text = text[: max(1, len(text) // 2)]
            elif outcome == "bad_tool_args":
                text = "{'参数': " + text[:20] + ", 未完"  # python-ish, unbalanced: not JSON
            if req.kind == "tools" and outcome not in ("prose", "empty_content"):
                args = text
            elif outcome == "prose":
                content = "好的，我理解您的问题。" + chinese_answer(rng, 2)
            elif outcome == "empty_content":
                content = ""
            else:
                content = text
        produced = (content or "") + (args or "")
        tokens = count_tokens(produced)
        finish = "tool_calls" if args is not None else "stop"
        limit = req.body.get("max_completion_tokens") or req.body.get("max_tokens")
        if isinstance(limit, int) and tokens > limit:
            # Like a real model: stop at the budget and say so.
            keep = max(0, int(len(produced) * limit / tokens))
            if args is not None:
                args = args[:keep]
            else:
                content = (content or "")[:keep]
            tokens, finish = limit, "length"
        return _Choice(content, args, finish, tokens)

    def latency(self, seq: int) -> float:
        return self.config.latency.sample(random.Random(_mix(3, self.config.seed, seq)))


def _mix(*parts: int) -> int:
    """One integer seed from several (cheap; string seeds cost a SHA-512 per request)."""
    out = 0
    for part in parts:
        out = (out << 64) | (part & 0xFFFFFFFFFFFFFFFF)
    return out


def _prompt_tokens(messages: list[Any]) -> int:
    return sum(4 + count_tokens(t) for t in _texts(messages)) + 3


def _completion(req: _Request, seq: int, choices: list[_Choice]) -> dict[str, Any]:
    prompt = _prompt_tokens(req.body["messages"])
    completion = sum(c.completion_tokens for c in choices)
    return {
        "id": f"chatcmpl-sim{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": "simserver",
        "choices": [
            {
                "index": i,
                "message": _message(req, seq, i, c),
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for i, c in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _message(req: _Request, seq: int, index: int, c: _Choice) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None}
    if c.tool_args is not None:
        msg["tool_calls"] = [
            {
                "id": f"call_sim{seq}_{index}",
                "type": "function",
                "function": {"name": req.tool_name, "arguments": c.tool_args},
            }
        ]
    return msg


def _error_body(status: int, message: str, code: str) -> bytes:
    kind = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}.get(
        status, "server_error"
    )
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; requests are handled one at a time, in order."""

    def __init__(self, server: _Loop) -> None:
        self.server = server
        self.sim = server.sim
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.conns.discard(self)
        if self.task is not None and not self.task.done():
            with self.sim.lock:
                self.sim.disconnects += 1
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        while not self.busy and not self.closed:
            parsed = self.parse()
            if parsed is None:
                return
            method, path, body, keep_alive = parsed
            path = path.split("?", 1)[0]
            with self.sim.lock:
                self.sim.by_path[f"{method} {path}"] += 1
            if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(self.chat(body, keep_alive))
            elif method == "GET" and path in ("/v1/models", "/models"):
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "simserver"}
                    for m in self.sim.config.models
                ]
                self.send(200, json.dumps({"object": "list", "data": data}).encode(), keep_alive)
            elif method == "GET" and path == "/_stats":
                self.send(
                    200, json.dumps(self.sim.snapshot().to_json(), ensure_ascii=False).encode(), keep_alive
                )
            elif method == "POST" and path == "/_reset":
                self.sim.reset()
                self.send(200, b'{"reset": true}', keep_alive)
            else:
                self.send(404, _error_body(404, f"no route {method} {path}", "not_found"), keep_alive)

    def parse(self) -> tuple[str, str, bytes, bool] | None:
        """The next complete request in the buffer, or None while it is incomplete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > _MAX_HEAD:
                self.fail(413, "request head too large")
            return None
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self.fail(400, f"bad request line {lines[0][:80]!r}")
            return None
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.fail(411, "chunked request bodies are not supported; send Content-Length")
            return None
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY:
            self.fail(413, "request body too large")
            return None
        total = end + 4 + length
        if len(self.buf) < total:
            return None
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        conn = headers.get("connection", "").lower()
        keep_alive = conn != "close" if version == "HTTP/1.1" else conn == "keep-alive"
        return method, target, body, keep_alive

    def fail(self, status: int, message: str) -> None:
        self.send(status, _error_body(status, message, "bad_http"), keep_alive=False)

    def send(self, status: int, body: bytes, keep_alive: bool, headers: str = "") -> None:
        if self.closed or self.transport is None:
            return
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{headers}connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if not keep_alive:
            self.closed = True
            self.transport.close()

    async def chat(self, raw: bytes, keep_alive: bool) -> None:
        try:
            await self.answer(raw, keep_alive)
        except asyncio.CancelledError:
            pass  # the client went away (or the server is stopping): nothing left to answer
        finally:
            self.busy = False
            self.task = None
        if not self.closed:
            self.next_request()

    async def answer(self, raw: bytes, keep_alive: bool) -> None:
        sim = self.sim
        arrived = asyncio.get_running_loop().time()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise BadRequest("request body must be a JSON object")
            req = parse_request(body)
        except (ValueError, BadRequest) as exc:  # JSONDecodeError is a ValueError
            with sim.lock:
                sim.by_outcome["bad_request"] += 1
            self.send(400, _error_body(400, str(exc), "invalid_request"), keep_alive)
            return
        seq, outcome = sim.admit(req)
        cfg = sim.config
        if outcome in ("over_capacity", "429"):
            retry = f"retry-after: {math.ceil(cfg.retry_after)}\r\nretry-after-ms: {int(cfg.retry_after * 1000)}\r\n"
            message = (
                "too many concurrent requests" if outcome == "over_capacity" else "rate limited (injected)"
            )
            self.send(429, _error_body(429, message, outcome), keep_alive, retry)
            if outcome == "429":
                sim.release()
            return
        try:
            await self.serve(req, seq, outcome, keep_alive, arrived)
        finally:
            sim.release()

    async def serve(
        self, req: _Request, seq: int, outcome: str, keep_alive: bool, arrived: float | None = None
    ) -> None:
        """Answer after the configured latency, counted from the request's arrival: the time spent
        parsing it and building the answer is part of that latency, as on a real server. (Sleeping
        the whole latency after that work let a burst of C simultaneous requests queue behind one
        another's schema generation and added ~0.7 s per wave at C = 64.)"""
        sim, cfg = self.sim, self.sim.config
        if outcome in ("500", "502", "503"):
            self.send(
                int(outcome), _error_body(int(outcome), f"injected {outcome}", "server_error"), keep_alive
            )
            return
        delay = sim.latency(seq)
        if outcome == "drop":
            await asyncio.sleep(delay)
            if self.transport is not None:
                self.closed = True
                self.transport.abort()
            return
        if outcome == "timeout":
            await asyncio.sleep(cfg.timeout_hold)
        n = req.body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 16:
            self.send(
                400, _error_body(400, "'n' must be an integer in [1, 16]", "invalid_request"), keep_alive
            )
            return
        try:
            choices = [sim.build_choice(req, outcome, i) for i in range(n)]
        except SchemaError as exc:
            self.send(400, _error_body(400, f"cannot satisfy schema: {exc}", "invalid_schema"), keep_alive)
            return
        if req.stream:
            await self.stream(req, seq, choices, delay, keep_alive)
            return
        delay += cfg.seconds_per_token * sum(c.completion_tokens for c in choices)
        if arrived is not None:
            delay -= asyncio.get_running_loop().time() - arrived
        if delay > 0:
            await asyncio.sleep(delay)
        self.send(200, json.dumps(_completion(req, seq, choices), ensure_ascii=False).encode(), keep_alive)

    async def stream(
        self, req: _Request, seq: int, choices: list[_Choice], delay: float, keep_alive: bool
    ) -> None:
        """Server-sent events, as the OpenAI API streams: deltas, a finish chunk, [DONE]."""
        cfg = self.sim.config
        if delay > 0:
            await asyncio.sleep(delay)
        if self.closed or self.transport is None:
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nconnection: "
            + (b"keep-alive" if keep_alive else b"close")
            + b"\r\n\r\n"
        )
        base = {
            "id": f"chatcmpl-sim{seq}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.model,
        }

        def event(choices_: list[dict[str, Any]], **extra: Any) -> None:
            data = json.dumps({**base, "choices": choices_, **extra}, ensure_ascii=False)
            payload = f"data: {data}\n\n".encode()
            self.transport.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")  # type: ignore[union-attr]

        for i, c in enumerate(choices):
            event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            text = c.tool_args if c.tool_args is not None else (c.content or "")
            for k, start in enumerate(range(0, len(text), 8)):
                piece = text[start : start + 8]
                if cfg.seconds_per_token:
                    await asyncio.sleep(cfg.seconds_per_token * count_tokens(piece))
                if self.closed:
                    return
                if c.tool_args is not None:
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                    if k == 0:
                        call.update(id=f"call_sim{seq}_{i}", type="function")
                        call["function"]["name"] = req.tool_name
                    delta: dict[str, Any] = {"tool_calls": [call]}
                else:
                    delta = {"content": piece}
                event([{"index": i, "delta": delta, "finish_reason": None}])
            event([{"index": i, "delta": {}, "finish_reason": c.finish_reason}])
        if (req.body.get("stream_options") or {}).get("include_usage"):
            prompt = _prompt_tokens(req.body["messages"])
            completion = sum(c.completion_tokens for c in choices)
            event(
                [],
                usage={
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            )
        payload = b"data: [DONE]\n\n"
        self.transport.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n")
        if not keep_alive:
            self.closed = True
            self.transport.close()


class _Loop:
    """The asyncio server: owns the listening socket and the open connections."""

    def __init__(self, sim: _Sim) -> None:
        self.sim = sim
        self.conns: set[_Conn] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Conn(self), host, port, backlog=2048, reuse_address=True
        )
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


class SimServer:
    """The simulated endpoint on 127.0.0.1, served from a background thread with its own event loop.

    Use as a context manager; `port=0` (the default) binds an ephemeral port.
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sim = _Sim(config or SimConfig())
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: _Loop | None = None

    @property
    def config(self) -> SimConfig:
        return self._sim.config

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as `base_url`."""
        return f"http://{self.host}:{self.port}/v1"

    def stats(self) -> Stats:
        return self._sim.snapshot()

    def reset(self) -> None:
        """Zero the counters and restart the schedules."""
        self._sim.reset()

    def reconfigure(self, config: SimConfig) -> None:
        """Swap the behaviour (counters and schedules restart)."""
        self._sim.reset(config)

    def start(self) -> SimServer:
        if self._thread is not None:
            raise RuntimeError("SimServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = _Loop(self._sim)
            try:
                self.port = loop.run_until_complete(self._server.start(self.host, self.port))
            except BaseException as exc:  # reported to the starting thread, then re-raised there
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._server.close())
                loop.close()

        self._thread = threading.Thread(target=run, name="simserver", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("SimServer thread did not stop within 10 s")
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run in the current event loop until cancelled (the CLI)."""
    server = _Loop(_Sim(config))
    bound = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (
        signal.SIGTERM,
        signal.SIGINT,
    ):  # also when started in the background, where SIGINT is ignored
        loop.add_signal_handler(sig, stop.set)
    print(f"simserver listening on http://{host}:{bound}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def _parse_schedule(text: str) -> Scheduled:
    """KIND:FAULT:N[:SKIP][:fp] — e.g. `json_schema:429:3`, `any:drop:1:5`, `any:429:1:0:fp`."""
    parts = text.split(":")
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(f"schedule {text!r}: expected KIND:FAULT:N[:SKIP][:fp]")
    kind, fault, first = parts[0], parts[1], int(parts[2])
    skip = int(parts[3]) if len(parts) > 3 and parts[3] else 0
    try:
        return Scheduled(fault=fault, first=first, kind=kind, skip=skip, per_fingerprint=parts[4:] == ["fp"])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parse_fault(text: str) -> tuple[str, float]:
    name, sep, rate = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"fault {text!r}: expected NAME=RATE, e.g. 429=0.05")
    return name, float(rate)


def config_from_args(argv: list[str] | None = None) -> tuple[SimConfig, str, int]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099, help="0 picks a free port (printed on start)")
    p.add_argument("--latency", type=float, default=0.0, help="mean seconds before the answer")
    p.add_argument("--latency-dist", choices=("constant", "uniform", "lognormal"), default="constant")
    p.add_argument("--latency-low", type=float, default=None)
    p.add_argument("--latency-high", type=float, default=None)
    p.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal sigma (log space)")
    p.add_argument("--per-token", type=float, default=0.0, help="added seconds per completion token")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        help=f"NAME=RATE; names: {', '.join(FAULTS)}",
    )
    p.add_argument(
        "--schedule", type=_parse_schedule, action="append", default=[], help="KIND:FAULT:N[:SKIP][:fp]"
    )
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--timeout-hold", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", action="append", default=[], help="model id listed by /v1/models (repeatable)")
    p.add_argument("--no-records", action="store_true", help="do not keep per-request records (long runs)")
    a = p.parse_args(argv)
    try:
        config = SimConfig(
            latency=Latency(a.latency_dist, a.latency, a.latency_low, a.latency_high, a.latency_sigma),
            seconds_per_token=a.per_token,
            max_concurrency=a.max_concurrency,
            faults=dict(a.fault),
            schedule=tuple(a.schedule),
            retry_after=a.retry_after,
            timeout_hold=a.timeout_hold,
            seed=a.seed,
            models=tuple(a.model) or ("sim-model",),
            record_requests=not a.no_records,
        )
    except ValueError as exc:
        p.error(str(exc))
    return config, a.host, a.port


def main(argv: list[str] | None = None) -> None:
    config, host, port = config_from_args(argv)
    asyncio.run(serve_forever(config, host, port))


if __name__ == "__main__":
    main()


__all__ = [
    "FAULTS",
    "KINDS",
    "BadRequest",
    "Latency",
    "RequestRecord",
    "Scheduled",
    "SimConfig",
    "SimServer",
    "Stats",
    "fingerprint",
    "parse_request",
]
