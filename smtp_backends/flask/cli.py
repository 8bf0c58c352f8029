"""The ``flask mail`` commands: ``flask mail send-test ADDRESS``."""

from __future__ import annotations

from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from smtp_backends import SMTPException

from .context import current_state
from .message import Message

__all__ = ("mail_cli", "send_test_command")


mail_cli = AppGroup("mail", help="Mail commands (smtp_backends.flask).")


def _describe(state: Any) -> str:
    mode = "implicit TLS" if state.use_ssl else "STARTTLS" if state.use_tls else "no TLS"
    login = f", login as {state.username}" if state.username and state.password else ""
    return f"{state.server}:{state.port} ({mode}{login})"


@mail_cli.command("send-test")
@click.argument("address")
@click.option("--sender", default=None, help="From address (default: MAIL_DEFAULT_SENDER).")
@click.option("--subject", default=None, help="Subject of the test message.")
def send_test_command(address: str, sender: str | None, subject: str | None) -> None:
    """Send a test message to ADDRESS with the app's mail settings."""
    state = current_state()
    if state is None:
        raise click.ClickException("This app is not set up with smtp_backends.flask (init_app).")
    if state.suppress:
        raise click.ClickException(
            "Sending is suppressed (MAIL_SUPPRESS_SEND, which defaults to TESTING): nothing sent."
        )
    app_name = current_app.name
    message = Message(
        subject or f"Test message from {app_name}",
        recipients=[address],
        sender=sender,
        body=(
            f"This is a test message from the Flask app {app_name!r}, sent with "
            f"smtp_backends through {_describe(state)}.\n"
        ),
    )
    click.echo(f"Sending a test message to {address} via {_describe(state)}...")
    try:
        with state.connect() as connection:
            refused = connection.send(message)
            reply = connection.last_response
    except (SMTPException, OSError, ValueError) as exc:
        raise click.ClickException(f"Sending failed: {type(exc).__name__}: {exc}") from exc
    for recipient, response in refused.items():
        click.echo(f"Refused {recipient}: {response.code} {response.message}", err=True)
    click.echo(f"Sent from {message.sender}. The server said: {reply}")
