"""How to install an extra, said the same way by every message that needs one.

The package is not on PyPI yet (the name ``smtp-backends`` is reserved there for the
first release), so ``pip install 'smtp-backends[dkim]'`` would not install it today:
a hint gives the commands that work now, from a clone or from the git URL the README's
install section documents, and then the one that will work once it is released.
"""

from __future__ import annotations

__all__ = ("GIT_URL", "install_hint")

#: The git URL of the README's install section.
GIT_URL = "git+https://<host>/<owner>/smtp_backends.git"


def install_hint(extra: str) -> str:
    """The pip commands that install the ``extra`` of this package.

    >>> install_hint("dkim").split(", or ")[0]
    "pip install '.[dkim]' in a clone of smtp_backends"
    """
    return (
        f"pip install '.[{extra}]' in a clone of smtp_backends, or "
        f"pip install 'smtp-backends[{extra}] @ {GIT_URL}' "
        f"(once released on PyPI: pip install 'smtp-backends[{extra}]')"
    )
