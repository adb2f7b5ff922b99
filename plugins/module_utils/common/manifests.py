"""Reading a file of Kubernetes manifests: YAML documents to typed, validated fields.

Pure, no I/O: the caller passes the file's text and name. One file may hold the objects of
several readers (the services file holds Services and NetworkPolicies); `KINDS` says which
reader consumes which kinds, so each reader asks `objects()` for its own and every reader
checks the whole file the same way. Every error names file, document, line, object and
field, through the `Where` an object is read at:

    objects(text, filename, "services")  ->  (where, kind, object), ...
    typed(where, "spec.ports", value, list), integer(...), choice(...), check_name(...)
"""

import contextlib
import difflib
import functools
import hashlib
import ipaddress
import math
import re
import reprlib

# Only the controller reads manifests, and it has PyYAML; a node may not. module_utils must
# import anywhere (ansible-test's import check), so its absence is an error only when reading.
try:
    import yaml
except ImportError:
    yaml = None

from ansible_collections.podnet.network.plugins.module_utils.common.protocols import PROTOCOLS  # noqa: F401  # pylint: disable=unused-import

# reader -> {kind: apiVersion}: the kinds each reader consumes; it skips the others' kinds.
KINDS = {
    "services": {"Service": "v1", "Endpoints": "v1", "EndpointSlice": "discovery.k8s.io/v1"},
    "policy": {"NetworkPolicy": "networking.k8s.io/v1", "Namespace": "v1"},
}
# A List holds any of them; its items are read as if they were documents.
API_VERSIONS = dict({kind: version for kinds in KINDS.values() for kind, version in kinds.items()},
                    List="v1")

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Kubernetes' name rules: rule -> (pattern, longest, what it means).
NAME_RULES = {
    "a DNS-1035 label": (re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"), 63, "lower-case alphanumerics and '-', "
                         "starting with a letter, ending alphanumeric, at most 63 characters"),
    "a DNS-1123 label": (re.compile("^%s$" % _LABEL), 63, "lower-case alphanumerics and '-', "
                         "starting and ending alphanumeric, at most 63 characters"),
    "a DNS-1123 subdomain": (re.compile(r"^%s(\.%s)*$" % (_LABEL, _LABEL)), 253,
                             "DNS-1123 labels joined by '.', at most 253 characters"),
    "an IANA service name": (re.compile(r"^(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$"), 15, "at most 15 lower-case "
                             "alphanumerics, single '-' between them, at least one letter"),
}
DEFAULT_NAMESPACE = "default"
# The fields every object may carry besides its kind's own, and the metadata `kubectl get -o yaml`
# prints: a manifest copied from a cluster reads as it is; any other field is a typo.
OBJECT_FIELDS = ("apiVersion", "kind", "metadata")
KIND_FIELDS = {
    "Service": ("spec", "status"),
    "Endpoints": ("subsets",),
    "EndpointSlice": ("addressType", "endpoints", "ports"),
    "NetworkPolicy": ("spec", "status"),
    "Namespace": ("spec", "status"),
}
METADATA_FIELDS = (
    "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "ownerReferences", "finalizers",
    "generateName", "selfLink",
)
# Addresses no Service frontend or endpoint may have: Kubernetes' ValidateEndpointIP and
# ValidateNonSpecialIP refuse the first four (externalIPs, Endpoints, EndpointSlices); the
# rest cannot carry a unicast connection either. (network, what it is), checked in order.
SPECIAL_ADDRESSES = (
    (ipaddress.IPv4Network("0.0.0.0/32"), "unspecified (0.0.0.0)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "in the loopback range (127.0.0.0/8)"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "in the link-local range (169.254.0.0/16)"),
    (ipaddress.IPv4Network("224.0.0.0/24"), "in the link-local multicast range (224.0.0.0/24)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "the broadcast address"),
)


class ManifestError(ValueError):
    """A manifest podnet cannot read; the message says file, document, line, object and field."""


class Where:
    """Where an object sits in the file: every error names file, document, line, object and field.

    `error` is the exception class the reader raises, so each reader's callers catch its own."""

    def __init__(self, filename, number, line, item=None, error=ManifestError):
        self.filename = filename
        self.number, self.line, self.item = number, line, item
        self.doc = "document %d (line %d)" % (number, line) + ("" if item is None else ", items[%d]" % item)
        self.what = ""  # "Service default/web" once known
        self.kind = None
        self.exception = error

    def state(self):
        """[filename, document, object]: JSON-safe, so a checked model can carry it (`restore`)."""
        return [self.filename, self.doc, self.what]

    @classmethod
    def restore(cls, state, error=ManifestError):
        """The `Where` that `state()` gave, for errors found after the file was read."""
        where = cls.__new__(cls)
        where.filename, where.doc, where.what = state
        where.exception = error
        return where

    def error(self, path, message, *args):
        head = "%s: %s%s" % (self.filename, self.doc, ", " + self.what if self.what else "")
        text = message % tuple(bounded(arg) for arg in args)
        return self.exception("%s: %s%s" % (head, short_path(path) + ": " if path else "", text))

    def warning(self, path, message, *args):
        """The same words as error(), for legal but surprising input: the plan prints it."""
        return str(self.error(path, message, *args))


# Error messages show what the user wrote, but a bounded part of it: YAML aliases make a
# 600-byte file a value of millions of strings, and its repr would exhaust the controller.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 5
LONGEST_PATH = 200


class _Bounded:
    """An error message's argument, shown with %r or %s, never longer than about 300 characters."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return _SHORT.repr(self.value)

    def __str__(self):
        if isinstance(self.value, (list, tuple, dict, set)):
            return _SHORT.repr(self.value)
        text = str(self.value)
        return text if len(text) <= LONGEST_PATH else text[:LONGEST_PATH - 3] + "..."


def bounded(value):
    """`value` for a %-format: numbers as they are (%d needs them), anything else bounded."""
    if isinstance(value, (int, float)):
        return value
    return _Bounded(value)


def short_path(path):
    return path if len(path) <= LONGEST_PATH else path[:LONGEST_PATH - 3] + "..."


def decode(data, filename, error=ManifestError):
    """The text of a manifest file's bytes. Kubernetes reads manifests as UTF-8; anything else is
    an error that says where the first bad byte is (a Latin-1 label, a UTF-16 editor's file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error("%s: line %d, column %d: the file is not UTF-8 text: byte 0x%02x cannot start or "
                    "continue a UTF-8 character (save the file as UTF-8, as Kubernetes manifests are)"
                    % (filename, line, column, data[exc.start])) from None


# --- YAML -----------------------------------------------------------------------------

# libyaml's parser when PyYAML has it (about 7x faster on a large file); same nodes, same marks.
_SafeLoader = getattr(yaml, "CSafeLoader", None) or getattr(yaml, "SafeLoader", object)


class _Loader(_SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML would keep the last, silently."""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _value in node.value if isinstance(node, yaml.MappingNode) else ():
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in lines:
                    raise yaml.constructor.ConstructorError(None, None, "duplicate key %r (also on line %d)"
                                                            % (key, lines[key]), key_node.start_mark)
                lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# The last file parsed: the services file holds the objects of two readers, and the plan
# checks both in one process; parsed once, not twice (seconds at 10,000 Services). Readers
# only read the documents, never change them.
_LAST_PARSED = [None, None]


# A caller that keeps parsed documents between runs (the plan's memo on the controller):
# [{digest: [[line in the document's text, data], ...]} it gives, {...} of the documents read].
_REMEMBERED = [None, None]


@contextlib.contextmanager
def remembered_documents(memo):
    """Within it, documents() parses only the documents whose text `memo` ({digest: [[line,
    data], ...]}, from an earlier run) does not hold, and yields the memo of every document
    it read, for the next run. A file whose documents cannot be told apart line by line (a
    `...` or `%` directive line), or that does not parse, is parsed whole, as without it."""
    kept = {}
    _REMEMBERED[:] = [memo or {}, kept]
    try:
        yield kept
    finally:
        _REMEMBERED[:] = [None, None]


def documents(text, filename, error=ManifestError):
    """[(number, first line, data)] for every document; null ones count, so numbers match the file."""
    if _LAST_PARSED[0] == (filename, text):
        return _LAST_PARSED[1]
    docs = None
    if _REMEMBERED[0] is not None:
        docs = _parse_each(text, *_REMEMBERED)
    if docs is None:
        docs = _parse(text, filename, error)
    _LAST_PARSED[:] = [(filename, text), docs]
    return docs


# A line that starts a document. YAML forbids it inside any scalar (c-forbidden), so the
# text between two of them is one document (or, before the first, a bare one or nothing).
# The first piece starts at the file's start; a later one is sought as a line break and
# `---`, a literal the regex engine finds quickly, where `^` in multiline mode tries every
# line (5x slower over a 4 MB file).
_LATER_DOCUMENT_START = re.compile(r"\n---(?=[ \t\r\n]|$)")
_NOT_SPLIT = re.compile(r"^(\.\.\.(?=[ \t\r\n]|$)|%)", re.M)

# The last file split, with its pieces: the plan's two readers of the services file split
# it in one process, in either order (Ansible templates a task's values as it will).
_LAST_SPLIT = [None, None]


def chunks(text):
    """[(digest, text, first line)] of the file's pieces, each from a `---` line to the next (the
    first from the file's start): each holds one document, or before the first `---` a bare
    one or nothing. None when the file is not split that simply (a `...` or `%` line)."""
    if _LAST_SPLIT[0] != text or not text:
        _LAST_SPLIT[:] = [text, _split(text)]
    return None if _LAST_SPLIT[1] is None else list(_LAST_SPLIT[1])


def _split(text):
    # The multiline search only when a line could start so (it tries every line).
    if yaml is None or text and (text.startswith(("...", "%")) or "\n..." in text or "\n%" in text) \
            and _NOT_SPLIT.search(text):
        return None
    starts = [0] + [found.start() + 1 for found in _LATER_DOCUMENT_START.finditer(text)]
    pieces, line = [], 1
    for start, end in zip(starts, starts[1:] + [len(text)], strict=True):
        chunk = text[start:end]
        if chunk:
            pieces.append((hashlib.sha256(chunk.encode("utf-8")).hexdigest(), chunk, line))
            line += chunk.count("\n")
    return pieces


def _parse_each(text, memo, kept):
    """documents() one document at a time, each taken from `memo` by its text's digest or
    parsed alone and added to `kept`; None when the file is not split that simply."""
    pieces = chunks(text)
    if pieces is None:
        return None
    docs = []
    for digest, chunk, line in pieces:
        parsed = memo.get(digest)
        if parsed is not None:
            kept[digest] = parsed
        else:
            parsed = parse_alone(chunk)
            if parsed is None:
                return None
            if _plain(parsed):
                kept[digest] = parsed
        docs += [(len(docs) + 1, line + offset, data) for offset, data in parsed]
    return docs


def parse_alone(chunk):
    """[[line offset, data], ...] of one piece of a file (chunks()), or None when it does not
    parse: the file is then parsed whole, for the error that names its line."""
    try:
        loader = _Loader(chunk)
        parsed = []
        while loader.check_node():
            node = loader.get_node()
            parsed.append([node.start_mark.line, loader.construct_document(node)])
        return parsed
    except yaml.YAMLError:
        return None  # parsed whole again, for the error that names the file's line


def _plain(value, depth=0):
    """Whether JSON keeps `value` as it is (the memo is JSON): no dates, sets, bytes or
    keys that are not strings, and not nested absurdly deep (or through itself)."""
    if depth > 64:
        return False
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item, depth + 1) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain(item, depth + 1) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, bool, int))


def _parse(text, filename, error):
    if yaml is None:
        raise error("%s: reading it needs PyYAML (python3-yaml)" % filename)
    docs = []
    try:
        loader = _Loader(text or "")  # the reader checks every character here
        # Compose, then construct: the node still knows the line its document starts on.
        while loader.check_node():
            node = loader.get_node()
            docs.append((len(docs) + 1, node.start_mark.line + 1, loader.construct_document(node)))
    except yaml.YAMLError as exc:  # a MarkedYAMLError, mostly; a bad character's ReaderError has no mark
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        place = "line %d, column %d: " % (mark.line + 1, mark.column + 1) if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or exc
        raise error("%s: %sYAML does not parse: %s" % (filename, place, problem)) from None
    return docs


def objects(text, filename, reader, error=ManifestError, only=None):
    """Yield (where, kind, object) for every object of `reader`'s kinds: Lists unpacked, null
    documents skipped. Every object of the file is checked (a mapping, a known kind, its
    apiVersion), whichever reader reads it. `only` ("the policies file") says the file may hold
    nothing but this reader's kinds: another's is refused, naming where it belongs."""
    wanted = KINDS[reader]
    for number, line, data in documents(text, filename, error):
        if data is None:
            continue
        where = Where(filename, number, line, error=error)
        if kind_of(where, data) != "List":
            if data["kind"] in wanted:
                yield where, data["kind"], data
            elif only:
                raise _elsewhere(where, data["kind"], reader, only)
            continue
        for i, item in enumerate(typed(where, "items", data.get("items"), list)):
            inner = Where(filename, number, line, i, error=error)
            if kind_of(inner, item) == "List":
                raise inner.error("kind", "a List inside a List is not supported")
            if item["kind"] in wanted:
                yield inner, item["kind"], item
            elif only:
                raise _elsewhere(inner, item["kind"], reader, only)


def _elsewhere(where, kind, reader, what):
    """An object in a file that holds only one reader's kinds: refused, never skipped."""
    home = next(name for name, kinds in KINDS.items() if kind in kinds)
    return where.error("kind", "%s holds only %s objects; a %s belongs in the %s file",
                       what, _and(list(KINDS[reader])), kind, home)


def _and(words):
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def kind_of(where, data):
    """The object's kind, checked (a mapping, a kind podnet reads, its apiVersion)."""
    if not isinstance(data, dict):
        raise where.error("", "a document must be a mapping (a Kubernetes object), got a %s",
                          type(data).__name__)
    for field in ("apiVersion", "kind"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise where.error(field, "is required: every Kubernetes object names its apiVersion and kind")
    kind = data["kind"]
    if kind not in API_VERSIONS:
        raise where.error("kind", "kind %s is not supported here; the file holds %s", kind,
                          ", and ".join("%s objects" % _and(list(kinds)) for kinds in KINDS.values()))
    where.what = where.kind = kind
    if data["apiVersion"] != API_VERSIONS[kind]:
        raise where.error("apiVersion", "%s is not the apiVersion of kind %s: use %s",
                          data["apiVersion"], kind, API_VERSIONS[kind])
    return kind


# --- field checks ---------------------------------------------------------------------

def check_fields(where, path, mapping, allowed, known=None):
    """Refuse unknown fields: a misspelt `matchLabel` would otherwise select every pod, a misspelt
    `selectr` leave a Service without endpoints. The error suggests the closest known field,
    or says `known` (what the mapping may hold) when given."""
    for field in mapping:
        if field not in allowed:
            # Case-blind, so `IP` finds `ip` and `nodename` finds `nodeName`.
            lower = {name.lower(): name for name in allowed}
            close = difflib.get_close_matches(str(field).lower(), list(lower), 1, 0.6)
            if close:
                hint = " (did you mean %s?)" % lower[close[0]]
            else:
                hint = " (%s)" % known if known is not None else ""
            raise where.error("%s.%s" % (path, field) if path else str(field), "unknown field%s", hint)


def check_name(where, path, value, rule):
    pattern, longest, meaning = NAME_RULES[rule]
    if value is None or value == "":
        raise where.error(path, "is required")
    if not isinstance(value, str) or len(value) > longest or not pattern.match(value):
        raise where.error(path, "%r is not %s (%s)", value, rule, meaning)
    return value


def integer(where, path, value, low, high):
    number = int(value) if isinstance(value, str) and value.isdigit() else value
    # bool is an int in Python; `port: true` is a typo, not port 1.
    if not isinstance(number, int) or isinstance(number, bool) or not low <= number <= high:
        raise where.error(path, "must be an integer %d-%d, got %r", low, high, value)
    return number


def choice(where, path, value, choices, default):
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise where.error(path, "must be one of %s, got %r", "|".join(choices), value)
    return value


def typed(where, path, value, kind, default=None):
    """`value` if it is a `kind` (list, dict, str or bool); unset gives `default`, or an empty one."""
    if value is None:
        return kind() if default is None else default
    if not isinstance(value, kind):
        what = {list: "a list", dict: "a mapping", str: "a string"}.get(kind, "true or false")
        raise where.error(path, "must be %s, got %r", what, value)
    return value


def string_map(where, path, value):
    pairs = typed(where, path, value, dict).items()
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
        raise where.error(path, "must be a map of strings to strings, got %r", value)
    return value or {}


@functools.lru_cache(maxsize=1 << 16)
def parse_ipv4(text):
    """ipaddress.IPv4Address(text), remembered: a file's every address is checked several
    times over (its form, the ranges Kubernetes refuses, service_cidr), 50,000 of them at
    10,000 Services. Raises ValueError."""
    return ipaddress.IPv4Address(text)


def ipv4(where, path, value):
    try:
        if isinstance(value, str):
            return str(parse_ipv4(value))
    except ValueError:
        pass
    raise where.error(path, "%r is not an IPv4 address (podnet's Services are IPv4 only)", value)


def special(address):
    """What makes an IPv4 address unfit for a Service frontend or an endpoint, or None."""
    address = parse_ipv4(str(address))
    return next((what for network, what in SPECIAL_ADDRESSES if address in network), None)


def unicast_ipv4(where, path, value):
    """An address a Service frontend or endpoint may have: IPv4, and none the API server refuses."""
    address = ipv4(where, path, value)
    what = special(address)
    if what:
        raise where.error(path, "%s may not be %s: Kubernetes refuses it for a Service's or an endpoint's "
                          "address", address, what)
    return address


def metadata(where, obj, name_rule):
    """(namespace, name, labels), validated; from here on errors name the object."""
    meta = typed(where, "metadata", obj.get("metadata"), dict)
    name = object_name(where, obj, meta, name_rule)
    namespace = DEFAULT_NAMESPACE if meta.get("namespace") is None else meta["namespace"]
    check_name(where, "metadata.namespace", namespace, "a DNS-1123 label")
    where.what = "%s %s/%s" % (where.what, namespace, name)
    check_object_fields(where, obj)
    return namespace, name, string_map(where, "metadata.labels", meta.get("labels"))


def object_name(where, obj, meta, name_rule):
    """metadata.name, checked; without one, a misspelt `metdata` is the error to show."""
    try:
        return check_name(where, "metadata.name", meta.get("name"), name_rule)
    except ManifestError:
        check_fields(where, "", obj, OBJECT_FIELDS + KIND_FIELDS.get(where.kind, ()))
        raise


def check_object_fields(where, obj):
    """Refuse a typo outside spec: `sepc`, `subset`, `metadata.namspace` (which would otherwise put
    the object in the default namespace, silently)."""
    check_fields(where, "", obj, OBJECT_FIELDS + KIND_FIELDS.get(where.kind, ()))
    check_fields(where, "metadata", obj.get("metadata") or {}, METADATA_FIELDS)
