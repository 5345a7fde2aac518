"""Chat-model factory, structured-output strategy, retries, concurrency and the token ledger.

One spec string selects a model:
- `openai:<model>`   any OpenAI-compatible server (vLLM, Ollama, DeepSeek, DashScope, llama.cpp server);
                     base URL and key from settings (MEDES_OPENAI_BASE_URL / OPENAI_BASE_URL, …_API_KEY).
- `llamacpp:<path>`  a GGUF file run in-process with llama-cpp-python (extra `local`); JSON-schema grammar.
- `hf:<dir>[+<adapter>]` a local transformers model, optionally with a LoRA adapter (extra `train`), so
                     `medes evaluate --model hf:./base --model hf:./base+./adapter` compares base and tuned.
- `fake:<script>`    scripted model for tests only (see `medes.fake`); never chosen implicitly.

With no spec and nothing configured, the local default model (`medes models pull`) is used, and we say
so once. There is no silent fallback to fake output: if nothing is available the call fails loudly.

Every call goes through `LLM.structured` or `LLM.text`, which bound concurrency, retry transient
transport errors with backoff (honouring Retry-After), retry unparseable output with the parse error
fed back, and append one `LedgerEntry` per call (node, model, tokens, latency, attempts, outcome).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import BaseModel, SecretStr, ValidationError

from medes.settings import Settings, get_settings

Strategy = Literal["json_schema", "function_calling", "json_mode"]
STRATEGIES: tuple[str, ...] = ("json_schema", "function_calling", "json_mode")

DEFAULT_MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


class LLMConfigError(RuntimeError):
    """No usable model, or a malformed spec."""


class TransientLLMError(RuntimeError):
    """A retryable transport failure (429, 5xx, timeout, dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ModelSpec:
    provider: Literal["openai", "llamacpp", "hf", "fake"]
    model: str

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def default_strategy(self) -> Strategy:
        # llama.cpp's OpenAI server rejects json_schema (HTTP 500) while function calling works;
        # vLLM, Ollama, DeepSeek and DashScope accept tools too, so tools are the portable default.
        # a bare transformers model has neither tools nor a grammar: ask for JSON and parse it
        if self.provider == "hf":
            return "json_mode"
        return "json_schema" if self.provider == "llamacpp" else "function_calling"


def parse_spec(spec: str) -> ModelSpec:
    provider, sep, model = spec.partition(":")
    if not sep or not model or provider not in ("openai", "llamacpp", "hf", "fake"):
        raise LLMConfigError(
            f"bad model spec {spec!r}: expected openai:<model>, llamacpp:<path.gguf>, "
            "hf:<dir>[+<adapter dir>] or fake:<script>"
        )
    return ModelSpec(provider, model)  # type: ignore[arg-type]


_announced: set[str] = set()


def resolve_spec(spec: str | None, settings: Settings | None = None) -> ModelSpec:
    """Explicit spec, else MEDES_LLM, else the pulled local default model (announced once)."""
    settings = settings or get_settings()
    if spec:
        return parse_spec(spec)
    if settings.llm:
        return parse_spec(settings.llm)
    local = settings.resolved_model_dir() / DEFAULT_MODEL_FILE
    if local.is_file():
        if str(local) not in _announced:
            _announced.add(str(local))
            print(f"medes: no LLM configured; using the local default model {local}", file=sys.stderr)
        return ModelSpec("llamacpp", str(local))
    raise LLMConfigError(
        "no LLM configured: pass --llm openai:<model> (with MEDES_OPENAI_BASE_URL) or llamacpp:<file.gguf>, "
        "set MEDES_LLM, or run `medes models pull` to provision the local default model"
    )


# --------------------------------------------------------------------------------------------- models


def build_chat_model(spec: ModelSpec, settings: Settings | None = None, **params: Any) -> BaseChatModel:
    settings = settings or get_settings()
    if spec.provider == "openai":
        from medes.openai_chat import OpenAIChat

        base_url = settings.resolved_base_url()
        if not base_url:
            raise LLMConfigError(
                f"{spec.id}: set MEDES_OPENAI_BASE_URL (or OPENAI_BASE_URL) to the server's /v1 URL"
            )
        # retries happen in LLM._invoke so they are visible in the ledger; OpenAIChat never retries
        key = settings.resolved_api_key()
        return OpenAIChat(
            model=spec.model,
            base_url=base_url,
            api_key=SecretStr(key) if key else None,
            timeout=settings.request_timeout_s,
            **params,
        )
    if spec.provider == "llamacpp":
        return LlamaCppChat(model_path=spec.model, **params)
    if spec.provider == "hf":
        path, _, adapter = spec.model.partition("+")
        return HFChatModel(model_path=path, adapter=adapter or None, **params)
    from medes.fake import FakeChatModel

    return FakeChatModel.from_spec(spec.model)


_llama_cache: dict[tuple[str, int, int | None], Any] = {}
_llama_lock = threading.Lock()


def _load_llama(path: str, n_ctx: int, n_threads: int | None = None) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise LLMConfigError("llamacpp models need the `local` extra: pip install 'medes[local]'") from exc
    if not Path(path).is_file():
        raise LLMConfigError(f"GGUF model not found: {path} (run `medes models pull`)")
    key = (path, n_ctx, n_threads)
    with _llama_lock:
        if key not in _llama_cache:
            _llama_cache[key] = Llama(
                model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False, seed=0
            )
        return _llama_cache[key]


class LlamaCppChat(BaseChatModel):
    """In-process GGUF chat model. Structured output uses llama.cpp's JSON-schema grammar."""

    model_path: str
    n_ctx: int = 4096
    n_threads: int | None = None
    """None: llama.cpp's default (the physical cores)."""
    temperature: float = 0.7
    max_tokens: int = 768
    repeat_penalty: float = 1.1
    """For free text only: small models fall into loops that repeat a sentence to the token limit.
    Grammar-constrained JSON is left unpenalised (its braces and quotes repeat by design)."""

    @property
    def _llm_type(self) -> str:
        return "llamacpp"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        llama = _load_llama(self.model_path, self.n_ctx, self.n_threads)
        payload = [_to_openai_message(m) for m in messages]
        response_format = kwargs.get("response_format")
        with _llama_lock:  # one llama context is not re-entrant
            out = llama.create_chat_completion(
                messages=payload,
                temperature=kwargs.get("temperature", self.temperature),
                max_tokens=kwargs.get("max_tokens", self.max_tokens),
                response_format=response_format,
                repeat_penalty=1.0 if response_format else self.repeat_penalty,
                stop=stop,
            )
        text = out["choices"][0]["message"].get("content") or ""
        usage = out.get("usage") or {}
        msg = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
            },
            response_metadata={"finish_reason": out["choices"][0].get("finish_reason")},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


