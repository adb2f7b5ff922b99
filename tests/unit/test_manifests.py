"""The manifest reader (common/manifests.py) that the services and the policy readers share."""

import textwrap

import pytest
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
