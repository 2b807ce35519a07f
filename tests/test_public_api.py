"""The public surface: everything exported is listed, and nothing private leaks."""

from __future__ import annotations

import types

import asgi_litestream


def test_all_is_complete_and_sorted() -> None:
    """__all__ names every public attribute of the package (imported or imported when
    first used), sorted, and each one resolves."""
    public = {name for name in dir(asgi_litestream) if not name.startswith("_")
              and not isinstance(getattr(asgi_litestream, name), types.ModuleType)}
    assert set(asgi_litestream.__all__) - {"__version__"} == public
    assert asgi_litestream.__all__ == sorted(asgi_litestream.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name the package does not have raises AttributeError (hasattr works)."""
    assert not hasattr(asgi_litestream, "LitestreamLifespn")


def test_errors_share_one_base() -> None:
    """Every exported error is a LitestreamError."""
    errors = [getattr(asgi_litestream, n) for n in asgi_litestream.__all__
              if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, asgi_litestream.LitestreamError) for e in errors)
