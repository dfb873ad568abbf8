"""The README's pictures of the MLflow UI, made again from a small real store:

    python docs/make_screenshots.py                  # into docs/ (a few minutes on 2 cores)
    python docs/make_screenshots.py --store DIR      # keep (or reuse) the store in DIR

It runs a 3 x 3 sweep of an MLP on digits (``optimizer.lr`` x ``regularization.l2``, the best run
registered as ``digits-mlp``), starts ``mlflow ui`` on 127.0.0.1 and has headless Chromium (Debian's
``chromium``; driven by Playwright when it is installed, else by ``chromium --screenshot``) take,
at 1280 x 800: the experiment's runs list, the nine runs compared, the sweep's heatmap and the
registered model's logged-model page. Nothing is downloaded.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SIZE = (1280, 800)
SWEEP = ["dataset=digits", "model=mlp", "model.hidden_sizes=[32]", "optimizer.batch_size=100",
         "trainer.max_epochs=10", "trainer.progress=none", "optimizer.lr=0.01,0.03,0.1",
         "regularization.l2=0,0.0001,0.001", "tracking.register_as=digits-mlp"]
REGISTERED = "digits-mlp"


def make_store(where: Path) -> str:
    """The sweep's sqlite store in ``where`` (made once: a store already there is reused)."""
    db = where / "mlflow.db"
    if not db.exists():
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "dlexp.cli", "-m", *SWEEP, f"tracking.uri=sqlite:///{db}"],
                       cwd=where, check=True)
    return f"sqlite:///{db}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(store: str, log: Path):
    """(``mlflow ui`` on the store, its URL once it answers)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui stopped: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit(f"mlflow ui did not answer on {url}")


def pages(store: str, url: str) -> dict:
    """{picture name: (the UI page, a text the page shows once drawn)}."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    version = client.get_model_version_by_alias(REGISTERED, "best")
    parent_id = client.get_run(version.run_id).data.tags["mlflow.parentRunId"]
    parent = client.get_run(parent_id)
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    ids = json.dumps([c.info.run_id for c in children])
    compare = "compare-runs?" + urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([exp])})
    return {
        "mlflow_runs": (f"{url}/#/experiments/{exp}/runs", parent.info.run_name),
        "mlflow_compare": (f"{url}/#/{compare}", "Comparing"),
        "mlflow_heatmap": (f"{url}/#/experiments/{exp}/runs/{parent_id}/artifacts/images/sweep_heatmap.png",
                           "sweep_heatmap.png"),
        "mlflow_model": (f"{url}/#/experiments/{exp}/models/{version.source.removeprefix('models:/')}", REGISTERED),
    }


EXPAND = 'button[data-component-id*="runnamecellrenderer"]'  # the runs list's +: a parent's children
CLOSE = 'button[aria-label="Close"]'  # the MLflow Assistant's side panel


def _click(page, selector: str) -> None:
    """Click the first match if the page has one (the UI of another MLflow version may not)."""
    button = page.locator(selector).first
    if button.count() and button.is_visible():
        button.click()


def shoot_playwright(shots: dict, out: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
        for name, (address, text) in shots.items():
            page.goto(address)
            page.get_by_text(text, exact=False).first.wait_for(timeout=60000)
            _click(page, CLOSE)
            if name == "mlflow_runs":
                _click(page, EXPAND)
            page.wait_for_timeout(2500)  # charts and images finish drawing
            page.screenshot(path=str(out / f"{name}.png"))
        browser.close()


def shoot_chromium(shots: dict, out: Path, chromium: str) -> None:
    for name, (address, _) in shots.items():
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--user-data-dir={profile}", f"--window-size={SIZE[0]},{SIZE[1]}",
                            "--virtual-time-budget=20000", f"--screenshot={out / (name + '.png')}", address],
                           check=True, capture_output=True, timeout=180)


def shrink(path: Path) -> None:
    """A screenshot as a 256-colour PNG (a third of the bytes; the UI has few colours)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="where the sweep's store is made (or reused); default: a temp dir")
    ap.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go (default: docs/)")
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    tmp = tempfile.TemporaryDirectory(prefix="dlexp-screenshots-")
    store = make_store(args.store or Path(tmp.name))
    proc, url = start_ui(store, Path(tmp.name) / "ui.log")
    try:
        shots = pages(store, url)
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            shoot_playwright(shots, args.out, chromium)
        except ImportError:
            shoot_chromium(shots, args.out, chromium)
        for name in shots:
            shrink(args.out / f"{name}.png")
            print(args.out / f"{name}.png")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
