"""Hostile timing: interpreter exit, fork and Ctrl-C while kernels run, and absurd thread counts.

Each case runs in a child interpreter with a time limit, so that a hang or an abort fails the
test instead of the test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import convloc

# Calls of every family, large enough that each runs on the thread pool and takes scratch from the
# workspace cache (blocks >= 1 MiB).
CALLS = """
import numpy as np
import convloc
from convloc import ops
rng = np.random.default_rng(0)
unary = rng.random((4, 256, 256)).astype(np.float32)
image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
fmap = rng.standard_normal((2, 16, 40, 40)).astype(np.float32)
xy = rng.uniform(0, 30, (500, 2))
rois = np.concatenate([rng.integers(0, 2, (500, 1)), xy, xy + 8], 1).astype(np.float32)
xy = rng.uniform(0, 500, (3000, 2))
boxes = np.concatenate([xy, xy + 40], 1).astype(np.float32)
calls = [
    lambda: ops.dense_crf(unary, image=image, iterations=1),
    lambda: ops.grid_crf(unary[:, :64, :64], image[:64, :64], iterations=2),
    lambda: ops.bilateral_filter(image, 4.0, 20.0),
    lambda: ops.roi_align(fmap, rois, 7, 1.0, 2),
    lambda: ops.conv_transpose2d(fmap, rng.standard_normal((16, 8, 4, 4)).astype(np.float32), stride=2),
    lambda: ops.box_iou(boxes, boxes),
    lambda: ops.felzenszwalb(image[:96, :96], 1.0, 0.8, 20),
]
"""


def run_python(code: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs code in a child interpreter; a child still running after `timeout` seconds fails."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the child hung (still running after {timeout} s); stderr: {e.stderr}")


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2])
def test_interpreter_exit_while_daemon_threads_are_inside_kernels(delay):
    # Before 3.14 CPython ends such threads with pthread_exit when they ask for the GIL back: the
    # process must still exit cleanly, whatever each thread was doing at the time.
    code = (
        CALLS
        + f"""
import threading, time
def loop(first):
    while True:
        for f in calls[first:] + calls[:first]:
            f()
for first in range(3):
    threading.Thread(target=loop, args=(first,), daemon=True).start()
time.sleep({delay})
"""
    )
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "terminate" not in result.stderr


def test_thread_counts_beyond_the_cap_are_capped():
    code = """
    import time
    import numpy as np
    import convloc
    from convloc import ops
    u = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    want = ops.dense_crf(u, iterations=3)
    for n in (5000, 10**6, 2**31, 2**63, 2**100):
        convloc.set_num_threads(n)
        assert convloc.get_num_threads() == convloc.max_threads(), (n, convloc.get_num_threads())
        start = time.perf_counter()
        assert np.array_equal(ops.dense_crf(u, iterations=3), want)
        assert time.perf_counter() - start < 10
    print("capped")
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0 and "capped" in result.stdout, result.stderr[-2000:]
    assert convloc.max_threads() == 4 * os.cpu_count()


@pytest.mark.parametrize("n", [2.0, 2.5, "8", True, None, 1j])
def test_thread_counts_must_be_integers(n, threads):
    with pytest.raises(TypeError, match=r"^n: expected an integer, got"):
        convloc.set_num_threads(n)


def test_negative_and_huge_negative_thread_counts_mean_the_default(threads):
    for n in (0, -1, -(2**70)):
        convloc.set_num_threads(n)
        assert convloc.get_num_threads() == os.cpu_count()


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS limits thread stacks on Linux")
def test_threads_the_system_refuses_give_a_smaller_pool_not_a_hang():
    # Each thread reserves a stack: an address-space limit a little above what the process uses
    # lets only a few start. The pool must run with those (it used to wait forever on a condition
    # variable destroyed under its waiters).
    code = """
    import resource, time
    import numpy as np
    import convloc
    from convloc import ops
    u = np.random.default_rng(0).random((3, 80, 80)).astype(np.float32)
    want = ops.dense_crf(u, iterations=2)
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 20 * 2**20, resource.RLIM_INFINITY))
    convloc.set_num_threads(convloc.max_threads())
    assert np.array_equal(ops.dense_crf(u, iterations=2), want)
    print("done")
    """
    result = run_python(code, timeout=60)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


