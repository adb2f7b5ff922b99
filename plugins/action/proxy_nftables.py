"""Action plugin for podnet.network.proxy_nftables: the model goes to a node only as far as needed.

Given O(model) over 256 KB, the node is first asked with the model's sha256 whether it
already runs it (milliseconds, nothing sent), and with O(model_delta) when the task gives
one beside the model: the Services that changed since the model the controller resolved
last, which the node most likely keeps (filter services_delta). A node that keeps that model
applies the delta in the same module run. If not, and the node keeps some model it last
applied, only the Services that changed since that one go
(module_utils/services/transfer.py); the node rebuilds the model and checks it is the
controller's text to the byte. Otherwise, or if that check fails, the model goes whole, as
the module alone would take it. With O(verify_live), or without O(model), the module runs as
it is called.

Before any of that, the run's glance (plugin_utils/glanced.py): when the module settled this
very task (its arguments, the model among them, less the delta that only carries it) and
node_info found the table's generation, chains, rule counts and files still as it left them,
the node is not asked at all. With O(verify_live) it always is.
"""

import hashlib
import json

from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import compact, delta
from ansible_collections.podnet.network.plugins.plugin_utils.glanced import SettledAction


class ActionModule(SettledAction):
    MODULE = "podnet.network.proxy_nftables"
    # The delta only carries the model: the task is the same without it.
    TRANSPORT = ("model_delta",)

    def _apply(self, args, task_vars):
        text = args.get("model")
        if (not isinstance(text, str) or not text or args.get("state", "present") != "present"
                or boolean(args.get("verify_live", False), strict=False)):
            return self._module(args, task_vars)
        if len(text) <= self.PIPELINED_ARGS_MAX:
            # Small enough to go with the module anyway (a homelab's Services): the node
            # answers `current` from the model itself as from its digest, and applies it in
            # the same run otherwise, where a digest alone cost a second run on a change.
            whole = {key: value for key, value in args.items() if key != "model_delta"}
            return self._module(whole, task_vars)
        asked = {key: value for key, value in args.items() if key not in ("model", "model_delta")}
        asked["model_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        guess = args.get("model_delta")
        if isinstance(guess, str) and 4 * len(guess) > len(text):
            # Most of the model (a first apply, a new file): asked by digest alone, since a
            # node without that base would take the model whole after it anyway.
            guess = None
        answer = self._module(dict(asked, model_delta=guess) if guess else asked, task_vars)
        if answer.get("failed") or answer.get("current") or "model_base" not in answer:
            return answer
        change = self._delta(text, answer["model_base"])
        if change is not None:
            sent = self._module(dict(asked, model_delta=change), task_vars)
            if sent.get("failed") or "model_from" in sent:
                return sent
        return self._module(args, task_vars)

    @staticmethod
    def _delta(text, base):
        """The delta's text from the node's base, or None: no base, or text that is not the
        compact form the node rebuilds (it could never match; the model goes whole)."""
        if not isinstance(base, dict) or not isinstance(base.get("services"), dict):
            return None
        try:
            model = json.loads(text)
        except ValueError:
            return None
        if not isinstance(model, dict) or not isinstance(model.get("services"), list):
            return None
        if compact(model) != text:
            return None
        return compact(delta(model, base))
