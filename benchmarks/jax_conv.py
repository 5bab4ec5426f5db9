"""Where XLA:CPU loses on the Nature CNN: per-layer forward and backward times in JAX, TensorFlow and torch.

Issue 16, item 4: on the CPU the JAX backend trained Breakout's Nature CNN at about half
Stable-Baselines3's speed (`atari.py`), while TensorFlow ran at 1.6-1.9x and torch at 1.3x.
This script times one 256-sample minibatch of the network (84x84x4 uint8 input scaled by
1/255; conv 32x8x8 stride 4, 64x4x4 stride 2, 64x3x3 stride 1; dense 512; policy head of 4
and value head), split by layer:

  - per conv layer: forward, the kernel gradient ("bwd K", dL/dkernel) and the input gradient
    ("bwd X", dL/dinput). conv1's input gradient is not listed: its input is the observation,
    and training never computes it. In JAX each part is its own jitted `jax.vjp` with the
    layer's real shapes; in TensorFlow a `tf.function` around a `GradientTape` with
    `output_gradients`; in torch `torch.autograd.grad` on a graph built before the clock starts.
  - dense 3136 -> 512: forward, and backward (both gradients; the input one feeds conv3).
  - "sum": the sum of the per-layer columns; "net f+b": the whole network, forward and backward
    of a PPO-shaped loss (clipped policy term, value error, entropy) w.r.t. all weights, in one
    compiled call.

Implementations (rows):

  jax/ynn          `jax.jit` with XLA's defaults. jaxlib 0.10's XLA:CPU hands convolutions and
                   dots to YNNPACK.
  jax/eigen-conv   compiler_options={"xla_cpu_experimental_ynn_fusion_type":
                   "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}: convolutions go back to XLA's Eigen
                   convolution, dots stay on YNNPACK. What `backend/jax.py` compiles a CNN's
                   update with (`CONV_COMPILER_OPTIONS`).
  jax/no-ynn       that option set to "": no YNNPACK at all (Eigen convolutions, XLA's own dots).
  jax/eigen+nchw   (--extra) as eigen-conv, with NCHW activations and OIHW kernels (torch's
                   layout).
  jax/eigen+s2d    (--extra) as eigen-conv, with the strided convolutions rewritten as stride-1
                   ones after a space-to-depth reshape (conv1: 2x2 kernel on 21x21x64; conv2:
                   2x2 on 10x10x128): the same products and sums in another order.
  tf               `tf.function` without XLA (as `backend/tensorflow.py` runs), NHWC; oneDNN.
  torch            eager, NCHW (torch's own layout; Keras's torch backend transposes to it).

Then, JAX only, through the library's own code: the Keras `ActorCritic` on Breakout's spaces,
compiled with the Atari settings, (e) one epoch of `JAXTrainer.make_update_function` (4
unrolled minibatches of 256 with Adam, what `atari.py`'s update runs 4 times per rollout), and
(f) the batch-8 acting call, each with `backend/jax.py`'s `CONV_COMPILER_OPTIONS` on and off.

Every measurement runs all its variants one after the other, `--repeats` times, and reports
the median: a change in load hits every variant alike, so compare within a column. Thread
settings are the libraries' defaults.

    python benchmarks/jax_conv.py                          # ~3 min on a loaded 2-core machine
    python benchmarks/jax_conv.py --extra --json benchmarks/results/jax_conv_DATE.json
    python benchmarks/jax_conv.py --skip tf torch model    # JAX per-layer only, ~1 min
"""

import argparse
import json
import os
import sys
import time

os.environ["KERAS_BACKEND"] = "jax"  # part (e)/(f) builds the library's Keras model on JAX
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import harness  # noqa: E402
import numpy as np  # noqa: E402

BATCH = 256
# (name, input HWC, kernel HWIO, stride)
CONVS = [("conv1", (84, 84, 4), (8, 8, 4, 32), 4), ("conv2", (20, 20, 32), (4, 4, 32, 64), 2),
         ("conv3", (9, 9, 64), (3, 3, 64, 64), 1)]
