import pytest

from aopkit.net import is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"])
def test_loopback_addresses_are_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    ["", "0.0.0.0", "::", "[::]", "10.0.0.1", "example.org", "127.0.0.1.example.org",
     "localhost.example.org", "LOCALHOST.", "127.0.0.1 ", "::ffff:0.0.0.0"],
)  # fmt: skip
def test_anything_else_may_reach_the_network(host):
    assert not is_loopback(host)
