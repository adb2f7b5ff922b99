"""nft I/O for every podnet module that writes nftables: a transaction object and one runner.

Model: sigs.k8s.io/knftables (`transaction.go`, `fake.go`) as kube-proxy uses it. A module
builds a `Transaction` of typed operations on the one table it owns; `NftRunner` is the only
code that runs `nft`: it lists a table, loads a transaction in one `nft -f` (one kernel
transaction: applied whole or not at all), deletes a table, and knows what check mode means:

- a load is checked with `nft -c -f`, which the kernel validates against the live ruleset
  and then aborts, so nothing changes;
- a delete only looks (`nft list table`), since `nft -c delete` does not ask the kernel
  whether the table exists;
- listings are read in every mode: they change nothing.

`FakeNft` serves canned listings and records what would have run, so the modules' logic is
tested without nft, root or namespaces.
"""

import json as json_module
import os
import re
import tempfile
import time

from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    build_script,
    explain_nft_error,
)
from ansible_collections.podnet.network.plugins.module_utils.common.nft_rules import rule_counts

# What nft says when the table (or a set/map in it) does not exist.
NO_SUCH_TABLE = "No such file or directory"
# nft 1.0.6 refuses one `add element` with tens of thousands of elements ("No buffer space
# available"); a few hundred per statement is safe and still one transaction.
ELEMENTS_PER_STATEMENT = 500
OBJECTS = ("table", "chain", "set", "map", "element", "rule")


class Transaction:
    """Typed operations on one table, rendered as one nft script.

    `replace_table(content)` makes the script podnet's self-replacing one (see
    common/nft.build_script): it must come first, so nft's error positions map to content lines.
    """

    def __init__(self, family, table):
        self.family = family
        self.table = table
        self.operations = []

    def replaces(self):
        """Does the script start with podnet's self-replacing header (see replace_table)?"""
        return bool(self.operations) and self.operations[0][0] == "replace"

    def __len__(self):
        return len(self.operations)

    def __bool__(self):
        return bool(self.operations)

    def _op(self, verb, obj, name=None, body=None):
        if obj not in OBJECTS:
            raise ValueError(f"nft object {obj!r} is not one of {', '.join(OBJECTS)}")
        self.operations.append((verb, obj, name, body))
        return self

    # -- tables
    def add_table(self):
        return self._op("add", "table")

    def flush_table(self):
        return self._op("flush", "table")

    def delete_table(self):
        return self._op("delete", "table")

    def replace_table(self, content):
        """The whole table as `content` (a `table F T { ... }` block), whether it existed or not."""
        if self.operations:
            raise ValueError("replace_table must be the first operation of a transaction")
        self.operations.append(("replace", "table", None, content))
        return self

    # -- chains, sets, maps, rules
    def add_chain(self, name, spec=None):
        return self._op("add", "chain", name, spec)

    def flush_chain(self, name):
        return self._op("flush", "chain", name)

    def delete_chain(self, name):
        return self._op("delete", "chain", name)

    def add_set(self, name, spec):
        return self._op("add", "set", name, spec)

    def add_map(self, name, spec):
        return self._op("add", "map", name, spec)

    def flush_set(self, name):
        return self._op("flush", "set", name)

    def flush_map(self, name):
        return self._op("flush", "map", name)

    def delete_set(self, name):
        return self._op("delete", "set", name)

    def delete_map(self, name):
        return self._op("delete", "map", name)

    def add_rule(self, chain, rule):
        return self._op("add", "rule", chain, rule)

    def add_element(self, name, elements):
        return self._elements("add", name, elements)

    def delete_element(self, name, elements):
        return self._elements("delete", name, elements)

    def _elements(self, verb, name, elements):
        elements = list(elements)
        for start in range(0, len(elements), ELEMENTS_PER_STATEMENT):
            self._op(verb, "element", name, elements[start:start + ELEMENTS_PER_STATEMENT])
        return self

    def raw(self, text):
        """nft text rendered elsewhere (a renderer's update script); empty text adds nothing."""
        if text:
            self.operations.append(("raw", None, None, text))
        return self

    def script(self):
        lines = []
        for verb, obj, name, body in self.operations:
            if verb == "replace":
                lines.append(build_script(self.family, self.table, body).rstrip("\n"))
            elif verb == "raw":
                lines.append(body.rstrip("\n"))
            elif obj == "table":
                lines.append(f"{verb} table {self.family} {self.table}")
            elif obj == "element":
                lines.append(f"{verb} element {self.family} {self.table} {name} {{ {', '.join(body)} }}")
            elif obj == "rule":
                lines.append(f"add rule {self.family} {self.table} {name} {body}")
            else:
                spec = f" {{ {body} }}" if body else ""
                lines.append(f"{verb} {obj} {self.family} {self.table} {name}{spec}")
        return "\n".join(lines) + ("\n" if lines else "")