DENSE = (3136, 512)
ACTIONS = 4
COLUMNS = ["conv1 fwd", "conv1 bwd K", "conv2 fwd", "conv2 bwd K", "conv2 bwd X", "conv3 fwd", "conv3 bwd K",
           "conv3 bwd X", "dense fwd", "dense bwd"]
YNN = "xla_cpu_experimental_ynn_fusion_type"
EIGEN_CONV = {YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
NO_YNN = {YNN: ""}


def median_ms(samples):
    return float(np.median(samples)) * 1e3


def measure(calls, repeats):
    """{key: [seconds, ...]}: every call once to warm up (compile), then `repeats` rounds of all, in turn."""
    for call in calls.values():
        call()
    times = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    return times


# -- data --------------------------------------------------------------------------------------


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    data = {"obs": rng.integers(0, 256, (BATCH, 4, 84, 84), dtype=np.uint8),  # frame-stacked, channels first
            "actions": rng.integers(0, ACTIONS, BATCH).astype(np.int32),
            "old_log_prob": np.full(BATCH, -np.log(ACTIONS), np.float32),
            "advantages": rng.standard_normal(BATCH).astype(np.float32),
            "returns": rng.standard_normal(BATCH).astype(np.float32)}
    layers = []
    for name, hwc, kernel, stride in CONVS:
        out_hw = (hwc[0] - kernel[0]) // stride + 1
        layers.append({"name": name, "stride": stride,
                       "x": rng.random((BATCH, *hwc), dtype=np.float32),  # NHWC
                       "k": (rng.standard_normal(kernel) / np.sqrt(np.prod(kernel[:3]))).astype(np.float32),  # HWIO
                       "g": rng.standard_normal((BATCH, out_hw, out_hw, kernel[3])).astype(np.float32)})
    dense = {"x": rng.random((BATCH, DENSE[0]), dtype=np.float32),
             "w": (rng.standard_normal(DENSE) / np.sqrt(DENSE[0])).astype(np.float32),
             "g": rng.standard_normal((BATCH, DENSE[1])).astype(np.float32)}
    params = []  # the whole network's weights: HWIO kernels and biases, dense and heads
    for layer in layers:
        params += [layer["k"], np.zeros(layer["k"].shape[3], np.float32)]
    params += [dense["w"], np.zeros(DENSE[1], np.float32),
               (rng.standard_normal((DENSE[1], ACTIONS)) * 0.01).astype(np.float32), np.zeros(ACTIONS, np.float32),
               (rng.standard_normal((DENSE[1], 1)) / np.sqrt(DENSE[1])).astype(np.float32), np.zeros(1, np.float32)]
    return data, layers, dense, params


# -- JAX ---------------------------------------------------------------------------------------


def jax_calls(variant, options, data, layers, dense, params):
    """{column: call} for one JAX variant; `variant` names the conv formulation."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    nchw = variant.endswith("nchw")
    s2d = variant.endswith("s2d")

    def conv(x, k, stride):
        if nchw:
            return lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        if s2d and stride > 1:  # space-to-depth: the stride goes into the channels
            n, h, w, c = x.shape
            kh, kw, _, o = k.shape
            x = x.reshape(n, h // stride, stride, w // stride, stride, c).transpose(0, 1, 3, 2, 4, 5)
            x = x.reshape(n, h // stride, w // stride, stride * stride * c)
            k = k.reshape(kh // stride, stride, kw // stride, stride, c, o).transpose(0, 2, 1, 3, 4, 5)
            k = k.reshape(kh // stride, kw // stride, stride * stride * c, o)
            stride = 1
        return lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def layout(x, k=None, g=None):
        """Arrays in the variant's layout (NHWC/HWIO, or NCHW/OIHW)."""
        if not nchw:
            return x, k, g
        return (jnp.transpose(x, (0, 3, 1, 2)), None if k is None else jnp.transpose(k, (3, 2, 0, 1)),
                None if g is None else jnp.transpose(g, (0, 3, 1, 2)))

    def jit(f):
        return jax.jit(f, compiler_options=options)

    def ready(f, *args):
        return lambda: jax.block_until_ready(f(*args))

    calls = {}
    for layer in layers:
        x, k, g = layout(*(jnp.asarray(layer[key]) for key in "xkg"))
        s, name = layer["stride"], layer["name"]
        calls[f"{name} fwd"] = ready(jit(lambda x, k, s=s: conv(x, k, s)), x, k)
        calls[f"{name} bwd K"] = ready(jit(lambda x, k, g, s=s: jax.vjp(lambda k: conv(x, k, s), k)[1](g)[0]), x, k, g)
        if name != "conv1":
            calls[f"{name} bwd X"] = ready(jit(lambda x, k, g, s=s: jax.vjp(lambda x: conv(x, k, s), x)[1](g)[0]),
                                           x, k, g)
    x, w, g = (jnp.asarray(dense[key]) for key in "xwg")
    calls["dense fwd"] = ready(jit(lambda x, w: x @ w), x, w)
    calls["dense bwd"] = ready(jit(lambda x, w, g: jax.vjp(lambda x, w: x @ w, x, w)[1](g)), x, w, g)

    def loss(params, obs, actions, old_log_prob, advantages, returns):
        h = obs.astype(jnp.float32) / 255.0
        if not nchw:
            h = jnp.transpose(h, (0, 2, 3, 1))
        for i, (_, _, _, stride) in enumerate(CONVS):
            k, b = params[2 * i], params[2 * i + 1]
            if nchw:
                k, b = jnp.transpose(k, (3, 2, 0, 1)), b[:, None, None]
            h = jax.nn.relu(conv(h, k, stride) + b)
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ params[6] + params[7])
        logits, value = h @ params[8] + params[9], (h @ params[10] + params[11])[:, 0]
        return ppo_shaped_loss(jnp, jax.nn.log_softmax(logits), value, actions, old_log_prob, advantages, returns)

    net = jit(jax.value_and_grad(loss))
    args = [[jnp.asarray(p) for p in params]] + [jnp.asarray(data[key]) for key in
                                                   ("obs", "actions", "old_log_prob", "advantages", "returns")]
    calls["net f+b"] = ready(net, *args)
    return calls


