"""How long archc takes to compile a model, stage by stage, and how that grows with graph size.

Measured for every tests/zoo.py model, ResNet-50 at (1, 3, 224, 224) and generated deep
residual chains of about 100, 300, 1000, 3000 and 10000 fx graph nodes (input (1, 3, 16, 16)):

* trace    -- ``archc.trace(model, inputs)`` (runs the model on the example alongside)
* analyse  -- ``archc.analyse(gm)`` + ``archc.channel_groups(an)``
* gate     -- ``archc.passes.insert_filters(gm)`` (it runs its own analysis)
* compact  -- ``archc.compact(gated)`` after closing 30% of every gate's channels at random
  (fixed seed); it includes compact's own verification on random inputs, reported as is.

Each figure is the median of ``--repeats`` full pipelines (1 for graphs of more than
``--big-nodes`` nodes). For the chains, the log-log slope of time vs nodes is fitted
(1.0 = linear). Output: a rich table, ``--out`` (JSON: machine, command, every sample) and a
PNG of time vs nodes beside it.

Rerun (from the repository root, about 5 minutes on 2 cores):
    python benchmarks/compile_speed.py
    python benchmarks/compile_speed.py --quick        # zoo + chains up to 1000 nodes (CI smoke)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, archc, command_line, error_record, fit_loglog,  # noqa: E402
                     kill_fraction, machine_info, timed, wait_quiet, write_json, zoo)
from models import chain_blocks_for, deep_chain, resnet50  # noqa: E402

from archc.verify import assert_equivalent  # noqa: E402

STAGES = ("trace", "analyse", "gate", "compact")
# not a stage: the same check compact ends with, timed again on its own (part of "compact")
VERIFY = "verify_in_compact"
CHAIN_SIZES = (100, 300, 1000, 3000, 10000)
CHAIN_INPUT = (1, 3, 16, 16)


def pipeline(model: torch.nn.Module, inputs: tuple, fraction: float, seed: int) -> dict[str, Any]:
    """One full trace -> analyse -> gate -> compact run; seconds per stage and graph sizes."""
    out: dict[str, Any] = {}
    gm, out["trace"] = timed(archc.trace, model, inputs)
    out["nodes"] = len(gm.graph.nodes)
    (_, groups), out["analyse"] = timed(lambda: (an := archc.analyse(gm), archc.channel_groups(an)))
    out["groups"] = len(groups)
    gated, out["gate"] = timed(archc.passes.insert_filters, gm)
    out["gated_nodes"] = len(gated.graph.nodes)
    out["channels"] = sum(f.size for f in archc.filters(gated))
    out["killed"] = kill_fraction(gated, fraction, seed)
    small, out["compact"] = timed(archc.compact, gated)
    out["compact_nodes"] = len(small.graph.nodes)
    _, out[VERIFY] = timed(assert_equivalent, gated, small)
    return out


def bench(name: str, make: Callable[[], tuple], repeats: int, args) -> dict[str, Any]:
    """Median seconds per stage over ``repeats`` pipelines; a failure is recorded, not raised."""
    row: dict[str, Any] = {"name": name, "samples": []}
    stage = "build"
    try:
        model, inputs = make()
        row["input"] = [list(t.shape) for t in inputs]
        clean, tries, want, limit = 0, 0, repeats, repeats + args.retries
        while clean < want and tries < limit:
            stage, tries = "pipeline", tries + 1
            wait_quiet(args.max_other, args.max_wait)
            with OtherLoad() as load:
                sample = pipeline(model, inputs, args.fraction, args.seed)
            sample["other_load"] = round(load.share, 3)
            row["samples"].append(sample)
            clean += sample["other_load"] <= args.max_other
            if sample["nodes"] > args.big_nodes:  # one clean run is enough for the biggest
                want, limit = 1, min(limit, 2)
    except Exception as exc:  # noqa: BLE001 - record and go on with the next model
        row["error"] = error_record(stage, exc)
    if row["samples"]:
        _summarise(row, args.max_other)
    return row


def _summarise(row: dict[str, Any], max_other: float) -> None:
    """Medians over the uncontended samples (over all of them when none was)."""
    keys = [k for k in row["samples"][0] if k not in (*STAGES, VERIFY, "other_load")]
    row.update({k: row["samples"][0][k] for k in keys})
    use = [x for x in row["samples"] if x["other_load"] <= max_other] or row["samples"]
    row["contended"] = use is row["samples"] and any(x["other_load"] > max_other for x in use)
    for s in (*STAGES, VERIFY, "other_load"):
        row[s] = statistics.median(x[s] for x in use)
    row["total"] = sum(row[s] for s in STAGES)
    row["total_min"] = min(sum(x[s] for s in STAGES) for x in use)
    row["repeats"] = len(use)


def cases(args) -> list[tuple[str, str, Callable[[], tuple]]]:
    """(kind, name, factory) for everything to measure."""
    out: list[tuple[str, str, Callable[[], tuple]]] = [("zoo", n, f) for n, f in zoo().items()]
    if not args.quick:
        out.append(("full", "resnet50", lambda: (resnet50(), (torch.randn(1, 3, 224, 224),))))
    sizes = [n for n in args.chain_sizes if not args.quick or n <= 1000]
    for n in sizes:
        blocks = chain_blocks_for(n)
        out.append(("chain", f"chain{blocks}",
                    lambda b=blocks: (deep_chain(b), (torch.randn(*CHAIN_INPUT),))))
    return out


def growth(rows: list[dict]) -> Optional[dict[str, Any]]:
    """Log-log fit of each stage's time (and the total) against nodes over the chains."""
    ok = [r for r in rows if r["kind"] == "chain" and "total" in r]
    if len(ok) < 2:
        return None
    nodes = [r["nodes"] for r in ok]
    fit = {s: fit_loglog(nodes, [max(r[s], 1e-6) for r in ok]) for s in (*STAGES, "total")}
    fit["seconds_per_node"] = {r["name"]: r["total"] / r["nodes"] for r in ok}
    fit["nodes"] = nodes
    return fit


