"""Export a trained policy to run without Python RL code: ONNX, TF SavedModel or LiteRT.

    python -m unstable_ppo.export --model_dir=DIR [--best] --format=onnx|tf_saved_model|litert \\
        --output=PATH [--overwrite]

In Python: `PPO.export(path, format="onnx")`. The exported function is the whole deterministic
policy, what `PPO.predict(obs, deterministic=True)` returns: raw env observations in (the frozen
observation normalizer, pixel scaling and one-hot encoding are in the graph), env actions out
(argmax per head, thresholded bits, or the Gaussian mean clipped to the Box bounds; `start`
offsets added). A recurrent policy is `(obs, state, episode_start) -> (action, next_state)`, its
state zeroed where `episode_start` is 1. The batch axis is dynamic. A `policy.json` beside the
artifact (inside it for a SavedModel directory) names the inputs and outputs, their shapes and
dtypes, and the spaces in `unstable_ppo.spaces`'s JSON form, for callers in any language.

The three formats are built from one TensorFlow graph, so the export always runs on the
TensorFlow backend: in this process when Keras runs on TensorFlow, else in a child process
(`KERAS_BACKEND=tensorflow`) that loads the model saved to a temporary directory. A saved
model is backend-neutral, so a model trained on JAX or PyTorch exports the same way.
"""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from absl import flags
from gymnasium import spaces

from unstable_ppo import __version__, atari
from unstable_ppo.acting import obs_dtype
from unstable_ppo.checkpoint import resolve_checkpoint, write_atomically
from unstable_ppo.cli import UsageError, run_app, select_backend
from unstable_ppo.normalize import CLIP_OBS
from unstable_ppo.spaces import is_image_space, is_structured, space_to_json

FORMATS = ("onnx", "tf_saved_model", "litert")
# What each format needs beyond the core dependencies (TensorFlow is one of them).
DEPENDENCIES = {"onnx": ("onnx", "tf2onnx"), "tf_saved_model": (), "litert": ()}
INSTALL_HINT = 'pip install -e ".[export]"'
POLICY_FILE = "policy.json"
SIGNATURE = "serving_default"  # the SavedModel and LiteRT signature that holds the policy
ONNX_OPSET = 17  # well inside what onnxruntime 1.17, the export extra's oldest, runs (up to 20)


class MissingDependencyError(ImportError, ValueError):
    """An exporter's package is not installed (a ValueError too: the CLI reports it in one line)."""


def check_format(format):
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")


def require(format):
    """Raise `MissingDependencyError` if a package `format` needs is missing, before any work is done."""
    for name in DEPENDENCIES[format]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent package
            found = False
        if not found:
            raise MissingDependencyError(f"format {format} needs the {name} package, which is not installed: "
                                         f"{INSTALL_HINT}")


def policy_json_path(output, format):
    """Where the description goes: beside the file, or inside a SavedModel directory."""
    output = os.fspath(output)
    if format == "tf_saved_model":
        return os.path.join(output, POLICY_FILE)
    return os.path.join(os.path.dirname(output), POLICY_FILE)


def check_request(output, format, overwrite):
    """The checks that need no Keras: the format, its packages, and an existing output."""
    check_format(format)
    if not output:
        raise ValueError("an output path is required")
    output = os.fspath(output)
    if not overwrite:
        if os.path.lexists(output):
            raise ValueError(f"{output} already exists: pass --overwrite (overwrite=True) to replace it")
        if os.path.lexists(policy_json_path(output, format)):
            raise ValueError(f"{policy_json_path(output, format)} already exists (one export per directory: "
                             f"its policy.json describes it): pass --overwrite (overwrite=True) to replace it")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):  # missing directories are made when the artifact is written
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write {output}: {parent} is not a directory")
    require(format)


def export(ppo, path, format="onnx", overwrite=False):
    """`PPO.export`: write the deterministic policy of `ppo` to `path`, and `policy.json`; returns `path`."""
    check_request(path, format, overwrite)
    check_exportable(ppo)
    import keras  # late: Keras starts after the request is checked

    if keras.backend.backend() == "tensorflow":
        write(ppo, path, format)
        return path
    with tempfile.TemporaryDirectory(prefix="unstable_ppo_export_") as tmp:
        ppo.save(os.path.join(tmp, "model"))
        export_in_subprocess(os.path.join(tmp, "model"), path, format, overwrite=True)
    return path


