"""The action plugins take a model the plan kept in its memo by reference: the task's digest
is the reference's, the module gets the text, and a reference to a text written over since
fails the task without asking the node (plugin_utils/glanced.py, memo_ref.py)."""

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