_hf_cache: dict[tuple[str, str | None], Any] = {}
_hf_lock = threading.Lock()


class HFChatModel(BaseChatModel):
    """A local transformers model (+ LoRA adapter) behind the chat-model interface, via `load_hf_chat`.

    Loaded on first use and cached per (model, adapter); greedy decoding, so base and adapter are
    compared on the same footing.
    """

    model_path: str
    adapter: str | None = None
    max_new_tokens: int | None = None
    """None: the loaded chat's own default (`HFChat.max_new_tokens`)."""

    @property
    def _llm_type(self) -> str:
        return "hf"

    def _chat(self) -> Any:
        key = (self.model_path, self.adapter)
        with _hf_lock:
            if key not in _hf_cache:
                from medes.alignment.train import load_hf_chat

                if self.adapter is not None and not Path(self.adapter).is_dir():
                    raise LLMConfigError(f"LoRA adapter directory not found: {self.adapter}")
                try:
                    _hf_cache[key] = load_hf_chat(self.model_path, self.adapter)
                except ImportError as exc:  # pragma: no cover - depends on the optional extra
                    raise LLMConfigError(
                        f"hf models need the `train` extra (pip install 'medes[train]'): {exc}"
                    ) from exc
                except OSError as exc:  # not a local model directory, nor a name in the HF cache
                    raise LLMConfigError(f"cannot load hf model {self.model_path}: {exc}") from exc
            return _hf_cache[key]

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        chat = self._chat()
        payload = [_to_openai_message(m) for m in messages]
        with _hf_lock:  # one torch model answers one request at a time
            limit = kwargs.get("max_tokens", self.max_new_tokens)
            text = chat.generate(payload, **({} if limit is None else {"max_new_tokens": limit}))
        tokenizer = getattr(chat, "tokenizer", None)
        n_in = n_out = 0
        if tokenizer is not None:
            prompt = tokenizer.apply_chat_template(payload, add_generation_prompt=True, tokenize=False)
            n_in = len(tokenizer(prompt)["input_ids"])
            n_out = len(tokenizer(text)["input_ids"])
        msg = AIMessage(
            content=text,
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


def _to_openai_message(m: BaseMessage) -> dict[str, str]:
    role = {"system": "system", "human": "user", "ai": "assistant"}.get(m.type, "user")
    return {"role": role, "content": m.content if isinstance(m.content, str) else json.dumps(m.content)}


# --------------------------------------------------------------------------------------------- ledger


@dataclass
class LedgerEntry:
    node: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    """Transport attempts plus parse retries; > 1 means backoff or re-asking happened."""
    transport_retries: int = 0
    parse_retries: int = 0
    outcome: Literal["ok", "parse_error", "error"] = "ok"
    error: str = ""
    run_id: str = ""
    ts: float = field(default_factory=time.time)


class TokenLedger:
    """Append-only record of every LLM call; an optional sink persists entries (e.g. to the store)."""

    def __init__(self, sink: Callable[[LedgerEntry], None] | None = None):
        self.entries: list[LedgerEntry] = []
        self._sink = sink
        self._lock = threading.Lock()

    def add(self, entry: LedgerEntry) -> None:
        with self._lock:
            self.entries.append(entry)
        if self._sink is not None:
            self._sink(entry)

    def summary(self) -> dict[str, Any]:
        by_node: dict[str, dict[str, float]] = {}
        for e in self.entries:
            row = by_node.setdefault(
                e.node,
                {
                    "calls": 0,
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "retries": 0,
                    "failures": 0,
                    "latency_s": 0.0,
                },
            )
            row["calls"] += 1
            row["prompt_tokens"] += e.prompt_tokens
            row["completion_tokens"] += e.completion_tokens
            row["retries"] += e.transport_retries + e.parse_retries
            row["failures"] += e.outcome != "ok"
            row["latency_s"] += e.latency_s
        total = {
            k: sum(r[k] for r in by_node.values())
            for k in ("calls", "prompt_tokens", "completion_tokens", "retries", "failures")
        }
        return {"total": total, "by_node": by_node}


# --------------------------------------------------------------------------------------------- calls


@dataclass
class StructuredResult:
    parsed: BaseModel | None
    raw: str
    error: str | None
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


EMPTY_ANSWER = "empty answer"
"""`TextResult.error` for a call that returned only whitespace: the model's answer, not a failure to reach it."""


@dataclass
class TextResult:
    text: str
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


def _classify_exception(exc: BaseException) -> TransientLLMError | None:
    """Map transport failures to retryable errors; anything else is a real bug and propagates.

    `OpenAIChat` raises `TransientLLMError` itself; the openai SDK's errors are mapped too, for a
    `ChatOpenAI` (or any SDK-based model) a caller passes in as `LLM(model=…)`.
    """
    if isinstance(exc, TransientLLMError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | ConnectionError):
        return TransientLLMError(type(exc).__name__)
    try:
        import openai
    except ImportError:  # the SDK is not a dependency of medes
        return None
    if isinstance(exc, openai.APIStatusError) and (exc.status_code == 429 or exc.status_code >= 500):
        retry_after = None
        header = exc.response.headers.get("retry-after") if exc.response is not None else None
        if header:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return TransientLLMError(f"HTTP {exc.status_code}", retry_after)
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return TransientLLMError(type(exc).__name__)
    return None


def _usage(msg: Any) -> tuple[int, int]:
    meta = getattr(msg, "usage_metadata", None) or {}
    return int(meta.get("input_tokens", 0) or 0), int(meta.get("output_tokens", 0) or 0)


def _raw_text(msg: Any) -> str:
    if msg is None:
        return ""
    calls = getattr(msg, "tool_calls", None) or []
    if calls:
        return json.dumps(calls[0].get("args", {}), ensure_ascii=False)
    invalid = getattr(msg, "invalid_tool_calls", None) or []
    if invalid:
        return str(invalid[0].get("args", ""))
    content = getattr(msg, "content", "")
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


PARSE_RETRY_PROMPT = (
    "上一次的输出无法解析为要求的 JSON 结构，错误：{error}\n"
    "请只输出一个符合要求结构的 JSON 对象，不要输出任何其他文字。"
)


class LLM:
    """A chat model plus the policies every call in medes goes through."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        settings: Settings | None = None,
        ledger: TokenLedger | None = None,
        strategy: Strategy | None = None,
        max_concurrency: int | None = None,
        parse_retries: int = 2,
        transport_retries: int | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        model: BaseChatModel | None = None,
        **params: Any,
    ):
        settings = settings or get_settings()
        self.spec = spec
        self.chat = model or build_chat_model(spec, settings, **params)
        self._loop_lock = threading.Lock()
        self.ledger = ledger or TokenLedger()
        forced = settings.structured_strategy or None
        self.strategy: Strategy = strategy or forced or spec.default_strategy  # type: ignore[assignment]
        if self.strategy not in STRATEGIES:
            raise LLMConfigError(
                f"unknown structured-output strategy {self.strategy!r}; use one of {STRATEGIES}"
            )
        limit = 1 if spec.provider in ("llamacpp", "hf") else (max_concurrency or settings.max_concurrency)
        self._limit = limit
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self.parse_retries = parse_retries
        self.transport_retries = settings.max_retries if transport_retries is None else transport_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s

    @property
    def id(self) -> str:
        return self.spec.id

    def _semaphore(self) -> asyncio.Semaphore:
        # one semaphore per event loop: a semaphore is bound to the loop it was first used on.
        # Keyed weakly by the loop itself, not id(): a dead loop's id can be reused by a new one.
        loop = asyncio.get_running_loop()
        with self._loop_lock:
            if loop not in self._semaphores:
                self._semaphores[loop] = asyncio.Semaphore(self._limit)
            return self._semaphores[loop]

    async def _invoke(self, runnable: Any, messages: Sequence[BaseMessage]) -> tuple[Any, int]:
        """Invoke with bounded concurrency and transport retries; returns (output, retries used)."""
        retries = 0
        while True:
            try:
                async with self._semaphore():
                    return await runnable.ainvoke(list(messages)), retries
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not transient
                transient = _classify_exception(exc)
                if transient is None or retries >= self.transport_retries:
                    raise
                delay = transient.retry_after
                if delay is None:
                    delay = min(self.backoff_max_s, self.backoff_base_s * 2**retries) * (
                        0.5 + random.random()
                    )
                retries += 1
                await asyncio.sleep(delay)

    def _runnable(self, schema: type[BaseModel]) -> Any:
        chat = self.chat
        if isinstance(chat, LlamaCppChat):
            return chat.bind(response_format={"type": "json_object", "schema": schema.model_json_schema()})
        if self.strategy == "json_mode":
            return chat.bind(response_format={"type": "json_object"})
        if self.strategy == "function_calling":
            # Bound directly rather than via with_structured_output, which regenerates the JSON
            # schema three times per call (~60% of our CPU per call, bench/throughput.py); the
            # tool-call arguments are parsed by `_parse` like any other raw output.
            tool = _openai_tool(schema)
            return chat.bind(
                tools=[tool],
                tool_choice={"type": "function", "function": {"name": tool["function"]["name"]}},
                parallel_tool_calls=False,
            )
        from medes.openai_chat import OpenAIChat  # here: medes.openai_chat imports this module

        if self.strategy == "json_schema" and isinstance(chat, OpenAIChat):
            # the server constrains the answer to the schema; `_parse` reads it like any raw output
            return chat.bind(response_format=_json_schema_format(schema))
        return chat.with_structured_output(schema, method=self.strategy, include_raw=True)

    async def structured(
        self,
        messages: Sequence[BaseMessage],
        schema: type[BaseModel],
        *,
        node: str,
        run_id: str = "",
    ) -> StructuredResult:
        """Ask for `schema`; on final failure return `parsed=None` with the raw output and the reason."""
        runnable = self._runnable(schema)
        convo = list(messages)
        if self.strategy == "json_mode" and not isinstance(self.chat, LlamaCppChat):
            convo = [*convo[:-1], _with_schema_hint(convo[-1], schema)]
        start = time.perf_counter()
        entry = LedgerEntry(node=node, model=self.id, run_id=run_id, attempts=0)
        raw, error, parsed = "", None, None
        try:
            for parse_try in range(self.parse_retries + 1):
                out, transport = await self._invoke(runnable, convo)
                entry.transport_retries += transport
                entry.attempts += 1 + transport
                msg = out["raw"] if isinstance(out, dict) else out
                p_in, p_out = _usage(msg)
                entry.prompt_tokens += p_in
                entry.completion_tokens += p_out
                raw = _raw_text(msg)
                parsed, error = _parse(out, raw, schema)
                if parsed is not None:
                    break
                if parse_try < self.parse_retries:
                    entry.parse_retries += 1
                    convo = [
                        *convo,
                        AIMessage(content=raw[:4000]),
                        HumanMessage(content=PARSE_RETRY_PROMPT.format(error=error[:500])),
                    ]
        except Exception as exc:
            if _classify_exception(exc) is None:
                raise
            error = f"transport: {exc}"
            entry.outcome, entry.error = "error", error
            # a transient error escapes `_invoke` only after all its retries: count each request
            entry.transport_retries += self.transport_retries
            entry.attempts += self.transport_retries + 1
        else:
            if parsed is None:
                entry.outcome, entry.error = "parse_error", error or ""
        entry.latency_s = time.perf_counter() - start
        self.ledger.add(entry)
        return StructuredResult(
            parsed=parsed,
            raw=raw,
            error=error if parsed is None else None,
            attempts=entry.attempts,
            prompt_tokens=entry.prompt_tokens,
            completion_tokens=entry.completion_tokens,
            latency_s=entry.latency_s,
        )

    async def text(self, messages: Sequence[BaseMessage], *, node: str, run_id: str = "") -> TextResult:
        start = time.perf_counter()
        entry = LedgerEntry(node=node, model=self.id, run_id=run_id)
        try:
            msg, transport = await self._invoke(self.chat, messages)
        except Exception as exc:
            if _classify_exception(exc) is None:
                raise
            entry.outcome, entry.error = "error", f"transport: {exc}"
            entry.attempts = self.transport_retries + 1
            entry.transport_retries = self.transport_retries
            entry.latency_s = time.perf_counter() - start
            self.ledger.add(entry)
            return TextResult("", entry.error, 0, 0, entry.latency_s)
        entry.transport_retries = transport
        entry.attempts = 1 + transport
        entry.prompt_tokens, entry.completion_tokens = _usage(msg)
        text = _raw_text(msg).strip()
        if not text:
            entry.outcome, entry.error = "error", EMPTY_ANSWER
        entry.latency_s = time.perf_counter() - start
        self.ledger.add(entry)
        return TextResult(
            text, entry.error or None, entry.prompt_tokens, entry.completion_tokens, entry.latency_s
        )


@functools.lru_cache(maxsize=256)
def _json_schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    """`response_format` asking an OpenAI-compatible server for `schema` (built once per class)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False},
    }