def ppo_shaped_loss(xp, log_probs, value, actions, old_log_prob, advantages, returns):
    """Clipped policy term + 0.5 value error - 0.01 entropy, written once for jnp and torch."""
    take = getattr(xp, "take_along_axis", None) or xp.take_along_dim  # jnp / torch
    taken = take(log_probs, actions[:, None], axis=1)[:, 0]
    ratio = xp.exp(taken - old_log_prob)
    policy = -xp.mean(xp.minimum(ratio * advantages, xp.clip(ratio, 0.9, 1.1) * advantages))
    entropy = -xp.mean(xp.sum(xp.exp(log_probs) * log_probs, axis=1))
    return policy + 0.5 * xp.mean((value - returns) ** 2) - 0.01 * entropy


# -- TensorFlow --------------------------------------------------------------------------------


def tf_calls(data, layers, dense, params):
    import tensorflow as tf

    def conv(x, k, stride):
        return tf.nn.conv2d(x, k, stride, "VALID")

    def run(f, *args):
        return lambda: [t.numpy() for t in tf.nest.flatten(f(*args))]

    calls = {}
    for layer in layers:
        x, k, g = (tf.constant(layer[key]) for key in "xkg")
        s, name = layer["stride"], layer["name"]

        def grad(x, k, g, s=s, wrt="k"):
            with tf.GradientTape() as tape:
                tape.watch(k if wrt == "k" else x)
                y = conv(x, k, s)
            return tape.gradient(y, k if wrt == "k" else x, output_gradients=g)

        calls[f"{name} fwd"] = run(tf.function(lambda x, k, s=s: conv(x, k, s)), x, k)
        calls[f"{name} bwd K"] = run(tf.function(grad), x, k, g)
        if name != "conv1":
            calls[f"{name} bwd X"] = run(tf.function(lambda x, k, g, grad=grad: grad(x, k, g, wrt="x")), x, k, g)
    x, w, g = (tf.constant(dense[key]) for key in "xwg")

    def dense_bwd(x, w, g):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = x @ w
        return tape.gradient(y, [x, w], output_gradients=g)

    calls["dense fwd"] = run(tf.function(lambda x, w: x @ w), x, w)
    calls["dense bwd"] = run(tf.function(dense_bwd), x, w, g)
    variables = [tf.Variable(p) for p in params]

    @tf.function
    def net(obs, actions, old_log_prob, advantages, returns):
        with tf.GradientTape() as tape:
            h = tf.transpose(tf.cast(obs, tf.float32) / 255.0, (0, 2, 3, 1))
            for i, (_, _, _, stride) in enumerate(CONVS):
                h = tf.nn.relu(conv(h, variables[2 * i], stride) + variables[2 * i + 1])
            h = tf.nn.relu(tf.reshape(h, (tf.shape(h)[0], -1)) @ variables[6] + variables[7])
            log_probs = tf.nn.log_softmax(h @ variables[8] + variables[9])
            value = (h @ variables[10] + variables[11])[:, 0]
            taken = tf.gather(log_probs, actions, batch_dims=1)
            ratio = tf.exp(taken - old_log_prob)
            policy = -tf.reduce_mean(tf.minimum(ratio * advantages, tf.clip_by_value(ratio, 0.9, 1.1) * advantages))
            entropy = -tf.reduce_mean(tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=1))
            loss = policy + 0.5 * tf.reduce_mean((value - returns) ** 2) - 0.01 * entropy
        return loss, tape.gradient(loss, variables)

    calls["net f+b"] = run(net, *(tf.constant(data[key]) for key in
                                  ("obs", "actions", "old_log_prob", "advantages", "returns")))
    return calls


