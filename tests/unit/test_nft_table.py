"""The pure core of podnet.network.nftables: confinement to one table, the script, the hashes."""

import re

import pytest
from ansible_collections.podnet.network.plugins.module_utils.common.nft import (
    HEADER_LINES,
    NftContentError,
    build_script,
    explain_nft_error,
    parse_state,
    scope_errors,
    state_record,
    table_is_current,
    tokenize,
    validate_table_name,
)

EGRESS = """\
table ip podnet {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 masquerade comment "pod egress"
\t}
}
"""


# --- content confined to the owned table ------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        EGRESS,
        # Family omitted means ip, as in nft.
        "table podnet {\n chain c { type filter hook forward priority 0; }\n}\n",
        EGRESS + "add rule ip podnet postrouting ip saddr 10.0.0.0/8 accept\n",
        EGRESS + "insert rule podnet postrouting counter\n",
        EGRESS + "flush chain ip podnet postrouting; delete chain ip podnet postrouting\n",
        "define CLUSTER = { 10.244.0.0/16,\n  10.245.0.0/16 }\n" + EGRESS,
        "add table ip podnet\nadd chain ip podnet c\nadd set ip podnet s { type ipv4_addr; }\n"
        "add element ip podnet s { 10.0.0.1, 10.0.0.2 }\n",
        "# a comment naming table inet other\n" + EGRESS,
        'table ip podnet {\n chain c {\n  ip saddr 1.1.1.1 \\\n'
        '  accept comment "add rule inet other x"\n }\n}\n',
        "add table ip podnet\nadd ct helper ip podnet ftp { type \"ftp\" protocol tcp; }\n",
        "table ip podnet {\n chain c {\n  ip daddr { 1.1.1.1, 2.2.2.2 } accept\n }\n}\n",
    ],
)
def test_confined_content_is_accepted(content):
    assert scope_errors("ip", "podnet", content) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (EGRESS + "table inet other {\n}\n", r"line 7: `table inet other` touches table inet other"),
        (EGRESS + "add rule inet other input drop\n", r"touches table inet other"),
        (EGRESS + "flush table ip filter\n", r"touches table ip filter"),
        (EGRESS + "delete table ip6 podnet\n", r"touches table ip6 podnet"),
        (EGRESS + "insert rule filter input drop\n", r"touches table ip filter"),
        (EGRESS + "add element inet other s { 1.2.3.4 }\n", r"touches table inet other"),
        (EGRESS + "replace rule ip nat post handle 4 accept\n", r"touches table ip nat"),
        (EGRESS + 'add ct helper inet other ftp { type "ftp" protocol tcp; }\n', r"touches table inet other"),
        (EGRESS + "flush ruleset\n", r"`flush ruleset` reaches beyond table ip podnet"),
        (EGRESS + "reset counters\n", r"reaches beyond"),
        (EGRESS + "list ruleset\n", r"not a statement this module can confine"),
        (EGRESS + 'include "/etc/nftables.conf"\n', r"line 7: `include` is refused"),
        ('table ip podnet {\n include "/tmp/x.nft"\n}\n', r"line 2: `include` is refused"),
        (EGRESS + "add table ip podnet; add table ip evil\n", r"touches table ip evil"),
        ("table ip other {\n}\n", r"touches table ip other"),
        ("add chain ip podnet c\n", r"does not declare table ip podnet"),
        ("", r"does not declare table ip podnet"),
        (EGRESS + "add rule\n", r"names no table"),
        ("table ip podnet {\n", r"never closed"),
        ("table ip podnet {\n}\n}\n", r"unbalanced"),
        ('table ip podnet { comment "open\n}\n', r"unterminated string"),
    ],
)
def test_content_outside_the_table_is_refused(content, message):
    errors = scope_errors("ip", "podnet", content)
    assert errors, content
    assert any(re.search(message, error) for error in errors), errors


def test_family_must_match_too():
    inet = EGRESS.replace("table ip podnet", "table inet podnet")
    assert scope_errors("inet", "podnet", inet) == []
    assert scope_errors("ip", "podnet", inet)
    assert scope_errors("inet", "podnet", EGRESS)


def test_tokenize_counts_lines_across_continuations_and_comments():
    tokens = tokenize('a \\\nb # c { }\n"d\ne" f\n')
    words = [(kind, text, line) for kind, text, line in tokens if kind != ";"]
    assert words == [("word", "a", 1), ("word", "b", 2), ("string", "d\ne", 3), ("word", "f", 4)]


