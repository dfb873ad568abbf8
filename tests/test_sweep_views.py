"""What a sweep shows and how it is run again: its pictures (the heatmap of a two-key grid, the line of a
one-key sweep, the overlaid curves), ``dlexp-sweep table --pivot``, ``list``, ``compare``, and
``trainer.skip_finished`` (a re-run trains nothing; an interrupted sweep is finished by its command).

Every sweep is ``python -m dlexp.cli -m ...`` in a subprocess, in its own directory and store.
"""
import csv
import io
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

import sweep_procs
from dlexp import sweep
from dlexp.sweep import plots
from dlexp.sweep.runs import sweep_table, swept_keys

# a 2 x 3 grid: batch sizes (rows) x log-spaced learning rates (columns); a batch of 5000 is more than
# digits' 1297 training examples, so that row FAILS (before its runs exist)
GRID = ("model=logreg", "trainer.max_epochs=3", "optimizer.batch_size=100,5000", "optimizer.lr=0.001,0.01,0.1")


def read_csv(text: str):
    return list(csv.DictReader(io.StringIO(text)))


def artifact(store, run_id, path, dest: Path) -> Path:
    return Path(MlflowClient(store).download_artifacts(run_id, path, str(dest)))


def not_blank(path: Path, size) -> Image.Image:
    img = Image.open(path)
    assert img.format == "PNG" and img.size == size
    colors = img.convert("RGB").getcolors(1 << 20)
    assert len(colors) > 50, len(colors)  # drawn, not a blank page
    assert max(n for n, _ in colors) < 0.97 * size[0] * size[1]  # not one colour with a few marks
    return img


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("grid")
    store = f"sqlite:///{cwd / 'mlflow.db'}"
    r = sweep_procs.run(cwd, store, *GRID)
    (parent,) = sweep_procs.parents(store)
    return {"cwd": cwd, "store": store, "parent": parent, "children": sweep_procs.children(store, parent),
            "out": r.stdout, "err": r.stderr}


def test_heatmap_of_a_two_key_grid(grid, tmp_path):
    store, parent, children = grid["store"], grid["parent"], grid["children"]
    listing = {f.path for f in MlflowClient(store).list_artifacts(parent.info.run_id, "images")}
    assert listing == {f"images/sweep_{n}.{e}" for n in ("heatmap", "curves") for e in ("png", "csv")}
    not_blank(artifact(store, parent.info.run_id, "images/sweep_heatmap.png", tmp_path), (600, 360))
    cells = read_csv(artifact(store, parent.info.run_id, "images/sweep_heatmap.csv", tmp_path).read_text())
    # one line a cell of the 2 x 3 grid, rows the first key's values, columns the second's, in order
    assert [(c["optimizer.batch_size"], c["optimizer.lr"]) for c in cells] == [
        (b, lr) for b in ("100", "5000") for lr in ("0.001", "0.01", "0.1")]
    by_lr = {c.data.params["optimizer.lr"]: c for c in children if c.info.status == "FINISHED"}
    for c in cells:
        if c["optimizer.batch_size"] == "5000":
            assert c["status"] == "FAILED" and c["best/valid_error"] == ""
        else:
            run = by_lr[c["optimizer.lr"]]
            assert c["status"] == "FINISHED" and c["run_id"] == run.info.run_id
            assert float(c["best/valid_error"]) == pytest.approx(run.data.metrics["best/valid_error"])
    best = [c for c in cells if c["best"] == "1"]
    assert len(best) == 1 and best[0]["run_id"] == parent.data.tags["dlexp.best_run_id"]
    # the axes as drawn: the keys, the values as labels, log spacing said; FAILED cells labelled
    rows, _, ranked = sweep_table(MlflowClient(store), parent)
    fig = plots.figures(MlflowClient(store), parent, rows, ranked, swept_keys(parent))["sweep_heatmap"][0]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.001", "0.01", "0.1"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["100", "5000"]
    assert ax.get_xlabel() == "optimizer.lr (log-spaced)" and ax.get_ylabel() == "optimizer.batch_size"
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("FAILED") == 3 and "best" in texts and "lower is better" in ax.get_title()


