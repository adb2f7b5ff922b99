"""A packet tracer over the NetworkPolicy table's nft text, for testing what it does, not how it reads.

`PolicyTracer(text)` parses the text `podnet_policy.render_table()` returns (one
`table ip NAME { sets, chains }` block, then `add element ip NAME SET { ... }` statements)
and `verdict()` walks the first packet of a new connection through the table's base chain
for one hook ("forward" or "input"): rules in order, `jump` into regular chains, `return`
back, the base chain's policy when nothing decides. The answer is "accept" or "drop" for
this table alone (other tables, routing and conntrack are not modelled: the packet is
always `ct state new`).

It does not import the renderer or read the policy model: it is an independent check that
the text does what the renderer claims (tests/unit), and what `podnet explain` walks a live
node's table with (`nft list table` output: counters with their numbers).

Only what the renderer emits is understood; any other statement, expression, set declaration
or element raises TracerError when the text is loaded, so a rule no packet reaches cannot
hide an unknown construct. Loading also refuses what nft would: lookups in missing sets or
in a set of another shape, jumps to missing or base chains, overlapping intervals in a one-
field interval set, a range or prefix in a set without `flags interval`.
"""

import ipaddress
import re

from ansible_collections.podnet.network.plugins.module_utils.common.nft import NFTABLES_GENERATION_SET

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
# Selector words -> the kind of value they yield.
SELECTORS = {
    ("ip", "saddr"): "addr",
    ("ip", "daddr"): "addr",
    ("meta", "l4proto"): "proto",
    ("th", "dport"): "port",
}
CT_STATES = ("new", "established", "related", "invalid", "untracked")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
MAX_DEPTH = 16

TOKEN = re.compile(r'"[^"\n]*"|\n|[{},;=]|[^\s{},;="]+')


class TracerError(Exception):
    """Text the tracer does not understand, or a packet it cannot evaluate."""


# --- values -----------------------------------------------------------------------------------


def _interval(kind, text):
    """(low, high) of one element component; addresses as integers."""
    try:
        if kind == "addr":
            if "-" in text:
                low, high = (int(ipaddress.IPv4Address(part)) for part in text.split("-", 1))
            else:
                net = ipaddress.IPv4Network(text, strict=True)
                low, high = int(net.network_address), int(net.broadcast_address)
        elif kind == "port":
            parts = text.split("-", 1)
            if not all(part.isdigit() for part in parts):
                raise ValueError("not a port")
            low, high = int(parts[0]), int(parts[-1])
            if high > 65535:
                raise ValueError("beyond 65535")
        elif kind == "proto":
            name = PROTOCOL_NAMES.get(int(text), text) if text.isdigit() else text
            if name not in PROTOCOL_NUMBERS:
                raise ValueError("unknown protocol")
            low = high = PROTOCOL_NUMBERS[name]
        else:
            raise ValueError("unknown kind %s" % kind)
    except ValueError as error:
        raise TracerError("not a %s: %r (%s)" % (kind, text, error)) from None
    if low > high:
        raise TracerError("empty range %r" % text)
    return low, high


class _Set:
    def __init__(self, name, kinds, interval):
        self.name = name
        self.kinds = kinds  # ("addr",) or ("proto", "port") ...
        self.interval = interval
        self.elements = []  # [((low, high), ...)]

    def add(self, words):
        """One element, as its tokens: components joined by '.'."""
        components = [[]]
        for word in words:
            if word == ".":
                components.append([])
            else:
                components[-1].append(word)
        if len(components) != len(self.kinds) or any(len(c) != 1 for c in components):
            raise TracerError("set %s: element %r does not have the shape %s"
                              % (self.name, " ".join(words), " . ".join(self.kinds)))
        element = tuple(_interval(kind, c[0]) for kind, c in zip(self.kinds, components, strict=True))
        if not self.interval and any(low != high for low, high in element):
            raise TracerError("set %s: %r is a range or prefix, but the set has no `flags interval`"
                              % (self.name, " ".join(words)))
        if "port" in self.kinds and "proto" in self.kinds:
            proto = element[self.kinds.index("proto")][0]
            if proto == PROTOCOL_NUMBERS["icmp"]:
                raise TracerError("set %s: icmp has no ports" % self.name)
        for other in self.elements:
            if other == element or len(self.kinds) == 1 and self.interval and \
                    other[0][0] <= element[0][1] and element[0][0] <= other[0][1]:
                raise TracerError("set %s: element %r overlaps another (nft refuses it)"
                                  % (self.name, " ".join(words)))
        self.elements.append(element)

    def contains(self, values):
        if any(value is None for value in values):
            return False
        return any(all(low <= value <= high for value, (low, high) in zip(values, element, strict=True))
                   for element in self.elements)