def check_exportable(ppo):
    if is_structured(ppo.observation_space):
        raise ValueError(f"export takes one observation array; this model's {type(ppo.observation_space).__name__} "
                         "observations are not supported yet")


def export_in_subprocess(model_dir, output, format, best=False, overwrite=False):
    """`python -m unstable_ppo.export` on TensorFlow, importing this very copy of unstable_ppo."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "unstable_ppo.export", f"--model_dir={model_dir}", f"--format={format}",
            f"--output={os.path.abspath(os.fspath(output))}"]
    argv += ["--best"] if best else []
    argv += ["--overwrite"] if overwrite else []
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        message = errors[-1][len("error: "):] if errors else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"the TensorFlow export process failed: {message}")


# -- the policy as a TensorFlow graph (TensorFlow backend only) ---------------------------------


def signature(ppo):
    """`[(name, shape, dtype)]` of the policy's inputs and outputs, batch axis `None` first."""
    model = ppo.model
    inputs = [("obs", (None, *ppo.observation_space.shape), str(obs_dtype(model)))]
    space = ppo.action_space
    dtype = "int64" if isinstance(space, spaces.Discrete) else str(space.dtype)  # as `acting.env_actions`
    outputs = [("action", (None, *space.shape), dtype)]
    if model.recurrent:
        inputs += [("state", (None, model.state_size), "float32"), ("episode_start", (None,), "float32")]
        outputs += [("next_state", (None, model.state_size), "float32")]
    return inputs, outputs


def policy_function(ppo):
    """`(fn, input_signature)`: the deterministic policy of `ppo` in TensorFlow ops, weights as variables.

    Each step is the one `acting.predict` takes, in the same order: `Normalizer.obs` (frozen
    statistics as constants), the network (its encoder scales pixels and one-hot encodes Discrete
    observations), the distribution's mode, then `acting.env_actions`.
    """
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    model, space = ppo.model, ppo.action_space
    rms = ppo.normalizer.obs_rms if ppo.normalizer is not None else None
    inputs, _ = signature(ppo)
    input_signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in inputs]

    def observations(obs):
        if rms is None:
            return obs
        # float32 here, float64 in numpy: equal to rounding (the tests allow 1e-5 on continuous actions).
        normalized = (tf.cast(obs, tf.float32) - rms.mean.astype(np.float32)) / rms.std.astype(np.float32)
        return tf.clip_by_value(normalized, -CLIP_OBS, CLIP_OBS)

    def action(params):
        return env_actions(space, mode(model.distribution(params)))

    if model.recurrent:
        def policy(obs, state, episode_start):
            params, _, next_state = model((observations(obs), state, episode_start))
            return {"action": action(params), "next_state": next_state}
    else:
        def policy(obs):
            params, _ = model(observations(obs))
            return {"action": action(params)}

    return policy, input_signature


def mode(dist):
    """`dist.mode()`, but with an argmax ONNX can express.

    Keras's TensorFlow argmax finds -0.0 by bit-casting (`Bitcast`, `BitwiseAnd`: no ONNX op);
    this finds it as `1/x == -inf` and ranks it below +0.0 as Keras does, so ties break alike.
    """
    from unstable_ppo.distributions import Categorical, MultiCategorical  # late: imports Keras

    if isinstance(dist, Categorical):
        return argmax(dist.logits)
    if isinstance(dist, MultiCategorical):
        import tensorflow as tf  # late: TensorFlow loads only to build an artifact

        return tf.stack([argmax(part.logits) for part in dist.parts], axis=-1)
    return dist.mode()


def argmax(x):
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    negative_zero = tf.logical_and(tf.equal(x, 0.0), tf.less(tf.math.reciprocal(x), 0.0))
    x = tf.where(negative_zero, -np.finfo(np.float32).tiny, x)
    return tf.argmax(x, axis=-1, output_type=tf.int32)


