"""The production policies as settings: plain data in, checked once, built once per process.

Each policy option of :class:`~smtp_backends.settings.MailerSettings` takes
what a settings file can hold (mappings, lists, strings, numbers) or the
ready object of the core:

============  ==============================================================  ===================
option        plain data                                                      ready object
============  ==============================================================  ===================
dkim          ``{"domain", "selector", "key_file"/"private_key"}``, or        ``DKIMSigner``
              ``{"keys": [...], "by_domain": {...}, "headers": [...]}``
oauth         ``"package.module.function"``, ``{"provider": "google", ...}``  a token provider
rate_limit    ``14`` (messages/s) or ``{"messages_per_second": 14, ...}``     ``RateLimiter``
failover      ``["smtp1:587", "smtp2:587"]`` or ``{"hosts": [...], ...}``     ``Failover``
proxy         ``"socks5h://user:pass@proxy:1080"``                            ``SMTPProxy``
dsn           ``{"notify": ["FAILURE"], "ret": "HDRS"}`` or ``"FAILURE"``     ``DSN``
============  ==============================================================  ===================

Plain data is checked here, with the user's name for the setting in every
error, and becomes a value that compares and hashes by its content (a
:class:`PolicySpec`, or the core's own value object for ``proxy`` and
``dsn``), so that two settings made from the same data are equal and share
one Mailer and one set of pools. Stateless objects (the DKIM signer, after
each key has signed a probe message) are made at the check; stateful ones
(a rate limiter's buckets, failover cool-downs, an OAuth provider's token
cache) are made by :meth:`PolicySpec.build`, which the sending layer calls
once per process and settings value. A ready object is used as it is,
shared by whoever holds it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import pathlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any

__all__ = (
    "KINDS",
    "POOL_KEYWORDS",
    "PolicySpec",
    "check_policy",
    "check_pool_keywords",
    "live_pool_keywords",
    "parse_policy_text",
    "ready",
)

#: The option kinds of :data:`smtp_backends.settings.OPTIONS` handled here.
KINDS = frozenset({"dkim", "oauth", "rate_limit", "failover", "proxy", "dsn"})

#: ``SMTPPool``/``SMTP`` keyword -> policy kind, for mappings of pool keywords (Celery).
POOL_KEYWORDS = {
    "dkim": "dkim",
    "oauth_token_generator": "oauth",
    "rate_limit": "rate_limit",
    "failover": "failover",
    "proxy": "proxy",
    "dsn": "dsn",
}

_RATE_KEYS = frozenset(
    {
        "messages_per_second",
        "recipients_per_minute",
        "burst",
        "recipient_burst",
        "min_rate_fraction",
        "backoff",
        "max_backoff",
        "recovery",
        "retries",
    }
)
_KEY_KEYS = frozenset({"domain", "selector", "key_file", "private_key", "algorithm"})
_SIGNER_KEYS = frozenset(
    {"keys", "by_domain", "headers", "oversign", "canonicalization", "require"}
)
_OAUTH_COMMON = frozenset({"refresh_margin", "default_lifetime"})
_OAUTH_KEYS = {
    "google": frozenset(
        {
            "service_account_file",
            "service_account_info",
            "subject",
            "scopes",
            "client_id",
            "client_secret",
            "refresh_token",
            "token_uri",
        }
    ),
    "microsoft": frozenset(
        {"client_id", "client_secret", "tenant", "authority_host", "scopes", "msal_options"}
    ),
    "callable": frozenset({"function"}),
}
# Values never shown in a repr or an error.
_SECRET_KEYS = frozenset(
    {"client_secret", "refresh_token", "private_key", "service_account_info", "msal_options"}
)


@dataclasses.dataclass(frozen=True)
class PolicySpec:
    """A policy given as plain data: checked, compared by content, built on demand.

    Attributes:
        kind: the policy (``"dkim"``, ``"oauth"``, ``"rate_limit"``, ``"failover"``).
        value: the checked data, frozen (equality and hash go by it).
        factory: makes the live object (called by :meth:`build`).
        stateful: the object holds state (buckets, cool-downs, a token cache):
            one per process and settings value. Otherwise it was made at the
            check and :attr:`made` holds it.
        made: the object made at the check (stateless policies).
    """

    kind: str
    value: Hashable
    factory: Callable[[], Any] = dataclasses.field(compare=False, repr=False)
    stateful: bool = dataclasses.field(default=True, compare=False)
    made: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"<{self.kind} {_shown(self.value)}>"

    def build(self) -> Any:
        """The live object: the one made at the check, or a new one (stateful)."""
        return self.made if not self.stateful else self.factory()


def ready(value: Any) -> Any:
    """The object to hand to the core now: a ready object, a stateless spec's
    object, or None for a stateful spec (built later, once per process)."""
    if isinstance(value, PolicySpec):
        return None if value.stateful else value.made
    return value


class _FrozenMap(tuple):  # type: ignore[type-arg]
    """A mapping's frozen form: its (key, value) pairs, sorted."""

    __slots__ = ()


