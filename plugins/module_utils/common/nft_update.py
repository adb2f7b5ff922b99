"""A table's content as its objects, and one transaction of only the objects that changed.

The nftables module loads a table whole the first time. After that it keeps, per object, a
digest of what it loaded (a chain's rules, a set's declaration) and a set's elements; a new
content is then split the same way and the difference sent as one `nft -f`:

- a changed chain is flushed and given its rules again, a new one added, a gone one deleted;
- a set keeps its elements but the ones that came, declared again with them (`add set NAME
  { ...; elements = { ... } }`); a set some elements left is flushed and declared again with
  all it holds now (up to REFILL_MAX elements; a larger one deletes those, `delete
  element`); a new set is added, a gone one deleted.

Why not `add element` and `delete element`: before sending either, nft 1.0.6 reads the
elements of every interval set in the ruleset (to merge and check intervals; every table's,
named or anonymous), a quarter of a second at 1,000 NetworkPolicies (4,000 sets) for any one
element. A set declared again with its elements, or flushed, is sent without reading them:
5-30 ms. The set a declaration
adds to is the one already loaded (same name, same declaration), so this is the same
change; the intervals podnet's renderers write never overlap.

Deleting a whole table costs the kernel per chain and per set (FIELD-NOTES: seconds at
1,000 NetworkPolicies); a flushed chain and a few elements cost milliseconds. One `nft -f`
is one kernel transaction, so the update is applied whole or not at all, and a content
whose change this cannot spell (a set's type or flags, a table property, a statement other
than a chain, set or map block and `add element`) is loaded whole instead.

Only what the content says is read, with nft's own lexical rules (strings, comments, braces);
nothing is listed from the kernel. No I/O here.
"""

# Annotations stay text: `X | None` must not be evaluated on a node's Python older than 3.10.
from __future__ import annotations

import re

from ansible_collections.podnet.network.plugins.module_utils.common.nft import sha256

# Elements per statement that lists them: nft refuses very large statements.
ELEMENTS_PER_STATEMENT = 500
# A set some elements left is flushed and refilled up to this size (a few statements); a
# larger one has them deleted one by one, whatever nft then reads first.
REFILL_MAX = 2000
BLOCKS = ("chain", "set", "map")


class _Unsupported(Exception):
    """Content whose shape this module does not split (it is then loaded whole)."""


# Where a statement's head stops, and what matters inside a block or an element list: nft's
# strings and comments can hold any of the others. Scanned with regexes, not by character:
# a 1,000-policy table is megabytes.
HEAD_STOP = re.compile(r'["#{};\n]|\\\n')
IN_BLOCK = re.compile(r'["#{}]')
IN_ELEMENTS = re.compile(r'["#{}(),]')


def _after(text, match):
    """The index after the string or comment `match` (a '"' or '#') starts."""
    if match.group() == '"':
        end = text.find('"', match.end())
        if end < 0:
            raise _Unsupported("unterminated string")
        return end + 1
    end = text.find("\n", match.end())
    return len(text) if end < 0 else end


def _close(text, i):
    """The index of the '}' that closes the block whose inside starts at i."""
    depth = 1
    while True:
        match = IN_BLOCK.search(text, i)
        if match is None:
            raise _Unsupported("a '{' is never closed")
        if match.group() in '"#':
            i = _after(text, match)
            continue
        i = match.end()
        depth += 1 if match.group() == "{" else -1
        if not depth:
            return match.start()