def print_table(rows: list[dict], fit: Optional[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="archc compile time per stage (seconds, median)")
    for col in ("model", "kind", "nodes", "runs", *STAGES, "total", "ms/node", "other"):
        table.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for r in rows:
        if "total" not in r:
            table.add_row(r["name"], r["kind"], "", "", f"[red]{r['error']['type']}[/red]")
            continue
        table.add_row(r["name"], r["kind"], str(r["nodes"]), str(r["repeats"]),
                      *(f"{r[s]:.3f}" for s in STAGES), f"{r['total']:.3f}",
                      f"{1e3 * r['total'] / r['nodes']:.2f}",
                      f"{r['other_load']:.0%}" + ("!" if r["contended"] else ""))
    console = Console(width=200)
    console.print(table)
    if fit:
        slopes = ", ".join(f"{s} {fit[s]['slope']:.2f}" for s in (*STAGES, "total"))
        console.print(f"chain growth, log-log slope of seconds vs nodes: {slopes}")
    console.print("other = median share of the CPUs used by other processes meanwhile "
                  "(! = every sample was contended: the figure may be inflated)")
    for r in rows:
        if "error" in r:
            console.print(f"[red]{r['name']} failed in {r['error']['stage']}:[/red]\n"
                          f"{r['error']['traceback']}")


def plot(rows: list[dict], fit: Optional[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    chains = [r for r in rows if r["kind"] == "chain" and "total" in r]
    for stage in (*STAGES, "total"):
        ax.plot([r["nodes"] for r in chains], [max(r[stage], 1e-4) for r in chains], "o-",
                label=f"chain {stage}" + (f" (slope {fit[stage]['slope']:.2f})" if fit else ""),
                lw=2.5 if stage == "total" else 1)
    others = [r for r in rows if r["kind"] != "chain" and "total" in r]
    ax.scatter([r["nodes"] for r in others], [r["total"] for r in others], c="k", marker="x",
               label="zoo / resnet50 total", zorder=3)
    for r in others:
        if r["kind"] == "full":
            ax.annotate(r["name"], (r["nodes"], r["total"]))
    ax.set(xscale="log", yscale="log", xlabel="fx graph nodes", ylabel="seconds",
           title="archc compile time vs graph size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="pipelines per model (median taken)")
    p.add_argument("--big-nodes", type=int, default=2000,
                   help="graphs with more nodes than this are run once")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--fraction", type=float, default=0.3, help="share of channels killed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chain-sizes", type=int, nargs="+", default=list(CHAIN_SIZES),
                   help="approximate fx node counts of the deep chains")
    p.add_argument("--only", nargs="+", help="only the cases with these names (e.g. resnet50)")
    p.add_argument("--max-other", type=float, default=0.1,
                   help="a sample during which other processes used more than this share of "
                        "the CPUs is contended: it is retried, and left out of the median")
    p.add_argument("--max-wait", type=float, default=10.0,
                   help="seconds to wait for the machine to be quiet before each sample")
    p.add_argument("--retries", type=int, default=1, help="extra samples allowed per model")
    p.add_argument("--quick", action="store_true", help="zoo + chains up to 1000 nodes only")
    p.add_argument("--out", type=Path, default=RESULTS / "compile_speed.json")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload: dict[str, Any] = {"machine": machine_info(args.threads), "command": command_line(),
                               "settings": {k: str(v) for k, v in vars(args).items()}}
    pipeline(*zoo()["resnet"](), args.fraction, args.seed)  # warm-up: imports, lazy inits
    rows = []
    for kind, name, make in cases(args):
        if args.only and name not in args.only:
            continue
        row = bench(name, make, args.repeats, args)
        row["kind"] = kind
        rows.append(row)
        write_json(args.out, {**payload, "results": rows, "partial": True})  # survive a kill
        status = f"{row['total']:.2f}s" if "total" in row else f"FAILED ({row['error']['type']})"
        print(f"{kind:5s} {name:14s} {row.get('nodes', '?')!s:>6s} nodes  {status}", flush=True)
    fit = growth(rows)
    payload.update(results=rows, chain_growth=fit)
    write_json(args.out, payload)
    plot(rows, fit, args.out.with_suffix(".png"))
    print_table(rows, fit)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
