"""Pure core of podnet_nftables: one nftables table, replaced atomically, and nothing else.

The module owns exactly one table. Two things keep that promise without reading nft's
grammar in full:

- the applied script starts with `table F T {}` + `delete table F T`, so one `nft -f`
  transaction drops whatever the table held (rules added by hand included) and loads the
  content, whether or not the table existed; nft applies a file all or nothing;
- every top-level statement of the content must name that table. nft statements that
  change state name their table right after the object keyword (`add rule ip podnet ...`,
  `table ip podnet { ... }`), while the inside of a table block can only reach its own
  table, so a scan of the top level (plus `include`, which could pull in anything) is a
  complete check.

No I/O here: the module runs nft and passes text in.
"""

# Annotations stay text: `X | None` must not be evaluated on a node's Python older than 3.10.
from __future__ import annotations

import hashlib
import json
import re

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
# nft's default when a statement omits the family.
DEFAULT_FAMILY = "ip"

VERBS = frozenset(("add", "create", "insert", "replace", "delete", "destroy", "flush", "reset", "rename"))
# Objects addressed as `<object> [family] <table> ...`.
TABLE_OBJECTS = frozenset(
    ("table", "chain", "rule", "set", "map", "element", "flowtable", "counter", "quota", "limit", "secmark",
     "synproxy")
)
# Objects that span tables: `flush ruleset`, `reset counters`, `list tables`.
WIDE_OBJECTS = frozenset(
    ("ruleset", "tables", "chains", "sets", "maps", "flowtables", "counters", "quotas", "limits", "secmarks",
     "synproxys", "meters", "meter", "elements")
)
VARIABLE_STATEMENTS = frozenset(("define", "redefine", "undefine"))

# nft accepts longer and odder names; podnet needs plain ones it can put in a file name.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")

HEADER_TEMPLATE = (
    "#!/usr/sbin/nft -f\n"
    "# Managed by podnet (podnet_nftables). Replaces table {family} {table} in one transaction:\n"
    "# the empty declaration makes the delete valid when the table does not exist yet.\n"
    "table {family} {table} {{}}\n"
    "delete table {family} {table}\n"
)
HEADER_LINES = HEADER_TEMPLATE.count("\n")


class NftContentError(ValueError):
    """The table name or content is not something this module may apply."""


def validate_table_name(family: str, table: str) -> None:
    if family not in FAMILIES:
        raise NftContentError(f"family {family!r} is not one of {', '.join(FAMILIES)}")
    if not TABLE_NAME.match(table or ""):
        raise NftContentError(
            f"table {table!r}: use a name of letters, digits, '_', '.', '-' (at most 64, not starting with "
            "a digit)"
        )


# nft's tokens as tokenize tells them: a line continuation, a line break, a comment, a
# brace or ';', a string (unterminated: to the end), a word (a backslash not before a line
# break belongs to it). Blanks between tokens match nothing and are passed over: one regex
# scan of a megabyte of policies, where a loop per character took a quarter of a second.
_TOKEN = re.compile(r'\\\n|\n|#[^\n]*|[{};]|"[^"]*"?|(?:[^ \t\r\n{};"#\\]|\\(?!\n))+')


def tokenize(content: str):
    """Tokens as (kind, text, line); kind is word, string, '{', '}' or ';' (newline too)."""
    tokens = []
    line = 1
    for match in _TOKEN.finditer(content):
        text = match.group()
        first = text[0]
        if first == "\n":
            tokens.append((";", "\n", line))
            line += 1
        elif text == "\\\n":
            line += 1
        elif first == "#":
            continue
        elif first in "{};":
            tokens.append((first, first, line))
        elif first == '"':
            if len(text) < 2 or text[-1] != '"':
                raise NftContentError(f"content line {line}: unterminated string")
            tokens.append(("string", text[1:-1], line))
            line += text.count("\n")
        else:
            tokens.append(("word", text, line))
    return tokens


def _statements(tokens):
    """Yield (head words, line) for each top-level statement; reject `include` anywhere.

    The head is what precedes the statement's first block, which is where nft names the
    table; the inside of the block is skipped.
    """
    depth = 0
    head = []
    head_line = None
    head_done = False
    at_start = True
    for kind, text, line in tokens:
        if kind in ("word", "string") and at_start and text == "include":
            raise NftContentError(
                f"content line {line}: `include` is refused: the included file could touch any table"
            )
        if depth == 0:
            if kind in ("word", "string"):
                if not head_done:
                    if not head:
                        head_line = line
                    head.append(text)
            elif kind == "{":
                if head and not head_done:
                    yield head, head_line
                head_done = True
                depth += 1
            elif kind == ";":
                if head and not head_done:
                    yield head, head_line
                head, head_done = [], False
            elif kind == "}":
                raise NftContentError(f"content line {line}: unbalanced '}}'")
        elif kind == "{":
            depth += 1
        elif kind == "}":
            depth -= 1
        at_start = kind in (";", "{", "}")
    if depth:
        raise NftContentError("content: a '{' is never closed")
    if head and not head_done:
        yield head, head_line


