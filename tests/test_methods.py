"""Methods as a config axis: KW and BCP train, certify and pass the audit on digits; their options are checked."""

from pathlib import Path

import pytest
import torch

from gloro.bench.experiment import DataOptions, Experiment
from gloro.bench.stages import attack_experiment, certify_experiment, train_experiment
from gloro.methods import get_method, list_methods
from gloro.schedules import Constant

SETTINGS = {
    "dataset": "digits",
    "architecture": "2C2F",
    "eval_epsilon": 0.3,
    "batch_size": 64,
    "init": "pytorch",
}
BASELINES = {
    "kw": {"train_epsilon": {"kind": "linear", "start": 0.01, "end": 0.3, "epochs": 4}, "epochs": 6},
    "bcp": {
        "train_epsilon": {"kind": "linear", "start": 0.0, "end": 0.3, "epochs": 4},
        "options": {"kappa": {"kind": "linear", "start": 1.0, "end": 0.0, "epochs": 4}},
        "warmup_epochs": 1,
        "power_iterations": 1,
        "epochs": 8,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(BASELINES))
def test_each_baseline_trains_certifies_and_survives_the_audit_on_digits(method, tmp_path):
    settings = {**SETTINGS, **BASELINES[method], "method": method, "certifiers": [method, "global"]}
    experiment = Experiment.from_config(f"digits_{method}", settings)
    device = torch.device("cpu")
    summary = train_experiment(experiment, tmp_path, DataOptions(), device, progress=False)
    assert summary.method["name"] == method and summary.method["label"] == method.upper()
    recipe = summary.method["recipe"]
    assert recipe["loss"] == method and recipe["adam_epsilon"] == get_method(method).adam_epsilon
    assert recipe["epsilon"] == {
        "kind": "linear",
        "start": BASELINES[method]["train_epsilon"]["start"],
        "end": 0.3,
        "epochs": 4,
    }
    certified = certify_experiment(experiment, tmp_path, DataOptions(), device, radii=[0.0, 0.3], batch_size=256)
    assert certified.certifier == method
    rows = {row["certifier"]: row for row in certified.certificates}
    assert set(rows) == {method, "global"}
    assert 0.5 <= rows[method]["vra"] <= rows[method]["clean_accuracy"]
    # never below the global Lipschitz bound; KW's polytope, which the net was trained for, far above it
    assert rows[method]["vra"] >= rows["global"]["vra"]
    assert method != "kw" or rows[method]["vra"] > rows["global"]["vra"] + 0.2
    attacked = attack_experiment(
        experiment, tmp_path, DataOptions(), device, {"steps": 20, "restarts": 1, "step_size": None}
    )
    assert set(attacked.audits) == {method, "global"}
    assert all(audit["violations"] == 0 for audit in attacked.audits.values())
    assert attacked.audit["certifier"] == method and attacked.audit["certified"] == rows[method]["certified"]
    assert attacked.pgd_accuracy >= rows[method]["vra"]  # PGD can only break points the bound leaves uncertified
    # PGD on the labels was the audit's attack on the correctly classified certified points: checked, not rerun
    for name, audit in attacked.audits.items():
        assert 0 < audit["reused_from_earlier_attack"] <= audit["certified"]
        assert audit["reused_from_earlier_attack"] >= round(rows[name]["vra"] * rows[name]["num_points"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "crown"}, "unknown method 'crown'; known methods: gloro, kw, bcp"),
        ({"options": {"kappa": 0.5}}, "method 'gloro' has no option 'kappa'.*\\(options of bcp\\)"),
        ({"kappa": 0.5}, "unknown keys \\['kappa'\\].*own settings go under options: \\(gloro's: trades_lambda"),
        ({"options": {"trades_robust_term": "mse"}}, "trades_robust_term must be ce or kl, got 'mse'"),
        ({"options": {"trades_lambda": {"kind": "linear", "start": 0}}}, "option 'trades_lambda': schedule 'linear'"),
        ({"method": "kw", "loss": "trades"}, "method 'kw' trains with loss kw, not 'trades'"),
        ({"method": "bcp", "options": {"projections": 10}}, "method 'bcp' has no option 'projections'.*of kw"),
        ({"method": "bcp", "options": {"solver_iterations": 2.5}}, "option 'solver_iterations': expected int"),
        ({"method": "kw", "options": {"projections": 0}}, "projections must be a whole number >= 1"),
        ({"certifiers": ["local", "global"]}, "must be 'global' for method 'gloro'"),
        ({"method": "kw", "certifiers": ["kw", "kwx"]}, "unknown certifiers \\['kwx'\\]"),
        ({"learning_rate": {"kind": "multistep", "initial": 0.1, "factor": 0.1, "milestones": [5, 2]}}, "increasing"),
        ({"eval_every": 0}, "eval_every must be a whole number >= 1, got 0"),
    ],
)
def test_method_options_are_checked_when_the_config_is_read(change, message):
    with pytest.raises(ValueError, match=message):
        Experiment.from_config("bad", {**SETTINGS, "train_epsilon": 0.3, "epochs": 2, **change})


def test_every_method_names_a_registered_certifier_and_its_table_labels():
    from gloro.certify import list_certifiers

    names = list_methods()
    assert names[:3] == ["gloro", "kw", "bcp"]  # the paper's methods first, in its order
    assert {"emma", "aol", "sll", "cpl"} <= set(names)  # the successors the package ships; a new one adds itself
    assert [get_method(name).order for name in names] == sorted(get_method(name).order for name in names)
    for name in names:
        method = get_method(name)
        assert method.certifier in list_certifiers() and len(method.labels) == len(method.losses)
    assert (
        Experiment.from_config("t", {**SETTINGS, "train_epsilon": 0.3, "epochs": 1, "loss": "trades"}).label
        == "GloRo-T"
    )


