"""The scenario's verify order: every suite reads the converged machines, and the suite that
takes podnet off a machine (playbooks/reset.yml) goes last."""

LAST = ("test_reset_machine.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LAST.index(item.path.name) + 1 if item.path.name in LAST else 0)
