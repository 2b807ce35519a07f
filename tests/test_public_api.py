"""The public surface: everything exported is listed, and nothing private leaks."""

from __future__ import annotations

import types

import asgi_litestream


def test_all_is_complete_and_sorted() -> None:
    """__all__ names every public attribute of the package, sorted."""
    public = {name for name, value in vars(asgi_litestream).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert set(asgi_litestream.__all__) - {"__version__"} == public
    assert asgi_litestream.__all__ == sorted(asgi_litestream.__all__)


def test_errors_share_one_base() -> None:
    """Every exported error is a LitestreamError."""
    errors = [getattr(asgi_litestream, n) for n in asgi_litestream.__all__
              if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, asgi_litestream.LitestreamError) for e in errors)
