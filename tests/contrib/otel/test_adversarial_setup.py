"""``aopkit_otel.setup`` given bad options: each is one clear error before anything starts (no
exporter thread, no sink on the kernel), and a credential in a header never shows in it."""

from __future__ import annotations

import threading

import pytest

import aopkit_otel
from aopkit import AopkitError
from aopkit.secret import Secret

TOKEN = "Bearer s3cr3t-t0ken"


@pytest.mark.parametrize(
    "options, says",
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"timeout": True}, "timeout must be a positive number"),
        ({"metric_interval": 0}, "metric_interval must be a positive number"),
        ({"metric_interval": float("inf")}, "metric_interval must be a positive number"),
        ({"headers": "authorization: x"}, "headers must be a mapping"),
        ({"headers": {"authorization": 12345}}, "headers must be a mapping"),
        ({"headers": {"bad\nname": TOKEN}}, "headers must be a mapping"),
        ({"headers": {"authorization": TOKEN + "\r\nX-Injected: 1"}}, "headers must be"),
        ({"headers": {"authorization": Secret(TOKEN + "\n")}}, "headers must be"),
        ({"service_name": ""}, "service_name must be a non-empty str"),
        ({"service_name": 5}, "service_name must be a non-empty str"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(kernel, options, says):
    threads = threading.active_count()
    with pytest.raises(AopkitError, match=f"^aopkit_otel.setup: {says}") as caught:
        aopkit_otel.setup("http://127.0.0.1:9", kernel=kernel, set_global=False, **options)
    assert "s3cr3t" not in str(caught.value)
    assert kernel.pm.get_plugin("otel") is None
    assert threading.active_count() == threads  # no exporter thread left behind


def test_good_headers_of_str_and_secret_are_accepted(kernel):
    headers = {"authorization": Secret(TOKEN), "x-tenant": "blue"}
    with aopkit_otel.setup(
        "http://127.0.0.1:9", kernel=kernel, set_global=False, headers=headers, timeout=0.5
    ) as telemetry:
        assert "s3cr3t" not in repr(telemetry)
        assert "s3cr3t" not in kernel.secrets.redact(f"sent {TOKEN}")
