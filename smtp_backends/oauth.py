"""OAuth 2.0 access tokens for XOAUTH2 that refresh themselves.

A token provider is an ``oauth_token_generator`` (an async callable returning
a token, aiosmtplib's contract), so it goes wherever one does::

    SMTP(hostname="smtp.gmail.com", port=465, use_tls=True, username="me@example.com",
         oauth_token_generator=GoogleTokenProvider(credentials))

On top of that contract a provider:

* caches the token until ``refresh_margin`` seconds before it expires, and
  fetches a new one once for all the connections asking at the same moment;
* has :meth:`OAuth2TokenProvider.refresh`: when the server answers 535 to
  XOAUTH2 (the token was revoked, or the clocks disagree), the client asks
  for a fresh token once and retries AUTH once.

Three providers: :class:`CallableTokenProvider` (any function returning a
token, or a token and its lifetime), :class:`GoogleTokenProvider`
(google-auth credentials, the ``google`` extra) and
:class:`MicrosoftTokenProvider` (an msal application, the ``msal`` extra).
The libraries are blocking: their calls run in the loop's default executor.
"""

from __future__ import annotations

import abc
import asyncio
import datetime
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .errors import SMTPAuthenticationError

__all__ = (
    "GMAIL_SCOPE",
    "OUTLOOK_SCOPE",
    "CallableTokenProvider",
    "GoogleTokenProvider",
    "MicrosoftTokenProvider",
    "OAuth2TokenProvider",
)

#: The scope Gmail's SMTP server wants.
GMAIL_SCOPE = "https://mail.google.com/"
#: The scope Exchange Online's SMTP server wants (client credentials flow).
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"

#: What a fetch returns: a token, ``(token, seconds_valid)`` (None: unknown
#: lifetime) or an OAuth token response (``access_token``, ``expires_in``).
TokenResult = str | tuple[str, float | None] | Mapping[str, Any]


def _parse(result: object) -> tuple[str, float | None]:
    """A token and its lifetime in seconds from whatever a fetch returned."""
    if isinstance(result, str):
        token, lifetime = result, None
    elif isinstance(result, tuple) and len(result) == 2:
        token, lifetime = result
    elif isinstance(result, Mapping):
        if "access_token" not in result:
            error = result.get("error_description") or result.get("error") or "no access_token"
            raise SMTPAuthenticationError(-1, f"Could not get an OAuth 2.0 token: {error}")
        token, lifetime = result["access_token"], result.get("expires_in")
    else:
        raise TypeError(
            "A token fetch must return a str, (token, seconds) or a token response mapping, "
            f"not {type(result).__name__}"
        )
    if not isinstance(token, str) or not token:
        raise SMTPAuthenticationError(-1, "Could not get an OAuth 2.0 token: empty token")
    if lifetime is not None:
        lifetime = float(lifetime)
    return token, lifetime


class OAuth2TokenProvider(abc.ABC):
    """Caches an access token until shortly before it expires.

    Subclasses implement :meth:`fetch`. Await the provider itself (it is an
    ``oauth_token_generator``) to get a valid token.

    Args:
        refresh_margin: fetch a new token this many seconds before the
            current one expires (default 60), so that a token never expires
            between being handed out and being used.
        default_lifetime: seconds to keep a token whose lifetime is unknown
            (default 300).

    Raises:
        ValueError: a negative margin or a non-positive lifetime.
    """

    def __init__(self, *, refresh_margin: float = 60.0, default_lifetime: float = 300.0) -> None:
        if not refresh_margin >= 0:
            raise ValueError(f"refresh_margin must be >= 0, not {refresh_margin!r}")
        if not default_lifetime > 0:
            raise ValueError(f"default_lifetime must be > 0, not {default_lifetime!r}")
        self.refresh_margin = float(refresh_margin)
        self.default_lifetime = float(default_lifetime)
        self._token: str | None = None
        self._fresh_until = 0.0
        # One fetch at a time per event loop, shared by every caller on it.
        self._pending: asyncio.Future[str] | None = None
        self._state = threading.Lock()
        #: How many tokens were fetched (for monitoring and tests).
        self.fetches = 0

    def __repr__(self) -> str:
        state = "cached" if self._token is not None else "empty"
        return f"<{type(self).__name__} {state}>"

    @abc.abstractmethod
    async def fetch(self) -> TokenResult:
        """Get a new token from the identity provider (no caching here).

        Returns:
            A token, ``(token, seconds_valid)`` or a token response mapping.

        Raises:
            SMTPAuthenticationError: the identity provider refused.
        """

    async def __call__(self) -> str:
        """A valid token: the cached one, or a fresh one when it is about to expire."""
        with self._state:
            token = self._token
            if token is not None and time.monotonic() < self._fresh_until:
                return token
        return await self._fetch_shared()

    async def refresh(self, rejected: str | None = None) -> str:
        """A new token, whatever the cache says (the server refused ``rejected``).

        When another caller already replaced ``rejected``, its new token is
        returned without a second fetch.
        """
        with self._state:
            if rejected is not None and self._token not in (None, rejected):
                assert self._token is not None
                return self._token
            self._token = None
        return await self._fetch_shared()

    def invalidate(self) -> None:
        """Forget the cached token: the next call fetches a new one."""
        with self._state:
            self._token = None

    async def _fetch_shared(self) -> str:
        loop = asyncio.get_running_loop()
        pending = self._pending
        if pending is None or pending.done() or pending.get_loop() is not loop:
            pending = self._pending = loop.create_task(self._fetch_and_store())
        # Shielded: one caller's cancellation must not cancel the others' fetch.
        return await asyncio.shield(pending)

    async def _fetch_and_store(self) -> str:
        started = time.monotonic()
        token, lifetime = _parse(await self.fetch())
        if lifetime is None:
            lifetime = self.default_lifetime
        with self._state:
            self.fetches += 1
            self._token = token
            # Counted from the request, not the answer: never later than the server's clock.
            self._fresh_until = started + max(0.0, lifetime - self.refresh_margin)
        return token


