"""Sample-quality metrics on classifier features: FID, KID and the classifier (Inception) score.

All three compare images through a feature extractor phi; the course uses its own MNIST classifier
(`course_lib.classifier`, D = 64 features) instead of Inception-v3. With features a = phi(x) of
generated and b = phi(y) of real images:

  FID = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})
        the Frechet (2-Wasserstein) distance between Gaussians fitted to the two feature sets;
        tr((S_a^{1/2} S_b S_a^{1/2})^{1/2}) = tr((S_a S_b)^{1/2}), computed from the eigenvalues of
        the symmetric matrix S_a^{1/2} S_b S_a^{1/2}. Biased: it depends on N, compare at equal N.
  KID = MMD^2(a, b) with the kernel k(u, v) = (u.v / D + 1)^3, estimated without bias:
        1/(m(m-1)) sum_{i!=j} k(a_i, a_j) + 1/(m(m-1)) sum_{i!=j} k(b_i, b_j) - 2/m^2 sum_{i,j} k(a_i, b_j),
        averaged over random subsets of size m. Unbiased: its mean is ~0 for equal distributions.
  IS  = exp(E_x KL(p(y | x) || p(y))), p(y) = E_x p(y | x): high when each image is classified
        confidently and the classes are balanced; at most the number of classes (10).
"""
import math
import weakref

import torch

from course_lib.classifier import embed, load_classifier, reference_stats
from course_lib.mnist import load_mnist


def _as_float64(x, name):
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has NaN or inf values; the images fed to the classifier were probably not finite")
    return x


def feature_stats(features):
    """Mean and covariance of features (N, D): returns (mu (D,), sigma (D, D)), float64.

    sigma = (F - mu)^T (F - mu) / (N - 1), the unbiased sample covariance (numpy.cov's default).
    """
    features = _as_float64(features, "features")
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {tuple(features.shape)}")
    mu = features.mean(0)  # (D,)
    centered = features - mu  # (N, D)
    sigma = centered.T @ centered / (features.shape[0] - 1)  # (D, D)
    return mu, sigma


