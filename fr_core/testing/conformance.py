"""Transport conformance suite: the tests every transport plugin must pass, ours and yours.

Subclass :class:`TransportConformance` in your plugin's tests and provide one fixture,
``make_transport``: a function that builds your transport, not yet started, talking to the
``broker`` fixture, and accepting two overrides the suite uses to provoke failures::

    import pytest
    from fr_core.testing.conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def make_transport(self, broker):
            def make(api_key=TransportConformance.API_KEY, ca_bundle=None):
                return MyTransport(url=broker.url, device_id=self.DEVICE_ID, api_key=api_key,
                                   ca_bundle=ca_bundle or broker.ca_path)
            return make

The default ``broker`` fixture is the HTTPS reference broker; a transport for another protocol
overrides it with a harness that offers the same surface: ``store`` (``enrol``, ``remove``,
``ledger()``, ``heartbeats()``, ``live()``), ``restart()`` and ``inject_failures(count)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fr_core.broker.certs import CertificateAuthority
from fr_core.broker.https import ReferenceBroker
from fr_core.delivery.outbox import OutboxWorker
from fr_core.enrolment.sync import SyncManager
from fr_core.errors import TransportAuthError, TransportTLSError
from fr_core.events import FacialIdEvent
from fr_core.storage import DatabaseManager
from fr_core.testing import wait_for


class TransportConformance:
    API_KEY = "conformance-key-0123456789"
    DEVICE_ID = "cam-001"

    @pytest.fixture
    def broker(self, tmp_path: Path) -> Iterator[Any]:
        with ReferenceBroker(tmp_path / "broker", api_key=self.API_KEY) as b:
            yield b

    @pytest.fixture
    def transport(self, make_transport: Callable[..., Any]) -> Iterator[Any]:
        t = make_transport()
        t.start()
        yield t
        t.stop()

    def events(self, n: int, start: int = 0) -> list[dict[str, Any]]:
        return [
            FacialIdEvent.create(
                device_id=self.DEVICE_ID, user_id=f"EMP-{i}", distance=0.3, frames_tracked=5
            ).to_dict()
            for i in range(start, start + n)
        ]

    # --- the suite ---

    def test_conformance_delivery(self, broker: Any, transport: Any) -> None:
        """A batch of 10 events is acknowledged in full and each arrives with its fields."""
        batch = self.events(10)
        result = transport.send_events(batch)
        assert set(result.acknowledged) == {e["event_id"] for e in batch}
        assert wait_for(lambda: len(broker.store.ledger()) == 10)
        got = {e["event_id"]: e for e in broker.store.ledger()}
        for e in batch:
            assert got[e["event_id"]]["user_id"] == e["user_id"]

    def test_conformance_idempotency(self, broker: Any, transport: Any) -> None:
        """The same batch sent twice is acknowledged twice and stored once (by event_id)."""
        batch = self.events(3)
        transport.send_events(batch)
        again = transport.send_events(batch)
        assert set(again.acknowledged) == {e["event_id"] for e in batch}
        assert wait_for(lambda: sum(e["deliveries"] for e in broker.store.ledger()) >= 6)
        assert len(broker.store.ledger()) == 3

    def test_conformance_ordering(self, broker: Any, transport: Any, tmp_path: Path) -> None:
        """25 events through the outbox worker, 4 a batch, arrive in the order queued."""
        with DatabaseManager(str(tmp_path / "order.db")) as db:
            batch = self.events(25)
            for e in batch:
                db.outbox_append(e)
            worker = OutboxWorker(db, transport, batch_size=4, backoff_min=0.05)
            while db.outbox_stats().depth:
                worker.drain_once()
        assert wait_for(lambda: len(broker.store.ledger()) == 25)
        assert [e["event_id"] for e in broker.store.ledger()] == [e["event_id"] for e in batch]

    def test_conformance_backoff_on_failure(
        self, broker: Any, transport: Any, tmp_path: Path
    ) -> None:
        """The broker fails for a while (inject_failures): the worker backs off and every
        event still arrives."""
        with DatabaseManager(str(tmp_path / "retry.db")) as db:
            batch = self.events(5)
            db.outbox_append_many(batch)
            broker.inject_failures(3)
            worker = OutboxWorker(db, transport, batch_size=5, backoff_min=0.05, backoff_max=0.2)
            worker.start()
            try:
                assert wait_for(lambda: db.outbox_stats().depth == 0)
            finally:
                worker.stop()
        assert {e["event_id"] for e in broker.store.ledger()} == {e["event_id"] for e in batch}

    def test_conformance_broker_restart(self, broker: Any, transport: Any, tmp_path: Path) -> None:
        """The broker restarts between two batches (``restart()``): the transport reaches it
        again, and each event arrives exactly once (one delivery each: nothing already
        acknowledged is sent again, by the transport or a persistent session)."""
        first, second = self.events(5), self.events(5, start=5)
        with DatabaseManager(str(tmp_path / "restart.db")) as db:
            db.outbox_append_many(first)
            worker = OutboxWorker(db, transport, batch_size=5, backoff_min=0.05, backoff_max=0.5)
            worker.start()
            try:
                assert wait_for(lambda: db.outbox_stats().depth == 0)
                broker.restart()
                db.outbox_append_many(second)
                worker.wake()
                assert wait_for(lambda: db.outbox_stats().depth == 0, timeout=30)
            finally:
                worker.stop()
        wanted = [e["event_id"] for e in first + second]
        assert wait_for(lambda: len(broker.store.ledger()) >= len(wanted))
        transport.stop()  # anything a session or a retry timer would resend arrives by now
        time.sleep(1.0)
        ledger = broker.store.ledger()
        assert sorted(e["event_id"] for e in ledger) == sorted(wanted)
        assert [e["deliveries"] for e in ledger] == [1] * len(wanted)

    def test_conformance_auth_failure_is_clear(
        self, broker: Any, make_transport: Callable[..., Any]
    ) -> None:
        """A wrong key is a TransportAuthError (at start or at the first send) whose message
        holds neither key; nothing is stored."""
        wrong = "wrong-key-for-conformance-42"
        t = make_transport(api_key=wrong)
        try:
            with pytest.raises(TransportAuthError) as exc:
                t.start()  # a connection-oriented transport may refuse here already
                t.send_events(self.events(1))
            assert wrong not in str(exc.value) and self.API_KEY not in str(exc.value)
        finally:
            t.stop()
        assert broker.store.ledger() == []

    def test_conformance_tls_failure_is_clear(
        self, broker: Any, tmp_path: Path, make_transport: Callable[..., Any]
    ) -> None:
        """A broker certificate from an unrelated CA is a TransportTLSError; nothing stored."""
        stranger = CertificateAuthority(tmp_path / "stranger", "an unrelated CA")
        t = make_transport(ca_bundle=stranger.cert_path)
        with pytest.raises(TransportTLSError):
            t.start()
            t.send_events(self.events(1))
        t.stop()
        assert broker.store.ledger() == []

    def test_conformance_sync(self, broker: Any, transport: Any, tmp_path: Path) -> None:
        """23 enrolments synced in pages of 7, then a removal: the device holds exactly the
        broker's live enrolments, vector for vector."""
        rng = np.random.default_rng(0)
        for i in range(23):
            broker.store.enrol(f"EMP-{i}", rng.standard_normal(128).astype(np.float32))
        with DatabaseManager(str(tmp_path / "sync.db")) as db:
            mgr = SyncManager(db, transport, page_size=7)
            assert mgr.sync_now().ok
            broker.store.remove("EMP-4")
            assert mgr.sync_now().ok
            live = broker.store.live()
            local = db.get_all_enrollments()
            assert set(local) == set(live)
            assert all(np.array_equal(local[u], live[u]) for u in live)

    def test_conformance_heartbeat(self, broker: Any, transport: Any) -> None:
        """A heartbeat arrives as sent."""
        transport.send_heartbeat({"device_id": self.DEVICE_ID, "fps": 9.5})
        assert wait_for(
            lambda: {"device_id": self.DEVICE_ID, "fps": 9.5} in broker.store.heartbeats()
        )
