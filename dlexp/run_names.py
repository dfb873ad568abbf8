"""Run names that say what varied, short enough for the MLflow UI's runs list.

* a single run: its model and dataset, then its overrides (``mlp/digits lr=0.1``);
* a sweep's child: its values of the swept keys only (``lr=0.01 l2=1e-4``);
* a sweep's parent: what it sweeps, and how many jobs (``mlp/digits lr x l2 (9)``).

A key is shown by its last part (``optimizer.lr`` -> ``lr``) unless two shown keys share it; a number
to 4 significant digits, in the shorter of plain and scientific notation (Optuna's
``0.00037545539669128784`` -> ``3.755e-4``). ``tracking.run_name`` still names a run as given.
"""
import re

HIDDEN = ("tracking.", "trainer.progress", "trainer.threads", "trainer.checkpoint_every", "trainer.resume",
          "trainer.skip_finished", "hydra.", "hydra/")  # how a run is shown, tracked or run, not what it computes
MAX_LENGTH = 240


def short_value(text: str) -> str:
    """A float to 4 significant digits, in its shorter spelling; anything else (ints, words, lists) as is."""
    text = str(text)
    if not re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)", text):
        return text
    x = float(text)
    plain = f"{x:.4g}"
    if "e" in plain:
        plain = f"{x:.12f}".rstrip("0")
    mantissa, _, exponent = f"{x:.3e}".partition("e")
    sci = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return plain if len(plain) <= len(sci) else sci


def _split(override: str):
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def short_keys(keys) -> dict:
    """key -> its last dotted part, unless another of ``keys`` has the same last part (then the key)."""
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def shown(overrides) -> str:
    """``key=value`` overrides, keys and numbers shortened."""
    pairs = [_split(o) for o in overrides]
    names = short_keys(k for k, _ in pairs)
    return " ".join(f"{names[k]}={short_value(v)}" for k, v in pairs)


def single(model: str, dataset: str, overrides) -> str:
    """``mlp/digits lr=0.1``: a run outside a sweep."""
    rest = [o for o in overrides if "=" in o and not o.lstrip("+~").startswith(HIDDEN + ("model=", "dataset="))]
    return " ".join([f"{model}/{dataset}", shown(rest)]).strip()[:MAX_LENGTH]


def child(overrides, swept_keys) -> str:
    """``lr=0.01 l2=1e-4``: a sweep's job, by its values of the swept keys (in the sweep's key order)."""
    by_key = {_split(o)[0]: o for o in overrides}
    return shown([by_key[k] for k in swept_keys if k in by_key])[:MAX_LENGTH]


def parent(model: str, dataset: str, swept_keys, n_jobs=None) -> str:
    """``mlp/digits lr x l2 (9)``: a sweep, by what it sweeps (model or dataset left out when swept)."""
    head = "/".join(str(v) for k, v in (("model", model), ("dataset", dataset)) if k not in swept_keys)
    what = " x ".join(short_keys(swept_keys).values()) or "sweep"
    return " ".join(p for p in (head, what, f"({n_jobs})" if n_jobs else "") if p)[:MAX_LENGTH]


def run_name(run, overrides) -> str:
    """The name of ``run`` (a RunConfig) with these overrides: the user's ``tracking.run_name``, else a
    sweep child's or a single run's."""
    from .sweep.context import swept_keys

    if run.tracking.run_name:
        return run.tracking.run_name
    keys = swept_keys()
    if keys:
        return child(overrides, keys) or single(run.model.name, run.dataset.name, overrides)
    return single(run.model.name, run.dataset.name, overrides)
