"""The planner: desired entries, the mirror status table and what the server reported →
create / update / delete actions. Pure; its output is also what ``--dry-run`` prints.

The rules, per UID (vdirsyncer's status-table idea, one-way, platform wins):
- desired, never written (no mirror row): create; if the server already holds our resource
  name (a crash after the write, before the status row), adopt it with an update instead.
- desired and mirrored: if the server lost it → create again (drift "deleted"); if its ETag
  moved without us → update over it (drift "edited"); if our content changed → update.
- desired, mirrored, unchanged, but the row holds the fingerprint of an older syncd: rehash, a
  local-only fix of the row, so an upgrade never rewrites every entry on the server.
- mirrored, no longer desired: delete (or just forget the row if the server lost it already).
- a resource named like ours that nothing accounts for (orphan of a crash) → delete.
- everything else on the server is the therapist's own and is never touched.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from connectors.base import Changes
from syncd.project import Entry, base_name, is_legacy_hash, is_ours


class Op(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    FORGET = "forget"  # drop a status row whose resource is already gone
    REHASH = "rehash"  # store the current fingerprint of unchanged content; no remote write


# Actions that touch only the mirror table, never the server.
LOCAL_OPS = frozenset({Op.FORGET, Op.REHASH})


class Drift(enum.StrEnum):
    EDITED = "edited"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    uid: str
    href: str
    etag: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    uid: str | None  # None for orphans found only on the server
    entry: Entry | None = None
    href: str | None = None
    etag: str | None = None
    drift: Drift | None = None

    def describe(self) -> str:
        what = self.entry.summary if self.entry else "(orphan)"
        when = f" {self.entry.start:%Y-%m-%d %H:%M}Z" if self.entry else ""
        note = f" [repairs drift: {self.drift}]" if self.drift else ""
        return f"{self.op.value:<7} {self.uid or self.href}{when} {what}{note}"


def resource_name(href: str) -> str:
    return unquote(href.rstrip("/").rsplit("/", 1)[-1])


_GONE = None


def plan(
    desired: Mapping[str, Entry],
    mirror: Mapping[str, MirrorRecord],
    observed: Changes,
) -> list[Action]:
    def remote_etag(href: str, fallback: str) -> str | None:
        """The server's ETag for one of our hrefs, None if it is gone."""
        if observed.full:
            return observed.changed.get(href, _GONE)
        if href in observed.deleted:
            return _GONE
        return observed.changed.get(href, fallback)

    seen = observed.changed
    by_name = {base_name(resource_name(h)): h for h in seen}
    actions: list[Action] = []
    accounted: set[str] = {m.href for m in mirror.values()}

    for uid in sorted(desired.keys() | mirror.keys()):
        entry = desired.get(uid)
        rec = mirror.get(uid)
        if rec is None:
            assert entry is not None
            found = by_name.get(entry.name)
            if found is not None:
                accounted.add(found)
                actions.append(Action(Op.UPDATE, uid, entry, found, seen[found]))
            else:
                actions.append(Action(Op.CREATE, uid, entry))
            continue
        etag = remote_etag(rec.href, rec.etag)
        if entry is None:
            if etag is _GONE:
                actions.append(Action(Op.FORGET, uid, href=rec.href))
            else:
                actions.append(Action(Op.DELETE, uid, href=rec.href, etag=etag))
            continue
        if etag is _GONE:
            # The href it had: a provider that never reuses a deleted resource's id (Google)
            # goes on from the generation that was deleted, not from the first.
            actions.append(Action(Op.CREATE, uid, entry, href=rec.href, drift=Drift.DELETED))
        elif etag != rec.etag:
            actions.append(Action(Op.UPDATE, uid, entry, rec.href, etag, drift=Drift.EDITED))
        elif entry.content_hash != rec.content_hash:
            unchanged = (
                is_legacy_hash(rec.content_hash) and entry.legacy_content_hash == rec.content_hash
            )
            op = Op.REHASH if unchanged else Op.UPDATE
            actions.append(Action(op, uid, entry, rec.href, etag))

    for href, etag in sorted(seen.items()):
        if href not in accounted and is_ours(resource_name(href)):
            actions.append(Action(Op.DELETE, None, href=href, etag=etag))
    return actions
