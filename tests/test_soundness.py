"""Certificates on real data survive a strong attack; a planted unsound bound does not."""

import pytest
import torch

import gloro
from gloro.attack import pgd_accuracy, pgd_l2
from gloro.audit import audit_sensitivity
from gloro.data import load_digits
from gloro.margin import certify_logits

EPSILON = 0.3


@pytest.fixture(scope="module")
def trained_run():
    """2C2F trained_run on digits for a few epochs at ε = 0.45, frozen, with the test split."""
    x_train, y_train = load_digits("train")
    model = gloro.create_model("2C2F", (1, 8, 8), 10, seed=0)
    net = gloro.GloroNet(model, 0.45, eval_epsilon=EPSILON, power_iterations=10, seed=0)
    recipe = gloro.TrainingRecipe(epochs=15, batch_size=64, seed=0)
    history = gloro.train(net, x_train, y_train, recipe, progress=False)
    return net.freeze(), history, load_digits("test")


@pytest.mark.slow
def test_training_improves_loss_and_vra(trained_run):
    _, history, _ = trained_run
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["vra"] > history[0]["vra"]
    assert all(row["epsilon"] == 0.45 and row["seconds"] > 0 for row in history)


@pytest.mark.slow
def test_every_certified_point_survives_strong_pgd(trained_run):
    net, _, (x, y) = trained_run
    certificate = net.certify(x)
    report = gloro.evaluate(net, x, y)
    assert report["vra"] >= 0.4  # a meaningful share of the test set is certified and correct
    assert report["vra"] <= report["clean_accuracy"]
    certified = certificate.certified
    predictions = certificate.predictions[certified]
    # attack the *prediction* (not the label): a certificate says the prediction cannot change
    adversarial = pgd_l2(net.model, x[certified], predictions, EPSILON, steps=100, restarts=5)
    distance = (adversarial - x[certified]).flatten(1).norm(dim=1)
    assert float(distance.max()) <= EPSILON * (1 + 1e-5)
    with torch.no_grad():
        flipped = net.predict_clean(adversarial).argmax(1) != predictions
    assert int(flipped.sum()) == 0, f"certified points broken by PGD: {flipped.nonzero().flatten().tolist()}"


@pytest.mark.slow
def test_a_plant_just_past_the_audit_sensitivity_is_caught_by_the_attack(trained_run):
    """K scaled down by 2% more than the audit's reported sensitivity certifies a point PGD then breaks."""
    net, _, (x, y) = trained_run
    sound = net.certify(x)
    attacked = pgd_accuracy(net.model, x, y, EPSILON, steps=100, restarts=2, progress=False)
    sensitivity = audit_sensitivity(sound.radius, attacked.adversarial_predictions != sound.predictions, EPSILON)
    assert sensitivity["witnesses"] > 0
    constants = net.sound_constants()
    planted = constants.margin_lipschitz / (sensitivity["factor"] * 1.02)
    with torch.no_grad():
        unsound = certify_logits(net.predict_clean(x), planted, EPSILON, offsets=constants.offsets)
    extra = unsound.certified & ~sound.certified
    assert int(extra.sum()) > 0
    adversarial = pgd_l2(net.model, x[extra], unsound.predictions[extra], EPSILON, steps=100, restarts=2)
    with torch.no_grad():
        flipped = net.predict_clean(adversarial).argmax(1) != unsound.predictions[extra]
    assert int(flipped.sum()) > 0
