"""The config tree on disk and Hydra's composition errors in one line.

``CONFIG_PATH`` is where the tree lives (shipped inside the package as
dlexp/conf, or ../conf in a source checkout); :func:`options` lists a group's
selectable options (schemas are not options); :func:`hydra_message` turns a
Hydra / OmegaConf composition error into one line naming what was given and
what is allowed, for the CLI and for a sweep's check of its jobs.
"""
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Installed: the tree ships as dlexp/conf; in a source checkout it is ../conf.
CONFIG_PATH = str(_HERE / "conf" if (_HERE / "conf" / "config.yaml").exists() else _HERE.parent / "conf")
GROUPS = ("model", "dataset", "optimizer", "regularization", "early_stopping", "trainer", "tracking", "experiment",
          "hparams_search")


def options(group: str) -> list:
    """The selectable options of a config group: its YAML files (schemas are not options)."""
    return sorted(p.stem for p in (Path(CONFIG_PATH) / group).glob("*.yaml") if not p.stem.startswith("_"))


def hydra_message(e: BaseException) -> str:
    """One line from a Hydra / OmegaConf composition error: what was given and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(e) + ("\n" + str(e.__cause__) if e.__cause__ is not None else "")
    if " raised while resolving interpolation: " in text:  # an error of ours inside a resolver (dlexp/rundir.py)
        return text.split(" raised while resolving interpolation: ", 1)[1].splitlines()[0]
    if isinstance(e, MissingConfigException) and "Could not find '" in text:
        missing = text.split("Could not find '", 1)[1].split("'", 1)[0]
        group, _, name = missing.rpartition("/")
        if group in GROUPS:
            return f"{group}={name} is not allowed: one of {', '.join(options(group))}"
        return f"no config {missing!r}"
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {e.message.splitlines()[0]}"
    if text.startswith("Could not override '") and "not in '" in text:  # a misspelt key
        key = text.split("'", 2)[1]
        schema = text.rsplit("not in '", 1)[1].split("'", 1)[0]
        return f"{key} is not a key of {key.rsplit('.', 1)[0]}: one of {', '.join(_fields(schema))}"
    if text.startswith("Error merging override "):  # a value of the wrong type
        override, _, reason = text[len("Error merging override "):].partition("\n")
        return f"{override} is not allowed: {reason.strip().splitlines()[0] if reason.strip() else type(e).__name__}"
    noise = ("To append", "Set the environment", "See https", "full_key", "object_type", "reference_type")
    lines = list(dict.fromkeys(ln.strip() for ln in text.splitlines()
                               if ln.strip() and not ln.strip().startswith(noise)))
    return ": ".join(lines[:2]) or type(e).__name__


def _fields(schema_name: str) -> list:
    """The keys of the config dataclass named ``schema_name`` (e.g. OptimizerConfig)."""
    from dataclasses import fields

    from .config import GROUPS as SCHEMAS
    from .models import CONFIGS

    for schema in (*SCHEMAS.values(), *CONFIGS.values()):
        if schema.__name__ == schema_name:
            return sorted(f.name for f in fields(schema))
    return []
