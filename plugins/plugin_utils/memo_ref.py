"""A text the controller keeps in its memo, passed from task to task by reference.

At 10,000 Services the plan's checked text is 10 MB and the resolved model 6 MB. Held in a
variable, Ansible sends such a value from the worker that set it to the main process (0.2 s
for 6 MB), and looks into it for a template every time a task names it (about 0.1 s per
task and host). With a memo directory, the filters that make those texts keep them there
(filter/podnet.py `_memo`: NAME.DIGEST.txt, so two runs at once with other inputs keep
their own) and return a reference instead: this prefix, the text's sha256 and the file's
path. Whatever needs the text itself (a filter that parses it, an action plugin about to
run its module) reads it back here, and a text that is no longer the one referred to
(changed or removed since) is an error that says to run again, never another text.
Whatever only compares texts compares their digests (`digest_of`), which a reference
carries.

Modules never see a reference: the action plugins (plugin_utils/glanced.py) give them the
text, and a task without one reads it with the `podnet.network.memo_text` filter.
"""

import hashlib

PREFIX = "podnet-memo:"


class MemoReferenceError(Exception):
    pass


def reference(path, sha256):
    return "%s%s:%s" % (PREFIX, sha256, path)


def is_reference(value):
    return isinstance(value, str) and value.startswith(PREFIX)


def _parts(value):
    return tuple(value[len(PREFIX):].partition(":")[::2])


def sha256_of(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_of(value):
    """The sha256 of the text `value` is or refers to."""
    return _parts(value)[0] if is_reference(value) else sha256_of(value)


def identity(value):
    """What a task's digest takes of `value`: a reference without its path (a run from
    another inventory file keeps the same text elsewhere, and is the same task)."""
    return PREFIX + digest_of(value) if is_reference(value) else value


def text_of(value):
    """The text `value` refers to (or `value` itself when it is not a reference)."""
    if not is_reference(value):
        return value
    sha256, path = _parts(value)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MemoReferenceError("podnet's memo %s cannot be read (%s): run the plays again"
                                 % (path, exc)) from None
    if sha256_of(text) != sha256:
        raise MemoReferenceError("podnet's memo %s no longer holds the text this run made (changed since): "
                                 "run the plays again" % path)
    return text
