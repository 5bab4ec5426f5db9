"""Action distributions against independent numpy/scipy computations.

Every expected value here is computed in float64 numpy/scipy from the raw
parameters (softmax via logsumexp, explicit sums over all joint outcomes,
scipy.stats, the full-covariance Gaussian KL formula, numerical integration),
never with the package's own helpers. Checks are grouped into few test
functions because the per-test session reset in conftest costs ~0.3 s each.
"""

import itertools

import keras
import numpy as np
import pytest
from gymnasium import spaces
from keras import ops
from scipy import integrate, special, stats

from unstable_ppo.distributions import (
    Bernoulli,
    Categorical,
    DiagGaussian,
    MultiCategorical,
    make_distribution,
    param_size,
)
from unstable_ppo.spaces import UnsupportedSpaceError

pytestmark = pytest.mark.quick  # python -m tests --quick

RTOL = 1e-5
ATOL = 1e-5
BATCH_SIZES = [1, 7, 64]
M = 20000  # draws for the sampling-frequency checks
NVEC = [3, 2, 4]


def t(x, dtype="float32"):
    return ops.convert_to_tensor(np.asarray(x, dtype=dtype))


def n(x):
    return ops.convert_to_numpy(x)


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(n(actual), expected, rtol=rtol, atol=atol)


def softmax_np(logits):
    logits = np.asarray(logits, np.float64)
    return np.exp(logits - special.logsumexp(logits, axis=-1, keepdims=True))


def sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def five_sigma(p, m):
    """A frequency over m draws stays within this of p except with prob ~6e-7."""
    return 5.0 * np.sqrt(p * (1.0 - p) / m) + 1.0 / m


def uniform_noise(rng, shape):
    return rng.uniform(1e-6, 1.0 - 1e-6, shape).astype(np.float32)


def assert_frequencies(samples, probs, m):
    counts = np.bincount(np.asarray(samples).astype(np.int64), minlength=len(probs))
    assert len(counts) == len(probs), "sampled an action outside the space"
    np.testing.assert_array_less(np.abs(counts / m - probs), five_sigma(probs, m))


# --------------------------------------------------------------------------- Categorical


def test_categorical_log_prob_entropy_kl():
    k = 5
    for batch in BATCH_SIZES:
        rng = np.random.default_rng(100 + batch)
        logits_p = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
        logits_q = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
        actions = rng.integers(0, k, batch)
        p, q = Categorical(t(logits_p)), Categorical(t(logits_q))

        lp64 = logits_p.astype(np.float64)
        expected_logp = lp64[np.arange(batch), actions] - special.logsumexp(lp64, axis=-1)
        close(p.log_prob(t(actions, "int32")), expected_logp)
        # the actor-critic hands actions back as float32 rows
        close(p.log_prob(t(actions, "float32")), expected_logp)

        probs_p, probs_q = softmax_np(logits_p), softmax_np(logits_q)
        close(p.entropy(), np.array([stats.entropy(row) for row in probs_p]))
        close(p.kl(q), np.array([stats.entropy(a, b) for a, b in zip(probs_p, probs_q)]))
        close(q.kl(p), np.array([stats.entropy(b, a) for a, b in zip(probs_p, probs_q)]))
        close(p.kl(p), np.zeros(batch))

    # exp(log_prob) summed over every action is 1 in every row
    logits = np.random.default_rng(1).normal(0.0, 3.0, (7, k)).astype(np.float32)
    dist = Categorical(t(logits))
    total = sum(np.exp(n(dist.log_prob(t(np.full(7, a), "int32")))) for a in range(k))
    np.testing.assert_allclose(total, np.ones(7), rtol=RTOL, atol=ATOL)


