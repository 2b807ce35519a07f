"""``python -m asgi_litestream``: the same command line as ``asgi-litestream``."""

from asgi_litestream._cli.main import main

raise SystemExit(main())
