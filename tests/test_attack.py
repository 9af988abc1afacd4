"""Attacks through torchattacks: real (they break an undefended model), seeded without touching the global RNG,
settings recorded; the soundness audit passes a sound GloroNet and catches a planted unsound bound."""

import copy
import dataclasses
import inspect
import json

import pytest
import torch
from torch import nn

import gloro
from gloro.attack import AttackReport, autoattack_accuracy, pgd_accuracy, pgd_l2, robust_accuracy
from gloro.audit import SoundnessError, audit_sensitivity, audit_soundness
from gloro.data import load_digits

EPSILON = 0.3


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def plain_mlp(digits):
    """An undefended MLP trained with plain cross-entropy on digits (≈95% test accuracy)."""
    (x, y), _ = digits
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(digits):
    """2C2F trained on digits at ε = 0.45 and frozen (sound constants), evaluated at ε = 0.3."""
    (x, y), _ = digits
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.45, eval_epsilon=EPSILON, seed=0)
    gloro.train(net, x, y, gloro.TrainingRecipe(epochs=12, batch_size=64, seed=0), progress=False)
    return net.freeze()


def test_proven_points_count_robust_unattacked_and_the_rest_are_attacked_as_alone(plain_mlp, digits):
    _, (x, y) = digits
    x, y = x[:120], y[:120]
    correct = (plain_mlp(x).argmax(1) == y).nonzero().flatten()
    proven = torch.zeros(len(y), dtype=torch.bool)
    proven[correct[::2]] = True  # stand-ins for certified points: PGD would break most of them
    settings = {"steps": 10, "restarts": 1, "batch_size": 32, "seed": 3, "progress": False}
    report = pgd_accuracy(plain_mlp, x, y, 1.0, proven=proven, **settings)
    assert report.metrics["proven_not_attacked"] == int(proven.sum()) > 0
    assert report.robust[proven].all() and (report.distance[proven] == 0).all()
    assert torch.equal(report.adversarial_predictions[proven], y[proven])
    alone = pgd_accuracy(plain_mlp, x[~proven], y[~proven], 1.0, **settings)
    assert torch.equal(report.robust[~proven], alone.robust)  # the others: exactly as if attacked by themselves
    assert torch.equal(report.distance[~proven], alone.distance)
    assert alone.robust.double().mean() < 0.3  # the attack is real, so skipping the proven ones is what saved them
    expected = (int(proven.sum()) + int(alone.robust.sum())) / len(y)
    assert report.metrics["robust_accuracy"] == pytest.approx(expected)
    wrong = (plain_mlp(x).argmax(1) != y).nonzero().flatten()[:1]
    marked = proven.clone()
    marked[wrong] = True
    with pytest.raises(ValueError, match="misclassified"):
        pgd_accuracy(plain_mlp, x, y, 1.0, proven=marked, **settings)
    with pytest.raises(ValueError, match="one flag per point"):
        pgd_accuracy(plain_mlp, x, y, 1.0, proven=proven[:-1], **settings)


def test_pgd_breaks_an_undefended_model(plain_mlp, digits):
    _, (x, y) = digits
    state = torch.get_rng_state()
    report = pgd_accuracy(plain_mlp, x, y, 1.0, steps=20, restarts=1, batch_size=128, progress=False)
    assert torch.equal(state, torch.get_rng_state()), "the attack must not touch the global RNG"
    assert isinstance(report, AttackReport)
    metrics = report.metrics
    assert metrics["clean_accuracy"] > 0.85
    assert metrics["robust_accuracy"] < 0.3  # the attack is real: most correct points are flipped
    assert metrics["robust_accuracy"] == pytest.approx(float(report.robust.double().mean()))
    assert metrics["max_distance"] <= 1.0 * (1 + 1e-5)
    settings = metrics["settings"]
    assert (settings["class"], settings["steps"], settings["restarts"], settings["seed"]) == ("PGDL2", 20, 1, 0)
    assert settings["step_size"] == pytest.approx(2.5 * 1.0 / 20)
    json.dumps(metrics, allow_nan=False)


