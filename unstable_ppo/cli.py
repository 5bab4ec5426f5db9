"""What the command-line tools share: backend selection and one-line errors."""

import json
import os
import re
import sys
import traceback

from absl import app, flags, logging

BACKENDS = ("tensorflow", "jax", "torch")


class UsageError(ValueError):
    """Bad flags: reported in one line, exit code 2."""


class JsonObjectParser(flags.ArgumentParser):
    """A flag whose value is a JSON object (`--env_kwargs='{"g": 9.81}'`): parsed to a dict, so that a bad value
    is a flag error (naming the flagfile's line) and a saved run's value compares as data, not as text."""

    syntactic_help = "a JSON object"

    def parse(self, argument):
        if argument is None or isinstance(argument, dict):
            return argument
        try:
            value = json.loads(argument)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e}): {argument}") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object {{...}}, got {argument}")
        return value

    def flag_type(self):
        return "JSON object"


class JsonSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return json.dumps(value)


def select_backend(name):
    """Set KERAS_BACKEND before Keras is imported; refuse a clash afterwards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if name is None:
        return
    if "keras" in sys.modules:
        import keras  # already imported (checked above): this only reads its backend

        if keras.backend.backend() != name:
            raise UsageError(f"--backend={name} but Keras is already running on {keras.backend.backend()}")
    os.environ["KERAS_BACKEND"] = name


def run_app(command, positional=False):
    """`absl.app.run` for a tool whose body is `command(FLAGS)` (`command(args, FLAGS)` with `positional`)."""
    def main(argv):
        logging.set_verbosity(logging.WARNING)  # keep JAX's platform probing off the console
        if positional:
            exit_on_error(command, argv[1:], flags.FLAGS)  # its result is not an exit status
            return
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        exit_on_error(command, flags.FLAGS)

    adopt_key_flags(command.__module__)
    app.run(main, flags_parser=parse_flags)


def adopt_key_flags(module_name):
    """Make the tool module's flags the key flags of the program, so that `--help` lists them.

    absl's `--help` lists the key flags of the module named `sys.argv[0]`: the tool's own module under
    `python -m unstable_ppo.TOOL`, but the wrapper script under an installed console script (which
    then listed no flag at all).
    """
    if module_name == "__main__":
        return  # python -m: its flags are already registered under sys.argv[0]
    sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__  # absl's usage text is __main__'s docstring
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def parse_flags(argv):
    """absl's parsing, with an unknown flag or a bad value reported like any other bad input."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(_in_flagfile(argv, e))


def _in_flagfile(argv, error):
    """`error`, prefixed with `FILE:LINE:` when a `--flagfile` given on the command line set the flag it names."""
    message = str(error)
    named = re.search(r"flag '?-{0,2}([A-Za-z_]\w*)", message)
    if not named:
        return message
    for arg in argv[1:]:
        if arg.startswith("--flagfile="):
            path = arg.split("=", 1)[1]
            number = flagfile_line(path, named.group(1))
            if number:
                return f"{path}:{number}: {message}"
    return message


def flagfile_line(path, name):
    """The line number of flag `name` (`--name=...`, or `--noname` for `name` or, given `noname`, for `name`)
    in the flagfile `path`; None if it is not there or the file cannot be read."""
    names = {name, name[2:]} if name.startswith("no") else {name}
    spellings = {f"--{n}" for n in names} | {f"--no{n}" for n in names}
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if line.strip().split("=", 1)[0] in spellings:
                    return number
    except OSError:
        pass
    return None


def exit_on_error(fn, *args):
    """Run `fn`; bad input becomes `error: <one line>` on stderr and exit code 2.

    With `--verbose=2` (a flag of the tool's whose FlagValues is among `args`) the traceback is printed
    above that line, for when the one line is not enough to find the cause.
    """
    try:
        return fn(*args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        _traceback_if_verbose(args)
        fail(e)
    except Exception as e:  # gymnasium's unknown-id errors and the like
        if type(e).__module__.startswith("gymnasium"):
            _traceback_if_verbose(args)
            fail(e)
        raise


def _traceback_if_verbose(args):
    for arg in args:
        if isinstance(arg, flags.FlagValues) and "verbose" in arg and (arg["verbose"].value or 0) >= 2:
            traceback.print_exc()
            return


def fail(error):
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
