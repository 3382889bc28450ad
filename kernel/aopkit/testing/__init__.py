"""Testing kit for aopkit programs and plugins.

- :mod:`aopkit.testing.plugin` — pytest fixtures (``kernel``, ``serve``, ``scripted``,
  ``cassette``), loaded by the ``pytest11`` entry point: installing aopkit is enough.
- :mod:`aopkit.testing.conformance` — the provider conformance suite, run by subclassing
  :class:`~aopkit.testing.conformance.ProviderConformance` with an adapter.
- :mod:`aopkit.testing.stores` — the session and journal store suite, run by subclassing
  :class:`~aopkit.testing.stores.StoreSuite` with a ``store_factory`` fixture.
- :mod:`aopkit.testing.fakes` — loopback fake servers of the first-party providers' APIs, and
  the :class:`~aopkit.testing.fakes.base.FakeServer` base to write one for another API.

Importing ``aopkit`` imports none of this, and nothing here but the pytest modules imports pytest.
"""