# -- torch -------------------------------------------------------------------------------------


def torch_calls(data, layers, dense, params):
    import torch
    import torch.nn.functional as F

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))

    def oihw(k):
        return torch.from_numpy(np.ascontiguousarray(np.transpose(k, (3, 2, 0, 1))))

    calls = {}
    for layer in layers:
        x, g, s, name = nchw(layer["x"]), nchw(layer["g"]), layer["stride"], layer["name"]
        k = oihw(layer["k"])
        k_leaf, x_leaf = k.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y_k, y_x = F.conv2d(x, k_leaf, stride=s), F.conv2d(x_leaf, k, stride=s)  # graphs built off the clock

        def forward(x=x, k=k_leaf, s=s):
            with torch.enable_grad():  # as in training: the graph is recorded
                F.conv2d(x, k, stride=s)

        calls[f"{name} fwd"] = forward
        calls[f"{name} bwd K"] = lambda y=y_k, k=k_leaf, g=g: torch.autograd.grad(y, k, g, retain_graph=True)
        if name != "conv1":
            calls[f"{name} bwd X"] = lambda y=y_x, x=x_leaf, g=g: torch.autograd.grad(y, x, g, retain_graph=True)
    x = torch.from_numpy(dense["x"]).requires_grad_(True)
    w = torch.from_numpy(dense["w"]).requires_grad_(True)
    g = torch.from_numpy(dense["g"])
    y = x @ w
    calls["dense fwd"] = lambda: x @ w
    calls["dense bwd"] = lambda: torch.autograd.grad(y, [x, w], g, retain_graph=True)
    weights = [(oihw(p) if p.ndim == 4 else torch.from_numpy(p)).requires_grad_(True) for p in params]
    obs, actions, old_log_prob, advantages, returns = (
        torch.from_numpy(data[key]) for key in ("obs", "actions", "old_log_prob", "advantages", "returns"))
    actions = actions.long()

    def net():
        h = obs.float() / 255.0  # already NCHW
        for i, (_, _, _, stride) in enumerate(CONVS):
            h = F.relu(F.conv2d(h, weights[2 * i], weights[2 * i + 1], stride=stride))
        h = F.relu(h.flatten(1) @ weights[6] + weights[7])
        log_probs = F.log_softmax(h @ weights[8] + weights[9], dim=1)
        value = (h @ weights[10] + weights[11])[:, 0]
        loss = ppo_shaped_loss(torch, log_probs, value, actions, old_log_prob, advantages, returns)
        return loss, torch.autograd.grad(loss, weights)

    calls["net f+b"] = net
    return calls