def _tokens_char_by_char(content):
    """The tokenizer's rule, one character at a time (how tokenize worked before its regex):
    the oracle its regex is held to."""
    tokens, line, i, n = [], 1, 0, len(content)
    while i < n:
        char = content[i]
        if char == "\\" and content.startswith("\n", i + 1):
            line, i = line + 1, i + 2
        elif char == "\n":
            tokens.append((";", "\n", line))
            line, i = line + 1, i + 1
        elif char in " \t\r":
            i += 1
        elif char == "#":
            end = content.find("\n", i)
            i = n if end < 0 else end
        elif char in "{};":
            tokens.append((char, char, line))
            i += 1
        elif char == '"':
            end = content.find('"', i + 1)
            if end < 0:
                return "unterminated"
            tokens.append(("string", content[i + 1:end], line))
            line += content[i + 1:end].count("\n")
            i = end + 1
        else:
            start = i
            while i < n and content[i] not in ' \t\r\n{};"#' and not content.startswith("\\\n", i):
                i += 1
            tokens.append(("word", content[start:i], line))
    return tokens


def test_tokenize_is_the_rule_character_by_character():
    """Every string of nft's special characters up to length 5, then random longer ones."""
    import itertools
    import random
    alphabet = ['\\', '\n', ' ', '\t', '\r', '#', '{', '}', ';', '"', 'a', '\f']

    def tokens(content):
        try:
            return tokenize(content)
        except NftContentError as exc:
            assert "unterminated string" in str(exc)
            return "unterminated"

    for size in range(6):
        for chars in itertools.product(alphabet, repeat=size):
            content = "".join(chars)
            assert tokens(content) == _tokens_char_by_char(content), repr(content)
    rng = random.Random(13)
    words = [*alphabet, "ip", "10.0.0.1", "include"]
    for _ in range(3000):
        content = "".join(rng.choice(words) for _ in range(rng.randint(6, 40)))
        assert tokens(content) == _tokens_char_by_char(content), repr(content)
    assert tokens(EGRESS) == _tokens_char_by_char(EGRESS)


# --- names, script, state ---------------------------------------------------------------------


@pytest.mark.parametrize(("family", "table"), [("ip", "podnet"), ("inet", "podnet-svc"), ("netdev", "a.b_c")])
def test_valid_names(family, table):
    validate_table_name(family, table)


@pytest.mark.parametrize(
    ("family", "table"),
    [
        ("ipv4", "podnet"),
        ("ip", ""),
        ("ip", "pod net"),
        ("ip", "x;flush ruleset"),
        ("ip", "9x"),
        ("ip", "a" * 65),
    ],
)
def test_invalid_names(family, table):
    with pytest.raises(NftContentError):
        validate_table_name(family, table)


def test_script_replaces_the_table_first():
    script = build_script("ip", "podnet", EGRESS.rstrip("\n"))
    lines = script.splitlines()
    assert lines[HEADER_LINES - 2:HEADER_LINES] == ["table ip podnet {}", "delete table ip podnet"]
    assert script.endswith(EGRESS)
    assert all(line.startswith("#") for line in lines[: HEADER_LINES - 2])
    # The header itself stays within the table.
    assert scope_errors("ip", "podnet", script) == []


def test_table_is_current_only_when_script_and_live_match():
    script = build_script("ip", "podnet", EGRESS)
    record = parse_state(state_record("ip", "podnet", script, "live listing\n"))
    assert table_is_current(record, script, "live listing\n")
    assert not table_is_current(record, script, "live listing\n\t\tip saddr 1.2.3.4 accept\n")
    assert not table_is_current(record, script, None)
    assert not table_is_current(record, build_script("ip", "podnet", EGRESS + "# v2\n"), "live listing\n")
    assert not table_is_current(None, script, "live listing\n")


@pytest.mark.parametrize("text", [None, "", "{not json", "[1, 2]"])
def test_unreadable_state_forces_reapply(text):
    assert parse_state(text) is None


def test_nft_error_points_at_content_lines():
    stderr = (
        f"/tmp/podnet-ip-podnet.abc.nft:{HEADER_LINES + 4}:38-38: Error: syntax error, unexpected newline\n"
        "    ip saddr 10.244.0.0/16 frobnicate\n"
    )
    message = explain_nft_error(stderr, "/tmp/podnet-ip-podnet.abc.nft")
    assert message.startswith("content line 4, column 38-38: Error: syntax error")
    assert "/tmp/" not in message
