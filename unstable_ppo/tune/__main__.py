"""`python -m unstable_ppo.tune`: the tuner's command line (`unstable_ppo.tune.cli`)."""

from unstable_ppo.tune.cli import entry_point

if __name__ == "__main__":
    entry_point()
