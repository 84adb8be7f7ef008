"""Third-party connectors: packages declaring an entry point in `supasaasy.connectors`
are found, listed with where they come from, and usable by apps; broken ones are
reported without stopping the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import supasaasy.connectors as connectors
from supasaasy.cli import app
from supasaasy.config import AppConfig, parse_settings

PLUGIN = """
from supasaasy.connectors import Connector, ConnectorMetadata, Page, Resource


class FakeConnector(Connector):
    metadata = ConnectorMetadata(name="fakeconn", display_name="Fake", api_version="1",
                                 resources=(Resource("thing", "fake_thing", "things"),))

    def full_sync(self, resource_type, *, cursor=None):
        yield Page([])


class FakeStripe(FakeConnector):
    metadata = ConnectorMetadata(name="stripe", display_name="Not Stripe", api_version="1",
                                 resources=(Resource("thing", "fake_thing", "things"),))


class NotAConnector:
    pass
"""
ENTRY_POINTS = """[supasaasy.connectors]
fakeconn = fakeconn:FakeConnector
notaconnector = fakeconn:NotAConnector
stripe = fakeconn:FakeStripe
missing = fakeconn_missing:Thing
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution `fakeconn 1.0` declaring connectors (some broken), and
    a registry that has not looked for plugins yet."""
    (tmp_path / "fakeconn").mkdir()
    (tmp_path / "fakeconn" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "fakeconn-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeconn\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("_REGISTRY", "_SOURCES", "_PLUGIN_ERRORS"):
        monkeypatch.setattr(connectors, name, dict(getattr(connectors, name)))
    monkeypatch.setattr(connectors, "_plugins_loaded", False)
    return tmp_path


def test_an_app_can_use_a_third_party_connector(plugin: Path) -> None:
    app_config = AppConfig(app_key="fake_main", connector="fakeconn")
    cls = connectors.connector_class(app_config)
    assert cls.__module__ == "fakeconn" and cls.metadata.name == "fakeconn"
    assert parse_settings({"apps": [{"app_key": "f", "connector": "fakeconn"}]}).apps


def test_sources_and_broken_plugins_are_reported(plugin: Path) -> None:
    sources = connectors.connector_sources()
    assert sources["fakeconn"] == "fakeconn 1.0"
    assert sources["stripe"] == "built-in"  # a plugin cannot take a built-in name
    errors = connectors.plugin_errors()
    assert set(errors) == {"notaconnector", "stripe", "missing"}
    assert "not a Connector" in errors["notaconnector"]
    assert "taken by built-in" in errors["stripe"]
    assert "ModuleNotFoundError" in errors["missing"]
    with pytest.raises(connectors.ConfigError, match="its plugin failed to load"):
        connectors.connector_class(AppConfig(app_key="x", connector="missing"))


def test_config_check_lists_the_connectors_and_where_from(
    plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = plugin / "supasaasy.toml"
    config.write_text('[[apps]]\napp_key = "fake_main"\nconnector = "fakeconn"\n')
    monkeypatch.delenv("SUPASAASY_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["config", "check", "--config", str(config)],
                                terminal_width=300)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "connector: fakeconn (fakeconn 1.0)" in result.output
    assert "connector: stripe (built-in)" in result.output
    assert "connector notaconnector not loaded" in result.output
