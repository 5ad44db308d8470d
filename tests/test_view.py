"""The circuit page in a real browser (headless Chromium, offline), annotations and the export."""

import json
import re
import networkx as nx
import pytest

from sfc_relp import browser
from sfc_relp.annotations import load_annotations
from sfc_relp.cli import main
from sfc_relp.circuit import discover_circuit, load_circuit, save_circuit
from sfc_relp.datasets import load_task
from sfc_relp.dictionaries import dictionaries_for
from sfc_relp.errors import UserError
from sfc_relp.export import from_neuronpedia, to_neuronpedia, validate_neuronpedia
from sfc_relp.features import feature_summaries, load_corpus, save_features
from sfc_relp.loading import load_model
from sfc_relp.plotting import to_dot
from sfc_relp.view import build_page, layered_svg, forward_rows, write_page


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A RelP circuit of the bundled model (with an error node), its features and annotations."""
    out = tmp_path_factory.mktemp("view")
    model = load_model()
    dicts = dictionaries_for(model)
    data = load_task("rc", "train", 8, tokenizer=model.tokenizer)
    graph = discover_circuit(model, dicts, data, "relp", 0.2, 0.1, batch_size=8,
                             metadata={"model": "tiny-pythia", "dataset": "rc", "dictionaries": "default"})
    circuit = save_circuit(graph, out / "circuit.json")
    summaries = feature_summaries(model, dicts, load_corpus("rc", 48), graph, top_k=5, context=4,
                                  metadata={"corpus": "rc", "dictionaries": "default"})
    save_features(summaries, out / "features")
    feature = max((n for n, d in graph.nodes(data=True)  # the strongest: a top row, well inside the view
                   if d.get("feature") is not None and summaries["features"][n]["contexts"]),
                  key=lambda n: abs(graph.nodes[n]["effect"]))
    (out / "annotations.json").write_text(json.dumps({feature: "my <label> & co", "y": "metric"}))
    return out, graph, summaries, feature


def test_annotations_replace_ids_in_the_diagram(made, tmp_path):
    out, graph, _, feature = made
    annotations = load_annotations(out / "annotations.json")
    source = to_dot(graph, annotations)
    assert "my <label> & co" in source and f'"{feature}" [label=' in source
    assert f"label=\"{feature}\"" not in source
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="one JSON object of strings"):
        load_annotations(bad)


def test_page_is_self_contained(made):
    out, graph, summaries, _ = made
    page = build_page(graph, summaries, load_annotations(out / "annotations.json"))
    assert not re.search(r"https?://|//cdn|<link|src=", page)
    data = re.search(r'<script type="application/json" id="circuit-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in data  # the label's "<" and any "</script>" are escaped
    parsed = json.loads(data)
    assert len(parsed["nodes"]) == graph.number_of_nodes() and len(parsed["edges"]) == graph.number_of_edges()
    assert len(re.findall(r'<g id="node_\d+" class="node"', page)) == graph.number_of_nodes()
    assert len(re.findall(r'<g id="edge_\d+" class="edge"', page)) == graph.number_of_edges()


def test_fallback_layout_without_graphviz_rows_in_forward_order(made):
    _, graph, _, _ = made
    rows = forward_rows(graph)
    assert rows[0] == "embed" and rows[-1] == "y"
    forward = ["embed"] + [f"{kind}_{i}" for i in range(6) for kind in ("attn", "mlp", "resid")]
    assert rows[:-1] == [name for name in forward if name in rows] and len(rows) > 5
    order = [n for r in rows for n in graph if (graph.nodes[n].get("submodule") or "y") == r]
    svg = layered_svg(graph, sorted(graph.nodes, key=lambda n: order.index(n)))
    assert len(re.findall(r'class="node"', svg)) == graph.number_of_nodes()
    assert len(re.findall(r'class="edge"', svg)) == graph.number_of_edges()
    ys = {}
    for match in re.finditer(r'<g id="node_\d+" class="node"><title>([^<]*)</title><rect x="[^"]*" y="([^"]*)"', svg):
        ys.setdefault(graph.nodes[match.group(1).replace("&gt;", ">")].get("submodule", "y"), set()).add(
            float(match.group(2)))
    assert all(len(v) == 1 for v in ys.values())  # one row per submodule
    heights = [ys[r].pop() for r in rows]
    assert heights == sorted(heights, reverse=True)  # embed at the bottom, y on top


def _per_position_graph():
    graph = nx.DiGraph(model="tiny-pythia", method="relp", dataset="rc", aggregation="none",
                       node_threshold=0.1, edge_threshold=0.01, edges_computed=False)
    graph.add_node("y", submodule="y", layer=None, feature=None, error=False, position=None, effect=None)
    for sub, feature, position, effect in [("embed", 3, 0, 0.4), ("embed", 9, 0, -0.2), ("embed", 1, 2, 0.3),
                                           ("attn_0", None, 1, 0.5), ("resid_0", 4, 2, 0.9),
                                           ("resid_0", 5, 2, 0.1), ("resid_0", 6, 2, -0.6), ("mlp_1", 2, 3, 0.2)]:
        name = f"{sub}/{'err' if feature is None else feature}@{position}"
        graph.add_node(name, submodule=sub, layer=-1 if sub == "embed" else int(sub[-1]), feature=feature,
                       error=feature is None, position=position, effect=effect)
    return graph


def test_per_position_circuit_has_position_columns():
    graph = _per_position_graph()
    page = build_page(graph)
    assert "columns by position" in page
    boxes = {m.group(1).replace("&gt;", ">"): float(m.group(2)) for m in re.finditer(
        r'<g id="node_\d+" class="node"><title>([^<]*)</title><rect x="([^"]*)"', page)}
    assert set(boxes) == set(graph.nodes)
    span = {}
    for node, x in boxes.items():
        position = graph.nodes[node]["position"]
        if position is not None:
            span.setdefault(position, []).append(x)
    # position blocks do not overlap and come in position order, in every row alike
    ordered = [span[p] for p in sorted(span)]
    assert all(max(a) < min(b) for a, b in zip(ordered, ordered[1:]))
    assert len(set(span[2])) == 3  # resid_0 has three nodes at position 2: three columns
    assert boxes["embed/1@2"] == boxes["resid_0/4@2"]  # the same column in different rows


def test_page_in_headless_chromium(made, tmp_path):
    reason = browser.missing_reason()
    if reason:
        pytest.skip(reason)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out, graph, summaries, feature = made
    page = write_page(graph, tmp_path / "circuit.html", summaries, load_annotations(out / "annotations.json"))
    effects = {n: d.get("effect") for n, d in graph.nodes(data=True)}
    with browser.offline_chromium() as driver:
        driver.get(page.resolve().as_uri())
        nodes = driver.find_elements(By.CSS_SELECTOR, "#graph svg g.node[data-node]")
        edges = driver.find_elements(By.CSS_SELECTOR, "#graph svg g.edge[data-edge]")
        assert len(nodes) == graph.number_of_nodes() and len(edges) == graph.number_of_edges()
        assert {e.get_attribute("data-node") for e in nodes} == set(graph.nodes)
        assert {e.get_attribute("data-edge") for e in edges} == {f"{s}->{t}" for s, t in graph.edges}
        header = driver.find_element(By.ID, "meta").text
        assert "tiny-pythia" in header and "relp" in header and "0.2" in header

        # hover: id, label, effect
        target = driver.find_element(By.CSS_SELECTOR, f'g.node[data-node="{feature}"] text')
        ActionChains(driver).move_to_element(target).perform()
        tip = driver.find_element(By.ID, "tooltip")
        assert tip.is_displayed() and feature in tip.text and "my <label> & co" in tip.text
        assert f"{effects[feature]:.4g}"[:4] in tip.text

        # click: contexts with highlighted tokens, logit lens, lit edges
        ActionChains(driver).move_to_element(target).click().perform()
        panel = driver.find_element(By.ID, "panel")
        assert panel.find_element(By.TAG_NAME, "h2").text == feature
        contexts = panel.find_elements(By.CSS_SELECTOR, ".context")
        expected = summaries["features"][feature]["contexts"]
        assert len(contexts) == len(expected)
        first = contexts[0].find_elements(By.CSS_SELECTOR, ".tok")
        assert [t.get_attribute("textContent") for t in first] == expected[0]["tokens"]
        assert len(contexts[0].find_elements(By.CSS_SELECTOR, ".tok.max")) == 1
        promoted = panel.find_elements(By.CSS_SELECTOR, "ol.up li")
        assert len(promoted) == len(summaries["features"][feature]["promoted"])
        assert json.dumps(summaries["features"][feature]["promoted"][0]["token"]) in promoted[0].text
        lit = driver.find_elements(By.CSS_SELECTOR, "g.edge.lit")
        assert len(lit) == graph.degree(feature)
        driver.save_screenshot(str(tmp_path / "clicked.png"))

        # slider: click at its middle; nodes under the threshold disappear
        slider = driver.find_element(By.ID, "threshold")
        ActionChains(driver).move_to_element(slider).click().perform()
        fraction = int(slider.get_attribute("value")) / 1000
        assert 0.2 < fraction < 0.8
        largest = max(abs(v) for v in effects.values() if v is not None)
        keep = {n for n, v in effects.items() if v is None or abs(v) >= fraction * largest}
        shown = {e.get_attribute("data-node") for e in nodes if e.is_displayed()}
        assert shown == keep and len(shown) < graph.number_of_nodes()
        assert all(not e.is_displayed() for e in edges
                   if not set(e.get_attribute("data-edge").split("->")) <= keep)

        # search: by label
        search = driver.find_element(By.ID, "search")
        search.send_keys("metric", Keys.ENTER)
        assert driver.find_element(By.ID, "search-result").text == "y"
        assert panel.find_element(By.TAG_NAME, "h2").text == "y"

        # zoom (mouse wheel) scales the view box, a drag moves it
        svg = driver.find_element(By.CSS_SELECTOR, "#graph svg")

        def view_box():
            return [float(v) for v in svg.get_dom_attribute("viewBox").split()]

        before = view_box()
        origin = ScrollOrigin.from_element(driver.find_element(By.ID, "graph"))
        ActionChains(driver).scroll_from_origin(origin, 0, 200).perform()
        zoomed = view_box()
        assert zoomed[2] > before[2] * 1.1 and zoomed[3] > before[3] * 1.1  # zoomed out
        ActionChains(driver).move_to_element(driver.find_element(By.ID, "graph")).click_and_hold() \
            .move_by_offset(60, 40).release().perform()
        panned = view_box()
        assert panned[0] < zoomed[0] and panned[1] < zoomed[1] and panned[2:] == zoomed[2:]

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        driver.save_screenshot(str(tmp_path / "circuit_page.png"))

        per_position = write_page(_per_position_graph(), tmp_path / "per_position.html")
        driver.get(per_position.resolve().as_uri())
        shown = driver.find_elements(By.CSS_SELECTOR, "#graph svg g.node[data-node]")
        assert len(shown) == 9 and all(e.is_displayed() for e in shown)
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    assert (tmp_path / "circuit_page.png").stat().st_size > 10_000


def test_neuronpedia_export_validates_and_round_trips(made, tmp_path):
    out, graph, summaries, feature = made
    data = to_neuronpedia(graph, load_annotations(out / "annotations.json"), features=summaries["features"])
    validate_neuronpedia(data)
    json.loads(json.dumps(data))
    for key in ("slug", "scan", "prompt_tokens", "prompt", "node_threshold", "info"):
        assert key in data["metadata"]
    assert set(data["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    by_id = {n["node_id"]: n for n in data["nodes"]}
    assert len(by_id) == graph.number_of_nodes()
    for node in data["nodes"]:
        assert node["node_id"] == f"{node['layer']}_{node['feature']}_{node['ctx_idx']}"
        assert node["feature_type"] in ("cross layer transcoder", "mlp reconstruction error", "logit")
    table = data["metadata"]["info"]["sfc_relp_node_ids"]
    clerp = {table[n["node_id"]]: n["clerp"] for n in data["nodes"]}
    assert clerp[feature] == "my <label> & co"
    assert any(n["feature_type"] == "mlp reconstruction error" for n in data["nodes"])
    back = from_neuronpedia(data)
    assert set(back.nodes) == set(graph.nodes) == set(table.values())
    assert {(s, t): d["weight"] for s, t, d in back.edges(data=True)} == \
        {(s, t): d["weight"] for s, t, d in graph.edges(data=True)}
    assert all(back.nodes[n]["effect"] == graph.nodes[n]["effect"] for n in graph)
    broken = json.loads(json.dumps(data))
    del broken["nodes"][0]["ctx_idx"]
    with pytest.raises(UserError, match="lacks ctx_idx"):
        validate_neuronpedia(broken)


def test_per_position_circuit_exports_positions(tmp_path):
    graph = nx.DiGraph(model="m", method="relp", dataset="rc", aggregation="none", node_threshold=0.1)
    graph.add_node("y", submodule="y", layer=None, feature=None, error=False, position=None, effect=None)
    graph.add_node("resid_1/4@2", submodule="resid_1", layer=1, feature=4, error=False, position=2, effect=0.5)
    graph.add_node("attn_0/err@0", submodule="attn_0", layer=0, feature=None, error=True, position=0, effect=-0.3)
    data = to_neuronpedia(graph)
    ids = {n["node_id"] for n in data["nodes"]}
    assert ids == {"6_4_2", "1_-1_0", "7_0_0"}  # resid_1 is the 7th submodule (index 6)
    assert set(from_neuronpedia(data).nodes) == set(graph.nodes)


def _cli(*args):
    """The CLI in-process (as `sfc-relp ARGS` would run), returning returncode and stderr."""
    import contextlib
    import io
    from types import SimpleNamespace

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def test_bad_inputs_are_one_line_and_write_nothing(made, tmp_path):
    out, graph, summaries, _ = made
    page = tmp_path / "page.html"
    done = _cli("view", "--circuit", str(tmp_path / "missing.json"), "--out", str(page))
    assert done.returncode == 1 and "does not exist" in done.stderr and len(done.stderr.splitlines()) == 1
    other = json.loads(json.dumps(summaries))
    other["metadata"]["model"] = "pythia-70m-deduped"
    save_features(other, tmp_path / "other_model")
    done = _cli("view", "--circuit", str(out / "circuit.json"), "--features", str(tmp_path / "other_model"),
                "--out", str(page))
    assert done.returncode == 1 and "for model 'pythia-70m-deduped'" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    other = json.loads(json.dumps(summaries))
    other["metadata"]["dictionary_fingerprints"] = {"resid_2": "0" * 16}
    circuit = load_circuit(out / "circuit.json")
    circuit.graph["dictionary_fingerprints"] = {"resid_2": "f" * 16}
    save_circuit(circuit, tmp_path / "fingerprinted.json")
    save_features(other, tmp_path / "other_dicts")
    done = _cli("view", "--circuit", str(tmp_path / "fingerprinted.json"), "--features",
                str(tmp_path / "other_dicts"), "--out", str(page))
    assert done.returncode == 1 and "other dictionaries than the circuit" in done.stderr and len(done.stderr.splitlines()) == 1
    done = _cli("features", "--corpus", "rc", "--circuit", str(tmp_path / "fingerprinted.json"),
                "--out", str(tmp_path / "feats"))  # the bundled SAEs are not the circuit's
    assert done.returncode == 1 and "--model/--dictionaries use other dictionaries" in done.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    done = _cli("features", "--corpus", str(empty), "--circuit", str(out / "circuit.json"),
                "--out", str(tmp_path / "feats"))
    assert done.returncode == 1 and "holds no documents" in done.stderr and len(done.stderr.splitlines()) == 1
    done = _cli("export", "--circuit", str(tmp_path / "missing.json"), "--out", str(tmp_path / "np.json"))
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert not page.exists() and not (tmp_path / "feats").exists() and not (tmp_path / "np.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_features_view_export(made, tmp_path):
    out, graph, _, feature = made
    done = _cli("circuit", "--dataset", "rc", "--n-examples", "8", "--batch-size", "8", "--node-threshold", "0.2",
                "--edge-threshold", "0.1", "--annotations", str(out / "annotations.json"), "--out", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr
    assert "my <label> & co" in (tmp_path / "c" / "tiny-pythia_rc_relp.dot").read_text()
    assert set(load_circuit(tmp_path / "c" / "tiny-pythia_rc_relp.json").graph["dictionary_fingerprints"]) == \
        {n for n, _ in dictionaries_for(load_model()).items()}
    done = _cli("features", "--corpus", "rc", "--max-docs", "16", "--submodules", "embed,attn_0",
                "--top-k", "2", "--out", str(tmp_path / "feats"))
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "feats" / "features.json").read_text())
    assert len(written["features"]) == 2 * 256 and written["metadata"]["top_k"] == 2
    assert written["metadata"]["n_documents"] == 16
    done = _cli("view", "--circuit", str(out / "circuit.json"), "--features", str(out / "features"),
                "--annotations", str(out / "annotations.json"), "--out", str(tmp_path / "c.html"))
    assert done.returncode == 0, done.stderr
    assert "my &lt;label&gt; &amp; co" in (tmp_path / "c.html").read_text()
    done = _cli("export", "--circuit", str(out / "circuit.json"), "--format", "neuronpedia",
                "--out", str(tmp_path / "np.json"))
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "np.json").read_text())["links"]) == graph.number_of_edges()
