"""The manifest reader (common/manifests.py) that the services and the policy readers share."""

import hashlib
import json
import textwrap

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common import manifests
from ansible_collections.podnet.network.plugins.module_utils.common.manifests import (
    KINDS,
    ManifestError,
    Where,
    check_fields,
    check_name,
    choice,
    documents,
    integer,
    metadata,
    objects,
    remembered_documents,
    typed,
)

FILE = textwrap.dedent("""\
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    ---
    # a null document still counts
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny}
    ---
    apiVersion: v1
    kind: List
    items:
      - {apiVersion: v1, kind: Namespace, metadata: {name: x}}
      - {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: web-1}}
    """)


class OwnError(ManifestError):
    pass


def test_documents_are_numbered_as_in_the_file():
    numbers = [(number, line) for number, line, _ in documents(FILE, "f.yml")]
    assert numbers == [(1, 1), (2, 6), (3, 7), (4, 11)]


@pytest.mark.parametrize(("reader", "expected"), [
    ("services", [("Service", "document 1 (line 1)"), ("EndpointSlice", "document 4 (line 11), items[1]")]),
    ("policy", [("NetworkPolicy", "document 3 (line 7)"), ("Namespace", "document 4 (line 11), items[0]")]),
])
def test_each_reader_gets_its_own_kinds(reader, expected):
    assert [(kind, where.doc) for where, kind, _ in objects(FILE, "f.yml", reader)] == expected


def test_the_registry_names_every_kind_once():
    kinds = [kind for reader in KINDS.values() for kind in reader]
    assert len(kinds) == len(set(kinds)) == 5


DOC1 = "f.yml: document 1 (line 1)"
BAD = [
    ("- a list", DOC1 + ": a document must be a mapping (a Kubernetes object), got a list"),
    ("kind: Service",
     DOC1 + ": apiVersion: is required: every Kubernetes object names its apiVersion and kind"),
    ("apiVersion: v1\nkind: Pod",
     DOC1 + ": kind: kind Pod is not supported here; the file holds Service, Endpoints and EndpointSlice "
            "objects, and NetworkPolicy and Namespace objects"),
    ("apiVersion: v1\nkind: NetworkPolicy",
     DOC1 + ", NetworkPolicy: apiVersion: v1 is not the apiVersion of kind NetworkPolicy: use "
            "networking.k8s.io/v1"),
    ("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List}]",
     DOC1 + ", items[0], List: kind: a List inside a List is not supported"),
    ("a: 1\na: 2", "f.yml: line 2, column 1: YAML does not parse: duplicate key 'a' (also on line 1)"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
@pytest.mark.parametrize("reader", sorted(KINDS))
def test_every_reader_checks_the_whole_file_alike(text, message, reader):
    """Even the other reader's objects: both name the same error, each with its own class."""
    with pytest.raises(OwnError) as error:
        list(objects(text, "f.yml", reader, OwnError))
    assert str(error.value) == message


def where():
    place = Where("f.yml", 2, 7)
    place.what = "Service default/web"
    return place


@pytest.mark.parametrize(("check", "message"), [
    (lambda w: check_fields(w, "spec", {"selectr": {}}, ("selector", "ports")),
     "spec.selectr: unknown field (did you mean selector?)"),
    (lambda w: check_fields(w, "spec", {"zzz": 1}, ("selector", "ports")), "spec.zzz: unknown field"),
    (lambda w: check_fields(w, "spec.ports[0]", {"xyz": 1}, ("name", "port"), "a port has name, port"),
     "spec.ports[0].xyz: unknown field (a port has name, port)"),
    (lambda w: check_fields(w, "spec.ports[0]", {"nam": 1}, ("name", "port"), "a port has name, port"),
     "spec.ports[0].nam: unknown field (did you mean name?)"),
    (lambda w: check_fields(w, "", {"sepc": 1}, ("spec",)), "sepc: unknown field (did you mean spec?)"),
    (lambda w: check_name(w, "metadata.name", "Web", "a DNS-1035 label"),
     "metadata.name: 'Web' is not a DNS-1035 label (lower-case alphanumerics and '-', starting with a "
     "letter, ending alphanumeric, at most 63 characters)"),
    (lambda w: check_name(w, "metadata.name", "", "a DNS-1035 label"), "metadata.name: is required"),
    (lambda w: integer(w, "port", True, 1, 65535), "port: must be an integer 1-65535, got True"),
    (lambda w: choice(w, "protocol", "tcp", ("TCP", "UDP"), "TCP"),
     "protocol: must be one of TCP|UDP, got 'tcp'"),
    (lambda w: typed(w, "ports", {}, list), "ports: must be a list, got {}"),
    (lambda w: typed(w, "ready", "yes", bool), "ready: must be true or false, got 'yes'"),
])
def test_field_checks_name_file_document_line_object_and_field(check, message):
    with pytest.raises(ManifestError) as error:
        check(where())
    assert str(error.value) == "f.yml: document 2 (line 7), Service default/web: " + message


@pytest.mark.parametrize(("check", "expected"), [
    (lambda w: integer(w, "port", "80", 1, 65535), 80),
    (lambda w: choice(w, "protocol", None, ("TCP", "UDP"), "TCP"), "TCP"),
    (lambda w: typed(w, "ports", None, list), []),
    (lambda w: typed(w, "ready", None, bool, True), True),
])
def test_field_checks_return_the_value_or_the_default(check, expected):
    assert check(where()) == expected


def test_metadata_names_the_object_from_then_on():
    place = Where("f.yml", 1, 1)
    place.what = "Service"
    assert metadata(place, {"metadata": {"name": "web", "labels": {"a": "b"}}}, "a DNS-1035 label") == (
        "default", "web", {"a": "b"})
    assert place.what == "Service default/web"


# The plan remembers each document's data between runs (remembered_documents): a run where
# one Service changed parses that document alone. Whatever the memo holds, documents() gives
# what parsing the whole file gives.
SPLIT_CASES = {
    "bare first document": "a: 1\n---\nb: 2\n",
    "comments before the first start": "# head\n\n---\na: 1\n--- # trailing comment\nb: [1, 2]\n",
    "null documents count": "---\n---\na: 1\n---\n",
    "content on the start line": "--- {a: 1}\n--- !!str text\n---\n- x\n",
    "a block scalar holding dashes": "a: |\n  ---\n  not a start\nb: 1\n---\nc: 2\n",
    "anchors stay in their document": "a: &x {k: v}\nb: *x\n---\nc: 1\n",
    "a date and an integer key (parsed, never kept)": "when: 2024-01-01\n1: one\n---\na: 1\n",
    "no newline at the end": "a: 1\n---\nb: 2",
    "empty": "",
    "windows line breaks": "a: 1\r\n---\r\nb: 2\r\n--- \r\nc: 3\r\n",
    "a start followed by a tab, or ending the file": "a: 1\n---\t{b: 2}\n---",
    "dashes that start no document": "a: '\n----\n ---x'\nb: ---\n---x: 1\n",
}


@pytest.mark.parametrize("text", [*SPLIT_CASES.values(), "%YAML 1.2\n---\na: 1\n", "a: 1\n...\n---\nb: 2\n",
                                  "a: 1\n%TAG ! tag:x,2000:\n---\nb: 2\n", "...\n", "a: 1\n...x\n%"])
def test_the_file_splits_where_a_line_starts_a_document(text):
    """chunks() against the rule itself, line by line: a piece starts at the file's start and
    at each line that is `---` alone or before a space; a `...` or `%` line: not split."""
    lines = text.splitlines(keepends=True)
    if any(line.startswith("%") or line.rstrip("\r\n") == "..." or line.startswith(("... ", "...\t"))
           for line in lines):
        assert manifests.chunks(text) is None
        return
    starts = [0]
    for number, line in enumerate(lines[1:], start=1):
        if line.startswith("---") and (len(line) == 3 or line[3] in " \t\r\n"):
            starts.append(number)
    pieces = ["".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)], strict=True)]
    expected = [(hashlib.sha256(piece.encode()).hexdigest(), piece,
                 1 + sum(p.count("\n") for p in pieces[:i])) for i, piece in enumerate(pieces) if piece]
    assert manifests.chunks(text) == expected
    assert manifests.chunks(text) == expected  # the same file again: its pieces, kept


