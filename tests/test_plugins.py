"""Plugin manager and registry: entry points, disabling, duplicates, load errors, checks."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fr_core import ComponentUnavailableError, PluginError, UnknownComponentError, hookimpl
from fr_core.interfaces import ComponentKind, FrameResult, ReadStatus
from fr_core.plugins import Registry, build_registry, get_plugin_manager


class _Cam:
    def open(self): ...
    def read(self, timeout):
        return FrameResult(ReadStatus.EOS)

    def close(self): ...


class CamOptions(BaseModel):
    fps: float = 10.0


class CameraPlugin:
    """A test plugin registering one camera called ``test-cam``."""

    @hookimpl
    def fr_register_camera_sources(self, register):
        register("test-cam", lambda cfg, ctx: _Cam(), CamOptions, description="test camera")


def test_in_tree_and_third_party_plugins_load_through_entry_points():
    registry = build_registry()
    sim = registry.get(ComponentKind.CAMERA, "sim")
    assert sim.plugin == "fr_hal_sim"
    assert sim.distribution.startswith("fr-edge ")
    jsonl = registry.get(ComponentKind.TRANSPORT, "jsonl")
    assert jsonl.distribution == "fr-edge-example-transport 1.0.0"
    assert registry.load_errors == []


def test_every_manager_is_new():
    a, b = get_plugin_manager(), get_plugin_manager()
    assert a is not b
    a.register(CameraPlugin(), name="only-in-a")
    assert b.get_plugin("only-in-a") is None


def test_fixture_registers_and_unregisters(fr_add_plugin, fr_plugin_manager):
    registry = fr_add_plugin(CameraPlugin(), name="test-camera")
    assert "test-cam" in registry.names(ComponentKind.CAMERA)
    cam = registry.create(ComponentKind.CAMERA, "test-cam", {"fps": 5})
    assert cam.read(0.1).status is ReadStatus.EOS
    assert fr_plugin_manager.get_plugin("test-camera") is not None


def test_fixture_teardown_left_nothing(fr_plugin_manager):
    assert fr_plugin_manager.get_plugin("test-camera") is None
    assert "test-cam" not in Registry(fr_plugin_manager).names(ComponentKind.CAMERA)


def test_disabled_plugins_are_not_loaded(monkeypatch):
    monkeypatch.setenv("FR_DISABLED_PLUGINS", "example_transport, fr_hal_sim")
    registry = build_registry()
    assert registry.names(ComponentKind.TRANSPORT) == ["https", "mqtt"]  # jsonl is gone
    with pytest.raises(UnknownComponentError) as exc:
        registry.get(ComponentKind.CAMERA, "sim")
    assert "Disabled by FR_DISABLED_PLUGINS: example_transport, fr_hal_sim" in str(exc.value)


def test_disabled_plugin_is_never_imported(fake_distribution, monkeypatch):
    fake_distribution("fake_boom", "raise RuntimeError('imported although disabled')")
    monkeypatch.setenv("FR_DISABLED_PLUGINS", "fake_boom")
    assert build_registry().load_errors == []


def test_unknown_name_lists_available_and_why_others_are_missing(fake_distribution):
    fake_distribution("fake_trt", "import tensorrt_that_is_not_here\n")
    registry = build_registry()
    with pytest.raises(UnknownComponentError) as exc:
        registry.get(ComponentKind.CAMERA, "csi")
    msg = str(exc.value)
    usable = registry.names(ComponentKind.CAMERA, available_only=True)
    assert {"sim", "opencv"} <= set(usable)
    assert msg.startswith(f"unknown camera 'csi'; available: {', '.join(usable)}")
    # cameras registered but unusable on this machine are named with the reason, apart
    for reg in registry.registrations(ComponentKind.CAMERA):
        if reg.unavailable:
            assert f"{reg.name} ({reg.unavailable})" in msg.split("not usable here: ")[1]
    assert "plugin 'fake_trt' failed to load" in msg
    assert "No module named 'tensorrt_that_is_not_here'" in msg
    # the other plugins still work
    assert registry.get(ComponentKind.CAMERA, "sim").plugin == "fr_hal_sim"
    err = registry.load_errors[0]
    assert err.plugin == "fake_trt" and err.distribution == "fake_trt 0.0.1"
    assert "Traceback" in err.detail


def test_duplicate_plugin_names_are_rejected():
    with pytest.raises(PluginError, match="two plugins are named 'fr_hal_sim'"):
        get_plugin_manager(extra_plugins=[("fr_hal_sim", CameraPlugin())])


def test_duplicate_component_names_are_rejected():
    class Again:
        @hookimpl
        def fr_register_camera_sources(self, register):
            register("sim", lambda cfg, ctx: _Cam())

    with pytest.raises(
        PluginError,
        match=r"camera name 'sim' is registered twice: by plugin "
        r"'fr_hal_sim' and by plugin 'again'",
    ):
        build_registry(extra_plugins=[("again", Again())])


def test_registration_hook_that_raises_is_kept_as_a_load_error():
    class Broken:
        @hookimpl
        def fr_register_detectors(self, register):
            raise OSError("model file missing")

    registry = build_registry(extra_plugins=[("broken", Broken())])
    assert [e.plugin for e in registry.load_errors] == ["broken"]
    assert "model file missing" in registry.load_errors[0].error
    assert "sim" in registry.names(ComponentKind.CAMERA)


def test_hook_with_a_typo_is_reported_not_fatal():
    class Typo:
        @hookimpl
        def fr_register_detector(self, register):  # missing "s"
            pass

    registry = build_registry(extra_plugins=[("typo", Typo())])
    assert registry.pm.get_plugin("typo") is None
    assert "fr_register_detector" in registry.load_errors[0].error


def test_hook_with_wrong_arguments_is_reported():
    class WrongArgs:
        @hookimpl
        def fr_register_detectors(self, register, nonsense):
            pass

    registry = build_registry(extra_plugins=[("wrong", WrongArgs())])
    assert registry.load_errors[0].plugin == "wrong"
    assert "nonsense" in registry.load_errors[0].error


def test_unavailable_component_says_why():
    class Trt:
        @hookimpl
        def fr_register_detectors(self, register):
            register("trt", lambda cfg, ctx: None, unavailable="tensorrt is not installed")

    registry = build_registry(extra_plugins=[("trt", Trt())])
    assert "trt" in registry.names(ComponentKind.DETECTOR)
    assert "trt" not in registry.names(ComponentKind.DETECTOR, available_only=True)
    with pytest.raises(ComponentUnavailableError, match="tensorrt is not installed"):
        registry.create(ComponentKind.DETECTOR, "trt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", lambda c, x: None), "without a name"),
        (("x", "not callable"), "is not callable"),
        (("x", lambda c, x: None, dict), "pydantic BaseModel subclass"),
    ],
)
def test_bad_registrations_are_refused(args, message):
    class Bad:
        @hookimpl
        def fr_register_matchers(self, register):
            register(*args)

    with pytest.raises(PluginError, match=message):
        build_registry(extra_plugins=[("bad", Bad())])


def test_factory_must_return_the_interface():
    class Wrong:
        @hookimpl
        def fr_register_detectors(self, register):
            register("wrong", lambda cfg, ctx: object())

    registry = build_registry(extra_plugins=[("wrong", Wrong())])
    with pytest.raises(PluginError, match="lacks the Detector interface"):
        registry.create(ComponentKind.DETECTOR, "wrong")


def test_factory_failure_names_the_plugin():
    class Failing:
        @hookimpl
        def fr_register_detectors(self, register):
            def factory(cfg, ctx):
                raise FileNotFoundError("yunet.onnx")

            register("failing", factory)

    registry = build_registry(extra_plugins=[("failing", Failing())])
    with pytest.raises(
        PluginError,
        match=r"detector 'failing' \(plugin 'failing'\) failed "
        r"to start: FileNotFoundError: yunet.onnx",
    ):
        registry.create(ComponentKind.DETECTOR, "failing")


def test_component_without_config_model_refuses_options():
    registry = build_registry()
    with pytest.raises(Exception, match="accelerator 'numpy' takes no options, got: device"):
        registry.create(ComponentKind.ACCELERATOR, "numpy", {"device": 0}, path="accelerator")


def test_factory_receives_validated_config_and_context():
    seen = {}

    class Probe:
        @hookimpl
        def fr_register_camera_sources(self, register):
            def factory(cfg, ctx):
                seen["cfg"], seen["ctx"] = cfg, ctx
                return _Cam()

            register("probe", factory, CamOptions)

    registry = build_registry(extra_plugins=[("probe", Probe())])
    registry.create(ComponentKind.CAMERA, "probe", {"fps": "12.5"})
    assert isinstance(seen["cfg"], CamOptions) and seen["cfg"].fps == 12.5
    assert seen["ctx"].registry is registry


def test_every_kind_has_a_registration_hook():
    pm = get_plugin_manager(load_entrypoints=False)
    for kind in ComponentKind:
        assert hasattr(pm.hook, kind.hook_name), kind
