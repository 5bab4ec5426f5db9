"""The artifact of each format (ONNX via tf2onnx, TF SavedModel, LiteRT) and the `policy.json` beside it,
written from the graph of `graph.policy_function` (TensorFlow backend only)."""

import json
import logging
import os
import shutil
import tempfile
import warnings

from gymnasium import spaces

from unstable_ppo.envs import family_of
from unstable_ppo.version import __version__
from unstable_ppo.checkpoint import write_atomically
from unstable_ppo.export.graph import check_exportable, policy_function, signature
from unstable_ppo.normalize import CLIP_OBS
from unstable_ppo.spaces import is_image_space, space_to_json

POLICY_FILE = "policy.json"
SIGNATURE = "serving_default"  # the SavedModel and LiteRT signature that holds the policy
ONNX_OPSET = 17  # well inside what onnxruntime 1.17, the export extra's oldest, runs (up to 20)


def policy_json_path(output, format):
    """Where the description goes: beside the file, or inside a SavedModel directory."""
    output = os.fspath(output)
    if format == "tf_saved_model":
        return os.path.join(output, POLICY_FILE)
    return os.path.join(os.path.dirname(output), POLICY_FILE)


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
        "action": "the env's actions, the action PPO.predict(obs, deterministic=True) returns",
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
    if env_id is None:
        return None
    try:
        family = family_of(env_id)
    except ValueError:  # a module:EnvId id whose module is not importable here
        return None
    return family.preprocessing(env_id)
