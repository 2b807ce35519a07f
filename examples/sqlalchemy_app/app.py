"""FastAPI + SQLAlchemy (async): the app's lifespan creates its tables, Litestream backs
them up. Run it with ``uvicorn examples.sqlalchemy_app.app:app`` from the repository root
(``pip install fastapi uvicorn "sqlalchemy[asyncio]" aiosqlite`` beside the library).

By default it keeps ``notes.db`` and a ``file://`` replica in ``./data``; set
``ASGI_LITESTREAM_REPLICA_URL=s3://bucket/notes`` (and the credentials) for S3.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asgi_litestream import LitestreamLifespan, durable

DATA = Path(os.environ.get("NOTES_DATA_DIR", "data")).absolute()
DATA.mkdir(parents=True, exist_ok=True)
REPLICA_URL = os.environ.get("ASGI_LITESTREAM_REPLICA_URL", f"file://{DATA}/replica")

engine = create_async_engine(f"sqlite+aiosqlite:///{DATA}/notes.db")
Session = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


class NoteIn(BaseModel):
    body: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs once the database is in place: restored from the replica if the volume was
    # empty, and replicated from here on. So create_all never runs on an empty file
    # that would then be replicated over a good backup.
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()  # your app stops first; then Litestream flushes and stops


app = FastAPI(lifespan=lifespan)
# The engine itself: its connections get busy_timeout and synchronous=NORMAL.
app.add_middleware(LitestreamLifespan, database=engine, replica_url=REPLICA_URL)


@app.post("/notes", status_code=201)
async def add_note(note: NoteIn, request: Request) -> dict[str, object]:
    async with Session() as session, session.begin():
        row = Note(body=note.body)
        session.add(row)
    await durable(request, timeout=5)  # answered only once the row is in the replica
    return {"id": row.id, "body": row.body}


@app.get("/notes")
async def list_notes() -> list[dict[str, object]]:
    async with Session() as session:
        rows = await session.scalars(select(Note).order_by(Note.id))
        return [{"id": n.id, "body": n.body} for n in rows]
