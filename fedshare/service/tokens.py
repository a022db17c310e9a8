"""Bearer tokens for the HTTP API: one per user, and operator tokens for admin access.

A token is printed once when issued and only its SHA-256 is stored (``state/tokens.json``), so a
copy of the state folder does not let anyone act as a user.  Issuing a new token for a user
revokes the previous one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from fedshare.storage import atomic_write_json

OPERATOR = "*operator*"  # the principal of an operator token (no user ID can be this string)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user (their raw ID) or the operator."""

    user_id: str | None

    @property
    def is_operator(self) -> bool:
        return self.user_id is None

    def may_act_for(self, user_id: str) -> bool:
        return self.is_operator or self.user_id == str(user_id)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, state: str | Path):
        self.path = Path(state) / "tokens.json"

    def _load(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def issue(self, user_id: str | None) -> str:
        """A new token for ``user_id`` (``None``: an operator token); the user's older token stops working."""
        principal = OPERATOR if user_id is None else str(user_id)
        token = secrets.token_urlsafe(32)
        tokens = {digest: who for digest, who in self._load().items() if who != principal or user_id is None}
        tokens[_digest(token)] = principal
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, tokens)
        return token

    def principal(self, token: str) -> Principal | None:
        """Who holds ``token``, or ``None`` for an unknown one."""
        who = self._load().get(_digest(token))
        if who is None:
            return None
        return Principal(None if who == OPERATOR else who)
