"""The reference broker: what the demo, ``fr-edge broker`` and the test suites talk to.

- ``store``: :class:`BrokerStore`, the enrolment feed, event ledger and heartbeats (SQLite).
- ``https``: :class:`ReferenceBroker`, the HTTPS API of docs/broker-api.md over the store,
  with fault injection (:class:`FaultPlan`).
- ``mqtt``: :class:`MqttBroker`, a mosquitto (``mosquitto``) with TLS and passwords plus
  :class:`MqttBridge`, which carries its topics into the store.
- ``certs``: :class:`CertificateAuthority`, a CA made for one run.

It is not part of a device: a device never imports it.
"""

from fr_core.broker.certs import CertificateAuthority
from fr_core.broker.https import Exchange, Fault, FaultPlan, ReferenceBroker
from fr_core.broker.mqtt import MqttBridge, MqttBroker
from fr_core.broker.store import BrokerStore

__all__ = [
    "BrokerStore",
    "CertificateAuthority",
    "Exchange",
    "Fault",
    "FaultPlan",
    "MqttBridge",
    "MqttBroker",
    "ReferenceBroker",
]