def _statements(text):
    """(head, body) for each statement of `text` at its own level: head is the text before
    the statement's block (whitespace collapsed), body the block's inside (raw), or None
    when the statement has no block. Statements end at a newline or ';' outside a block."""
    statements, head, i = [], [], 0

    def done(body=None):
        words = " ".join("".join(head).split())
        if words or body is not None:
            statements.append((words, body))
        head.clear()

    while True:
        match = HEAD_STOP.search(text, i)
        if match is None:
            head.append(text[i:])
            break
        head.append(text[i:match.start()])
        token = match.group()
        if token in '"#':
            i = _after(text, match)
            if token == '"':
                head.append(text[match.start():i])
        elif token == "\\\n":
            head.append(" ")
            i = match.end()
        elif token in "\n;":
            done()
            i = match.end()
        elif token == "{":
            close = _close(text, match.end())
            done(text[match.end():close])
            i = close + 1
        else:
            raise _Unsupported("unbalanced '}'")
    done()
    return statements


def _elements(body):
    """The elements of an `elements = { ... }` or `add element` block, each with its
    whitespace collapsed (strings aside, nft reads them the same)."""
    if not IN_ELEMENTS.search(body.replace(",", "")):
        return [" ".join(element.split()) for element in body.split(",") if element.strip()]
    elements, start, depth, i = [], 0, 0, 0
    while True:
        match = IN_ELEMENTS.search(body, i)
        if match is None:
            break
        token, i = match.group(), match.end()
        if token in '"#':
            i = _after(body, match)
        elif token in "{(":
            depth += 1
        elif token in "})":
            depth -= 1
        elif not depth:
            elements.append(body[start:match.start()])
            start = i
    elements.append(body[start:])
    return [" ".join(element.split()) for element in elements if element.strip()]


def _set(kind, body):
    spec, elements = [], []
    for head, inner in _statements(body):
        if head in ("elements =", "elements"):
            if inner is None:
                raise _Unsupported("elements without a block")
            elements += _elements(inner)
        elif inner is not None:
            raise _Unsupported("a block inside a %s's declaration" % kind)
        else:
            spec.append(head)
    return {"kind": kind, "spec": spec, "elements": elements}


def parse_table(family, table, content):
    """The content's objects: {"head": the table's own statements, "chains": {name: rules
    text}, "sets": {name: {"kind": set|map, "spec": [declaration statements], "elements":
    [...]}}}; None when its shape is not one this module updates piecewise (then it is loaded
    whole). The content is already confined to the table (common/nft.scope_errors)."""
    try:
        objects = {"head": [], "chains": {}, "sets": {}}
        declared = False
        for head, body in _statements(content):
            words = head.split()
            own = (["table", family, table], ["table", table] if family == "ip" else None)
            if body is not None and words in own:
                declared = True
                _table_body(objects, body)
            elif body is not None and words[:4] == ["add", "element", family, table] and len(words) == 5:
                found = objects["sets"].get(words[4])
                if found is None:
                    raise _Unsupported("elements of a set declared later")
                found["elements"] += _elements(body)
            else:
                raise _Unsupported(head)
    except _Unsupported:
        return None
    return objects if declared else None


def _table_body(objects, body):
    for head, inner in _statements(body):
        words = head.split()
        if inner is not None and len(words) == 2 and words[0] in BLOCKS and not words[1].startswith('"'):
            kind, name = words
            if name in objects["chains"] or name in objects["sets"]:
                raise _Unsupported("%s declared twice" % name)
            if kind == "chain":
                objects["chains"][name] = inner
            else:
                objects["sets"][name] = _set(kind, inner)
        elif inner is None:
            objects["head"].append(head)
        else:
            raise _Unsupported(head)


def table_record(objects):
    """What the module keeps of a loaded content: chains as digests, sets whole."""
    return {"head": objects["head"],
            "chains": {name: sha256(rules) for name, rules in objects["chains"].items()},
            "sets": objects["sets"]}


def _listed(head, elements, close):
    """`head`, the elements and `close`, as many statements as nft takes their number in."""
    return ["%s%s%s" % (head, ", ".join(elements[i:i + ELEMENTS_PER_STATEMENT]), close)
            for i in range(0, len(elements), ELEMENTS_PER_STATEMENT)]


