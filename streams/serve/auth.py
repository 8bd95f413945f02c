"""Who may use ``dbopt serve``, and what they may do (pure but for bcrypt's hashing).

``DBOPT_UI_USERS`` is a comma list of ``name:role:hash`` entries: roles ``viewer`` (sees
everything, changes nothing) and ``operator`` (also approves, dismisses, sends emergency
commands). The hash is bcrypt's (``$2b$12$...``: salted, deliberately slow, and written with
neither commas nor colons, so it fits the list as it is); ``dbopt ui hash-password`` makes one.

bcrypt costs about a quarter of a second per check on purpose. HTTP basic auth sends the password
with every request, so a successful check is remembered for :data:`CACHE_TTL_S` under an HMAC of
the name and password with a key that lives only in this process (never the password itself).
An unknown name is checked against a dummy hash, so answers take as long for every name.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further: longer passwords are refused, not silently cut
DEFAULT_ROUNDS = 12
CACHE_TTL_S = 300.0
CACHE_SIZE = 1024


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str = field(repr=False)

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def parse_users(text: str) -> dict[str, User]:
    """``DBOPT_UI_USERS`` -> users by name; ``ValueError`` names the entry, never shows a hash."""
    users: dict[str, User] = {}
    for number, entry in enumerate((e.strip() for e in text.split(",") if e.strip()), start=1):
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"entry {number} is not name:role:hash")
        name, role, hashed = parts
        if not NAME.fullmatch(name):
            raise ValueError(f"entry {number}: {name!r} is not a user name (letters, digits, . _ @ + -)")
        if role not in ROLES:
            raise ValueError(f"entry {number} ({name}): role must be viewer or operator, not {role!r}")
        if not HASH.fullmatch(hashed):
            raise ValueError(f"entry {number} ({name}): the hash is not a bcrypt hash from `dbopt ui hash-password`")
        if name in users:
            raise ValueError(f"entry {number}: user {name!r} is listed twice")
        users[name] = User(name, role, hashed)
    return users


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """A salted bcrypt hash of ``password`` (``ValueError`` when it is empty or too long)."""
    import bcrypt  # the engine's (dbopt serve); parse_users, which the settings use, needs none

    raw = password.encode()
    if not raw:
        raise ValueError("the password is empty")
    if len(raw) > BCRYPT_MAX_BYTES:
        raise ValueError(f"the password is longer than bcrypt's {BCRYPT_MAX_BYTES} bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode()


def _check(password: str, hashed: str) -> bool:
    import bcrypt

    raw = password.encode()
    if not raw or len(raw) > BCRYPT_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(raw, hashed.encode())
    except ValueError:
        return False


class Authenticator:
    """Checks names and passwords against the configured users (thread-safe)."""

    def __init__(self, users: dict[str, User]) -> None:
        self.users = users
        self._key = secrets.token_bytes(32)
        self._dummy = hash_password("dbopt-dummy")
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def user(self, name: str | None) -> User | None:
        """The configured user ``name`` (a session's user must still be configured)."""
        return self.users.get(name) if name else None

    def authenticate(self, name: str, password: str) -> User | None:
        user = self.users.get(name)
        tag = hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            seen = self._verified.get(tag)
            if user is not None and seen is not None and now - seen < CACHE_TTL_S:
                return user
        if not _check(password, user.password_hash if user else self._dummy) or user is None:
            return None
        with self._lock:
            self._verified[tag] = now
            self._verified.move_to_end(tag)
            while len(self._verified) > CACHE_SIZE:
                self._verified.popitem(last=False)
        return user


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
