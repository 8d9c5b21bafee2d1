"""The ``[features]`` settings table (model -> dictionaries) and the pages' dictionary choice (ui/dictionary_choice.py):
parsing and its errors, the Features and Attribution graph pages offering what the table lists with kind and source,
a listed dictionary actually used, demo mode offering only those, free text outside demo mode, a broken entry in words."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_settings import write_settings
from app_testkit import errors, open_page
from dictionary_writers import write_ct_set

FEATURES = "app_pages/13_Features.py"
GRAPH = "app_pages/12_Attribution_graph.py"


# ---- parsing ---------------------------------------------------------------------------------------------------
def _load(tmp_path: Path, features: str | None):
    from ui.settings import load_settings

    sections = {"features": features} if features is not None else {}
    return load_settings(write_settings(tmp_path / "s.toml", tmp_path / "cache", **sections))


def test_features_table_parses_strings_and_tables_in_order(tmp_path):
    from ui.feature_settings import BUNDLED, DictionaryEntry

    s = _load(tmp_path, 'default = ["bundled", { source = "/data/clt", label = "our CLT" }, "org/scope"]\n'
                        '"gpt2" = ["mntss/clt-gpt2"]')
    assert s.dictionaries_for("default") == (DictionaryEntry(BUNDLED), DictionaryEntry("/data/clt", "our CLT"),
                                             DictionaryEntry("org/scope"))
    assert [e.title for e in s.dictionaries_for("default")] == ["Bundled transcoders", "our CLT", "org/scope"]
    assert s.dictionaries_for("gpt2") == (DictionaryEntry("mntss/clt-gpt2"),)
    assert s.dictionaries_for("pythia-70m") == ()
    assert _load(tmp_path, None).dictionaries_for("default") == (DictionaryEntry(BUNDLED),)  # no table: bundled


@pytest.mark.parametrize("table, message", [
    ('default = []', "must be a non-empty list"),
    ('default = "bundled"', "must be a non-empty list"),
    ('default = [{ label = "x" }]', "'source' must be a non-empty string"),
    ('default = [{ source = "a", colour = "red" }]', "unknown key"),
    ('default = [3]', "a source string or a table"),
    ('default = ["a", "a"]', "lists a source twice"),
])
def test_bad_features_tables_are_clear_errors(tmp_path, table, message):
    from ui.settings import SettingsError

    with pytest.raises(SettingsError, match=message):
        _load(tmp_path, table)


# ---- the pages --------------------------------------------------------------------------------------------------
@pytest.fixture
def listed(tmp_path, monkeypatch):
    """Settings for the bundled model listing its transcoders and a random circuit-tracer transcoder set (96 features
    a layer, the bundled transcoders have another width) written to tmp_path."""

    def configure(features: str, demo: bool = True, arbitrary: bool = False) -> Path:
        path = write_settings(tmp_path / "settings.toml", tmp_path / "cache",
                              models=f"allow_arbitrary_models = {str(arbitrary).lower()}",
                              features=features, app=f"demo_mode = {str(demo).lower()}")
        monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
        return path

    ct = tmp_path / "ct_set"
    write_ct_set(ct, n_layers=3, d_model=128, d_sae=96)
    return configure, ct


def _says(at, text: str) -> bool:
    from ui.errors import md_escape

    return any(md_escape(text) in c.value for c in at.caption)


def _choice(at):
    return next(s for s in at.selectbox if s.label == "Feature dictionary")


def test_features_page_offers_the_listed_dictionaries_and_uses_the_one_chosen(listed):
    configure, ct = listed
    configure(f'default = ["bundled", {{ source = {str(ct)!r}, label = "random CT set" }}]')
    at = open_page(FEATURES, prompt="def add(a, b):\n    return a + b")
    assert not at.exception and errors(at) == []
    choice = _choice(at)
    assert choice.options == ["Bundled transcoders", "random CT set"]  # demo mode: no free-text entry
    assert _says(at, "Transcoder · source: bundled with the model")
    bundled_width = max(getattr(w, "max", 0) or 0 for w in at.number_input)
    choice.set_value("random CT set").run()
    assert not at.exception and errors(at) == []
    assert _says(at, f"Transcoder · source: {ct}")
    # The page now reads the chosen set: its feature index goes up to 95 (96 features a layer).
    widths = [getattr(w, "max", None) for w in at.number_input]
    assert 95 in widths and bundled_width != 95, (widths, bundled_width)


def test_graph_page_builds_the_graph_with_a_listed_set(listed):
    configure, ct = listed
    configure(f'default = [{{ source = {str(ct)!r}, label = "random CT set" }}]')
    at = open_page(GRAPH, prompt="def add(a, b):\n    return a + b")
    assert not at.exception and errors(at) == []
    assert not any(s.label == "Feature dictionary" for s in at.selectbox)  # one entry: nothing to choose
    assert _says(at, f"Transcoder · source: {ct}")
    assert at.get("plotly_chart"), "no graph drawn"


def test_free_text_only_outside_demo_mode_and_a_bad_source_in_words(listed, tmp_path):
    configure, ct = listed
    configure('default = ["bundled"]', demo=False, arbitrary=True)
    at = open_page(FEATURES, prompt="def add(a, b):\n    return a + b")
    choice = _choice(at)
    assert choice.options[-1].startswith("Another dictionary")
    choice.set_value(choice.options[-1]).run()
    box = next(t for t in at.text_input if t.label.startswith("Dictionary (local path"))
    missing = tmp_path / "no_such_dictionary"
    box.set_value(str(missing)).run()
    assert not at.exception and errors(at) == []
    from ui.errors import md_escape

    assert any(md_escape(str(missing)) in w.value for w in at.warning), [w.value for w in at.warning]
    box.set_value(str(ct)).run()
    assert not at.exception and errors(at) == []
    assert _says(at, f"Transcoder · source: {ct}")
