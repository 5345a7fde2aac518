"""The responder: the model under evaluation answers a scenario as a user would ask it.

The scenario query goes to the model as is, under a neutral system prompt (it must not prime the
model with ethics hints: that would measure the prompt, not the model). Response ids are derived
from run, scenario and model, so a resumed evaluation recognises answers it already has.
"""

from __future__ import annotations

from dataclasses import dataclass

from medes.llm import EMPTY_ANSWER, LLM, messages
from medes.prompts import render
from medes.records import Response, Scenario, content_id

RESPOND_PROMPT = "respond"


class ResponderError(RuntimeError):
    """The target model could not be reached (transport failure after retries).

    A blank answer is not an error: it is the model's answer, stored and scored like any other
    (the guardian scores it by rule, `medes.agents.guardian.judge_empty`)."""


def response_id(run_id: str, scenario_id: str, model_id: str) -> str:
    return content_id("rsp", run_id, scenario_id, model_id)


@dataclass
class Responder:
    llm: LLM

    @property
    def model_id(self) -> str:
        return self.llm.id

    async def __call__(self, scenario: Scenario, *, run_id: str = "") -> Response:
        prompt = render(RESPOND_PROMPT, query=scenario.query)
        result = await self.llm.text(messages(prompt.system, prompt.user), node="respond", run_id=run_id)
        if result.error and result.error != EMPTY_ANSWER:
            raise ResponderError(f"{self.model_id} on {scenario.id}: {result.error}")
        return Response(
            id=response_id(run_id, scenario.id, self.model_id),
            scenario_id=scenario.id,
            model_id=self.model_id,
            text=result.text,
            latency_s=result.latency_s,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            run_id=run_id,
        )
