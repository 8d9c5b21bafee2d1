""""Open in" links: the state they carry (read back from the link element) and the target page reading it, in a fresh
session and in the same session over values it already held."""

from __future__ import annotations

from urllib.parse import parse_qs

import torch

from app_testkit import errors, open_link, open_page
from lens_core.experiments.detectors import DetectorRequest, head_detectors
from streamlit.testing.v1 import AppTest
from ui import links

PROMPT = "one two three one two three one two"


def page_links(at) -> dict[str, dict[str, str]]:
    """label -> (page url path, query params) of every page link drawn."""
    out = {}
    for element in at.get("page_link"):
        params = {k: v[0] for k, v in parse_qs(element.proto.query_string, keep_blank_values=True).items()}
        out[element.proto.label] = {"_page": element.proto.page, **params}
    return out


def follow(at, link: dict[str, str], page: str) -> AppTest:
    """What the browser does on a click: the target page with the link's query string, same session."""
    for key in list(at.query_params):
        del at.query_params[key]
    for key, value in link.items():
        if key != "_page":
            at.query_params[key] = value
    at.switch_page(page)
    at.run()
    return at


def test_every_link_target_is_a_page():
    for title in ("Attention", "Ablation", "Browse_examples", "Path_patching", "Features"):
        assert links.page_file(title).startswith("app_pages/") and links.page_file(title).endswith(f"_{title}.py")


def test_edge_params_map_head_edges_and_refuse_the_rest():
    assert links.edge_params("L0H1", "L2H3.k") == {"sender_mode": "chosen", "senders": ["L0H1"], "receiver_mode": "heads",
                                                  "receivers": ["L2H3"], "recv_inputs": ["k"]}
    assert links.edge_params("L1H0", "logits") == {"sender_mode": "chosen", "senders": ["L1H0"],
                                                  "receiver_mode": "resid_final"}
    for sender, receiver in (("embed", "L1H0.q"), ("MLP0", "logits"), ("L0H0", "MLP1.in"), ("L1H0", "L1H2.q"),
                             ("L0H0", "L1KV0.k")):
        assert links.edge_params(sender, receiver) is None, (sender, receiver)


def test_detector_head_links_carry_the_top_head_and_the_attention_page_reads_them(app_settings, model):
    at = open_page("app_pages/2_Attention.py", prompt="one two", layer="0", head="0")  # the session holds 0, 0
    assert at.slider(key="layer").value == 0
    at.sidebar.text_area(key="prompt").set_value(PROMPT).run()
    at.switch_page(links.page_file("Head_detectors"))
    at.query_params["detector"] = "induction"
    at.run()
    assert not at.exception and errors(at) == []

    ids = tuple(int(t) for t in model.to_tokens(PROMPT)[0].tolist())
    scores = head_detectors(model, DetectorRequest(tokens=ids)).induction
    best = int(torch.nan_to_num(scores, nan=-1.0).flatten().argmax())
    layer, head = best // scores.shape[1], best % scores.shape[1]
    found = page_links(at)
    attention = found[f"L{layer}H{head}'s attention"]
    assert (attention["layer"], attention["head"], attention["prompt"]) == (str(layer), str(head), PROMPT)
    assert found[f"Ablate L{layer}H{head}"]["ablate"] == f"L{layer}H{head}"
    assert found[f"L{layer}H{head} over a corpus"]["component"] == f"L{layer}H{head}"
    assert attention["_page"] == "attention"

    if (layer, head) == (0, 0):  # make the session's stale values differ from the link's
        attention = {**attention, "layer": "1", "head": "1"}
        layer, head = 1, 1
    follow(at, attention, links.page_file("Attention"))
    assert not at.exception and errors(at) == []
    assert (at.slider(key="layer").value, at.slider(key="head").value) == (layer, head)
    assert at.sidebar.text_area(key="prompt").value == PROMPT
    assert links.LINK_PARAM not in at.query_params


def test_a_link_opened_in_a_new_tab_is_read_like_a_pasted_one(app_settings):
    params = links.link_params(None, prompt=PROMPT, ablate=["L1H0"], answer=" two")
    at = open_link(params, "Ablation", timeout=180)
    assert not at.exception
    assert at.multiselect(key="ablate").value == ["L1H0"]
    assert at.text_input(key="answer").value == " two"


def test_an_edge_link_sets_up_path_patching_for_that_edge(app_settings, model):
    pieces = model.to_str_tokens(PROMPT)[1:]  # the tiny tokenizer's own single tokens of the prompt
    contrast = {"corrupted": "".join(pieces[:-1]) + pieces[0], "answer": pieces[1], "wrong_answer": pieces[0]}
    params = links.link_params(None, prompt=PROMPT, **links.edge_params("L0H1", "L1H2.k"), **contrast)
    at = open_link(params, "Path_patching", timeout=180)
    assert not at.exception and errors(at) == []
    assert at.radio(key="sender_mode").value == "chosen" and at.radio(key="receiver_mode").value == "heads"
    assert at.multiselect(key="senders").value == ["L0H1"]
    assert at.multiselect(key="receivers").value == ["L1H2"] and at.multiselect(key="recv_inputs").value == ["k"]
    assert at.text_input(key="corrupted").value == contrast["corrupted"]


def test_the_circuits_page_links_its_head(app_settings):
    at = open_page(links.page_file("Circuits"), prompt=PROMPT, layer="1", head="0")
    assert not at.exception
    found = page_links(at)
    assert found["L1H0's attention"]["layer"] == "1" and found["L1H0's attention"]["head"] == "0"
    assert found["L1H0 over a corpus"]["_page"] == "browse_examples"
