"""Usage totals and budgets, kept by the kernel (``kernel.usage``).

Every model call is charged to the kernel, to its model, and to the scope it was made in: the
agent replying (and any agent whose reply that one is part of), the hubs those agents are in,
and the reply itself. A budget on any of them is checked *before* the call, against what was
used plus what calls already under way have reserved, so concurrent calls cannot overshoot the
call count. A call is refused with :class:`BudgetExceeded` (and a ``budget_reached`` event)
when it would exceed a budget; see :func:`estimate_tokens` for what a call is expected to use.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import attrs

from .errors import AopkitError
from .events import BudgetReached
from .models import COUNT_LIMIT, Usage
from .printable import cell

if TYPE_CHECKING:
    from .hub import MsgHub
    from .kernel import Kernel
    from .message import Msg
    from .models import ToolSpec

_LOCK = threading.Lock()  # every account's counts change under it: tasks and threads alike


def _limit(kind: type | tuple[type, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        ok = isinstance(value, kind) and type(value) is not bool
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            wanted = "a whole number" if kind is int else "a number"
            raise AopkitError(f"budget {attribute.name}: expected {wanted}, got {value!r:.40}")
        if value < 0:
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
        self,
        account: str,
        limit: str,
        allowed: float,
        used: float,
        needed: float,
        model: str,
        why: str | None = None,
    ) -> None:
        self.account, self.limit, self.model = account, limit, model
        self.allowed, self.used, self.needed = allowed, used, needed
        if why is None and limit == "calls":
            why = f"reached: {int(used)} of {int(allowed)} calls made or under way"
        elif why is None:
            why = (
                f"reached: {_amount(limit, used)} of {_amount(limit, allowed)} used or reserved "
                f"by calls under way, and this call's input is expected to use "
                f"{_amount(limit, needed)}"
            )
        super().__init__(f"budget of {account} {why}; the call to {model} was not made")


def _amount(limit: str, value: float) -> str:
    return dollars(value) if limit == "cost" else f"{int(value)} {limit}"


def dollars(value: float) -> str:
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


NOTHING_HELD = (0, 0, 0.0)  # an account's reservations when no call holds one: a tuple, so
# that an account (one per agent and per reply with a model call) is not two lists besides

# An account's counts are one integer, each in a slot of ``WIDTH`` bits: a call is charged to
# four or five accounts, and a Python loop over its counts for each cost more than the rest of
# its accounting together. A call's count is below ``LIMIT`` (a larger one is no real count and
# is taken as unreported), so no slot's sum reaches the next one before 2**64 calls. The
# slots most calls fill come first, so that the integer stays short.
WIDTH = 128
LIMIT = COUNT_LIMIT
SECONDS = 1e9  # no call takes 30 years: more is a provider's mistake, counted as no time
MASK = (1 << WIDTH) - 1
SLOTS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "unpriced",
    "unreported",
    "retries",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
SHIFT = {name: WIDTH * i for i, name in enumerate(SLOTS)}
IN, OUT = SHIFT["input_tokens"], SHIFT["output_tokens"]
ONE_UNPRICED, ONE_UNREPORTED = 1 << SHIFT["unpriced"], 1 << SHIFT["unreported"]
RETRIES = SHIFT["retries"]
# the bits of an account's ``_known``: which counts some call reported (unknown is not zero)
KNOWN_IN, KNOWN_OUT, KNOWN_COST = 1, 2, 4
PARTS = tuple(  # the parts of the input and output a call may report apart: name, slot, bit
    (name, SHIFT[name], 8 << i)
    for i, name in enumerate(("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"))
)
KNOWN_PARTS = sum(bit for _, _, bit in PARTS)
REPORTED = KNOWN_IN | KNOWN_OUT
COUNTED = (("input_tokens", IN, KNOWN_IN), ("output_tokens", OUT, KNOWN_OUT), *PARTS)


class Account:
    """What one agent, hub run, model, reply or the whole kernel used, and its budget.

    The counts are kept as one number (see ``SLOTS``), the seconds and the cost as floats, and
    ``usage`` builds a :class:`Usage` when asked: charging a call costs three additions."""

    __slots__ = ("_cost", "_held", "_known", "_seconds", "_sums", "budget", "label", "refused")

    def __init__(self, label: str, budget: Budget | None = None) -> None:
        self.label = label
        self.budget = budget
        self.refused = 0  # calls a budget refused
        self._sums = 0
        self._known = 0
        self._seconds = 0.0
        self._cost = 0.0
        self._held = NOTHING_HELD  # calls, tokens, cost reserved by calls under way

    def __repr__(self) -> str:
        return f"<Account {self.label}: {self.usage}>"

    def _count(self, name: str) -> int:
        return self._sums >> SHIFT[name] & MASK

    @property
    def calls(self) -> int:
        """The calls made (a failed one too)."""
        return self._sums & MASK

    @property
    def unreported(self) -> int:
        """Calls whose server did not say how many tokens they used."""
        return self._count("unreported")

    @property
    def unpriced(self) -> int:
        """Calls with no price."""
        return self._count("unpriced")

    @property
    def usage(self) -> Usage:
        """What was used so far."""
        return Usage(**self.usage_data())

    def usage_data(self) -> dict[str, Any]:
        """:attr:`usage` as the codec dumps it (what a reply's ``metadata["usage"]`` holds),
        made from the sums without a :class:`Usage` or the codec: every reply with model
        calls gets one. Unknown tokens are None, counts nothing reported are left out."""
        sums, known = self._sums, self._known
        data: dict[str, Any] = {
            "input_tokens": sums >> IN & MASK if known & KNOWN_IN else None,
            "output_tokens": sums >> OUT & MASK if known & KNOWN_OUT else None,
            "seconds": self._seconds,
        }
        if known & KNOWN_PARTS:
            for name, shift, bit in PARTS:
                if known & bit:
                    data[name] = sums >> shift & MASK
        calls = sums & MASK
        if calls:
            data["calls"] = calls
        if sums >> RETRIES:  # retries, or the parts above them: rarely any
            retries = sums >> RETRIES & MASK
            if retries:
                data["retries"] = retries
        if known & KNOWN_COST:
            data["cost"] = self._cost
        return data

    def _refusal(self, tokens: int, cost: float | None, model: str) -> BudgetExceeded | None:
        budget = self.budget
        if budget is None:
            return None
        sums = self._sums
        calls_held, tokens_held, cost_held = self._held
        calls = sums & MASK
        if budget.calls is not None and calls + calls_held + 1 > budget.calls:
            used = calls + calls_held
            return BudgetExceeded(self.label, "calls", budget.calls, used, 1, model)
        used_tokens = (sums >> IN & MASK) + (sums >> OUT & MASK) + tokens_held
        if budget.tokens is not None and (
            used_tokens >= budget.tokens or used_tokens + tokens > budget.tokens
        ):
            return BudgetExceeded(self.label, "tokens", budget.tokens, used_tokens, tokens, model)
        if budget.cost is not None:
            if cost is None:
                why = f"is in dollars, but {model} has no price (set kernel.prices[{model!r}])"
                return BudgetExceeded(self.label, "cost", budget.cost, 0.0, 0.0, model, why)
            spent = self._cost + cost_held
            if spent >= budget.cost or spent + cost > budget.cost:
                return BudgetExceeded(self.label, "cost", budget.cost, spent, cost, model)
        return None

    def _hold(self, sign: int, tokens: int, cost: float) -> None:
        calls, held_tokens, held_cost = self._held
        self._held = (calls + sign, held_tokens + sign * tokens, held_cost + sign * cost)

    def as_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self.usage)
        data.update(refused=self.refused, unreported=self.unreported, unpriced=self.unpriced)
        if self.budget is not None:
            data["budget"] = attrs.asdict(self.budget)
        return data


def _counted(usage: Usage) -> tuple[Usage, int, int]:
    """``usage`` made plausible (see :func:`_plausible`), as an addition to an account's
    counts (a call, its tokens, whether they were reported), and the bits of the counts it
    knows: for the calls :meth:`UsageLedger.settle` does not count itself, those that report
    parts of their tokens apart or a count no call can have."""
    added, known = 1, 0
    for name, shift, bit in COUNTED:
        tokens = getattr(usage, name)
        if tokens is not None:
            if not _is_count(tokens):
                return _counted(_plausible(usage))
            added += tokens << shift
            known |= bit
    if not _is_seconds(usage.seconds):
        return _counted(_plausible(usage))
    if known & REPORTED != REPORTED:
        added += ONE_UNREPORTED
    return usage, added, known


def _plausible(usage: Usage) -> Usage:
    """``usage`` without what no call can report: a count that is not a whole number from 0
    below ``LIMIT`` is unknown, seconds that are not a number from 0 below ``SECONDS`` are 0.
    What a provider got wrong is neither summed nor priced."""
    changes: dict[str, Any] = {
        name: None
        for name, _, _ in COUNTED
        if (tokens := getattr(usage, name)) is not None and not _is_count(tokens)
    }
    if not _is_seconds(usage.seconds):
        changes["seconds"] = 0.0
    return attrs.evolve(usage, **changes)


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value < LIMIT  # bool is not a count


def _is_seconds(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value < SECONDS


EMPTY = Usage()
REPLY = "reply"  # the label of a reply's account: no budget, so no error names it


class Where:
    """Where replies happen: the ledger holding their accounts, the hubs they speak in and
    the enclosing reply's scope. One is shared by every reply a pool drives at once, so such
    a reply's scope records little more than its agent's name. Made by :func:`new_where`."""

    __slots__ = ("_names", "hubs", "ledger", "outer")

    ledger: UsageLedger
    hubs: tuple[MsgHub, ...]
    outer: Scope | None
    _names: tuple[str, ...] | None

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the hubs, the enclosing replies' first (worked out when first asked)."""
        names = self._names
        if names is None:
            found = list(self.outer.hubs) if self.outer is not None else []
            found.extend(hub.name for hub in self.hubs if hub.name not in found)
            names = self._names = tuple(found)
        return names


def new_where(
    ledger: UsageLedger, hubs: tuple[MsgHub, ...] = (), outer: Scope | None = None
) -> Where:
    """Replies charged in ``ledger``, in ``hubs``, inside ``outer`` (the enclosing reply's
    scope, if any)."""
    found = _bare(Where)
    found.ledger, found.hubs, found.outer = ledger, hubs, outer
    found._names = None if hubs or outer is not None else ()
    return found


class Scope:
    """Who a model call is made for: the agent, the hubs it speaks in (:attr:`hubs`), and the
    :attr:`accounts` the call is charged to besides the kernel's and its model's. Both are
    derived at the reply's first model call, as most replies make none. A reply's context
    holds its :data:`ScopeCell`; the Scope is made when first asked for (:func:`scope_of`):
    a million replies that call no model make none. Made by :func:`new_scope`."""

    __slots__ = ("_accounts", "_last", "_where", "agent", "reply")

    agent: str
    reply: Account | None  # the reply's own account, made at its first call
    _where: Where
    # (the kernel's account they were worked out for: cleared since?, the accounts)
    _accounts: tuple[Account, tuple[Account, ...]] | None
    _last: tuple[str, Account, Ticket] | None  # the last model called, the total, its ticket

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Scope is made by aopkit.usage.new_scope(agent, where)")

    @property
    def hubs(self) -> tuple[str, ...]:
        """The names of the hubs the reply is in, the enclosing replies' first."""
        return self._where.names

    @property
    def accounts(self) -> tuple[Account, ...]:
        """Every account a call in this scope is charged to: the enclosing replies', the
        agent's, its hubs' (each once), and the reply's own last. Worked out again once the
        totals are cleared (:meth:`UsageLedger.clear` makes new agent accounts); the reply's
        own account stays."""
        found, where = self._accounts, self._where
        total = where.ledger.total
        if found is not None and found[0] is total:
            return found[1]
        outer = where.outer  # its accounts first, outside the lock: they take it
        charged = list(outer.accounts) if outer is not None else []
        own = where.ledger.agent(self.agent)
        if own not in charged:
            charged.append(own)
        for hub in where.hubs:
            if hub.usage not in charged:
                charged.append(hub.usage)
        reply = self.reply or Account(REPLY)
        _LOCK.acquire()  # tools in worker threads may share the scope
        try:
            found = self._accounts
            if found is None or found[0] is not total:
                if self.reply is None:
                    self.reply = reply
                found = self._accounts = (total, (*charged, self.reply))
        finally:
            _LOCK.release()
        return found[1]

    def used(self) -> dict[str, Any] | None:
        """What the reply's model calls used, as data (see :meth:`Account.usage_data`); None
        if it made none."""
        reply = self.reply
        return reply.usage_data() if reply is not None and reply._sums else None

    def ticket(self, model: str) -> Ticket:
        """The ticket of a call of ``model`` in this scope that reserves nothing: charged to
        the kernel's account, the model's and :attr:`accounts`. Kept for the last model
        called (and made again after the totals are cleared), not made per call; a ticket
        names no scope, so keeping one makes no reference cycle."""
        ledger = self._where.ledger
        last = self._last
        if last is not None and last[0] == model and last[1] is ledger.total:
            return last[2]
        found = Ticket(model, (ledger.total, ledger._model(model), *self.accounts))
        self._last = (model, ledger.total, found)
        return found


def new_scope(agent: str, where: Where) -> Scope:
    """The scope of a reply of ``agent`` happening ``where``. A function filling a bare
    :class:`Scope`, not a class call: on CPython that costs a third less, and every reply
    makes one."""
    scope = _bare(Scope)
    scope.agent, scope._where = agent, where
    scope.reply = scope._accounts = scope._last = None
    return scope


_bare = object.__new__


ScopeCell = list[Any]
"""What a reply's context holds: ``[agent, where, scope]``, the :class:`Scope` None until
first asked for (:func:`scope_of`). A list, made by a literal: it costs a quarter of a Scope,
and every reply makes one. Mutable and shared: the tasks a reply starts copy its context,
and a Scope made in any of them is the reply's own."""

SCOPE: ContextVar[ScopeCell | None] = ContextVar("aopkit_usage_scope", default=None)


def scope_of(cell: ScopeCell) -> Scope:
    """The scope of the reply whose context holds ``cell``, made at the first ask."""
    found: Scope | None = cell[2]
    if found is None:
        made = new_scope(cell[0], cell[1])
        _LOCK.acquire()  # tools in worker threads may ask at once: one scope wins
        try:
            found = cell[2]
            if found is None:
                found = cell[2] = made
        finally:
            _LOCK.release()
    return found


def current_scope() -> Scope | None:
    """The scope of the reply under way in this task (None outside any agent's reply)."""
    cell = SCOPE.get()
    return None if cell is None else cell[2] or scope_of(cell)


class Ticket:
    """A call admitted: the accounts it is charged to and what it reserved (if a budget
    applied when it started), released when it ends. One that reserves nothing serves every
    call of its model in its scope."""

    __slots__ = ("accounts", "cost", "held", "model", "tokens")

    def __init__(
        self,
        model: str,
        accounts: tuple[Account, ...],
        held: bool = False,
        tokens: int = 0,
        cost: float = 0.0,
    ) -> None:
        self.model, self.accounts = model, accounts
        self.held, self.tokens, self.cost = held, tokens, cost


class UsageLedger:
    """``kernel.usage``: totals for the kernel, per agent (by name) and per model, budgets on
    the kernel and on agents, and :meth:`render`, the usage report."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.total = Account("kernel")
        self.agents: dict[str, Account] = {}
        self.models: dict[str, Account] = {}
        self.outside = Account("calls outside any agent's reply")

    @property
    def budget(self) -> Budget | None:
        """The kernel's budget: every call of every agent counts towards it."""
        return self.total.budget

    @budget.setter
    def budget(self, budget: Budget | None) -> None:
        self.total.budget = checked_budget(budget)

    def agent(self, name: str) -> Account:
        """The account of agent ``name`` (sessions of one agent share it)."""
        found = self.agents.get(name)
        if found is None:
            with _LOCK:
                found = self.agents.setdefault(name, Account(f"agent {name!r}"))
        return found

    def _model(self, name: str) -> Account:
        found = self.models.get(name)
        if found is None:
            with _LOCK:
                found = self.models.setdefault(name, Account(f"model {name!r}"))
        return found

    def clear(self) -> None:
        """Forget the totals (budgets stay, and start counting again from zero)."""
        with _LOCK:
            self.total = Account("kernel", self.total.budget)
            self.agents = {n: Account(a.label, a.budget) for n, a in self.agents.items()}
            self.models = {}
            self.outside = Account(self.outside.label)

    # -- the scope of a reply -------------------------------------------------------------------
    def enter(self, agent: str, hubs: Sequence[MsgHub]) -> ScopeCell:
        """The scope cell of a reply of ``agent`` in ``hubs``, inside the scope under way (if
        any): its calls count towards the enclosing replies too."""
        return [agent, new_where(self, tuple(hubs) if hubs else (), current_scope()), None]

    # -- around each call -----------------------------------------------------------------------
    def reserve(
        self, model: str, messages: Sequence[Msg], tools: Sequence[ToolSpec] = ()
    ) -> tuple[Ticket, Scope | None]:
        """Admit one call of ``model`` in every account it is charged to, reserving its
        expected use where a budget applies, or raise :class:`BudgetExceeded` (emitting
        ``budget_reached``) if a budget would be exceeded. Returns the call's ticket and the
        scope it is made in (None outside any agent's reply)."""
        cell = SCOPE.get()  # current_scope(), inlined: it is on every call's path
        scope = None if cell is None else cell[2] or scope_of(cell)
        ticket = scope.ticket(model) if scope is not None else self._outside(model)
        accounts = ticket.accounts
        for account in accounts:  # a loop, not a list of budgets: on every call's path
            if account.budget is not None:
                break
        else:
            return ticket, scope
        budgets = [a.budget for a in accounts if a.budget is not None]
        tokens = 0
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
                for account in accounts:
                    account._hold(1, tokens, expected or 0.0)
        if refusal is None:
            return Ticket(model, accounts, True, tokens, expected or 0.0), scope
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
        try:
            raise refusal
        finally:
            del refusal  # its traceback holds this frame: no local may hold it (a cycle)

    def settle(
        self, ticket: Ticket, reported: Usage | None, retries: int, *, report: bool = True
    ) -> dict[str, Any] | None:
        """Release ``ticket`` and charge the call as made: its usage, priced. Returns that one
        call's usage as data (for its ``model_call_finished`` event) if ``report``."""
        u = reported or EMPTY
        tokens_in, tokens_out, seconds = u.input_tokens, u.output_tokens, u.seconds
        if (  # what most calls report, counted here: a call, its input and output tokens
            type(tokens_in) is int
            and type(tokens_out) is int
            and 0 <= tokens_in | tokens_out < LIMIT
            and type(seconds) is float
            and 0.0 <= seconds < SECONDS
            and u.cached_input_tokens is None
            and u.cache_write_tokens is None
            and u.reasoning_tokens is None
        ):
            added, known = 1 + (tokens_in << IN) + (tokens_out << OUT), REPORTED
        else:
            u, added, known = _counted(u)
        price = self.kernel.prices.get(ticket.model)
        cost = price.cost(u) if price is not None else None
        if cost is None:
            added += ONE_UNPRICED
        else:
            known |= KNOWN_COST
        if retries:
            added += retries << RETRIES
        seconds, accounts = u.seconds, ticket.accounts
        _LOCK.acquire()  # not ``with``: that costs twice as much, on every call
        try:
            for account in accounts:
                account._sums += added
                account._known |= known
                account._seconds += seconds
            if cost is not None:
                for account in accounts:
                    account._cost += cost
            if ticket.held:
                for account in accounts:
                    account._hold(-1, ticket.tokens, ticket.cost)
        finally:
            _LOCK.release()
        if not report:
            return None
        return {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "seconds": seconds,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "calls": 1,
            "retries": retries,
            "cost": cost,
        }

    def replayed(self, model: str, reported: Usage | None) -> None:
        """Charge a model answer a durable run replays from its journal: the call was made
        (and paid) before a restart, so it counts where the call would, but nothing refuses it."""
        scope = current_scope()
        ticket = scope.ticket(model) if scope is not None else self._outside(model)
        self.settle(ticket, reported, 0, report=False)

    def _outside(self, model: str) -> Ticket:
        """The ticket of a call of ``model`` made outside any agent's reply."""
        return Ticket(model, (self.total, self._model(model), self.outside))

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
            agents = [(n, a) for n, a in self.agents.items() if a.calls or a.refused]
            if self.outside.calls:
                agents.append(("(no agent)", self.outside))
            models = list(self.models.items())
            budgeted = [a for a in (total, *self.agents.values()) if a.budget is not None]
            agent_rows = [(n, a.usage) for n, a in [*agents, ("total", total)]]
            model_rows = [(n, a.usage) for n, a in models]
        if not total.calls and not total.refused:
            return "Usage report: no model calls."
        lines = ["Usage report:", *_table("agent", agent_rows), "", *_table("model", model_rows)]
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


def _cells(u: Usage) -> tuple[str, ...]:
    counts = (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens)
    tokens = tuple("?" if n is None else str(n) for n in counts)
    cost = "?" if u.cost is None else dollars(u.cost)
    return (str(u.calls), str(u.retries), *tokens, cost)


def _table(first: str, usages: Sequence[tuple[str, Usage]]) -> list[str]:
    rows = [(first, *COLUMNS)] + [(cell(name), *_cells(u)) for name, u in usages]
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


CHARS = operator.attrgetter("_chars")  # each message's and tool's, counted once


def estimate_tokens(messages: Sequence[Msg], tools: Sequence[ToolSpec] = ()) -> int:
    """What a call's input is expected to use, for budgets: a token per four characters of its
    text, tool calls, tool results and tool schemas; media count nothing. A rough floor, not
    a promise: a call that passes may still use more, and then the next call is refused.
    Each message and tool is counted once and remembered, so a call costs an addition per
    message of its history."""
    chars: int = sum(map(CHARS, tools)) + sum(map(CHARS, messages))
    return math.ceil(chars / 4)
