"""FID, KID and the classifier score: against scipy and closed forms, with negative controls."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from course_lib.metrics import (classifier_score, feature_stats, frechet_distance, kid, mmd2_unbiased,
                                polynomial_kernel)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread, no fighting over the cores


def random_spd(D, generator, scale=1.0):
    """A random symmetric positive-definite (D, D) float64 matrix with a spread of eigenvalues."""
    A = torch.randn(D, D, generator=generator, dtype=torch.float64)
    return scale * (A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64))


def scipy_fid(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy.linalg.sqrtm of the (non-symmetric) product sigma1 sigma2."""
    covmean = scipy.linalg.sqrtm(sigma1.numpy() @ sigma2.numpy())
    covmean = covmean.real  # round-off gives tiny imaginary parts
    return float(((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * np.trace(covmean))


@pytest.mark.parametrize("D", [2, 10, 64])
def test_frechet_distance_matches_scipy_sqrtm(D):
    g = torch.Generator().manual_seed(D)
    for _ in range(3):
        mu1, mu2 = torch.randn(D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
        sigma1, sigma2 = random_spd(D, g), random_spd(D, g, scale=2.0)
        ours, reference = frechet_distance(mu1, sigma1, mu2, sigma2), scipy_fid(mu1, sigma1, mu2, sigma2)
        assert ours == pytest.approx(reference, rel=1e-8, abs=1e-8), (
            f"D={D}: frechet_distance gives {ours:.10f}, scipy's sqrtm formula {reference:.10f}")


def test_frechet_distance_is_symmetric_and_takes_float32():
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    sigma1, sigma2 = random_spd(8, g), random_spd(8, g)
    d12, d21 = frechet_distance(mu1, sigma1, mu2, sigma2), frechet_distance(mu2, sigma2, mu1, sigma1)
    assert d12 == pytest.approx(d21, rel=1e-10)
    assert frechet_distance(mu1.float(), sigma1.float(), mu2.float(), sigma2.float()) == pytest.approx(d12, rel=1e-5)


def test_fid_of_a_set_with_itself_is_zero_and_with_a_shift_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(500, 16, generator=g, dtype=torch.float64) @ random_spd(16, g)  # correlated
    mu, sigma = feature_stats(features)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # shifting every feature vector by delta leaves the covariance equal: FID = |delta|^2 exactly
    delta = torch.linspace(-1, 1, 16, dtype=torch.float64)
    mu_shifted, sigma_shifted = feature_stats(features + delta)
    assert frechet_distance(mu, sigma, mu_shifted, sigma_shifted) == pytest.approx(float(delta @ delta), rel=1e-8)


def test_fid_of_gaussians_with_scaled_covariance_matches_closed_form():
    """For sigma2 = c^2 sigma1: FID = tr(sigma1) (1 - c)^2, since tr(sqrt(sigma1 sigma2)) = c tr(sigma1)."""
    g = torch.Generator().manual_seed(3)
    sigma1, mu = random_spd(12, g), torch.zeros(12, dtype=torch.float64)
    for c in (0.5, 1.0, 3.0):
        expected = float(sigma1.trace()) * (1 - c) ** 2
        assert frechet_distance(mu, sigma1, mu, c**2 * sigma1) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_feature_stats_match_numpy():
    features = torch.randn(50, 5, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_stats(features)
    assert mu.dtype == torch.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu.numpy(), features.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(features.double().numpy(), rowvar=False), rtol=1e-10)


def test_bad_shapes_give_teaching_errors():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(torch.randn(1, 4))
    with pytest.raises(ValueError, match="same D|one D"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        feature_stats(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


def test_mmd2_unbiased_matches_a_direct_double_loop():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 1
    k = lambda u, v: (float(u @ v) / 3 + 1) ** 3
    m, n = len(a), len(b)
    expected = (sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
                + sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
                - 2 * sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n))
    assert float(mmd2_unbiased(a, b)) == pytest.approx(expected, rel=1e-10)
    assert polynomial_kernel(a, b).shape == (6, 5)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    same_mean, same_std = kid(a, b, num_subsets=50, subset_size=100, generator=torch.Generator().manual_seed(1))
    assert abs(same_mean) < same_std, f"KID of one distribution {same_mean:.4f} is not ~0 (subset std {same_std:.4f})"
    for other in (b + 0.5, 1.3 * b):  # negative controls: a shifted and a wider distribution score clearly higher
        diff_mean, _ = kid(a, other, num_subsets=50, subset_size=100, generator=torch.Generator().manual_seed(1))
        assert diff_mean > 0.05 and diff_mean > 5 * abs(same_mean), (same_mean, diff_mean)


def test_mmd2_estimator_is_unbiased_where_the_biased_one_is_not():
    """Averaged over 300 independent pairs of samples of one distribution, the unbiased MMD^2 is 0 within
    3 standard errors; the biased estimator (keeping the i = j terms) is clearly positive."""
    g = torch.Generator().manual_seed(0)
    unbiased, biased = [], []
    for _ in range(300):
        a = torch.randn(40, 8, generator=g, dtype=torch.float64)
        b = torch.randn(40, 8, generator=g, dtype=torch.float64)
        unbiased.append(float(mmd2_unbiased(a, b)))
        k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
        biased.append(float(k_aa.mean() + k_bb.mean() - 2 * k_ab.mean()))
    unbiased, biased = torch.tensor(unbiased), torch.tensor(biased)
    standard_error = unbiased.std() / math.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * standard_error, f"mean {unbiased.mean():.4f} +- {standard_error:.4f}"
    assert biased.mean() > 10 * standard_error, "the biased control should sit clearly above 0"


def test_kid_is_reproducible_with_a_generator_and_checks_sizes():
    a, b = torch.randn(30, 4), torch.randn(30, 4)
    first = kid(a, b, 10, 20, torch.Generator().manual_seed(5))
    assert first == kid(a, b, 10, 20, torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="at least 2"):
        kid(a[:1], b, 10, 20)


def test_classifier_score_bounds_and_negative_control():
    C = 10
    confident_balanced = torch.eye(C).repeat(20, 1) * 50  # each image one class, classes balanced
    score, _ = classifier_score(confident_balanced)
    assert score == pytest.approx(C, rel=1e-6)
    one_class = torch.zeros(200, C)
    one_class[:, 3] = 50  # confident but always the same digit: no diversity
    assert classifier_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    uniform = torch.zeros(200, C)  # unsure about every image
    assert classifier_score(uniform)[0] == pytest.approx(1.0, abs=1e-9)
    mean, std = classifier_score(torch.randn(200, C, generator=torch.Generator().manual_seed(0)) * 3, num_splits=4)
    assert 1.0 < mean < C and std > 0


def test_fid_and_kid_get_worse_with_what_the_eye_sees_as_worse():
    """The course's FID and KID rank real held-out digits above the same digits with added noise or with blur, and
    more noise or more blur scores worse still: the metric responds to what the eye sees."""
    import torch.nn.functional as F

    from course_lib.metrics import fid_kid
    from course_lib.mnist import load_mnist

    images, _ = load_mnist("test", source="shipped", verbose=False)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    kernel = torch.ones(1, 1, 3, 3) / 9

    def blurred(x, times):
        for _ in range(times):
            x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
        return x

    scores = {"real": fid_kid(images), "noise 0.2": fid_kid((images + 0.2 * noise).clamp(-1, 1)),
              "noise 0.5": fid_kid((images + 0.5 * noise).clamp(-1, 1)), "blur 1": fid_kid(blurred(images, 1)),
              "blur 3": fid_kid(blurred(images, 3))}
    fid = {k: v["fid"] for k, v in scores.items()}
    assert fid["real"] < fid["noise 0.2"] < fid["noise 0.5"], fid
    assert fid["real"] < fid["blur 1"] < fid["blur 3"], fid
    assert scores["real"]["kid"] < min(scores[k]["kid"] for k in ["noise 0.5", "blur 3"]), scores


def test_bootstrap_matches_direct_computation_on_each_resample():
    """Row 0 of the bootstrap is the original set; resample b equals FID/KID computed on the drawn rows directly."""
    from course_lib.metrics import bootstrap_fid_kid, percentile_interval
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(300, 6, generator=g, dtype=torch.float64)
    mu_ref, sigma_ref = feature_stats(ref)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64) * 1.2 + 0.3
    b = a + 0.01 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    out = bootstrap_fid_kid({"a": a, "b": b}, mu_ref, sigma_ref, ref, 5, torch.Generator().manual_seed(7))
    assert out["a"]["fid_point"] == pytest.approx(frechet_distance(*feature_stats(a), mu_ref, sigma_ref), rel=1e-9)
    assert out["a"]["kid_point"] == pytest.approx(float(mmd2_unbiased(a, ref)), rel=1e-9)
    index = torch.randint(0, 40, (5, 40), generator=torch.Generator().manual_seed(7))
    for r in range(5):
        rows = a[index[r]]
        assert float(out["a"]["fid"][r]) == pytest.approx(frechet_distance(*feature_stats(rows), mu_ref, sigma_ref),
                                                          rel=1e-9)
        k = polynomial_kernel(rows, rows)
        distinct = index[r][:, None] != index[r][None, :]  # pairs of copies of one row are left out
        kid_direct = k[distinct].mean() \
            + (polynomial_kernel(ref, ref).sum() - polynomial_kernel(ref, ref).diagonal().sum()) / (300 * 299) \
            - 2 * polynomial_kernel(rows, ref).mean()
        assert float(out["a"]["kid"][r]) == pytest.approx(float(kid_direct), rel=1e-9)
    low, high = percentile_interval(out["a"]["fid"] - out["a"]["fid"], 0.0)
    assert low == high == 0.0  # a set against itself: no difference in any resample


def test_resample_counts_can_be_shared_with_other_statistics():
    """resample_counts: row 0 is the original set, each resample draws N rows; passing it as counts= gives exactly
    what bootstrap_fid_kid draws itself from the same generator seed (so other statistics can use the same rows)."""
    from course_lib.metrics import bootstrap_fid_kid, resample_counts
    counts = resample_counts(40, 5, torch.Generator().manual_seed(7))
    assert counts.shape == (6, 40) and counts.dtype == torch.float64
    assert torch.equal(counts[0], torch.ones(40)) and torch.equal(counts.sum(1), torch.full((6,), 40.0))
    index = torch.randint(0, 40, (5, 40), generator=torch.Generator().manual_seed(7))
    assert torch.equal(counts[1:], torch.stack([torch.bincount(row, minlength=40) for row in index]).double())
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(300, 6, generator=g, dtype=torch.float64)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    drawn = bootstrap_fid_kid({"a": a}, *feature_stats(ref), ref, 5, torch.Generator().manual_seed(7))
    given = bootstrap_fid_kid({"a": a}, *feature_stats(ref), ref, counts=counts)
    for key in ("fid", "kid"):
        assert torch.equal(drawn["a"][key], given["a"][key])
    with pytest.raises(ValueError, match="N = 40"):
        bootstrap_fid_kid({"a": a}, *feature_stats(ref), ref, counts=counts[:, :30])


@pytest.mark.parametrize("k, n", [(0, 20), (7, 20), (389, 500), (500, 500)])
def test_wilson_interval_matches_scipy(k, n):
    """Wilson's score interval against scipy's binomtest(...).proportion_ci(method="wilson"), 95 %."""
    from scipy.stats import binomtest
    from course_lib.metrics import wilson_interval
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((reference.low, reference.high), abs=1e-6)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(n + 1, n)


@pytest.mark.parametrize("k1, n1, k2, n2, low, high", [
    (56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090), (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926), (0, 10, 0, 20, -0.1611, 0.2775), (10, 10, 0, 20, 0.6791, 1.0000)])
def test_newcombe_interval_matches_the_paper(k1, n1, k2, n2, low, high):
    """Newcombe (1998), Table II, method 10 (score interval combining two Wilson intervals), to 4 decimals."""
    from course_lib.metrics import newcombe_interval
    interval = newcombe_interval(k1, n1, k2, n2)
    assert interval == pytest.approx((low, high), abs=6e-5)
    assert newcombe_interval(k2, n2, k1, n1) == pytest.approx((-interval[1], -interval[0]), abs=1e-12)  # p2 - p1


def test_newcombe_interval_is_the_normal_interval_for_large_samples():
    """Away from 0 and 1 and with n in the tens of thousands, every 95 % interval for p1 - p2 is p1 - p2 +- 1.96 SE."""
    from course_lib.metrics import newcombe_interval
    k1, n1, k2, n2 = 28_000, 40_000, 26_800, 40_000
    p1, p2 = k1 / n1, k2 / n2
    half = 1.959964 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert newcombe_interval(k1, n1, k2, n2) == pytest.approx((p1 - p2 - half, p1 - p2 + half), abs=2e-5)


def test_bootstrap_resolves_a_real_difference_and_not_a_null_one():
    from course_lib.metrics import bootstrap_fid_kid, percentile_interval
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2000, 8, generator=g)
    mu_ref, sigma_ref = feature_stats(ref)
    same1, same2 = torch.randn(250, 8, generator=g), torch.randn(250, 8, generator=g)
    shifted = torch.randn(250, 8, generator=g) + 0.5
    out = bootstrap_fid_kid({"same1": same1, "same2": same2, "shifted": shifted}, mu_ref, sigma_ref, ref, 500,
                            torch.Generator().manual_seed(0))
    for metric in ("fid", "kid"):
        point = out["shifted"][f"{metric}_point"] - out["same1"][f"{metric}_point"]
        low, _ = percentile_interval(out["shifted"][metric] - out["same1"][metric], point)
        assert low > 0, f"{metric}: a 0.5-sigma shift in every feature must be resolved"
        point = out["same2"][f"{metric}_point"] - out["same1"][f"{metric}_point"]
        low, high = percentile_interval(out["same2"][metric] - out["same1"][metric], point)
        assert low < 0 < high, f"{metric}: two draws of one distribution must not be resolved ({low}, {high})"
        low, high = percentile_interval(out["same1"][metric], out["same1"][f"{metric}_point"])
        assert low <= out["same1"][f"{metric}_point"] <= high
