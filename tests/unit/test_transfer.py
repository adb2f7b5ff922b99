"""The model's transfer to a node: a delta from the model the node keeps rebuilds the
controller's text exactly, or is refused (module_utils/services/transfer.py)."""

import json

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import sha256
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import (
    compact,
    delta,
    delta_from,
    kept_base,
    kept_file,
    kept_of,
    kept_text,
    read_kept,
    rebased,
    rebuild_kept,
)


def model(*services, cidr="10.96.0.0/12"):
    return {"cluster_cidr": "10.244.0.0/16", "service_cidr": cidr, "node_port_range": [30000, 32767],
            "services": [{"namespace": ns, "name": name, "ports": [{"port": port}]}
                         for ns, name, port in services]}


OLD = model(("a", "x", 80), ("a", "y", 81), ("a-b", "z", 82))


def base_of(text):
    """What a node keeping the model whose text this is tells the controller, worked out from
    the parsed model (the node's kept_base works from its lines): the text's sha256 and the
    first 16 hex digits of each Service's compact text's sha256; None for a text that is not
    a model."""
    try:
        services = json.loads(text)["services"]
        return {"sha256": sha256(text),
                "services": {"%s/%s" % (svc["namespace"], svc["name"]): sha256(compact(svc))[:16]
                             for svc in services}}
    except (ValueError, TypeError, KeyError):
        return None


def kept(base_text):
    """The form a node keeps the model whose text this is in, read back from its file."""
    return read_kept(kept_file(kept_of(json.loads(base_text)))) if base_text else None


def rebuild_from(base_text, change, sha):
    """(text, model, replaced) a node that keeps `base_text` rebuilds from `change`, or None;
    the model it keeps after is that text's."""
    rebuilt = rebuild_kept(kept(base_text), change, sha)
    if rebuilt is None:
        return None
    text, after, replaced = rebuilt
    assert kept_text(after) == text and read_kept(kept_file(after)) == after
    return text, json.loads(text), replaced


def rebuild(base_text, change, sha):
    rebuilt = rebuild_from(base_text, change, sha)
    return rebuilt and rebuilt[:2]


@pytest.mark.parametrize("new", [
    OLD,
    model(("a", "x", 80), ("a", "y", 8081), ("a-b", "z", 82)),           # one Service changed
    model(("a", "x", 80), ("a", "y", 81)),                                 # one gone
    model(("a", "w", 1), ("a", "x", 80), ("a", "y", 81), ("a-b", "z", 82)),  # one new, first
    model(),                                                               # all gone
    model(("a", "x", 80), ("a", "y", 81), ("a-b", "z", 82), cidr="10.100.0.0/16"),  # a field
], ids=["same", "changed", "removed", "added", "emptied", "field"])
def test_a_delta_rebuilds_the_controllers_text_exactly(new):
    # The controller's guess from the model it resolved last is the same delta.
    assert delta_from(compact(OLD), new) == delta(new, base_of(compact(OLD)))
    base_text = compact(OLD)
    change = json.loads(compact(delta(new, base_of(base_text))))  # as it travels
    assert rebuild(base_text, change, sha256(compact(new))) == (compact(new), new)


def test_a_delta_carries_only_what_changed():
    new = model(("a", "w", 1), ("a", "x", 80), ("a", "y", 8081))
    change = delta(new, base_of(compact(OLD)))
    assert sorted(change["services"]) == ["a/w", "a/y"]
    assert change["removed"] == ["a-b/z"]
    assert change["fields"] == {key: value for key, value in new.items() if key != "services"}


def test_a_delta_is_refused_unless_it_rebuilds_that_very_text():
    base_text, new = compact(OLD), model(("a", "x", 80))
    change = delta(new, base_of(base_text))
    assert rebuild(base_text, change, sha256(compact(new))) is not None
    # Another base kept on the node, none, a target text in another form (not compact), a
    # delta without its parts: nothing rebuilt.
    assert rebuild(compact(model(("a", "x", 80))), change, sha256(compact(new))) is None
    assert rebuild(None, change, sha256(compact(new))) is None
    assert rebuild(base_text, change, sha256(json.dumps(new))) is None
    assert rebuild(base_text, {"base_sha256": sha256(base_text)}, sha256(compact(new))) is None
    assert rebuild(base_text, dict(change, order=["a/x", "a/gone"]), sha256(compact(new))) is None