@pytest.mark.parametrize("text", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_documents_taken_one_by_one_are_the_whole_files(text):
    whole = manifests._parse(text, "f.yml", ManifestError)
    with remembered_documents({}) as kept:
        first = documents(text, "one-by-one-%d.yml" % len(text))
    with remembered_documents(json.loads(json.dumps(kept))) as again:
        assert documents(text, "again-%d.yml" % len(text)) == first == whole
    assert again == kept
    assert all(manifests._plain(parsed) for parsed in kept.values())


def test_a_changed_document_is_the_only_one_parsed(monkeypatch):
    text = "".join("---\nkind: Service\nmetadata: {name: s%d}\n" % i for i in range(5))
    with remembered_documents({}) as kept:
        documents(text, "first.yml")
    parsed = []
    real = manifests.parse_alone
    monkeypatch.setattr(manifests, "parse_alone", lambda chunk: parsed.append(chunk) or real(chunk))
    changed = text.replace("name: s3", "name: s3-new")
    with remembered_documents(kept):
        docs = documents(changed, "second.yml")
    assert parsed == ["---\nkind: Service\nmetadata: {name: s3-new}\n"]
    assert docs == manifests._parse(changed, "f.yml", ManifestError)


@pytest.mark.parametrize("text", ["%YAML 1.2\n---\na: 1\n", "a: 1\n...\n---\nb: 2\n", "a: [1\n---\nb: 2\n"],
                         ids=["directive", "document end", "does not parse"])
def test_a_file_not_split_line_by_line_is_parsed_whole(text):
    name = "whole-%d.yml" % len(text)
    try:
        whole = manifests._parse(text, name, ManifestError)
    except ManifestError as exc:
        with remembered_documents({}), pytest.raises(ManifestError) as raised:
            documents(text, name)
        assert str(raised.value) == str(exc)  # the line the error names is the file's
        return
    with remembered_documents({}) as kept:
        assert documents(text, name) == whole
    assert kept == {}