class _Chain:
    def __init__(self, name):
        self.name = name
        self.hook = None
        self.policy = None
        self.rules = []  # [(matches, verdict, text)]


# --- parsing ----------------------------------------------------------------------------------


class _Tokens:
    def __init__(self, text):
        self.tokens = TOKEN.findall(text)
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self):
        token = self.peek()
        if token is None:
            raise TracerError("unexpected end of text")
        self.pos += 1
        return token

    def expect(self, *words):
        for word in words:
            token = self.next()
            if token != word:
                raise TracerError("expected %r, found %r" % (word, token))

    def skip_separators(self):
        while self.peek() in ("\n", ";"):
            self.pos += 1

    def statement(self):
        """Tokens up to the end of the line or ';' (braces kept, for element lists)."""
        words = []
        while self.peek() not in (None, "\n", ";"):
            if self.peek() == "}" and "{" not in words:
                break
            words.append(self.next())
        return words

    def elements(self):
        """`{ a, b . c, ... }` -> [[tokens of a], [tokens of b . c]]; newlines allowed inside."""
        self.expect("{")
        elements, current = [], []
        while True:
            token = self.next()
            if token == "\n":
                continue
            if token in (",", "}"):
                if current:
                    elements.append(current)
                elif token == ",":
                    raise TracerError("empty element")
                current = []
                if token == "}":
                    return elements
            else:
                current.append(token)


def _selector_chain(words):
    """`ip daddr . meta l4proto . th dport` -> (("ip", "daddr"), ...), and the words it used."""
    selectors, i = [], 0
    while True:
        for key in SELECTORS:
            if tuple(words[i:i + len(key)]) == key:
                selectors.append(key)
                i += len(key)
                break
        else:
            raise TracerError("unknown expression at %r" % " ".join(words[i:i + 3]))
        if i < len(words) and words[i] == ".":
            i += 1
            continue
        return tuple(selectors), i


