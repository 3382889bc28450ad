"""Usage totals and budgets, kept by the kernel (``kernel.usage``).

Every model call is charged to the kernel, to its model, and to the scope it was made in: the
agent replying (and any agent whose reply that one is part of), the hubs those agents are in,
and the reply itself. A budget on any of them is checked *before* the call, against what was
used plus what calls already under way have reserved, so concurrent calls cannot overshoot the
call count. A call is refused with :class:`BudgetExceeded` (and a ``budget_reached`` event)
when it would exceed a budget; see :func:`estimate_tokens` for what a call is expected to use.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs

from .blocks import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .errors import AopkitError
from .events import BudgetReached
from .models import Usage

if TYPE_CHECKING:
    from .kernel import Kernel
    from .message import Msg
    from .models import ToolSpec

_LOCK = threading.Lock()  # every account's counts change under it: tasks and threads alike


def _limit(kind: type | tuple[type, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        ok = isinstance(value, kind) and type(value) is not bool
        number = float(value) if ok else math.nan
        if not math.isfinite(number):
            wanted = "a whole number" if kind is int else "a number"
            raise AopkitError(f"budget {attribute.name}: expected {wanted}, got {value!r:.40}")
        if number < 0:
            raise AopkitError(f"budget {attribute.name}: cannot be negative, got {value}")

    return check


@attrs.frozen
class Budget:
    """Limits on model calls: ``calls``, ``tokens`` (input and output together) and ``cost``
    (US dollars, needs a price for every model used). None: no limit of that kind."""

    calls: int | None = attrs.field(default=None, validator=_limit(int))
    tokens: int | None = attrs.field(default=None, validator=_limit(int))
    cost: float | None = attrs.field(default=None, validator=_limit((int, float)))


class BudgetExceeded(AopkitError):
    """A model call was refused before it was made: it would exceed a budget. ``account``
    names whose budget (``agent 'judge'``, ``hub 'debate'``, ``kernel``), ``limit`` its kind."""

    def __init__(
        self, account: str, limit: str, allowed: float, used: float, needed: float, model: str
    ) -> None:
        self.account, self.limit, self.model = account, limit, model
        self.allowed, self.used, self.needed = allowed, used, needed
        if limit == "calls":
            state = f"{int(used)} of {int(allowed)} calls made or under way"
        else:
            state = (
                f"{_amount(limit, used)} of {_amount(limit, allowed)} used or reserved by calls "
                f"under way, and this call's input is estimated at {_amount(limit, needed)}"
            )
        super().__init__(f"budget of {account} reached: {state}; the call to {model} was not made")


class UnpricedForBudget(BudgetExceeded):
    """A cost budget applies but the model has no price: the cost could not be kept."""

    def __init__(self, account: str, allowed: float, model: str) -> None:
        AopkitError.__init__(
            self,
            f"budget of {account} is in dollars but {model} has no price "
            f"(set kernel.prices[{model!r}]); the call was not made",
        )
        self.account, self.limit, self.model = account, "cost", model
        self.allowed, self.used, self.needed = allowed, 0.0, 0.0


def _amount(limit: str, value: float) -> str:
    return dollars(value) if limit == "cost" else f"{int(value)} {limit}"


def dollars(value: float) -> str:
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


class Account:
    """What one agent, hub run, model, reply or the whole kernel used, and its budget."""

    def __init__(self, label: str, budget: Budget | None = None) -> None:
        self.label = label
        self.budget = budget
        self.usage = Usage()
        self.refused = 0  # calls a budget refused
        self.unreported = 0  # calls whose server did not say how many tokens they used
        self.unpriced = 0  # calls with no price
        self._held = [0, 0, 0.0]  # calls, tokens, cost reserved by calls under way

    def __repr__(self) -> str:
        return f"<Account {self.label}: {self.usage}>"

    def _refusal(self, tokens: int, cost: float | None, model: str) -> BudgetExceeded | None:
        budget = self.budget
        if budget is None:
            return None
        calls_held, tokens_held, cost_held = self._held
        if budget.calls is not None and self.usage.calls + calls_held + 1 > budget.calls:
            used = self.usage.calls + calls_held
            return BudgetExceeded(self.label, "calls", budget.calls, used, 1, model)
        used_tokens = (self.usage.tokens or 0) + tokens_held
        if budget.tokens is not None and (
            used_tokens >= budget.tokens or used_tokens + tokens > budget.tokens
        ):
            return BudgetExceeded(self.label, "tokens", budget.tokens, used_tokens, tokens, model)
        if budget.cost is not None:
            if cost is None:
                return UnpricedForBudget(self.label, budget.cost, model)
            spent = (self.usage.cost or 0.0) + cost_held
            if spent >= budget.cost or spent + cost > budget.cost:
                return BudgetExceeded(self.label, "cost", budget.cost, spent, cost, model)
        return None

    def _hold(self, sign: int, tokens: int, cost: float) -> None:
        self._held[0] += sign
        self._held[1] += sign * tokens
        self._held[2] += sign * cost

    def _add(self, call: Usage) -> None:
        self.usage = self.usage + call
        if call.input_tokens is None or call.output_tokens is None:
            self.unreported += 1
        if call.cost is None:
            self.unpriced += 1

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self.usage)
        data.update(refused=self.refused, unreported=self.unreported, unpriced=self.unpriced)
        if self.budget is not None:
            data["budget"] = attrs.asdict(self.budget)
        return data


@attrs.frozen
class Scope:
    """Who a model call is made for: the agent, its hubs, and every account it is charged to
    besides the kernel's and its model's."""

    agent: str | None
    hubs: tuple[str, ...]
    accounts: tuple[Account, ...]
    reply: Account


SCOPE: ContextVar[Scope | None] = ContextVar("aopkit_usage_scope", default=None)


def current_scope() -> Scope | None:
    """The scope of the reply under way in this task (None outside any agent's reply)."""
    return SCOPE.get()


@attrs.frozen
class Ticket:
    """A call's reservation, released when the call ends."""

    model: str
    accounts: tuple[Account, ...]
    tokens: int
    cost: float


class UsageLedger:
    """``kernel.usage``: totals for the kernel, per agent (by name) and per model, budgets on
    the kernel and on agents, and :meth:`render`, the usage report."""

    def __init__(self, kernel: Kernel, budget: Budget | None = None) -> None:
        self.kernel = kernel
        self.total = Account("kernel", budget)
        self.agents: dict[str, Account] = {}
        self.models: dict[str, Account] = {}

    @property
    def budget(self) -> Budget | None:
        """The kernel's budget: every call of every agent counts towards it."""
        return self.total.budget

    @budget.setter
    def budget(self, budget: Budget | None) -> None:
        self.total.budget = checked_budget(budget)

    def agent(self, name: str) -> Account:
        """The account of agent ``name`` (sessions of one agent share it)."""
        with _LOCK:
            found = self.agents.get(name)
            if found is None:
                found = self.agents[name] = Account(f"agent {name!r}")
            return found

    def _model(self, name: str) -> Account:
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = Account(f"model {name!r}")
        return found

    def clear(self) -> None:
        """Forget the totals (budgets stay, and start counting again from zero)."""
        with _LOCK:
            self.total = Account("kernel", self.total.budget)
            self.agents = {n: Account(a.label, a.budget) for n, a in self.agents.items()}
            self.models = {}

    # -- the scope of a reply -------------------------------------------------------------------
    def enter(self, agent: str, hubs: Iterable[tuple[str, Account]]) -> Scope:
        """The scope of a reply of ``agent`` in ``hubs``, inside the scope under way (if any):
        its calls count towards the enclosing replies too."""
        outer = SCOPE.get()
        accounts = list(outer.accounts) if outer is not None else []
        names = list(outer.hubs) if outer is not None else []
        for account in (self.agent(agent), *(account for _, account in hubs)):
            if account not in accounts:
                accounts.append(account)
        names.extend(name for name, _ in hubs if name not in names)
        reply = Account(f"reply of {agent!r}")
        return Scope(agent, tuple(names), (*accounts, reply), reply)

    # -- around each call -----------------------------------------------------------------------
    def reserve(
        self, model: str, messages: Sequence[Msg], tools: Sequence[ToolSpec] = ()
    ) -> Ticket:
        """Reserve one call of ``model`` in every account it is charged to, or raise
        :class:`BudgetExceeded` (emitting ``budget_reached``) if a budget would be exceeded."""
        scope = SCOPE.get()
        with _LOCK:
            accounts = (self.total, self._model(model), *(scope.accounts if scope else ()))
        budgets = [a.budget for a in accounts if a.budget is not None]
        tokens, cost = 0, 0.0
        if any(b.tokens is not None or b.cost is not None for b in budgets):
            tokens = estimate_tokens(messages, tools)
        expected: float | None = 0.0
        if any(b.cost is not None for b in budgets):
            price = self.kernel.prices.get(model)
            expected = price.cost(Usage(tokens, 0)) if price is not None else None
        refusal = None
        with _LOCK:
            for account in accounts:
                refusal = account._refusal(tokens, expected, model)
                if refusal is not None:
                    account.refused += 1
                    break
            else:
                cost = expected or 0.0
                for account in accounts:
                    account._hold(1, tokens, cost)
        if refusal is not None:
            kernel = self.kernel
            if kernel.observed:
                kernel.emit(
                    BudgetReached(
                        account=refusal.account,
                        limit=refusal.limit,
                        allowed=refusal.allowed,
                        used=refusal.used,
                        model=model,
                        agent=scope.agent if scope else None,
                        hubs=scope.hubs if scope else (),
                    )
                )
            raise refusal
        return Ticket(model, accounts, tokens, cost)

    def settle(self, ticket: Ticket, reported: Usage | None, retries: int) -> Usage:
        """Release ``ticket`` and charge the call as made: its usage, priced."""
        usage = reported or Usage()
        price = self.kernel.prices.get(ticket.model)
        call = attrs.evolve(
            usage,
            calls=1,
            retries=retries,
            cost=price.cost(usage) if price is not None else None,
        )
        with _LOCK:
            for account in ticket.accounts:
                account._hold(-1, ticket.tokens, ticket.cost)
                account._add(call)
        return call

    # -- reports ------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The totals as JSON-ready data (for the Studio, a CLI, a dashboard)."""
        with _LOCK:
            return {
                "total": self.total.as_dict(),
                "agents": {name: a.as_dict() for name, a in self.agents.items()},
                "models": {name: a.as_dict() for name, a in self.models.items()},
            }

    def render(self) -> str:
        """A plain-text report for the end of a run: totals per agent and per model, the
        budgets and what they refused."""
        with _LOCK:
            total = self.total
            agents = [(name, a) for name, a in self.agents.items() if a.usage.calls or a.refused]
            models = list(self.models.items())
            budgeted = [a for a in (total, *self.agents.values()) if a.budget is not None]
        if not total.usage.calls and not total.refused:
            return "Usage report: no model calls."
        by_agent = sum(a.usage.calls for _, a in agents)
        rest = Account("(no agent)")
        rest.usage = attrs.evolve(Usage(), calls=total.usage.calls - by_agent)
        lines = ["Usage report:"]
        rows = [(name, a) for name, a in agents]
        if rest.usage.calls:
            rows.append(("(no agent)", rest))
        lines += _table("agent", [*rows, ("total", total)])
        lines += ["", *_table("model", models)]
        for account in budgeted:
            lines.append(f"budget of {account.label}: {_budget_line(account)}")
        notes = []
        if "?" in "\n".join(lines):
            notes.append("? = not reported by the server (unknown, not zero)")
        if total.unreported:
            notes.append(
                f"{total.unreported} call(s) without token counts from the server "
                "(unknown, not zero: the totals count only what was reported)"
            )
        if total.unpriced:
            unpriced = ", ".join(n for n, a in models if a.unpriced)
            notes.append(
                f"{total.unpriced} call(s) with no price ({unpriced}): costs count priced "
                "calls only; set kernel.prices['provider:model']"
            )
        return "\n".join(lines + notes)


def checked_budget(budget: Any) -> Budget | None:
    if budget is not None and not isinstance(budget, Budget):
        raise AopkitError(f"a budget is an aopkit.Budget or None, got {budget!r:.60}")
    return budget


COLUMNS = ("calls", "retries", "input", "cached", "output", "reasoning", "cost")


def _cells(account: Account) -> tuple[str, ...]:
    u = account.usage
    counts = (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens)
    tokens = tuple("?" if n is None else str(n) for n in counts)
    cost = "?" if u.cost is None else dollars(u.cost)
    return (str(u.calls), str(u.retries), *tokens, cost)


def _table(first: str, accounts: Sequence[tuple[str, Account]]) -> list[str]:
    rows = [(first, *COLUMNS)] + [(name, *_cells(a)) for name, a in accounts]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _budget_line(account: Account) -> str:
    budget, used = account.budget, account.usage
    assert budget is not None
    parts = []
    if budget.calls is not None:
        parts.append(f"{used.calls} of {budget.calls} calls")
    if budget.tokens is not None:
        parts.append(f"{used.tokens or 0} of {budget.tokens} tokens")
    if budget.cost is not None:
        parts.append(f"{dollars(used.cost or 0.0)} of {dollars(budget.cost)}")
    refused = f"; {account.refused} call(s) refused" if account.refused else ""
    return (", ".join(parts) or "no limits") + refused


def estimate_tokens(messages: Sequence[Msg], tools: Sequence[ToolSpec] = ()) -> int:
    """What a call's input is expected to use, for budgets: a token per four characters of its
    text, tool calls, tool results and tool schemas; media count nothing. A rough floor, not
    a promise: a call that passes may still use more, and then the next call is refused."""
    chars = sum(len(spec.name) + len(spec.description) for spec in tools)
    chars += sum(len(json.dumps(spec.parameters)) for spec in tools)
    for msg in messages:
        chars += len(msg.content) if isinstance(msg.content, str) else _chars(msg.content)
    return math.ceil(chars / 4)


def _chars(blocks: Iterable[Any]) -> int:
    chars = 0
    for block in blocks:
        if isinstance(block, TextBlock):
            chars += len(block.text)
        elif isinstance(block, ThinkingBlock):
            chars += len(block.thinking)
        elif isinstance(block, ToolUseBlock):
            chars += len(block.name) + len(block.raw_input or json.dumps(block.input, default=str))
        elif isinstance(block, ToolResultBlock):
            output = block.output
            chars += len(output) if isinstance(output, str) else _chars(output)
    return chars
