"""A key that is not the one the database was sealed with: detected at start before anything
is decrypted, and either refused (another key source, or ``on_key_loss: fail``) or forgotten
with what it sealed, so the next sync is a full resync (docs/privacy.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, func, select, update

from fr_core.storage import StorageError
from fr_sqlite import schema as s
from fr_sqlite.templates import TemplateSealer

if TYPE_CHECKING:
    from fr_sqlite.database import Database

log = logging.getLogger(__name__)


def check_key(db: Database, conn: Connection, sealer: TemplateSealer) -> bool:
    """Whether the database was sealed with another key than this one (True: what that
    key sealed was forgotten in this transaction, and the next sync is a full resync).

    Another key **from the same source** (the key file made again, the variable or
    credential replaced) means the old key is lost: unless ``on_key_loss`` is "fail",
    templates and the queued images it sealed are deleted (the events are kept, sent
    without their image). Another key **from another source** is refused, changing
    nothing: a command run by another user, or a config naming another provider, must
    never wipe the device's templates (and then have the device wipe its own)."""
    row = conn.execute(select(s.key_check)).first()
    if row is None:
        if _opens_what_is_sealed(conn, sealer):
            s.record_key(conn, sealer)
            return False
        old_id, old_source = "unknown", sealer.source  # the record is gone: damaged
    elif row.key_id == sealer.key_id:
        if row.source != sealer.source:
            conn.execute(update(s.key_check).values(source=sealer.source))
            log.info("device key now from %s (was %s); same key", sealer.source, row.source)
        return False
    else:
        old_id, old_source = row.key_id, row.source
    what = (
        f"the device key from {sealer.source} (id {sealer.key_id}) is not the key this "
        f"database was sealed with (id {old_id}, from {old_source})"
    )
    if old_source != sealer.source:
        raise StorageError(
            f"{what}: this looks like another key source, not a lost key, so nothing is "
            "deleted; run with the device's key (its config and user), or restore it. To "
            "start again from the broker with this key, delete the database file"
        )
    if db.on_key_loss == "fail":
        raise StorageError(
            f"{what}: restore that key, or set the storage option on_key_loss: resync to "
            "start again from the broker with this one"
        )
    users = conn.execute(delete(s.enrolled_users)).rowcount
    conn.execute(delete(s.enrolled_users_staging))
    lost_ids = [r[0] for r in conn.execute(select(s.outbox_keys.c.outbox_id))]
    images = conn.execute(delete(s.outbox_keys)).rowcount
    conn.execute(delete(s.outbox_images))
    if lost_ids:  # the events now weigh their payload only
        conn.execute(
            update(s.outbox)
            .where(s.outbox.c.id.in_(lost_ids))
            .values(size=func.length(s.outbox.c.payload))
        )
        total = conn.execute(select(func.coalesce(func.sum(s.outbox.c.size), 0))).scalar()
        db._set_counter(conn, "outbox_bytes", int(total or 0))
    conn.execute(update(s.sync_state).values(version=0, resync_in_progress=0))
    s.record_key(conn, sealer)
    db._counter(conn, "key_losses", 1)
    db._counter(conn, "images_lost_to_key_loss", images)
    log.error(
        "%s: its %d template(s) cannot be opened and are deleted; the next sync is a full "
        "resync from the broker; %d queued event(s) lose their face image (the events "
        "are kept and sent without it)",
        what,
        users,
        images,
    )
    db.last_key_loss = {"templates": users, "images": images, "old_key_id": old_id}
    return True


def _opens_what_is_sealed(conn: Connection, sealer: TemplateSealer) -> bool:
    """With no key record (a new database, or a damaged one): whether this key opens a
    template and an image key already stored (True when there is none)."""
    u = s.enrolled_users
    row = conn.execute(
        select(u.c.user_id, u.c.model, u.c.embedding).where(u.c.embedding.is_not(None))
    ).first()
    key = conn.execute(
        select(s.outbox.c.event_id, s.outbox_keys.c.key).join(
            s.outbox, s.outbox.c.id == s.outbox_keys.c.outbox_id
        )
    ).first()
    try:
        if row is not None:
            sealer.open(row.user_id, row.model, row.embedding)
        if key is not None:
            sealer.unwrap(key.event_id, key.key)
    except StorageError:
        return False
    return True
