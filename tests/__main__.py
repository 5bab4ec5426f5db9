"""`python -m tests`: the test suite once per Keras backend, each in its own process.

The Keras backend is fixed when Keras is first imported, so every backend gets a
fresh pytest process. Extra arguments go to pytest (`python -m tests -k gae`);
`--backends=jax,torch` picks backends; `--quick` runs the quick tier only (the tests
marked `quick`: units, numerical references, round trips, a tiny run per backend).
A test marked `backend_independent` (the same on every backend) or `cross_backend` (it
runs the other backends itself, in child processes) runs with the first backend only.
Exits non-zero if any backend fails.
"""

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

BACKENDS = ("tensorflow", "jax", "torch")


def main(argv):
    backends = BACKENDS
    rest = []
    for arg in argv:
        if arg == "--quick":
            rest += ["-m", "quick"]
        elif arg.startswith("--backends="):
            backends = tuple(b for b in arg.split("=", 1)[1].split(",") if b)
        else:
            rest.append(arg)
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        print(f"error: unknown backend(s) {', '.join(sorted(unknown))}: use {', '.join(BACKENDS)}")
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    reports = tempfile.mkdtemp(prefix="unstable_ppo_tests_")
    for index, backend in enumerate(backends):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        # A test marked backend_independent or cross_backend runs once, with the first backend.
        once = ["--skip-backend-independent"] if index else []
        print(f"===== KERAS_BACKEND={backend} =====", flush=True)
        start = time.perf_counter()
        report = os.path.join(reports, f"{backend}.xml")
        code = subprocess.call(
            [sys.executable, "-m", "pytest", here, "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *once, *rest],
            env=env, cwd=os.path.dirname(here),
        )
        results[backend] = (code, time.perf_counter() - start)
        for key, value in count(report).items():
            totals[key] += value
    print("===== summary =====")
    for backend, (code, seconds) in results.items():
        print(f"{backend:<10} {'passed' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s")
    ok = all(code == 0 for code, _ in results.values())
    if not ok and totals["failed"] == 0:
        totals["failed"] = 1  # a backend crashed or collected nothing: never report green
    print(f"total: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 0 if ok else 1


def count(report):
    """passed/failed/skipped from a pytest JUnit XML report (zeros if it is missing)."""
    if not os.path.exists(report):
        return {}
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return {"passed": tests - failed - skipped, "failed": failed, "skipped": skipped}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
