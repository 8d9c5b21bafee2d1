"""The attribution-graph page's QK section (ui/qk_view.py): head and positions from the URL, the summary in
words, the group pairs and the top node pairs with feature labels; bad positions give a notice, not an error."""

from __future__ import annotations

from test_page_attribution_graph import PRESET, _open, bundled_with_transcoders  # noqa: F401  (fixture)

from app_testkit import errors


def _table(at, first_column):
    return next((d.value for d in at.dataframe if str(d.value.columns[0]).startswith(first_column)), None)


def test_induction_head_explained_in_words(bundled_with_transcoders):
    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"], qk_layer="1", qk_head="3")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    summary = [m.value for m in at.markdown if "attends from position" in m.value]
    assert summary and "L1H3 attends from position 15" in summary[0] and "comes from the pair" in summary[0], summary
    groups, pairs = _table(at, "query side"), _table(at, "query node")
    assert groups is not None and len(groups) == 8 and {"query side", "key side", "part of the excess"} <= set(groups.columns)
    assert pairs is not None and len(pairs) == 20
    labels = pairs.iloc[:, 0].tolist() + pairs.iloc[:, 1].tolist()
    assert any(" on " in label for label in labels), labels  # feature labels from the dashboards
    # The graph's check shows the every-path prediction beside the frozen-attention one, with its r.
    check = _table(at, "feature")
    assert check is not None and check["real model's gradient, every path"].notna().all()
    assert any("gradient through every path" in c.value and "r = " in c.value for c in at.caption)


def test_bad_positions_are_notices(bundled_with_transcoders):
    at = _open(prompt=PRESET["prompt"], qk_layer="1", qk_head="3", qk_query="4", qk_key="9")  # key after the query
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.number_input(key="qk_key").value == 4  # the nearest allowed key used, and the page says so
    notices = [w.value for w in list(at.warning) + list(at.info) + list(at.caption)]
    assert any("qk\\_key=9 was ignored" in n and "Showing 4" in n for n in notices), notices
    summary = [m.value for m in at.markdown if "attends from position 4" in m.value and "to position 4" in m.value]
    assert summary, [m.value for m in at.markdown]
