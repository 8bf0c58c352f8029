"""The one list of aiosmtplib's tests that are left out here, each with its reason.

Every test file of aiosmtplib's suite (for the installed version) runs against
smtp_backends; a test is left out only for one of these reasons:

* :data:`INTERNALS`: it reaches into aiosmtplib's private internals (its protocol
  class, private attributes and methods, helper modules that are not in its
  ``__all__``), which smtp_backends does not reproduce;
* :data:`DIFFERENCES`: it asserts a behaviour in which smtp_backends differs on
  purpose (each is also listed in the README's aiosmtplib section);
* :data:`ENVIRONMENT`: it cannot run on this Python at all (empty where it can).

Keys are test ids under aiosmtplib's ``tests/`` directory, ``file.py::test_name``;
an id names every parametrisation of the test. The harness checks that each listed
test exists upstream and still fails here (a listed test that passes must leave the
list), and that every other test passes.
"""

from __future__ import annotations

import email.errors

__all__ = ("DIFFERENCES", "ENVIRONMENT", "INTERNALS", "LEFT_OUT")


def _each(names: str, reason: str) -> dict[str, str]:
    """One reason for several tests (``names``: one test id a line)."""
    return {name.strip(): reason for name in names.split() if name.strip()}


_PROTOCOL = (
    "drives aiosmtplib.protocol (SMTPProtocol, FlowControlMixin) directly; our "
    "reply parsing and its caps are the sans-IO core's (tests/test_protocol_replies.py, "
    "tests/test_protocol_connection.py, tests/test_misbehaving_servers.py)"
)
_AUTH_DUMMY = (
    "uses DummySMTPAuth, which overrides SMTP.execute_command and "
    "_ehlo_or_helo_if_needed and sets esmtp_extensions/server_auth_methods (read-only "
    "here): our AUTH runs through the sans-IO exchange, not execute_command "
    "(tests/test_protocol_auth.py, tests/test_client_tls.py)"
)
_AUTH_UTILS = (
    "tests aiosmtplib.auth's encoders, private helpers; ours are "
    "smtp_backends.protocol.auth (tests/test_protocol_auth.py)"
)
_EMAIL_UTILS = (
    "tests aiosmtplib.email's helpers, private (not in its __all__); ours are in "
    "smtp_backends.message and protocol.commands (tests/test_message.py, "
    "tests/test_protocol_commands.py)"
)
_ESMTP_UTILS = (
    "tests aiosmtplib.esmtp.parse_esmtp_extensions, a private helper; ours is "
    "protocol.extensions.Extensions.parse (tests/test_protocol_extensions.py)"
)
_CONNECT_LOCK = "asserts on SMTP._connect_lock, a private attribute"

