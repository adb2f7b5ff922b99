"""A packet tracer over `nft -f` text, for testing what the Service table does, not how it reads.

`trace()` parses the text the nftables proxy renderer's `full_content()` returns (one
`table ip NAME { sets, maps, chains }` block, then `add chain` / `add rule` / `add element`
statements), and walks one new connection's first packet through the base chains, in
netfilter order, each hook's chains by priority (lower first):

    prerouting: hook prerouting -> routing -> hook input                   (daddr is local)
                                           -> hook forward -> hook postrouting  (otherwise)
    output:     hook output -> hook postrouting

It does not import the renderer or read the services model: it is an independent check that
the text does what the renderer claims (tests/unit), and what `podnet explain` walks a live
node's table with. It reads the renderer's text and nft's own listing (`nft list table`:
elements inside the set declarations, a dynamic map's entries with their expiry); with
steps=True it also says which rules the packet met, for the explanation's words.

`numgen random mod N` is enumerated, not sampled: every value 0..N-1 is followed with weight
1/N, so each endpoint's share is exact and the result deterministic. There is no conntrack
state: every packet opens a new connection (`ct state new` matches), `ct status dnat` matches
once a DNAT happened, `ct original ...` is the packet before DNAT. Dynamic maps (the affinity
map) start empty and `update @map { ... }` does nothing.

Only what the renderer emits is understood. Anything else (an expression, a statement, a set
declaration, a statement kind) raises TracerError naming the rule, at load time, so a rule
the walk never reaches cannot hide an unknown expression either. Loading also checks what
nft would refuse: rules in missing chains, jumps to missing chains, lookups in missing sets
or in a set of the wrong kind or shape.
"""

import functools
import ipaddress
import re
from fractions import Fraction

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
# Where the kernel lets these statements run (base chain type, hooks).
STATEMENT_HOOKS = {
    "dnat": ("nat", ("prerouting", "output")),
    "masquerade": ("nat", ("postrouting",)),
    "reject": (None, ("prerouting", "input", "forward", "output")),
}
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
VERDICTS = ("accept", "drop", "reject", "return")
MAX_DEPTH = 32
MAX_BRANCHES = 100_000

# Selector words -> the type of its value.
SELECTORS = {
    ("ip", "saddr"): "addr",
    ("ip", "daddr"): "addr",
    ("meta", "l4proto"): "proto",
    ("meta", "mark"): "mark",
    ("th", "dport"): "port",
    ("ct", "original", "ip", "daddr"): "addr",
    ("ct", "original", "proto-dst"): "port",
}

TOKEN = re.compile(r"[{},;]|[^\s{},;]+")


class TracerError(Exception):
    """Text the tracer does not understand, or a packet whose branches disagree."""


class _NeedChoice(Exception):
    """Control flow: the walk reached a numgen draw its choices do not fix yet."""

    def __init__(self, modulus):
        super().__init__(modulus)
        self.modulus = modulus


# --- values -----------------------------------------------------------------------------------


def _value(kind, text, exact=True):
    """A literal of `kind`: exact (set elements, packet fields) or, for addresses, a network."""
    try:
        if kind == "addr":
            if exact:
                return ipaddress.IPv4Address(text)
            return ipaddress.IPv4Network(text, strict=True)
        if kind == "proto":
            if text.isdigit():
                number = int(text)
                if number not in PROTOCOL_NAMES:
                    raise ValueError(f"protocol number {number}")
                return PROTOCOL_NAMES[number]
            if text not in PROTOCOL_NUMBERS:
                raise ValueError(f"protocol {text!r}")
            return text
        if kind == "port":
            if not text.isdigit() or not 0 <= int(text) <= 65535:
                raise ValueError(f"port {text!r}")
            return int(text)
        if kind in ("mark", "int"):
            if not re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
                raise ValueError(f"integer {text!r}")
            return int(text, 0)
    except ValueError as error:
        raise TracerError(f"not a {kind} value: {text!r} ({error})") from None
    raise TracerError(f"unknown value kind {kind!r}")


def _matches(kind, value, literal):
    if kind == "addr":
        return value in literal
    return value == literal


