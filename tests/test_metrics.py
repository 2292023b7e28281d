"""Sample-quality metrics: FID against its closed form, precision/recall/density/coverage against
hand computations and their known expectations, class statistics, and the domain classifier on
the real MNIST-10k test split."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pyro_gen.data import Dataset
from pyro_gen.metrics import (Embedding, class_histogram, classifier_accuracy, domain_classifier, embed, entropy,
                              fid, frechet_distance, prdc, sample_quality, sample_quality_from_embeddings)


def _random_gaussian(d: int, rng) -> tuple:
    a = rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T / d + 0.1 * np.eye(d)


def _closed_form(mu1, s1, mu2, s2) -> float:
    """||m1 - m2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# --- Fréchet distance ---------------------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))  # correlated features
    assert abs(fid(f, f)) < 1e-8
    # and of a rank-deficient set (more dimensions than points): the eigendecomposition stays stable
    g = rng.normal(size=(20, 64))
    assert abs(fid(g, g)) < 1e-8


def test_frechet_distance_equals_the_closed_form_for_known_parameters():
    rng = np.random.default_rng(1)
    for d in (1, 3, 10):
        (mu1, s1), (mu2, s2) = _random_gaussian(d, rng), _random_gaussian(d, rng)
        expected = _closed_form(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-10)
    # identical covariances: the trace terms cancel and only the squared mean difference remains
    assert frechet_distance(mu1, s1, mu1 + 0.5, s1) == pytest.approx(0.25 * d, rel=1e-9)
    # 1-D Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(1.0 + 1.0, rel=1e-12)


def test_fid_of_gaussian_samples_matches_the_closed_form():
    # Samples of n = 200,000 per set in 4 dimensions: the estimate's standard deviation is about
    # 0.01 here, its bias Tr(S1 + S2)/n about 1e-4; tolerance 0.05 (absolute) on a distance of ~5.
    rng = np.random.default_rng(2)
    (mu1, s1), (mu2, s2) = _random_gaussian(4, rng), _random_gaussian(4, rng)
    n = 200_000
    a = rng.multivariate_normal(mu1, s1, size=n)
    b = rng.multivariate_normal(mu2, s2, size=n)
    expected = _closed_form(mu1, s1, mu2, s2)
    assert expected > 1.0
    assert fid(a, b) == pytest.approx(expected, abs=0.05)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# --- precision, recall, density, coverage -----------------------------------------------

REAL = np.array([0.0, 1.0, 3.0, 7.0])[:, None]
FAKE = np.array([0.5, 2.2, 12.0, 13.5])[:, None]


def test_prdc_k1_matches_a_hand_computation():
    # k = 1 radii. real: 0->1, 1->1, 3->2, 7->4; fake: 0.5->1.7, 2.2->1.7, 12->1.5, 13.5->1.5.
    # precision: 0.5 (in ball of 0), 2.2 (ball of 3) yes; 12, 13.5 (5 and 6.5 from 7 > 4) no -> 2/4
    # recall: 0, 1 within 1.7 of 0.5; 3 within 1.7 of 2.2; 7 is 4.8 from 2.2, 5 from 12, 6.5 from 13.5 -> 3/4
    # density: 0.5 lies in the balls of 0 and 1, 2.2 in the ball of 3, 12 and 13.5 in none -> 3/(1*4)
    # coverage: 0, 1, 3 have a fake inside their own ball; 7 (radius 4) does not -> 3/4
    p = prdc(REAL, FAKE, k=1)
    assert p.precision == pytest.approx(0.5)
    assert p.recall == pytest.approx(0.75)
    assert p.density == pytest.approx(0.75)
    assert p.coverage == pytest.approx(0.75)


def test_prdc_k2_matches_a_hand_computation():
    # k = 2 radii. real: 0->3, 1->2, 3->3, 7->6; fake: 0.5->11.5, 2.2->9.8, 12->9.8, 13.5->11.3.
    # precision: 0.5, 2.2 (ball of 0), 12 (5 from 7 <= 6) yes; 13.5 (6.5 from 7 > 6) no -> 3/4
    # recall: every real point is within 11.5 of 0.5 -> 1
    # density: 0.5 in balls of 0, 1, 3 (3); 2.2 in all four (4); 12 in the ball of 7 (1); 13.5 none -> 8/(2*4)
    # coverage: 0 (0.5 away), 1 (0.5), 3 (0.8), 7 (4.8 <= 6) all covered -> 1
    p = prdc(REAL, FAKE, k=2)
    assert p.precision == pytest.approx(0.75)
    assert p.recall == pytest.approx(1.0)
    assert p.density == pytest.approx(1.0)
    assert p.coverage == pytest.approx(1.0)


def test_density_and_coverage_of_one_distribution_match_their_expectations():
    # Naeem et al. 2020: for real and fake from one distribution E[density] = 1 and
    # E[coverage] = 1 - prod_{i=1..k} (N - i) / (N + M - i). Averaged over 4 repeats of
    # N = M = 1000 points in 8 dimensions. One repeat's standard deviation is about 0.03 (density)
    # and 0.005 (coverage); the tolerances, 0.05 and 0.01, are 3 to 4 standard errors of the means.
    rng = np.random.default_rng(3)
    n, k = 1000, 5
    runs = [prdc(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)), k=k) for _ in range(4)]
    expected_coverage = 1 - math.prod((n - i) / (2 * n - i) for i in range(1, k + 1))
    assert np.mean([r.density for r in runs]) == pytest.approx(1.0, abs=0.05)
    assert np.mean([r.coverage for r in runs]) == pytest.approx(expected_coverage, abs=0.01)
    # a shifted fake distribution loses fidelity and diversity
    shifted = prdc(rng.normal(size=(n, 8)), rng.normal(size=(n, 8)) + 1.5, k=k)
    assert shifted.precision < 0.6 and shifted.coverage < 0.6 and shifted.density < 0.5


