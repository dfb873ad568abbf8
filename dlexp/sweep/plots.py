"""A sweep's pictures, logged to its parent run's ``images/`` at the sweep's end.

* Two swept keys (the lr x lambda grid): ``sweep_heatmap.png``, the objective (best validation error;
  for pretraining-only models the final cost, with its direction) over the grid: rows the first key's
  values, columns the second's, each cell annotated, the best cell framed, FAILED cells hatched and
  labelled, combinations without a run marked so; the axes name the keys and say when their values are
  log-spaced. With more than two keys, the first two, each cell the best over the others. When the
  values are sampled (Optuna: many distinct values), a scatter over the two keys instead,
  ``sweep_scatter.png``, with log axes for keys sampled on a log scale (``tag(log, ...)``).
* One swept key: ``sweep_line.png``, the objective against the values (a log axis when they are
  log-spaced), the best point starred, FAILED values marked on the axis.
* Any sweep: ``sweep_curves.png``, the children's validation-error curves (pretraining cost for models
  without labels) overlaid, the best run's drawn thick.

Each picture's data is written beside it as CSV (``sweep_heatmap.csv``, ...: one line a cell, point or
curve step), so what was drawn can be read back. :func:`figures` makes them (figure, CSV header and
rows), :func:`pictures` writes them. Drawing uses matplotlib's Agg canvas directly (no pyplot, no global
backend, no layout engine); :func:`warm_up` imports it ahead (the sweep does so in a thread while its
jobs run). A failure to draw is a warning of the sweep's, never a failed sweep.
"""
import csv
import logging
import re
from pathlib import Path

from ..metric_names import VALID_ERROR, is_error
from ..tracking.contract import STEP_TAG
from .grid import best_point, cells, key_value, label, log_spaced, numeric, ordered
from .table import fmt, objective, status

log = logging.getLogger("dlexp")

SAMPLED = 12  # more distinct values than this on a key: sampled, not a grid
MAX_CURVES = 50


def warm_up() -> None:
    """Import matplotlib and load its font (~0.3-0.5 s), e.g. in a thread while a sweep's jobs run, so the
    pictures at its end cost only their drawing."""
    fig = _figure(3, 2)
    fig.text(0.5, 0.5, "0.1 %")
    fig.canvas.draw()


def _figure(width: float, height: float, right: float = 0.97):
    """A figure on its own Agg canvas (no pyplot), fixed margins in inches (no layout engine: faster)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=1.05 / width, right=right, bottom=0.75 / height, top=1 - 0.62 / height)
    return fig


def _formatter(metric: str):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{100 * v:.3g} %" if is_error(metric) else f"{v:.4g}")


def _way(direction: str) -> str:
    return "lower is better" if direction == "min" else "higher is better"


def text_colour(rgba) -> str:
    """Black or white, whichever contrasts more with a cell of colour ``rgba`` (WCAG's relative
    luminance: dark text on bright cells, white on dark ones)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "white"


def metric_label(metric: str) -> str:
    """best_valid_error -> best valid error; valid/error -> valid error."""
    return re.sub(r"[_/]+", " ", metric).strip()


def what_was_swept(children, keys, metric) -> str:
    """The pictures' title: ``best valid error: optimizer.lr x regularization.l2, mlp on digits``."""
    params = next((c.data.params for c in children if c.data.params.get("model.name")), {})
    on = f", {params['model.name']} on {params.get('dataset.name', '?')}" if params else ""
    return f"{metric_label(metric)}: {' x '.join(keys) or 'one run'}{on}"


def _write_csv(path: Path, header: list, rows: list) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def heatmap(children, keys, metric, direction, title) -> tuple:
    """(figure, CSV header, CSV rows) of the objective over the first two keys (one CSV row a cell)."""
    grid = cells(children, keys[:2], metric, direction)
    rows = ordered(p[0] for p in grid)
    cols = ordered(p[1] for p in grid)
    best = best_point(grid, direction)
    width = max(5.0, 3.0 + 1.0 * len(cols))
    fig = _figure(width, max(3.6, 1.6 + 0.55 * len(rows)), right=1 - 0.3 / width)
    ax = fig.subplots()
    _draw_cells(fig, ax, grid, rows, cols, best, metric, direction)
    others = f", best over {', '.join(keys[2:])}" if len(keys) > 2 else ""
    ax.set_title(f"{title}\n({_way(direction)}{others})", fontsize=10)
    for axis, key, values in ((ax.set_xlabel, keys[1], cols), (ax.set_ylabel, keys[0], rows)):
        axis(key + (" (log-spaced)" if log_spaced(values) else ""))
    data = []
    for r in rows:
        for c in cols:
            cell = grid.get((r, c))
            data.append([r, c, "" if cell is None or cell.value is None else cell.value,
                         "NO RUN" if cell is None else cell.status, "" if cell is None else cell.run_id,
                         0 if cell is None else cell.runs, int((r, c) == best)])
    return fig, [keys[0], keys[1], metric, "status", "run_id", "runs", "best"], data