# --- parsing one rule -------------------------------------------------------------------------


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = TOKEN.findall(text)
        self.pos = 0

    def peek(self, ahead=0):
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def next(self):
        token = self.peek()
        if token is None:
            raise TracerError("unexpected end")
        self.pos += 1
        return token

    def expect(self, *words):
        for word in words:
            token = self.next()
            if token != word:
                raise TracerError(f"expected {word!r}, found {token!r}")

    def done(self):
        return self.pos >= len(self.tokens)

    def set_name(self):
        token = self.next()
        if not token.startswith("@") or len(token) < 2:
            raise TracerError(f"expected @set, found {token!r}")
        return token[1:]

    # selectors: `ip daddr . meta l4proto . th dport . numgen random mod 3`
    def selector(self):
        if self.peek() == "numgen":
            self.expect("numgen", "random", "mod")
            modulus = _value("int", self.next())
            if modulus < 1:
                raise TracerError("numgen modulus must be at least 1")
            if self.peek() == "offset":
                raise TracerError("numgen offset is not supported")
            return ("numgen", modulus)
        for words, _kind in SELECTORS.items():
            if tuple(self.tokens[self.pos:self.pos + len(words)]) == words:
                self.pos += len(words)
                return words
        raise TracerError(f"unknown expression at {' '.join(self.tokens[self.pos:self.pos + 3])!r}")

    def concat(self):
        selectors = [self.selector()]
        while self.peek() == ".":
            self.next()
            selectors.append(self.selector())
        return tuple(selectors)

    def literals(self, kind):
        """One literal or an anonymous set `{ a, b }`, as a list."""
        if self.peek() == "{":
            self.next()
            values = []
            while True:
                values.append(_value(kind, self.next(), exact=False))
                token = self.next()
                if token == "}":
                    return values
                if token != ",":
                    raise TracerError(f"expected ',' or '}}' in an anonymous set, found {token!r}")
        return [_value(kind, self.next(), exact=False)]

    def verdict(self):
        word = self.next()
        if word in ("jump", "goto"):
            return (word, self.next())
        if word in VERDICTS:
            if word == "reject" and self.peek() == "with":
                raise TracerError("reject with ... is not supported")
            return (word, None)
        raise TracerError(f"unknown verdict {word!r}")

    def rule(self):
        """The rule as a list of operations, each a tuple whose first item names it."""
        ops = []
        while not self.done():
            if ops and ops[-1][0] in ("verdict", "vmap"):
                raise TracerError("nothing may follow a verdict")
            ops.append(self.operation())
        if not ops:
            raise TracerError("empty rule")
        return ops

    def operation(self):
        token = self.peek()
        if token == "ct" and self.peek(1) == "state":
            self.expect("ct", "state")
            states = [self.next()]
            while self.peek() == ",":
                self.next()
                states.append(self.next())
            unknown = set(states) - {"new", "established", "related", "invalid", "untracked"}
            if unknown:
                raise TracerError(f"unknown ct state {sorted(unknown)}")
            return ("ct_state", frozenset(states))
        if token == "ct" and self.peek(1) == "status":
            self.expect("ct", "status")
            negate = self.peek() == "!="
            if negate:
                self.next()
            status = self.next()
            if status != "dnat":
                raise TracerError(f"ct status {status!r} is not supported")
            return ("ct_dnat", negate)
        if token == "fib":
            self.next()
            which = self.next()
            if which not in ("saddr", "daddr"):
                raise TracerError(f"fib {which!r} is not supported")
            self.expect("type")
            negate = self.peek() == "!="
            if negate:
                self.next()
            if self.next() != "local":
                raise TracerError("only fib ... type [!=] local is supported")
            return ("fib_local", which, negate)
        if token == "meta" and self.peek(1) == "mark" and self.peek(2) == "set":
            self.expect("meta", "mark", "set")
            if self.peek() == "meta":
                self.expect("meta", "mark")
                operator = self.next()
                if operator not in ("|", "^", "&"):
                    raise TracerError(f"meta mark set meta mark {operator} is not supported")
                return ("mark_set", operator, _value("mark", self.next()))
            return ("mark_set", "=", _value("mark", self.next()))
        if token == "meta" and self.peek(1) == "mark" and self.peek(2) == "&":
            self.expect("meta", "mark", "&")
            mask = _value("mark", self.next())
            operator = self.next()
            if operator not in ("==", "!="):
                raise TracerError(f"meta mark & ... {operator} is not supported")
            return ("mark_mask", mask, operator == "!=", _value("mark", self.next()))
        if token == "dnat":
            self.expect("dnat", "ip", "to")
            selectors = self.concat()
            self.expect("map")
            return ("dnat_map", selectors, self.set_name())
        if token == "masquerade":
            self.next()
            flags = []
            while self.peek() in ("fully-random", "random", "persistent"):
                flags.append(self.next())
                if self.peek() == ",":
                    self.next()
            return ("masquerade", tuple(flags))
        if token == "update":
            self.next()
            name = self.set_name()
            self.expect("{")
            key = self.concat()
            if self.peek() == "timeout":
                self.next()
                if not re.fullmatch(r"\d+[smhd]", self.next()):
                    raise TracerError("bad timeout in update")
            self.expect(":")
            data = self.concat()
            self.expect("}")
            return ("update", name, key, data)
        if token in ("jump", "goto") or token in VERDICTS:
            return ("verdict", self.verdict())
        selectors = self.concat()
        return self.relation(selectors)

    def relation(self, selectors):
        token = self.peek()
        if token is not None and token.startswith("@"):
            return ("lookup", selectors, self.set_name(), False)
        if token == "vmap":
            self.next()
            return ("vmap", selectors, self.set_name())
        negate = token == "!="
        if token in ("!=", "=="):
            self.next()
            if negate and self.peek() is not None and self.peek().startswith("@"):
                return ("lookup", selectors, self.set_name(), True)
        if token in ("<", ">", "<=", ">="):
            raise TracerError(f"comparison {token} is not supported")
        if len(selectors) != 1 or selectors[0][0] == "numgen":
            raise TracerError("a concatenation or numgen can only be looked up in a set or map")
        kind = SELECTORS[selectors[0]]
        if self.done():
            raise TracerError(f"{' '.join(selectors[0])} without a value")
        return ("compare", selectors[0], negate, self.literals(kind))


