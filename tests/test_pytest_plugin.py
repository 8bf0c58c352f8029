"""The pytest plugin, tested with real inner pytest runs (pytester, each in a subprocess).

The inner runs load the plugin as a user's project does: through its ``pytest11`` entry
point (the package is installed in the test environment). Each framework's documented
example (docs/testing/*.md) runs unchanged.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from tests.test_docs_pages import EXAMPLES, ROOT, example

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, *args: str, inprocess: bool = False) -> pytest.RunResult:
    """An inner pytest run, in a fresh interpreter unless ``inprocess``.

    A fresh interpreter for Django settings and for counting threads and modules; in
    this process where the plugin's own lines should count towards coverage.
    """
    with pytest.MonkeyPatch.context() as patch:
        # pytest-django reads this before its ini option: the outer suite's must not leak in.
        patch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
        if inprocess:
            # The outer run's Django (set up by pytest-django) stays out of the inner run.
            return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:django", *args)
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def readme_test_example() -> str:
    """The README's "Testing with real mail" example (a test of the Django example's project)."""
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Testing with real mail\n.*?(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Testing with real mail' section"
    [block] = re.findall(r"```python\n(.*?)```", section.group(0), re.S)
    return block


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_documented_example_passes_unchanged(pytester: pytest.Pytester, name: str) -> None:
    _, files = example(name)
    if name == "django":  # the README's example runs on the same project
        files["test_readme.py"] = readme_test_example()
    for filename, text in files.items():
        (pytester.path / filename).write_text(text)
    # The plain asyncio example in this process: the async fixtures count for coverage.
    result = run(pytester, inprocess=name == "asyncio")
    result.assert_outcomes(passed=EXAMPLES[name] + (name == "django"))


def test_unused_plugin_starts_and_imports_nothing(pytester: pytest.Pytester) -> None:
    """Loaded in every run of a project that has the package, so it must cost nothing."""
    pytester.makepyfile(
        """
        import sys
        import threading

        def test_plain():
            assert "pytest_smtp_backends" in sys.modules  # loaded...
            assert [m for m in sys.modules if m.startswith("smtp_backends")] == []  # ...alone
            assert [t.name for t in threading.enumerate()] == ["MainThread"]
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_the_package_is_imported_as_outside_pytest(pytester: pytest.Pytester) -> None:
    """pytest would rewrite every module of a plugin's distribution; the plugin undoes that."""
    pytester.makepyfile(
        """
        import importlib.util
        import runpy
        import sys

        import pytest

        def test_loaders():
            for name in ("smtp_backends.__main__", "smtp_backends.testkit.outbox"):
                loader = importlib.util.find_spec(name).loader
                assert type(loader).__name__ == "SourceFileLoader", (name, loader)

        def test_runpy(monkeypatch, capsys):
            monkeypatch.setattr(sys, "argv", ["smtp_backends", "--help"])
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_module("smtp_backends", run_name="__main__", alter_sys=True)
            assert exit_info.value.code == 0
            assert "devserver" in capsys.readouterr().out
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_fixtures_are_listed_and_the_plugin_can_be_turned_off(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    listed = run(pytester, "--fixtures").stdout.str()
    for name in (
        "smtp_capture_server",
        "smtp_outbox",
        "django_smtp_outbox",
        "async_smtp_capture_server",
        "async_smtp_outbox",
    ):
        assert name in listed
    pytester.makepyfile(test_uses="def test_uses(smtp_outbox): pass")
    result = run(pytester, "-p", "no:smtp_backends", "test_uses.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'smtp_outbox' not found*"])


def test_pooled_connections_are_shut_down_between_tests(pytester: pytest.Pytester) -> None:
    """A Mailer keeps connections open across sends; the fixture closes them after the test."""
    pytester.makepyfile(
        """
        import sys
        from smtp_backends.mailer import Mailer
        from smtp_backends.settings import MailerSettings

        seen = {}

        def message(n):
            return ("app@example.com", ["ada@example.com"], f"Subject: {n}\\r\\n\\r\\nhi\\r\\n")

        def test_sends_twice_over_one_connection(smtp_outbox):
            mailer = Mailer(MailerSettings(host=smtp_outbox.host, port=smtp_outbox.port))
            for n in range(3):
                [outcome] = mailer.send([message(n)])
                assert isinstance(outcome, tuple)
            assert smtp_outbox.server.connections == 1
            assert [m.subject for m in smtp_outbox.wait_for_count(3)] == ["0", "1", "2"]
            assert len(mailer.pools) == 1
            seen["mailer"], seen["pool"] = mailer, mailer.pools[0]

        def test_the_next_test_starts_afresh(smtp_outbox):
            assert seen["pool"].closed and seen["mailer"].pools == []
            assert "smtp_backends.bridge" in sys.modules
            from smtp_backends import bridge
            assert bridge._bridge is None  # stopped, started again on the next send
            assert len(smtp_outbox) == 0  # a new server, a new outbox
        """
    )
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    run(pytester, inprocess=True).assert_outcomes(passed=2)


def test_django_settings_are_restored_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        settings="""
        SECRET_KEY = "x"
        MAILERS = {
            "default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"},
            "bulk": {"BACKEND": "django.core.mail.backends.console.EmailBackend"},
        }
        """,
        test_restored="""
        import pytest
        from django.conf import settings
        from django.core import mail
        from smtp_backends.django.config import HAS_MAILERS

        LOCMEM = "django.core.mail.backends.locmem.EmailBackend"

        def test_pointed(django_smtp_outbox):
            mail.send_mail("Hi", "body", "a@example.com", ["b@example.com"])
            assert django_smtp_outbox.wait_for(subject="Hi").envelope_to == ("b@example.com",)
            assert mail.outbox == []
            if HAS_MAILERS:  # the other alias keeps the test runner's locmem
                assert settings.MAILERS["bulk"]["BACKEND"] == LOCMEM

        def test_another_alias(smtp_outbox):
            if not HAS_MAILERS:
                with pytest.raises(ValueError, match="needs Django 6.1.s MAILERS setting"):
                    smtp_outbox.use_django(alias="bulk")
                return
            smtp_outbox.use_django(alias="bulk")
            message = mail.EmailMessage("Bulk", "x", "a@example.com", ["c@example.com"])
            mail.mailers["bulk"].send_messages([message])
            smtp_outbox.wait_for(subject="Bulk", to="c@example.com")
            assert settings.MAILERS["default"]["BACKEND"] == LOCMEM

        def test_after():
            if HAS_MAILERS:
                assert {m["BACKEND"] for m in settings.MAILERS.values()} == {LOCMEM}
            else:
                assert settings.EMAIL_BACKEND == LOCMEM
            mail.send_mail("Hi", "body", "a@example.com", ["b@example.com"])
            assert len(mail.outbox) == 1
        """,
    )
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\n")
    run(pytester).assert_outcomes(passed=3)


def test_django_project_without_mailers(pytester: pytest.Pytester) -> None:
    """A project still on EMAIL_BACKEND: on 6.1 the test gets a MAILERS, with no warning."""
    pytester.makepyfile(
        settings="""
        SECRET_KEY = "x"
        EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
        """,
        test_legacy="""
        from django.conf import settings
        from django.core import mail
        from smtp_backends.django.config import HAS_MAILERS

        def test_pointed(django_smtp_outbox):
            mail.send_mail("Hi", "body", "a@example.com", ["b@example.com"])
            django_smtp_outbox.wait_for(subject="Hi")
            assert hasattr(settings, "MAILERS") == HAS_MAILERS

        def test_after():
            assert not hasattr(settings, "MAILERS")
            assert settings.EMAIL_BACKEND == "django.core.mail.backends.locmem.EmailBackend"
        """,
    )
    pytester.makeini(
        "[pytest]\nDJANGO_SETTINGS_MODULE = settings\npythonpath = .\n"
        "filterwarnings =\n    error\n    ignore:The EMAIL_BACKEND setting is deprecated\n"
        "    ignore:.*asyncio_default_fixture_loop_scope\n"
    )
    run(pytester).assert_outcomes(passed=2)


def test_flask_state_is_restored_and_errors_are_clear(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from flask import Flask
            from smtp_backends.flask import Mail, Message

            mail = Mail()
            app = Flask("app")
            app.config.update(TESTING=True, MAIL_SERVER="smtp.example.com", MAIL_PORT=2525,
                              MAIL_USE_TLS=True, MAIL_USERNAME="u", MAIL_PASSWORD="p",
                              MAIL_DEFAULT_SENDER="app@example.com")
            mail.init_app(app)

            def test_sends_for_real(smtp_outbox):
                smtp_outbox.use_flask(app)
                with app.app_context():
                    mail.send(Message("Real", recipients=["ada@example.com"], body="x"))
                smtp_outbox.wait_for(subject="Real").assert_to("ada@example.com")

            def test_restored():
                state = app.extensions["mail"]
                assert (state.server, state.port, state.use_tls, state.username) == (
                    "smtp.example.com", 2525, True, "u")
                assert state.suppress is True and state.pool is None

            def test_an_app_without_mail(smtp_outbox):
                with pytest.raises(RuntimeError, match="init_app"):
                    smtp_outbox.use_flask(Flask("other"))
            """
        )
    )
    run(pytester).assert_outcomes(passed=3)


