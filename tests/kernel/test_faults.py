"""The four tiers, driven by scripted models: which tier resolves each fault, how many model
calls it cost, and what reaches the report, the events and the incident store."""

import json

import attrs
import pytest
from loguru import logger

from aopkit import hookimpl
from aopkit.blocks import TextBlock
from aopkit.events import Corrected, CritiqueRound, Escalated, Retried
from aopkit.faults import FaultPolicy, Resolution, Unresolved, resolve
from aopkit.message import Msg
from aopkit.models import ChatResponse, ModelRejected, ModelUnavailable
from aopkit.retry import RetryPolicy
from aopkit.structured import Target
from tests.kernel.helpers import Recorder

ASK = [Msg("user", "Who won the debate?", "user")]
FAST = RetryPolicy(attempts=3, initial=0.001, jitter=0)


@attrs.frozen
class Verdict:
    winner: str
    score: int


GOOD = '{"winner": "alice", "score": 7}'


def model(kernel, *responses, **options):
    return kernel.model("scripted:judge", responses=list(responses), retry=FAST, **options)


async def test_valid_output_is_no_fault(kernel):
    judge = model(kernel, GOOD)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert kernel.faults.faults == []
    assert judge.calls[0]["structured"]["title"] == "Verdict"


@pytest.mark.parametrize(
    ("output", "corrector"),
    [
        ('Sure! ```json\n{"winner": "alice", "score": 7}\n``` Anything else?', "fences"),
        ("{'winner': 'alice', 'score': 7,}", "json-repair"),
        ('{score: 7, winner: "alice"}', "json-repair"),
        ('{"winner": "alice", "score": "7"}', "coerce"),
    ],
)
async def test_rule_resolvable_faults_are_fixed_by_tier_2_without_a_model_call(
    kernel, output, corrector
):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    judge = model(kernel, output)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert len(judge.calls) == 1
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver, fault.calls, fault.saved) == (2, corrector, 0, 1)
    assert [e.corrector for e in recorder.of(Corrected) if e.ok] == [corrector]


async def test_valid_json_of_the_wrong_shape_goes_to_self_critique(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    judge = model(kernel, '{"winner": "alice"}', GOOD)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert len(judge.calls) == 2
    feedback = judge.calls[1]["messages"][-1].text
    assert "score: required field is missing" in feedback
    assert judge.calls[1]["messages"][-2].text == '{"winner": "alice"}'
    [fault] = kernel.faults.faults
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == ("invalid", 3, "self", 1)
    rounds = recorder.of(CritiqueRound)
    assert [(r.critic, r.round, r.accepted) for r in rounds] == [("self", 1, True)]


async def test_critique_rounds_are_bounded_then_the_incident_carries_everything(kernel, tmp_path):
    judge = model(kernel, "no idea", "still no idea", "sorry")
    lines = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="CHAT")
    try:
        with pytest.raises(Unresolved) as info:
            await resolve(judge, ASK, Target.of(Verdict, kernel), policy=FaultPolicy(rounds=2))
    finally:
        logger.remove(sink)
    incident = info.value.incident
    assert len(judge.calls) == 3
    assert incident.outputs == ["no idea", "still no idea", "sorry"]
    assert [t["tier"] for t in incident.tiers].count(3) == 2
    assert "json-repair" in {t["by"] for t in incident.tiers}
    assert "Who won the debate?" in incident.request
    assert any(incident.id in line for line in lines), "the incident is logged at CHAT level"
    stored = kernel.incidents.load()
    assert [i["id"] for i in stored] == [incident.id]
    assert stored[0]["outputs"] == incident.outputs
    [fault] = kernel.faults.faults
    assert fault.tier is None and fault.calls == 2


def answer(text, finish_reason):
    return ChatResponse([TextBlock(text)], finish_reason=finish_reason)


REPAIRABLE = "{'winner': 'alice', 'score': 7,}"


async def test_output_cut_off_is_never_completed_and_the_report_says_why(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    judge = model(kernel, '{"winner": "alice", "score": 7', GOOD)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert len(judge.calls) == 2, "tier 3 asked again"
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver) == (3, "self")
    assert fault.detail.startswith("the output was cut off inside the object")
    assert "cut off" in judge.calls[1]["messages"][-1].text  # the model is told why
    refusals = [(e.corrector, e.ok) for e in recorder.of(Corrected)]
    assert refusals == [("fences", False)], "no corrector runs after a cut-off is found"


