"""Checkpoints written before the GAN family was split by idea (segen 0.1.0's layout) still load:
the old state-dict keys and model targets map onto today's modules, to identical outputs; and the
EMA (torch's AveragedModel) keeps the hand-written average's warm-up."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf

from segen.checkpoint import KEY, checkpoint_config
from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.models import dcgan

DIGITS = DataInfo(name="digits", channels=1, image_size=(28, 28), class_names=tuple("0123456789"))
SMALL = {"generator.width": 4, "discriminator.width": 4, "generator.latent_dim": 8, "ema_decay": 0.9}
VARIANTS = {
    "dcgan": ("dcgan", {}),
    "cgan": ("cgan", {}),
    "infogan": ("dcgan", {"latent_code_classes": 4}),
    "infogan_cbn": ("dcgan", {"latent_code_classes": 4, "generator.code_input": "cbn"}),
    "self_conditioned": ("dcgan", {"latent_code_classes": 4, "latent_code": "clusters", "generator.code_input": "cbn",
                                   "discriminator.norm": "spectral", "loss": "hinge", "recluster_at": [0.5]}),
}

# Today's key -> segen 0.1.0's key (the layout before the split), by regular expression.
TO_OLD = [
    (r"^generator_ema\.n_averaged$", "ema_updates"),
    (r"^generator_ema\.module\.", "generator_ema."),
    (r"^(generator(?:_ema)?)\.net\.net\.layers\.", r"\1.layers."),  # a coded generator: its cgan net's DCGAN layers
    (r"^(generator(?:_ema)?)\.noise_code\.bounds$", r"\1.code_bounds"),
    (r"^label_source\.clusters\.", "clusters."),
]
SELF_CONDITIONED_D = [(r"^discriminator\.net\.", "discriminator."), (r"^discriminator\.embed\.", "discriminator.code_embed.")]


def model_config(kind: str, overrides: dict):
    root = OmegaConf.create({"model": OmegaConf.load(config_dir() / "model" / f"{kind}.yaml")})
    for key, value in {**SMALL, **overrides}.items():
        OmegaConf.update(root, f"model.{key}", value)
    bind_data(root.model, DIGITS)
    return root.model


def old_layout(state: dict, self_conditioned: bool) -> dict:
    rules = TO_OLD + (SELF_CONDITIONED_D if self_conditioned else [])
    out = {}
    for key, value in state.items():
        for pattern, old in rules:
            key = re.sub(pattern, old, key)
        out[key] = value - 1 if key == "ema_updates" else value  # the average's copy counted as one
    return out


def trained_a_little(kind: str, overrides: dict):
    torch.manual_seed(0)
    task = build(model_config(kind, overrides), "model")
    with torch.no_grad():  # weights, buffers and the average all away from their init
        for p in task.generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in task.discriminator.parameters():
            p.add_(0.05 * torch.randn_like(p))
        task.step_ema()
        task.step_ema()
        if hasattr(task.label_source, "clusters"):
            task.label_source.clusters.pixel_centroids.normal_()
            task.label_source.clusters.fitted.fill_(True)
            task.generator.noise_code.set_prior(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    return task


def outputs(task) -> dict[str, torch.Tensor]:
    task.eval()
    gen = torch.Generator().manual_seed(1)
    z, x = torch.randn(6, task.latent_dim, generator=gen), torch.rand(6, 1, 28, 28, generator=gen) * 2 - 1
    labels = torch.arange(6) % 4
    out = {"sample": task.sample(z, labels if task.conditional else None), "live": task._generate(task.generator, z, labels if task.conditional else None)}
    real_labels = task.label_source.real(x, labels)
    with torch.no_grad():
        out["d"] = task._discriminate(x, real_labels)[0]
    if real_labels is not None:
        out["real_labels"] = real_labels
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_old_layout_state_dict_loads_to_identical_outputs(variant):
    kind, overrides = VARIANTS[variant]
    task = trained_a_little(kind, overrides)
    state = task.state_dict()
    old = old_layout(state, variant == "self_conditioned")
    if variant != "dcgan":
        assert set(old) != set(state)  # the layouts really differ
    assert "ema_updates" in old and not any(k.startswith("generator_ema.module.") for k in old)
    fresh = build(model_config(kind, overrides), "model")
    fresh.load_state_dict(old)  # strict: every old key has its place
    assert fresh.state_dict().keys() == state.keys()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
    assert fresh.ema_updates == task.ema_updates == 2
    expected, got = outputs(task), outputs(fresh)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_old_model_targets_are_pointed_at_their_new_place():
    cfg = OmegaConf.create({"model": model_config("dcgan", {"latent_code_classes": 4})})
    cfg.model.generator._target_ = "segen.models.dcgan.Generator"  # as segen 0.1.0 wrote it
    cfg.model.discriminator._target_ = "segen.models.dcgan.Discriminator"
    ckpt = {KEY: {"config": OmegaConf.to_yaml(cfg), "choices": {"model": "dcgan"}}}
    restored, choices = checkpoint_config(ckpt)
    assert restored.model.generator._target_ == "segen.models.latent_code.generator"
    assert restored.model.discriminator._target_ == "segen.models.latent_code.discriminator"
    assert choices == {"model": "dcgan"}
    # Today's targets, and a dcgan D of today's form (no code keys), are left alone.
    plain = OmegaConf.create({"model": {"discriminator": {"_target_": "segen.models.dcgan.Discriminator", "channels": 1}}})
    assert checkpoint_config({KEY: {"config": OmegaConf.to_yaml(plain)}})[0].model.discriminator._target_ == "segen.models.dcgan.Discriminator"


def test_ema_is_the_warmed_up_average_of_every_weight_and_buffer():
    """AveragedModel + get_ema_multi_avg_fn against the average written out by hand: at the n-th
    update, ema = lerp(ema, live, 1 - min(decay, (1 + n) / (10 + n))), BatchNorm's statistics too,
    its counters copied; the average's weights stay fp32."""
    torch.manual_seed(0)
    task = build(model_config("dcgan", {"ema_decay": 0.95}), "model")
    reference = {k: v.clone() for k, v in task.generator.state_dict().items()}
    for n in range(1, 6):
        with torch.no_grad():
            for p in task.generator.parameters():
                p.add_(torch.randn_like(p))
            task.generator(torch.randn(4, 8))  # BatchNorm's running statistics move (train mode)
        task.step_ema()
        decay = min(0.95, (1 + n) / (10 + n))
        for k, live in task.generator.state_dict().items():
            reference[k] = reference[k].lerp(live, 1 - decay) if live.is_floating_point() else live.clone()
    average = task.sampler.state_dict()
    assert task.ema_updates == 5 and average.keys() == reference.keys()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in task.sampler.modules())
    for k, v in reference.items():
        assert torch.allclose(average[k], v, rtol=0, atol=1e-6), k
        assert average[k].dtype == (torch.float32 if v.is_floating_point() else torch.long)
    assert isinstance(task.sampler, dcgan.Generator) and not any(p.requires_grad for p in task.sampler.parameters())
