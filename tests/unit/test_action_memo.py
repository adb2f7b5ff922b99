"""The action plugins take a model the plan kept in its memo by reference: the task's digest
is the reference's, the module gets the text, and a reference to a text written over since
fails the task without asking the node (plugin_utils/glanced.py, memo_ref.py)."""

import hashlib
from types import SimpleNamespace

from ansible_collections.podnet.network.plugins.action.dns import ActionModule
from ansible_collections.podnet.network.plugins.module_utils.common import glance
from ansible_collections.podnet.network.plugins.plugin_utils.memo_ref import reference, sha256_of

MODEL = '{"services":[]}'


def action(args):
    plugin = object.__new__(ActionModule)
    plugin._task = SimpleNamespace(args=args, async_val=0, check_mode=False, action="podnet.network.dns")
    plugin._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="set"))
    plugin.sent = []
    plugin._execute_module = lambda module_name, module_args, task_vars: plugin.sent.append(module_args) or {}
    plugin._remove_tmp_path = lambda path: None
    return plugin


def test_the_module_gets_the_text_a_reference_names_and_the_digest_is_the_references(tmp_path):
    kept = tmp_path / "services-resolved.txt"
    kept.write_text(MODEL)
    ref = reference(str(kept), sha256_of(MODEL))
    index = glance.INDEX
    plugin = action({"model": ref, "node": "node1"})
    plugin.run(task_vars={"podnet_node": {"glance": {"index": index, "settled": {}}}})
    digest = glance.inputs_digest("podnet.network.dns", {"model": "podnet-memo:" + sha256_of(MODEL),
                                                         "node": "node1"})
    assert plugin.sent == [{"model": MODEL, "node": "node1", "glance_inputs": digest}]
    # The same text kept under another inventory's memo is the same task: the glance that
    # a run from one inventory file recorded vouches for a run from another.
    elsewhere = tmp_path / "other" / "services-resolved.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text(MODEL)
    plugin = action({"model": reference(str(elsewhere), sha256_of(MODEL)), "node": "node1"})
    result = plugin.run(task_vars={"podnet_node": {"glance": {"index": index, "settled": {digest: {}}}}})
    assert result["glanced"] and not result["changed"] and plugin.sent == []
    kept.write_text(MODEL.replace("[]", "[{}]"))
    plugin = action({"model": ref, "node": "node1"})
    result = plugin.run(task_vars={})
    assert result["failed"] and "run the plays again" in result["msg"] and plugin.sent == []


def test_a_large_content_goes_at_once_where_the_glance_found_the_table_other():
    """podnet.network.nftables: a content over 256 KB goes with the first module run when the
    run's glance did not vouch for the task; without a glance, or once another task changed
    the node in this run, the node is first asked with its digest alone."""
    from ansible_collections.podnet.network.plugins.action.nftables import ActionModule as NftablesAction
    content = "table ip t {\n" + "  set s {\n    typeof ip daddr\n  }\n" * 20000 + "}\n"
    digest = hashlib.sha256(content.encode()).hexdigest()
    args = {"table": "t", "content": content}

    def sent(task_vars, answers):
        plugin = object.__new__(NftablesAction)
        plugin._task = SimpleNamespace(args=dict(args), async_val=0, check_mode=False,
                                       action="podnet.network.nftables")
        plugin._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir="set"))
        runs = []
        plugin._execute_module = lambda module_name, module_args, task_vars: runs.append(module_args) \
            or answers[len(runs) - 1]
        plugin._remove_tmp_path = lambda path: None
        plugin.run(task_vars=task_vars)
        return [("content" in run, run.get("content_sha256")) for run in runs]

    glanced = {"podnet_node": {"glance": {"index": glance.INDEX, "settled": {}}}}
    assert sent(glanced, [{"changed": True}]) == [(True, None)]
    assert sent(dict(glanced, podnet_node_moved=True), [{"current": False}, {"changed": True}]) == \
        [(False, digest), (True, None)]
    assert sent(dict(glanced, podnet_node_moved=True), [{"current": True}]) == [(False, digest)]
    assert sent({}, [{"current": False}, {"changed": True}]) == [(False, digest), (True, None)]
