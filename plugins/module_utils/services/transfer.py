"""What the controller sends a node: a model's text whole, or only the Services that changed.

A model (the services model, docs/services.md) travels as compact JSON text, which at
10,000 Services is megabytes: Ansible templates, packs and passes it to every node, seconds
on a run where one endpoint moved. A node that keeps the text of the model it last applied
(its "base") can take a delta instead:

- the node tells the controller the base's sha256 and one short digest per Service
  (`kept_base`);
- the controller sends the model's other fields, the Services whose digest differs or that
  are new, and the keys of the ones gone (`delta`);
- the node rebuilds the model (`rebuild_kept`, from the form it keeps it in: kept_file)
  and takes it only if its text has the sha256 the controller's text has (`compact`):
  anything else (another base, text that was not compact) is refused, and the controller
  sends the model whole. Services are rebuilt in (namespace, name) order, the plan's; a
  model in another order says its order.

Pure functions; the proxy module and its action plugin do the I/O.
"""

import functools
import gc
import hashlib
import json


def bulk(function):
    """`function` with Python's cyclic garbage collector off. Building or parsing a model of
    10,000 Services makes millions of young objects, and the collector's passes over them
    cost more than the work (a third of a check, half a resolve); nothing here makes cycles,
    and the process (Ansible's worker, a module's) ends with the task."""
    @functools.wraps(function)
    def bulk_call(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return bulk_call


def compact(data):
    """The one text form of a model the controller hands to nodes: sorted keys, no spaces."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def service_key(svc):
    return "%s/%s" % (svc["namespace"], svc["name"])


def _digest(svc):
    return _short(compact(svc))


def _short(text):
    """A Service's digest in a base: the first 16 hex digits of its compact text's sha256."""
    return _sha256(text)[:16]


def _in_order(services):
    return sorted(services, key=lambda svc: (svc["namespace"], svc["name"]))


def rebased(base, change, sha256):
    """The kept_base of the model a delta rebuilt (its text's `sha256`), from the base it was
    rebuilt from: the digests of the Services it carried computed, the others kept."""
    services = dict(base["services"])
    for key in change["removed"]:
        services.pop(key, None)
    services.update((key, _digest(svc)) for key, svc in change["services"].items())
    return {"sha256": sha256, "services": services}


def delta(model, base):
    """What a node whose base is `base` (kept_base) needs to rebuild `model` (a dict)."""
    known = base["services"]
    return _delta(model, base["sha256"], known, lambda key, svc: known.get(key) == _digest(svc))


def delta_from(base_text, model):
    """delta(model, the base of base_text), Services compared as they are rather than by digest:
    what the controller sends along a first ask, guessing the node keeps the model the
    controller resolved last (`base_text`). None when that text is not a model."""
    try:
        known = {service_key(svc): svc for svc in json.loads(base_text)["services"]}
    except (ValueError, TypeError, KeyError):
        return None
    return _delta(model, _sha256(base_text), known, lambda key, svc: known.get(key) == svc)


def _delta(model, base_sha256, known, same):
    services, seen = {}, set()
    for svc in model["services"]:
        key = service_key(svc)
        seen.add(key)
        if not same(key, svc):
            services[key] = svc
    change = {"base_sha256": base_sha256,
              "fields": {key: value for key, value in model.items() if key != "services"},
              "services": services,
              "removed": sorted(set(known) - seen)}
    if _in_order(model["services"]) != model["services"]:
        change["order"] = [service_key(svc) for svc in model["services"]]
    return change


# A node keeps the model it applied as JSON Lines (kept_file): first a line with the
# model's other fields and its Services' keys in order, then each Service's compact text on
# a line of its own (JSON never holds a raw line break). A delta then changes the lines of
# the Services it carries and leaves the others as text: at 10,000 Services the model is
# never parsed or compacted whole, only joined and digested.


def kept_of(model):
    """The kept form of a model (a dict): (its other fields, {"ns/name": compact text})."""
    return ({key: value for key, value in model.items() if key != "services"},
            {service_key(svc): compact(svc) for svc in model["services"]})


def kept_file(kept):
    """The file text of a kept form."""
    fields, services = kept
    return "\n".join([compact({"fields": fields, "services": list(services)}), *services.values()]) + "\n"


def read_kept(text):
    """The kept form a kept file holds, or None (none, or not such a file)."""
    if not text:
        return None
    lines = text.split("\n")
    try:
        head = json.loads(lines[0])
        fields, keys = head["fields"], head["services"]
    except (ValueError, TypeError, KeyError):
        return None
    body = lines[1:-1]
    if lines[-1] or not isinstance(fields, dict) or not isinstance(keys, list) or len(keys) != len(body):
        return None
    services = dict(zip(keys, body, strict=True))
    return (fields, services) if len(services) == len(body) else None


def kept_text(kept):
    """The compact text of the model a kept form holds (what the controller sent)."""
    fields, services = kept
    head, tail = compact(dict(fields, services=[])).split('"services":[]', 1)
    return head + '"services":[' + ",".join(services.values()) + "]" + tail


def kept_base(kept):
    """The base a node tells the controller of the model it keeps: {sha256 of its text,
    services: {"ns/name": a 16-hex-digit digest of its compact text}}."""
    return {"sha256": _sha256(kept_text(kept)),
            "services": {key: _short(text) for key, text in kept[1].items()}}


def _key_order(key):
    return tuple(key.partition("/")[::2])


def rebuild_kept(kept, change, sha256, base_sha256=None):
    """(model text, kept form, the base's Services the delta replaced or removed ({"ns/name":
    Service}; None when the model's other fields changed too)) from the kept form of the
    base and a delta, or None unless the text is the controller's exactly (its `sha256`): a
    node that rendered the base renders only those and the delta's own Services again.
    Services are in (namespace, name) order, the plan's, unless the delta says its order.
    `base_sha256`: the sha256 of the kept form's text when the caller knows it (kept_base),
    else it is computed."""
    if kept is None or (base_sha256 or _sha256(kept_text(kept))) != change.get("base_sha256"):
        return None
    fields, services = kept[0], dict(kept[1])
    try:
        replaced = None
        if fields == change["fields"]:
            replaced = {key: json.loads(services[key]) for key in (*change["services"], *change["removed"])
                        if key in services}
        for key in change["removed"]:
            services.pop(key, None)
        services.update((key, compact(svc)) for key, svc in change["services"].items())
        order = change["order"] if "order" in change else sorted(services, key=_key_order)
        rebuilt = (dict(change["fields"]), {key: services[key] for key in order})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    text = kept_text(rebuilt)
    return (text, rebuilt, replaced) if _sha256(text) == sha256 else None
