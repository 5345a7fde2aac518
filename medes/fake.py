"""Scripted chat model for tests. Only reachable through an explicit `fake:` spec or direct use.

langchain-core's `GenericFakeChatModel` has no `with_structured_output`; this one binds tools and
answers with tool calls, so the real structured-output path (function calling) is exercised.

A script item is one of:
- a string: plain content (used for text calls, or as unparseable/prose output for structured calls);
- a dict: the arguments of a tool call to the first bound tool (structured output);
- `{"__raise__": "transient"}`: raise a retryable error once (tests of backoff);
- a callable `(messages, tool_names) -> str | dict`: computed from the prompt.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

ScriptItem = str | dict | Callable[[list[BaseMessage], list[str]], str | dict]


class FakeChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[Any] = Field(default_factory=list)
    cycle: bool = False
    """Repeat the script instead of failing when it runs out."""
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _cursor: Any = PrivateAttr(default=None)

    @classmethod
    def from_spec(cls, spec: str) -> FakeChatModel:
        """`fake:<path.json>` (a JSON list of items) or `fake:echo` (answers with the last user text)."""
        if spec == "echo":
            return cls(script=[lambda msgs, tools: f"（回声）{msgs[-1].content}"], cycle=True)
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"fake model script not found: {spec}")
        return cls(script=json.loads(path.read_text(encoding="utf-8")))

    @property
    def _llm_type(self) -> str:
        return "fake-scripted"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _next(self) -> Any:
        with self._lock:
            if self._cursor is None:
                self._cursor = itertools.cycle(self.script) if self.cycle else iter(self.script)
            try:
                return next(self._cursor)
            except StopIteration:
                raise RuntimeError(f"fake model script exhausted after {len(self.calls)} calls") from None

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        self.calls.append(list(messages))
        tools = kwargs.get("tools") or []
        names = [t["function"]["name"] for t in tools]
        item = self._next()
        if callable(item):
            item = item(list(messages), names)
        if isinstance(item, dict) and "__raise__" in item:
            from medes.llm import TransientLLMError

            raise TransientLLMError("scripted transient failure", retry_after=0.0)
        usage = {
            "input_tokens": sum(len(str(m.content)) for m in messages) // 2,
            "output_tokens": 0,
            "total_tokens": 0,
        }
        if isinstance(item, dict):
            if not names:
                msg = AIMessage(content=json.dumps(item, ensure_ascii=False))
            else:
                msg = AIMessage(
                    content="", tool_calls=[{"name": names[0], "args": item, "id": f"call_{len(self.calls)}"}]
                )
        else:
            msg = AIMessage(content=str(item))
        usage["output_tokens"] = len(str(item)) // 2
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        msg.usage_metadata = usage  # type: ignore[assignment]
        return ChatResult(generations=[ChatGeneration(message=msg)])