def _shown(value: Any) -> str:
    # Secrets' values never shown.
    if isinstance(value, _FrozenMap):
        parts = [f"{k}=***" if k in _SECRET_KEYS else f"{k}={_shown(v)}" for k, v in value]
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, bytes):
        return "b'***'"
    return repr(value)


def _freeze(value: Any, name: str) -> Hashable:
    """``value`` as nested tuples (mappings as sorted pairs), for equality and hashing."""
    if isinstance(value, Mapping):
        return _FrozenMap(
            sorted(((str(k), _freeze(v, name)) for k, v in value.items()), key=lambda kv: kv[0])
        )
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item, name) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(item, name) for item in value)
    if isinstance(value, os.PathLike):
        path: str = os.fspath(value)
        return path
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{name} must hold plain data, not {type(value).__name__}.") from None
    hashable: Hashable = value
    return hashable


def _unknown(given: Mapping[str, Any], known: frozenset[str], name: str) -> None:
    unknown = set(given) - known
    if unknown:
        raise TypeError(
            f"Unknown key(s) in {name}: {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(sorted(known))})."
        )


def _named(name: str, call: Callable[[], Any]) -> Any:
    """``call()``, its errors prefixed with the user's setting name."""
    try:
        return call()
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except OSError as exc:  # a key file that cannot be read: a setting's error too
        raise ValueError(f"{name}: {exc}") from None
    except ImportError as exc:
        raise ImportError(f"{name}: {exc}") from None


def _import(path: str, name: str) -> Any:
    """The object at ``package.module.attribute`` (or ``package.module:attribute``)."""
    module_name, sep, attribute = path.partition(":")
    if not sep:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"{name} must be a dotted path (package.module.name), not {path!r}.")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"{name}: cannot import {path!r}: {exc}") from None
    return found


# ----------------------------------------------------------------------------- entry points


def check_policy(kind: str, value: Any, name: str) -> Any:
    """``value`` of a policy option checked: a :class:`PolicySpec`, a value object or
    the ready object itself.

    Args:
        kind: one of :data:`KINDS`.
        value: plain data or a ready object (None: the policy is off).
        name: the user's name for the setting, used in every error.

    Raises:
        TypeError / ValueError: invalid data (the message names the setting).
        ImportError: the policy's extra is not installed.
    """
    if value is None or isinstance(value, PolicySpec):
        return value
    if kind in ("proxy", "dsn"):
        return _CHECKS[kind](value, name)
    if not isinstance(value, (Mapping, list, tuple, str, int, float)) or isinstance(value, bool):
        return _CHECKS[kind](value, name)  # a ready object, or an error
    frozen = _freeze(value, name)
    # Settings are checked again whenever a framework rebuilds them (a Django
    # backend per send_mail() call): the same data is checked (key files read,
    # probe signatures made) once per process.
    key = (kind, frozen, name)
    found = _checked.get(key)
    if found is None:
        found = _CHECKS[kind](value, name, frozen)
        if len(_checked) >= _CHECKED_MAX:
            _checked.clear()
        _checked[key] = found
    return found


_checked: dict[tuple[str, Hashable, str], Any] = {}
_CHECKED_MAX = 256


def parse_policy_text(kind: str, text: str, name: str) -> Any:
    """An environment variable's text as a policy value: JSON for mappings and
    lists (``{...}``, ``[...]``), else the text (a URL, ``a:25,b:25``, a dotted
    path, ``FAILURE,DELAY``) or, for ``rate_limit``, a number of messages/s.

    Raises:
        ValueError: JSON that does not parse.
    """
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if kind == "rate_limit":
        try:
            return float(text)
        except ValueError:
            raise TypeError(f"{name} must be a number of messages per second or JSON.") from None
    return text