def _parse_rule(text):
    return _Parser(text).rule()


def _selector_kind(selector):
    if selector[0] == "numgen":
        return "int"
    return SELECTORS[selector]


# --- loading the whole text -------------------------------------------------------------------


class _Ruleset:
    def __init__(self):
        self.table = None
        self.sets = {}  # name -> {"kind", "key", "data", "flags", "elements"}
        self.chains = {}  # name -> {"hook": (type, hook, priority, policy) or None, "rules": [(text, ops)]}

    def where(self, chain, text):
        return f"chain {chain}: rule `{text}`"

    # set and map declarations
    def declare_set(self, kind, name, body):
        if name in self.sets:
            raise TracerError(f"{kind} {name} declared twice")
        decl = {"kind": kind, "key": None, "data": None, "flags": set(), "elements": {}}
        for line in body:
            words = line.split()
            if words[0] == "typeof":
                key_text, _unused, data_text = line[len("typeof"):].partition(" : ")
                parser = _Parser(key_text)
                decl["key"] = tuple(_selector_kind(s) for s in parser.concat())
                if not parser.done():
                    raise TracerError(f"{kind} {name}: cannot read `{line}`")
                if kind == "map":
                    if data_text.strip() == "verdict":
                        decl["data"] = "verdict"
                    else:
                        parser = _Parser(data_text)
                        decl["data"] = tuple(_selector_kind(s) for s in parser.concat())
                        if not parser.done():
                            raise TracerError(f"{kind} {name}: cannot read `{line}`")
                elif data_text:
                    raise TracerError(f"set {name} has data: `{line}`")
            elif words[0] == "flags":
                flags = {f.strip() for f in line[len("flags"):].split(",")}
                if flags - {"timeout", "dynamic", "constant"}:
                    raise TracerError(f"{kind} {name}: flags {sorted(flags)} not supported")
                decl["flags"] = flags
            elif words[0] == "size" and len(words) == 2 and words[1].isdigit():
                pass
            else:
                raise TracerError(f"{kind} {name}: cannot read `{line}`")
        if decl["key"] is None or (kind == "map" and decl["data"] is None):
            raise TracerError(f"{kind} {name} has no typeof")
        self.sets[name] = decl

    def add_elements(self, name, text):
        if name not in self.sets:
            raise TracerError(f"add element: no set or map {name}")
        decl = self.sets[name]
        for element in (e.strip() for e in text.split(",")):
            if not element:
                raise TracerError(f"add element {name}: empty element")
            key_text, sep, data_text = element.partition(" : ")
            # A dynamic map's live entries carry their timeout and time left.
            key_text = re.sub(r" (timeout|expires) \S+", "", key_text)
            key = self._tuple(name, decl["key"], key_text)
            if decl["kind"] == "set":
                if sep:
                    raise TracerError(f"add element {name}: set element with data `{element}`")
                decl["elements"][key] = None
                continue
            if not sep:
                raise TracerError(f"add element {name}: map element without data `{element}`")
            if decl["data"] == "verdict":
                parser = _Parser(data_text)
                data = parser.verdict()
                if data[0] == "reject" or not parser.done():
                    raise TracerError(f"add element {name}: cannot read `{element}`")
            else:
                data = self._tuple(name, decl["data"], data_text)
            if decl["elements"].get(key, data) != data:
                raise TracerError(f"add element {name}: `{element}` conflicts with an existing element")
            decl["elements"][key] = data

    def _tuple(self, name, kinds, text):
        parts = [p.strip() for p in text.split(" . ")]
        if len(parts) != len(kinds):
            raise TracerError(f"{name}: `{text}` does not have the shape of {' . '.join(kinds)}")
        try:
            return tuple(_value(kind, part) for kind, part in zip(kinds, parts, strict=True))
        except TracerError as error:
            raise TracerError(f"{name}: `{text}`: {error}") from None

    # chains
    def declare_chain(self, name, hook_line):
        if name in self.chains:
            raise TracerError(f"chain {name} declared twice")
        hook = None
        if hook_line is not None:
            match = re.fullmatch(
                r"type (filter|nat) hook (\w+) priority ([\w+\- ]+?);\s*(?:policy (accept|drop);)?", hook_line
            )
            if not match or match.group(2) not in HOOKS:
                raise TracerError(f"chain {name}: cannot read `{hook_line}`")
            hook = (match.group(1), match.group(2), _priority(match.group(3)), match.group(4) or "accept")
        self.chains[name] = {"hook": hook, "rules": []}

    def add_rule(self, chain, text):
        if chain not in self.chains:
            raise TracerError(f"add rule: no chain {chain} (rule `{text}`)")
        try:
            ops = _parse_rule(text)
        except TracerError as error:
            raise TracerError(f"{self.where(chain, text)}: {error}") from None
        self.chains[chain]["rules"].append((text, ops))

    def check(self):
        """What nft would refuse: references to missing chains and sets, wrong shapes."""
        for decl_name, decl in self.sets.items():
            if decl["data"] == "verdict":
                for verdict in decl["elements"].values():
                    if verdict[0] in ("jump", "goto") and verdict[1] not in self.chains:
                        raise TracerError(f"map {decl_name}: {verdict[0]} to missing chain {verdict[1]}")
        for chain, body in self.chains.items():
            for text, ops in body["rules"]:
                try:
                    for op in ops:
                        self._check_op(op)
                except TracerError as error:
                    raise TracerError(f"{self.where(chain, text)}: {error}") from None

    def _check_op(self, op):
        def lookup(name, kind, selectors):
            decl = self.sets.get(name)
            if decl is None:
                raise TracerError(f"no set or map {name}")
            if decl["kind"] != kind:
                raise TracerError(f"{name} is a {decl['kind']}, not a {kind}")
            shape = tuple(_selector_kind(s) for s in selectors)
            if shape != decl["key"]:
                raise TracerError(f"{' . '.join(shape)} does not fit {name}'s key {' . '.join(decl['key'])}")
            return decl

        if op[0] == "lookup":
            decl = self.sets.get(op[2])
            lookup(op[2], decl["kind"] if decl else "set", op[1])
        elif op[0] == "vmap":
            if lookup(op[2], "map", op[1])["data"] != "verdict":
                raise TracerError(f"vmap on {op[2]}, which is not a verdict map")
        elif op[0] == "dnat_map":
            data = lookup(op[2], "map", op[1])["data"]
            if data not in (("addr",), ("addr", "port")):
                raise TracerError(f"dnat map {op[2]} does not map to an address [. port]")
        elif op[0] == "update":
            decl = lookup(op[1], "map", op[2])
            if not decl["flags"] & {"timeout", "dynamic"}:
                raise TracerError(f"update on {op[1]}, which is neither dynamic nor has timeouts")
            if tuple(_selector_kind(s) for s in op[3]) != decl["data"]:
                raise TracerError(f"update data does not fit {op[1]}")
        elif op[0] == "verdict" and op[1][0] in ("jump", "goto") and op[1][1] not in self.chains:
            raise TracerError(f"{op[1][0]} to missing chain {op[1][1]}")