INTERNALS: dict[str, str] = {
    **_each(
        """
        test_protocol.py::test_protocol_connect
        test_protocol.py::test_protocol_read_limit_overrun
        test_protocol.py::test_protocol_response_no_newline_overrun
        test_protocol.py::test_protocol_response_continuation_overrun
        test_protocol.py::test_protocol_connected_check_on_read_response
        test_protocol.py::test_protocol_read_only_transport_error
        test_protocol.py::test_protocol_connected_check_on_start_tls
        test_protocol.py::test_protocol_already_over_tls_check_on_start_tls
        test_protocol.py::test_protocol_connection_reset_on_starttls
        test_protocol.py::test_protocol_timeout_on_starttls
        test_protocol.py::test_protocol_discards_buffer_before_tls_handshake
        test_protocol.py::test_error_on_readline_with_partial_line
        test_protocol.py::test_protocol_error_on_readline_with_malformed_response
        test_protocol.py::test_protocol_response_waiter_unset
        test_protocol.py::test_protocol_data_received_called_twice
        test_protocol.py::test_protocol_eof_response
        test_protocol.py::test_protocol_exception_cleanup_warning
        test_protocol.py::test_protocol_get_close_waiter
        test_protocol.py::test_protocol_missing_command_lock_disconnected
        test_protocol.py::test_flow_control_mixin_drain
        test_protocol.py::test_flow_control_mixin_drain_incomplete
        test_protocol.py::test_flow_control_mixin_connection_lost_exception
        test_protocol.py::test_flow_control_mixin_connection_lost_no_exception
        test_protocol.py::test_flow_control_mixin_connection_lost_done
        test_protocol.py::test_flow_control_mixin_drain_helper
        test_protocol.py::test_flow_control_mixin_drain_helper_connection_lost
        test_protocol.py::test_protocol_connection_lost_after_quit_resolves_waiter
        test_protocol.py::test_protocol_connection_lost_without_quit_raises
        test_protocol.py::test_protocol_execute_command_rejects_injected_args
        test_protocol.py::test_protocol_execute_command_rejects_injected_option
        test_protocol.py::test_protocol_ignores_unsolicited_data_between_commands
        test_protocol.py::test_protocol_ignores_unsolicited_multiline_data
        test_protocol.py::test_protocol_ignores_unsolicited_partial_data
        test_protocol.py::test_protocol_data_received_without_response_waiter
        test_timeouts.py::test_protocol_read_response_with_timeout_times_out
        test_timeouts.py::test_protocol_timeout_on_starttls
        test_timeouts.py::test_protocol_connection_aborted_on_starttls
        """,
        _PROTOCOL,
    ),
    **_each(
        """
        test_auth_methods.py::test_login_without_extension_raises_error
        test_auth_methods.py::test_login_unknown_method_raises_error
        test_auth_methods.py::test_login_without_method_raises_error
        test_auth_methods.py::test_login_tries_all_methods
        test_auth_methods.py::test_login_all_methods_fail_raises_error
        test_auth_methods.py::test_auth_plain_success
        test_auth_methods.py::test_auth_plain_success_bytes
        test_auth_methods.py::test_auth_plain_error
        test_auth_methods.py::test_auth_login_success
        test_auth_methods.py::test_auth_login_success_bytes
        test_auth_methods.py::test_auth_login_error
        test_auth_methods.py::test_auth_plain_continue_error
        test_auth_methods.py::test_auth_crammd5_success
        test_auth_methods.py::test_auth_crammd5_success_bytes
        test_auth_methods.py::test_auth_crammd5_initial_error
        test_auth_methods.py::test_auth_crammd5_continue_error
        test_auth_methods.py::test_auth_crammd5_invalid_challenge_raises_auth_error
        test_auth_methods.py::test_login_falls_back_after_invalid_crammd5_challenge
        test_auth_methods.py::test_auth_xoauth2_success
        test_auth_methods.py::test_auth_xoauth2_success_bytes
        test_auth_methods.py::test_auth_xoauth2_error
        test_auth_methods.py::test_auth_xoauth2_challenge_error
        test_auth_methods.py::test_maybe_login_with_oauth_token_generator
        test_auth_methods.py::test_auth_crammd5_passes_timeout
        """,
        _AUTH_DUMMY,
    ),
    **_each(
        """
        test_auth_utils.py::test_auth_crammd5_verify_bytes
        test_auth_utils.py::test_auth_crammd5_verify_str
        test_auth_utils.py::test_auth_crammd5_verify_invalid_challenge
        test_auth_utils.py::test_auth_plain_encode_bytes
        test_auth_utils.py::test_auth_plain_encode_str
        test_auth_utils.py::test_auth_login_encode_bytes
        test_auth_utils.py::test_auth_login_encode_str
        test_auth_utils.py::test_auth_xoauth2_encode_bytes
        test_auth_utils.py::test_auth_xoauth2_encode_str
        test_auth_utils.py::test_auth_xoauth2_encode_known_value
        """,
        _AUTH_UTILS,
    ),
    **_each(
        """
        test_email_utils.py::test_parse_address_with_display_names
        test_email_utils.py::test_parse_address
        test_email_utils.py::test_quote_address_with_display_names
        test_email_utils.py::test_quote_address
        test_email_utils.py::test_parse_address_rejects_injection
        test_email_utils.py::test_parse_address_allows_quoted_local_part
        test_email_utils.py::test_flatten_message
        test_email_utils.py::test_flatten_message_utf8_options
        test_email_utils.py::test_flatten_message_removes_bcc_from_message_text
        test_email_utils.py::test_flatten_resent_message
        test_email_utils.py::test_extract_recipients
        test_email_utils.py::test_extract_recipients_includes_bcc
        test_email_utils.py::test_extract_recipients_invalid_email
        test_email_utils.py::test_extract_recipients_with_iterable_of_strings
        test_email_utils.py::test_extract_recipients_resent_message
        test_email_utils.py::test_extract_recipients_valueerror_on_multiple_resent_message
        test_email_utils.py::test_extract_sender
        test_email_utils.py::test_extract_sender_prefers_sender_header
        test_email_utils.py::test_extract_sender_resent_message
        test_email_utils.py::test_extract_sender_valueerror_on_multiple_resent_message
        test_email_utils.py::test_extract_sender_empty_address_returns_none
        """,
        _EMAIL_UTILS,
    ),
    **_each(
        """
        test_esmtp_utils.py::test_basic_extension_parsing
        test_esmtp_utils.py::test_no_extension_parsing
        test_esmtp_utils.py::test_auth_type_parsing
        test_esmtp_utils.py::test_old_school_auth_type_parsing
        test_esmtp_utils.py::test_mixed_auth_type_parsing
        test_esmtp_utils.py::test_old_school_multiple_auth_type_parsing
        test_esmtp_utils.py::test_old_school_only_auth_no_junk
        test_esmtp_utils.py::test_leading_whitespace_extension_parsing
        test_esmtp_utils.py::test_blank_line_no_empty_keyword
        """,
        _ESMTP_UTILS,
    ),
    **_each(
        """
        test_connect.py::test_server_unexpected_disconnect_on_starttls_then_reconnect
        test_connect.py::test_server_unexpected_disconnect_on_data_then_reconnect
        test_connect.py::test_server_unexpected_disconnect_with_delay
        test_connect.py::test_stale_connection_lost_does_not_sabotage_reconnect
        """,
        _CONNECT_LOCK,
    ),
    "test_connect.py::test_connect_with_no_starttls_support": (
        "asserts on SMTP.protocol._over_ssl, a private attribute of aiosmtplib's protocol"
    ),
    "test_tls.py::test_starttls_sets_protocol_over_ssl": (
        "asserts on SMTP.protocol._over_ssl, a private attribute of aiosmtplib's protocol"
    ),
    "test_connect.py::test_disconnected_server_raises_on_starttls": (
        "replaces SMTP._ehlo_or_helo_if_needed with a function of no argument; ours is "
        "called with the timeout"
    ),
    "test_connect.py::test_create_connection_runtime_error_on_missing_loop": (
        "calls SMTP._create_connection, a private method"
    ),
    "test_connect.py::test_oauth_token_generator_without_username": (
        "sets SMTP._oauth_token_generator, a private attribute; the behaviour is "
        "tests/test_client_tls.py::test_oauth_without_username_is_refused_before_any_auth"
    ),
    "test_connect.py::test_connect_cancellation_releases_lock": (
        "patches SMTP._get_default_local_hostname, a private method, and asserts on "
        "SMTP._connect_lock"
    ),
    "test_config.py::test_config_via_connect_kwargs": (
        "asserts on SMTP._start_tls_on_connect, a private attribute; the rest of it is "
        "tests/test_client.py::test_connect_keywords_override_constructor"
    ),
}