@pytest.mark.parametrize(
    "finish",
    ["length", "max_tokens", "MAX_TOKENS", "max_output_tokens", "model_context_window_exceeded"],
)
async def test_an_answer_at_the_token_limit_is_never_repaired(kernel, finish):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    judge = model(kernel, answer(REPAIRABLE, finish), GOOD)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert len(judge.calls) == 2
    [fault] = kernel.faults.faults
    assert fault.detail.startswith(
        f"the output was cut off by the token limit (finish reason {finish!r})"
    )
    assert (fault.tier, fault.calls, fault.saved) == (3, 1, 0)
    assert [(e.corrector, e.ok) for e in recorder.of(Corrected)] == [("(none)", False)]


@pytest.mark.parametrize("finish", ["stop", "end_turn", "STOP", None])
async def test_other_finish_reasons_leave_tier_2_at_work(kernel, finish):
    judge = model(kernel, answer(REPAIRABLE, finish))
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert kernel.faults.faults[0].tier == 2


async def test_complete_json_at_the_token_limit_is_accepted_but_a_final_number_is_not(kernel):
    assert await resolve(
        model(kernel, answer(GOOD, "length")), ASK, Target.of(Verdict, kernel)
    ) == Verdict("alice", 7)
    number = Target("count", {"type": "integer"}, lambda value: value)
    judge = model(kernel, answer("12", "length"), answer("123", "stop"))
    assert await resolve(judge, ASK, number) == 123  # 12 may have been the start of 123
    assert "ends in a number" in kernel.faults.faults[0].detail


async def test_a_revision_cut_by_the_token_limit_is_not_repaired_either(kernel):
    judge = model(kernel, answer(REPAIRABLE, "length"), answer(REPAIRABLE, "length"))
    with pytest.raises(Unresolved) as info:
        await resolve(
            judge, ASK, Target.of(Verdict, kernel), policy=FaultPolicy(rounds=1, escalate=False)
        )
    assert len(judge.calls) == 2
    incident = info.value.incident
    assert "token limit" in incident.reason
    assert [t["by"] for t in incident.tiers if t["tier"] == 2] == ["(none)", "(none)"]
    assert "token limit" in incident.describe()


class Human:
    def __init__(self, *resolutions):
        self.resolutions = list(resolutions)
        self.seen = []

    @hookimpl
    async def escalate(self, incident):
        self.seen.append(incident)
        return self.resolutions.pop(0)


async def test_a_human_supplies_the_answer(kernel):
    recorder, human = Recorder(), Human(Resolution("answer", {"winner": "bob", "score": 5}))
    kernel.register(recorder, "recorder")
    kernel.register(human, "human")
    judge = model(kernel, "garbage", "garbage", "garbage")
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("bob", 5)
    assert human.seen[0].target == "Verdict"
    [fault] = kernel.faults.faults
    assert (fault.tier, fault.resolver) == (4, "human (answer)")
    assert [e.resolution for e in recorder.of(Escalated)] == [None, "answer"]
    assert kernel.incidents.load()[0]["resolution"] == "answer"


async def test_a_human_asks_for_a_retry(kernel):
    kernel.register(Human(Resolution("retry")), "human")
    judge = model(kernel, "x", "y", "z", GOOD)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    assert len(judge.calls) == 4


async def test_a_human_aborts_or_gives_an_invalid_answer(kernel):
    kernel.register(Human(Resolution("abort"), Resolution("answer", {"winner": 3})), "human")
    with pytest.raises(Unresolved, match="aborted by a human"):
        await resolve(model(kernel, "x", "y", "z"), ASK, Target.of(Verdict, kernel))
    with pytest.raises(Unresolved, match="answer is not a valid Verdict"):
        await resolve(model(kernel, "x", "y", "z"), ASK, Target.of(Verdict, kernel))


async def test_pairwise_review_rejects_valid_but_wrong_output(kernel):
    reviewer = kernel.model(
        "scripted:reviewer",
        responses=[
            "The score must be out of 10 and alice scored 9, not 7.",  # review of the first answer
            "APPROVE",  # review of the revision
        ],
    )
    from aopkit_critique import PairwiseCritique

    judge = model(kernel, GOOD, '{"winner": "alice", "score": 9}')
    policy = FaultPolicy(critics=(PairwiseCritique(reviewer),), review=True)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel), policy=policy) == Verdict(
        "alice", 9
    )
    assert "alice scored 9" in judge.calls[1]["messages"][-1].text
    [fault] = kernel.faults.faults
    # two reviews (the objection, then the approval) and one revision
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == ("rejected", 3, "pairwise", 3)


