"""``make demo``'s live page: a demo operator for ``dbopt serve``, and the address to print."""

from __future__ import annotations

import secrets
from pathlib import Path

from streams.config import Settings

from .auth import hash_password


def demo_login(env: dict[str, str], settings: Settings, directory: Path) -> str:
    """Put an operator ``demo`` (its password kept in ``directory/ui-password``) into ``env``'s
    ``DBOPT_UI_USERS`` and the page's address into ``DBOPT_UI_URL`` (notifications link to it),
    unless they are set already; returns the line that tells where the page is."""
    url = f"http://{settings.serve.host}:{settings.serve.port}"
    env.setdefault("DBOPT_UI_URL", url)
    if env.get("DBOPT_UI_USERS"):
        return f"live page: {url} (users from DBOPT_UI_USERS)"
    kept = directory / "ui-password"
    if not kept.exists():
        directory.mkdir(parents=True, exist_ok=True)
        kept.write_text(secrets.token_urlsafe(12))
        kept.chmod(0o600)
    password = kept.read_text().strip()
    env["DBOPT_UI_USERS"] = f"demo:operator:{hash_password(password)}"
    return f"live page: {url} (log in as demo, password {password}; kept in {kept})"
