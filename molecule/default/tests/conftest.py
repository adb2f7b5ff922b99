"""The scenario's verify order: every suite reads the converged lab, and the suites that take
podnet off a node and put it back (playbooks/reset.yml, remove_node.yml) go last, so no
other suite meets a node in the middle of that."""

LAST = ("test_lifecycle.py", "test_reset.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)
