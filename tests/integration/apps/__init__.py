"""The same notes app in each framework, with LitestreamLifespan added the way that
framework's users add it. Each module reads its database and replica from
``NOTES_DATABASE`` / ``NOTES_REPLICA_URL`` (the rest, credentials included, from the
``ASGI_LITESTREAM_*`` and ``LITESTREAM_*`` variables) and exposes ``app`` (Django:
``application``); ``create_app`` builds one in-process."""