def check_pool_keywords(keywords: Mapping[str, Any], name: str) -> dict[str, Any]:
    """SMTPPool keywords with the policies' plain data checked (``name['dkim']``...)."""
    checked = dict(keywords)
    if not isinstance(checked.get("requiretls", False), bool):
        raise TypeError(f"{name}['requiretls'] must be True or False.")
    for keyword, kind in POOL_KEYWORDS.items():
        if checked.get(keyword) is not None:
            checked[keyword] = check_policy(kind, checked[keyword], f"{name}[{keyword!r}]")
    return checked


def live_pool_keywords(keywords: Mapping[str, Any], *, build: bool = True) -> dict[str, Any]:
    """Checked SMTPPool keywords with each policy's object in place of its spec.

    Args:
        build: make the stateful objects (else leave them out: for a check
            that must not start anything, such as a token provider).
    """
    live = dict(keywords)
    for keyword in POOL_KEYWORDS:
        value = live.get(keyword)
        if isinstance(value, PolicySpec):
            if build:
                live[keyword] = value.build()
            elif value.stateful:
                del live[keyword]
            else:
                live[keyword] = value.made
    return live


# ----------------------------------------------------------------------------- DKIM


def _dkim_key(data: Any, name: str, domain: str | None = None) -> Any:
    from .dkim import DKIMKey

    if isinstance(data, DKIMKey):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(
            f"{name} must be a mapping (domain, selector, key_file), not {type(data).__name__}."
        )
    _unknown(data, _KEY_KEYS, name)
    given = {k: v for k, v in data.items() if v is not None}
    if domain is not None:
        given.setdefault("domain", domain)
    for required in ("domain", "selector"):
        if required not in given:
            raise TypeError(f"{name} needs {required!r}.")
    if ("key_file" in given) == ("private_key" in given):
        raise TypeError(f"{name} needs one of 'key_file' or 'private_key'.")
    if "key_file" in given:
        path = given["key_file"]
        return _named(
            name,
            lambda: DKIMKey.from_file(
                path,
                domain=given["domain"],
                selector=given["selector"],
                algorithm=given.get("algorithm"),
            ),
        )
    return _named(
        name,
        lambda: DKIMKey(
            domain=given["domain"],
            selector=given["selector"],
            private_key=given["private_key"],
            algorithm=given.get("algorithm"),
        ),
    )


def _check_dkim(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .dkim import DKIMSigner

    if isinstance(value, DKIMSigner):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping (domain, selector, key_file... or keys, by_domain) "
            f"or a DKIMSigner, not {type(value).__name__}."
        )
    _unknown(value, _KEY_KEYS | _SIGNER_KEYS, name)
    keys = []
    if set(value) & _KEY_KEYS:
        keys.append(_dkim_key({k: value[k] for k in _KEY_KEYS if k in value}, name))
    listed = value.get("keys") or []
    if isinstance(listed, Mapping):
        listed = [listed]
    for index, item in enumerate(listed):
        keys.append(_dkim_key(item, f"{name}['keys'][{index}]"))
    by_domain: dict[str, list[Any]] = {}
    domains = value.get("by_domain") or {}
    if not isinstance(domains, Mapping):
        raise TypeError(f"{name}['by_domain'] must be a mapping domain -> key(s).")
    for domain, items in domains.items():
        where = f"{name}['by_domain'][{domain!r}]"
        items = [items] if isinstance(items, Mapping) else list(items)
        by_domain[domain] = [
            _dkim_key(item, f"{where}[{index}]" if len(items) > 1 else where, domain)
            for index, item in enumerate(items)
        ]
    options: dict[str, Any] = {}
    for key in ("headers", "oversign", "canonicalization"):
        if value.get(key) is not None:
            options[key] = value[key]
            if key != "canonicalization" and isinstance(options[key], list):
                options[key] = tuple(options[key])
    if isinstance(options.get("canonicalization"), list):
        options["canonicalization"] = tuple(options["canonicalization"])
    if value.get("require") is not None:
        if not isinstance(value["require"], bool):
            raise TypeError(f"{name}['require'] must be True or False.")
        options["require"] = value["require"]
    signer = _named(name, lambda: DKIMSigner(keys, by_domain=by_domain, **options))
    return PolicySpec("dkim", frozen, lambda: signer, stateful=False, made=signer)


# ----------------------------------------------------------------------------- OAuth 2.0


def _is_async_callable(value: Any) -> bool:
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004 - an async __call__ counts too
    )


