"""Fault tier 1: retry accessibility errors (connection, timeout, 408/409/429/5xx, a cut stream)
at the model, with exponential backoff and jitter, honouring Retry-After, within a deadline."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class RetryPolicy:
    """How a model retries: at most ``attempts`` tries within ``deadline`` seconds; waits grow
    from ``initial`` by doubling, up to ``max_wait``, plus up to ``jitter`` seconds at random; a
    server's Retry-After is waited out in full (when it fits in the deadline)."""

    attempts: int = 4
    deadline: float = 120.0
    initial: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5

    def retrying(self, before_sleep: Any) -> Any:
        import random

        import tenacity

        def wait(state: tenacity.RetryCallState) -> float:
            backoff: float = min(self.max_wait, self.initial * 2.0 ** (state.attempt_number - 1))
            backoff += random.uniform(0, self.jitter)
            error = state.outcome.exception() if state.outcome else None
            asked = getattr(error, "retry_after", None)
            return max(backoff, float(asked)) if asked is not None else backoff

        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts)
            | tenacity.stop_before_delay(self.deadline),
            wait=wait,
            retry=tenacity.retry_if_exception(lambda e: getattr(e, "retryable", False)),
            before_sleep=before_sleep,
            reraise=True,
        )


NO_RETRY = RetryPolicy(attempts=1)