def test_categorical_sample_and_mode():
    rng = np.random.default_rng(2)
    # Gumbel-max frequencies from many uniform draws match the softmax
    row = np.array([1.0, -0.5, 0.3, 2.0, -2.0], np.float32)
    samples = n(Categorical(t(np.tile(row, (M, 1)))).sample(t(uniform_noise(rng, (M, 5)))))
    assert samples.shape == (M,)
    assert_frequencies(samples, softmax_np(row), M)

    # each sample is argmax(logits + Gumbel(u)) of its own noise row
    logits = rng.normal(0.0, 1.0, (M, 5)).astype(np.float32)
    uniform = uniform_noise(rng, (M, 5))
    scores = logits - np.log(-np.log(uniform.astype(np.float64)))
    top2 = np.sort(scores, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4  # skip float32 near-ties
    assert clear.mean() > 0.99
    expected = np.argmax(scores, axis=-1)
    got = n(Categorical(t(logits)).sample(t(uniform)))
    np.testing.assert_array_equal(got[clear], expected[clear])

    # mode: the most likely action
    logits = rng.normal(0.0, 1.0, (7, 5)).astype(np.float32)
    np.testing.assert_array_equal(n(Categorical(t(logits)).mode()), np.argmax(logits, axis=-1))


# --------------------------------------------------------------------------- MultiCategorical


def _split(x, nvec):
    return np.split(np.asarray(x, np.float64), np.cumsum(nvec)[:-1], axis=-1)


def _joint_probs(logits, nvec):
    """[batch, prod(nvec)] probabilities of every joint outcome, and the outcomes."""
    parts = [softmax_np(p) for p in _split(logits, nvec)]
    outcomes = list(itertools.product(*[range(k) for k in nvec]))
    probs = np.stack(
        [np.prod([parts[i][:, a] for i, a in enumerate(o)], axis=0) for o in outcomes], axis=-1
    )
    return probs, outcomes


def test_multicategorical_against_joint_enumeration():
    width = sum(NVEC)
    for batch in BATCH_SIZES[1:]:  # (each new shape costs ~1 s of XLA compiles on jax)
        rng = np.random.default_rng(200 + batch)
        logits_p = rng.normal(0.0, 1.5, (batch, width)).astype(np.float32)
        logits_q = rng.normal(0.0, 1.5, (batch, width)).astype(np.float32)
        p = MultiCategorical(t(logits_p), NVEC)
        q = MultiCategorical(t(logits_q), NVEC)

        joint_p, outcomes = _joint_probs(logits_p, NVEC)
        joint_q, _ = _joint_probs(logits_q, NVEC)
        np.testing.assert_allclose(joint_p.sum(-1), 1.0)

        # log_prob of a joint action = log of its enumerated joint probability
        idx = rng.integers(0, len(outcomes), batch)
        actions = np.array([outcomes[i] for i in idx], np.int32)
        close(p.log_prob(t(actions, "int32")), np.log(joint_p[np.arange(batch), idx]))
        # entropy = -sum over joint outcomes of p log p
        close(p.entropy(), -np.sum(joint_p * np.log(joint_p), axis=-1))
        # KL = sum over joint outcomes of p log(p / q)
        close(p.kl(q), np.sum(joint_p * (np.log(joint_p) - np.log(joint_q)), axis=-1))


def test_multicategorical_sample_and_mode():
    rng = np.random.default_rng(4)
    row = np.array([0.2, 1.0, -1.0, 0.7, -0.3, 1.2, 0.0, -2.0, 0.5], np.float32)
    noise = uniform_noise(rng, (M, sum(NVEC)))
    samples = n(MultiCategorical(t(np.tile(row, (M, 1))), NVEC).sample(t(noise)))
    assert samples.shape == (M, len(NVEC))
    for i, logits_i in enumerate(_split(row, NVEC)):
        assert_frequencies(samples[:, i], softmax_np(logits_i), M)

    # Each component reads its own slice of the noise: with equal logits, noise
    # near 1 in one slot of a slice forces that action (Gumbel ~ +13.8 vs ~ -2.6).
    # (M rows, every joint action in turn, so jax reuses the shapes compiled above.)
    chosen = np.array(list(itertools.product(*[range(k) for k in NVEC])))
    chosen = chosen[np.arange(M) % len(chosen)]
    uniform = np.full((M, sum(NVEC)), 1e-6, np.float32)
    offsets = np.concatenate([[0], np.cumsum(NVEC)[:-1]])
    for i, off in enumerate(offsets):
        uniform[np.arange(M), off + chosen[:, i]] = 1.0 - 1e-6
    logits = np.zeros((M, sum(NVEC)), np.float32)
    np.testing.assert_array_equal(n(MultiCategorical(t(logits), NVEC).sample(t(uniform))), chosen)

    logits = np.array([[0.0, 2.0, 1.0, 5.0, -5.0, 0.0, 0.1, 0.3, 0.2]] * 7, np.float32)
    logits[1:] = rng.normal(size=(6, sum(NVEC)))
    expected = np.stack([np.argmax(part, axis=-1) for part in _split(logits, NVEC)], axis=-1)
    assert expected[0].tolist() == [1, 0, 2]
    np.testing.assert_array_equal(n(MultiCategorical(t(logits), NVEC).mode()), expected)


# --------------------------------------------------------------------------- Bernoulli


def test_bernoulli_against_outcome_enumeration():
    k = 5
    outcomes = np.array(list(itertools.product([0, 1], repeat=k)), np.float64)  # [32, k]

    def joint(logits):
        s = sigmoid_np(logits)[:, None, :]  # [batch, 1, k]
        return np.prod(np.where(outcomes[None] == 1, s, 1.0 - s), axis=-1)  # [batch, 32]

    for batch in BATCH_SIZES:
        rng = np.random.default_rng(300 + batch)
        logits_p = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
        logits_q = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
        p, q = Bernoulli(t(logits_p)), Bernoulli(t(logits_q))
        joint_p, joint_q = joint(logits_p), joint(logits_q)
        np.testing.assert_allclose(joint_p.sum(-1), 1.0)

        idx = rng.integers(0, len(outcomes), batch)
        actions = outcomes[idx]
        close(p.log_prob(t(actions, "int32")), np.log(joint_p[np.arange(batch), idx]))
        close(p.entropy(), -np.sum(joint_p * np.log(joint_p), axis=-1))
        close(p.kl(q), np.sum(joint_p * np.log(joint_p / joint_q), axis=-1))

    # per coin, with scipy.stats.bernoulli; float actions as the actor-critic sends them
    rng = np.random.default_rng(6)
    logits = rng.normal(0.0, 3.0, (7, k)).astype(np.float32)
    actions = rng.integers(0, 2, (7, k))
    s = sigmoid_np(logits)
    dist = Bernoulli(t(logits))
    close(dist.log_prob(t(actions, "float32")), stats.bernoulli.logpmf(actions, s).sum(-1))
    close(dist.entropy(), stats.bernoulli.entropy(s).sum(-1))


def test_bernoulli_sample_and_mode():
    rng = np.random.default_rng(7)
    row = np.array([-2.0, -0.3, 0.0, 1.0, 3.0], np.float32)
    uniform = uniform_noise(rng, (M, 5))
    samples = n(Bernoulli(t(np.tile(row, (M, 1)))).sample(t(uniform)))
    assert samples.shape == (M, 5)
    assert set(np.unique(samples)) <= {0, 1}
    probs = sigmoid_np(row)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - probs), five_sigma(probs, M))
    # the rule itself: 1 exactly when u < P(1) (no draw sits on the boundary)
    assert np.min(np.abs(uniform - probs)) > 1e-6
    np.testing.assert_array_equal(samples, (uniform < probs).astype(np.int32))

    logits = np.array([[-1.0, 0.5, 2.0, -0.1, 0.01]], np.float32)
    np.testing.assert_array_equal(n(Bernoulli(t(logits)).mode()), [[0, 1, 1, 0, 1]])