def test_sgd_with_clipping_moves_the_weights_by_at_most_lr_times_the_clip():
    """KW's CIFAR optimizer: SGD whose gradient's global norm is clipped before the step."""
    import gloro
    from gloro.data import load_digits

    x, y = load_digits("train")
    moved = {}
    for clip in (0.01, None):
        net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3, seed=0)
        before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
        lr = Constant(0.1)
        recipe = gloro.TrainingRecipe(1, len(y), learning_rate=lr, optimizer="sgd", clip_grad_norm=clip, seed=0)
        gloro.train(net, x, y, recipe, progress=False)  # one step: the whole set is one batch
        moved[clip] = float((torch.cat([p.detach().flatten() for p in net.parameters()]) - before).norm())
    assert moved[0.01] <= 0.1 * 0.01 * (1 + 1e-4)  # lr × clip, up to float32 rounding of the weights
    assert moved[None] > 10 * moved[0.01]


def test_optimizer_settings_are_checked():
    with pytest.raises(ValueError, match="unknown optimizer settings \\['nesterov'\\]"):
        Experiment.from_config(
            "bad", {**SETTINGS, "train_epsilon": 0.3, "epochs": 1, "optimizer": {"kind": "sgd", "nesterov": True}}
        )
    with pytest.raises(ValueError, match="momentum is an SGD setting"):
        Experiment.from_config(
            "bad", {**SETTINGS, "train_epsilon": 0.3, "epochs": 1, "optimizer": {"kind": "adam", "momentum": 0.9}}
        )
    sgd = Experiment.from_config(
        "ok", {**SETTINGS, "train_epsilon": 0.3, "epochs": 1, "optimizer": {"kind": "sgd", "momentum": 0.9}}
    )
    assert sgd.recipe().optimizer == "sgd" and sgd.recipe().momentum == 0.9


@pytest.fixture
def registry(monkeypatch):
    """The method registry, restored after the test: a method registered in it is gone afterwards."""
    from gloro.methods import registry as module

    monkeypatch.setattr(module, "_METHODS", dict(module._METHODS))
    return module


def test_a_method_registered_from_outside_the_package_trains_and_is_tabled_without_editing_gloro(registry, monkeypatch):
    """The extension point: a `Method` subclass in the user's own module (tests/plugins/tempered.py, which the
    pipeline test also runs to Table 1), with options of its own, found by name by the config, the training
    loop (its schedule recorded in the history) and the table order."""
    import runpy

    import gloro
    from gloro.bench.stages import recipe_settings
    from gloro.data import load_digits
    from gloro.methods import table_labels

    # executed afresh, so that its @register_method fills the registry this test restores afterwards
    tempered = runpy.run_path(str(Path(__file__).with_name("plugins") / "tempered.py"))["Tempered"]
    calls = []
    objective = tempered.objective

    def spied(self, net, x, y, recipe, values):
        calls.append(values["temperature"])
        return objective(self, net, x, y, recipe, values)

    monkeypatch.setattr(tempered, "objective", spied)
    temperature = {"kind": "linear", "start": 1.0, "end": 3.0, "epochs": 2}
    settings = {**SETTINGS, "train_epsilon": 0.3, "epochs": 2, "method": "tempered"}
    experiment = Experiment.from_config("t", {**settings, "options": {"temperature": temperature}})
    assert experiment.loss == "tempered" and experiment.label == "Tempered" and experiment.certifiers == ("global",)
    labels = table_labels()  # order 50: after the paper's methods and EMMA (30), before AOL (55)
    assert labels.index("EMMA") + 1 == labels.index("Tempered") == labels.index("AOL") - 1
    assert recipe_settings(experiment.recipe())["options"] == {"temperature": temperature}  # recorded as given
    with pytest.raises(ValueError, match="method 'tempered' has no option 'temprature'; its options: temperature"):
        Experiment.from_config("t", {**settings, "options": {"temprature": 2.0}})
    x, y = load_digits("train")
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3, seed=0)
    history = gloro.train(net, x[:256], y[:256], experiment.recipe(), progress=False)
    assert calls == [1.0] * 4 + [3.0] * 4  # four batches of 64 an epoch, each at its epoch's temperature
    assert [row["temperature"] for row in history] == [1.0, 3.0]
    assert all(row["kappa"] is None and row["lambda"] is None for row in history)  # the others' columns stay


def test_a_method_that_contradicts_the_registry_is_refused(registry):
    from gloro.methods import Method, register_method

    class Clash(Method):
        name, losses, labels, certifier = "clash", ("trades",), ("Clash",), "global"

    with pytest.raises(ValueError, match=r"losses \['trades'\] already belong to 'gloro'"):
        register_method(Clash)

    class Unlabelled(Method):
        name, losses, labels, certifier = "unlabelled", ("a", "b"), ("A",), "global"

    with pytest.raises(ValueError, match="one table label per loss"):
        register_method(Unlabelled)

    class Nameless(Method):
        losses, labels, certifier = ("x",), ("X",), "global"

    with pytest.raises(TypeError, match="must set name"):
        register_method(Nameless)
    assert "clash" not in registry.list_methods() and "unlabelled" not in registry.list_methods()
