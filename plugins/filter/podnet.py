"""Jinja2 filters that expose podnet's pure core (plugins/module_utils) to playbooks.

DOCUMENTATION lives here, not in per-filter files: these filters are podnet's
own plumbing, not a public API.

- ``podnet.network.pod_cidrs(hosts, hostvars, cluster_cidr, node_cidr_mask_size)``:
  the podCIDR of every node (see podnet_cidr.allocate_pod_cidrs).
- ``podnet.network.cni_conflist(pod_cidr, mtu, bridge)``: the node's conflist dict.
- ``podnet.network.egress_table(cluster_cidr)``: the text of podnet's nftables table.
- ``podnet.network.expand_pods(pods, nodes)``: the inventory's test pods, replicas
  spread across nodes, validated.
- ``podnet.network.node_peers(hosts, hostvars, this_node, overlay, cluster_cidr, pod_cidrs)``:
  every other node with the road to its pods, ``direct`` or ``vxlan`` (see
  pod_network/overlay.py); ``overlay`` is podnet_overlay (auto, vxlan, none); ``pod_cidrs``
  is pod_cidrs()'s allocation (else the podCIDRs the plan recorded).
- ``podnet.network.node_routes(peers, vxlan_device)``: the routes to those peers' podCIDRs,
  via their node IPs or onlink via their VTEPs on the VXLAN device.
- ``podnet.network.vxlan_peers(peers)``: the FDB and neighbour entries of the VXLAN peers.
- ``podnet.network.vtep(pod_cidr, underlay_mtu)``: this node's VXLAN endpoint: its address,
  MAC and the device's MTU.
- ``podnet.network.pod_mtu(peers, underlay_mtu)``: the pods' MTU, the underlay's less 50
  when any peer is reached by VXLAN.
- ``podnet.network.services_model(path, pods, previous, service_cidr,
  node_port_range, cluster_cidr, dns_ip, cluster_domain)``: the services file at ``path``
  read, validated, its endpoints resolved and addresses allocated (see docs/services.md),
  no Service on the cluster DNS address ``dns_ip``, every DNS name under
  ``cluster_domain`` fitting; no file at ``path`` means no Services. Legal but surprising
  input is a warning.
- ``podnet.network.services_checked(path, pods, previous, service_cidr, node_port_range,
  cluster_cidr, dns_ip, cluster_domain)``: the plan's one read of the services file: parsed,
  validated (named targetPorts against ``pods``, the declared pods; the checks of
  ``services_model``) and allocated, endpoints not resolved; compact JSON text, which later
  plays carry as a string rather than a 10,000-entry structure.
- ``podnet.network.resolve_services(checked, pods)``: the services model, as compact JSON
  text, from ``services_checked``'s text and the pods the nodes run.
- ``podnet.network.services_delta(model, memo_dir)``: the Services that changed since the
  model this controller resolved last (kept in ``memo_dir``), as the proxy's first ask sends them.
- ``podnet.network.node_pods(hosts, hostvars)``: the test pods every node reported
  running, each with its node, as Services select them; a node without that record (the
  test pods' play did not run) is an error naming it.
- ``podnet.network.service_allocations(model, memo_dir)``: the clusterIPs and nodePorts to
  keep (the model as a dict or as JSON text); given ``memo_dir`` (even empty), as compact
  JSON text, from the plan's memo when it holds that very model.
- ``podnet.network.allocations_file(text)``: the allocations file's text (one Service per
  line) from service_allocations' compact text.
- ``podnet.network.merge_allocations(hosts, hostvars)``: the allocations the nodes
  persisted, merged (the first node that knows a Service wins); node_info's compact text as
  it is when every node holds the same (services_checked takes either).
- ``podnet.network.policy_model(paths, pods, cluster_cidr, services_file)``: the
  NetworkPolicy and Namespace objects of the given files (the services file, a policies
  file) validated and resolved against the pods (see docs/network-policy.md); given
  ``services_file``, every other file may hold only those kinds.
- ``podnet.network.policies_checked(paths, pods, cluster_cidr, services_file)``: the plan's
  one read of those files: ``policy_model``'s checks (resolved against ``pods``, the declared
  pods), kept unresolved as compact JSON text for the policy play.
- ``podnet.network.resolve_policies(checked, pods, cluster_cidr, memo_dir)``: the policy
  model from ``policies_checked``'s text and the pods the nodes run; no file is read again.
  Given ``memo_dir``, compact JSON text, remembered there.
- ``podnet.network.policy_table(model, node, table, memo_dir)``: the text of the nftables
  table that enforces those policies for one node's pods (remembered per node in
  ``memo_dir`` when the model is text).
- ``podnet.network.cluster_dns_ip(service_cidr, dns_ip)``: the cluster DNS address,
  ``dns_ip`` or else the service CIDR's tenth address, checked to be inside it.
"""

