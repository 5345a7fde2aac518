"""`openai:` chat model: the chat-completions API over one pooled httpx client per event loop.

Why not `langchain_openai.ChatOpenAI`: profiled against the simulated endpoint (bench/throughput.py,
docs/benchmarks.md "Throughput"), the openai SDK spent more CPU per call than the rest of medes —
`_async_transform_recursive` walks every request body (the tool JSON Schema included) through its
TypedDict annotations (~7 ms per structured call under the profiler, 18 % of the evaluate graph's
CPU) and builds pydantic models of every response, and ChatOpenAI then hands each result to a
thread-pool executor. The wire protocol is small and stable, so this model speaks it directly and
stays a LangChain `BaseChatModel`: `.bind(tools=…, tool_choice=…, response_format=…)`, callbacks,
LangGraph metadata and `LLM`'s retry/ledger policies work as before.

Errors: 429 and 5xx, timeouts and broken connections raise `TransientLLMError` (with the
server's Retry-After when it sends one) for `LLM._invoke` to retry; any other HTTP error is an
`OpenAIRequestError` with the server's message, never the request headers (the API key).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_openai_messages
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from medes.llm import TransientLLMError


class OpenAIRequestError(RuntimeError):
    """The server refused the request (4xx other than 429): retrying the same request cannot help."""


class OpenAIChat(BaseChatModel):
    """An OpenAI-compatible chat-completions endpoint (vLLM, Ollama, DeepSeek, DashScope, llama.cpp server…)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str
    base_url: str
    """The server's /v1 URL; requests go to `{base_url}/chat/completions`."""
    api_key: SecretStr | None = None
    timeout: float = 120.0
    temperature: float | None = None
    max_tokens: int | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other body fields sent with every request (e.g. `seed`, `top_p`, `extra_body` keys)."""
    transport: Any = Field(default=None, exclude=True, repr=False)
    """An httpx transport for both clients (tests pass `httpx2.MockTransport`); None: real sockets."""

    _clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = PrivateAttr(
        default_factory=weakref.WeakKeyDictionary
    )
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    # ------------------------------------------------------------------------------ request

    def _url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": convert_to_openai_messages(messages)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.model_kwargs)
        body.update({k: v for k, v in kwargs.items() if v is not None})
        if stop:
            body["stop"] = stop
        return body

    def _client(self) -> httpx2.AsyncClient:
        """One client per event loop: pooled connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                # the openai SDK's limits: `LLM`'s semaphore, not the pool, bounds requests in flight
                limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
                client = httpx2.AsyncClient(timeout=self.timeout, limits=limits, transport=self.transport)
                self._clients[loop] = client
            return client

    # ------------------------------------------------------------------------------ calls

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        body = self._body(messages, stop, kwargs)
        with _transport_errors():
            response = await self._client().post(self._url(), json=body, headers=self._headers())
        return _result(response)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        body = self._body(messages, stop, kwargs)
        with _transport_errors(), httpx2.Client(timeout=self.timeout, transport=self.transport) as client:
            response = client.post(self._url(), json=body, headers=self._headers())
        return _result(response)


# ---------------------------------------------------------------------------------- responses


@contextmanager
def _transport_errors() -> Iterator[None]:
    """Timeouts and broken connections are retryable, whichever client raised them."""
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise TransientLLMError(f"timeout: {type(exc).__name__}") from exc
    except httpx2.TransportError as exc:
        raise TransientLLMError(f"connection: {type(exc).__name__}") from exc


def _retry_after(response: httpx2.Response) -> float | None:
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: let the caller's backoff decide
    return None


def _error_message(response: httpx2.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text[:300] or response.reason_phrase)


def _result(response: httpx2.Response) -> ChatResult:
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientLLMError(f"HTTP {status}", _retry_after(response))
    if status >= 400:
        raise OpenAIRequestError(f"HTTP {status}: {_error_message(response)}")
    try:
        data = response.json()
        choice = data["choices"][0]
        message = choice["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        # a 200 whose body is not a completion: a broken proxy or server; the next try may do better
        raise TransientLLMError(f"malformed completion body: {response.text[:200]!r}") from exc
    usage = data.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    tool_calls, invalid = [], []
    for raw in message.get("tool_calls") or []:
        try:
            tool_calls.append(parse_tool_call(raw, return_id=True))
        except Exception as exc:  # noqa: BLE001 - langchain raises OutputParserException; kept as invalid
            invalid.append(make_invalid_tool_call(raw, str(exc)))
    content = message.get("content")
    ai = AIMessage(
        content=content if isinstance(content, str) else "",
        tool_calls=[c for c in tool_calls if c is not None],
        invalid_tool_calls=invalid,
        usage_metadata={
            "input_tokens": prompt,
            "output_tokens": completion,
            "total_tokens": int(usage.get("total_tokens") or prompt + completion),
        },
        response_metadata={
            "finish_reason": choice.get("finish_reason"),
            "model_name": data.get("model", ""),
            "id": data.get("id", ""),
        },
    )
    return ChatResult(
        generations=[ChatGeneration(message=ai)], llm_output={"model_name": data.get("model", "")}
    )
