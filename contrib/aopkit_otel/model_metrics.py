"""Model-call metrics as the GenAI semantic conventions name them: ``gen_ai.client.token.usage``
(a histogram of the tokens a call used, by ``gen_ai.token.type``) and
``gen_ai.client.operation.duration``. Counts a server did not report are not recorded: a
missing count is not zero."""

from __future__ import annotations

from typing import Any

from aopkit import events as ev

# aopkit provider prefixes whose name in the conventions' list of providers differs.
PROVIDER_NAMES = {"gemini": "gcp.gemini"}

# The bucket boundaries the conventions advise for each instrument.
TOKEN_BUCKETS = [4**n for n in range(14)]  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = [0.01 * 2**n for n in range(14)]  # 0.01, 0.02, ... 81.92 s


def provider_name(model: str) -> tuple[str, str]:
    """``gen_ai.provider.name`` and ``gen_ai.request.model`` of an aopkit ``provider:model``."""
    provider, _, name = model.partition(":")
    return PROVIDER_NAMES.get(provider, provider), name


class ModelCallMetrics:
    """Records a ``model_call_finished`` event's tokens and duration on a meter."""

    def __init__(self, meter: Any) -> None:
        self.tokens = _histogram(
            meter,
            "gen_ai.client.token.usage",
            "{token}",
            "Number of input and output tokens used per model call",
            TOKEN_BUCKETS,
        )
        self.duration = _histogram(
            meter,
            "gen_ai.client.operation.duration",
            "s",
            "Duration of a model call",
            DURATION_BUCKETS,
        )

    def record(self, event: ev.ModelCallFinished) -> None:
        provider, model = provider_name(event.model)
        common: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        if event.response_model is not None:
            common["gen_ai.response.model"] = event.response_model
        if event.agent is not None:
            common["gen_ai.agent.name"] = event.agent
        if event.error is None:
            for token_type in ("input", "output"):  # gen_ai.token.type's values
                count = event.usage.get(f"{token_type}_tokens")
                if isinstance(count, int) and not isinstance(count, bool):
                    self.tokens.record(count, {**common, "gen_ai.token.type": token_type})
        else:
            common["error.type"] = event.error.partition(":")[0]
        self.duration.record(event.seconds, common)


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: list[Any]) -> Any:
    """A histogram with the advised buckets (an OpenTelemetry API too old to take the advice
    gets the SDK's default buckets)."""
    try:
        return meter.create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:
        return meter.create_histogram(name, unit=unit, description=description)
