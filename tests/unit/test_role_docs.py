"""tools/role_docs.py: the README section it writes and the drift it catches, on small roles in tmp_path."""

import importlib.util
import pathlib
import textwrap

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "tools" / "role_docs.py"
_SPEC = importlib.util.spec_from_file_location("role_docs", _PATH)
role_docs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(role_docs)

DEFAULTS = """\
---
# The table podnet owns.
demo_table: podnet
demo_backend: "{{ podnet_proxy_backend | default('nftables') }}"
demo_ports: [10053, 10054]
demo_enabled: true
demo_sysctls:
  net.ipv4.ip_forward: 1
"""

SPEC = """\
---
argument_specs:
  main:
    short_description: A demo role
    options:
      demo_table:
        type: str
        default: podnet
        description: The C(ip) table podnet owns.
      demo_backend:
        type: str
        default: "{{ podnet_proxy_backend | default('nftables') }}"
        choices: [nftables, iptables]
        description: Which backend (from O(podnet_proxy_backend)).
      demo_ports:
        type: list
        elements: int
        default: [10053, 10054]
        description:
          - The two ports.
          - Blue and green.
      demo_enabled:
        type: bool
        default: true
        description: Turn it on.
      demo_sysctls:
        type: dict
        default:
          net.ipv4.ip_forward: 1
        description: Sysctls.
"""

README = """\
# demo

Prose the author wrote.

<!-- BEGIN role variables -->
stale
<!-- END role variables -->

More prose after.
"""


def make_role(root, name="demo", defaults=DEFAULTS, spec=SPEC, readme=README):
    role = root / name
    files = {"defaults/main.yml": defaults, "meta/argument_specs.yml": spec, "README.md": readme}
    for sub, text in files.items():
        if text is not None:
            (role / sub).parent.mkdir(parents=True, exist_ok=True)
            (role / sub).write_text(text)
    (role / "tasks").mkdir(exist_ok=True)
    return role


def test_writes_the_section_between_the_markers_and_keeps_the_prose(tmp_path):
    role = make_role(tmp_path)
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert role_docs.main(["--roles", str(tmp_path)]) == 0
    text = (role / "README.md").read_text()
    assert text.startswith("# demo\n\nProse the author wrote.\n\n"
                           "<!-- BEGIN role variables -->\n## Variables\n")
    assert text.endswith("<!-- END role variables -->\n\nMore prose after.\n")
    assert "stale" not in text
    rows = [line for line in text.splitlines() if line.startswith("| `demo_")]
    assert rows == [
        "| `demo_table` | str | `podnet` | The `ip` table podnet owns. |",
        "| `demo_backend` | str: `nftables`, `iptables` "
        "| `{{ podnet_proxy_backend \\| default('nftables') }}` "
        "| Which backend (from `podnet_proxy_backend`). |",
        "| `demo_ports` | list of int | `[10053, 10054]` | The two ports. Blue and green. |",
        "| `demo_enabled` | bool | `true` | Turn it on. |",
        "| `demo_sysctls` | dict | `{net.ipv4.ip_forward: 1}` | Sysctls. |",
    ]
    # Written once, it is up to date, and a second write changes nothing.
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 0
    assert role_docs.main(["--roles", str(tmp_path)]) == 0
    assert (role / "README.md").read_text() == text


def test_check_changes_nothing(tmp_path):
    role = make_role(tmp_path)
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert (role / "README.md").read_text() == README


def test_a_hand_edit_of_the_section_is_drift(tmp_path, capsys):
    role = make_role(tmp_path)
    role_docs.main(["--roles", str(tmp_path)])
    readme = role / "README.md"
    readme.write_text(readme.read_text().replace("Turn it on.", "Turn it off."))
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert "demo: README.md's Variables section is out of date" in capsys.readouterr().err