def test_prdc_rejects_a_k_too_large_for_the_sets():
    with pytest.raises(ValueError, match="k must be in"):
        prdc(REAL, FAKE, k=4)


# --- class statistics -------------------------------------------------------------------

def test_class_histogram_and_entropy_match_hand_values():
    hist = class_histogram(np.array([0, 0, 1, 2]), 4)
    np.testing.assert_allclose(hist, [0.5, 0.25, 0.25, 0.0])
    assert entropy(hist) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), rel=1e-12)
    assert entropy(np.full(10, 0.1)) == pytest.approx(math.log(10), rel=1e-12)
    assert entropy([1.0, 0.0]) == 0.0


def test_mode_collapse_flag_and_class_coverage():
    rng = np.random.default_rng(4)
    ref = Embedding(rng.normal(size=(200, 3)), np.arange(200) % 10)
    diverse = Embedding(rng.normal(size=(200, 3)), rng.permutation(np.arange(200) % 10))
    q = sample_quality_from_embeddings(diverse, ref, num_classes=10)
    assert not q.mode_collapse and q.class_coverage == 1.0
    assert q.class_entropy == pytest.approx(math.log(10), rel=1e-12)
    # three classes only: 30% of classes covered, entropy ln 3, flagged
    few = Embedding(rng.normal(size=(200, 3)), np.arange(200) % 3)
    q = sample_quality_from_embeddings(few, ref, num_classes=10)
    assert q.mode_collapse and q.class_coverage == pytest.approx(0.3)
    assert q.class_entropy == pytest.approx(entropy(class_histogram(np.arange(200) % 3, 10)))
    # every class present, but one at a tenth of its share: not covered (min_share 0.25)
    skewed = np.concatenate([np.repeat(np.arange(1, 10), 22), [0, 0]])
    q = sample_quality_from_embeddings(Embedding(rng.normal(size=(200, 3)), skewed), ref, num_classes=10)
    assert q.class_coverage == pytest.approx(0.9) and q.mode_collapse


# --- the domain classifier ------------------------------------------------------------

@pytest.fixture(scope="session")
def classifier(mnist, tmp_path_factory):
    """The MNIST-10k domain classifier, trained once into a temporary cache."""
    cache = tmp_path_factory.mktemp("classifier-cache")
    clf, info = domain_classifier(mnist, cache, progress=False)
    return clf, info, cache


def test_classifier_reaches_98_percent_on_the_real_test_split(classifier, mnist):
    clf, info, cache = classifier
    accuracy = classifier_accuracy(clf, mnist.test_x, mnist.test_y)
    assert accuracy >= 0.98
    assert info.test_accuracy == accuracy and info.num_classes == 10
    # the cache holds a state dict and its JSON; loading it gives the same network without training
    assert len(list(cache.glob("*.pt"))) == 1 and len(list(cache.glob("*.json"))) == 1
    again, info2 = domain_classifier(mnist, cache, progress=False)
    assert info2 == info
    for a, b in zip(clf.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_classifier_features_separate_real_digits_from_noise(classifier, mnist):
    clf, _, _ = classifier
    q_real = sample_quality(clf, mnist.train_x[:500], mnist.test_x[:500])
    noise = np.random.default_rng(0).random((500, 1, 28, 28)).astype(np.float32)
    q_noise = sample_quality(clf, noise, mnist.test_x[:500])
    assert q_real.fid < 0.1 * q_noise.fid
    assert q_real.precision > 0.8 and q_real.recall > 0.8 and not q_real.mode_collapse
    assert q_noise.precision < 0.05 and q_noise.coverage < 0.05
    assert q_real.class_entropy > 0.95 * math.log(10)
    assert embed(clf, mnist.test_x[:7]).features.shape == (7, clf.feature_dim)


def _small(mnist, n=200) -> Dataset:
    return Dataset("small", mnist.train_x[:n], mnist.test_x[:50], mnist.train_y[:n], mnist.test_y[:50])


def test_damaged_cache_entries_are_retrained(mnist, tmp_path, capsys):
    ds = _small(mnist)
    clf, info = domain_classifier(ds, tmp_path, epochs=1, progress=False)
    weights = next(tmp_path.glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    clf2, info2 = domain_classifier(ds, tmp_path, epochs=1, progress=False)
    assert "ignoring the cached classifier" in capsys.readouterr().err
    for a, b in zip(clf.state_dict().values(), clf2.state_dict().values()):
        assert torch.equal(a, b)  # retrained with the same seed: the same network
    # other data: another cache entry
    domain_classifier(_small(mnist, 150), tmp_path, epochs=1, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_classifier_needs_labels_and_enforces_min_accuracy(mnist, tmp_path):
    unlabelled = Dataset("nolabels", mnist.train_x[:50], mnist.test_x[:10], None, None)
    with pytest.raises(ValueError, match="need class labels"):
        domain_classifier(unlabelled, tmp_path)
    with pytest.raises(ValueError, match="test accuracy"):
        domain_classifier(_small(mnist, 100), tmp_path, epochs=1, min_accuracy=0.999, progress=False)
