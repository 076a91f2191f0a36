"""Self-conditioning (`model.latent_code=clusters`): k-means clusters of the training images as
dcgan's latent code, a label source of the conditional path (segen/tasks/clusters.py), a code
prior that follows the cluster sizes, cgan's projection discriminator on the code, and clusters
fitted once per run (kept in checkpoints)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from segen.config import bind_data, build, config_dir
from segen.data.info import DataInfo
from segen.errors import ConfigError
from segen.models import cgan, latent_code
from segen.tasks.clusters import ClusterLabels
from segen.tasks.gan import GANTask
from segen.tasks.kmeans import kmeans, nearest

K = 3


def adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def clustered_task(**kwargs) -> GANTask:
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K, code_input="cbn")
    d = latent_code.discriminator(1, 28, width=4, norm="spectral", code_classes=K, latent_code="clusters")
    return GANTask(g, d, adam, adam, loss="hinge", latent_code_classes=K, latent_code="clusters", **kwargs)


def three_kinds(n: int = 90) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `(n, 1, 28, 28)` images of three kinds (dark, bright top half, bright left half), 1:2:3."""
    gen = torch.Generator().manual_seed(0)
    kinds = torch.tensor([0] * (n // 6) + [1] * (n // 3) + [2] * (n // 2))
    images = torch.randint(0, 40, (n, 1, 28, 28), generator=gen)
    images[kinds == 1, :, :14, :] += 200
    images[kinds == 2, :, :, :14] += 200
    return images.to(torch.uint8), kinds


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labellings group the items alike (cluster numbers are arbitrary)."""
    return torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_kmeans_finds_separated_groups_and_is_seeded():
    gen = torch.Generator().manual_seed(1)
    truth = torch.arange(4).repeat_interleave(50)
    centres = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    x = centres[truth] + torch.randn(200, 2, generator=gen)
    centroids = kmeans(x, 4, seed=5)
    assert same_partition(nearest(x, centroids), truth)
    assert torch.allclose(centroids.sort(dim=0).values, centres.sort(dim=0).values, atol=0.5)
    assert torch.equal(kmeans(x, 4, seed=5), centroids)
    with pytest.raises(ValueError, match="at least 4"):
        kmeans(x[:3], 4)


def test_code_prior_sets_how_often_each_code_is_drawn():
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K, code_input="cbn")
    assert torch.allclose(g.noise_code.prior(), torch.full((K,), 1 / K, dtype=torch.float64))
    prior = torch.tensor([0.1, 0.3, 0.6])
    g.noise_code.set_prior(prior)
    assert torch.allclose(g.noise_code.prior().float(), prior, atol=1e-6)
    z = torch.randn(40000, 8, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(g.code(z), minlength=K).float() / len(z)
    assert torch.allclose(share, prior, atol=0.01)
    wanted = torch.tensor([0, 1, 2, 2, 0])
    assert torch.equal(g.code(g.noise_code.with_codes(z[:5], wanted)), wanted)  # the bin middles of the new prior
    # The prior is saved with the weights.
    state = g.state_dict()
    assert torch.equal(state["noise_code.bounds"], g.noise_code.bounds)
    fresh = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K, code_input="cbn")
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.noise_code.prior().float(), prior, atol=1e-6)


def test_clustered_discriminator_projects_the_code():
    torch.manual_seed(0)
    d = latent_code.discriminator(1, 28, width=4, norm="spectral", code_classes=K, latent_code="clusters")
    assert isinstance(d, cgan.Discriminator) and d.conditioning == "projection" and d.num_classes == K  # cgan's projection D
    assert not hasattr(d, "code_head")  # no InfoGAN Q head: D is conditioned instead
    d.eval()  # spectral norm's power iteration stands still, so every call sees the same weights
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        d.embed.parametrizations.weight.original.normal_()
        logits, code_logits = d.forward_with_class_logits(x, torch.tensor([0, 2]))
        plain = d.net.head(d.features(x)).flatten()
        pooled = d.features(x).sum(dim=(2, 3))
        expected = pooled @ d.embed.weight.t()
    assert code_logits.shape == (2, K) and torch.allclose(code_logits, expected, atol=1e-5)
    assert torch.allclose(logits, plain + expected[[0, 1], [0, 2]], atol=1e-5)
    assert torch.allclose(d(x, torch.tensor([0, 2])), logits, atol=1e-5)
    with pytest.raises(ValueError, match="latent_code"):
        latent_code.discriminator(1, 28, width=4, code_classes=K, latent_code="labels")


class FakeTrainer:
    """What the clustering hooks read from a trainer: one process, the data, the epochs."""

    def __init__(self, images: torch.Tensor, max_epochs: int = 8, max_steps: int = -1):
        self.is_global_zero, self.max_epochs, self.current_epoch = True, max_epochs, 0
        self.max_steps, self.global_step = max_steps, 0
        self.datamodule = type("Data", (), {"split_images": staticmethod(lambda split: images)})()
        self.strategy = type("Strategy", (), {"broadcast": staticmethod(lambda obj, src=0: obj)})()


def attach(task: GANTask, trainer: FakeTrainer) -> None:
    task._trainer = trainer


def test_fit_at_start_sets_clusters_prior_and_real_codes(capsys):
    task = clustered_task(ema_decay=0.99)
    images, kinds = three_kinds()
    attach(task, FakeTrainer(images))
    task.on_fit_start()
    assert bool(task.label_source.clusters.fitted)
    assert "Self-conditioning: 3 k-means clusters of 90 training images (pixels), sizes" in capsys.readouterr().out
    real = images.float() / 127.5 - 1  # what a training batch holds
    codes = task.label_source.clusters.assign(real)
    assert same_partition(codes, kinds)
    sizes = torch.bincount(codes, minlength=K).float() / len(codes)
    assert isinstance(task.label_source, ClusterLabels)
    for net in (task.generator, task.sampler):  # the live generator and its average
        assert torch.allclose(net.noise_code.prior().float(), sizes, atol=1e-6)
    # A resumed run has its clusters: on_fit_start does not refit.
    before = task.label_source.clusters.pixel_centroids.clone()
    attach(task, FakeTrainer(torch.zeros(90, 1, 28, 28, dtype=torch.uint8)))
    task.on_fit_start()
    assert torch.equal(task.label_source.clusters.pixel_centroids, before)
    assert {"label_source.clusters.pixel_centroids", "label_source.clusters.fitted", "generator.noise_code.bounds"} <= set(task.state_dict())


def test_recluster_on_discriminator_features_keeps_codes_matched():
    torch.manual_seed(0)
    task = clustered_task(recluster_at=[0.5])
    images, kinds = three_kinds()
    trainer = FakeTrainer(images, max_epochs=8)
    attach(task, trainer)
    task.on_fit_start()
    real = images.float() / 127.5 - 1
    pixel_codes = task.label_source.clusters.assign(real)
    trainer.current_epoch = 2
    task.on_train_epoch_end()
    assert int(task.label_source.clusters.refits) == 0  # not yet: due after epoch 4 of 8
    trainer.current_epoch = 3
    task.on_train_epoch_end()
    assert int(task.label_source.clusters.refits) == 1 and int(task.label_source.clusters.space) == 1
    # The encoder is a frozen copy of D's feature layers: same outputs, no gradients, eval mode.
    task.discriminator.eval()
    with torch.no_grad():
        assert torch.allclose(task.label_source.clusters.encoder(real[:4]), task.discriminator.features(real[:4]), atol=1e-5)
    assert not any(p.requires_grad for p in task.label_source.clusters.encoder.parameters())
    task.train()
    assert not task.label_source.clusters.encoder.training
    # Codes keep their meaning where the clusters agree (here: three obvious kinds, so everywhere).
    feature_codes = task.label_source.clusters.assign(real)
    assert (feature_codes == pixel_codes).float().mean() > 0.9
    trainer.current_epoch = 7
    task.on_train_epoch_end()
    assert int(task.label_source.clusters.refits) == 1  # one refit was asked for


def test_recluster_at_is_a_share_of_max_steps_when_steps_end_the_run():
    torch.manual_seed(0)
    task = clustered_task(recluster_at=[0.5])
    images, _ = three_kinds()
    trainer = FakeTrainer(images, max_epochs=-1, max_steps=300)  # `trainer.max_steps=300`, epochs unbounded
    attach(task, trainer)
    task.on_fit_start()
    trainer.current_epoch, trainer.global_step = 2, 140
    task.on_train_epoch_end()
    assert int(task.label_source.clusters.refits) == 0  # 140 of 300 steps: not half yet
    trainer.current_epoch, trainer.global_step = 3, 160
    task.on_train_epoch_end()
    assert int(task.label_source.clusters.refits) == 1  # the first epoch end past step 150


def test_match_clusters_keeps_the_most_images_on_their_code():
    from segen.tasks.clusters import match_clusters

    before = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    after = torch.tensor([2, 2, 1, 0, 0, 1, 1, 1])  # new 2 = old 0, new 0 = old 1, new 1 = old 2
    assert match_clusters(before, after, 3).tolist() == [2, 0, 1]


def test_code_loss_trains_d_on_real_clusters_and_g_on_its_codes():
    torch.manual_seed(0)
    task = clustered_task()
    images, kinds = three_kinds(12)
    attach(task, FakeTrainer(images))
    task.on_fit_start()
    real = images.float() / 127.5 - 1
    codes = task.label_source.clusters.assign(real)
    assert torch.equal(task.label_source.real(real, torch.zeros(12)), codes)  # real images carry their cluster, not the data's label
    task.discriminator.eval()  # spectral norm's power iteration stands still between the calls
    logits, losses = task._discriminate(real, codes)
    _, code_logits = task.discriminator.forward_with_class_logits(real, codes)
    assert torch.allclose(losses["code"], F.cross_entropy(code_logits, codes))
    z = torch.randn(4, 8)
    g_labels, fake_codes = task.label_source.fake(task.generator, z, torch.zeros(4))
    assert g_labels is None and torch.equal(fake_codes, task.generator.code(z))  # G reads its code from the noise; D sees it
    assert task._discriminate(task.generator(z).detach(), fake_codes, z)[1] == {}  # D's step on fakes: no code loss
    _, losses = task._discriminate(task.generator(z), fake_codes, z, for_g=True)
    losses["code"].backward()
    assert all(p.grad is not None for p in task.generator.parameters())


def test_settings_are_config_errors():
    g = latent_code.generator(1, 28, latent_dim=8, width=4, code_classes=K)
    q_d = latent_code.discriminator(1, 28, width=4, code_classes=K)  # InfoGAN's Q head
    with pytest.raises(ConfigError, match="model.latent_code=clusters with model.latent_code_classes=3 needs a generator with a 3-value code and a discriminator conditioned on 3 clusters"):
        GANTask(g, q_d, adam, adam, latent_code_classes=K, latent_code="clusters")
    with pytest.raises(ConfigError, match="model.latent_code=labels is not a kind of latent code; use one of: infogan, clusters"):
        GANTask(g, q_d, adam, adam, latent_code_classes=K, latent_code="labels")
    with pytest.raises(ConfigError, match="model.recluster_at needs self-conditioning"):
        GANTask(g, q_d, adam, adam, latent_code_classes=K, recluster_at=[0.5])
    with pytest.raises(ConfigError, match="fractions of the run's epochs between 0 and 1"):
        clustered_task(recluster_at=[1.5])


def test_config_ties_the_code_kind_to_the_discriminator():
    root = OmegaConf.create({"model": OmegaConf.load(config_dir() / "model" / "dcgan.yaml")})
    assert root.model.latent_code == "infogan"
    root.model.latent_code_classes, root.model.latent_code = 4, "clusters"
    bind_data(root.model, DataInfo(name="digits", channels=1, image_size=(28, 28), class_names=tuple("0123456789")))
    task = build(root.model, "model")
    assert isinstance(task.label_source, ClusterLabels) and isinstance(task.discriminator, cgan.Discriminator)
    assert task.label_source.clusters.pixel_centroids.shape == (4, 28 * 28)
    assert task.label_source.clusters.encoder is None  # no reclustering asked for
    root.model.recluster_at = [0.25]
    assert build(root.model, "model").label_source.clusters.encoder is not None


def test_train_self_conditioned_on_mnist_fixture(segen, tmp_path, mnist_root):
    run = tmp_path / "run"
    result = segen(
        "train", "model=dcgan", "data=mnist", f"data.data_dir={mnist_root}", "data.download=false", "data.val_split=50",
        "debug=smoke", "trainer.limit_train_batches=2", "model.generator.width=8", "model.discriminator.width=8",
        "model.latent_code_classes=4", "model.latent_code=clusters", "model.generator.code_input=cbn", "model.recluster_at=[0.5]",
        f"hydra.run.dir={run}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Self-conditioning: 4 k-means clusters of" in result.stdout
    assert "Self-conditioning: reclustered on D's features after epoch 0" in result.stdout
    # The code prior follows the newest clusters' sizes.
    sizes = torch.tensor(json.loads(re.findall(r"sizes (\[[\d, ]+\])", result.stdout)[-1]))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    clusters = "label_source.clusters."
    assert bool(state[clusters + "fitted"]) and state[clusters + "pixel_centroids"].shape == (4, 28 * 28) and int(state[clusters + "refits"]) == 1
    g = latent_code.generator(1, 28, latent_dim=100, width=8, code_classes=4, code_input="cbn")
    g.load_state_dict({k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")})
    assert torch.allclose(g.noise_code.prior().float(), sizes.float() / sizes.sum(), atol=1e-6)  # codes drawn as often as clusters hold images
    out = tmp_path / "samples"
    result = segen("sample", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "n=8", f"out={out}", f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "grid.png").is_file() and len(list(out.rglob("*.png"))) == 8 + 1  # one PNG per image, and the grid


def test_more_clusters_than_training_images_is_a_one_line_error(segen, tmp_path):
    result = segen(
        "train", "model=dcgan", "data=shapes", "debug=smoke", "data.num_train=8", "model.latent_code_classes=10",
        "model.latent_code=clusters", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.latent_code_classes=10 clusters need at least as many training images, but the training split has 7" in result.stderr


def test_every_kind_of_latent_code_has_its_pieces_and_its_discriminator():
    from segen.tasks.gan import LATENT_CODES

    assert set(LATENT_CODES) == set(latent_code.DISCRIMINATORS) == {"infogan", "clusters"}
