"""A sweep as a matrix: ``dlexp-sweep table <sweep> --pivot KEY1,KEY2``.

Rows are KEY1's values, columns KEY2's (one key: one column), cells the metric (the sweep's objective,
or ``--metric``) of the cell's best run; ``FAILED`` where every run of a cell failed, ``-`` where no run
had those values. The best cell is marked (``*`` in text, bold in Markdown). As text (the terminal),
Markdown or CSV (raw numbers, for a spreadsheet).
"""
import csv
import io
from dataclasses import dataclass

from .grid import best_point, cells, label, ordered
from .table import fmt


@dataclass
class Pivot:
    keys: list
    metric: str
    direction: str
    rows: list      # KEY1's values
    columns: list   # KEY2's values ([None] for one key)
    grid: dict      # (row value, column value) or (row value,) -> Cell
    best: tuple     # the best cell's point, or None


def pivot(children, keys, metric: str, direction: str) -> Pivot:
    from .grid import key_value

    grid = cells(children, keys, metric, direction)
    rows = ordered(key_value(r, keys[0]) for r in children)
    columns = ordered(key_value(r, keys[1]) for r in children) if len(keys) > 1 else [None]
    return Pivot(list(keys), metric, direction, rows, columns, grid, best_point(grid, direction))


def _point(p: Pivot, row, column) -> tuple:
    return (row,) if column is None else (row, column)


def _cell(p: Pivot, row, column, best_mark=("", "")) -> str:
    point = _point(p, row, column)
    cell = p.grid.get(point)
    if cell is None:
        return "-"
    if cell.status == "FAILED" or cell.value is None:
        return cell.status if cell.status != "FINISHED" else "-"
    text = fmt(p.metric, cell.value) + (" (pruned)" if cell.status == "PRUNED" else "")
    return f"{best_mark[0]}{text}{best_mark[1]}" if point == p.best else text


def _header(p: Pivot) -> list:
    corner = f"{p.keys[0]} \\ {p.keys[1]}" if len(p.keys) > 1 else p.keys[0]
    return [corner] + [label(c) if c is not None else p.metric for c in p.columns]


def pivot_text(p: Pivot) -> str:
    table = [_header(p)] + [[label(r)] + [_cell(p, r, c, ("", " *")) for c in p.columns] for r in p.rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(table[0]))]
    lines = ["  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    way = "lowest" if p.direction == "min" else "highest"
    lines.append(f"cells: {p.metric} ({way} is best, marked *)" if p.best else f"cells: {p.metric}")
    return "\n".join(lines)


def pivot_markdown(p: Pivot) -> str:
    header = _header(p)
    out = ["| " + " | ".join(h.replace("\\", "\\\\") if j == 0 else h for j, h in enumerate(header)) + " |",
           "| --- | " + " | ".join("---:" for _ in p.columns) + " |"]
    for r in p.rows:
        out.append("| " + " | ".join([f"`{label(r)}`"] + [_cell(p, r, c, ("**", "**")) for c in p.columns]) + " |")
    return "\n".join(out) + "\n"


def pivot_csv(p: Pivot) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([p.keys[0] if len(p.keys) == 1 else f"{p.keys[0]}\\{p.keys[1]}"]
                    + [c if c is not None else p.metric for c in p.columns])
    for r in p.rows:
        row = [r]
        for c in p.columns:
            cell = p.grid.get(_point(p, r, c))
            row.append("" if cell is None else cell.value if cell.value is not None else cell.status)
        writer.writerow(row)
    return buf.getvalue()