class CallableTokenProvider(OAuth2TokenProvider):
    """A provider over any function that gets a token.

    Args:
        fetch: called without arguments; returns (or, if async, resolves to)
            a token, ``(token, seconds_valid)`` or a token response mapping
            (``{"access_token": ..., "expires_in": ...}``). A plain function
            runs in the loop's default executor, so it may block.
        refresh_margin, default_lifetime: as :class:`OAuth2TokenProvider`.

    Raises:
        TypeError: ``fetch`` is not callable.
    """

    def __init__(
        self,
        fetch: Callable[[], TokenResult | Awaitable[TokenResult]],
        *,
        refresh_margin: float = 60.0,
        default_lifetime: float = 300.0,
    ) -> None:
        if not callable(fetch):
            raise TypeError(f"fetch must be callable, not {type(fetch).__name__}")
        super().__init__(refresh_margin=refresh_margin, default_lifetime=default_lifetime)
        self._function = fetch

    async def fetch(self) -> TokenResult:
        """Call the function (in the executor unless it is async)."""
        function = self._function
        result: Any
        if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 - an async __call__ counts too
        ):
            result = await function()  # type: ignore[misc]
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, function)
            if inspect.isawaitable(result):
                result = await result
        _parse(result)  # refuse a wrong type here, with the provider's name in the trace
        return result  # type: ignore[no-any-return]


def _seconds_until(expiry: datetime.datetime | None) -> float | None:
    """Seconds until google-auth's expiry (a naive UTC datetime), or None."""
    if expiry is None:
        return None
    if expiry.tzinfo is None:
        expiry = expiry.replace(tzinfo=datetime.timezone.utc)
    return (expiry - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


class GoogleTokenProvider(OAuth2TokenProvider):
    """Tokens from google-auth credentials (the ``google`` extra).

    Args:
        credentials: a ``google.auth.credentials.Credentials``: a service
            account's (with the ``https://mail.google.com/`` scope and, for
            Workspace domain-wide delegation, ``subject=`` the mailbox), or a
            user's (``google.oauth2.credentials.Credentials`` with a refresh
            token).
        request: the google-auth transport request to refresh with (default
            ``google.auth.transport.requests.Request()``).
        refresh_margin, default_lifetime: as :class:`OAuth2TokenProvider`.

    Raises:
        ImportError: google-auth (or requests) is not installed.
        TypeError: ``credentials`` cannot refresh.
    """

    def __init__(
        self,
        credentials: Any,
        *,
        request: Any = None,
        refresh_margin: float = 60.0,
        default_lifetime: float = 300.0,
    ) -> None:
        if not callable(getattr(credentials, "refresh", None)):
            raise TypeError("credentials must be google-auth credentials (with refresh())")
        if request is None:
            try:
                from google.auth.transport.requests import Request
            except ImportError:  # pragma: no cover - the extra is part of `dev`
                from .extras import install_hint

                raise ImportError(
                    f"GoogleTokenProvider needs google-auth and requests: {install_hint('google')}"
                ) from None
            request = Request()
        super().__init__(refresh_margin=refresh_margin, default_lifetime=default_lifetime)
        self._credentials = credentials
        self._request = request
        self._lock = threading.Lock()  # credentials objects are not thread-safe

    @classmethod
    def from_service_account_info(
        cls,
        info: Mapping[str, Any],
        *,
        subject: str | None = None,
        scopes: Sequence[str] = (GMAIL_SCOPE,),
        **options: Any,
    ) -> GoogleTokenProvider:
        """A provider for a service account's key (the JSON file's content, parsed).

        Args:
            subject: the mailbox to act as (Workspace domain-wide delegation).
            scopes: the scopes to ask for.
            options: the constructor's other keywords.
        """
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            dict(info), scopes=list(scopes), subject=subject
        )
        return cls(credentials, **options)

    def _refresh_blocking(self) -> tuple[str, float | None]:
        import google.auth.exceptions

        with self._lock:
            try:
                self._credentials.refresh(self._request)
            except google.auth.exceptions.GoogleAuthError as exc:
                raise SMTPAuthenticationError(
                    -1, f"Could not get an OAuth 2.0 token from Google: {exc}"
                ) from None
            return self._credentials.token, _seconds_until(self._credentials.expiry)

    async def fetch(self) -> TokenResult:
        """Refresh the credentials (in the executor) and return the new token."""
        return await asyncio.get_running_loop().run_in_executor(None, self._refresh_blocking)


