"""The findings of ``check``, and how they read as text."""

from __future__ import annotations

from typing import Any

__all__ = ("Report", "render")


class Report:
    """What the check found: facts (for JSON and text), warnings and failures."""

    def __init__(self, target: str) -> None:
        self.data: dict[str, Any] = {"target": target}
        self.warnings: list[str] = []
        self.failures: list[str] = []

    @property
    def verdict(self) -> str:
        """FAIL with any failure, else WARN with any warning, else OK."""
        if self.failures:
            return "FAIL"
        return "WARN" if self.warnings else "OK"


def render(report: Report, where: str) -> str:
    """The report as text, ending with the verdict line."""
    data = report.data
    lines = [f"Checking {where}"]
    if "peer" in data:
        lines.append(f"  connected to {data['peer'][0]} in {data['connect_ms']} ms")
        lines.append(f"  greeting:   {data['greeting']}")
    if "ehlo" in data:
        lines.append(f"  EHLO:       {data['ehlo']}")
        lines.append(f"  extensions: {_extensions(data['extensions'])}")
    tls = data.get("tls")
    if tls:
        how = "implicit TLS"
        if data.get("tls_mode") == "starttls":
            how = f"STARTTLS (handshake {tls['handshake_ms']} ms)"
        lines.append(f"  TLS:        {how}, {tls['version']}, {tls['cipher']} ({tls['bits']} bits)")
        for number, cert in enumerate(tls["chain"]):
            days = cert["days_left"]
            lines.append(f"  certificate {number}: {cert['subject']}")
            lines.append(f"      issuer:  {cert['issuer']}")
            if cert["names"]:
                lines.append(f"      names:   {', '.join(cert['names'])}")
            if cert["not_after"]:
                lines.append(f"      expires: {cert['not_after']} ({days:.0f} days left)")
        host = where.rpartition(":")[0].strip("[]")
        if tls["verified"]:
            lines.append(f"  verified:   yes, the chain is trusted and valid for {host}")
        else:
            reason = tls.get("verify_error", "verification turned off")
            lines.append(f"  verified:   NO ({reason})")
            if tls["name_matches"] is not None:
                match = "yes" if tls["name_matches"] else "no"
                lines.append(f"  names match {host}: {match}")
        if "extensions_after_tls" in data:
            lines.append(f"  after TLS:  {_extensions(data['extensions_after_tls'])}")
    elif data.get("tls_mode") == "none":
        lines.append("  TLS:        none")
    if "auth_mechanisms" in data:
        mechanisms = " ".join(data["auth_mechanisms"]) or "none offered"
        lines.append(f"  AUTH:       {mechanisms}")
    if "login" in data:
        login = data["login"]
        state = f"accepted ({login['reply']})" if login["accepted"] else "refused"
        lines.append(f"  login:      {login['username']}: {state}")
    if "skipped" in data:
        lines.append(f"  skipped:    {data['skipped']}")
    if "test_message" in data:
        test = data["test_message"]
        state = f"accepted ({test['reply']})" if test.get("accepted") else "not accepted"
        lines.append(f"  test:       {test['from']} -> {test['to']}: {state}")
    verdict = report.verdict
    reasons = report.failures if verdict == "FAIL" else report.warnings
    if verdict == "OK":
        reasons = [f"{where} accepts mail" + (" over TLS" if tls else "")]
    lines.append(f"{verdict}: {'; '.join(reasons)}")
    return "\n".join(lines) + "\n"


def _extensions(extensions: dict[str, str]) -> str:
    return (
        ", ".join(f"{name.upper()} {params}".strip() for name, params in extensions.items())
        or "none"
    )