FORK = """
import os, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running: that is the point

def fork_and_wait(child, limit=10.0):
    '''Forks; the child runs `child` and exits 0. Returns "hung", "failed" or "ok".'''
    pid = os.fork()
    if pid == 0:
        try:
            child()
            os._exit(0)
        except BaseException:
            os._exit(1)
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "failed"
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.002)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_other_threads_are_inside_kernels():
    code = (
        CALLS
        + FORK
        + """
import threading
stop = False
def loop(first):
    while not stop:
        for f in calls[first:] + calls[:first]:
            f()
        convloc.empty_cache()
threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
outcomes = []
for i in range(30):
    time.sleep(0.003 * (i % 5))
    outcomes.append(fork_and_wait(lambda: [f() for f in calls[i % len(calls):][:2]]))
stop = True
for t in threads:
    t.join()
print(outcomes.count("ok"), outcomes.count("failed"), outcomes.count("hung"))
"""
    )
    result = run_python(code, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["30", "0", "0"], f"ok, failed, hung children: {result.stdout}"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_while_a_thread_holds_the_scratch_cache():
    # The cache's lock is held for an instant by every call that allocates; held for a while here,
    # so that the fork surely lands inside: the child must still allocate.
    code = (
        CALLS
        + FORK
        + """
import threading
holder = threading.Thread(target=convloc._C._hold_workspace_cache_lock, args=(1.0,))
holder.start()
time.sleep(0.2)
print(fork_and_wait(calls[0]))
holder.join()
"""
    )
    result = run_python(code, timeout=60)
    assert result.stdout.strip() == "ok", result.stdout + result.stderr[-2000:]


LONG_CALLS = {
    "dense_crf": "ops.dense_crf(rng.random((5, 200, 200)).astype(np.float32), iterations=10**9)",
    "grid_crf": "ops.grid_crf(rng.random((5, 200, 200)).astype(np.float32), rng.random((200, 200)), "
    "iterations=10**9)",
    # 20000 RoIs of 64 x 64 samples per bin: a minute of work into 63 MB of output
    "roi_align": "ops.roi_align(rng.standard_normal((1, 16, 64, 64)).astype(np.float32), "
    "np.tile(np.array([[0, 0, 0, 60, 60]], np.float32), (20000, 1)), 7, 1.0, 64)",
}


# A worker thread finishes the chunk it is in (a 64th of the call) before the call ends; an
# instrumented build (tools/sanitize.sh) runs each chunk several times slower.
SLOWDOWN = float(os.environ.get("CONVLOC_TEST_SLOWDOWN", "1"))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is a console event on Windows")
@pytest.mark.parametrize("op", sorted(LONG_CALLS))
def test_ctrl_c_interrupts_a_long_call(op):
    code = f"""
    import sys, time
    import numpy as np
    from convloc import ops
    rng = np.random.default_rng(0)
    small = rng.random((3, 20, 20)).astype(np.float32)
    want = ops.dense_crf(small, iterations=2)
    print("started", flush=True)
    try:
        {LONG_CALLS[op]}
    except KeyboardInterrupt:
        # the pool is usable again, and gives the same results
        assert np.array_equal(ops.dense_crf(small, iterations=2), want)
        print("interrupted", flush=True)
        sys.exit(3)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        time.sleep(1.0)  # well inside the call
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=8 * SLOWDOWN)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"{op}: still running {8 * SLOWDOWN} s after SIGINT")
    assert child.returncode == 3 and out.strip() == "interrupted", (child.returncode, out)
