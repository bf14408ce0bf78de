import fr_jsontcp

from fr_core.interfaces import ComponentKind, Transport


def test_registered_and_built(fr_add_plugin, tmp_path):
    registry = fr_add_plugin(fr_jsontcp, "fr_jsontcp")
    reg = registry.get(ComponentKind.TRANSPORT, "jsontcp")
    assert reg.name == "jsontcp"
    t = registry.create(
        ComponentKind.TRANSPORT,
        "jsontcp",
        {"broker_url": "jsontcps://127.0.0.1:9", "device_id": "cam-001", "api_key": "k"},
    )
    assert isinstance(t, Transport)
    t.stop()
    t.stop()