@pytest.mark.parametrize("defaults_change, spec_change, problem", [
    # a knob in defaults only, or in the spec only
    (("demo_enabled: true\n", "demo_enabled: true\ndemo_new: 1\n"), None,
     "demo_new: in defaults/main.yml but not in meta/argument_specs.yml"),
    (("demo_enabled: true\n", ""), None,
     "demo_enabled: in meta/argument_specs.yml but not in defaults/main.yml"),
    # the values disagree (also by type: 1 is not true)
    (("demo_table: podnet\n", "demo_table: podnet2\n"), None,
     "demo_table: default 'podnet' in meta/argument_specs.yml, 'podnet2' in defaults/main.yml"),
    (("demo_enabled: true\n", "demo_enabled: 1\n"), None,
     "demo_enabled: default True in meta/argument_specs.yml, 1"),
    (("[10053, 10054]", "[10053, 10055]"), None,
     "demo_ports: default [10053, 10054] in meta/argument_specs.yml"),
    # the spec is incomplete or wrong in itself
    (None, ("        default: podnet\n", ""), "demo_table: no default"),
    (None, ("        elements: int\n", ""), "demo_ports: a list without elements"),
    (None, ("        description: Turn it on.\n", ""), "demo_enabled: no description"),
    (None, ("      demo_table:\n        type: str\n", "      demo_table:\n"), "demo_table: no type"),
    (None, ("[nftables, iptables]", "[iptables]"), None),  # a templated default is Ansible's to check
    (("demo_table: podnet\n", "demo_table: 7\n"), ("default: podnet\n", "default: 7\n"),
     "demo_table: default 7 is not a str"),
])
def test_check_names_each_disagreement(tmp_path, capsys, defaults_change, spec_change, problem):
    defaults, spec = DEFAULTS, SPEC
    if defaults_change:
        assert defaults_change[0] in defaults
        defaults = defaults.replace(*defaults_change)
    if spec_change:
        assert spec_change[0] in spec
        spec = spec.replace(*spec_change)
    make_role(tmp_path, defaults=defaults, spec=spec)
    role_docs.main(["--roles", str(tmp_path)])  # README up to date: only the spec is judged
    capsys.readouterr()
    status = role_docs.main(["--roles", str(tmp_path), "--check"])
    err = capsys.readouterr().err
    if problem is None:
        assert (status, err) == (0, "")
    else:
        assert status == 1
        assert f"demo: {problem}" in err


def test_a_literal_default_outside_its_choices(tmp_path, capsys):
    defaults = DEFAULTS.replace("\"{{ podnet_proxy_backend | default('nftables') }}\"", "ipvs")
    spec = SPEC.replace("\"{{ podnet_proxy_backend | default('nftables') }}\"", "ipvs")
    make_role(tmp_path, defaults=defaults, spec=spec)
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert "demo_backend: default 'ipvs' is not one of ['nftables', 'iptables']" in capsys.readouterr().err


def test_required_options_have_no_default(tmp_path, capsys):
    spec = SPEC + textwrap.indent(textwrap.dedent("""\
        demo_model:
          type: str
          required: true
          description: Given by the play.
        """), " " * 6)
    make_role(tmp_path, spec=spec)
    assert role_docs.main(["--roles", str(tmp_path)]) == 0
    readme = (tmp_path / "demo" / "README.md").read_text()
    assert "| `demo_model` | str | required | Given by the play. |" in readme
    make_role(tmp_path, defaults=DEFAULTS + "demo_model: x\n", spec=spec)
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert "demo_model: required, yet defaults/main.yml gives it a value" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"readme": "# demo\n"}, "no <!-- BEGIN role variables --> ... <!-- END role variables --> markers"),
    ({"spec": None}, "argument_specs.yml: cannot read"),
    ({"spec": "---\nargument_specs: {}\n"}, "argument_specs.yml: no argument_specs.main"),
    ({"defaults": "demo: [\n"}, "defaults/main.yml: not YAML"),
])
def test_broken_roles_are_named(tmp_path, capsys, change, message):
    make_role(tmp_path, **change)
    assert role_docs.main(["--roles", str(tmp_path), "--check"]) == 1
    assert message in capsys.readouterr().err


def test_the_repository_roles_are_up_to_date(capsys):
    """The same check make lint runs, so the unit suite catches drift too."""
    assert role_docs.main(["--check"]) == 0, capsys.readouterr().err