def _priority(text):
    match = re.fullmatch(r"\s*(-?\d+|[a-z]+)\s*(?:([+-])\s*(\d+))?\s*", text)
    if not match:
        raise TracerError(f"cannot read priority {text!r}")
    base, sign, offset = match.groups()
    if base.lstrip("-").isdigit():
        if sign:
            raise TracerError(f"cannot read priority {text!r}")
        return int(base)
    if base not in PRIORITY_NAMES:
        raise TracerError(f"unknown priority name {base!r}")
    value = PRIORITY_NAMES[base]
    if sign:
        value += int(offset) if sign == "+" else -int(offset)
    return value


@functools.lru_cache(maxsize=32)
def load(text):
    """Parse full_content() text into a _Ruleset; raise TracerError on anything unknown.

    The result is cached and never changed by a walk.
    """
    ruleset = _Ruleset()
    lines = text.splitlines()
    index = 0

    def table_ref(words, what):
        if len(words) < 4 or words[1] != "ip" or words[2] != ruleset.table:
            raise TracerError(f"`{what}` is not about table ip {ruleset.table}")

    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            raise TracerError(f"continued lines are not supported: `{line}`")
        words = line.split()
        if words[0] == "table":
            if ruleset.table is not None:
                raise TracerError("a second table block")
            if len(words) != 4 or words[1] != "ip" or words[3] != "{":
                raise TracerError(f"cannot read `{line}`")
            ruleset.table = words[2]
            index = _table_block(ruleset, lines, index)
        elif ruleset.table is None:
            raise TracerError(f"`{line}` before the table block")
        elif words[:2] == ["add", "chain"]:
            table_ref(words[1:], line)
            if len(words) != 5:
                raise TracerError(f"cannot read `{line}` (only plain chains are supported)")
            ruleset.declare_chain(words[4], None)
        elif words[:2] == ["add", "rule"]:
            table_ref(words[1:], line)
            if len(words) < 6:
                raise TracerError(f"cannot read `{line}`")
            chain = words[4]
            ruleset.add_rule(chain, line.split(None, 5)[5])
        elif words[:2] == ["add", "element"]:
            table_ref(words[1:], line)
            match = re.fullmatch(r"add element ip \S+ (\S+) \{(.*)\}", line)
            if not match:
                raise TracerError(f"cannot read `{line}`")
            ruleset.add_elements(match.group(1), match.group(2))
        else:
            raise TracerError(f"unknown statement `{line}`")
    if ruleset.table is None:
        raise TracerError("no table block")
    ruleset.check()
    return ruleset