def test_curves_overlay_every_finished_child(grid, tmp_path):
    store, parent, children = grid["store"], grid["parent"], grid["children"]
    not_blank(artifact(store, parent.info.run_id, "images/sweep_curves.png", tmp_path), (720, 460))
    points = read_csv(artifact(store, parent.info.run_id, "images/sweep_curves.csv", tmp_path).read_text())
    client = MlflowClient(store)
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert {p["run_id"] for p in points} == {c.info.run_id for c in finished}
    for c in finished:
        history = client.get_metric_history(c.info.run_id, "valid/error")
        assert [(int(p["step"]), float(p["valid/error"])) for p in points if p["run_id"] == c.info.run_id] == \
            sorted((h.step, h.value) for h in history)


def test_pivot_of_the_grid(grid, tmp_path, capsys):
    store, parent, children = grid["store"], grid["parent"], grid["children"]
    by_lr = {c.data.params["optimizer.lr"]: c.data.metrics for c in children if c.info.status == "FINISHED"}
    ref = parent.info.run_id
    assert sweep.main(["table", ref, "--pivot", "optimizer.batch_size,lr", "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "best/valid_error by optimizer.batch_size x optimizer.lr" in lines[0]
    assert lines[1].split() == ["optimizer.batch_size", "\\", "optimizer.lr", "0.001", "0.01", "0.1"]
    row100, row5000 = lines[3], lines[4]
    assert row100.split()[0] == "100" and row5000.split() == ["5000", "FAILED", "FAILED", "FAILED"]
    for lr in ("0.001", "0.01", "0.1"):
        assert f"{100 * by_lr[lr]['best/valid_error']:.2f} %" in row100
    assert row100.count("*") == 1 and "lowest is best" in lines[-1]
    # as CSV, raw numbers; as Markdown; another metric
    out = tmp_path / "pivot.csv"
    assert sweep.main(["table", ref, "--pivot", "batch_size,lr", "--format", "csv", "--metric", "best/test_error",
                       "--output", str(out), "--tracking-uri", store]) == 0
    matrix = list(csv.reader(io.StringIO(out.read_text())))
    assert matrix[0] == ["optimizer.batch_size\\optimizer.lr", "0.001", "0.01", "0.1"]
    assert matrix[1][0] == "100" and [float(v) for v in matrix[1][1:]] == pytest.approx(
        [by_lr[lr]["best/test_error"] for lr in ("0.001", "0.01", "0.1")])
    assert matrix[2] == ["5000", "FAILED", "FAILED", "FAILED"]
    capsys.readouterr()
    assert sweep.main(["table", ref, "--pivot", "batch_size,lr", "--format", "md", "--tracking-uri", store]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| optimizer.batch_size") and len(md) == 4 and md[3].startswith("| `5000` | FAILED")
    # mistakes: one line, exit 2
    for args, words in ((["--pivot", "nope"], "--pivot nope: not a key"), (["--metric", "nope"], "--metric nope"),
                        (["--pivot", "a,b,c"], "one key (rows) or two")):
        assert sweep.main(["table", ref, *args, "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dlexp-sweep: error: ") and words in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def costs(grid):
    """A one-key sweep of a model without labels (its objective is a cost, not an error rate), in the grid's
    store: the second sweep there."""
    cwd, store = grid["cwd"], grid["store"]
    sweep_procs.run(cwd, store, "model=da", "model.n_hidden=16", "model.pretrain_epochs=2",
                    "model.pretrain_lr=0.1,0.01,0.001")
    parent = sweep_procs.parents(store)[-1]
    assert parent.info.run_id != grid["parent"].info.run_id
    return {"cwd": cwd, "store": store, "parent": parent, "children": sweep_procs.children(store, parent)}


def test_line_plot_of_a_one_key_sweep(costs, tmp_path):
    store, parent, children = costs["store"], costs["parent"], costs["children"]
    listing = {f.path for f in MlflowClient(store).list_artifacts(parent.info.run_id, "images")}
    assert listing == {f"images/sweep_{n}.{e}" for n in ("line", "curves") for e in ("png", "csv")}
    not_blank(artifact(store, parent.info.run_id, "images/sweep_line.png", tmp_path), (640, 420))
    points = read_csv(artifact(store, parent.info.run_id, "images/sweep_line.csv", tmp_path).read_text())
    assert [p["model.pretrain_lr"] for p in points] == ["0.001", "0.01", "0.1"]
    by_lr = {c.data.params["model.pretrain_lr"]: c.data.metrics["final/cost"] for c in children}
    assert [float(p["final/cost"]) for p in points] == pytest.approx([by_lr[v] for v in ("0.001", "0.01", "0.1")])
    assert [p["best"] for p in points].count("1") == 1
    best = min(points, key=lambda p: float(p["final/cost"]))
    assert best["best"] == "1"
    curves = read_csv(artifact(store, parent.info.run_id, "images/sweep_curves.csv", tmp_path).read_text())
    assert "pretrain/cost" in curves[0] and {p["run_id"] for p in curves} == {c.info.run_id for c in children}


def test_list_formats_each_best_value_and_compare_lines_sweeps_up(grid, costs, capsys):
    store, errors, cost = grid["store"], grid["parent"], costs["parent"]
    assert sweep.main(["list", "--tracking-uri", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [cost.info.run_id, errors.info.run_id]  # newest first
    best_error = lines[1].split("best: ")[1]
    assert best_error.startswith(f"best/valid_error {100 * errors.data.metrics['best/valid_error']:.2f} %")
    best_cost = lines[0].split("best: ")[1]  # a cost is not a percentage
    assert best_cost.startswith(f"final/cost {cost.data.metrics['final/cost']:.4g} (lower is better)")
    # compare: one row a sweep, its best run, each value as what it is
    assert sweep.main(["compare", errors.info.run_id, cost.info.run_id, "--tracking-uri", store]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["sweep", "parent", "status"] and len(table) == 4
    for row, parent in zip(table[2:], (errors, cost)):
        assert row.startswith(parent.data.tags[sweep.SWEEP_TAG]) and parent.data.tags["dlexp.best_run_id"][:12] in row
    assert "best/valid_error (min)" in table[2] and f"{100 * errors.data.metrics['best/valid_error']:.2f} %" in table[2]
    assert "final/cost (min)" in table[3] and f"{cost.data.metrics['final/cost']:.4g}" in table[3]
    assert sweep.main(["compare", errors.info.run_id, cost.info.run_id, "--format", "csv", "--tracking-uri",
                       store]) == 0
    rows = read_csv(capsys.readouterr().out)
    assert [r["metric"] for r in rows] == ["best/valid_error", "final/cost"]
    assert float(rows[1]["best"]) == pytest.approx(cost.data.metrics["final/cost"])
    assert sweep.main(["compare", errors.info.run_id, "nope", "--tracking-uri", store]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_skip_finished_trains_nothing_on_a_rerun(grid):
    cwd, store = grid["cwd"], grid["store"]
    old = {c.info.run_id: c for c in grid["children"] if c.info.status == "FINISHED"}
    r = sweep_procs.run(cwd, store, *GRID, "trainer.skip_finished=true")
    parent = [p for p in sweep_procs.parents(store) if p.data.params["sweep.params"] == grid["parent"].data.params[
        "sweep.params"] and "trainer.skip_finished=true" in p.data.params["sweep.fixed"]][-1]
    children = sweep_procs.children(store, parent)
    skipped = [c for c in children if c.data.tags.get(sweep.SKIPPED_TAG)]
    assert len(children) == 6 and len(skipped) == 3 and all(c.info.status == "FINISHED" for c in skipped)
    client = MlflowClient(store)
    for c in skipped:  # the old run's summary values, and nothing trained: no curve, no checkpoint
        was = old[c.data.tags[sweep.SKIPPED_TAG]]
        assert c.data.params["optimizer.lr"] == was.data.params["optimizer.lr"]
        assert c.data.metrics == {k: v for k, v in was.data.metrics.items() if k.startswith(("best/", "final/"))}
        assert len(client.get_metric_history(c.info.run_id, "valid/error")) == 0 < len(
            client.get_metric_history(was.info.run_id, "valid/error"))
        assert not list(Path(c.data.tags["dlexp.output_dir"]).glob("*.pkl"))
    assert sorted(c.info.status for c in children if c not in skipped) == ["FAILED"] * 3
    assert r.stdout.count("SKIPPED") == 3 and r.stdout.count("finished before as run") == 3
    assert (r.stdout + r.stderr).count("not trained again") == 3
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.skipped"] == 3
    assert parent.data.metrics["best/valid_error"] == grid["parent"].data.metrics["best/valid_error"]


def test_skip_finished_outside_a_sweep_names_the_run(grid):
    cwd, store = grid["cwd"], grid["store"]
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("dlexp").experiment_id
    before = len(client.search_runs([exp], max_results=1000))
    r = sweep_procs.run(cwd, store, "model=logreg", "trainer.max_epochs=3", "optimizer.batch_size=100",
                        "optimizer.lr=0.1", "trainer.skip_finished=true", multirun=False)
    first = next(c for c in grid["children"] if c.data.params.get("optimizer.lr") == "0.1")
    assert f"this config FINISHED as run {first.info.run_id}" in r.stdout + r.stderr
    assert len(client.search_runs([exp], max_results=1000)) == before  # no run made


def test_an_interrupted_sweep_is_finished_by_running_it_again(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = ("model=mlp", "model.hidden_sizes=[16]", "optimizer.batch_size=20", "early_stopping=none",
            "trainer.max_epochs=400", "optimizer.lr=0.1,0.05", "regularization=l2", "regularization.l2=0,1e-4")
    # 400 epochs: ~3 s a job with the closed-form step, so the stop lands while the third job trains
    proc = sweep_procs.start(tmp_path, store, *grid, extra_env={"DLEXP_TRACKING_FLUSH_SECONDS": "0.3"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # stop it once 2 jobs are done and a third trains
        states = sweep_procs.child_states(tmp_path / "mlflow.db")
        if [s for _, s, *_ in states].count("FINISHED") == 2 and any(s == "RUNNING" and n for _, s, n, _ in states):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    assert proc.wait(120) == 130, (tmp_path / "sweep.log").read_text()[-3000:]
    (first,) = sweep_procs.parents(store)
    killed = [c for c in sweep_procs.children(store, first) if c.info.status == "KILLED"]
    assert first.info.status == "KILLED" and len(killed) == 1  # stopped by the user: resumable, not failed
    assert first.data.tags["dlexp.stopped"].startswith("2 of 4 jobs finished (stopped at iteration ")
    r = sweep_procs.run(tmp_path, store, *grid, "trainer.skip_finished=true", "trainer.resume=auto")
    second = sweep_procs.parents(store)[-1]
    children = {c.info.run_id: c for c in sweep_procs.children(store, second)}
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children.values())
    assert sum(bool(c.data.tags.get(sweep.SKIPPED_TAG)) for c in children.values()) == 2
    resumed = children[killed[0].info.run_id]  # the stopped run continued, in the new sweep
    assert resumed.data.tags["dlexp.resumed_from"].startswith("finetune iteration ")
    assert resumed.data.metrics["final/epochs"] == 400
    assert second.info.status == "FINISHED" and "4 runs ranked by best/valid_error" in r.stdout


def test_an_optuna_sweep_prints_no_experimental_warnings(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = sweep_procs.run(tmp_path, store, "hparams_search=optuna", "model=logreg", "trainer.max_epochs=2",
                        "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=2",
                        "hydra.sweeper.sampler.multivariate=true",
                        "hydra.callbacks.mlflow_sweep.pruner.n_startup_trials=1")
    assert "ExperimentalWarning" not in r.stderr + r.stdout, r.stderr[-3000:]
    assert "4 runs ranked by best/valid_error" in r.stdout


def _run(run_id, params, metrics=(), status="FINISHED", tags=()):
    from types import SimpleNamespace as NS

    return NS(info=NS(run_id=run_id, run_name=run_id, status=status, start_time=0, end_time=1000),
              data=NS(params=dict(params), metrics=dict(metrics), tags=dict(tags)))


def test_grid_values_and_spacing():
    from dlexp.sweep import grid

    assert [grid.canonical(v) for v in ("0", "0.0", "1e-4", "0.0001", "100", "mlp")] == \
        ["0", "0", "0.0001", "0.0001", "100", "mlp"]
    assert grid.log_spaced(["0", "1e-5", "1e-4", "1e-3"]) and grid.log_spaced(["0.1", "0.03", "0.01"])
    assert not grid.log_spaced(["1", "2", "3"]) and not grid.log_spaced(["mlp", "logreg", "lenet"])
    assert [grid.label(v) for v in ("0.0001", "0.1", "64", "1e-05")] == ["1e-04", "0.1", "64", "1e-05"]
    # a job that failed before its run existed has no params: its values come from its overrides
    failed = _run("f", {}, status="FAILED", tags={"dlexp.overrides": "optimizer.lr=1e-4 model=mlp"})
    assert grid.key_value(failed, "optimizer.lr") == "0.0001" and grid.key_value(failed, "model") == "mlp"


def test_sampled_values_make_a_scatter_and_more_keys_a_heatmap_of_the_best(tmp_path):
    import random

    rng = random.Random(0)
    sampled = [_run(f"r{i}", {"optimizer.lr": repr(10 ** rng.uniform(-4, -1)),
                              "regularization.l2": repr(10 ** rng.uniform(-5, -2))},
                    {"best/valid_error": rng.uniform(0.02, 0.3)}) for i in range(20)]
    rows = sweep.rank(sampled, ["optimizer.lr", "regularization.l2"])[0]
    spec = "optimizer.lr=tag(log, interval(1e-4, 1e-1)) regularization.l2=tag(log, interval(1e-5, 1e-2))"
    parent = _run("p", {"sweep.params": spec}, tags={"dlexp.sweep_id": "o"})
    figures = plots.figures(None, parent, rows, sampled, ["optimizer.lr", "regularization.l2"], curves=False)
    assert set(figures) == {"sweep_scatter"}
    fig, header, data = figures["sweep_scatter"]
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log" and len(data) == 20
    # three keys: the heatmap of the first two, each cell the best over the third
    grid3 = [_run(f"g{a}{b}{c}", {"optimizer.lr": a, "regularization.l2": b, "model.n_hidden": c},
                  {"best/valid_error": 0.1 * (int(c) + 1) + 0.01 * a.count("0")})
             for a in ("0.1", "0.01") for b in ("0", "0.001") for c in ("1", "2")]
    rows = sweep.rank(grid3)[0]
    keys = ["optimizer.lr", "regularization.l2", "model.n_hidden"]
    fig, header, data = plots.figures(None, parent, rows, grid3, keys, curves=False)["sweep_heatmap"]
    assert len(data) == 4 and all(int(d[5]) == 2 for d in data)  # two runs a cell
    assert {d[4] for d in data} == {f"g{a}{b}1" for a in ("0.1", "0.01") for b in ("0", "0.001")}
    assert "best over model.n_hidden" in fig.axes[0].get_title()


# ------------------------------------------------- what the pictures and the table say, without a sweep
def _grid_run(lr, l2, error):
    from types import SimpleNamespace as NS

    run_id = f"{lr}-{l2}"
    return NS(info=NS(run_id=run_id, run_name=run_id, status="FINISHED", start_time=0, end_time=1000,
                      experiment_id="1"),
              data=NS(metrics={"best_valid_error": error},
                      params={"optimizer.lr": lr, "regularization.l2": l2, "model.name": "mlp",
                              "dataset.name": "digits"},
                      tags={"dlexp.overrides": f"optimizer.lr={lr} regularization.l2={l2}"}))


def _contrast(a, b) -> float:
    """WCAG's contrast ratio of two colours."""
    def luminance(rgb):
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_heatmap_labels_contrast_with_their_cells_and_the_title_says_what_was_swept():
    """Every value is readable on its cell as drawn (bright yellow cells: dark text; dark purple: white)."""
    import numpy as np
    from matplotlib.colors import to_rgb
    from types import SimpleNamespace as NS

    keys = ["optimizer.lr", "regularization.l2"]
    runs = [_grid_run(lr, l2, 0.03 + 0.05 * (3 * i + j)) for i, lr in enumerate(("0.001", "0.01", "0.1"))
            for j, l2 in enumerate(("0.0", "0.0001", "0.001"))]
    rows, _ = sweep.rank(runs, keys)
    parent = NS(info=NS(run_id="p"), data=NS(params={}, tags={}))
    fig = plots.figures(None, parent, rows, runs, keys, curves=False)["sweep_heatmap"][0]
    ax = fig.axes[0]
    assert ax.get_title().startswith("best valid error: optimizer.lr x regularization.l2, mlp on digits")
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    colours = set()
    for text in ax.texts:
        if not text.get_text().endswith("%") or text.get_bbox_patch() is not None:  # the best cell: a white box
            continue
        x, y = text.get_position()
        px, py = ax.transData.transform((x - 0.4, y - 0.4))  # the cell's colour, away from its label
        cell = pixels[int(round(fig.bbox.height - py)), int(round(px))]
        colours.add(text.get_color())
        assert _contrast(to_rgb(text.get_color()), cell) >= 4.5, (text.get_text(), text.get_color(), cell)
    assert colours == {"black", "white"}  # both kinds of cell are there


def test_markdown_table_links_run_ids_to_the_server_only():
    runs = [_grid_run("0.1", "0.0", 0.05)]
    rows, metric = sweep.rank(runs, ["optimizer.lr"])
    page = sweep.table.runs_page("http://127.0.0.1:5000/", "1")
    linked = sweep.table_markdown(rows, metric, page)
    assert "[0.1-0.0](http://127.0.0.1:5000/#/experiments/1/runs/0.1-0.0)" in linked
    assert sweep.table.runs_page("sqlite:///outputs/mlflow.db", "1") is None
    assert "](" not in sweep.table_markdown(rows, metric, None)