async def test_retryable_errors_are_retried_at_the_model_and_reported(kernel):
    recorder = Recorder()
    kernel.register(recorder, "recorder")
    busy = ModelUnavailable("scripted:judge", "overloaded", status=503, retry_after=0.01)
    judge = model(kernel, busy, GOOD)
    reply = await judge(ASK)
    assert reply.text == GOOD
    [retry] = recorder.of(Retried)
    assert retry.attempt == 1 and retry.wait >= 0.01 and "overloaded" in retry.error
    [fault] = kernel.faults.faults
    assert (fault.kind, fault.tier, fault.resolver, fault.calls) == ("accessibility", 1, "retry", 1)


async def test_a_calls_events_share_its_id_and_each_call_has_its_own(kernel):
    """A call's id is made only when an observer first asks for it: the events of one call,
    retries included, still name the same id, and no two calls share one."""
    from aopkit.events import ModelCallFinished, ModelCallStarted

    recorder = Recorder()
    kernel.register(recorder, "recorder")
    busy = ModelUnavailable("scripted:judge", "overloaded", status=503, retry_after=0.01)
    judge = model(kernel, busy, GOOD, GOOD)
    await judge(ASK)
    await judge(ASK)
    started = [e.call_id for e in recorder.of(ModelCallStarted)]
    finished = [e.call_id for e in recorder.of(ModelCallFinished)]
    [retry] = recorder.of(Retried)
    assert started == finished and len(set(started)) == 2 and all(started)
    assert retry.call_id == started[0]


async def test_retries_stop_at_the_attempt_limit_and_the_deadline(kernel):
    busy = [ModelUnavailable("scripted:judge", "busy", status=429) for _ in range(5)]
    judge = model(kernel, *busy)
    with pytest.raises(ModelUnavailable) as info:
        await judge(ASK)
    assert len(judge.calls) == 3
    assert info.value.fault.tier is None and info.value.fault.calls == 2

    slow = ModelUnavailable("scripted:judge", "come back in a minute", status=429, retry_after=60)
    judge = model(kernel, slow, GOOD)
    judge.retry = RetryPolicy(attempts=5, deadline=1.0)
    with pytest.raises(ModelUnavailable, match="come back in a minute"):
        await judge(ASK)  # waiting 60 s would pass the deadline: give up at once
    assert len(judge.calls) == 1


async def test_rejected_requests_are_not_retried(kernel):
    judge = model(kernel, ModelRejected("scripted:judge", "bad key", status=401), GOOD)
    with pytest.raises(ModelRejected):
        await judge(ASK)
    assert len(judge.calls) == 1


async def test_a_cut_stream_is_retried_and_starts_over(kernel):
    cut = ModelUnavailable("scripted:judge", "stream cut")
    judge = model(kernel, cut, "hello world", chunk_size=5)
    chunks = [r.text async for r in await judge(ASK, stream=True)]
    assert chunks == ["hello", "hello worl", "hello world"]
    assert kernel.faults.faults[0].tier == 1


async def test_exhausted_retries_escalate(kernel):
    kernel.register(Human(Resolution("answer", json.loads(GOOD))), "human")
    busy = [ModelUnavailable("scripted:judge", "busy", status=503) for _ in range(3)]
    judge = model(kernel, *busy)
    assert await resolve(judge, ASK, Target.of(Verdict, kernel)) == Verdict("alice", 7)
    [fault] = kernel.faults.faults
    assert (fault.kind, fault.tier) == ("accessibility", 4)


def test_the_report_renders_every_fault(kernel):
    from aopkit.faults import Fault

    kernel.faults.add(Fault("malformed", "m", "not JSON", 2, "json-repair", 0, 1))
    kernel.faults.add(Fault("invalid", "m", "score missing", 3, "self", 1))
    text = kernel.faults.render()
    assert "tier 2 (json-repair)" in text and "tier 3 (self)" in text
    assert text.endswith("2 faults; 1 extra model calls; 1 calls saved by tier 2")
