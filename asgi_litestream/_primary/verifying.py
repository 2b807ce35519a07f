"""The backup's verifier, made when first needed: `_restore/verify.py` (and sqlite3 with
it) is imported only with ``verify_interval`` set, or once ``verify()`` is called."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._restore.verify import Verification, Verifier


class LazyVerifier:
    """Holds the arguments of a :class:`Verifier` and makes it on first use."""

    def __init__(self, **arguments: Any) -> None:
        self._arguments = arguments
        self._verifier: Verifier | None = None

    def get(self) -> Verifier:
        if self._verifier is None:
            from .._restore.verify import Verifier

            self._verifier = Verifier(**self._arguments)
        return self._verifier

    @property
    def last(self) -> Verification | None:
        """The last verification's result; None when none ran (or none was made)."""
        return None if self._verifier is None else self._verifier.last
