"""The shipped MNIST classifier: held-out accuracy, feature shapes, and reference statistics that match the data."""
import re
from pathlib import Path

import pytest
import torch

from course_lib.classifier import (CLASSIFIER_PATH, MNISTClassifier, embed, load_classifier, read_classifier_file,
                                   reference_stats)
from course_lib.metrics import feature_stats, fid_kid, frechet_distance, reference_features
from course_lib.mnist import load_mnist

pytestmark = pytest.mark.usefixtures("one_thread")
CARD = CLASSIFIER_PATH.with_suffix(".md")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


def test_shipped_classifier_is_at_least_97_percent_accurate_on_held_out_digits(classifier):
    images, labels = load_mnist("test", source="shipped")
    _, logits = embed(images, classifier)
    accuracy = float((logits.argmax(1) == labels).float().mean())
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.3f} is below 0.97; retrain with scripts/train_classifier.py"
    meta = read_classifier_file()["meta"]
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9), "the file's recorded accuracy is stale"
    assert f"{100 * meta['test_accuracy']:.1f} %" in CARD.read_text(), "the model card states another accuracy"


def test_features_and_logits_have_the_documented_shapes(classifier):
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    features = classifier.features(x)
    assert features.shape == (3, 64) and (features >= 0).all()
    assert classifier(x).shape == (3, 10)
    assert torch.allclose(embed(x, classifier, batch_size=2)[1], classifier(x), atol=1e-5)
    stored_features, _ = embed(x, classifier)  # what the evaluation scripts keep on disk
    assert torch.allclose(classifier.logits_from_features(stored_features), classifier(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        classifier.features(torch.zeros(3, 28, 28))


def test_reference_stats_match_a_recomputation_from_the_train_split(classifier):
    features = reference_features(classifier)  # embed() of the 4,500 shipped train digits, kept for KID
    assert features.shape == (4500, 64)
    assert features.square().mean().item() == pytest.approx(1.0, rel=1e-3), "feature_scale should give mean square 1"
    mu, sigma = feature_stats(features)
    mu_ref, sigma_ref = reference_stats()
    assert mu_ref.dtype == torch.float64 and mu_ref.shape == (64,) and sigma_ref.shape == (64, 64)
    assert torch.allclose(mu, mu_ref, rtol=1e-4, atol=1e-5)
    assert torch.allclose(sigma, sigma_ref, rtol=1e-4, atol=1e-5)
    assert frechet_distance(mu, sigma, mu_ref, sigma_ref) < 1e-6


def test_fid_separates_real_digits_from_noise_and_from_a_wrong_classifier_setup(classifier):
    """Negative controls: noise and an untrained classifier's statistics are far from the real digits."""
    test, _ = load_mnist("test", source="shipped")
    real = fid_kid(test, classifier, num_subsets=20)
    noise = fid_kid(torch.randn(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)).clamp(-1, 1),
                    classifier, num_subsets=20)
    assert real["fid"] < 0.1 * noise["fid"] and real["kid"] < 0.1 * noise["kid"], (real, noise)
    assert real["classifier_score"] > 8.5, "the balanced real test digits should score close to 10"
    torch.manual_seed(0)
    untrained = MNISTClassifier().eval()
    mu_u, sigma_u = feature_stats(embed(test, untrained)[0])
    assert frechet_distance(mu_u, sigma_u, *reference_stats()) > real["fid"], \
        "features of an untrained net should not match the shipped reference statistics"


def test_shipped_file_is_small_and_loads_with_weights_only():
    assert CLASSIFIER_PATH.stat().st_size < 1_000_000
    torch.load(CLASSIFIER_PATH, weights_only=True)  # plain data only
    params = sum(p.numel() for p in load_classifier().parameters())
    assert re.search(rf"\| parameters \| {params:,} \|", CARD.read_text())
    with pytest.raises(ValueError, match="no classifier file"):
        load_classifier(Path("/nonexistent/classifier.pt"))
