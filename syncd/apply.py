"""Step 4 of a pass, apply (DESIGN.md §4): the planned actions written through the connector
with conditional writes, each recorded in the mirror status table as soon as the server
accepted it, so a crash anywhere leaves at worst one write the table does not know about (the
planner adopts it on the next pass: the resource name is derived from the UID).

Every write has its fallback: a create that meets an existing resource takes it over (ours from
an interrupted pass), an update that meets a changed one overwrites it (the platform wins) or
re-creates a deleted one, a delete that meets a changed one re-reads it first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from connectors.base import BatchWriter, Connector, RemoteItem, Write
from connectors.errors import AlreadyExists, ConnectorError, NotFound, PreconditionFailed, Transient
from syncd import ical, retry
from syncd.clock import Clock
from syncd.plan import LOCAL_OPS, Action, Op, resource_name
from syncd.project import base_name
from syncd.store import repo

T = TypeVar("T")


class Applier:
    """Writes planned actions through a connector and records each; ``policy`` is read at every
    call, so a reloaded retry policy applies to the next write."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        policy: Callable[[], retry.RetryPolicy],
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._policy = policy

    def _retry(self, fn: Callable[[], T]) -> T:
        return retry.call(fn, self._policy())

    def _commit(self, fn: Callable[[Session], None]) -> None:
        with self._sessions.begin() as s:
            fn(s)

    def apply_all(
        self,
        connector: Connector,
        connection_id: int,
        actions: list[Action],
        done: Callable[[Action], None],
    ) -> None:
        """Write ``actions`` (in batches where the connector has the batch hook); ``done`` is
        told of each one applied and recorded."""
        writer = connector.batch_writer()
        if writer is None or writer.max_batch <= 1:
            self._apply_each(connector, connection_id, actions, done)
            return
        remote = [a for a in actions if a.op not in LOCAL_OPS]
        for action in actions:
            if action.op in LOCAL_OPS:
                self._apply(connector, connection_id, action)
                done(action)
        for i in range(0, len(remote), writer.max_batch):
            chunk = remote[i : i + writer.max_batch]
            for action in self._apply_batch(connector, writer, connection_id, chunk):
                done(action)

    def _apply_batch(
        self, connector: Connector, writer: BatchWriter, connection_id: int, chunk: list[Action]
    ) -> list[Action]:
        """One batch request; parts that failed go through the single-write path, with its
        retries and fallbacks (adopt on 409, re-read on 412, re-create on 404), so none is lost."""
        now = self._clock()
        writes = [self._write_for(a, now) for a in chunk]
        results = self._retry(lambda: writer.write_many(writes))
        recorded: list[tuple[Action, RemoteItem | None]] = []
        retry_single: list[Action] = []
        throttled: list[Transient] = []
        for action, result in zip(chunk, results, strict=True):
            if not isinstance(result, ConnectorError):
                recorded.append((action, result))
            elif action.op is Op.DELETE and isinstance(result, NotFound):
                recorded.append((action, None))  # already gone: as good as deleted
            elif isinstance(result, Transient):
                # Rate limited or failing part: resending it at once would only meet the same
                # limit. It stays planned and the pass ends with backoff (below).
                throttled.append(result)
            else:
                retry_single.append(action)

        def record(s: Session) -> None:
            for action, item in recorded:
                self._record(s, connection_id, action, item, now)

        self._commit(record)
        for action in retry_single:
            self._apply(connector, connection_id, action)
        if throttled:
            hints = [t.retry_after for t in throttled if t.retry_after is not None]
            raise Transient(
                f"{len(throttled)} of {len(chunk)} batched writes refused for now: {throttled[0]}",
                max(hints) if hints else None,
            )
        return [a for a, _ in recorded] + retry_single

    @staticmethod
    def _create_name(a: Action) -> str:
        """The name to create: the entry's, or the generation it had when it was deleted on a
        provider that never reuses a deleted resource's id (``x~3.ics``)."""
        assert a.entry is not None
        if a.href is not None:
            previous = resource_name(a.href)
            if previous != a.entry.name and base_name(previous) == a.entry.name:
                return previous
        return a.entry.name

    @classmethod
    def _write_for(cls, a: Action, now: datetime) -> Write:
        if a.op is Op.DELETE:
            return Write("delete", href=a.href, etag=a.etag)
        assert a.entry is not None
        body = ical.render(a.entry, now)
        if a.op is Op.CREATE:
            return Write("create", name=cls._create_name(a), body=body)
        return Write("update", href=a.href, body=body, etag=a.etag)

    @staticmethod
    def _record(
        s: Session, connection_id: int, a: Action, item: RemoteItem | None, now: datetime
    ) -> None:
        if a.op is Op.DELETE or item is None:
            if a.uid is not None:
                repo.drop_mirror(s, connection_id, a.uid)
            return
        assert a.entry is not None
        repo.put_mirror(
            s, connection_id, a.entry.uid, item.href, item.etag, a.entry.content_hash, now
        )
        if a.drift is not None:
            repo.record_drift(s, connection_id, a.entry.uid, a.drift.value, now)

    def _apply_each(
        self,
        connector: Connector,
        connection_id: int,
        actions: list[Action],
        done: Callable[[Action], None],
    ) -> None:
        """One write at a time, each recorded as soon as the server accepted it; the next body
        is rendered while a write is in flight, so the server's think time is not spent idle
        and the renderer's CPU is not added to it."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-render") as renderer:

            def render_ahead(a: Action) -> tuple[datetime, Future[str | None]]:
                now = self._clock()
                return now, renderer.submit(self._body, a, now)

            ahead = render_ahead(actions[0]) if actions else None
            for i, action in enumerate(actions):
                assert ahead is not None
                now, body = ahead
                ahead = render_ahead(actions[i + 1]) if i + 1 < len(actions) else None
                item = self._execute(connector, action, body.result())
                self._commit(
                    functools.partial(
                        self._record, connection_id=connection_id, a=action, item=item, now=now
                    )
                )
                done(action)

    @staticmethod
    def _body(a: Action, now: datetime) -> str | None:
        if a.op in (Op.CREATE, Op.UPDATE):
            assert a.entry is not None
            return ical.render(a.entry, now)
        return None

    def _apply(self, connector: Connector, connection_id: int, a: Action) -> None:
        now = self._clock()
        item = self._execute(connector, a, self._body(a, now))
        self._commit(lambda s: self._record(s, connection_id, a, item, now))

    def _execute(self, connector: Connector, a: Action, body: str | None) -> RemoteItem | None:
        """The action's remote write (none for local ops); the item to record, if any."""
        item: RemoteItem | None = None
        if a.op is Op.DELETE:
            assert a.href is not None
            self.delete(connector, a.href, a.etag)
        elif a.op in (Op.CREATE, Op.UPDATE):
            entry = a.entry
            assert entry is not None and body is not None
            if a.op is Op.CREATE:
                item = self.create(connector, self._create_name(a), body)
            else:
                assert a.href is not None and a.etag is not None
                item = self.update(connector, a.href, body, a.etag, entry.name)
        elif a.op is Op.REHASH:
            assert a.href is not None and a.etag is not None
            item = RemoteItem(a.href, a.etag)  # unchanged on the server: only the row moves on
        return item

    def create(self, connector: Connector, name: str, body: str) -> RemoteItem:
        """Create ``name``; one already there is ours and is overwritten."""
        try:
            return self._retry(lambda: connector.create(name, body))
        except AlreadyExists as exc:
            # Ours from an interrupted pass (the name is derived from the UID): take it over.
            href = exc.href or connector.href_for(name)
            current = self._retry(lambda: connector.get(href))
            return self._retry(lambda: connector.update(href, body, current.etag))

    def update(
        self, connector: Connector, href: str, body: str, etag: str, name: str
    ) -> RemoteItem:
        """Update ``href`` if still at ``etag``; else overwrite it, or create it when gone."""
        try:
            return self._retry(lambda: connector.update(href, body, etag))
        except PreconditionFailed:
            # Changed on the server since we looked: the platform wins, overwrite what is there.
            current = self._retry(lambda: connector.get(href))
            return self._retry(lambda: connector.update(href, body, current.etag))
        except NotFound:
            return self.create(connector, name, body)

    def delete(self, connector: Connector, href: str, etag: str | None) -> None:
        """Delete ``href``; gone already is as good as deleted."""
        try:
            self._retry(lambda: connector.delete(href, etag))
        except NotFound:
            pass
        except PreconditionFailed:
            try:
                current = self._retry(lambda: connector.get(href))
                self._retry(lambda: connector.delete(href, current.etag))
            except NotFound:
                pass
