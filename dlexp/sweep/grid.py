"""A sweep's runs as a grid: each run's value of each swept key, and one cell per combination of values.

Shared by the pivot table (:mod:`dlexp.sweep.pivot`) and the pictures (:mod:`dlexp.sweep.plots`). A
key's value is read from the run's params (a config group, ``model=mlp``, from ``model.name``); values
that all read as numbers sort as numbers. A cell holds the best of its runs by the metric and its
direction (a grid has one run a cell; repeated or sampled values may have several), FAILED when every
run of it failed, and no cell at all for a combination no run had.
"""
import math
import re
from dataclasses import dataclass
from typing import Optional

from .. import metric_names as names
from ..tracking.contract import OVERRIDES_TAG
from .table import status


@dataclass
class Cell:
    value: Optional[float]   # the metric of the cell's best run (None: no run of the cell has it)
    status: str              # that run's status (FAILED when every run of the cell failed)
    run_id: str
    runs: int                # how many runs fell in the cell


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def canonical(text):
    """One spelling per value: 0, 0.0 -> 0; 1e-4, 0.0001 -> 0.0001; other text as it is."""
    x = _number(text)
    if x is None or not math.isfinite(x):
        return text
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _from_overrides(run, key: str):
    """``key``'s value in the run's overrides tag (a job that failed before its run had params)."""
    for part in re.split(r" (?=[+~]{0,2}[\w./@-]+=)", run.data.tags.get(OVERRIDES_TAG, "")):
        name, _, value = part.lstrip("+~").partition("=")
        if name == key and value:
            return value
    return None


def key_value(run, key: str):
    """The run's value of ``key`` (from its params; a config group from ``<group>.name``; a run without
    params from its overrides), in one spelling per value (:func:`canonical`), or None."""
    params = run.data.params
    value = params.get(key, params.get(f"{key}.name"))
    return canonical(value if value is not None else _from_overrides(run, key))


def numeric(values) -> bool:
    return bool(values) and all(_number(v) is not None for v in values)


def ordered(values) -> list:
    """Distinct values, as numbers in increasing order when they all are numbers, else as first seen."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    return sorted(distinct, key=float) if numeric(distinct) else distinct


def label(value) -> str:
    """A short axis label: 0.0001 -> 1e-04, 0.1 -> 0.1, 64 -> 64."""
    x = _number(value)
    if x is None:
        return str(value)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.0e}"
    return f"{x:g}"


def log_spaced(values) -> bool:
    """Whether numeric values are spread on a log scale: all positive but zero (a penalty of 0 is the
    usual first value of a log grid), at least three, and either spanning two decades or in nearly
    constant ratios of at least 2."""
    xs = sorted({float(v) for v in values if _number(v) is not None and float(v) > 0})
    if len(xs) < 3 or not numeric(values) or any(float(v) < 0 for v in values):
        return False
    ratios = [math.log(b / a) for a, b in zip(xs, xs[1:])]
    mean = sum(ratios) / len(ratios)
    spread = max(abs(r - mean) for r in ratios)
    return xs[-1] / xs[0] >= 100 or (mean >= math.log(2) and spread <= 0.25 * mean)


def _better(a: Optional[float], b: Optional[float], direction: str) -> bool:
    """Whether metric a beats b (a missing or NaN value never does)."""
    if a is None or math.isnan(a):
        return False
    if b is None or math.isnan(b):
        return True
    return a > b if direction == "max" else a < b


def cells(children, keys, metric: str, direction: str) -> dict:
    """{(value of keys[0], value of keys[1], ...): Cell} over the runs that have every key."""
    out = {}
    for run in children:
        point = tuple(key_value(run, k) for k in keys)
        if any(v is None for v in point):
            continue
        value, state = names.get(run.data.metrics, metric), status(run)
        cell = out.get(point)
        if cell is None:
            out[point] = Cell(value, state, run.info.run_id, 1)
            continue
        cell.runs += 1
        if _better(value, cell.value, direction) or (cell.status == "FAILED" and state != "FAILED"):
            cell.value, cell.status, cell.run_id = value, state, run.info.run_id
    return out


def best_point(grid: dict, direction: str):
    """The point of the best cell (a pruned run's partial value never counts), or None."""
    best = None
    for point, cell in grid.items():
        if cell.status != "PRUNED" and _better(cell.value, grid[best].value if best else None, direction):
            best = point
    return best
