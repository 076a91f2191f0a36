"""`suggest_key`: the nearest known config key for a typo."""

from __future__ import annotations

from omegaconf import OmegaConf

from segen.suggest import suggest_key

CFG = OmegaConf.create({
    "trainer": {"max_epochs": 10, "max_steps": -1, "precision": "32-true"},
    "data": {"batch_size": 128, "num_train": 5000},
    "model": {"optimizer": {"lr": 0.01, "weight_decay": 0.05}, "net": {"widths": [8, 16]}},
    "seed": 42,
    "unresolved": "${oc.env:SEGEN_NO_SUCH_VARIABLE}",
})


def test_typos_get_the_nearest_key():
    assert suggest_key("trainer.max_epoch", CFG) == "trainer.max_epochs"
    assert suggest_key("trainer.max_step", CFG) == "trainer.max_steps"
    assert suggest_key("data.batchsize", CFG) == "data.batch_size"
    assert suggest_key("model.optimizer.weight_decy", CFG) == "model.optimizer.weight_decay"
    assert suggest_key("sed", CFG) == "seed"


def test_a_typo_in_the_group_part_is_found_in_the_whole_tree():
    assert suggest_key("trainr.max_epochs", CFG) == "trainer.max_epochs"


def test_nothing_close_gives_none():
    assert suggest_key("trainer.completely_different", CFG) is None
    assert suggest_key("zzz", CFG) is None
