"""Fault-injection report: SIGKILL/resume trials, env crashes, NaN, disk full, bad input.

    python benchmarks/faults.py                  # the full run: 50 kill/resume trials, 200 flag combinations
    python benchmarks/faults.py --quick          # a few of each (tests/test_faults.py runs the same in CI)
    python benchmarks/faults.py --json benchmarks/results/faults.json

Every trial drives the real runner (`python -m unstable_ppo.run`) in a subprocess and
injects the fault for real; `tests/helpers/fault_injection.py` says what each checks. The bad
input part runs the property-based flag tests (`tests/test_flags_property.py`, with
hypothesis) and the bad-model-file tests (`tests/test_bad_files.py`) through pytest.
The last line is the number of runs lost, which must be zero.
"""

import argparse
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

import harness

ROOT = harness.ROOT
sys.path.insert(0, ROOT)  # tests.helpers.fault_injection, and this checkout's unstable_ppo

from tests.helpers import fault_injection as fi  # noqa: E402


def crash_trials(workdir, rng, backend, repeats):
    """Env and worker crashes, NaN, a full disk, an unwritable logdir: `repeats` of the random ones."""
    plan = [("env raises (sync)", lambda d: fi.env_raises(d, backend, "sync")),
            ("env raises (async)", lambda d: fi.env_raises(d, backend, "async")),
            ("too many env failures", lambda d: fi.too_many_env_failures(d, backend)),
            ("NaN reward", lambda d: fi.non_finite(d, backend, "reward")),
            ("NaN observation", lambda d: fi.non_finite(d, backend, "obs")),
            ("disk full at a save", lambda d: fi.disk_full(d, backend)),
            ("unwritable logdir", lambda d: fi.unwritable_logdir(d, backend))]
    for _ in range(repeats):
        plan.append(("worker SIGKILL", lambda d: fi.worker_fault(d, rng, backend, signal.SIGKILL)))
        plan.append(("worker SIGSTOP", lambda d: fi.worker_fault(d, rng, backend, signal.SIGSTOP)))
    for name, trial in plan:
        yield _fresh(workdir, trial)


def _fresh(workdir, trial):
    path = tempfile.mkdtemp(dir=workdir)
    try:
        return trial(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def bad_input(backend, flag_examples, timeout=3600):
    """Run the property-based flag tests and the bad-file tests; returns (inputs tried, failures, seconds)."""
    env = harness.job_env(backend, TF_CPP_MIN_LOG_LEVEL="3", UNSTABLE_PPO_FLAG_EXAMPLES=str(flag_examples))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_flags_property.py", "tests/test_bad_files.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", summary)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", summary)) else 0
    if proc.returncode not in (0, 1):
        failed += 1
    return passed, failed, summary, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50, help="SIGKILL/resume trials (half during a save)")
    parser.add_argument("--crash_repeats", type=int, default=3, help="repeats of the random worker kills/stops")
    parser.add_argument("--flag_examples", type=int, default=200, help="generated flag combinations")
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "jax"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 kill trials, 1 crash repeat, 20 flag combinations")
    parser.add_argument("--parts", default="kills,crashes,bad_input", help="which parts to run")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.crash_repeats, args.flag_examples = 4, 1, 20
    rng = np.random.default_rng(args.seed)
    workdir = tempfile.mkdtemp(prefix="unstable_ppo_faults_")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"fault injection on {args.backend}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, started {started}", flush=True)

    results = []

    def report(trial):
        results.append(trial)
        mark = "LOST" if trial.lost else "ok  "
        print(f"{mark} {trial.kind:<24} {trial.seconds:6.1f} s  {trial.detail}", flush=True)

    parts = set(args.parts.split(","))
    for i in range(args.trials if "kills" in parts else 0):
        during_save = i % 2 == 1
        report(_fresh(workdir, lambda d: fi.kill_and_resume(d, rng, args.backend, during_save)))
    for trial in crash_trials(workdir, rng, args.backend, args.crash_repeats) if "crashes" in parts else ():
        report(trial)
    inputs = input_failures = 0
    if "bad_input" in parts:
        inputs, input_failures, summary, input_seconds = bad_input(args.backend, args.flag_examples)
        print(f"bad input: {summary} ({input_seconds:.0f} s)", flush=True)
    else:
        args.flag_examples = 0
    shutil.rmtree(workdir, ignore_errors=True)

    kills = [r for r in results if r.kind.startswith("kill")]
    faulted = [r for r in kills if "not counted" not in r.detail]
    crashes = [r for r in results if not r.kind.startswith("kill")]
    lost = sum(r.lost for r in results) + input_failures
    lines = [
        "",
        f"kill/resume trials:     {len(faulted)} ({sum('during save' in r.kind for r in faulted)} aimed at a "
        f"checkpoint write, {sum('mid-save' in r.detail for r in faulted)} left a half-written one; "
        f"{len(kills) - len(faulted)} ended before the kill, not counted)",
        f"crashes injected:       {len(crashes)} ({', '.join(sorted({r.kind for r in crashes}))})",
        f"bad inputs tried:       {args.flag_examples} generated flag combinations + bad-file cases "
        f"({inputs} tests passed, {input_failures} failed)",
        f"runs lost:              {lost}",
    ]
    print("\n".join(lines))
    if args.json:
        harness.write_json(args.json, {
            "started": started, "backend": args.backend, "cpus": os.cpu_count(),
            "kill_resume_trials": len(faulted), "crashes_injected": len(crashes),
            "flag_examples": args.flag_examples, "bad_input_tests_passed": inputs,
            "bad_input_failures": input_failures, "runs_lost": lost,
            "trials": [vars(r) for r in results],
        })
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