import contextlib
import glob
import hashlib
import json
import marshal
import os
import pathlib
import sys
import tempfile
import time

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display
from ansible_collections.podnet.network.plugins.module_utils.common.manifests import (
    KINDS,
    ManifestError,
    chunks,
    decode,
    parse_alone,
    remembered_documents,
)
from ansible_collections.podnet.network.plugins.module_utils.dns.records import (
    DnsConfigError,
    check_domain,
    cluster_dns_ip,
)
from ansible_collections.podnet.network.plugins.module_utils.pod_network.cidr import (
    PodCIDRError,
    allocate_pod_cidrs,
)
from ansible_collections.podnet.network.plugins.module_utils.pod_network.netconf import (
    render_conflist,
    render_egress_table,
)
from ansible_collections.podnet.network.plugins.module_utils.pod_network.overlay import (
    OverlayError,
    peer_routes,
    plan_peers,
    pod_mtu,
    vtep,
    vxlan_peers,
)
from ansible_collections.podnet.network.plugins.module_utils.pods.spec import PodSpecError, expand_pods
from ansible_collections.podnet.network.plugins.module_utils.policy.model import (
    load_policies,
    policy_digest,
    policy_resolver,
    read_policies,
    resolution_context,
    resolve_policies,
)
from ansible_collections.podnet.network.plugins.module_utils.policy.render import render_table
from ansible_collections.podnet.network.plugins.module_utils.services.model import (
    ServiceSpecError,
    allocations,
    load_services,
    read_services,
    recheck_services,
    resolve_service,
    resolve_services,
)
from ansible_collections.podnet.network.plugins.module_utils.services.transfer import (
    bulk,
    compact,
    delta_from,
)
from ansible_collections.podnet.network.plugins.plugin_utils import memo_ref

_display = Display()


def podnet_pod_cidrs(hosts, hostvars, cluster_cidr, node_cidr_mask_size):
    nodes = []
    for host in hosts:
        hv = hostvars[host]
        node_info = hv.get("podnet_node") or {}
        nodes.append({
            "name": host,
            "pod_cidr": hv.get("pod_cidr"),
            "persisted": node_info.get("persisted_pod_cidr"),
            "node_network": node_info.get("node_network"),
        })
    try:
        return allocate_pod_cidrs(cluster_cidr, node_cidr_mask_size, nodes)
    except PodCIDRError as exc:
        raise AnsibleFilterError("podCIDR allocation: %s" % exc) from None


def podnet_node_peers(hosts, hostvars, this_node, overlay="auto", cluster_cidr="10.244.0.0/16",
                      pod_cidrs=None):
    """`pod_cidrs`: pod_cidrs()'s allocation, so the plan decides the peers in the same task
    that records the node's own podCIDR; without it, the podCIDRs the plan recorded."""
    nodes = {}
    for host in hosts:
        facts = hostvars[host]
        node = facts.get("podnet_node") or {}
        nodes[host] = {
            "node_ip": node["node_ip"] if pod_cidrs else facts["podnet_plan_node_ip"],
            "pod_cidr": pod_cidrs[host]["pod_cidr"] if pod_cidrs else facts["podnet_plan_pod_cidr"],
            "networks": node.get("networks") or []}
    try:
        return plan_peers(nodes, this_node, overlay, cluster_cidr)
    except OverlayError as exc:
        raise AnsibleFilterError(str(exc)) from None


def podnet_node_routes(peers, vxlan_device="podnet.1"):
    return peer_routes(peers or [], vxlan_device)


def podnet_vxlan_peers(peers):
    return vxlan_peers(peers or [])


def podnet_vtep(pod_cidr, underlay_mtu):
    return vtep(pod_cidr, underlay_mtu)


def podnet_pod_mtu(peers, underlay_mtu):
    return pod_mtu(underlay_mtu, peers or [])


def podnet_expand_pods(pods, nodes):
    try:
        return expand_pods(pods or [], sorted(nodes))
    except PodSpecError as exc:
        raise AnsibleFilterError("podnet_test_pods: %s" % exc) from None


def podnet_cni_conflist(pod_cidr, mtu, bridge="cbr0", network_name="podnet"):
    return render_conflist(pod_cidr, mtu, bridge=bridge, network_name=network_name)


