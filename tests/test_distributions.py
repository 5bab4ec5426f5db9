"""Action distributions against independent numpy/scipy computations.

Every expected value here is computed in float64 numpy/scipy from the raw
parameters (softmax via logsumexp, explicit sums over all joint outcomes,
scipy.stats.norm, the full-covariance Gaussian KL formula, numerical
integration), never with the package's own helpers.
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

RTOL = 1e-5
ATOL = 1e-5
BATCH_SIZES = [1, 7, 64]


def t(x, dtype="float32"):
    return ops.convert_to_tensor(np.asarray(x, dtype=dtype))


def n(x):
    return ops.convert_to_numpy(x)


def softmax_np(logits):
    logits = np.asarray(logits, np.float64)
    return np.exp(logits - special.logsumexp(logits, axis=-1, keepdims=True))


def sigmoid_np(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def five_sigma(p, m):
    """A frequency over m draws stays within this of p except with prob ~6e-7."""
    return 5.0 * np.sqrt(p * (1.0 - p) / m) + 1.0 / m


# --------------------------------------------------------------------------- Categorical


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_categorical_log_prob_entropy_kl(batch):
    rng = np.random.default_rng(100 + batch)
    k = 5
    logits_p = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
    logits_q = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
    actions = rng.integers(0, k, batch)

    p, q = Categorical(t(logits_p)), Categorical(t(logits_q))

    lp64 = logits_p.astype(np.float64)
    expected_logp = lp64[np.arange(batch), actions] - special.logsumexp(lp64, axis=-1)
    np.testing.assert_allclose(n(p.log_prob(t(actions, "int32"))), expected_logp, rtol=RTOL, atol=ATOL)

    probs_p, probs_q = softmax_np(logits_p), softmax_np(logits_q)
    expected_ent = np.array([stats.entropy(row) for row in probs_p])
    np.testing.assert_allclose(n(p.entropy()), expected_ent, rtol=RTOL, atol=ATOL)

    expected_kl = np.array([stats.entropy(a, b) for a, b in zip(probs_p, probs_q)])
    np.testing.assert_allclose(n(p.kl(q)), expected_kl, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(n(p.kl(p)), np.zeros(batch), atol=ATOL)


def test_categorical_log_prob_accepts_float_actions():
    # The actor-critic hands actions back as float32 rows.
    logits = np.array([[0.1, -1.0, 2.0], [3.0, 0.0, -3.0]], np.float32)
    actions = np.array([2.0, 1.0], np.float32)
    expected = np.log(softmax_np(logits))[[0, 1], [2, 1]]
    np.testing.assert_allclose(n(Categorical(t(logits)).log_prob(t(actions))), expected, rtol=RTOL, atol=ATOL)


def test_categorical_log_prob_normalises_over_all_actions():
    # Summing exp(log_prob) over every action gives 1 for every row.
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (4, 6)).astype(np.float32)
    dist = Categorical(t(logits))
    total = sum(np.exp(n(dist.log_prob(t(np.full(4, a), "int32")))) for a in range(6))
    np.testing.assert_allclose(total, np.ones(4), rtol=RTOL, atol=ATOL)


def test_categorical_gumbel_sampling_frequencies():
    rng = np.random.default_rng(2)
    m = 20000
    row = np.array([1.0, -0.5, 0.3, 2.0], np.float32)
    logits = np.tile(row, (m, 1))
    uniform = rng.uniform(1e-6, 1.0 - 1e-6, (m, 4)).astype(np.float32)
    samples = n(Categorical(t(logits)).sample(t(uniform)))
    assert samples.shape == (m,)
    freq = np.bincount(samples.astype(np.int64), minlength=4) / m
    probs = softmax_np(row)
    np.testing.assert_array_less(np.abs(freq - probs), five_sigma(probs, m))


def test_categorical_sample_is_gumbel_argmax_of_the_noise():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 1.0, (50, 5)).astype(np.float32)
    uniform = rng.uniform(1e-6, 1.0 - 1e-6, (50, 5))
    expected = np.argmax(logits - np.log(-np.log(uniform)), axis=-1)
    got = n(Categorical(t(logits)).sample(t(uniform)))
    np.testing.assert_array_equal(got, expected)


def test_categorical_mode():
    logits = np.array([[0.0, 3.0, 1.0], [-1.0, -2.0, -0.5], [5.0, 4.0, 4.9]], np.float32)
    np.testing.assert_array_equal(n(Categorical(t(logits)).mode()), [1, 2, 0])


def test_categorical_seeded_sample_valid_and_distributed():
    m, k = 20000, 4
    row = np.array([0.5, -1.0, 1.5, 0.0], np.float32)
    dist = Categorical(t(np.tile(row, (m, 1))))
    samples = n(dist.sample(seed=keras.random.SeedGenerator(0)))
    assert samples.shape == (m,)
    assert np.issubdtype(samples.dtype, np.integer)
    assert samples.min() >= 0 and samples.max() < k
    freq = np.bincount(samples.astype(np.int64), minlength=k) / m
    probs = softmax_np(row)
    np.testing.assert_array_less(np.abs(freq - probs), five_sigma(probs, m))


# --------------------------------------------------------------------------- MultiCategorical

NVEC = [3, 2, 4]


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


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_multicategorical_against_joint_enumeration(batch):
    rng = np.random.default_rng(200 + batch)
    width = sum(NVEC)
    logits_p = rng.normal(0.0, 1.5, (batch, width)).astype(np.float32)
    logits_q = rng.normal(0.0, 1.5, (batch, width)).astype(np.float32)
    p = MultiCategorical(t(logits_p), NVEC)
    q = MultiCategorical(t(logits_q), NVEC)

    joint_p, outcomes = _joint_probs(logits_p, NVEC)
    joint_q, _ = _joint_probs(logits_q, NVEC)
    np.testing.assert_allclose(joint_p.sum(-1), 1.0)

    # log_prob of random joint actions = log of the enumerated joint probability
    idx = rng.integers(0, len(outcomes), batch)
    actions = np.array([outcomes[i] for i in idx], np.int32)
    expected_logp = np.log(joint_p[np.arange(batch), idx])
    np.testing.assert_allclose(n(p.log_prob(t(actions, "int32"))), expected_logp, rtol=RTOL, atol=ATOL)

    # entropy = -sum over joint outcomes of p log p
    expected_ent = -np.sum(joint_p * np.log(joint_p), axis=-1)
    np.testing.assert_allclose(n(p.entropy()), expected_ent, rtol=RTOL, atol=ATOL)

    # KL = sum over joint outcomes of p log(p/q)
    expected_kl = np.sum(joint_p * (np.log(joint_p) - np.log(joint_q)), axis=-1)
    np.testing.assert_allclose(n(p.kl(q)), expected_kl, rtol=RTOL, atol=ATOL)


def test_multicategorical_sampling_frequencies_per_component():
    rng = np.random.default_rng(4)
    m = 20000
    row = np.array([0.2, 1.0, -1.0, 0.7, -0.3, 1.2, 0.0, -2.0, 0.5], np.float32)
    uniform = rng.uniform(1e-6, 1.0 - 1e-6, (m, sum(NVEC))).astype(np.float32)
    samples = n(MultiCategorical(t(np.tile(row, (m, 1))), NVEC).sample(t(uniform)))
    assert samples.shape == (m, len(NVEC))
    for i, (k, logits_i) in enumerate(zip(NVEC, _split(row, NVEC))):
        freq = np.bincount(samples[:, i].astype(np.int64), minlength=k) / m
        assert len(freq) == k
        probs = softmax_np(logits_i)
        np.testing.assert_array_less(np.abs(freq - probs), five_sigma(probs, m))


def test_multicategorical_each_component_uses_its_own_noise_slice():
    # Equal logits; noise near 1 in one slot of each slice forces that action
    # (Gumbel ~ +13.8 against ~ -2.6 for the others).
    chosen = [(2, 1, 0), (0, 0, 3), (1, 1, 2)]
    uniform = np.full((len(chosen), sum(NVEC)), 1e-6, np.float32)
    offsets = np.concatenate([[0], np.cumsum(NVEC)[:-1]])
    for r, actions in enumerate(chosen):
        for off, a in zip(offsets, actions):
            uniform[r, off + a] = 1.0 - 1e-6
    logits = np.zeros((len(chosen), sum(NVEC)), np.float32)
    got = n(MultiCategorical(t(logits), NVEC).sample(t(uniform)))
    np.testing.assert_array_equal(got, np.array(chosen))


def test_multicategorical_mode():
    logits = np.array([[0.0, 2.0, 1.0, 5.0, -5.0, 0.0, 0.1, 0.3, 0.2]], np.float32)
    np.testing.assert_array_equal(n(MultiCategorical(t(logits), NVEC).mode()), [[1, 0, 2]])


def test_multicategorical_seeded_sample_valid():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(33, sum(NVEC))).astype(np.float32)
    samples = n(MultiCategorical(t(logits), NVEC).sample(seed=keras.random.SeedGenerator(0)))
    assert samples.shape == (33, len(NVEC))
    assert np.issubdtype(samples.dtype, np.integer)
    assert (samples >= 0).all() and (samples < np.array(NVEC)).all()


# --------------------------------------------------------------------------- Bernoulli


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_bernoulli_against_outcome_enumeration(batch):
    rng = np.random.default_rng(300 + batch)
    k = 4
    logits_p = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
    logits_q = rng.normal(0.0, 2.0, (batch, k)).astype(np.float32)
    p, q = Bernoulli(t(logits_p)), Bernoulli(t(logits_q))

    outcomes = np.array(list(itertools.product([0, 1], repeat=k)), np.float64)  # [16, k]

    def joint(logits):
        s = sigmoid_np(logits)[:, None, :]  # [batch, 1, k]
        return np.prod(np.where(outcomes[None] == 1, s, 1.0 - s), axis=-1)  # [batch, 16]

    joint_p, joint_q = joint(logits_p), joint(logits_q)
    np.testing.assert_allclose(joint_p.sum(-1), 1.0)

    idx = rng.integers(0, len(outcomes), batch)
    actions = outcomes[idx].astype(np.int32)
    np.testing.assert_allclose(
        n(p.log_prob(t(actions, "int32"))), np.log(joint_p[np.arange(batch), idx]), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        n(p.entropy()), -np.sum(joint_p * np.log(joint_p), axis=-1), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        n(p.kl(q)), np.sum(joint_p * np.log(joint_p / joint_q), axis=-1), rtol=RTOL, atol=ATOL
    )


def test_bernoulli_per_coin_scipy():
    rng = np.random.default_rng(6)
    logits = rng.normal(0.0, 3.0, (10, 3)).astype(np.float32)
    actions = rng.integers(0, 2, (10, 3))
    s = sigmoid_np(logits)
    expected_logp = stats.bernoulli.logpmf(actions, s).sum(-1)
    expected_ent = stats.bernoulli.entropy(s).sum(-1)
    dist = Bernoulli(t(logits))
    np.testing.assert_allclose(n(dist.log_prob(t(actions, "float32"))), expected_logp, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(n(dist.entropy()), expected_ent, rtol=RTOL, atol=ATOL)


def test_bernoulli_sampling_frequencies_and_rule():
    rng = np.random.default_rng(7)
    m = 20000
    row = np.array([-2.0, -0.3, 0.0, 1.0, 3.0], np.float32)
    uniform = rng.uniform(1e-6, 1.0 - 1e-6, (m, 5)).astype(np.float32)
    samples = n(Bernoulli(t(np.tile(row, (m, 1)))).sample(t(uniform)))
    assert samples.shape == (m, 5)
    assert set(np.unique(samples)) <= {0, 1}
    probs = sigmoid_np(row)
    freq = samples.mean(axis=0)
    np.testing.assert_array_less(np.abs(freq - probs), five_sigma(probs, m))
    # The rule itself: 1 exactly when u < P(1) (no draw lands on the boundary).
    assert np.min(np.abs(uniform - probs)) > 1e-6
    np.testing.assert_array_equal(samples, (uniform < probs).astype(np.int32))


def test_bernoulli_mode():
    logits = np.array([[-1.0, 0.5, 2.0, -0.1]], np.float32)
    np.testing.assert_array_equal(n(Bernoulli(t(logits)).mode()), [[0, 1, 1, 0]])


def test_bernoulli_seeded_sample_valid():
    logits = np.random.default_rng(8).normal(size=(12, 6)).astype(np.float32)
    samples = n(Bernoulli(t(logits)).sample(seed=keras.random.SeedGenerator(0)))
    assert samples.shape == (12, 6)
    assert set(np.unique(samples)) <= {0, 1}


# --------------------------------------------------------------------------- DiagGaussian


def _gauss_params(rng, batch, d):
    mean = rng.normal(0.0, 1.0, (batch, d))
    log_std = rng.uniform(-1.0, 0.7, (batch, d))
    return mean, log_std, np.concatenate([mean, log_std], -1).astype(np.float32)


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_diag_gaussian_log_prob_entropy_kl(batch):
    rng = np.random.default_rng(400 + batch)
    d = 3
    mean_p, log_std_p, flat_p = _gauss_params(rng, batch, d)
    mean_q, log_std_q, flat_q = _gauss_params(rng, batch, d)
    # float32 round trip so the reference sees exactly the parameters the code sees
    mean_p, log_std_p = flat_p[:, :d].astype(np.float64), flat_p[:, d:].astype(np.float64)
    mean_q, log_std_q = flat_q[:, :d].astype(np.float64), flat_q[:, d:].astype(np.float64)
    std_p, std_q = np.exp(log_std_p), np.exp(log_std_q)
    actions = (mean_p + std_p * rng.normal(0.0, 1.5, (batch, d))).astype(np.float32)

    p, q = DiagGaussian(t(flat_p)), DiagGaussian(t(flat_q))

    expected_logp = stats.norm.logpdf(actions.astype(np.float64), loc=mean_p, scale=std_p).sum(-1)
    np.testing.assert_allclose(n(p.log_prob(t(actions))), expected_logp, rtol=RTOL, atol=ATOL)

    # and agrees with the multivariate normal with diagonal covariance
    got_logp = n(p.log_prob(t(actions)))
    for i in range(min(batch, 3)):
        mvn = stats.multivariate_normal(mean_p[i], np.diag(std_p[i] ** 2))
        assert abs(got_logp[i] - mvn.logpdf(actions[i].astype(np.float64))) < 1e-4

    expected_ent = stats.norm.entropy(scale=std_p).sum(-1)
    np.testing.assert_allclose(n(p.entropy()), expected_ent, rtol=RTOL, atol=ATOL)

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
    np.testing.assert_allclose(n(p.kl(q)), np.array(expected_kl), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(n(p.kl(p)), np.zeros(batch), atol=ATOL)


def test_diag_gaussian_kl_by_numerical_integration():
    rng = np.random.default_rng(9)
    _, _, flat_p = _gauss_params(rng, 2, 2)
    _, _, flat_q = _gauss_params(rng, 2, 2)
    got = n(DiagGaussian(t(flat_p)).kl(DiagGaussian(t(flat_q))))
    fp, fq = flat_p.astype(np.float64), flat_q.astype(np.float64)
    for i in range(2):
        total = 0.0
        for j in range(2):  # independent dimensions: the KL is a sum of 1-d integrals
            p = stats.norm(fp[i, j], np.exp(fp[i, 2 + j]))
            q = stats.norm(fq[i, j], np.exp(fq[i, 2 + j]))
            total += integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -30, 30)[0]
        assert abs(got[i] - total) < 1e-5


def test_diag_gaussian_sample_is_mean_plus_std_times_noise():
    rng = np.random.default_rng(10)
    _, _, flat = _gauss_params(rng, 8, 3)
    noise = rng.normal(size=(8, 3)).astype(np.float32)
    expected = flat[:, :3].astype(np.float64) + np.exp(flat[:, 3:].astype(np.float64)) * noise
    got = n(DiagGaussian(t(flat)).sample(t(noise)))
    assert got.shape == (8, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_diag_gaussian_mode_is_mean():
    flat = np.array([[0.5, -1.5, 0.3, -0.7], [2.0, 0.0, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(n(DiagGaussian(t(flat)).mode()), flat[:, :2])


def test_diag_gaussian_seeded_sample_statistics():
    m = 20000
    row = np.array([1.0, -2.0, np.log(0.5), np.log(2.0)], np.float32)
    samples = n(DiagGaussian(t(np.tile(row, (m, 1)))).sample(seed=keras.random.SeedGenerator(0)))
    assert samples.shape == (m, 2)
    assert np.isfinite(samples).all()
    std = np.array([0.5, 2.0])
    # sample mean within 5 standard errors, sample std within 5% (SE of std ~ std/sqrt(2m) = 0.5%)
    np.testing.assert_array_less(np.abs(samples.mean(0) - [1.0, -2.0]), 5 * std / np.sqrt(m))
    np.testing.assert_allclose(samples.std(0), std, rtol=0.05)


# --------------------------------------------------------------------------- factory


@pytest.mark.parametrize(
    "space, width, cls",
    [
        (spaces.Discrete(5), 5, Categorical),
        (spaces.MultiDiscrete([3, 2, 4]), 9, MultiCategorical),
        (spaces.MultiBinary(6), 6, Bernoulli),
        (spaces.Box(-1.0, 1.0, (3,)), 3, DiagGaussian),
    ],
)
def test_param_size_and_make_distribution(space, width, cls):
    assert param_size(space) == width
    head = width * 2 if cls is DiagGaussian else width
    dist = make_distribution(space, t(np.zeros((2, head))))
    assert isinstance(dist, cls)


def test_make_distribution_multidiscrete_uses_the_space_nvec():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(5, 9)).astype(np.float32)
    dist = make_distribution(spaces.MultiDiscrete([3, 2, 4]), t(logits))
    joint, _ = _joint_probs(logits, NVEC)
    np.testing.assert_allclose(
        n(dist.entropy()), -np.sum(joint * np.log(joint), axis=-1), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(
    "space, name",
    [
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), "Tuple"),
        (spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(-1, 1, (2,))}), "Dict"),
        (spaces.Text(8), "Text"),
    ],
)
def test_unsupported_space_raises_naming_the_space(space, name):
    with pytest.raises(UnsupportedSpaceError, match=name):
        param_size(space)
    with pytest.raises(UnsupportedSpaceError, match=name):
        make_distribution(space, t(np.zeros((2, 4))))
    assert issubclass(UnsupportedSpaceError, ValueError)