def _draw_cells(fig, ax, grid, rows, cols, best, metric, direction) -> None:
    import numpy as np
    from matplotlib.patches import Rectangle

    values = np.full((len(rows), len(cols)), np.nan)
    for (r, c), cell in grid.items():
        if cell.value is not None and cell.status != "FAILED":
            values[rows.index(r), cols.index(c)] = cell.value
    cmap = "viridis_r" if direction == "min" else "viridis"  # the best cells bright
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label=metric, format=_formatter(metric))
    ax.set_xticks(range(len(cols)), [label(c) for c in cols])
    ax.set_yticks(range(len(rows)), [label(r) for r in rows])
    ax.set_facecolor("white")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = grid.get((r, c))
            if cell is None:
                ax.text(j, i, "no run", ha="center", va="center", fontsize=8, color="0.5")
            elif cell.status == "FAILED" or cell.value is None:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.55"))
                ax.text(j, i, cell.status, ha="center", va="center", fontsize=9, color="darkred", weight="bold")
            else:
                ax.text(j, i, fmt(metric, cell.value), ha="center", va="center", fontsize=9,
                        color="black" if (r, c) == best else text_colour(image.cmap(image.norm(cell.value))),
                        bbox=dict(boxstyle="round", fc="white", ec="none", alpha=0.85) if (r, c) == best else None)
    if best is not None:
        i, j = rows.index(best[0]), cols.index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3))
        ax.text(j, i - 0.32, "best", ha="center", va="center", fontsize=8, color="red", weight="bold")


def _axis_scale(set_scale, values, log=False) -> None:
    """A log axis for log-spaced values (or ``log``: a key the sweep samples on a log scale)."""
    if numeric(values) and (log or log_spaced(values)) and any(float(v) > 0 for v in values):
        positive = [float(v) for v in values if float(v) > 0]
        if len(positive) < len(values):  # a zero (no penalty) among log-spaced values
            set_scale("symlog", linthresh=min(positive))
        else:
            set_scale("log")


def scatter(children, keys, metric, direction, title, log_keys=()) -> tuple:
    """(figure, CSV header, CSV rows): sampled values of two keys, coloured by the metric (one row a run)."""
    points = [(key_value(r, keys[0]), key_value(r, keys[1]), r.data.metrics.get(metric), status(r), r.info.run_id)
              for r in children]
    points = [p for p in points if p[0] is not None and p[1] is not None and numeric([p[0], p[1]])]
    fig = _figure(6.4, 4.8, right=0.98)
    ax = fig.subplots()
    ok = [p for p in points if p[2] is not None and p[3] != "FAILED"]
    if ok:
        image = ax.scatter([float(p[1]) for p in ok], [float(p[0]) for p in ok], c=[p[2] for p in ok], s=60,
                           cmap="viridis_r" if direction == "min" else "viridis", edgecolors="k")
        fig.colorbar(image, ax=ax, label=metric, format=_formatter(metric))
        best = (min if direction == "min" else max)(ok, key=lambda p: p[2])
        ax.scatter([float(best[1])], [float(best[0])], marker="*", s=400, c="red", label="best", zorder=3)
        ax.legend(loc="best")
    failed = [p for p in points if p not in ok]
    if failed:
        ax.scatter([float(p[1]) for p in failed], [float(p[0]) for p in failed], marker="x", c="darkred", s=60)
    _axis_scale(ax.set_xscale, [p[1] for p in points], keys[1] in log_keys)
    _axis_scale(ax.set_yscale, [p[0] for p in points], keys[0] in log_keys)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    ax.set_title(f"{title}\n({_way(direction)}), {len(points)} runs", fontsize=10)
    return fig, [keys[0], keys[1], metric, "status", "run_id"], [[a, b, "" if m is None else m, s, i]
                                                                    for a, b, m, s, i in points]