class NftRunner:
    """The one place podnet runs nft. Failures fail the module with nft's own words."""

    def __init__(self, module, nft=None):
        self.module = module
        # nft lives in /usr/sbin, which a non-login PATH may lack.
        self.nft = nft or module.get_bin_path("nft", required=True, opt_dirs=["/usr/sbin", "/sbin"])
        # Seconds the loads of this run took in nft (the kernel transaction, as users wait for it).
        self.load_seconds = 0.0

    @property
    def check_mode(self):
        return self.module.check_mode

    def _run(self, args):
        return self.module.run_command([self.nft, *args])

    def list(self, family, table, json=False, stateless=False, obj=None):
        """nft's listing of the table (or of `obj`, e.g. ("map", "affinity"), in it); None
        when the table does not exist. `stateless` leaves counters out; `json` asks for -j."""
        flags = (["-j"] if json else []) + (["-s"] if stateless else [])
        what = list(obj) if obj else ["table"]
        target = [what[0], family, table, *what[1:]]
        rc, out, err = self._run([*flags, "list", *target])
        if rc == 0:
            return out
        if NO_SUCH_TABLE in err:
            return None
        self.module.fail_json(msg=f"nft list {' '.join(target)} failed: {err.strip()}")

    def chain_names(self, family, table):
        """The names of the table's chains (an empty set when it has none or does not exist).
        `nft list chains` reads no rules and no set elements: milliseconds at any size."""
        rc, out, err = self._run(["-j", "list", "chains", family])
        if rc != 0:
            self.module.fail_json(msg=f"nft list chains {family} failed: {err.strip()}")
        try:
            items = json_module.loads(out).get("nftables", [])
        except ValueError as exc:
            self.module.fail_json(msg=f"cannot read nft's listing of the chains of family {family}: {exc}")
        return {item["chain"]["name"] for item in items
                if "chain" in item and item["chain"].get("table") == table}

    def rule_counts(self, family, table):
        """{chain: number of rules} of the table (chains without rules left out; {} when it does
        not exist), from the kernel's rule dump (nft_rules): milliseconds at any size, where nft
        lists no rule without fetching every set element. None when the kernel cannot be asked."""
        return rule_counts(family, table)

    def load(self, transaction, what=None, may_fail=False):
        """Apply the transaction in one `nft -f` (`nft -c -f` in check mode: checked, not
        applied). True when nft took it (an empty one is trivially taken). Refused, nothing
        changed; the module fails with nft's reason unless `may_fail`, then it is False."""
        if not transaction:
            return True
        family, table = transaction.family, transaction.table
        fd, tmp = tempfile.mkstemp(dir=self.module.tmpdir, prefix=f"podnet-{family}-{table}.",
                                   suffix=".nft")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(transaction.script())
        started = time.monotonic()
        try:
            rc, _out, err = self._run(["-c", "-f", tmp] if self.check_mode else ["-f", tmp])
        finally:
            self.load_seconds += time.monotonic() - started
            os.unlink(tmp)
        if rc != 0 and not may_fail:
            what = ("check of " if self.check_mode else "") + (what or f"table {family} {table}")
            # Positions in a self-replacing script are the user's content lines; in any other
            # transaction they are its own lines.
            reason = (explain_nft_error(err, tmp) if transaction.replaces() else
                      err.strip().replace(f"{tmp}:", "transaction line "))
            self.module.fail_json(msg=f"nft refused the {what}; the live table is unchanged: {reason}",
                                  table=f"{family} {table}")
        return rc == 0

    def delete_table(self, family, table):
        """Delete the table if it exists; True when it did (in check mode: when it would be deleted)."""
        if self.list(family, table) is None:
            return False
        if self.check_mode:
            return True
        rc, _out, err = self._run(["delete", "table", family, table])
        if rc != 0 and NO_SUCH_TABLE not in err:
            self.module.fail_json(msg=f"nft delete table {family} {table} failed: {err.strip()}")
        return rc == 0


