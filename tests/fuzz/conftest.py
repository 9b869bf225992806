import os

from hypothesis import HealthCheck, settings

# CI runs a bounded number of examples per op; CONVLOC_FUZZ_EXAMPLES=2000 gives the long run.
settings.register_profile(
    "convloc",
    max_examples=int(os.environ.get("CONVLOC_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("CONVLOC_FUZZ_RANDOM") is None,
)
settings.load_profile("convloc")


def pytest_terminal_summary(terminalreporter):
    from .arrays import calls_made

    if calls_made[0]:
        terminalreporter.write_line(f"hostile calls made by the fuzz tests: {calls_made[0]}")
