"""`python -m unstable_ppo.export`: the command line of `unstable_ppo.export.cli`, whose docstring is its help."""

import sys

from unstable_ppo.export.cli import entry_point

if __name__ == "__main__":
    entry_point(flags_module=sys.argv[0])  # absl's name for a `python -m` module's flags: --helpfull lists them first
