"""Every role's README "Variables" section, written from its meta/argument_specs.yml.

    python tools/role_docs.py            rewrite the section of every role's README.md
    python tools/role_docs.py --check    change nothing; fail when a README is out of date,
                                         or when defaults/main.yml and the argument spec
                                         disagree (names, default values, types, choices)

A role describes its knobs once, in meta/argument_specs.yml, the file Ansible validates the
role's variables against before its first task (a wrong type or choice fails there, with the
variable's name). defaults/main.yml gives the values; the spec repeats each as `default:` so
`ansible-doc -t role` and the README can show it, and this check keeps the two equal.

The section sits between the markers below; everything else in the README is the author's.
Pure Python and PyYAML: no Ansible, no network (make lint runs --check).
"""

import argparse
import pathlib
import re
import sys

import yaml

BEGIN = "<!-- BEGIN role variables -->"
END = "<!-- END role variables -->"
ROLES = pathlib.Path(__file__).resolve().parent.parent / "roles"
ENTRY_POINT = "main"

# What a literal default must be for its spec type (a templated default is checked by Ansible
# at run time, once templated).
TYPES = {
    "str": (str,),
    "path": (str,),
    "raw": (object,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}
# Ansible's documentation markup, as Markdown.
MARKUP = [
    (re.compile(r"\b[COV]\(([^)]*)\)"), r"`\1`"),
    (re.compile(r"\bI\(([^)]*)\)"), r"*\1*"),
    (re.compile(r"\bB\(([^)]*)\)"), r"**\1**"),
    (re.compile(r"\bU\(([^)]*)\)"), r"\1"),
    (re.compile(r"\bL\(([^,)]*),\s*([^)]*)\)"), r"[\1](\2)"),
]


class RoleDocsError(Exception):
    """A role's files cannot be read as a role: no spec, bad YAML, no markers."""


def load_yaml(path):
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise RoleDocsError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RoleDocsError(f"{path}: not YAML: {exc}") from None


def spec_options(spec, path):
    """The options of the role's main entry point."""
    try:
        options = spec["argument_specs"][ENTRY_POINT].get("options") or {}
    except (KeyError, TypeError, AttributeError):
        raise RoleDocsError(f"{path}: no argument_specs.{ENTRY_POINT}") from None
    if not isinstance(options, dict):
        raise RoleDocsError(f"{path}: argument_specs.{ENTRY_POINT}.options is not a mapping")
    return options


def templated(value):
    return isinstance(value, str) and "{{" in value


def check_role(defaults, options):
    """What defaults/main.yml and the argument spec disagree on, one sentence each."""
    problems = []
    for name in defaults:
        if name not in options:
            problems.append(f"{name}: in defaults/main.yml but not in meta/argument_specs.yml")
    for name, option in options.items():
        if not isinstance(option, dict):
            problems.append(f"{name}: the spec is not a mapping")
            continue
        kind = option.get("type", "str")
        if not option.get("description"):
            problems.append(f"{name}: no description")
        if "type" not in option:
            problems.append(f"{name}: no type")
        elif kind not in TYPES:
            problems.append(f"{name}: unknown type {kind!r}")
        if kind == "list" and "elements" not in option:
            problems.append(f"{name}: a list without elements")
        if option.get("required"):
            if name in defaults:
                problems.append(f"{name}: required, yet defaults/main.yml gives it a value")
            continue
        if name not in defaults:
            problems.append(f"{name}: in meta/argument_specs.yml but not in defaults/main.yml")
            continue
        if "default" not in option:
            problems.append(f"{name}: no default (defaults/main.yml: {defaults[name]!r})")
            continue
        default = option["default"]
        if default != defaults[name] or type(default) is not type(defaults[name]):
            problems.append(f"{name}: default {default!r} in meta/argument_specs.yml, "
                            f"{defaults[name]!r} in defaults/main.yml")
        if templated(default):
            continue
        if kind in TYPES and (not isinstance(default, TYPES[kind])
                              or (kind in ("int", "float") and isinstance(default, bool))):
            problems.append(f"{name}: default {default!r} is not a {kind}")
        if "choices" in option and default not in option["choices"]:
            problems.append(f"{name}: default {default!r} is not one of {option['choices']}")
    return problems


def markdown(text):
    if isinstance(text, list):
        text = " ".join(str(t) for t in text)
    text = " ".join(str(text).split())
    for pattern, replacement in MARKUP:
        text = pattern.sub(replacement, text)
    return text


def code(text):
    return "`%s`" % text if text != "" else "`''`"


def render_default(option):
    if option.get("required"):
        return "required"
    if "default" not in option or option["default"] is None:
        return ""
    value = option["default"]
    if isinstance(value, bool):
        return code(str(value).lower())
    if isinstance(value, (list, dict)):
        return code(yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip())
    return code(value)


def render_type(option):
    kind = option.get("type", "str")
    if "elements" in option:
        kind = f"{kind} of {option['elements']}"
    if "choices" in option:
        kind += ": " + ", ".join(code(c) for c in option["choices"])
    return kind


def cell(text):
    """A Markdown table cell: pipes escaped (GitHub honours \\| inside code spans in tables)."""
    return text.replace("|", "\\|")


def render_variables(options):
    """The generated section, markers included."""
    lines = [
        BEGIN,
        "## Variables",
        "",
        "Generated by `tools/role_docs.py` from `meta/argument_specs.yml`, which mirrors",
        "`defaults/main.yml`; Ansible checks these types and choices before the role's first task.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, option in options.items():
        description = markdown(option.get("description", ""))
        cells = (code(name), render_type(option), render_default(option), description)
        lines.append("| %s |" % " | ".join(cell(c) for c in cells))
    lines.append(END)
    return "\n".join(lines)


def update_readme(text, section, path="README.md"):
    """text with the part between the markers replaced by section."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise RoleDocsError(f"{path}: no {BEGIN} ... {END} markers for the generated section")
    return text[:start] + section + text[end + len(END):]


def process_role(role_dir, check):
    """Problems of one role (check) or the README rewritten (not check)."""
    role_dir = pathlib.Path(role_dir)
    spec_path = role_dir / "meta" / "argument_specs.yml"
    readme_path = role_dir / "README.md"
    defaults_path = role_dir / "defaults" / "main.yml"
    options = spec_options(load_yaml(spec_path), spec_path)
    defaults = load_yaml(defaults_path) if defaults_path.exists() else {}
    problems = [f"{role_dir.name}: {p}" for p in check_role(defaults, options)]
    try:
        readme = readme_path.read_text()
    except OSError as exc:
        raise RoleDocsError(f"{readme_path}: cannot read: {exc.strerror}") from None
    wanted = update_readme(readme, render_variables(options), readme_path)
    if wanted != readme:
        if check:
            problems.append(f"{role_dir.name}: README.md's Variables section is out of date "
                            "(run python tools/role_docs.py)")
        else:
            readme_path.write_text(wanted)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; fail on an out-of-date README or a spec that disagrees "
                             "with the defaults")
    parser.add_argument("--roles", type=pathlib.Path, default=ROLES,
                        help="the roles directory (default: %(default)s)")
    args = parser.parse_args(argv)
    roles = sorted(p for p in args.roles.iterdir() if (p / "meta" / "argument_specs.yml").exists()
                   or (p / "tasks").is_dir())
    problems = []
    for role_dir in roles:
        try:
            problems += process_role(role_dir, args.check)
        except RoleDocsError as exc:
            problems.append(str(exc))
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and args.check:
        print(f"role docs: {len(roles)} roles, specs match their defaults, READMEs up to date")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