# --------------------------------------------------------------------------- DiagGaussian


def _gauss_flat(rng, batch, d):
    mean = rng.normal(0.0, 1.0, (batch, d))
    log_std = rng.uniform(-1.0, 0.7, (batch, d))
    return np.concatenate([mean, log_std], -1).astype(np.float32)


def test_diag_gaussian_log_prob_entropy_kl():
    d = 3
    for batch in BATCH_SIZES:
        rng = np.random.default_rng(400 + batch)
        flat_p, flat_q = _gauss_flat(rng, batch, d), _gauss_flat(rng, batch, d)
        mean_p, log_std_p = flat_p[:, :d].astype(np.float64), flat_p[:, d:].astype(np.float64)
        mean_q, log_std_q = flat_q[:, :d].astype(np.float64), flat_q[:, d:].astype(np.float64)
        std_p, std_q = np.exp(log_std_p), np.exp(log_std_q)
        actions = (mean_p + std_p * rng.normal(0.0, 1.5, (batch, d))).astype(np.float32)
        p, q = DiagGaussian(t(flat_p)), DiagGaussian(t(flat_q))

        got_logp = n(p.log_prob(t(actions)))
        a64 = actions.astype(np.float64)
        np.testing.assert_allclose(
            got_logp, stats.norm.logpdf(a64, loc=mean_p, scale=std_p).sum(-1), rtol=RTOL, atol=ATOL
        )
        for i in range(min(batch, 3)):  # the multivariate normal with diagonal covariance
            mvn = stats.multivariate_normal(mean_p[i], np.diag(std_p[i] ** 2))
            assert abs(got_logp[i] - mvn.logpdf(a64[i])) < 1e-4

        close(p.entropy(), stats.norm.entropy(scale=std_p).sum(-1))

        # KL between multivariate normals, full-matrix formula:
        # 0.5 * (tr(S2^-1 S1) + (m2-m1)^T S2^-1 (m2-m1) - d + ln det S2 - ln det S1)
        expected_kl = []
        for i in range(batch):
            s1, s2 = np.diag(std_p[i] ** 2), np.diag(std_q[i] ** 2)
            s2_inv = np.linalg.inv(s2)
            dm = mean_q[i] - mean_p[i]
            expected_kl.append(
                0.5
                * (
                    np.trace(s2_inv @ s1)
                    + dm @ s2_inv @ dm
                    - d
                    + np.linalg.slogdet(s2)[1]
                    - np.linalg.slogdet(s1)[1]
                )
            )
        close(p.kl(q), np.array(expected_kl))
        close(p.kl(p), np.zeros(batch))

    # KL by numerical integration of p (log p - log q), dimension by dimension
    rng = np.random.default_rng(9)
    flat_p, flat_q = _gauss_flat(rng, 7, d), _gauss_flat(rng, 7, d)
    got = n(DiagGaussian(t(flat_p)).kl(DiagGaussian(t(flat_q))))
    fp, fq = flat_p.astype(np.float64), flat_q.astype(np.float64)
    for i in range(7):
        total = 0.0
        for j in range(d):
            p1 = stats.norm(fp[i, j], np.exp(fp[i, d + j]))
            q1 = stats.norm(fq[i, j], np.exp(fq[i, d + j]))
            total += integrate.quad(lambda x: p1.pdf(x) * (p1.logpdf(x) - q1.logpdf(x)), -30, 30)[0]
        assert abs(got[i] - total) < 1e-5


