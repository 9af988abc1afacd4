"""A training method from outside the package, as a user writes one: cross-entropy on logits divided by a
temperature that follows a schedule, with the ⊥ logit, certified by the global bound. The pipeline test
names this file under `plugins:` and runs it to Table 1 without any edit to gloro/ or workflow/."""

from dataclasses import dataclass

import torch.nn.functional as F

from gloro.methods import Method, register_method
from gloro.methods.options import schedule_option
from gloro.schedules import Schedule


@dataclass(frozen=True)
class TemperedOptions:
    temperature: Schedule = schedule_option(1.0, "divides every logit, ⊥ included, before the cross-entropy")


@register_method
class Tempered(Method):
    name = "tempered"
    losses = ("tempered",)
    labels = ("Tempered",)
    certifier = "global"
    options_class = TemperedOptions
    order = 50
    reference = "tests/plugins/tempered.py"
    schedule_columns = ("temperature",)

    def epoch_values(self, recipe, epoch):
        return {"temperature": recipe.options.temperature(epoch)}

    def objective(self, net, x, y, recipe, values):
        logits = net(x)
        loss = F.cross_entropy(logits / values["temperature"], y)
        return loss, logits[:, :-1], logits.argmax(1) == y
