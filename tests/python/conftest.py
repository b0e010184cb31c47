"""pytest glue for the client-compatibility tests: a failing test's report carries the log of every
fp8serve it used (the server fixtures hand out fp8serve_harness.FP8Serve objects)."""
import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    from fp8serve_harness import FP8Serve
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, FP8Serve):
            rep.sections.append((f"fp8serve log ({name}, {value.url if hasattr(value, 'url') else '?'})", value.log()))