def _table_block(ruleset, lines, index):
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line == "}":
            return index
        words = line.split()
        if len(words) != 3 or words[0] not in ("set", "map", "chain") or words[2] != "{":
            raise TracerError(f"table {ruleset.table}: cannot read `{line}`")
        body, elements = [], []
        while True:
            if index >= len(lines):
                raise TracerError(f"{words[0]} {words[1]} is not closed")
            inner = lines[index].strip()
            index += 1
            if inner == "}":
                break
            if inner.startswith("elements = {"):
                # nft's own listing: the elements inside the declaration, over several lines.
                while not inner.endswith("}"):
                    if index >= len(lines):
                        raise TracerError(f"{words[0]} {words[1]}: elements are not closed")
                    inner += " " + lines[index].strip()
                    index += 1
                elements.append(inner[len("elements = {"):-1])
                continue
            if inner and not inner.startswith("#"):
                body.append(inner)
        if words[0] == "chain":
            hook_line = body[0] if body and body[0].startswith("type ") else None
            ruleset.declare_chain(words[1], hook_line)
            for rule in body[1:] if hook_line else body:
                ruleset.add_rule(words[1], rule)
        else:
            ruleset.declare_set(words[0], words[1], body)
            for text in elements:
                ruleset.add_elements(words[1], text)
    raise TracerError(f"table {ruleset.table} is not closed")