def env_actions(space, actions):
    """`acting.env_actions(space, acting.buffer_actions(...))` for the network's mode, in TensorFlow ops."""
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    if isinstance(space, spaces.Discrete):
        return tf.cast(actions, tf.int64) + int(space.start)
    actions = tf.reshape(actions, (-1, *space.shape))
    if isinstance(space, spaces.Box):  # numpy's clip of the float32 mean by the space's bounds, then its dtype
        actions = tf.cast(actions, space.dtype)
        return tf.minimum(tf.maximum(actions, space.low), space.high)
    actions = tf.cast(actions, space.dtype)
    if isinstance(space, spaces.MultiDiscrete):
        actions += np.asarray(space.start, space.dtype)
    return actions


def write(ppo, output, format):
    """Write the artifact and its `policy.json` (TensorFlow backend), each replacing what was there."""
    check_exportable(ppo)
    import keras  # late: Keras starts after the request is checked

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"the export builds a TensorFlow graph: Keras runs on {keras.backend.backend()}")
    output = os.path.abspath(os.fspath(output))
    os.makedirs(os.path.dirname(output), exist_ok=True)
    fn, input_signature = policy_function(ppo)
    tmp = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.tmp-{os.getpid()}")
    try:
        if format == "onnx":
            write_onnx(fn, input_signature, tmp)
        elif format == "tf_saved_model":
            write_saved_model(ppo.model, fn, input_signature, tmp)
        else:
            write_litert(ppo.model, fn, input_signature, tmp)
        _remove(output)
        os.replace(tmp, output)
    finally:
        _remove(tmp)
    description = json.dumps(describe(ppo, output, format), indent=2)

    def write_description(tmp):
        with open(tmp, "w") as f:
            f.write(description)

    write_atomically(policy_json_path(output, format), write_description)
    return output


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_saved_model(model, fn, input_signature, path):
    """A SavedModel of the policy signature alone, holding the network's variables once.

    Keras's `ExportArchive` would store each variable twice (its Keras wrapper and the
    `tf.Variable` inside), doubling the artifact; a bare `tf.Module` holds the `tf.Variable`s.
    """
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    module = tf.Module()
    module.network_variables = [variable.value for variable in model.variables]
    module.policy = tf.function(fn, input_signature=input_signature, autograph=False)
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.policy.get_concrete_function()})


def write_onnx(fn, input_signature, path):
    """tf2onnx from the traced function; the batch axis is named `batch` in the graph's inputs and outputs."""

    import onnx  # late: the export extra is optional
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact
    import tf2onnx  # late: the export extra is optional

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    _numpy2_compatible_tf2onnx()
    traced = tf.function(fn, input_signature=input_signature, autograph=False)
    model_proto, _ = tf2onnx.convert.from_function(traced, input_signature=input_signature, opset=ONNX_OPSET)
    for value in (*model_proto.graph.input, *model_proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    model_proto.producer_name = "unstable_ppo"
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, path)


def _numpy2_compatible_tf2onnx():
    """tf2onnx 1.17 still calls numpy APIs that numpy 2 removed; Keras's own ONNX export patches them."""

    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx  # late: Keras's private helper, only for ONNX
    except ImportError:  # another Keras: its tf2onnx is taken as it is
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # np.object
        patch_tf2onnx()


def write_litert(model, fn, input_signature, path):
    """A `.tflite` flatbuffer of TFLite built-in ops only (no Flex delegate needed), from a SavedModel."""
    import tensorflow as tf  # late: TensorFlow loads only to build an artifact

    with tempfile.TemporaryDirectory(prefix="unstable_ppo_litert_") as saved_model:
        write_saved_model(model, fn, input_signature, saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)