class PolicyTracer:
    """The parsed table; `verdict()` answers for one packet."""

    def __init__(self, text):
        self.table = None
        self.sets = {}
        self.chains = {}
        tokens = _Tokens(text)
        while True:
            tokens.skip_separators()
            if tokens.peek() is None:
                break
            word = tokens.next()
            if word == "table":
                self._table(tokens)
            elif word == "add" and tokens.peek() == "set":
                # Only the nftables module's generation set is declared this way (its boot script).
                tokens.expect("set", "ip", self._table_name(), NFTABLES_GENERATION_SET, "{")
                self._skip_body(tokens)
            elif word == "add":
                tokens.expect("element", "ip", self._table_name())
                name = tokens.next()
                elements = tokens.elements()
                if name != NFTABLES_GENERATION_SET:
                    target = self._set(name)
                    for element in elements:
                        target.add(element)
            else:
                raise TracerError("unknown top-level statement %r" % word)
        if self.table is None:
            raise TracerError("no table")
        self._check()

    def _table_name(self):
        if self.table is None:
            raise TracerError("a statement before the table")
        return self.table

    def _set(self, name):
        if name not in self.sets:
            raise TracerError("no set %r" % name)
        return self.sets[name]

    def _table(self, tokens):
        if self.table is not None:
            raise TracerError("a second table")
        tokens.expect("ip")
        self.table = tokens.next()
        tokens.expect("{")
        while True:
            tokens.skip_separators()
            word = tokens.next()
            if word == "}":
                return
            name = tokens.next()
            if name in self.sets or name in self.chains:
                raise TracerError("%s %s declared twice" % (word, name))
            tokens.expect("{")
            if word == "set" and name == NFTABLES_GENERATION_SET:
                self._skip_body(tokens)  # the module's glance, read by no rule
            elif word == "set":
                self._set_body(name, tokens)
            elif word == "chain":
                self._chain_body(name, tokens)
            else:
                raise TracerError("unknown table item %r" % word)

    @staticmethod
    def _skip_body(tokens):
        """Past a set's body (its declarations and elements) without reading it."""
        while True:
            tokens.skip_separators()
            if tokens.peek() == "}":
                tokens.next()
                return
            if tokens.next() == "elements":
                tokens.expect("=")
                tokens.elements()
            else:
                tokens.statement()

    def _set_body(self, name, tokens):
        kinds, interval, pending = None, False, []
        while True:
            tokens.skip_separators()
            word = tokens.next()
            if word == "}":
                break
            if word == "typeof":
                words = tokens.statement()
                selectors, used = _selector_chain(words)
                if used != len(words):
                    raise TracerError("set %s: unknown typeof %r" % (name, " ".join(words)))
                kinds = tuple(SELECTORS[s] for s in selectors)
            elif word == "flags":
                flags = tokens.statement()
                if flags != ["interval"]:
                    raise TracerError("set %s: flags %r not understood" % (name, flags))
                interval = True
            elif word == "elements":
                tokens.expect("=")
                pending += tokens.elements()
            else:
                raise TracerError("set %s: unknown declaration %r" % (name, word))
        if kinds is None:
            raise TracerError("set %s has no typeof" % name)
        self.sets[name] = _Set(name, kinds, interval)
        for element in pending:
            self.sets[name].add(element)

    def _chain_body(self, name, tokens):
        chain = _Chain(name)
        while True:
            tokens.skip_separators()
            if tokens.peek() == "}":
                tokens.next()
                break
            if tokens.peek() == "type":
                self._hook(chain, tokens)
                continue
            words = tokens.statement()
            chain.rules.append(self._rule(name, words))
        self.chains[name] = chain

    def _hook(self, chain, tokens):
        words = tokens.statement()
        if len(words) != 6 or words[:3] != ["type", "filter", "hook"] or words[4] != "priority":
            raise TracerError("chain %s: base chain declaration %r not understood" % (chain.name, words))
        if words[3] not in HOOKS:
            raise TracerError("chain %s: unknown hook %r" % (chain.name, words[3]))
        if words[5] not in PRIORITIES and not re.fullmatch(r"-?\d+", words[5]):
            raise TracerError("chain %s: priority %r" % (chain.name, words[5]))
        tokens.expect(";")
        policy = tokens.statement()
        if len(policy) != 2 or policy[0] != "policy" or policy[1] not in ("accept", "drop"):
            raise TracerError("chain %s: policy %r not understood" % (chain.name, policy))
        chain.hook, chain.policy = words[3], policy[1]

    def _rule(self, chain, words):
        """(matches, verdict, text): matches are ("ct", states) or ("lookup", selectors, set)."""
        text = " ".join(words)
        matches, verdict, i = [], None, 0
        try:
            while i < len(words):
                word = words[i]
                if verdict is not None and word != "comment":
                    raise TracerError("nothing but a comment may follow the verdict")
                if word == "ct":
                    if words[i + 1] != "state":
                        raise TracerError("only ct state is understood")
                    states, i = [words[i + 2]], i + 3
                    while i < len(words) and words[i] == ",":
                        states.append(words[i + 1])
                        i += 2
                    if any(state not in CT_STATES for state in states):
                        raise TracerError("unknown ct state in %r" % states)
                    matches.append(("ct", frozenset(states)))
                elif word == "counter":
                    i += 1
                    # nft's live listing: `counter packets N bytes M`.
                    if words[i:i + 1] == ["packets"] and words[i + 2:i + 3] == ["bytes"]:
                        i += 4
                elif word == "comment":
                    if i + 2 != len(words) or not words[i + 1].startswith('"'):
                        raise TracerError("a comment must be one quoted string at the end")
                    if len(words[i + 1]) - 2 > 128:
                        raise TracerError("comment longer than 128 characters (nft refuses it)")
                    i += 2
                elif word in ("accept", "drop", "return"):
                    verdict, i = (word, None), i + 1
                elif word in ("jump", "goto"):
                    if word == "goto":
                        raise TracerError("goto is not understood")
                    verdict, i = ("jump", words[i + 1]), i + 2
                else:
                    selectors, used = _selector_chain(words[i:])
                    i += used
                    if i >= len(words) or not words[i].startswith("@"):
                        raise TracerError("only set lookups (@set) are understood")
                    matches.append(("lookup", selectors, words[i][1:]))
                    i += 1
        except IndexError:
            raise TracerError("chain %s: rule %r ends too early" % (chain, text)) from None
        except TracerError as error:
            raise TracerError("chain %s: rule %r: %s" % (chain, text, error)) from None
        return matches, verdict, text

    def _check(self):
        """What nft would refuse: missing sets or chains, a key of the wrong shape, two base chains."""
        hooks = {}
        for chain in self.chains.values():
            if chain.hook:
                if chain.hook in hooks:
                    raise TracerError("two base chains on hook %s" % chain.hook)
                hooks[chain.hook] = chain
            for matches, verdict, text in chain.rules:
                for match in matches:
                    if match[0] != "lookup":
                        continue
                    _unused, selectors, name = match
                    if name not in self.sets:
                        raise TracerError("chain %s: rule %r: no set %s" % (chain.name, text, name))
                    kinds = tuple(SELECTORS[s] for s in selectors)
                    if kinds != self.sets[name].kinds:
                        raise TracerError("chain %s: rule %r: set %s holds %s, not %s"
                                          % (chain.name, text, name, " . ".join(self.sets[name].kinds),
                                             " . ".join(kinds)))
                if verdict and verdict[0] == "jump":
                    target = self.chains.get(verdict[1])
                    if target is None or target.hook:
                        raise TracerError("chain %s: rule %r jumps to %s, not a regular chain of the table"
                                          % (chain.name, text, verdict[1]))
        self.hooks = hooks

    # --- evaluation ---------------------------------------------------------------------------

    def verdict(self, hook, saddr, daddr, protocol, dport=None):
        """"accept" or "drop": what this table does to a new connection's first packet at `hook`."""
        return self._walk(hook, saddr, daddr, protocol, dport)[0]

    def trace(self, hook, saddr, daddr, protocol, dport=None):
        """(verdict, ["chain: rule", ...]): the rules the packet matched, for a readable test failure."""
        return self._walk(hook, saddr, daddr, protocol, dport)

    def _walk(self, hook, saddr, daddr, protocol, dport):
        if hook not in HOOKS:
            raise TracerError("unknown hook %r" % hook)
        protocol = protocol.lower()
        if protocol not in PROTOCOL_NUMBERS:
            raise TracerError("protocol %r is not TCP, UDP, SCTP or ICMP" % protocol)
        if protocol == "icmp":
            dport = None
        elif not isinstance(dport, int) or not 0 < dport <= 65535:
            raise TracerError("a %s packet needs a destination port, got %r" % (protocol, dport))
        packet = {("ip", "saddr"): int(ipaddress.IPv4Address(saddr)),
                  ("ip", "daddr"): int(ipaddress.IPv4Address(daddr)),
                  ("meta", "l4proto"): PROTOCOL_NUMBERS[protocol], ("th", "dport"): dport}
        chain, path = self.hooks.get(hook), []
        if chain is None:
            return "accept", path
        return self._run(chain, packet, path, 0) or chain.policy, path

    def _matches(self, match, packet):
        if match[0] == "ct":
            return "new" in match[1]
        _unused, selectors, name = match
        return self.sets[name].contains(tuple(packet[s] for s in selectors))

    def _run(self, chain, packet, path, depth):
        """accept/drop, or None when the chain returns (or ends) without deciding."""
        if depth > MAX_DEPTH:
            raise TracerError("jumps nest deeper than %d" % MAX_DEPTH)
        for matches, verdict, text in chain.rules:
            if not all(self._matches(match, packet) for match in matches):
                continue
            path.append("%s: %s" % (chain.name, text))
            if verdict is None:
                continue
            kind, target = verdict
            if kind in ("accept", "drop"):
                return kind
            if kind == "return":
                return None
            result = self._run(self.chains[target], packet, path, depth + 1)
            if result is not None:
                return result
        return None