# --- walking a packet -------------------------------------------------------------------------


class _Walk:
    """One walk of one packet, with the numgen values fixed by `choices` (then _NeedChoice)."""

    def __init__(self, ruleset, packet, local, choices):
        self.ruleset = ruleset
        self.local = local
        self.choices = choices
        self.used = 0
        self.saddr = ipaddress.IPv4Address(packet["saddr"])
        self.daddr = ipaddress.IPv4Address(packet["daddr"])
        self.proto = packet["protocol"].lower()
        self.dport = int(packet["dport"])
        self.original = (self.daddr, self.dport)
        self.mark = 0
        self.dnat = False
        self.masquerade = False
        self.base = None  # (type, hook) of the base chain being run
        self.current = None  # (chain, rule text) being run
        # What the packet met, in order: every rule that matched, with what it did.
        self.steps = []
        self.draws = []  # (value, modulus) of each numgen draw

    def is_local(self, address):
        return address in LOOPBACK or address in self.local

    def numgen(self, modulus):
        if self.used == len(self.choices):
            raise _NeedChoice(modulus)
        value = self.choices[self.used]
        self.used += 1
        self.draws.append((value, modulus))
        return value

    def get(self, selector):
        if selector[0] == "numgen":
            return self.numgen(selector[1])
        return {
            ("ip", "saddr"): lambda: self.saddr,
            ("ip", "daddr"): lambda: self.daddr,
            ("meta", "l4proto"): lambda: self.proto,
            ("meta", "mark"): lambda: self.mark,
            ("th", "dport"): lambda: self.dport,
            ("ct", "original", "ip", "daddr"): lambda: self.original[0],
            ("ct", "original", "proto-dst"): lambda: self.original[1],
        }[selector]()

    def key(self, selectors):
        return tuple(self.get(s) for s in selectors)

    def allowed(self, statement, where):
        chain_type, hooks = STATEMENT_HOOKS[statement]
        if (chain_type and self.base[0] != chain_type) or self.base[1] not in hooks:
            raise TracerError(f"{where}: {statement} in a {self.base[0]} chain on hook {self.base[1]}")

    def run(self, path):
        """("ACCEPT" | "DROP" | "REJECT", endpoint "ip:port" or None, masquerade)."""
        if path == "prerouting":
            hooks = ["prerouting"]
        else:
            hooks = ["output", "postrouting"]
        for hook in hooks:
            verdict = self.run_hook(hook)
            if verdict != "accept":
                return verdict.upper(), None, False, self.steps
        if path == "prerouting":
            for hook in ["input"] if self.is_local(self.daddr) else ["forward", "postrouting"]:
                verdict = self.run_hook(hook)
                if verdict != "accept":
                    return verdict.upper(), None, False, self.steps
        endpoint = f"{self.daddr}:{self.dport}" if self.dnat else None
        return "ACCEPT", endpoint, self.masquerade, self.steps

    def run_hook(self, hook):
        chains = [
            (body["hook"][2], name) for name, body in self.ruleset.chains.items()
            if body["hook"] and body["hook"][1] == hook
        ]
        for _priority, name in sorted(chains):
            chain_type, _hook, _prio, policy = self.ruleset.chains[name]["hook"]
            self.base = (chain_type, hook)
            verdict = self.run_chain(name, 0)
            if verdict == "return":
                verdict = policy
                if policy != "accept":
                    self.step(name, None, f"policy {policy}")
            if verdict in ("drop", "reject"):
                return verdict
        return "accept"

    def step(self, chain, text, effect, **extra):
        self.steps.append(dict(hook=self.base[1], type=self.base[0], chain=chain, rule=text, effect=effect,
                               **extra))

    def run_chain(self, name, depth):
        """"accept", "drop", "reject" (final for the base chain) or "return" (to the caller)."""
        if depth > MAX_DEPTH:
            raise TracerError(f"chain {name}: jumps nested deeper than {MAX_DEPTH}")
        for text, ops in self.ruleset.chains[name]["rules"]:
            where = self.ruleset.where(name, text)
            self.current = (name, text)
            verdict = self.run_rule(ops, where)
            if verdict is None:
                continue
            if not self.steps or (self.steps[-1]["chain"], self.steps[-1]["rule"]) != (name, text):
                self.step(name, text, " ".join(v for v in verdict if v))
            if verdict[0] == "jump":
                result = self.run_chain(verdict[1], depth + 1)
                if result == "return":
                    continue
                return result
            if verdict[0] == "goto":
                return self.run_chain(verdict[1], depth + 1)
            if verdict[0] == "reject":
                self.allowed("reject", where)
            return verdict[0]
        return "return"

    def run_rule(self, ops, where):
        """The rule's verdict as (word, target), or None when it does not match or has none."""
        for op in ops:
            kind = op[0]
            if kind == "ct_state":
                if "new" not in op[1]:
                    return None
            elif kind == "ct_dnat":
                if self.dnat == op[1]:
                    return None
            elif kind == "fib_local":
                address = self.saddr if op[1] == "saddr" else self.daddr
                if self.is_local(address) == op[2]:
                    return None
            elif kind == "mark_mask":
                _unused, mask, negate, value = op
                if ((self.mark & mask) == value) == negate:
                    return None
            elif kind == "mark_set":
                _unused, operator, value = op
                self.mark = {
                    "=": value, "|": self.mark | value, "^": self.mark ^ value, "&": self.mark & value,
                }[operator]
            elif kind == "compare":
                _unused, selector, negate, literals = op
                value = self.get(selector)
                hit = any(_matches(SELECTORS[selector], value, lit) for lit in literals)
                if hit == negate:
                    return None
            elif kind == "lookup":
                _unused, selectors, name, negate = op
                if (self.key(selectors) in self.ruleset.sets[name]["elements"]) == negate:
                    return None
            elif kind == "vmap":
                verdict = self.ruleset.sets[op[2]]["elements"].get(self.key(op[1]))
                if verdict is not None:
                    self.step(*self.current, " ".join(v for v in verdict if v), map=op[2],
                              key=[str(k) for k in self.key(op[1])])
                return verdict  # a miss: the rule does not match
            elif kind == "dnat_map":
                self.allowed("dnat", where)
                target = self.ruleset.sets[op[2]]["elements"].get(self.key(op[1]))
                if target is None:
                    return None
                self.daddr = target[0]
                if len(target) > 1:
                    self.dport = target[1]
                self.dnat = True
                drawn = op[1][-1][0] == "numgen"
                self.step(*self.current, f"dnat to {self.daddr}:{self.dport}", map=op[2],
                          key=[str(k) for k in self.key(op[1][:-1] if drawn else op[1])],
                          draw=list(self.draws[-1]) if drawn else None)
                return ("accept", None)
            elif kind == "masquerade":
                self.allowed("masquerade", where)
                self.masquerade = True
                self.step(*self.current, "masquerade")
                return ("accept", None)
            elif kind == "update":
                pass  # the affinity map is dynamic: the tracer keeps it empty
            elif kind == "verdict":
                return op[1]
            else:  # pragma: no cover - the parser makes only the kinds above
                raise TracerError(f"{where}: unknown operation {kind}")
        if any(op[0] == "mark_set" for op in ops):
            self.step(*self.current, f"mark {self.mark:#x}")
        return None