def test_pgd_is_seeded_and_batching_keeps_points_in_order(plain_mlp, digits):
    _, (x, y) = digits
    x, y = x[:64], y[:64]
    first = pgd_l2(plain_mlp, x, y, 0.5, steps=10, restarts=2, seed=3, batch_size=16)
    again = pgd_l2(plain_mlp, x, y, 0.5, steps=10, restarts=2, seed=3, batch_size=16)
    other = pgd_l2(plain_mlp, x, y, 0.5, steps=10, restarts=2, seed=4, batch_size=16)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert float((first - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    whole = pgd_l2(plain_mlp, x, y, 0.5, steps=10, restarts=1, seed=3)  # old call form: one batch
    assert whole.shape == x.shape


def test_pgd_attacks_the_clean_logits_of_a_gloro_net(trained, digits):
    _, (x, y) = digits
    report = pgd_accuracy(trained, x[:64], y[:64], steps=5, restarts=1, progress=False)
    assert report.metrics["epsilon"] == EPSILON  # the net's eval ε by default
    with torch.no_grad():
        clean = trained.predict_clean(x[:64]).argmax(1)
    assert report.metrics["clean_accuracy"] == pytest.approx(float((clean == y[:64]).double().mean()))
    assert report.metrics["robust_accuracy"] <= report.metrics["clean_accuracy"]


def test_autoattack_sets_every_parameter_and_takes_the_class_count_from_the_net(trained, digits):
    _, (x, y) = digits
    state = torch.get_rng_state()
    report = autoattack_accuracy(
        trained, x[:24], y[:24], steps=5, square_queries=20, batch_size=12, seed=1, progress=False
    )
    assert torch.equal(state, torch.get_rng_state()), "APGD, FAB and Square reseed torch; it must not leak"
    settings = report.metrics["settings"]
    assert (settings["version"], settings["norm"], settings["eps"]) == ("standard", "L2", EPSILON)
    assert settings["num_classes"] == trained.num_classes == 10
    assert settings["target_classes"] == 9
    names = [component["name"] for component in settings["components"]]
    assert names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    apgd, apgd_t, fab_t, square = settings["components"]
    assert apgd["steps"] == apgd_t["steps"] == fab_t["steps"] == 5
    assert apgd_t["n_classes"] == fab_t["n_classes"] == 10  # torchattacks: targets = n_classes − 1
    assert (square["n_queries"], square["p_init"], square["resc_schedule"]) == (20, 0.8, False)
    assert all(component["seed"] == 1 and component["eps"] == EPSILON for component in settings["components"])
    assert report.metrics["robust_accuracy"] <= report.metrics["clean_accuracy"]
    json.dumps(report.metrics, allow_nan=False)


def test_autoattack_defaults_follow_the_original_protocol_and_fewer_classes_cap_the_targets(digits):
    _, (x, _) = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    labels = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(0))
    report = autoattack_accuracy(model, x[:6], labels, 0.5, steps=2, square_queries=5, progress=False)
    settings = report.metrics["settings"]
    assert (settings["num_classes"], settings["target_classes"]) == (5, 4)  # inferred from the logits
    assert settings["components"][1]["n_classes"] == settings["components"][2]["n_classes"] == 5
    with pytest.raises(ValueError, match="at least 4 classes"):
        autoattack_accuracy(model[:-1] + nn.Sequential(nn.Linear(16, 3)), x[:2], labels[:2] % 3, 0.5, progress=False)
    defaults = inspect.signature(autoattack_accuracy).parameters
    assert (defaults["steps"].default, defaults["square_queries"].default) == (100, 5000)


def test_a_sound_gloro_net_has_no_violations(trained, digits):
    _, (x, _) = digits
    summary = audit_soundness(trained, x, steps=100, restarts=5, batch_size=128, progress=False)
    assert summary["certified"] > 100
    assert summary["violations"] == 0 and summary["violation_indices"] == []
    assert summary["max_distance"] <= EPSILON * (1 + 1e-5)
    assert (summary["settings"]["steps"], summary["settings"]["restarts"]) == (100, 5)
    json.dumps(summary, allow_nan=False)


def test_a_plant_just_past_the_reported_sensitivity_fails_the_audit_and_saves_the_indices(trained, digits, tmp_path):
    """The audit reports how far below K_ij a planted bound must be to be caught; a plant 2% past it is."""
    _, (x, y) = digits
    x, y = x[:150], y[:150]
    sound = trained.certify(x)
    pgd = pgd_accuracy(trained.model, x, y, trained.eval_epsilon, steps=50, restarts=2, seed=0, progress=False)
    sensitivity = audit_sensitivity(
        sound.radius, pgd.adversarial_predictions != sound.predictions, trained.eval_epsilon
    )
    assert sensitivity["witnesses"] > 0 and 1 < sensitivity["factor"] < 10
    unsound = copy.deepcopy(trained)
    constants = trained.sound_constants()
    planted = constants.margin_lipschitz / (sensitivity["factor"] * 1.02)
    unsound.frozen_constants = dataclasses.replace(constants, margin_lipschitz=planted)
    path = tmp_path / "audit" / "violations.json"
    with pytest.raises(SoundnessError, match="unsound") as caught:
        audit_soundness(unsound, x, steps=50, restarts=2, seed=0, violations_path=path, progress=False)
    assert path.is_file() and not list(path.parent.glob(".*.part"))
    saved = json.loads(path.read_text())
    assert saved["violation_indices"] == caught.value.indices and caught.value.path == path
    assert len(caught.value.indices) > 0
    # every offender was certified only by the planted bound, and the attack stayed inside its radius
    honest = trained.certify(x).certified
    assert not honest[caught.value.indices].any()
    assert all(point["distance"] <= point["radius"] for point in saved["points"])
    assert all(point["prediction"] != point["adversarial_prediction"] for point in saved["points"])


def test_an_audit_given_the_pgd_run_reuses_its_examples_and_still_catches_a_plant(trained, digits):
    """Where a certified point's label is its prediction, PGD on the labels was the audit's attack: its example
    is checked, only the other certified points are attacked again, and a planted bound is still caught."""
    _, (x, y) = digits
    x, y = x[:150], y[:150]
    pgd = pgd_accuracy(trained.model, x, y, trained.eval_epsilon, steps=50, restarts=2, seed=0, progress=False)
    sound = trained.certify(x)
    summary = audit_soundness(trained, x, earlier=pgd, steps=50, restarts=2, progress=False)
    certified_right = int((sound.certified & (sound.predictions == y)).sum())
    assert summary["violations"] == 0 and summary["certified"] == int(sound.certified.sum())
    assert 0 < summary["reused_from_earlier_attack"] == certified_right
    assert summary["max_distance"] <= EPSILON * (1 + 1e-5)
    sensitivity = audit_sensitivity(sound.radius, pgd.adversarial_predictions != sound.predictions, EPSILON)
    unsound = copy.deepcopy(trained)
    constants = trained.sound_constants()
    planted = constants.margin_lipschitz / (sensitivity["factor"] * 1.02)
    unsound.frozen_constants = dataclasses.replace(constants, margin_lipschitz=planted)
    with pytest.raises(SoundnessError, match="unsound") as caught:
        audit_soundness(unsound, x, earlier=pgd, steps=50, restarts=2, progress=False)
    assert len(caught.value.indices) > 0 and not sound.certified[caught.value.indices].any()
    with pytest.raises(ValueError, match=r"differ from the audit's in \['restarts'\]"):
        audit_soundness(trained, x, earlier=pgd, steps=50, restarts=3, progress=False)
    with pytest.raises(ValueError, match="covered 150 points"):
        audit_soundness(trained, x[:100], earlier=pgd, steps=50, restarts=2, progress=False)


def test_a_conv_net_is_attacked_in_channels_last_and_left_in_its_own_layout(digits):
    _, (x, y) = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    before = [(p.data_ptr(), p.stride(), p.detach().clone()) for p in model.parameters()]
    seen = []
    model[0].register_forward_pre_hook(
        lambda layer, inputs: seen.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)
            and layer.weight.is_contiguous(memory_format=torch.channels_last)
        )
    )
    report = pgd_accuracy(model, x[:20], y[:20], 0.5, steps=3, restarts=1, progress=False)
    assert any(seen) and report.metrics["max_distance"] <= 0.5 * (1 + 1e-5)
    for parameter, (pointer, stride, values) in zip(model.parameters(), before, strict=True):
        assert parameter.data_ptr() == pointer and parameter.stride() == stride and torch.equal(parameter, values)


def test_attack_inputs_are_checked(plain_mlp, digits):
    _, (x, y) = digits
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd_accuracy(plain_mlp, x * 2, y, 0.5, progress=False)
    with pytest.raises(ValueError, match="epsilon is required"):
        pgd_accuracy(plain_mlp, x, y, progress=False)
    with pytest.raises(ValueError, match="unknown attack"):
        robust_accuracy(plain_mlp, x, y, 0.5, attack="fgsm", progress=False)
    with pytest.raises(TypeError, match="unknown PGD options"):
        robust_accuracy(plain_mlp, x, y, 0.5, attack="pgd", iterations=3, progress=False)
    with pytest.raises(ValueError, match="target_classes"):
        autoattack_accuracy(plain_mlp, x[:2], y[:2], 0.5, target_classes=10, progress=False)
