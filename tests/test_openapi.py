"""docs/openapi.yaml is a valid OpenAPI 3.1 document, and real traffic between the device and
the reference broker matches it, request and answer."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import jsonschema
import numpy as np
import pytest
import yaml
from referencing import Registry, Resource

from fr_core import DatabaseManager, FacialIdEvent, IoTClient, IoTClientConfig, SyncManager
from fr_core.broker import ReferenceBroker
from fr_core.events import event_json_schemas

from .conftest import REPO

SPEC = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())


def test_the_document_is_valid_openapi_3_1():
    from openapi_spec_validator import validate

    validate(SPEC, base_uri=(REPO / "docs" / "openapi.yaml").as_uri())  # refs read locally
    assert SPEC["openapi"].startswith("3.1")


def registry():
    resources = [(s["$id"], Resource.from_contents(s)) for s in event_json_schemas().values()]
    spec = json.loads(json.dumps(SPEC))
    for name, s in event_json_schemas().items():
        for one in spec["components"]["schemas"]["Event"]["oneOf"]:
            if one["$ref"] == f"./schemas/{name}.schema.json":
                one["$ref"] = s["$id"]
    resources.append(
        (
            "urn:openapi",
            Resource.from_contents(
                {"$schema": "https://json-schema.org/draft/2020-12/schema", **spec}
            ),
        )
    )
    return Registry().with_resources(resources)


REGISTRY = registry()


def check(schema, instance):
    """Validate against a schema from the OpenAPI document (refs resolved within it)."""
    text = json.dumps(schema).replace('"#/components', '"urn:openapi#/components')
    for name, s in event_json_schemas().items():  # the event schemas, by their $id
        text = text.replace(f'"./schemas/{name}.schema.json"', json.dumps(s["$id"]))
    resolved = json.loads(text)
    jsonschema.Draft202012Validator(resolved, registry=REGISTRY).validate(instance)


def resolve(obj):
    while "$ref" in obj:
        path = obj["$ref"].removeprefix("#/").split("/")
        obj = SPEC
        for part in path:
            obj = obj[part]
    return obj


def operation(method, path):
    for template, ops in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in ops:
            return template, ops[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def test_real_traffic_matches_the_document(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broker = ReferenceBroker(tmp_path / "broker", api_key="traffic-key-123").start()
    broker.exchanges = []
    rng = np.random.default_rng(0)
    for i in range(12):
        broker.store.enrol(f"EMP-{i}", rng.standard_normal(128).astype(np.float32))
    try:
        cfg = IoTClientConfig(
            device_id="cam-001",
            broker_url=broker.url,
            api_key="traffic-key-123",
            transport_options={"ca_bundle": str(broker.ca_path), "backoff_base": 0.01},
        )
        with IoTClient(cfg) as client:
            ev = FacialIdEvent.create(
                device_id="cam-001", user_id="EMP-1", distance=0.3, frames_tracked=5
            )
            frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            client.send_event_sync(ev, image=frame, face_bbox=[40, 30, 60, 60])
            client.send_event_sync(ev)  # a duplicate
            bad = {
                **FacialIdEvent.create(
                    device_id="cam-001", user_id="EMP-2", distance=0.3, frames_tracked=5
                ).to_dict()
            }
            client.transport.send_events([bad, {**bad, "event_id": "nonsense"}])
            client.transport.send_heartbeat({"device_id": "cam-001", "fps": 10.0})
            broker.faults.add(status=429, retry_after=0)
            client.transport.send_heartbeat({"device_id": "cam-001"})
            with DatabaseManager(str(tmp_path / "s.db")) as db:
                mgr = SyncManager(db, client, page_size=5)
                assert mgr.sync_now().ok  # snapshot with cursors
                broker.store.remove("EMP-3")
                assert mgr.sync_now().ok  # incremental
                broker.store.compact()
                broker.store.remove("EMP-4")
                assert mgr.sync_now().ok
        wrong = IoTClient(
            IoTClientConfig(
                device_id="cam-001",
                broker_url=broker.url,
                api_key="wrong-key-000",
                transport_options={"ca_bundle": str(broker.ca_path)},
            ),
            db=DatabaseManager(str(tmp_path / "w.db")),
        )
        with pytest.raises(Exception, match="refused the credentials"):
            wrong.request_sync(0)
    finally:
        broker.stop()

    seen = set()
    for ex in broker.exchanges:
        url = urlsplit(ex.path)
        template, op = operation(ex.method, url.path)
        seen.add((ex.method, template, ex.status))
        assert ex.authorization, "every request carries the Authorization header"
        assert "key" not in ex.path.lower(), "no key in URLs"
        params = {
            p["name"]: p
            for p in (resolve(p) for p in op.get("parameters", []))
            if p["in"] == "query"
        }
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        for name, p in params.items():
            if p.get("required"):
                assert name in query, f"{template}: {name} missing"
        for name, value in query.items():
            assert name in params, f"{template}: undocumented parameter {name}"
            schema = params[name]["schema"]
            typed = int(value) if schema.get("type") == "integer" else value
            check(schema, typed)
        if "requestBody" in op:
            assert ex.content_type == "application/json"
            body = json.loads(ex.request_body)
            check(op["requestBody"]["content"]["application/json"]["schema"], body)
            for item in body.get("events", []):
                if item.get("event_id") != "nonsense":
                    check({"$ref": "#/components/schemas/Event"}, item)
        response = op["responses"].get(str(ex.status))
        assert response is not None, f"{ex.method} {template}: status {ex.status} undocumented"
        response = resolve(response)
        if ex.response_body:
            check(response["content"]["application/json"]["schema"], json.loads(ex.response_body))
        else:
            assert "content" not in response
        if ex.status == 429:
            assert "Retry-After" in response["headers"] and "Retry-After" in ex.response_headers
        if ex.status == 401:
            assert ex.response_headers.get("WWW-Authenticate") == "Bearer"
    expected = {
        ("POST", "/v1/devices/{device_id}/events", 200),
        ("POST", "/v1/devices/{device_id}/heartbeat", 204),
        ("POST", "/v1/devices/{device_id}/heartbeat", 429),
        ("GET", "/v1/devices/{device_id}/enrollments/changes", 200),
        ("GET", "/v1/devices/{device_id}/enrollments/changes", 401),
    }
    assert expected <= seen