def _check_oauth(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .oauth import CallableTokenProvider, OAuth2TokenProvider

    if isinstance(value, str):
        found = _import(value, name)
        if isinstance(found, type) and issubclass(found, OAuth2TokenProvider):
            return PolicySpec("oauth", frozen, found)
        spec = _check_oauth(found, name)
        if isinstance(spec, PolicySpec):
            return dataclasses.replace(spec, value=frozen)
        return PolicySpec("oauth", frozen, lambda: found, stateful=False, made=found)
    if isinstance(value, OAuth2TokenProvider) or _is_async_callable(value):
        return value
    if isinstance(value, Mapping):
        return _oauth_mapping(value, name, frozen)
    if callable(value):
        # A plain function returning a token: a provider caches what it returns.
        function = value
        return PolicySpec("oauth", ("callable", function), lambda: CallableTokenProvider(function))
    raise TypeError(
        f"{name} must be a dotted path, a mapping (provider: google / microsoft / ...), "
        f"a token provider or a callable, not {type(value).__name__}."
    )


def _oauth_mapping(value: Mapping[str, Any], name: str, frozen: Hashable) -> PolicySpec:
    from .oauth import CallableTokenProvider

    given = dict(value)
    provider = given.pop("provider", None)
    if not isinstance(provider, str) or not provider:
        raise TypeError(f"{name} needs 'provider': 'google', 'microsoft', 'callable' or a path.")
    common = {k: given.pop(k) for k in _OAUTH_COMMON if k in given}
    for key, number in common.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"{name}[{key!r}] must be a number of seconds.")
    if provider not in _OAUTH_KEYS:  # a factory: called with the other keys
        factory = _import(provider, f"{name}['provider']")
        if not callable(factory):
            raise TypeError(f"{name}['provider'] must name a callable, not {provider!r}.")
        options = {**given, **common}
        return PolicySpec("oauth", frozen, lambda: factory(**options))
    _unknown(given, _OAUTH_KEYS[provider], name)
    if provider == "callable":
        if not isinstance(given.get("function"), str):
            raise TypeError(f"{name}['function'] must be a dotted path to a function.")
        function = _import(given["function"], f"{name}['function']")
        if not callable(function):
            raise TypeError(f"{name}['function'] must name a callable.")
        return PolicySpec("oauth", frozen, lambda: CallableTokenProvider(function, **common))
    if provider == "google":
        return PolicySpec("oauth", frozen, _google_factory(given, common, name))
    return PolicySpec("oauth", frozen, _microsoft_factory(given, common, name))


def _strings(given: Mapping[str, Any], keys: tuple[str, ...], name: str) -> None:
    for key in keys:
        if key in given and not isinstance(given[key], str):
            raise TypeError(f"{name}[{key!r}] must be a str.")


def _google_factory(given: dict[str, Any], common: dict[str, Any], name: str) -> Callable[[], Any]:
    from .oauth import GMAIL_SCOPE, GoogleTokenProvider

    _named(name, lambda: importlib.import_module("google.oauth2.credentials"))
    _strings(given, ("service_account_file", "subject", "client_id", "token_uri"), name)
    scopes = given.get("scopes", [GMAIL_SCOPE])
    if isinstance(scopes, str):
        scopes = [scopes]
    account = "service_account_file" in given or "service_account_info" in given
    user = "refresh_token" in given
    if account == user:
        raise TypeError(
            f"{name} needs a service account ('service_account_file' or "
            "'service_account_info') or a user's 'refresh_token' with 'client_id' and "
            "'client_secret' (one of them)."
        )
    if account:
        info = given.get("service_account_info")
        if "service_account_file" in given:
            path = given["service_account_file"]
            info = _named(name, lambda: json.loads(pathlib.Path(path).read_text("utf-8")))
        if not isinstance(info, Mapping):
            raise TypeError(f"{name}: the service account key must be a JSON object.")
        subject = given.get("subject")
        return lambda: GoogleTokenProvider.from_service_account_info(
            info, subject=subject, scopes=scopes, **common
        )
    for required in ("client_id", "client_secret"):
        if required not in given:
            raise TypeError(f"{name} needs {required!r} with a 'refresh_token'.")

    def user_provider() -> Any:
        import google.oauth2.credentials

        credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=given["refresh_token"],
            client_id=given["client_id"],
            client_secret=given["client_secret"],
            token_uri=given.get("token_uri", "https://oauth2.googleapis.com/token"),
            scopes=list(scopes),
        )
        return GoogleTokenProvider(credentials, **common)

    return user_provider


