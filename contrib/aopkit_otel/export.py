"""One call from nothing to traces and metrics at an OTLP/HTTP collector: ``setup(endpoint)``.

The SDK and the exporter are imported here, on first use, so ``instrument`` works with the
OpenTelemetry API alone.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aopkit
from aopkit.secret import Secret, Secrets

if TYPE_CHECKING:
    from . import OtelSink


class Telemetry:
    """What :func:`setup` installed: the providers, the sink on the kernel. Close it (``with``,
    ``async with``, :meth:`shutdown` or :meth:`aclose`) to send what is buffered and stop."""

    def __init__(
        self,
        endpoint: str,
        tracer_provider: Any,
        meter_provider: Any,
        kernel: aopkit.Kernel,
        sink: OtelSink,
    ) -> None:
        self.endpoint = endpoint
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.kernel = kernel
        self.sink = sink
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Telemetry to {self.kernel.secrets.redact(self.endpoint)} {state}>"

    def flush(self, timeout: float = 10.0) -> bool:
        """Export every finished span and the metrics now; False if it did not finish in time.
        It blocks: in async code use :meth:`aflush`."""
        millis = int(timeout * 1000)
        spans = bool(self.tracer_provider.force_flush(millis))
        return bool(self.meter_provider.force_flush(millis)) and spans

    def shutdown(self) -> None:
        """Stop listening to the kernel, export what is left, and close the exporters. Safe to
        call twice. It blocks: in async code use :meth:`aclose`."""
        if self.closed:
            return
        self.closed = True
        if self.kernel.pm.get_plugin("otel") is self.sink:
            self.kernel.unregister("otel")
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()

    async def aflush(self, timeout: float = 10.0) -> bool:
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.shutdown)

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> Telemetry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def setup(
    endpoint: str = "http://127.0.0.1:4318",
    *,
    service_name: str = "aopkit",
    headers: Mapping[str, str | Secret] | None = None,
    kernel: aopkit.Kernel | None = None,
    capture_content: bool = False,
    timeout: float = 10.0,
    metric_interval: float = 60.0,
    set_global: bool = True,
) -> Telemetry:
    """Export ``kernel``'s spans (batched) and metrics (every ``metric_interval`` seconds) to
    the OTLP/HTTP collector at ``endpoint`` (its ``/v1/traces`` and ``/v1/metrics``).

    ``kernel`` defaults to the default kernel. ``headers`` (an auth token, say) go to the
    collector only: they join ``kernel.secrets``, so no aopkit text shows them. With
    ``set_global`` the providers become OpenTelemetry's global ones (the first setup in a
    process wins), so your own spans and other instrumentations export too.
    """
    base = _check_endpoint(endpoint)
    _check_options(service_name, headers, timeout, metric_interval)
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise aopkit.AopkitError(
            f"aopkit_otel.setup needs the OpenTelemetry SDK and OTLP exporter: "
            f"pip install 'aopkit[otel]' ({exc})"
        ) from None

    from . import instrument

    if kernel is None:
        from aopkit.kernel import default_kernel

        kernel = default_kernel()
    if kernel.pm.get_plugin("otel") is not None:
        raise aopkit.AopkitError(
            "aopkit_otel.setup: this kernel is already instrumented (plugin 'otel'); close "
            "that Telemetry first, or unregister the sink"
        )
    # Every header value is taken for a credential: collectors name their keys freely.
    secret_headers = {name: Secret(value) for name, value in (headers or {}).items()}
    kernel.secrets.add_headers(secret_headers)
    kernel.secrets.add_url(base)
    sent = {name: value.reveal() for name, value in secret_headers.items()}
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=sent, timeout=timeout)
        )
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=sent, timeout=timeout),
        export_interval_millis=metric_interval * 1000,
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    sink = instrument(
        kernel,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
    )
    return Telemetry(base, tracer_provider, meter_provider, kernel, sink)


def _check_endpoint(endpoint: str) -> str:
    """The collector's base URL, or a clear error (credentials in it redacted)."""
    try:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        if parts is not None:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise aopkit.AopkitError(
            f"aopkit_otel.setup: endpoint {_shown(endpoint)} is not an http(s) URL of an "
            "OTLP/HTTP collector, e.g. 'http://127.0.0.1:4318'"
        )
    return endpoint.rstrip("/")


def _check_options(
    service_name: object, headers: object, timeout: object, metric_interval: object
) -> None:
    """Refuse bad options before anything starts (the span exporter starts a thread)."""
    problems = []
    if not isinstance(service_name, str) or not service_name.strip():
        problems.append(f"service_name must be a non-empty str, got {service_name!r:.60}")
    if headers is not None and not (
        isinstance(headers, Mapping)
        and all(
            isinstance(k, str) and k.strip() and k.isprintable() and _header_value(v)
            for k, v in headers.items()
        )
    ):
        problems.append(
            "headers must be a mapping of header names to str or Secret values, got "
            f"{type(headers).__name__}"  # not the values: they are credentials
        )
    for name, value in (("timeout", timeout), ("metric_interval", metric_interval)):
        if not _positive(value):
            problems.append(f"{name} must be a positive number of seconds, got {value!r:.40}")
    if problems:
        raise aopkit.AopkitError(f"aopkit_otel.setup: {'; '.join(problems)}")


def _header_value(value: object) -> bool:
    """A str or Secret with no line break or control character (the HTTP client would refuse
    it later, on the exporter's thread, quoting the value in its log)."""
    text = value.reveal() if isinstance(value, Secret) else value
    return isinstance(text, str) and text.isprintable()


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _shown(endpoint: object) -> str:
    """The endpoint for an error message, without the credentials it may hold."""
    if not isinstance(endpoint, str):
        return f"of type {type(endpoint).__name__}"
    secrets = Secrets()
    try:
        secrets.add_url(endpoint)
    except ValueError:
        return "(unparsable)"
    return repr(secrets.redact(endpoint))
