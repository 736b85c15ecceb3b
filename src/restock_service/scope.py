"""The scope of one call: whose data it touches, who makes it, and the key it writes under.

Every store call is handed a ``Scope`` (contract v1.3): the merchant whose rows it may read
and write, and no other's; the actor its writes record; and, for a keyed write
(idempotency.py), the ``Keyed`` request whose key it takes with its effect, or whose receipt
it replays. So a call's signature shows what it can touch and that it can replay, and no
ambient state decides either.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from restock_service.idempotency import Keyed
from restock_service.tables import DEFAULT_MERCHANT


@dataclass(frozen=True, slots=True)
class Scope:
    merchant: str = DEFAULT_MERCHANT
    actor: str | None = None  # the key's name (``platform:NAME``); None without keys
    keyed: Keyed | None = None

    @property
    def replaying(self) -> bool:
        """Whether the call renders a replay of its first answer (which counts nothing)."""
        return self.keyed is not None and self.keyed.receipt is not None

    def now(self) -> datetime:
        """The call's time: a keyed one's is its key's, so a replay tells the first time."""
        return self.keyed.claim.now if self.keyed is not None else datetime.now(UTC)