def test_services_in_another_order_than_the_plans_travel_with_their_order():
    base_text = compact(OLD)
    unsorted = dict(OLD, services=OLD["services"][::-1])
    change = delta(unsorted, base_of(base_text))
    assert change["order"] == ["a-b/z", "a/y", "a/x"] and change["services"] == {}
    assert rebuild(base_text, change, sha256(compact(unsorted))) == (compact(unsorted), unsorted)
    assert "order" not in delta(OLD, base_of(base_text))


@pytest.mark.parametrize("new", [model(("a", "x", 80), ("a", "y", 8081), ("b", "n", 1)), model()],
                         ids=["changed and added, one gone", "emptied"])
def test_the_base_after_a_delta_is_the_rebuilt_models(new):
    base = base_of(compact(OLD))
    assert rebased(base, delta(new, base), sha256(compact(new))) == base_of(compact(new))


def test_a_base_names_each_service_by_a_short_digest():
    base = base_of(compact(OLD))
    assert base["sha256"] == sha256(compact(OLD))
    assert sorted(base["services"]) == ["a-b/z", "a/x", "a/y"]
    assert all(len(digest) == 16 for digest in base["services"].values())
    assert base_of("not json") is None and base_of("{}") is None


def test_a_rebuild_names_the_services_it_replaced_unless_more_changed():
    new = model(("a", "x", 80), ("a", "y", 8081))
    change = delta(new, base_of(compact(OLD)))
    text, rebuilt, replaced = rebuild_from(compact(OLD), change, sha256(compact(new)))
    assert (text, rebuilt) == (compact(new), new)
    assert replaced == {"a/y": OLD["services"][1], "a-b/z": OLD["services"][2]}
    other = model(("a", "x", 80), ("a", "y", 8081), cidr="10.100.0.0/16")
    assert rebuild_from(compact(OLD), delta(other, base_of(compact(OLD))), sha256(compact(other)))[2] is None
    assert delta_from("not a model", new) is None


def test_the_controller_keeps_the_model_it_resolved_last_as_the_next_runs_base(tmp_path):
    from ansible_collections.podnet.network.plugins.filter.podnet import podnet_services_delta
    new = model(("a", "x", 80), ("a", "y", 8081))
    assert podnet_services_delta(compact(OLD), str(tmp_path)) == ""  # nothing earlier
    change = podnet_services_delta(compact(new), str(tmp_path))
    assert json.loads(change) == delta(new, base_of(compact(OLD)))
    assert rebuild(compact(OLD), json.loads(change), sha256(compact(new))) == (compact(new), new)
    assert podnet_services_delta(compact(new), str(tmp_path)) == ""  # the same model again
    assert podnet_services_delta(compact(OLD), None) == ""


@pytest.mark.parametrize("value", [OLD, model(), dict(OLD, services=OLD["services"][::-1])],
                         ids=["sorted", "empty", "unsorted"])
def test_the_kept_file_holds_the_models_text_and_base(value):
    """A node keeps the model as JSON Lines: its fields and keys, then one Service a line.
    Read back, it joins into the controller's text, and its base is that text's."""
    text = kept_file(kept_of(value))
    lines = text.splitlines()
    assert len(lines) == 1 + len(value["services"])
    assert [json.loads(line) for line in lines[1:]] == value["services"]
    again = read_kept(text)
    assert kept_text(again) == compact(value)
    assert kept_base(again) == base_of(compact(value))


def test_a_kept_file_that_is_not_one_reads_as_none():
    text = kept_file(kept_of(OLD))
    head, *services = text.splitlines()
    for broken in ["", "not json\n", compact(OLD) + "\n", text[:-1], text + "{}\n",
                   "\n".join([head, *services[:-1]]) + "\n",
                   "\n".join([head.replace("a/y", "a/x"), *services]) + "\n"]:
        assert read_kept(broken) is None, broken