# -- the library's own update and acting -------------------------------------------------------


def model_calls():
    """(e) one epoch of the library's CNN update and (f) its batch-8 acting call, fix on and off."""
    import keras
    from gymnasium import spaces

    import unstable_ppo.backend.jax as jax_backend
    from unstable_ppo.losses import LossConfig
    from unstable_ppo.model import ActorCritic

    model = ActorCritic(spaces.Box(0, 255, (4, 84, 84), np.uint8), spaces.Discrete(ACTIONS), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=2.5e-4, epsilon=1e-5, global_clipnorm=0.5),
                  loss_config=LossConfig(clip_range=0.1, ent_coef=0.01, vf_coef=0.5))
    rng = np.random.default_rng(1)
    rows = 4 * BATCH
    batch = model.prepare_batch({
        "obs": rng.integers(0, 256, (rows, 4, 84, 84), dtype=np.uint8),
        "actions": rng.integers(0, ACTIONS, rows).astype(np.int32),
        "old_log_prob": np.full(rows, -np.log(ACTIONS), np.float32),
        "old_values": rng.standard_normal(rows).astype(np.float32),
        "advantages": rng.standard_normal(rows).astype(np.float32),
        "returns": rng.standard_normal(rows).astype(np.float32),
        "mask": np.ones(rows, np.float32)})
    indices = rng.permutation(rows).reshape(4, BATCH)
    obs = rng.integers(0, 256, (8, 4, 84, 84), dtype=np.uint8)
    noise = rng.random((8, ACTIONS), dtype=np.float32)
    fix = dict(jax_backend.CONV_COMPILER_OPTIONS)
    compiled_options = {}
    calls, compile_s = {}, {}
    for name, options in (("jax/ynn (XLA defaults)", {}), ("jax/eigen-conv (backend/jax.py)", fix)):
        jax_backend.CONV_COMPILER_OPTIONS = options
        model.reset_compiled_functions()
        compiled_options[name] = jax_backend.conv_compiler_options(model.net)
        update = model.make_update_function()
        t0 = time.perf_counter()
        update(batch, indices)
        compile_s[name] = time.perf_counter() - t0
        calls[("epoch", name)] = lambda update=update: update(batch, indices)
    jax_backend.CONV_COMPILER_OPTIONS = fix
    # Acting: backend/jax.py leaves it at XLA's defaults; the fix's options are tried here by hand.
    import jax

    trainable, non_trainable = model._state(parts=2)
    for name, options in (("jax/ynn (XLA defaults)", None), ("jax/eigen-conv (backend/jax.py)", fix)):
        act = jax.jit(lambda t, n, o, z: model._stateless_act(t, n, (o, z), False), compiler_options=options)

        def call(act=act):
            for _ in range(20):
                np.asarray(act(trainable, non_trainable, obs, noise))

        calls[("act x20", name)] = call
    return calls, compile_s, compiled_options


# -- report ------------------------------------------------------------------------------------