def _microsoft_factory(
    given: dict[str, Any], common: dict[str, Any], name: str
) -> Callable[[], Any]:
    from .oauth import MicrosoftTokenProvider

    _named(name, lambda: importlib.import_module("msal"))
    for required in ("client_id", "client_secret", "tenant"):
        if not isinstance(given.get(required), str) or not given[required]:
            raise TypeError(f"{name} needs {required!r} (a str).")
    _strings(given, ("authority_host",), name)
    options = {k: v for k, v in given.items() if k not in ("client_id", "client_secret", "tenant")}
    if isinstance(options.get("scopes"), str):
        options["scopes"] = [options["scopes"]]
    return lambda: MicrosoftTokenProvider.for_client_credentials(
        given["client_id"], given["client_secret"], tenant=given["tenant"], **options, **common
    )


# ----------------------------------------------------------------------------- rate limits


def _check_rate_limit(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .ratelimit import RateLimiter, RedisRateLimiter

    if isinstance(value, RateLimiter):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"messages_per_second": value}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a number (messages per second), a mapping "
            f"(messages_per_second, recipients_per_minute, burst, redis_url...) or a "
            f"RateLimiter, not {type(value).__name__}."
        )
    _unknown(value, _RATE_KEYS | {"redis_url", "key"}, name)
    limits = {k: v for k, v in value.items() if k in _RATE_KEYS and v is not None}
    for key, number in limits.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"{name}[{key!r}] must be a number, not {number!r}.")
    _named(name, lambda: RateLimiter(**limits))  # every limit checked now
    url = value.get("redis_url")
    if url is None:
        return PolicySpec("rate_limit", frozen, lambda: RateLimiter(**limits))
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{name}['redis_url'] must be a redis:// URL.")
    key = value.get("key", "smtp_backends:ratelimit")
    if not isinstance(key, str) or not key:
        raise TypeError(f"{name}['key'] must be a non-empty str.")
    _named(name, lambda: RedisRateLimiter(url, key=key, **limits))  # the extra is there
    return PolicySpec("rate_limit", frozen, lambda: RedisRateLimiter(url, key=key, **limits))


# ----------------------------------------------------------------------------- failover


def _check_failover(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .failover import Failover

    if isinstance(value, Failover):
        return value
    cooldown: Any = 60.0
    hosts = value
    if isinstance(value, Mapping):
        _unknown(value, frozenset({"hosts", "cooldown"}), name)
        if "hosts" not in value:
            raise TypeError(f"{name} needs 'hosts'.")
        hosts, cooldown = value["hosts"], value.get("cooldown", 60.0)
    if isinstance(hosts, str):
        hosts = [host.strip() for host in hosts.split(",") if host.strip()]
    if not isinstance(hosts, (list, tuple)):
        raise TypeError(
            f"{name} must be a list of hosts ('smtp1.example.com:587'), a mapping "
            f"(hosts, cooldown) or a Failover, not {type(value).__name__}."
        )
    hosts = [tuple(host) if isinstance(host, list) else host for host in hosts]
    _named(name, lambda: Failover(hosts, cooldown=cooldown))
    return PolicySpec("failover", frozen, lambda: Failover(hosts, cooldown=cooldown))


# ----------------------------------------------------------------------------- proxy, DSN


def _check_proxy(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .proxy import SMTPProxy

    if isinstance(value, SMTPProxy):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a proxy URL (socks5h://host:1080, http://host:3128) or an "
            f"SMTPProxy, not {type(value).__name__}."
        )
    return _named(name, lambda: SMTPProxy(value))


def _check_dsn(value: Any, name: str, frozen: Hashable = None) -> Any:
    from .protocol.dsn import DSN

    if isinstance(value, DSN):
        return value
    if isinstance(value, str):
        value = {"notify": [word.strip() for word in value.split(",")]}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping (notify, ret, envid, orcpt), a NOTIFY list as "
            f"text ('FAILURE,DELAY') or a DSN, not {type(value).__name__}."
        )
    _unknown(value, frozenset({"notify", "ret", "envid", "orcpt"}), name)
    given = dict(value)
    if isinstance(given.get("notify"), str):  # "FAILURE,DELAY", as in the text form
        given["notify"] = [word.strip() for word in given["notify"].split(",")]
    return _named(name, lambda: DSN(**given))


_CHECKS: dict[str, Callable[..., Any]] = {
    "dkim": _check_dkim,
    "oauth": _check_oauth,
    "rate_limit": _check_rate_limit,
    "failover": _check_failover,
    "proxy": _check_proxy,
    "dsn": _check_dsn,
}
