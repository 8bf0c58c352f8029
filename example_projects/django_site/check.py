"""The smoke check behind ``run --check``: one mail through the site, found in the inbox.

Usage: ``python check.py SITE_URL INBOX_URL``. Sends the contact form the way a browser
does (CSRF cookie and token included), then polls the inbox's ``/api/messages`` until the
mail is there. Standard library only. Exits 0 when the mail arrived, 1 otherwise.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

SUBJECT = "Hello from the smoke check"
TIMEOUT = 10.0


def send_contact_form(site_url: str) -> None:
    """GET the contact form, then POST it; raise unless the thanks page comes back."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    url = urllib.parse.urljoin(site_url, "contact/")
    with opener.open(url, timeout=TIMEOUT) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if token is None:
        raise RuntimeError(f"no CSRF token in {url}")
    form = {
        "csrfmiddlewaretoken": token.group(1),
        "name": "Smoke Check",
        "email": "smoke@example.com",
        "subject": SUBJECT,
        "message": "If you can read this, the site's mail reached the inbox.",
    }
    data = urllib.parse.urlencode(form).encode()
    with opener.open(url, data=data, timeout=TIMEOUT) as response:
        if 'id="thanks"' not in response.read().decode():
            raise RuntimeError("the contact form did not answer with its thanks page")


def wait_for_mail(inbox_url: str) -> dict[str, Any]:
    """Poll the inbox's JSON API until the check's mail is there; raise after TIMEOUT."""
    api = urllib.parse.urljoin(inbox_url, "api/messages")
    deadline = time.monotonic() + TIMEOUT
    while True:
        with urllib.request.urlopen(api, timeout=TIMEOUT) as response:
            messages: list[dict[str, Any]] = json.load(response)
        for message in messages:
            if SUBJECT in message["subject"]:
                return message
        if time.monotonic() > deadline:
            raise RuntimeError(f"no mail with subject {SUBJECT!r} in {api} after {TIMEOUT} s")
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    """Run the check; print what happened. Returns the exit status."""
    if len(argv) != 2:
        print("usage: python check.py SITE_URL INBOX_URL", file=sys.stderr)
        return 2
    site_url, inbox_url = argv
    try:
        print(f"==> sending the contact form at {site_url}contact/")
        send_contact_form(site_url)
        print(f"==> looking for the mail in {inbox_url}")
        message = wait_for_mail(inbox_url)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"OK: the site's mail reached the inbox: {message['subject']!r} "
        f"from {message['envelope_from']} to {', '.join(message['envelope_to'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
