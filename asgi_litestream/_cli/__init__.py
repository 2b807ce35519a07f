"""The ``asgi-litestream`` command: its parser (main) and what each command does."""