def podnet_egress_table(cluster_cidr, table="podnet"):
    return render_egress_table(cluster_cidr, table=table)


def _read_bytes(path):
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise AnsibleFilterError("%s: cannot read: %s" % (path, exc.strerror)) from None


def _read_manifests(path, data=None):
    """The text of a manifest file (`data`: its bytes, already read), read on the controller
    as lookup('file') would: the files are inventory, not node state. One way for every
    filter that reads them."""
    if data is None:
        data = _read_bytes(path)
    try:
        return decode(data, str(path))
    except ManifestError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _checked_domain(cluster_domain):
    try:
        return check_domain(cluster_domain) if cluster_domain else None
    except DnsConfigError as exc:
        raise AnsibleFilterError(str(exc)) from None


def podnet_services_model(path, pods, previous=None, service_cidr="10.96.0.0/12",
                          node_port_range="30000-32767", cluster_cidr="10.244.0.0/16", dns_ip=None,
                          cluster_domain=None):
    # No services file is no Services, not an error: the plan says so in its own task.
    text = _read_manifests(path) if path and pathlib.Path(path).is_file() else ""
    try:
        return load_services(text, str(path), pods or [], previous=previous or {},
                             service_cidr=service_cidr, node_port_range=node_port_range,
                             cluster_cidr=cluster_cidr, dns_ip=dns_ip or None,
                             cluster_domain=_checked_domain(cluster_domain), warn=_display.warning)
    except ServiceSpecError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _code_digest():
    """The digest of podnet's controller-side code (this file and module_utils), so a memo
    made by another podnet is never taken."""
    plugins = pathlib.Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in [pathlib.Path(__file__).resolve(), *sorted((plugins / "module_utils").rglob("*.py"))]:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _memo(memo_dir, name, inputs, compute, given=None, reads_manifests=False, settings=None, reference=False):
    """compute() -> (text, warnings, [the `given` values it also stands for, or their compact
    text], optionally {more: value}), remembered in memo_dir for these very inputs (and
    podnet's code) and any of those `given` values (`given`: a value, or its compact text):
    the last result only, its text as it is in NAME.DIGEST.txt (_text_path) and the rest in
    NAME.json (each written whole, a rename; NAME.json names the text by digest, so a later
    task that holds the text asks the memo without reading it back). The warnings are shown
    again on a hit; `more` is what later tasks may ask of this result (_memo_more). No
    memo_dir: computed every time.
    `reads_manifests`: compute() reads manifest files, whose documents are remembered one by
    one too (_remembered_documents). `settings`: the inputs less the files' content; given
    them, compute(earlier) returns a fifth value, a state kept beside the result
    (NAME.state, read on a miss only: _read_state), and takes the last one as `earlier`
    when it was made under the same settings and `given` (else None), to check again only
    what changed.
    `reference`: with memo_dir, a reference to the kept text is returned (plugin_utils/
    memo_ref.py), not the text."""
    given = _sha(given if isinstance(given, str) else compact(given))
    if not memo_dir:
        text, warnings = (compute(None) if settings is not None else compute())[:2]
    else:
        code = _code_digest()
        key = hashlib.sha256((compact(inputs) + code).encode()).hexdigest()
        base = None if settings is None else hashlib.sha256((compact(settings) + code).encode()).hexdigest()
        path = _memo_path(memo_dir, name)
        state_path = _state_path(memo_dir, name)
        memo = _read_json(path)
        same = given in (memo.get("given") or ())
        text = _memo_text(memo_dir, name, memo) if same and memo.get("key") == key else None
        if text is not None:
            digest = memo["text_sha256"]
            warnings = memo.get("warnings") or []
        else:
            earlier = None
            if same and base is not None and memo.get("settings") == base:
                kept = _read_state(state_path)
                earlier = kept.get("state") if kept.get("key") == memo.get("key") else None
            with _remembered_documents(memo_dir, name) if reads_manifests else contextlib.nullcontext():
                text, warnings, also, *rest = compute(earlier) if base is not None else compute()
            also = [_sha(value if isinstance(value, str) else compact(value)) for value in also]
            digest = _sha(text)
            kept = _text_path(memo_dir, name, digest)
            reference = _keep(kept, text) and reference
            _prune_texts(memo_dir, name, kept)
            _keep(path, {"key": key, "settings": base, "text_sha256": digest, "warnings": warnings,
                         "given": [given, *also], "more": rest[0] if rest else {}})
            if base is not None:
                _keep_state(state_path, {"key": key, "state": rest[1] if len(rest) > 1 else None})
    for warning in warnings:
        _display.warning(warning)
    if reference and memo_dir:
        return memo_ref.reference(os.path.abspath(_text_path(memo_dir, name, digest)), digest)
    return text