def describe(ppo, output, format):
    """The `policy.json` of an export: how to call the artifact without this package."""
    inputs, outputs = signature(ppo)
    model = ppo.model
    notes = {
        "obs": "a batch of raw env observations: normalization, pixel scaling and one-hot encoding are in the graph",
        "state": "the LSTM state: zeros to start, then next_state of the previous call",
        "episode_start": "1.0 where an episode begins (the state is zeroed there), else 0.0",
        "action": "the env's actions, as PPO.predict(obs, deterministic=True) returns them",
        "next_state": "the LSTM state to pass with the next observation",
    }

    def entries(specs):
        return [{"name": name, "shape": list(shape), "dtype": dtype, "description": notes[name]}
                for name, shape, dtype in specs]

    description = {
        "format": format,
        "artifact": os.path.basename(output) if format != "tf_saved_model" else ".",
        "signature": None if format == "onnx" else SIGNATURE,
        "inputs": entries(inputs),
        "outputs": entries(outputs),
        "observation_space": space_to_json(ppo.observation_space),
        "action_space": space_to_json(ppo.action_space),
        "recurrent": bool(model.recurrent),
        "state_size": int(model.state_size),
        "deterministic": True,
        "in_graph": {
            "normalize_obs": {"clip": CLIP_OBS} if ppo.normalizer is not None and ppo.normalizer.obs_rms else None,
            "pixels": "x / 255, channels last" if is_image_space(ppo.observation_space) else None,
            "one_hot": int(ppo.observation_space.n) if isinstance(ppo.observation_space, spaces.Discrete) else None,
        },
        "env_id": ppo.env_id,
        "env_kwargs": ppo.hp.env_kwargs or {},
        "env_preprocessing": env_preprocessing(ppo.env_id, ppo.hp.time_feature),
        "num_timesteps": ppo.num_timesteps,
        "unstable_ppo_version": __version__,
    }
    if format == "onnx":
        description["onnx_opset"] = ONNX_OPSET
    return description


def env_preprocessing(env_id, time_feature=False):
    """What the env must do before the policy sees an observation: the Atari evaluation pipeline, the time
    feature, or nothing."""
    if time_feature:
        return {"pipeline": "gymnasium TimeAwareObservation(flatten=True, normalize_time=True): the observation "
                            "followed by t / max_episode_steps"}
    if env_id is None or not atari.is_atari(env_id):
        return None
    return {
        "pipeline": "atari (evaluation): gymnasium AtariPreprocessing + FIRE at reset + FrameStackObservation",
        "noop_max": atari.NOOP_MAX, "frame_skip": atari.FRAME_SKIP, "screen_size": atari.SCREEN_SIZE,
        "grayscale": True, "fire_reset": True, "frame_stack": atari.FRAME_STACK,
        "terminal_on_life_loss": False, "reward_clipping": False,
    }


# -- the command line -----------------------------------------------------------------------


def define_flags():
    """Only for the command line: `PPO.export` imports this module, maybe beside play's or run's flags."""
    flags.DEFINE_string("model_dir", None, "A run's model directory, or a directory written by PPO.save.")
    flags.DEFINE_bool("best", False, "Export the run's best checkpoint instead of its latest.")
    flags.DEFINE_string("format", "onnx", f"One of {', '.join(FORMATS)}.")
    flags.DEFINE_string("output", None, "The artifact: a .onnx or .tflite file, or a SavedModel directory.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output (and the policy.json beside it).")


def main(argv_flags):
    if not argv_flags.model_dir:
        raise UsageError("--model_dir is required")
    if not argv_flags.output:
        raise UsageError("--output is required")
    check_request(argv_flags.output, argv_flags.format, argv_flags.overwrite)
    model_dir = resolve_checkpoint(argv_flags.model_dir, best=argv_flags.best)
    select_backend("tensorflow")  # the graph is TensorFlow's, whichever backend trained the model
    import keras  # late: Keras starts after the request is checked

    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"the export runs on TensorFlow, but Keras is already running on {keras.backend.backend()}")
    from unstable_ppo.ppo import PPO  # late: imports Keras

    ppo = PPO.load(model_dir)
    write(ppo, argv_flags.output, argv_flags.format)
    print(f"wrote {argv_flags.output} and {policy_json_path(argv_flags.output, argv_flags.format)}")


def entry_point():
    define_flags()
    run_app(main)


if __name__ == "__main__":
    entry_point()