def scope_errors(family: str, table: str, content: str) -> list:
    """Why `content` is not confined to table `family table`; empty when it is.

    Also requires that the content declares the table, since the script deletes it first.
    """
    own = f"{family} {table}"
    errors = []
    declares = False
    try:
        statements = list(_statements(tokenize(content)))
    except NftContentError as exc:
        return [str(exc)]
    for words, line in statements:
        text = " ".join(words)
        where = f"content line {line}: `{text}`"
        first = words[0]
        if first in VARIABLE_STATEMENTS:
            continue
        verb = first if first in VERBS else None
        rest = words[1:] if verb else words
        if not rest:
            errors.append(f"{where}: incomplete statement")
            continue
        obj = rest[0]
        if obj in WIDE_OBJECTS:
            errors.append(f"{where} reaches beyond table {own}")
            continue
        if obj == "ct":
            # `ct helper|timeout|expectation [family] table name`
            spec = rest[2:]
        elif obj in TABLE_OBJECTS:
            spec = rest[1:]
        else:
            errors.append(f"{where}: not a statement this module can confine to table {own}")
            continue
        if spec and spec[0] in FAMILIES and len(spec) > 1:
            ref_family, ref_table = spec[0], spec[1]
        elif spec and spec[0] not in FAMILIES:
            ref_family, ref_table = DEFAULT_FAMILY, spec[0]
        else:
            errors.append(f"{where} names no table")
            continue
        if (ref_family, ref_table) != (family, table):
            errors.append(f"{where} touches table {ref_family} {ref_table}; only table {own} is owned here")
            continue
        if obj == "table" and verb in (None, "add", "create"):
            declares = True
    if not errors and not declares:
        errors.append(f"content does not declare table {own} (expected `table {own} {{ ... }}`)")
    return errors


def build_script(family: str, table: str, content: str) -> str:
    """The self-replacing script that is both applied and persisted for boot."""
    body = content if content.endswith("\n") else content + "\n"
    return HEADER_TEMPLATE.format(family=family, table=table) + body


def sha256(text) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def generation(digest: str) -> int:
    """The generation set's element for a digest: its first 32 bits, as nft prints a mark.

    A table podnet loads carries a one-element set whose value follows from the digest of
    what was loaded. Listing that one set costs milliseconds where listing the table costs
    seconds at scale, and it tells whether the live table is the one the module recorded."""
    return int(digest[:8], 16)


# The generation set the nftables module adds to each table it owns (its glance): not the
# content's, and read by no rule.
NFTABLES_GENERATION_SET = "podnet_generation"


def generation_statements(family: str, table: str, name: str, value: int) -> str:
    """The generation set `name` holding `value`, as a statement that follows a table's
    content (its element declared with it: an `add element` would make nft read the elements
    of every interval set in the ruleset first, see nft_update)."""
    return f"add set {family} {table} {name} {{ {GENERATION_SPEC}; elements = {{ {value} }} }}\n"


# The generation set's declaration.
GENERATION_SPEC = "typeof meta mark"


def kernel_shows(value, chains, live_generation, live_chains, live_rules=None) -> bool:
    """True when the kernel shows the table a record describes, as far as milliseconds tell:
    its generation set holds `value` (`live_generation`: the set's elements as text, None
    when the table or set is gone), its chains are `chains` by name and, when `chains` gives
    each one's rule count ({chain: count}) and the kernel's are known (`live_rules`, from
    nft_rules.rule_counts), with as many rules each. A deleted or reloaded table, a chain
    added or removed, a rule added or deleted, rules flushed by hand (`flush table` keeps
    chains, sets and elements) are seen; a rule or an element edited in place is not:
    listing those costs seconds."""
    if value is None or live_generation != {str(value)}:
        return False
    if live_chains != set(chains or ()):
        return False
    if live_rules is None:
        return True
    # A record of names only (an older podnet's) cannot vouch for the rules: loaded once more.
    return isinstance(chains, dict) and all(live_rules.get(name, 0) == count
                                            for name, count in chains.items())


def state_record(family: str, table: str, script: str, live_listing: str) -> str:
    return json.dumps(
        {
            "family": family,
            "table": table,
            "script_sha256": sha256(script),
            "live_sha256": sha256(live_listing),
        },
        indent=2,
        sort_keys=True,
    ) + "\n"


def parse_state(text):
    """The recorded state, or None when absent or unreadable (which forces a re-apply)."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def table_is_current(record, script: str, live_listing) -> bool:
    """True when the live table is what this module last loaded from this very script.

    The live listing's hash catches rules added or removed by hand since then.
    """
    return bool(
        record
        and live_listing is not None
        and record.get("script_sha256") == sha256(script)
        and record.get("live_sha256") == sha256(live_listing)
    )


def explain_nft_error(stderr: str, script_path: str) -> str:
    """nft's message with script positions turned into content line numbers."""

    def content_position(match):
        number = int(match.group(1)) - HEADER_LINES
        where = f"content line {number}" if number > 0 else f"script header line {match.group(1)}"
        return f"{where}, column {match.group(2)}:"

    return re.sub(re.escape(script_path) + r":(\d+):([\d-]+):", content_position, stderr.strip())