def _memo_path(memo_dir, name):
    return pathlib.Path(memo_dir).expanduser() / ("%s.json" % name)


def _text_path(memo_dir, name, sha256):
    """Where the memo keeps a text of NAME: by its digest, so a run's reference to the text
    it made still reads it while another run (other inputs, the same inventory) makes its
    own (memo_ref.py)."""
    return pathlib.Path(memo_dir).expanduser() / ("%s.%s.txt" % (name, sha256[:16]))


# Texts of NAME kept besides the last one: those written in the last hour (another run's,
# still under way), at most this many.
TEXTS_KEPT = 4


def _prune_texts(memo_dir, name, kept):
    """Remove NAME's texts but `kept`, the newest TEXTS_KEPT written in the last hour."""
    others = []
    for path in pathlib.Path(memo_dir).expanduser().glob("%s.*.txt" % glob.escape(name)):
        try:
            if path != kept:
                others.append((path.stat().st_mtime, path))
        except OSError:
            pass
    others.sort(reverse=True)
    recent = time.time() - 3600
    for number, (mtime, path) in enumerate(others):
        if number >= TEXTS_KEPT or mtime < recent:
            try:
                path.unlink()
            except OSError:
                pass


def _state_path(memo_dir, name):
    return pathlib.Path(memo_dir).expanduser() / ("%s.state" % name)


# A memo's state is what a check again reads whole and writes whole on every change: at
# 10,000 Services, 20,000 pieces and 10,000 Services' texts, 11 MB. It is kept in Python's
# own marshal format, five times quicker both ways than JSON, and read back only by the
# Python that wrote it (STATE_FORMAT); anything else reads as no state, and the check then
# runs whole. It is this controller's cache (under ~/.cache), never read by anything else.
STATE_FORMAT = "podnet-state 1 %s marshal %d" % (sys.version, marshal.version)


