"""What tokens cost: prices per ``provider:model``, registered by plugins, overridden by the
program. aopkit ships no figures: prices change, and a wrong one is worse than none."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .errors import AopkitError

if TYPE_CHECKING:
    from .models import Usage
    from .registry import Registry

PER = 1_000_000
MAX_RATE = 1e9  # far above any real price, low enough that no total can overflow to infinity


def _rate(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None and attribute.name not in ("input", "output"):
        return
    if type(value) is bool or not isinstance(value, (int, float)) or value != value:
        raise AopkitError(f"price {attribute.name}: expected a number, got {value!r:.40}")
    if value < 0:
        raise AopkitError(f"price {attribute.name}: a price cannot be negative, got {value}")
    if value > MAX_RATE:
        raise AopkitError(
            f"price {attribute.name}: at most {MAX_RATE:,.0f} dollars per million tokens, "
            f"got {value!r:.40} (a cost must stay a finite number to be stored and traced)"
        )


@attrs.frozen
class Price:
    """US dollars per million tokens. Cached input, cache writes and reasoning cost what plain
    input, input and output cost unless the provider prices them apart."""

    input: float = attrs.field(validator=_rate)
    output: float = attrs.field(validator=_rate)
    cached_input: float | None = attrs.field(default=None, validator=_rate, kw_only=True)
    cache_write: float | None = attrs.field(default=None, validator=_rate, kw_only=True)
    reasoning: float | None = attrs.field(default=None, validator=_rate, kw_only=True)

    @classmethod
    def of(cls, value: Price | Mapping[str, Any]) -> Price:
        """A Price, or one from a mapping of its fields (``{"input": 0.15, "output": 0.6}``)."""
        if isinstance(value, Price):
            return value
        if not isinstance(value, Mapping):
            raise AopkitError(f"a price is a Price or a mapping of its rates, got {value!r:.60}")
        unknown = set(value) - {a.name for a in attrs.fields(cls)}
        if unknown:
            raise AopkitError(f"price: unknown rate(s) {', '.join(sorted(map(str, unknown)))}")
        try:
            return cls(**value)
        except TypeError as exc:
            raise AopkitError(f"price: {exc}") from None

    def cost(self, usage: Usage) -> float | None:
        """The cost of ``usage``, or None when its input or output count is unknown. Parts
        that were not reported (cached, reasoning) are charged at the full rate."""
        if usage.input_tokens is None or usage.output_tokens is None:
            return None
        cached = usage.cached_input_tokens or 0
        written = usage.cache_write_tokens or 0
        reasoning = usage.reasoning_tokens or 0
        plain_input = max(usage.input_tokens - cached - written, 0)
        plain_output = max(usage.output_tokens - reasoning, 0)
        dollars = (
            plain_input * self.input
            + cached * _or(self.cached_input, self.input)
            + written * _or(self.cache_write, self.input)
            + plain_output * self.output
            + reasoning * _or(self.reasoning, self.output)
        )
        return dollars / PER


def _or(rate: float | None, fallback: float) -> float:
    return fallback if rate is None else rate


class PriceTable:
    """``kernel.prices``: the program's prices (set here) over those plugins registered
    through the ``register_prices`` hook; keys are ``provider:model`` names."""

    def __init__(self, registered: Registry) -> None:
        self._registered = registered
        self._own: dict[str, Price] = {}

    def get(self, model: str) -> Price | None:
        found = self._own.get(model)
        return found if found is not None else self._registered.get(model)

    def __getitem__(self, model: str) -> Price:
        found = self.get(model)
        if found is None:
            raise KeyError(model)
        return found

    def __setitem__(self, model: str, price: Price | Mapping[str, Any]) -> None:
        self._own[_model_name(model)] = Price.of(price)

    def __delitem__(self, model: str) -> None:
        """Forget the program's price for ``model`` (a plugin's price, if any, applies again)."""
        del self._own[model]

    def update(self, prices: Mapping[str, Price | Mapping[str, Any]]) -> None:
        if not isinstance(prices, Mapping):
            raise AopkitError(
                f"prices are a mapping of 'provider:model' names to prices, got {prices!r:.60}"
            )
        checked = {_model_name(name): Price.of(price) for name, price in prices.items()}
        self._own.update(checked)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.get(model) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._registered, *self._own}))

    def __len__(self) -> int:
        return len({*self._registered, *self._own})


def _model_name(name: Any) -> str:
    if not isinstance(name, str) or not name.partition(":")[2] or not name.partition(":")[0]:
        raise AopkitError(f"prices are set per 'provider:model' name, got {name!r:.60}")
    return name


def price_entry(model: str, price: Price | Mapping[str, Any]) -> tuple[str, Price]:
    """What a ``register_prices`` call adds to the registry, checked."""
    return _model_name(model), Price.of(price)