def trace(ruleset_text, packet, local_addresses, steps=False):
    """Where a new connection's first packet goes through the table.

    packet: {"saddr", "daddr", "protocol": TCP|UDP|SCTP, "dport", "path": prerouting|output}.
    local_addresses: the node's addresses (127.0.0.0/8 always counts as local).

    Returns {"verdict": "ACCEPT"|"DROP"|"REJECT",
             "endpoints": {"ip:port": {"share": float, "masquerade": bool}} (empty without DNAT,
                          and for DROP and REJECT),
             "masquerade": bool (without DNAT: whether the packet was masqueraded; with DNAT:
                           whether any endpoint's was),
             "steps": the rules the first branch matched, in order: {"hook", "type", "chain",
                      "rule", "effect", and for maps "map", "key", "draw": [value, modulus]};
                      each endpoint also has the "steps" of its first branch; only with
                      steps=True)}.
    Raises TracerError when branches of the numgen draws disagree on the verdict or on
    whether a DNAT happened, or when the text holds anything the tracer does not understand.
    """
    result = _trace(ruleset_text, packet, local_addresses)
    if not steps:
        result.pop("steps")
        for endpoint in result["endpoints"].values():
            endpoint.pop("steps")
    return result


def _trace(ruleset_text, packet, local_addresses):
    ruleset = load(ruleset_text)
    if packet.get("path") not in ("prerouting", "output"):
        raise TracerError(f"unknown path {packet.get('path')!r}")
    if str(packet.get("protocol", "")).lower() not in PROTOCOL_NUMBERS:
        raise TracerError(f"unknown protocol {packet.get('protocol')!r}")
    local = {ipaddress.IPv4Address(a) for a in local_addresses}
    if packet["path"] == "output" and not (
        ipaddress.IPv4Address(packet["saddr"]) in local or ipaddress.IPv4Address(packet["saddr"]) in LOOPBACK
    ):
        raise TracerError(f"output path from {packet['saddr']}, which is not a local address")

    outcomes = []
    pending = [((), Fraction(1))]
    while pending:
        choices, weight = pending.pop()
        try:
            outcome = _Walk(ruleset, packet, local, list(choices)).run(packet["path"])
        except _NeedChoice as need:
            share = weight / need.modulus
            pending.extend((choices + (value,), share) for value in reversed(range(need.modulus)))
            if len(pending) > MAX_BRANCHES:
                raise TracerError(f"more than {MAX_BRANCHES} branches") from None
            continue
        outcomes.append((weight, outcome))

    verdicts = {verdict for _unused, (verdict, _unused, _unused, _unused) in outcomes}
    if len(verdicts) != 1:
        raise TracerError(f"branches disagree on the verdict: {_describe(outcomes)}")
    verdict = verdicts.pop()
    steps = outcomes[0][1][3]
    if verdict != "ACCEPT":
        return {"verdict": verdict, "endpoints": {}, "masquerade": False, "steps": steps}
    dnat = {endpoint is not None for _unused, (_unused, endpoint, _unused, _unused) in outcomes}
    if len(dnat) != 1:
        raise TracerError(f"some branches DNAT and others do not: {_describe(outcomes)}")
    if dnat == {False}:
        masquerades = {masq for _unused, (_unused, _unused, masq, _unused) in outcomes}
        if len(masquerades) != 1:
            raise TracerError(f"branches disagree on masquerade: {_describe(outcomes)}")
        return {"verdict": "ACCEPT", "endpoints": {}, "masquerade": masquerades.pop(), "steps": steps}
    shares, masq, paths = {}, {}, {}
    for weight, (_unused, endpoint, masquerade, walked) in outcomes:
        shares[endpoint] = shares.get(endpoint, 0) + weight
        paths.setdefault(endpoint, walked)
        if masq.setdefault(endpoint, masquerade) != masquerade:
            raise TracerError(f"endpoint {endpoint} is masqueraded in some branches only")
    endpoints = {
        endpoint: {"share": float(shares[endpoint]), "masquerade": masq[endpoint], "steps": paths[endpoint]}
        for endpoint in sorted(shares)
    }
    return {"verdict": "ACCEPT", "endpoints": endpoints, "masquerade": any(masq.values()), "steps": steps}


def _describe(outcomes):
    return ", ".join(
        f"{float(w):.4f}: {v} {e or '-'}{' masq' if m else ''}" for w, (v, e, m, _unused) in outcomes[:8]
    )
