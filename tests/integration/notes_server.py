"""The notes app behind LitestreamLifespan, configured from ASGI_LITESTREAM_* only:
what the multi-worker tests run under real servers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asgi_litestream import LitestreamLifespan
from tests.helpers import notes_app

logging.basicConfig(level=logging.INFO,
                    format="%(process)d %(levelname)s %(name)s: %(message)s")

app = LitestreamLifespan(notes_app(Path(os.environ["ASGI_LITESTREAM_DATABASE"])))
