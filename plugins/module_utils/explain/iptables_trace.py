"""A packet tracer over iptables-restore text, for testing what Service rules do, not how they read.

`trace()` loads restore text (one or more `*table ... COMMIT` blocks, applied in order as
iptables-restore --noflush would), puts the given jumps in otherwise empty built-in chains
(policy ACCEPT), and walks one new connection's first packet through them:

    prerouting: nat PREROUTING -> routing -> filter INPUT            (daddr is a local address)
                                          -> filter FORWARD -> nat POSTROUTING   (otherwise)
    output:     nat OUTPUT -> filter OUTPUT -> nat POSTROUTING

`-m statistic` is enumerated, not sampled: every branch is followed with its probability, so
each endpoint's share is exact and the result deterministic. No conntrack or recent state
exists: every packet is NEW, `--rcheck` never matches, `--set` does nothing.

`load_save()` reads a node's live `iptables-save` (the jumps in the built-in chains included),
for `podnet explain`; with steps=True, trace() also says which rules each branch took.

Only what podnet's renderer emits is understood; anything else (a match, an option, a target)
raises TracerError, so a renderer change cannot silently slip past the tests. Loading checks
what iptables-restore would refuse: rules in missing chains, jumps to missing chains, -X of a
chain that is not empty or still referenced, declaring a built-in chain.
"""

import ipaddress
import shlex

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
STANDARD_TARGETS = ("ACCEPT", "DROP", "REJECT", "RETURN")
EXTENSION_TARGETS = ("MARK", "MASQUERADE", "DNAT")
# Where iptables lets the NAT targets run.
TARGET_HOOKS = {"DNAT": ("PREROUTING", "OUTPUT"), "MASQUERADE": ("POSTROUTING",)}
TARGET_TABLES = {"DNAT": ("nat",), "MASQUERADE": ("nat",), "REJECT": ("filter",)}
PROTOCOL_MODULES = ("tcp", "udp", "sctp")
MODULES = PROTOCOL_MODULES + ("comment", "addrtype", "conntrack", "mark", "statistic", "recent")
CT_STATES = ("NEW", "INVALID", "RELATED", "ESTABLISHED")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
MAX_DEPTH = 32


class TracerError(Exception):
    """Input the tracer does not understand, or that iptables would refuse."""


# --- parsing --------------------------------------------------------------------------------------


class Rule:
    """One parsed rule: deterministic matches, an optional statistic probability, a target."""

    def __init__(self, text, matches, probability, target, target_args):
        self.text = text
        self.matches = matches            # [(kind, negated, value)]
        self.probability = probability    # float or None
        self.target = target              # "ACCEPT", "MARK", a chain name...
        self.target_args = target_args    # {option: value}

    def __repr__(self):
        return "Rule(%r)" % self.text


def _number(value, what):
    try:
        return int(value, 0)
    except ValueError as exc:
        raise TracerError("%s: %r is not a number" % (what, value)) from exc