def machine():
    """harness.machine() with the XLA-related packages and the load when the run started."""
    info = harness.machine(("jax", "jaxlib", "tensorflow", "torch", "keras", "numpy"))
    info["loadavg_start"] = os.getloadavg()
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the per-layer measurements (default 5)")
    parser.add_argument("--model_repeats", type=int, default=3,
                        help="rounds of the library's epoch and acting measurements (default 3)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tf", "torch", "model"],
                        help="parts to leave out: tf, torch, model (the library's epoch and acting)")
    parser.add_argument("--extra", action="store_true",
                        help="also the jax/eigen+nchw and jax/eigen+s2d formulations (about a minute more)")
    parser.add_argument("--json", metavar="OUT", help="write the machine, settings and all samples to OUT")
    args = parser.parse_args()
    info = machine()
    start = time.perf_counter()
    data, layers, dense, params = make_data()

    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)  # as backend/jax.py runs
    variants = [("jax/ynn", "", None), ("jax/eigen-conv", "", EIGEN_CONV), ("jax/no-ynn", "", NO_YNN)]
    if args.extra:
        variants += [("jax/eigen+nchw", "nchw", EIGEN_CONV), ("jax/eigen+s2d", "s2d", EIGEN_CONV)]
    calls = {}
    for name, formulation, options in variants:
        calls.update({(name, column): call for column, call in
                      jax_calls(formulation, options, data, layers, dense, params).items()})
    if "tf" not in args.skip:
        calls.update({("tf", column): call for column, call in tf_calls(data, layers, dense, params).items()})
    if "torch" not in args.skip:
        calls.update({("torch", column): call for column, call in torch_calls(data, layers, dense, params).items()})
    rows = list(dict.fromkeys(row for row, _ in calls))
    print(f"compiling and warming up {len(calls)} calls ...", file=sys.stderr, flush=True)
    layer_times = measure(calls, args.repeats)
    info["layers_s"] = time.perf_counter() - start
    table = {row: {column: median_ms(layer_times[(row, column)]) for column in COLUMNS + ["net f+b"]
                   if (row, column) in layer_times} for row in rows}
    for row in rows:
        table[row]["sum"] = sum(v for k, v in table[row].items() if k != "net f+b")

    model = None
    if "model" not in args.skip:
        print("library model: compiling two CNN epochs ...", file=sys.stderr, flush=True)
        mcalls, compile_s, compiled_options = model_calls()
        mtimes = measure(mcalls, args.model_repeats)
        model = {"first_call_s": compile_s, "compiler_options": compiled_options,
                 "epoch_s": {name: float(np.median(mtimes[("epoch", name)])) for _, name in mcalls if _ == "epoch"},
                 "act_ms": {name: median_ms(mtimes[("act x20", name)]) / 20 for _, name in mcalls if _ == "act x20"},
                 "samples_s": {f"{part} | {name}": mtimes[(part, name)] for part, name in mcalls}}
    info["loadavg_end"] = os.getloadavg()
    info["model_s"] = time.perf_counter() - start - info["layers_s"]
    info["wall_s"] = time.perf_counter() - start

    head = ["implementation"] + COLUMNS + ["sum", "net f+b"]
    print(f"\n## Nature CNN, one {BATCH}-sample minibatch: median ms over {args.repeats} interleaved rounds\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [f"{table[row][c]:.1f}" if c in table[row] else "-" for c in head[1:]]
        print(f"| {row} | " + " | ".join(cells) + " |")
    if model:
        print(f"\n## The library's CNN update (one epoch: 4 x {BATCH} with Adam) and acting call (batch 8), "
              f"median of {args.model_repeats}\n")
        print("| compile options | epoch s | first call s (compile + run) | act ms |")
        print("|---|---|---|---|")
        for name in model["epoch_s"]:
            print(f"| {name} | {model['epoch_s'][name]:.2f} | {model['first_call_s'][name]:.1f} "
                  f"| {model['act_ms'][name]:.2f} |")
    print(f"\n{info['date']} · {info['nproc']} CPUs ({info['cpu']}) · load average "
          f"{info['loadavg_start'][0]:.1f} -> {info['loadavg_end'][0]:.1f} · "
          + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
          + f" · {info['wall_s']:.0f} s ({info['layers_s']:.0f} s per-layer part)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "batch": BATCH, "columns": COLUMNS + ["sum", "net f+b"],
                       "median_ms": table,
                       "samples_s": {f"{row} | {column}": v for (row, column), v in layer_times.items()},
                       "model": model}, f, indent=2)


if __name__ == "__main__":
    main()
