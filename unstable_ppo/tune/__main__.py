"""`python -m unstable_ppo.tune`: the tuner's command line (`unstable_ppo.tune.cli`)."""

import sys

from unstable_ppo.tune.cli import entry_point

if __name__ == "__main__":
    entry_point(flags_module=sys.argv[0])  # absl's name for a `python -m` module's flags: --helpfull lists them first