def test_diag_gaussian_sample_and_mode():
    rng = np.random.default_rng(10)
    flat = _gauss_flat(rng, 7, 3)
    noise = rng.normal(size=(7, 3)).astype(np.float32)
    expected = flat[:, :3].astype(np.float64) + np.exp(flat[:, 3:].astype(np.float64)) * noise
    got = n(DiagGaussian(t(flat)).sample(t(noise)))
    assert got.shape == (7, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(n(DiagGaussian(t(flat)).mode()), flat[:, :3])


# --------------------------------------------------------------------------- seeded sampling


def test_seeded_samples_are_valid_actions():
    rng = np.random.default_rng(5)
    seed = lambda: keras.random.SeedGenerator(0)  # noqa: E731

    # Categorical: valid indices, distributed as the softmax
    row = np.array([0.5, -1.0, 1.5, 0.0, 0.2], np.float32)
    s = n(Categorical(t(np.tile(row, (M, 1)))).sample(seed=seed()))
    assert s.shape == (M,) and np.issubdtype(s.dtype, np.integer)
    assert_frequencies(s, softmax_np(row), M)

    # MultiCategorical: one valid index per component
    logits = rng.normal(size=(M, sum(NVEC))).astype(np.float32)
    s = n(MultiCategorical(t(logits), NVEC).sample(seed=seed()))
    assert s.shape == (M, len(NVEC)) and np.issubdtype(s.dtype, np.integer)
    assert (s >= 0).all() and (s < np.array(NVEC)).all()
    assert all(len(np.unique(s[:, i])) == k for i, k in enumerate(NVEC))

    # Bernoulli: 0/1 of the right shape
    s = n(Bernoulli(t(rng.normal(size=(M, 5)).astype(np.float32))).sample(seed=seed()))
    assert s.shape == (M, 5)
    assert set(np.unique(s)) == {0, 1}

    # DiagGaussian: finite, with the right first two moments
    row = np.array([1.0, -2.0, np.log(0.5), np.log(2.0)], np.float32)
    s = n(DiagGaussian(t(np.tile(row, (M, 1)))).sample(seed=seed()))
    assert s.shape == (M, 2) and np.isfinite(s).all()
    std = np.array([0.5, 2.0])
    np.testing.assert_array_less(np.abs(s.mean(0) - [1.0, -2.0]), 5 * std / np.sqrt(M))
    np.testing.assert_allclose(s.std(0), std, rtol=0.05)  # SE of the std is ~0.5%


# --------------------------------------------------------------------------- factory


def test_param_size_and_make_distribution():
    cases = [
        (spaces.Discrete(5), 5, 5, Categorical),
        (spaces.MultiDiscrete([3, 2, 4]), 9, 9, MultiCategorical),
        (spaces.MultiBinary(6), 6, 6, Bernoulli),
        (spaces.Box(-1.0, 1.0, (3,)), 3, 6, DiagGaussian),  # head: mean and log_std
    ]
    for space, width, head, cls in cases:
        assert param_size(space) == width
        assert isinstance(make_distribution(space, t(np.zeros((7, head)))), cls)

    # the MultiDiscrete distribution splits its logits by the space's nvec
    logits = np.random.default_rng(11).normal(size=(7, 9)).astype(np.float32)
    dist = make_distribution(spaces.MultiDiscrete([3, 2, 4]), t(logits))
    joint, _ = _joint_probs(logits, NVEC)
    close(dist.entropy(), -np.sum(joint * np.log(joint), axis=-1))


@pytest.mark.parametrize(
    "space, name",
    [
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), "Tuple"),
        (spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(-1, 1, (2,))}), "Dict"),
        (spaces.Text(8), "Text"),
    ],
)
def test_unsupported_space_raises_naming_the_space(space, name):
    assert issubclass(UnsupportedSpaceError, ValueError)
    with pytest.raises(UnsupportedSpaceError, match=name):
        param_size(space)
    with pytest.raises(UnsupportedSpaceError, match=name):
        make_distribution(space, t(np.zeros((2, 4))))