def line(children, key, metric, direction, title, log=False) -> tuple:
    """(figure, CSV header, CSV rows): the metric against one key's values (one row a value)."""
    grid = cells(children, [key], metric, direction)
    values = ordered(p[0] for p in grid)
    best = best_point(grid, direction)
    as_numbers = numeric(values)
    xs = [float(v) if as_numbers else i for i, v in enumerate(values)]
    fig = _figure(6.4, 4.2)
    ax = fig.subplots()
    ok = [(x, grid[(v,)]) for x, v in zip(xs, values) if grid[(v,)].value is not None and grid[(v,)].status != "FAILED"]
    ax.plot([x for x, _ in ok], [c.value for _, c in ok], "o-", color="tab:blue", label=metric)
    failed = [x for x, v in zip(xs, values) if (x, grid[(v,)]) not in ok]
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color="darkred", markersize=10, transform=ax.get_xaxis_transform(),
                clip_on=False, label="FAILED")
    if best is not None:
        bx = xs[values.index(best[0])]
        ax.plot([bx], [grid[best].value], "*", color="red", markersize=18, label="best")
    if as_numbers:
        _axis_scale(ax.set_xscale, values, log)
    if len(values) <= SAMPLED:  # a grid's values as the ticks; sampled ones: matplotlib's ticks
        ax.set_xticks(xs, [label(v) for v in values])
    ax.yaxis.set_major_formatter(_formatter(metric))
    ax.set_xlabel(key + (" (log-spaced)" if log or log_spaced(values) else ""))
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\n({_way(direction)})", fontsize=10)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    rows = [[v, "" if grid[(v,)].value is None else grid[(v,)].value, grid[(v,)].status, grid[(v,)].run_id,
             int((v,) == best)] for v in values]
    return fig, [key, metric, "status", "run_id", "best"], rows


def curve_metric(children) -> str:
    for name in (VALID_ERROR, "valid_error"):  # (a sweep logged before the current metric names)
        if any(name in r.data.metrics for r in children):
            return name
    return "pretrain/cost"


def overlaid_curves(client, rows, children, title) -> tuple:
    """(figure, CSV header, CSV rows): every child's validation curve (a skipped job's: the run it points
    to), best first, at most MAX_CURVES, the best run's drawn thick (one CSV row a point)."""
    metric = curve_metric(children)
    by_id = {c.info.run_id: c for c in children}
    fig = _figure(7.2, 4.6)
    ax = fig.subplots()
    data = []
    shown = [r for r in rows if r["run_id"] in by_id][:MAX_CURVES]
    for rank, row in enumerate(shown):
        source = row.get("skipped_from") or row["run_id"]
        history = sorted(client.get_metric_history(source, metric), key=lambda m: m.step)
        if not history:
            continue
        name = row["overrides"] or row["run_name"] or row["run_id"][:8]
        best = rank == 0 and row["status"] != "FAILED"
        ax.plot([m.step for m in history], [m.value for m in history], linewidth=2.8 if best else 1.1,
                color="red" if best else None, alpha=1.0 if best else 0.75, zorder=3 if best else 2,
                label=(f"{name} (best)" if best else name)[:60])
        data += [[row["run_id"], row["overrides"], m.step, m.value] for m in history]
    ax.yaxis.set_major_formatter(_formatter(metric))
    ax.set_xlabel("iteration" if metric == "valid_error" else
                  next((c.data.tags[STEP_TAG] for c in children if STEP_TAG in c.data.tags), "epoch"))
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\n{len({d[0] for d in data})} runs' curves", fontsize=10)
    if 0 < len(shown) <= 12 and data:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig, ["run_id", "overrides", "step", metric], data


def log_keys(parent, keys) -> set:
    """The keys the sweep samples on a log scale (Optuna's ``tag(log, interval(...))`` in its params)."""
    spec = parent.data.params.get("sweep.params", "")
    return {k for k in keys if re.search(rf"(?<![\w.]){re.escape(k)}=tag\(\s*log", spec)}


def figures(client, parent, rows, children, keys, curves=True) -> dict:
    """{picture name: (figure, CSV header, CSV rows)} for this sweep (see the module doc); ``curves``:
    the overlaid curves too (their histories read through ``client``)."""
    if not children:
        return {}
    metric, direction = objective(children)
    order = {row["run_id"]: i for i, row in enumerate(rows)}  # ranked: of equal cells, the table's best wins
    children = sorted(children, key=lambda c: order.get(c.info.run_id, len(order)))
    title = what_was_swept(children, keys, metric)
    values = {k: ordered(key_value(r, k) for r in children) for k in keys}
    out = {}
    if len(keys) >= 2:
        sampled = any(len(values[k]) > SAMPLED for k in keys[:2]) and all(numeric(values[k]) for k in keys[:2])
        if sampled:
            out["sweep_scatter"] = scatter(children, keys, metric, direction, title, log_keys(parent, keys))
        else:
            out["sweep_heatmap"] = heatmap(children, keys, metric, direction, title)
    elif len(keys) == 1:
        out["sweep_line"] = line(children, keys[0], metric, direction, title, keys[0] in log_keys(parent, keys))
    if curves:
        curves_title = what_was_swept(children, keys, curve_metric(children))
        out["sweep_curves"] = overlaid_curves(client, rows, children, curves_title)
    return out


def pictures(client, parent, rows, children, keys, out: Path) -> list:
    """Draw the sweep's pictures into ``out``, each with its data as CSV; returns the files written."""
    files = []
    for name, (fig, header, data) in figures(client, parent, rows, children, keys).items():
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / f"{name}.png")
        files += [out / f"{name}.png", _write_csv(out / f"{name}.csv", header, data)]
    return files