def _sqrtm_psd(matrix):
    """Symmetric square root of a symmetric positive semi-definite matrix (D, D), via eigh."""
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T  # (D, D)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); mu (D,), sigma (D, D). A float.

    d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sqrt(sigma1) sigma2 sqrt(sigma1))^{1/2}),
    in float64; the last trace is the sum of the square roots of the (clamped >= 0) eigenvalues of the
    symmetric PSD matrix sqrt(sigma1) sigma2 sqrt(sigma1), which equals tr(sqrtm(sigma1 sigma2)).
    """
    mu1, mu2 = _as_float64(mu1, "mu1"), _as_float64(mu2, "mu2")
    sigma1, sigma2 = _as_float64(sigma1, "sigma1"), _as_float64(sigma2, "sigma2")
    D = mu1.shape[0]
    if mu1.shape != (D,) or mu2.shape != (D,) or sigma1.shape != (D, D) or sigma2.shape != (D, D):
        raise ValueError(f"shapes must be mu (D,), sigma (D, D) for one D; got mu1 {tuple(mu1.shape)}, sigma1 "
                         f"{tuple(sigma1.shape)}, mu2 {tuple(mu2.shape)}, sigma2 {tuple(sigma2.shape)}")
    sqrt_sigma1 = _sqrtm_psd(sigma1)  # (D, D)
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1  # (D, D), symmetric PSD
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(distance.clamp(min=0))  # >= 0 up to round-off


def polynomial_kernel(a, b):
    """k(u, v) = (u.v / D + 1)^3 for all pairs: a (n, D), b (m, D) -> (n, m). KID's kernel."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(a, b):
    """Unbiased MMD^2 between samples a (m, D) and b (n, D) with the cubic polynomial kernel. A 0-dim tensor.

    sum_{i!=j} k(a_i, a_j) / (m(m-1)) + sum_{i!=j} k(b_i, b_j) / (n(n-1)) - 2 sum_{i,j} k(a_i, b_j) / (mn).
    """
    m, n = a.shape[0], b.shape[0]
    k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    return ((k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
            + (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
            - 2 * k_ab.mean())


def kid(features_a, features_b, num_subsets=100, subset_size=100, generator=None):
    """Kernel Inception Distance: unbiased MMD^2 (cubic kernel) over random subsets. Returns (mean, std), floats.

    features_a (N_a, D), features_b (N_b, D); each of the num_subsets rounds draws subset_size rows
    of each set without replacement (generator: a CPU torch.Generator for reproducible subsets);
    subset_size is capped at the smaller N. std is over the subsets (0.0 for a single subset).
    """
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2 or num_subsets < 1:
        raise ValueError(f"KID needs subsets of at least 2 rows and num_subsets >= 1 (got m={m}, "
                         f"num_subsets={num_subsets}); pass more samples")
    values = []
    for _ in range(num_subsets):
        index_a = torch.randperm(a.shape[0], generator=generator)[:m]
        index_b = torch.randperm(b.shape[0], generator=generator)[:m]
        values.append(mmd2_unbiased(a[index_a], b[index_b]))
    values = torch.stack(values)  # (num_subsets,)
    return float(values.mean()), float(values.std()) if num_subsets > 1 else 0.0


def classifier_score(logits, num_splits=1):
    """Inception-Score analogue with the course classifier: exp(E_x KL(p(y|x) || p(y))). Returns (mean, std).

    logits: (N, C) class logits of N images. p(y) is the mean of p(y|x) within each of num_splits
    equal splits (the IS convention); the score lies in [1, C]. std is over splits (0.0 for one split).
    """
    logits = _as_float64(logits, "logits")
    if logits.dim() != 2 or logits.shape[0] < num_splits or num_splits < 1:
        raise ValueError(f"logits must be (N, C) with N >= num_splits >= 1, got {tuple(logits.shape)}, "
                         f"num_splits={num_splits}")
    scores = []
    for chunk in logits.chunk(num_splits):
        log_p_y_given_x = chunk.log_softmax(1)  # (n, C)
        log_p_y = log_p_y_given_x.exp().mean(0).log()  # (C,)
        kl = (log_p_y_given_x.exp() * (log_p_y_given_x - log_p_y)).sum(1)  # (n,)
        scores.append(math.exp(float(kl.mean())))
    scores = torch.tensor(scores, dtype=torch.float64)
    return float(scores.mean()), float(scores.std()) if num_splits > 1 else 0.0


_REFERENCE_FEATURES = weakref.WeakKeyDictionary()  # classifier -> train-split features


def reference_features(classifier):
    """Features (4500, D) of the real shipped train split, computed once per classifier (KID needs samples)."""
    if classifier not in _REFERENCE_FEATURES:
        images, _ = load_mnist("train", source="shipped")
        _REFERENCE_FEATURES[classifier] = embed(images, classifier)[0]
    return _REFERENCE_FEATURES[classifier]


def fid_kid(images, classifier=None, reference=None, batch_size=500, num_subsets=100, subset_size=100,
            seed=0):
    """FID, KID and classifier score of images (N, 1, 28, 28) in [-1, 1] against the real train split.

    classifier: an MNISTClassifier (default: the shipped one). reference: (mu, sigma, features) to
    compare with; default: the shipped train statistics and the train split's features (for KID).
    Returns a dict of floats: fid, kid, kid_std, classifier_score, n (the number of images).
    """
    classifier = load_classifier() if classifier is None else classifier
    if reference is None:
        mu_ref, sigma_ref = reference_stats()
        features_ref = reference_features(classifier)
    else:
        mu_ref, sigma_ref, features_ref = reference
    features, logits = embed(images, classifier, batch_size)
    mu, sigma = feature_stats(features)
    kid_mean, kid_std = kid(features, features_ref, num_subsets, subset_size, torch.Generator().manual_seed(seed))
    return {"fid": frechet_distance(mu, sigma, mu_ref, sigma_ref), "kid": kid_mean, "kid_std": kid_std,
            "classifier_score": classifier_score(logits)[0], "n": int(images.shape[0])}


def resample_counts(N, num_resamples, generator=None):
    """How often each of N rows is drawn in each of num_resamples bootstrap resamples (N draws with replacement).

    Returns (num_resamples + 1, N) float64; row 0 is the original set (every row once). One counts matrix shared by
    several statistics keeps their bootstrap paired: every statistic sees the same resampled rows.
    """
    index = torch.randint(0, N, (num_resamples, N), generator=generator)  # (B, N)
    counts = torch.zeros(num_resamples, N, dtype=torch.float64).scatter_add_(
        1, index, torch.ones(num_resamples, N, dtype=torch.float64))  # (B, N) times each row is drawn
    return torch.cat([torch.ones(1, N, dtype=torch.float64), counts])  # row 0: the original set


def bootstrap_fid_kid(features, mu_ref, sigma_ref, features_ref, num_resamples=1000, generator=None, counts=None):
    """Paired bootstrap of FID and KID for several sample sets against one real reference.

    features: dict name -> (N, D), one row per sample; the same N for every set, and row i of every set
    made from the same x_T (so one resampled index set is used for all of them: differences between
    two settings are then paired). mu_ref (D,), sigma_ref (D, D): the reference statistics for FID;
    features_ref (M, D): the reference features for KID. Each resample draws N rows with replacement.
    KID here is the unbiased MMD^2 over all N rows against all M reference rows (`kid` with one subset of
    everything); in a resample, pairs of copies of the same row are left out of the within-set term.
    Returns dict name -> {"fid": (B,), "kid": (B,), "fid_point": float, "kid_point": float}, float64;
    the point estimates are those of the original rows (no resampling).
    counts: a `resample_counts` matrix to use instead of drawing one, so that other statistics can share its resamples.
    """
    names = list(features)
    N = features[names[0]].shape[0]
    if any(f.shape[0] != N for f in features.values()):
        raise ValueError("every feature set must have the same N (paired bootstrap)")
    mu_ref, sigma_ref = _as_float64(mu_ref, "mu_ref"), _as_float64(sigma_ref, "sigma_ref")
    ref = _as_float64(features_ref, "features_ref")
    M = ref.shape[0]
    if counts is None:
        counts = resample_counts(N, num_resamples, generator)
    elif counts.shape[1] != N:
        raise ValueError(f"counts has {counts.shape[1]} columns, but the feature sets have N = {N} rows")
    sqrt_ref = _sqrtm_psd(sigma_ref)  # (D, D)
    k_rr = polynomial_kernel(ref, ref)
    within_ref = (k_rr.sum() - k_rr.diagonal().sum()) / (M * (M - 1))
    out = {}
    for name in names:
        f = _as_float64(features[name], name)  # (N, D)
        mu = counts @ f / N  # (B+1, D)
        second = torch.einsum("bn,nd,ne->bde", counts, f, f) / N  # (B+1, D, D)
        sigma = (second - mu[:, :, None] * mu[:, None, :]) * N / (N - 1)  # (B+1, D, D)
        middle = sqrt_ref @ sigma @ sqrt_ref
        trace_sqrt = torch.linalg.eigvalsh((middle + middle.transpose(1, 2)) / 2).clamp(min=0).sqrt().sum(1)
        fid = ((mu - mu_ref).square().sum(1) + torch.diagonal(sigma, dim1=1, dim2=2).sum(1) + sigma_ref.trace()
               - 2 * trace_sqrt).clamp(min=0)  # (B+1,)
        k_ff = polynomial_kernel(f, f)
        k_ff.fill_diagonal_(0)
        pairs = N * N - counts.square().sum(1)  # ordered pairs of distinct rows in each resample
        within = ((counts @ k_ff) * counts).sum(1) / pairs  # (B+1,)
        across = counts @ polynomial_kernel(f, ref).mean(1) / N  # (B+1,)
        kid_values = within + within_ref - 2 * across
        out[name] = {"fid": fid[1:], "kid": kid_values[1:], "fid_point": float(fid[0]), "kid_point": float(kid_values[0])}
    return out


def wilson_interval(k, n, z=1.959964):
    """Wilson's score interval for a proportion, k successes in n trials: (low, high), 95 % for the default z.

    Unlike the normal approximation or a bootstrap, it stays honest at k = 0 or k = n (500 of 500 gives
    [0.992, 1], not [1, 1]).
    """
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    centre = (k + z**2 / 2) / (n + z**2)
    half = z * math.sqrt(k * (n - k) / n + z**2 / 4) / (n + z**2)
    return centre - half, centre + half


def newcombe_interval(k1, n1, k2, n2, z=1.959964):
    """Newcombe's hybrid score interval for p1 - p2, two proportions from independent samples: (low, high).

    k1 of n1 and k2 of n2 successes; 95 % for the default z (Newcombe 1998, method 10, built from the two Wilson
    intervals). Two shares whose own intervals overlap can still differ: this interval says whether they do.
    """
    p1, p2 = k1 / n1, k2 / n2
    (low1, high1), (low2, high2) = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    return (p1 - p2 - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2),
            p1 - p2 + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2))


def percentile_interval(values, point=None, confidence=0.95):
    """(low, high): the central `confidence` interval of bootstrap values (B,), as floats.

    With `point` (the estimate from the original rows), the interval is shifted by the bootstrap's bias
    mean(values) - point. FID needs this: a resample repeats rows, so it looks less diverse and its FID
    is biased upwards (often by more than the interval's width at N = 250).
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    shift = 0.0 if point is None else float(values.mean()) - point
    return float(low) - shift, float(high) - shift
