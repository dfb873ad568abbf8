"""dA, cA, RBM, SdA and DBN end to end through the CLI on digits: metrics, images and checkpoints in MLflow."""
import numpy as np
import pytest
from PIL import Image

from dlexp import safe_pickle as checkpoint
from runs import download, history


def image(run, name, store, dest):
    return np.asarray(Image.open(download(run, f"images/{name}", store, dest)))


def assert_grid(img, tile, rows, cols):
    """A tile_raster_images grid of rows x cols tiles of tile x tile pixels, 1-pixel spacing, scaled s times."""
    h, w = (tile + 1) * rows - 1, (tile + 1) * cols - 1
    s = img.shape[1] // w
    assert s >= 1 and img.shape == (s * h, s * w), img.shape
    spacing_col = img[:, s * tile:s * (tile + 1)]  # the black line after the first column of tiles
    assert spacing_col.max() == 0


def test_da_costs_images_and_checkpoint(dlexp, store, tmp_path):
    run = dlexp("model=da", "dataset=digits", "model.n_hidden=100", "model.corruption_level=0.3",
                "model.pretrain_epochs=4", "model.image_every=2")
    assert run.info.status == "FINISHED"
    costs = [m.value for m in history(run, "pretrain/cost", store)]
    assert len(costs) == 4 and costs[-1] < costs[0]
    assert_grid(image(run, "filters.png", store, tmp_path / "a"), 8, 10, 10)
    assert_grid(image(run, "epoch_002_filters.png", store, tmp_path / "b"), 8, 10, 10)
    assert_grid(image(run, "reconstructions.png", store, tmp_path / "c"), 8, 3, 10)  # inputs, corrupted, output
    ckpt = checkpoint.load(download(run, "checkpoint/pretrained_params.pkl", store, tmp_path / "d"))
    assert ckpt["model"]["corruption_level"] == 0.3 and ckpt["params"]["W"].shape == (100, 64)


def test_ca_logs_reconstruction_and_contraction(dlexp, store):
    run = dlexp("model=ca", "dataset=digits", "model.n_hidden=64", "model.pretrain_epochs=3")
    for key in ("pretrain/cost", "pretrain/reconstruction", "pretrain/contraction"):
        assert len(history(run, key, store)) == 3
    costs = [m.value for m in history(run, "pretrain/cost", store)]
    assert costs[-1] < costs[0]


def test_rbm_pcd_samples_image(dlexp, store, tmp_path):
    run = dlexp("model=rbm", "dataset=digits", "model.n_hidden=64", "model.k=5", "model.pretrain_epochs=3",
                "model.n_chains=12", "model.n_samples=4", "model.plot_every=50")
    assert len(history(run, "pretrain/cost", store)) == 3  # pseudo-likelihood per epoch
    assert_grid(image(run, "samples.png", store, tmp_path / "s"), 8, 4, 12)
    assert_grid(image(run, "filters.png", store, tmp_path / "f"), 8, 8, 8)


SDA = ["model=sda", "dataset=digits", "model.hidden_layers_sizes=[100,100]", "model.corruption_levels=[0.1,0.2]",
       "model.pretrain_epochs=5", "model.pretrain_lr=0.1", "optimizer.lr=0.1", "optimizer.batch_size=20",
       "trainer.max_epochs=30"]


def test_sda_pretrains_then_finetunes_and_reloads(dlexp, store, tmp_path):
    run = dlexp(*SDA)
    m = run.data.metrics
    assert m["best/test_error"] < 0.06
    for layer in (0, 1):
        assert len(history(run, f"pretrain/layer_{layer}/cost", store)) == 5
    assert_grid(image(run, "pretrained_filters.png", store, tmp_path / "p"), 8, 10, 10)
    assert_grid(image(run, "filters.png", store, tmp_path / "f"), 8, 10, 10)
    # reload the pretrained stack by run id: no pretraining, and the same fine-tuning result
    again = dlexp(*SDA, f"model.pretrained_from={run.info.run_id}")
    assert not history(again, "pretrain/layer_0/cost", store)
    assert again.data.tags["dlexp.pretrained_from"].endswith("pretrained_params.pkl")
    assert again.data.metrics["best/test_error"] == m["best/test_error"]
    assert again.data.metrics["best/valid_error"] == m["best/valid_error"]


def test_dbn_pretrains_then_finetunes(dlexp, store):
    run = dlexp("model=dbn", "dataset=digits", "model.hidden_layers_sizes=[100,100]", "model.pretrain_epochs=5",
                "optimizer.lr=0.1", "optimizer.batch_size=10", "trainer.max_epochs=30")
    assert run.data.metrics["best/test_error"] < 0.06
    assert len(history(run, "pretrain/layer_1/cost", store)) == 5


def test_pretrained_from_a_wrong_shape_is_refused(dlexp, store, tmp_path, monkeypatch):
    run = dlexp(*SDA[:-1], "model.pretrain_epochs=1", "trainer.max_epochs=1")
    with pytest.raises(SystemExit) as e:
        dlexp("model=sda", "dataset=digits", "model.hidden_layers_sizes=[50]", "model.corruption_levels=[0.1]",
              f"model.pretrained_from={run.info.run_id}")
    assert e.value.code == 2