def set_elements(nft, family, table, name):
    """The elements of set `name` as text (`nft -j list set`: milliseconds, whatever the rest
    of the table holds); None when the table or the set does not exist or cannot be read.
    `nft` is an NftRunner or a FakeNft."""
    listing = nft.list(family, table, json=True, obj=("set", name))
    try:
        items = json_module.loads(listing).get("nftables", []) if listing else []
    except (ValueError, AttributeError):
        return None
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("set"), dict) and item["set"].get("name") == name:
            return {str(element) for element in item["set"].get("elem", ())}
    return None


class FakeNft:
    """A runner without nft: canned listings in, the operations that would have run out.

    `tables` maps (family, table) to its listing, or to {obj: listing} where obj is None for
    the table and e.g. ("map", "affinity") for one of its maps (objects not given list as
    missing), and "chains" for its chain names. `refuse` holds the (family,
    table) whose loads nft would refuse. Every call is recorded in `calls`; `loaded` keeps
    the scripts of loads that were applied (not checked). A `replace_table` that is applied
    becomes the table's listing, as if nft listed exactly what it was given.
    """

    def __init__(self, tables=None, check_mode=False, refuse=()):
        self.tables = dict(tables or {})
        self.check_mode = check_mode
        self.refuse = set(refuse)
        self.calls = []
        self.loaded = []
        self.load_seconds = 0.0

    def list(self, family, table, json=False, stateless=False, obj=None):
        self.calls.append(("list", family, table, obj))
        listing = self.tables.get((family, table))
        if isinstance(listing, dict):
            return listing.get(obj)
        if obj and isinstance(listing, str) and obj[0] in ("set", "map"):
            # A replaced table's script: its `add element` statements for that set, and those
            # that declare it with elements, as nft -j would list them.
            elements = []
            name = r"%s %s %s" % (family, re.escape(table), re.escape(obj[1]))
            statement = r"^add (?:element %s \{ (.*) \}|(?:set|map) %s \{ .*elements = \{ (.*) \} \})$" % (
                name, name)
            for found in re.finditer(statement, listing, re.M):
                listed = (found.group(1) or found.group(2)).split(", ")
                elements += [int(e) if e.isdigit() else e for e in listed]
            return json_module.dumps({"nftables": [{obj[0]: {"name": obj[1], "elem": elements}}]})
        return None if obj else listing

    def chain_names(self, family, table):
        """From a replaced table's script (its chain blocks and `add chain` statements)."""
        self.calls.append(("chains", family, table))
        listing = self.tables.get((family, table))
        if isinstance(listing, dict):
            return set(listing.get("chains", ()))
        if not isinstance(listing, str):
            return set()
        return set(re.findall(r"^\tchain (\S+) \{$", listing, re.M)) | set(
            re.findall(r"^add chain %s %s (\S+)$" % (family, re.escape(table)), listing, re.M))

    def rule_counts(self, family, table):
        """A canned listing's "rules" ({chain: count}); None (unknown, as when the kernel cannot
        be asked) otherwise."""
        self.calls.append(("rules", family, table))
        listing = self.tables.get((family, table))
        return listing.get("rules") if isinstance(listing, dict) else None

    def load(self, transaction, what=None, may_fail=False):
        if not transaction:
            return True
        key = (transaction.family, transaction.table)
        script = transaction.script()
        self.calls.append(("check" if self.check_mode else "load", *key, script))
        if key in self.refuse:
            if may_fail:
                return False
            raise FakeNftRefused(f"nft refused {what or 'table %s %s' % key}")
        if not self.check_mode:
            self.loaded.append(script)
            if transaction.replaces():
                self.tables[key] = transaction.operations[0][3]
        return True

    def delete_table(self, family, table):
        self.calls.append(("delete", family, table))
        if (family, table) not in self.tables:
            return False
        if not self.check_mode:
            del self.tables[(family, table)]
        return True


class FakeNftRefused(Exception):
    """What a module's fail_json would report when nft refuses a load."""