def test_a_timeout_says_what_arrived(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import smtplib

        def test_wrong_subject(smtp_outbox):
            with smtplib.SMTP(smtp_outbox.host, smtp_outbox.port) as client:
                client.sendmail("a@example.com", ["ada@example.com"], "Subject: Hello\\r\\n\\r\\nx")
            smtp_outbox.wait_for(subject="Welcome", timeout=0.2)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected 1 message(s) with subject='Welcome' within 0.2 s, got 0;*",
            "*'Hello' to ada@example.com*",
        ]
    )


def test_async_fixtures_without_pytest_asyncio_say_so(pytester: pytest.Pytester) -> None:
    """Without pytest-asyncio installed, the async fixtures fail with what to install."""
    pytester.makepyfile(
        """
        import builtins
        import sys

        real_import = builtins.__import__

        def no_pytest_asyncio(name, *args, **kwargs):
            if name == "pytest_asyncio":
                raise ImportError(name)
            return real_import(name, *args, **kwargs)

        builtins.__import__ = no_pytest_asyncio
        try:
            import pytest_smtp_backends as plugin
            server, outbox = plugin._async_fixtures()
        finally:
            builtins.__import__ = real_import

        async_smtp_outbox = outbox

        def test_async(async_smtp_outbox):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*async_smtp_outbox needs pytest-asyncio*"])