def parse_rule(text, table, chains):
    """Parse the arguments of one rule (what follows `-A CHAIN`) of `table`, whose chains are `chains`."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise TracerError("cannot split rule %r: %s" % (text, exc)) from exc
    matches = []
    probability = None
    target = None
    target_args = {}
    protocol = None
    proto_modules = []
    module = None
    recent = None
    negate = False
    i = 0

    def value():
        if i + 1 >= len(tokens):
            raise TracerError("rule %r: %s needs a value" % (text, tokens[i]))
        return tokens[i + 1]

    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            if negate:
                raise TracerError("rule %r: double negation" % text)
            negate = True
            i += 1
            continue
        step = 2
        if target is not None:
            # Target options.
            if target == "MARK" and tok in ("--or-mark", "--xor-mark"):
                target_args[tok] = _number(value(), tok)
            elif target == "MARK" and tok == "--set-xmark":
                # iptables-save's spelling of both: --or-mark M is M/M, --xor-mark M is M/0x0.
                mark, _unused, mask = value().partition("/")
                target_args[tok] = (_number(mark, tok), _number(mask or "0xffffffff", tok))
            elif target == "MASQUERADE" and tok == "--random-fully":
                target_args[tok] = True
                step = 1
            elif target == "DNAT" and tok == "--to-destination":
                target_args[tok] = value()
            elif target == "REJECT" and tok == "--reject-with":
                # iptables-save spells out the default, icmp-port-unreachable.
                target_args[tok] = value()
            else:
                raise TracerError("rule %r: unknown option %s for target %s" % (text, tok, target))
            if negate:
                raise TracerError("rule %r: ! before a target option" % text)
        elif tok in ("-s", "--source", "-d", "--destination"):
            try:
                net = ipaddress.IPv4Network(value(), strict=False)
            except ValueError as exc:
                raise TracerError("rule %r: bad address %r" % (text, value())) from exc
            matches.append(("saddr" if tok in ("-s", "--source") else "daddr", negate, net))
        elif tok in ("-p", "--protocol"):
            protocol = value().lower()
            if protocol not in PROTOCOL_MODULES:
                raise TracerError("rule %r: unknown protocol %r" % (text, protocol))
            matches.append(("protocol", negate, protocol))
        elif tok in ("-m", "--match"):
            if negate:
                raise TracerError("rule %r: ! before -m" % text)
            module = value()
            if module not in MODULES:
                raise TracerError("rule %r: unknown match module %r" % (text, module))
            if module in PROTOCOL_MODULES:
                proto_modules.append(module)
            if module == "recent":
                recent = {}
        elif tok in ("-j", "--jump"):
            if negate:
                raise TracerError("rule %r: ! before -j" % text)
            target = value()
            if target not in STANDARD_TARGETS + EXTENSION_TARGETS and target not in chains:
                raise TracerError("rule %r: unknown target or missing chain %r" % (text, target))
            if table not in TARGET_TABLES.get(target, (table,)):
                raise TracerError("rule %r: target %s is not valid in table %s" % (text, target, table))
        elif tok.startswith("--"):
            step = _module_option(text, tokens, i, module, protocol, negate, matches, recent)
            if module == "statistic" and tok == "--probability":
                try:
                    probability = float(value())
                except ValueError as exc:
                    raise TracerError("rule %r: bad probability %r" % (text, value())) from exc
                if not 0.0 <= probability <= 1.0:
                    raise TracerError("rule %r: probability %r out of range" % (text, probability))
        else:
            raise TracerError("rule %r: unknown argument %r" % (text, tok))
        negate = False
        i += step
    if negate:
        raise TracerError("rule %r: dangling !" % text)
    for name in proto_modules:
        if protocol != name:
            raise TracerError("rule %r: -m %s needs -p %s" % (text, name, name))
    if recent is not None:
        if ("--rcheck" in recent) == ("--set" in recent) or "--name" not in recent:
            raise TracerError("rule %r: -m recent needs --name and one of --rcheck, --set" % text)
        if "--rcheck" in recent:
            matches.append(("never", False, None))
    if target is None:
        raise TracerError("rule %r: no target" % text)
    if target == "DNAT" and "--to-destination" not in target_args:
        raise TracerError("rule %r: DNAT without --to-destination" % text)
    if target == "MARK" and len(target_args) != 1:
        raise TracerError("rule %r: MARK needs exactly one of --or-mark, --xor-mark, --set-xmark" % text)
    return Rule(text, matches, probability, target, target_args)


def _module_option(text, tokens, i, module, protocol, negate, matches, recent):
    """Record the match option at tokens[i] for the current -m module; return tokens consumed."""
    tok = tokens[i]
    val = tokens[i + 1] if i + 1 < len(tokens) else None
    flag_only = ("--rsource", "--rcheck", "--reap", "--set")

    def need_value():
        if val is None:
            raise TracerError("rule %r: %s needs a value" % (text, tok))
        return val

    if tok in ("--dport", "--destination-port") and (module in PROTOCOL_MODULES or protocol):
        matches.append(("dport", negate, _number(need_value(), tok)))
        return 2
    if negate and module not in ("addrtype", "conntrack", "mark"):
        raise TracerError("rule %r: ! before %s is not supported" % (text, tok))
    if module == "comment" and tok == "--comment":
        need_value()
        return 2
    if module == "addrtype" and tok in ("--src-type", "--dst-type"):
        if need_value() != "LOCAL":
            raise TracerError("rule %r: addrtype %s only supports LOCAL" % (text, tok))
        matches.append(("src_local" if tok == "--src-type" else "dst_local", negate, None))
        return 2
    if module == "conntrack" and tok == "--ctstate":
        states = need_value().split(",")
        unknown = [s for s in states if s not in CT_STATES]
        if unknown:
            raise TracerError("rule %r: unknown ctstate %s" % (text, ",".join(unknown)))
        matches.append(("ctstate", negate, tuple(states)))
        return 2
    if module == "mark" and tok == "--mark":
        raw = need_value()
        mark, _unused, mask = raw.partition("/")
        matches.append(("mark", negate, (_number(mark, tok), _number(mask, tok) if mask else 0xFFFFFFFF)))
        return 2
    if module == "statistic" and tok == "--mode":
        if need_value() != "random":
            raise TracerError("rule %r: statistic mode %r not supported" % (text, val))
        return 2
    if module == "statistic" and tok == "--probability":
        need_value()
        return 2
    if module == "recent" and tok in ("--name", "--mask", "--seconds"):
        recent[tok] = need_value()
        return 2
    if module == "recent" and tok in flag_only:
        recent[tok] = True
        return 1
    raise TracerError("rule %r: unknown option %s (module %s)" % (text, tok, module))


def _references(tables, table, chain):
    return [
        (name, rule.text)
        for name, rules in tables[table].items()
        for rule in rules
        if rule.target == chain
    ]


def load_restore(text, tables=None):
    """Apply iptables-restore --noflush text to `tables` ({table: {chain: [Rule]}}); return it."""
    tables = {t: {c: [] for c in BUILTIN_CHAINS[t]} for t in BUILTIN_CHAINS} if tables is None else tables
    table = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = "line %d (%r)" % (lineno, line)
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            if table is not None:
                raise TracerError("%s: table %s not committed" % (where, table))
            table = line[1:]
            if table not in tables:
                raise TracerError("%s: unknown table" % where)
            continue
        if table is None:
            raise TracerError("%s: outside a table" % where)
        if line == "COMMIT":
            table = None
            continue
        chains = tables[table]
        if line.startswith(":"):
            name = line[1:].split()[0]
            if name in BUILTIN_CHAINS[table]:
                raise TracerError("%s: declares built-in chain %s (--noflush would flush it)" % (where, name))
            chains[name] = []
            continue
        parts = line.split(None, 2)
        if parts[0] == "-A" and len(parts) == 3:
            if parts[1] not in chains:
                raise TracerError("%s: no chain %s" % (where, parts[1]))
            chains[parts[1]].append(parse_rule(parts[2], table, chains))
        elif parts[0] == "-X" and len(parts) == 2:
            name = parts[1]
            if name not in chains or name in BUILTIN_CHAINS[table]:
                raise TracerError("%s: cannot delete chain %s" % (where, name))
            if chains[name]:
                raise TracerError("%s: chain %s is not empty" % (where, name))
            refs = _references(tables, table, name)
            if refs:
                raise TracerError("%s: chain %s is still referenced by %s" % (where, name, refs[0][0]))
            del chains[name]
        else:
            raise TracerError("%s: unsupported restore command" % where)
    if table is not None:
        raise TracerError("table %s not committed" % table)
    return tables


def load_save(text):
    """`iptables-save -t nat; iptables-save -t filter` as they are live: {table: {chain: [Rule]}},
    the built-in chains holding their live rules (the jumps), in order."""
    tables = {t: {c: [] for c in BUILTIN_CHAINS[t]} for t in BUILTIN_CHAINS}
    table, rules, builtin_rules = None, [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            if table not in tables:
                raise TracerError("line %d: table %s is not understood" % (lineno, table))
        elif line == "COMMIT":
            table = None
        elif table is None:
            raise TracerError("line %d (%r): outside a table" % (lineno, line))
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name not in BUILTIN_CHAINS[table]:
                tables[table][name] = []
        else:
            parts = line.split(None, 2)
            if parts[0] != "-A" or len(parts) != 3 or parts[1] not in tables[table]:
                raise TracerError("line %d (%r): not a rule of a declared chain" % (lineno, line))
            chosen = builtin_rules if parts[1] in BUILTIN_CHAINS[table] else rules
            chosen.append((table, parts[1], parts[2]))
    # Rules are parsed once every chain is declared: a rule may jump to a chain declared later.
    for rule_table, chain, rule in rules:
        tables[rule_table][chain].append(parse_rule(rule, rule_table, tables[rule_table]))
    return install_jumps(tables, builtin_rules)


def install_jumps(tables, jumps):
    """Put the jump rules in the (otherwise empty) built-in chains, in list order."""
    for table, chain, args in jumps:
        if chain not in BUILTIN_CHAINS.get(table, ()):
            raise TracerError("jump into %s %s: not a built-in chain" % (table, chain))
        tables[table][chain].append(parse_rule(args, table, tables[table]))
    return tables


# --- walking --------------------------------------------------------------------------------------


def _is_local(addr, local):
    return addr in local or addr in LOOPBACK


def _matches(rule, pkt, local):
    for kind, negated, want in rule.matches:
        if kind == "saddr":
            hit = pkt["saddr"] in want
        elif kind == "daddr":
            hit = pkt["daddr"] in want
        elif kind == "protocol":
            hit = pkt["protocol"] == want
        elif kind == "dport":
            hit = pkt["dport"] == want
        elif kind == "src_local":
            hit = _is_local(pkt["saddr"], local)
        elif kind == "dst_local":
            hit = _is_local(pkt["daddr"], local)
        elif kind == "ctstate":
            hit = "NEW" in want
        elif kind == "mark":
            value, mask = want
            hit = (pkt["mark"] & mask) == value
        elif kind == "never":
            hit = False
        else:  # pragma: no cover - parse_rule only makes the kinds above
            raise TracerError("unknown match kind %s" % kind)
        if hit == negated:
            return False
    return True


def _apply_target(rule, pkt, table, hook):
    """The packet after a non-jump target, and the verdict (None: continue with the next rule)."""
    target = rule.target
    if target in TARGET_HOOKS and hook not in TARGET_HOOKS[target]:
        raise TracerError("%s reached from %s %s: iptables refuses it there" % (target, table, hook))
    if target == "MARK":
        pkt = dict(pkt)
        if "--or-mark" in rule.target_args:
            pkt["mark"] |= rule.target_args["--or-mark"]
        elif "--set-xmark" in rule.target_args:
            value, mask = rule.target_args["--set-xmark"]
            pkt["mark"] = (pkt["mark"] & ~mask) ^ value
        else:
            pkt["mark"] ^= rule.target_args["--xor-mark"]
        return pkt, None
    if target == "DNAT":
        dest = rule.target_args["--to-destination"]
        host, _unused, port = dest.rpartition(":") if ":" in dest else (dest, "", "")
        pkt = dict(pkt)
        pkt["daddr"] = ipaddress.IPv4Address(host)
        if port:
            pkt["dport"] = int(port)
        pkt["dnat"] = "%s:%d" % (pkt["daddr"], pkt["dport"])
        return pkt, "ACCEPT"
    if target == "MASQUERADE":
        pkt = dict(pkt)
        pkt["masquerade"] = True
        return pkt, "ACCEPT"
    return pkt, target  # ACCEPT, DROP, REJECT, RETURN


def _walk(tables, table, chain, hook, pkt, local, start=0, depth=0):
    """Yield (packet, verdict) for every branch from rule `start` of `chain`; "RETURN" = fell off."""
    if depth > MAX_DEPTH:
        raise TracerError("chain nesting deeper than %d at %s %s" % (MAX_DEPTH, table, chain))
    if start == 0:
        pkt = dict(pkt, path=pkt["path"] + ("%s:%s" % (table, chain),))
    rules = tables[table][chain]
    for index in range(start, len(rules)):
        rule = rules[index]
        if not _matches(rule, pkt, local):
            continue
        if rule.probability is not None and rule.probability < 1.0:
            # (a branch's rules record the statistic rule it took, below)
            # Branch: the rest of the chain sees the packets the statistic match let through.
            if rule.probability > 0.0:
                miss = dict(pkt, weight=pkt["weight"] * (1.0 - rule.probability))
                pkt = dict(pkt, weight=pkt["weight"] * rule.probability)
                yield from _take(tables, table, chain, hook, rule, index, pkt, local, depth)
                pkt = miss
            continue
        yield from _take(tables, table, chain, hook, rule, index, pkt, local, depth)
        return
    yield pkt, "RETURN"


def _take(tables, table, chain, hook, rule, index, pkt, local, depth):
    """Yield the branches of `pkt` taking `rule` (at `index` of `chain`)."""
    pkt = dict(pkt, rules=pkt["rules"] + (("%s:%s" % (table, chain), rule.text, rule.target, pkt["weight"]),))
    if rule.target in tables[table]:
        for out, verdict in _walk(tables, table, rule.target, hook, pkt, local, 0, depth + 1):
            if verdict == "RETURN":
                yield from _walk(tables, table, chain, hook, out, local, index + 1, depth)
            else:
                yield out, verdict
        return
    out, verdict = _apply_target(rule, pkt, table, hook)
    if verdict is None:
        yield from _walk(tables, table, chain, hook, out, local, index + 1, depth)
    else:
        yield out, verdict


def _hook(tables, table, hook, pkt, local):
    """Branches through a built-in chain: its policy (ACCEPT) replaces falling off the end."""
    for out, verdict in _walk(tables, table, hook, hook, pkt, local):
        yield out, ("ACCEPT" if verdict == "RETURN" else verdict)


def _branches(tables, pkt, local):
    if pkt["flow"] == "prerouting":
        first = ("nat", "PREROUTING")
    else:
        first = ("nat", "OUTPUT")
    for p1, v1 in _hook(tables, *first, pkt, local):
        if v1 != "ACCEPT":
            yield p1, v1
            continue
        if pkt["flow"] == "prerouting":
            filter_hook = "INPUT" if _is_local(p1["daddr"], local) else "FORWARD"
        else:
            filter_hook = "OUTPUT"
        for p2, v2 in _hook(tables, "filter", filter_hook, p1, local):
            if v2 != "ACCEPT" or filter_hook == "INPUT":
                # Locally delivered packets leave the walk here (nat INPUT is not modelled).
                yield p2, v2
                continue
            yield from _hook(tables, "nat", "POSTROUTING", p2, local)


def trace(ruleset_text, jumps, packet, local_addresses, steps=False):
    """Trace one new connection's first packet. See the module docstring.

    packet: {"saddr", "daddr", "protocol": TCP|UDP|SCTP, "dport", "path": prerouting|output}.
    Returns {"verdict", "endpoints": {"ip:port": {"share", "masquerade"}}, "masquerade", "chains",
    "verdicts": {verdict: share}}; "chains" are "table:CHAIN" in the order the first branch
    visited them.
    """
    return trace_tables(install_jumps(load_restore(ruleset_text), jumps), packet, local_addresses, steps)


def trace_tables(tables, packet, local_addresses, steps=False):
    """trace() over loaded tables (load_save's, say). steps=True adds "steps": the rules the
    first branch took, as ("table:CHAIN", rule text, target, branch weight then), and each
    endpoint's own "steps"."""
    flow = packet.get("path")
    if flow not in ("prerouting", "output"):
        raise TracerError("packet path %r is not prerouting or output" % (flow,))
    protocol = str(packet.get("protocol", "")).lower()
    if protocol not in PROTOCOL_MODULES:
        raise TracerError("packet protocol %r is not TCP, UDP or SCTP" % (packet.get("protocol"),))
    local = {ipaddress.IPv4Address(a) for a in local_addresses}
    pkt = {
        "saddr": ipaddress.IPv4Address(packet["saddr"]),
        "daddr": ipaddress.IPv4Address(packet["daddr"]),
        "protocol": protocol,
        "dport": int(packet["dport"]),
        "flow": flow,
        "mark": 0,
        "dnat": None,
        "masquerade": False,
        "weight": 1.0,
        "path": (),
        "rules": (),
    }
    if flow == "output" and not _is_local(pkt["saddr"], local):
        raise TracerError("output path needs a local source address, not %s" % pkt["saddr"])

    results = list(_branches(tables, pkt, local))
    total = sum(p["weight"] for p, _unused in results)
    if abs(total - 1.0) > 1e-9:
        raise TracerError("branch weights add up to %r" % total)

    verdicts = {}
    endpoints = {}
    masquerade = False
    for out, verdict in results:
        verdicts[verdict] = verdicts.get(verdict, 0.0) + out["weight"]
        if verdict != "ACCEPT":
            continue
        if out["dnat"] is None:
            masquerade = masquerade or out["masquerade"]
            continue
        entry = endpoints.setdefault(out["dnat"], {"share": 0.0, "masquerade": out["masquerade"]})
        if steps:
            entry.setdefault("steps", list(out["rules"]))
        if entry["masquerade"] != out["masquerade"]:
            raise TracerError("branches to %s disagree on masquerade" % out["dnat"])
        entry["share"] += out["weight"]
    refused = [v for v in verdicts if v != "ACCEPT"]
    extra = {"steps": list(results[0][0]["rules"])} if steps else {}
    return extra | {
        "verdict": refused[0] if refused else "ACCEPT",
        "verdicts": verdicts,
        "endpoints": endpoints,
        "masquerade": masquerade,
        "chains": list(results[0][0]["path"]),
    }