_SMUGGLE = "test_commands.py::test_send_message_compat32_does_not_smuggle_envelope_commands"

DIFFERENCES: dict[str, str] = {
    "test_sendmail.py::test_sendmail_simple_failure": (
        "sends the sender '@@' to see the server refuse it; we refuse such an address "
        "with ValueError before anything is written (tests/test_protocol_commands.py)"
    ),
    "test_connect.py::test_server_unexpected_disconnect_on_command_then_reconnect": (
        "the server says 250 and then, unasked, 221 and closes; we end the session at "
        "that 221 (tests/test_protocol_connection.py, unsolicited-221-closes), where "
        "aiosmtplib takes it for the reply to the next command"
    ),
    "test_main.py::test_command_line_send": (
        "runs aiosmtplib's interactive `python -m aiosmtplib` prompt; our command line is "
        "`python -m smtp_backends` with its own subcommands (tests/test_cli.py)"
    ),
}
if hasattr(email.errors, "HeaderWriteError"):
    DIFFERENCES[_SMUGGLE] = (
        "a From header with a line break in it: this Python's address parser gives no "
        "sender, and we raise ValueError before anything is sent, where aiosmtplib raises "
        "the generator's HeaderWriteError; no command is smuggled either way"
    )

#: Tests that cannot run on this interpreter, whatever the library.
ENVIRONMENT: dict[str, str] = (
    {}
    if hasattr(email.errors, "HeaderWriteError")
    else {
        _SMUGGLE: (
            "uses email.errors.HeaderWriteError, which this Python lacks (added with the "
            "CVE-2024-6923 fix in 3.11.10, 3.12.5 and 3.13); it runs on Python 3.13"
        ),
    }
)

#: Every test left out, with its reason.
LEFT_OUT: dict[str, str] = {**INTERNALS, **DIFFERENCES, **ENVIRONMENT}
