"""Which proxy a model call goes through: ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and
``NO_PROXY`` in the kernel's environment, read as curl reads them (the lower-case name first).

An ``https://`` call goes through a tunnel the proxy opens (``CONNECT``), so the proxy sees
where the call goes but nothing of what it says; an ``http://`` call is sent to the proxy
whole. Credentials in a proxy's URL are sent to the proxy only, and join the kernel's secrets.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from .wire import Proxy, Target, WireError, routed

_ROUTES_KEPT = 256  # the routes worked out, by target: a kernel calls a handful of servers


class Proxies:
    """The proxies of one kernel's environment (see :func:`proxies_of`)."""

    def __init__(
        self,
        http: Proxy | WireError | None,
        https: Proxy | WireError | None,
        no_proxy: str,
    ) -> None:
        self.http, self.https = http, https
        self.bypass = [_Bypass.of(entry) for entry in no_proxy.split(",") if entry.strip()]
        self._routes: dict[Target, Target] = {}

    def route(self, where: Target) -> Target:
        """``where``, or where its requests go through the proxy that serves its scheme."""
        found = self._routes.get(where)
        if found is None:
            proxy = self.https if where.tls else self.http
            if isinstance(proxy, WireError):
                raise proxy
            if proxy is None or any(b.matches(where.host, where.port) for b in self.bypass):
                found = where
            else:
                found = routed(where, proxy)
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            self._routes[where] = found
        return found

    def secrets(self) -> list[str]:
        """What the proxies' credentials look like in text (see :attr:`Proxy.secrets`)."""
        return [
            secret
            for proxy in (self.http, self.https)
            if isinstance(proxy, Proxy)
            for secret in proxy.secrets
        ]


def proxies_of(environ: Mapping[str, str]) -> Proxies | None:
    """The proxies ``environ`` names, or None if it names none. ``HTTP_PROXY`` in upper case is
    not read where ``REQUEST_METHOD`` is set: in a CGI script a client's ``Proxy:`` header
    arrives as that variable ("httpoxy")."""
    cgi = "REQUEST_METHOD" in environ

    def setting(name: str) -> tuple[str, str] | None:
        names = [name.lower()] if cgi and name == "HTTP_PROXY" else [name.lower(), name]
        for found in names:
            value = environ.get(found, "").strip()
            if value:
                return found, value
        return None

    fallback = setting("ALL_PROXY")
    http = setting("HTTP_PROXY") or fallback
    https = setting("HTTPS_PROXY") or fallback
    if http is None and https is None:
        return None
    no_proxy = setting("NO_PROXY")
    return Proxies(
        _proxy(*http) if http else None,
        _proxy(*https) if https else None,
        no_proxy[1] if no_proxy else "",
    )


def _proxy(variable: str, url: str) -> Proxy | WireError:
    """The proxy ``url`` names (``host:port`` alone means ``http://host:port``), or the error
    each call through it raises: a proxy reached over TLS or SOCKS is not spoken here."""
    if "://" not in url:
        url = f"http://{url}"
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:
        parts, port = None, 0
    if parts is None or not parts.hostname:
        return WireError(f"{variable} is not a proxy URL (http://host:port)", rejected=True)
    if parts.scheme != "http":
        return WireError(
            f"{variable} names a {parts.scheme}:// proxy; aopkit speaks to http:// proxies "
            "only (an https:// call is still encrypted end to end through one)",
            rejected=True,
        )
    host = parts.hostname
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if parts.username is None:
        return Proxy(host, port, shown, "", ())
    password = unquote(parts.password or "")
    token = base64.b64encode(f"{unquote(parts.username)}:{password}".encode()).decode()
    secrets = (password, token) if password else ()
    return Proxy(host, port, shown, f"Proxy-Authorization: Basic {token}\r\n", secrets)


class _Bypass:
    """One ``NO_PROXY`` entry: ``*``, a name and its subdomains (``example.com``,
    ``.example.com``, ``*.example.com``), an address or a network (``10.0.0.0/8``), each
    with a port or not (``example.com:8080``, ``[::1]:8080``)."""

    def __init__(
        self, name: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network | None, port: int
    ) -> None:
        self.name, self.network, self.port = name, network, port

    @classmethod
    def of(cls, entry: str) -> _Bypass:
        entry, port = entry.strip().lower(), 0
        if entry.startswith("["):  # [v6]:port
            entry, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else 0
        elif entry.count(":") == 1:
            entry, _, given = entry.partition(":")
            port = int(given) if given.isdigit() else 0
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            network = None
        return cls(entry.lstrip("*").lstrip("."), network, port)

    def matches(self, host: str, port: int) -> bool:
        if self.port and self.port != port:
            return False
        if self.name == "":  # ``*``: every host
            return True
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        host = host.lower()
        return host == self.name or host.endswith(f".{self.name}")
