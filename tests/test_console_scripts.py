"""The installed console scripts are the tools: `unstable-ppo --help` lists the same flags as
`python -m unstable_ppo.run --help` (it once listed none: absl lists the key flags of the module named
sys.argv[0], which for a console script is the wrapper)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.runner import ROOT, child_env

pytestmark = [pytest.mark.backend_independent, pytest.mark.quick]

TOOLS = {"unstable-ppo": "run", "unstable-ppo-play": "play", "unstable-ppo-plot": "plot",
         "unstable-ppo-export": "export", "unstable-ppo-tune": "tune"}


def _help(command):
    proc = subprocess.run([*command, "--help"], capture_output=True, text=True, env=child_env(), cwd=ROOT,
                          timeout=120)
    assert proc.stdout and "Traceback" not in proc.stderr, proc.stderr[-2000:]  # absl's --help exits 1
    return proc.stdout.splitlines()


@pytest.mark.parametrize("script", sorted(TOOLS))
def test_console_script_help_lists_the_tools_flags(script):
    path = shutil.which(script)
    assert path, f"{script} is not installed: pip install -e ."
    installed, module = _help([path]), _help([sys.executable, "-m", f"unstable_ppo.{TOOLS[script]}"])
    # The one line that may differ: the heading of the flag list names the program itself.
    normalize = [line for line in installed if line.rstrip(":") != path]
    expected = [line for line in module if not (line.endswith(".py:") and os.sep in line)]
    assert normalize == expected
    assert sum(line.strip().startswith("--") for line in installed) >= 3