class MicrosoftTokenProvider(OAuth2TokenProvider):
    """Tokens from an msal application (the ``msal`` extra).

    Args:
        app: a ``msal.ConfidentialClientApplication`` (client credentials:
            the app's own mailbox permissions) or any msal application with
            a signed-in ``account`` (tokens from its cache, refreshed silently).
        scopes: the scopes to ask for (default :data:`OUTLOOK_SCOPE`).
        account: for a user's tokens: the msal account to act as.
        refresh_margin, default_lifetime: as :class:`OAuth2TokenProvider`.

    Raises:
        TypeError: ``app`` is not an msal application.
    """

    def __init__(
        self,
        app: Any,
        *,
        scopes: Sequence[str] = (OUTLOOK_SCOPE,),
        account: Any = None,
        refresh_margin: float = 60.0,
        default_lifetime: float = 300.0,
    ) -> None:
        method = "acquire_token_silent" if account is not None else "acquire_token_for_client"
        if not callable(getattr(app, method, None)):
            raise TypeError(f"app must be an msal application with {method}()")
        if isinstance(scopes, str) or not scopes:
            raise ValueError("scopes must be a non-empty sequence of scope strings")
        super().__init__(refresh_margin=refresh_margin, default_lifetime=default_lifetime)
        self._app = app
        self._scopes = list(scopes)
        self._account = account
        self._force = False

    @classmethod
    def for_client_credentials(
        cls,
        client_id: str,
        client_secret: str,
        *,
        tenant: str,
        authority_host: str = "https://login.microsoftonline.com",
        **options: Any,
    ) -> MicrosoftTokenProvider:
        """A provider for an Entra ID app registration (client credentials flow).

        Args:
            client_id, client_secret: the app registration's.
            tenant: the directory (tenant) id or domain.
            authority_host: the identity platform (national clouds differ).
            options: ``scopes`` and the other keywords of the constructor,
                and ``msal_options`` (a dict) for ``ConfidentialClientApplication``.
        """
        try:
            import msal
        except ImportError:  # pragma: no cover - the extra is part of `dev`
            from .extras import install_hint

            raise ImportError(
                f"MicrosoftTokenProvider needs msal: {install_hint('msal')}"
            ) from None
        app = msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_secret,
            authority=f"{authority_host.rstrip('/')}/{tenant}",
            **options.pop("msal_options", {}),
        )
        return cls(app, **options)

    async def refresh(self, rejected: str | None = None) -> str:
        """As :meth:`OAuth2TokenProvider.refresh`; msal's own cache is bypassed too."""
        self._force = True
        return await super().refresh(rejected)

    def _acquire_blocking(self) -> Mapping[str, Any] | None:
        force, self._force = self._force, False
        if self._account is not None:
            result: Mapping[str, Any] | None = self._app.acquire_token_silent(
                self._scopes, account=self._account, force_refresh=force
            )
            return result
        if force:
            # msal answers client-credential requests from its cache while the
            # token lives; a token the server refused must not come back.
            self._app.remove_tokens_for_client()
        result = self._app.acquire_token_for_client(scopes=self._scopes)
        return result

    async def fetch(self) -> TokenResult:
        """Ask msal (in the executor): from its cache when valid, else from the endpoint."""
        result = await asyncio.get_running_loop().run_in_executor(None, self._acquire_blocking)
        if result is None:
            raise SMTPAuthenticationError(
                -1, "Could not get an OAuth 2.0 token from msal: no token for this account"
            )
        return result