def _read_state(path):
    """A memo's state kept by _keep_state, or {} (none, unreadable, another Python's)."""
    try:
        kept = marshal.loads(pathlib.Path(path).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    data = kept.get("data") if isinstance(kept, dict) and kept.get("format") == STATE_FORMAT else None
    return data if isinstance(data, dict) else {}


def _keep_state(path, data):
    """A memo's state written whole (_keep), or a warning."""
    try:
        state = marshal.dumps({"format": STATE_FORMAT, "data": data})
    except ValueError as exc:
        _display.warning("podnet cannot keep its memo %s: %s" % (path, exc))
    else:
        _keep(path, state)
    try:
        path.with_name(path.name + ".json").unlink()  # as podnet 0.2.0 kept it
    except OSError:
        pass


def _memo_text(memo_dir, name, memo):
    """The text memo_dir keeps for NAME (`memo`: its NAME.json), or None (none, or not the
    one NAME.json names: a write that did not finish)."""
    try:
        text = _text_path(memo_dir, name, memo.get("text_sha256") or "").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if memo.get("text_sha256") == _sha(text) else None


def _memo_of(memo_dir, name, text):
    """memo_dir's NAME.json when the text it keeps is `text` itself (or a reference to it);
    else {}."""
    memo = _read_json(_memo_path(memo_dir, name))
    return memo if memo.get("text_sha256") == memo_ref.digest_of(text) else {}


def _text(value):
    """The text a filter was given, read back when it is a reference (memo_ref.py)."""
    try:
        return memo_ref.text_of(value)
    except memo_ref.MemoReferenceError as exc:
        raise AnsibleFilterError(str(exc)) from None


def _read_json(path):
    """A memo file's data, or {} (none, unreadable, or not an object)."""
    try:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _memo_more(memo_dir, name, text, what):
    """What _memo kept beside `text` as `what` in memo_dir/NAME.json, when the result it
    kept is `text` itself; else None. A later task's shortcut, never its only way."""
    more = _memo_of(memo_dir, name, text).get("more")
    return more.get(what) if isinstance(more, dict) else None


def _keep(path, data):
    """A memo file written whole (a rename), or a warning: `data` as JSON, or a text or
    bytes as they are. Whether it was written."""
    if not isinstance(data, bytes):
        # json.dump would take the pure-Python encoder
        data = (data if isinstance(data, str) else json.dumps(data)).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=".%s." % path.stem,
                                         delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    except OSError as exc:
        _display.warning("podnet cannot keep its memo %s: %s" % (path, exc))
        return False
    return True


@contextlib.contextmanager
def _remembered_documents(memo_dir, name):
    """Within it, the manifest files are parsed document by document, each remembered in
    memo_dir/NAME.documents.json: when the check must be made again (one Service changed),
    only the documents whose text changed are parsed."""
    path = pathlib.Path(memo_dir).expanduser() / ("%s.documents.json" % name)
    code = _code_digest()
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        memo = saved["documents"] if saved.get("code") == code else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        memo = {}
    with remembered_documents(memo) as kept:
        yield
    if kept != memo:
        _keep(path, {"code": code, "documents": kept})


@bulk
def podnet_services_checked(path, pods, previous=None, service_cidr="10.96.0.0/12",
                            node_port_range="30000-32767", cluster_cidr="10.244.0.0/16", dns_ip=None,
                            cluster_domain=None, memo_dir=None):
    data = _read_bytes(path) if path and pathlib.Path(path).is_file() else None

    def compute(earlier):
        text = _read_manifests(path, data) if data is not None else ""
        # Only Endpoints or EndpointSlices changed since the last check (under these very
        # settings and previous allocations): only what they feed is checked again.
        again = None
        if earlier and earlier.get("allocations") and earlier.get("recheck"):
            again = recheck_services(text, str(path), earlier["recheck"], service_cidr, node_port_range,
                                     cluster_cidr)
        if again is not None:
            checked, warnings, state = again
            return checked, warnings, [earlier["allocations"]], {"allocations": earlier["allocations"]}, \
                dict(earlier, recheck=state)
        warnings, state = [], {}
        with _remembered_documents(memo_dir, "services-checked") if memo_dir else contextlib.nullcontext():
            checked = _services_read(text, path, previous, service_cidr, node_port_range, cluster_cidr,
                                     dns_ip, cluster_domain, pods, warnings, state)
        # Allocation is stable: given the addresses it allocated as the previous ones, the
        # read allocates them again, so the result stands for those too (the next run's,
        # once the nodes persisted them).
        kept = compact(allocations(checked))
        return compact(checked), warnings, [kept], {"allocations": kept}, {"allocations": kept,
                                                                           "recheck": state}

    settings = [str(path), pods or [], service_cidr, node_port_range, cluster_cidr, dns_ip or None,
                cluster_domain]
    digest = hashlib.sha256(data or b"").hexdigest()
    inputs = [*settings, digest]
    return _memo(memo_dir, "services-checked", inputs, compute, given=previous or {}, settings=settings,
                 reference=True)


def _services_read(text, path, previous, service_cidr, node_port_range, cluster_cidr, dns_ip, cluster_domain,
                   pods, warnings, state):
    """The plan's whole check of the services file (read_services), `state` filled for the
    next check again."""
    try:
        if isinstance(previous, str):  # merge_allocations' compact text
            previous = json.loads(previous)
        checked = read_services(text, str(path), previous=previous or {}, service_cidr=service_cidr,
                                node_port_range=node_port_range, cluster_cidr=cluster_cidr,
                                dns_ip=dns_ip or None, cluster_domain=_checked_domain(cluster_domain),
                                warn=warnings.append, keep=state)
        # Resolved only to check named targetPorts against the declared pods, which only a
        # selector picks: selector-less Services (their endpoints listed) need no pass.
        resolve_services(dict(checked, services=[svc for svc in checked["services"] if svc["selector"]]),
                         pods or [])
    except ServiceSpecError as exc:
        raise AnsibleFilterError(str(exc)) from None
    return checked


def _checked_parts(memo_dir, checked):
    """(head, [[ns/name, compact text], ...]) of the plan's checked text, from the state its
    memo keeps beside it (services_checked), when that memo holds `checked` itself; else
    None. Its texts join into `checked`: head + ",".join(texts) + "]}"."""
    memo = _memo_of(memo_dir, "services-checked", checked)
    if not memo:
        return None
    kept = _read_state(_state_path(memo_dir, "services-checked"))
    state = (kept.get("state") or {}).get("recheck") if kept.get("key") == memo.get("key") else None
    if not isinstance(state, dict) or "head" not in state or "services" not in state:
        return None
    return state["head"], state["services"]


@bulk
def podnet_resolve_services(checked, pods, memo_dir=None):
    """The services model: the plan's checked Services with their endpoints from the pods the
    nodes run; remembered in memo_dir for the same checked text and pods (a no-op run at
    10,000 Services does not resolve them again). With the plan's memo, Service by Service:
    one whose checked text is the last run's, under the same pods, is not resolved again,
    and the memo says which Services changed since the last model (services_delta)."""
    def compute(earlier):
        parts = _checked_parts(memo_dir, checked) if memo_dir else None
        try:
            if parts is None:
                return compact(resolve_services(json.loads(_text(checked)), pods or [])), [], []
            head, services = parts[0], parts[1]
            known = (earlier or {}).get("services") or {}
            resolved, kept, changed = [], {}, {}
            for name, text in services:
                digest, was = _sha(text), known.get(name)
                out = was[1] if was and was[0] == digest else compact(resolve_service(json.loads(text), pods))
                if not was or was[1] != out:
                    changed[name] = out
                resolved.append(out)
                kept[name] = [digest, out]
        except ServiceSpecError as exc:
            raise AnsibleFilterError(str(exc)) from None
        model = head + ",".join(resolved) + "]}"
        more = {}
        if earlier and earlier.get("sha256"):
            more = {"from": earlier["sha256"], "changed": changed, "removed": sorted(set(known) - set(kept))}
        return model, [], [], more, {"services": kept, "sha256": _sha(model)}

    inputs = [memo_ref.digest_of(checked), pods or []]
    return _memo(memo_dir, "services-resolved", inputs, compute, settings=[pods or []], reference=True)


def _known_delta(memo_dir, model, text, earlier):
    """services_delta's change from the Services the resolve found changed (its memo's
    `more`), when its memo holds `model` (`text`) and it resolved from `earlier`; else None."""
    more = _memo_of(memo_dir, "services-resolved", model).get("more") or {}
    if not more.get("from") or more["from"] != _sha(earlier):
        return None
    fields = json.loads(text[:text.index('"services":[')] + '"services":[]}')
    del fields["services"]
    return {"base_sha256": more["from"], "fields": fields,
            "services": {name: json.loads(service) for name, service in more["changed"].items()},
            "removed": more["removed"]}


@bulk
def podnet_services_delta(model, memo_dir=None):
    """The delta (compact JSON text, transfer.delta_from) from the model this controller
    resolved last to `model`, or "" (no memo_dir, no earlier model, the same model): the
    proxy's first ask carries it, so a node that runs that earlier model changes in one
    module run. memo_dir keeps `model` as the next run's base. When the resolve knew which
    Services changed (its memo), neither model is parsed."""
    if not memo_dir:
        return ""
    path = pathlib.Path(memo_dir).expanduser() / "services-model.json"
    try:
        earlier = path.read_text(encoding="utf-8")
    except OSError:
        earlier = None
    if earlier is not None and _sha(earlier) == memo_ref.digest_of(model):
        return ""
    text = _text(model)
    change = None
    if earlier:
        change = _known_delta(memo_dir, model, text, earlier) or delta_from(earlier, json.loads(text))
    _keep(path, text)
    return compact(change) if change else ""


def podnet_node_pods(hosts, hostvars):
    pods = []
    for host in hosts:
        running = hostvars[host].get("podnet_test_pods_node_pods")
        if running is None:  # not an empty cluster: a run that left out the pods' play
            raise AnsibleFilterError("%s has no record of the pods it runs: run playbooks/plan.yml and "
                                     "playbooks/test_pods.yml (site.yml does) first, in the same "
                                     "ansible-playbook run" % host)
        for pod in running.values():
            pods.append(dict(pod, node=host))
    return pods


@bulk
def podnet_service_allocations(model, memo_dir=None):
    """allocations() of a model (a dict, or JSON text). Given memo_dir (even "": no memo),
    compact JSON text, taken from the plan's memo when `model` is the checked text it kept:
    at 10,000 Services the model is not parsed again on every run for what the plan knew."""
    if memo_dir is None:
        return allocations(json.loads(_text(model)) if isinstance(model, str) else model)
    if memo_dir and isinstance(model, str):
        known = _memo_more(memo_dir, "services-checked", model, "allocations")
        if isinstance(known, str):
            return known
    return compact(allocations(json.loads(_text(model)) if isinstance(model, str) else model))


@bulk
def podnet_allocations_file(text):
    """The allocations file's text from service_allocations' compact text: one Service per
    line, readable, sorted, written in milliseconds (to_nice_json took a second per node at
    10,000 Services)."""
    kept = json.loads(text)
    lines = ["%s:%s" % (json.dumps(name), compact(kept[name])) for name in sorted(kept)]
    return "{\n" + ",\n".join(lines) + ("\n}\n" if lines else "}\n")


def podnet_merge_allocations(hosts, hostvars):
    texts = {(hostvars[host].get("podnet_node") or {}).get("persisted_service_allocations") for host in hosts}
    if len(texts) == 1 and isinstance(next(iter(texts)), str) and next(iter(texts)):
        # Every node holds the same (node_info's compact text): that text, not parsed (a
        # megabyte at 10,000 Services; services_checked compares it as it is).
        return next(iter(texts))
    merged = {}
    for host in hosts:
        persisted = (hostvars[host].get("podnet_node") or {}).get("persisted_service_allocations") or {}
        if isinstance(persisted, str):  # node_info's compact JSON text
            persisted = json.loads(persisted)
        for service, allocation in persisted.items():
            merged.setdefault(service, allocation)
    return merged


def _policy_sources(paths, services_file, files=None):
    # Every file but the services file holds policies only: a Service there is refused, not skipped.
    # (Without services_file none is.) `files`: {path: bytes} already read.
    return [(_read_manifests(path, (files or {}).get(str(path))), str(path),
             "the policies file (podnet_policies_file)"
             if services_file and str(path) != str(services_file) else None) for path in paths or []]


def podnet_policy_model(paths, pods, cluster_cidr="10.244.0.0/16", services_file=None):
    try:
        return load_policies(_policy_sources(paths, services_file), pods or [], cluster_cidr=cluster_cidr)
    except ServiceSpecError as exc:
        raise AnsibleFilterError(str(exc)) from None


@bulk
def podnet_policies_checked(paths, pods, cluster_cidr="10.244.0.0/16", services_file=None, memo_dir=None):
    files = {str(path): _read_bytes(path) for path in paths or []}

    def compute(earlier):
        try:
            read = read_policies(_policy_sources(paths, services_file, files))
            # Resolved against the declared pods only to check them; one policy changed, the
            # others are taken from the last check (_resolved_each).
            state = _resolved_each(read, pods, cluster_cidr, earlier)[1]
        except ServiceSpecError as exc:
            raise AnsibleFilterError(str(exc)) from None
        return compact(read), [], [], {}, state

    settings = [list(files), pods or [], cluster_cidr, str(services_file)]
    inputs = [[[path, _policy_view(memo_dir, data) if memo_dir and path == str(services_file) else None
                or hashlib.sha256(data).hexdigest()] for path, data in files.items()],
              pods or [], cluster_cidr, str(services_file)]
    return _memo(memo_dir, "policies-checked", inputs, compute, reads_manifests=True, settings=settings)


def _resolved_each(read, pods, cluster_cidr, earlier):
    """(the policy model's compact text, the state a policy memo keeps of it: {"context":
    resolution_context, "policies": {policy_digest: its model's compact text}}), the
    policies `earlier` (the last state) holds taken again, not resolved, when it was made in
    the same context."""
    context = resolution_context(read, pods, cluster_cidr)
    known = (earlier or {}).get("policies") if (earlier or {}).get("context") == context else None
    known = known if isinstance(known, dict) else {}
    fields, resolve = policy_resolver(read, pods or [], cluster_cidr)
    kept, texts = {}, []
    for policy in read["policies"]:
        digest = policy_digest(policy)
        text = kept[digest] = known.get(digest) or compact(resolve(policy))
        texts.append(text)
    # The fields' keys sort before "policies": the text compact() gives the model whole.
    head, tail = compact(dict(fields, policies=[])).rsplit('"policies":[]', 1)
    return head + '"policies":[' + ",".join(texts) + "]" + tail, {"context": context, "policies": kept}


def _policy_view(memo_dir, data):
    """What the policy reader reads of the services file, as a digest: every piece of it
    (manifests.chunks) where it stands, but those that hold one Service, Endpoints or
    EndpointSlice, which it only checks the kind of. One endpoint changed at 10,000 Services
    leaves it alone, and the policies are not read again. The services check's state says
    what each piece it read holds; a piece it did not read is parsed here. The plan's task
    runs both readers in one process, in whichever order Ansible templates them: the file is
    split once for both (manifests.chunks). None when the file is not split simply or a
    piece does not parse (the file's digest then)."""
    file_digest = hashlib.sha256(data).hexdigest()
    cache = pathlib.Path(memo_dir).expanduser() / "policies-view.json"
    seen = _read_json(cache)
    if seen.get("sha256") == file_digest and isinstance(seen.get("view"), str):
        return seen["view"]  # the same file as the last time (a no-op run): not split again
    view = _pieces_view(memo_dir, data)
    if view is None:
        return None
    view = "view:" + hashlib.sha256(compact(view).encode()).hexdigest()
    _keep(cache, {"sha256": file_digest, "view": view})
    return view


def _pieces_view(memo_dir, data):
    """_policy_view's pieces ([digest, number, line] of each one it reads), the file split
    here; None when it is not split simply or a piece does not parse."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    pieces = chunks(text)
    if pieces is None:
        return None
    kept = _read_state(_state_path(memo_dir, "services-checked"))
    state = (kept.get("state") or {}).get("recheck") if isinstance(kept.get("state"), dict) else None
    known = {entry[0]: entry for entry in (state or {}).get("chunks") or ()}
    view, number = [], 1
    for digest, chunk, line in pieces:
        entry = known.get(digest)
        if entry is not None:
            count, read = entry[3], entry[4][:1] in (["S"], ["E"])
        else:
            parsed = parse_alone(chunk)
            if parsed is None:
                return None
            count, obj = len(parsed), parsed[0][1] if parsed else None
            read = count == 1 and isinstance(obj, dict) and obj.get("kind") in KINDS["services"] \
                and obj.get("apiVersion") == KINDS["services"][obj["kind"]]
        if not read:
            view.append([digest, number, line])
        number += count
    return view


@bulk
def podnet_resolve_policies(checked, pods, cluster_cidr="10.244.0.0/16", memo_dir=None):
    """The policy model; with memo_dir, as compact JSON text remembered there for the same
    checked text, pods and CIDR (a no-op run at 1,000 policies resolves none again)."""
    def resolved():
        try:
            return resolve_policies(json.loads(checked), pods or [], cluster_cidr=cluster_cidr)
        except ServiceSpecError as exc:
            raise AnsibleFilterError(str(exc)) from None

    if not memo_dir:
        return resolved()

    def compute(earlier):
        # One policy changed: the others are taken from the last run (_resolved_each).
        try:
            text, state = _resolved_each(json.loads(checked), pods, cluster_cidr, earlier)
        except ServiceSpecError as exc:
            raise AnsibleFilterError(str(exc)) from None
        return text, [], [], {}, state

    inputs = [hashlib.sha256(checked.encode("utf-8")).hexdigest(), pods or [], cluster_cidr]
    return _memo(memo_dir, "policies-resolved", inputs, compute, settings=[cluster_cidr])


def podnet_policy_table(model, node, table="podnet-policy", memo_dir=None):
    """One node's policy table from the model (or its text, as resolve_policies gives it with
    memo_dir); given the text and memo_dir, remembered there per node for the same text."""
    if not (memo_dir and isinstance(model, str)):
        return render_table(json.loads(model) if isinstance(model, str) else model, node, table=table)
    inputs = [hashlib.sha256(model.encode("utf-8")).hexdigest(), node, table]
    name = "policy-table-%s" % hashlib.sha256(node.encode("utf-8")).hexdigest()[:16]
    return _memo(memo_dir, name, inputs, lambda: (render_table(json.loads(model), node, table=table), [], []))


def podnet_cluster_dns_ip(service_cidr, dns_ip=None):
    try:
        return cluster_dns_ip(service_cidr, dns_ip or None)
    except DnsConfigError as exc:
        raise AnsibleFilterError("podnet_dns_ip: %s" % exc) from None


class FilterModule:
    def filters(self):
        return {
            "pod_cidrs": podnet_pod_cidrs,
            "cni_conflist": podnet_cni_conflist,
            "egress_table": podnet_egress_table,
            "node_peers": podnet_node_peers,
            "node_routes": podnet_node_routes,
            "vxlan_peers": podnet_vxlan_peers,
            "pod_mtu": podnet_pod_mtu,
            "vtep": podnet_vtep,
            "expand_pods": podnet_expand_pods,
            "services_model": podnet_services_model,
            "services_checked": podnet_services_checked,
            "resolve_services": podnet_resolve_services,
            "services_delta": podnet_services_delta,
            "node_pods": podnet_node_pods,
            "service_allocations": podnet_service_allocations,
            "merge_allocations": podnet_merge_allocations,
            "allocations_file": podnet_allocations_file,
            "memo_text": _text,
            "policy_model": podnet_policy_model,
            "policies_checked": podnet_policies_checked,
            "resolve_policies": podnet_resolve_policies,
            "policy_table": podnet_policy_table,
            "cluster_dns_ip": podnet_cluster_dns_ip,
        }