@functools.lru_cache(maxsize=256)
def _openai_tool(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI tool spec of a schema, built once per schema class (bounded: agents build some per call)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return convert_to_openai_tool(schema)


def _with_schema_hint(message: BaseMessage, schema: type[BaseModel]) -> BaseMessage:
    hint = "\n\n只输出一个 JSON 对象，结构符合以下 JSON Schema：\n" + json.dumps(
        schema.model_json_schema(), ensure_ascii=False
    )
    return HumanMessage(content=f"{message.content}{hint}")


def _parse(out: Any, raw: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    if isinstance(out, dict):
        if isinstance(out.get("parsed"), schema):
            return out["parsed"], None
        if out.get("parsing_error") is not None:
            return None, f"{type(out['parsing_error']).__name__}: {out['parsing_error']}"[:2000]
        if out.get("parsed") is None and not raw:
            return None, "empty output (no content, no tool call)"
    return parse_json_model(raw, schema)


def parse_json_model(raw: str, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """Parse a model from text that should be JSON, tolerating code fences and leading prose."""
    text = raw.strip()
    if not text:
        return None, "empty output"
    if text.startswith("```"):
        text = text.strip("`")
        text = text.split("\n", 1)[1] if "\n" in text else text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None, "no JSON object in output"
    body = text[start : end + 1]
    try:
        try:
            return schema.model_validate_json(body), None
        except ValidationError as exc:
            if exc.errors()[0]["type"] != "json_invalid":
                raise
            # a raw newline or tab inside a string (a small model under a grammar writes them) is
            # invalid JSON but unambiguous: read it leniently, then validate as usual
            return schema.model_validate(json.loads(body, strict=False)), None
    except ValidationError as exc:
        return None, f"schema: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"[:2000]
    except ValueError as exc:
        return None, f"json: {exc}"[:2000]


def get_llm(spec: str | None = None, *, settings: Settings | None = None, **kwargs: Any) -> LLM:
    """The one entry point the graphs use."""
    settings = settings or get_settings()
    return LLM(resolve_spec(spec, settings), settings=settings, **kwargs)


def messages(system: str, user: str) -> list[BaseMessage]:
    return [SystemMessage(content=system), HumanMessage(content=user)]