def declared_with(family, table, kind, name, spec, elements):
    """`add set` (or map) statements that declare the set as it is (`spec`, its declaration's
    statements) and add `elements` to it: nft sends them without reading any set's elements
    first, where `add element` reads those of every interval set in the ruleset."""
    head = "add %s %s %s %s { %s" % (kind, family, table, name, "".join("%s; " % line for line in spec))
    return _listed(head + "elements = { ", elements, " } }")


def _flushed(family, table, kind, name):
    return "flush %s %s %s %s" % (kind, family, table, name)


def refilled(family, table, kind, name, spec, elements):
    """The set (or map) emptied and given `elements`, without nft reading any set's elements."""
    return [_flushed(family, table, kind, name)] + declared_with(family, table, kind, name, spec, elements)


def update_script(family, table, recorded, objects):
    """The nft script that turns the table `recorded` (table_record of what is loaded) into
    `objects` (parse_table of the new content), and a summary of it; None when only a
    whole load gets there. An empty script: the objects are the recorded ones."""
    if recorded is None or objects is None or recorded.get("head") != objects["head"]:
        return None
    old_sets, new_sets = recorded.get("sets") or {}, objects["sets"]
    old_chains, new_chains = recorded.get("chains") or {}, objects["chains"]
    for name, found in new_sets.items():
        old = old_sets.get(name)
        if old is not None and (old.get("kind"), old.get("spec")) != (found["kind"], found["spec"]):
            return None  # nft cannot change a set's type or flags in place
    changed = [name for name, rules in new_chains.items()
               if name in old_chains and old_chains[name] != sha256(rules)]
    added = [name for name in new_chains if name not in old_chains]
    gone = [name for name in old_chains if name not in new_chains]
    gone_sets = [name for name in old_sets if name not in new_sets]
    new = [name for name in new_sets if name not in old_sets]
    deletes, adds, touched = [], [], 0
    for name, found in new_sets.items():
        after = found["elements"]
        if name in old_sets:
            before = old_sets[name]["elements"]
            kept = set(before)
            wanted = set(after)
            deleted = [element for element in before if element not in wanted]
            added_elements = [element for element in after if element not in kept]
        else:
            deleted, added_elements = [], after
        touched += len(deleted) + len(added_elements)
        if deleted and len(after) <= REFILL_MAX:
            # Emptied where elements are deleted, refilled where they are added (an element
            # may name a chain the table block declares).
            deletes.append(_flushed(family, table, found["kind"], name))
            adds += declared_with(family, table, found["kind"], name, found["spec"], after)
        else:
            deletes += _listed("delete element %s %s %s { " % (family, table, name), deleted, " }")
            adds += declared_with(family, table, found["kind"], name, found["spec"], added_elements)
    # Order inside the one transaction: rules go first (a flushed chain no longer jumps to a
    # chain or looks up a set that is deleted next), the new declarations come as one table
    # block (nft resolves a block's references among its own objects), elements last.
    lines = ["flush chain %s %s %s" % (family, table, name) for name in changed + gone]
    lines += deletes
    lines += ["delete chain %s %s %s" % (family, table, name) for name in gone]
    lines += ["delete %s %s %s %s" % (old_sets[name]["kind"], family, table, name) for name in gone_sets]
    block = ["\t%s %s {\n\t\t%s;\n\t}" % (found["kind"], name, ";\n\t\t".join(found["spec"]))
             for name, found in new_sets.items() if name in new]
    block += ["\tchain %s {%s}" % (name, new_chains[name]) for name in added + changed]
    if block:
        lines.append("table %s %s {\n%s\n}" % (family, table, "\n".join(block)))
    lines += adds
    summary = {"chains_changed": len(changed), "chains_added": len(added), "chains_deleted": len(gone),
               "sets_added": len(new), "sets_deleted": len(gone_sets), "elements": touched}
    return "\n".join(lines) + ("\n" if lines else ""), summary
