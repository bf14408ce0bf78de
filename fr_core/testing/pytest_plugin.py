"""pytest fixtures for fr-edge and plugin authors (loaded automatically by pytest).

* ``fr_plugin_manager``: a fresh plugin manager with the installed entry points loaded.
* ``fr_add_plugin``: register a plugin object for one test and get the registry over it;
  it is unregistered again at teardown (and the teardown checks that it is gone).
* ``fr_registry``: the registry of the installed plugins.
* ``fr_data``: the shared test data folder (``$FR_TEST_DATA`` or ``../shared/data``);
  missing data fails the test in CI and skips it elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fr_core.testing import require, shared_data_dir, shared_models_dir

if TYPE_CHECKING:
    from fr_core.plugins import PluginManager, Registry

# This module loads into every pytest run where fr-edge is installed (a pytest11 entry
# point): the plugin machinery is imported by the fixtures that use it, not here, so a run
# that uses none of them pays nothing for it.


@pytest.fixture
def fr_plugin_manager() -> PluginManager:
    from fr_core.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def fr_registry(fr_plugin_manager: PluginManager) -> Registry:
    from fr_core.plugins import Registry

    return Registry(fr_plugin_manager)


@pytest.fixture
def fr_add_plugin(fr_plugin_manager: PluginManager) -> Iterator[Callable[..., Registry]]:
    from fr_core.plugins import Registry

    added: list[str] = []

    def add(plugin: object, name: str | None = None) -> Registry:
        registered = fr_plugin_manager.register(plugin, name=name)
        if registered is None:
            raise ValueError(f"plugin {name or plugin!r} is blocked or already registered")
        added.append(registered)
        fr_plugin_manager.check_pending()
        return Registry(fr_plugin_manager)

    yield add
    for name in added:
        fr_plugin_manager.unregister(name=name)
        assert fr_plugin_manager.get_plugin(name) is None, f"plugin {name} still registered"


@pytest.fixture(scope="session")
def fr_models(request: pytest.FixtureRequest) -> Path:
    """The shared model files (../shared/models; $FR_TEST_MODELS): the MiniFASNet
    checkpoints tests use instead of downloading them."""
    path = shared_models_dir(Path(str(request.config.rootpath)))
    require(
        path is not None and (path / "minifasnet").is_dir(),
        "shared model files not found: set FR_TEST_MODELS or place them at ../shared/models",
    )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def fr_data(request: pytest.FixtureRequest) -> Path:
    path = shared_data_dir(Path(str(request.config.rootpath)))
    require(
        path is not None and (path / "faces").is_dir(),
        "shared test data not found: set FR_TEST_DATA or place it at ../shared/data",
    )
    assert path is not None
    return path
