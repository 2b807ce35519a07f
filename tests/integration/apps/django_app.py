"""Django: wrap ``get_asgi_application()`` (Django's handler refuses lifespan scopes;
the middleware answers them and passes every request on), under Django's usual name
``application``. A one-file project; the database Litestream replicates is Django's
own, named by its alias (``database="django:default"``)."""

from __future__ import annotations

import json
import os

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                           "NAME": os.environ["NOTES_DATABASE"]}},
)

from django.core.asgi import get_asgi_application  # noqa: E402 (after settings)
from django.db import connection, transaction  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402

from asgi_litestream import LitestreamLifespan  # noqa: E402
from tests.integration.apps import _notes  # noqa: E402


@require_POST
def create(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)["body"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
        cursor.execute("INSERT INTO notes (body) VALUES (%s)", [body])
        row = cursor.lastrowid
    return JsonResponse({"id": row, "worker": os.getpid()}, status=201)


urlpatterns = [path("notes", create)]

application = LitestreamLifespan(get_asgi_application(), database="django:default",
                                 replica_url=os.environ["NOTES_REPLICA_URL"])
_notes.log_to_stderr()
