"""An ``archc tune`` study steered to a size (``--target``), against a paper's figure at that size.

Each complete trial's compact model (the epoch the study scored), with its non-zero weights
counted in its ``weights.safetensors``; then the trials within the size, their median and best
test metric, and how many reach the paper's figure. Run after the study, from the repository root:

    python benchmarks/tune_budget_report.py /tmp/tess/study/trials.json --weights 60000 --goal 0.9786 \
        --paper "Tessera & Rosman: 97.86% at about 60,000 active weights" \
        --out benchmarks/results/tune_tessera_mlp_60k.md

Several studies of one setting (their saved trials.json) pool into one median with ``--pool``:

    python benchmarks/tune_budget_report.py --pool benchmarks/results/tune_lenet5_88k_e60*/trials.json --goal 0.9934
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line  # noqa: E402
from archc.search import met_target  # noqa: E402
from archc.tune_report import code_line  # noqa: E402
from shrinknets_random_search import trial_nonzero_weights, tune_command  # noqa: E402


def trial_rows(study: dict) -> list[dict]:
    """The complete trials, each with its compact model's non-zero weights and whether its
    scored epoch had met the target (from the search's log, as studies before ``target_met`` lack it)."""
    rows = []
    for t in study["trials"]:
        if t["state"] != "COMPLETE":
            continue
        folder = Path(t["folder"])
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        scored = next(r for r in log if r["epoch"] == t["epoch"])
        rows.append({**t, "nonzero_weights": trial_nonzero_weights(folder),
                     "target_met": met_target(scored)})
    return rows


def render(study: dict, rows: list[dict], weights: int, goal: float, paper: str) -> str:
    s = study["settings"]
    within = [r for r in rows if r["nonzero_weights"] <= weights]
    tests = [r["test_metric"] for r in within]
    reached = [t for t in tests if t >= goal]
    lines = [f"### `archc tune --target {s['target']}`: {paper}", "",
             f"Commands: `{tune_command(s)}` ; `{command_line()}`", "",
             f"{len(rows)} complete trials of {s['epochs']} epochs, each compacted at its "
             f"{study.get('pick', 'last')} epoch and measured on the model file's test_data(). "
             f"Dense baseline: test {study['baseline'].get('test_metric', float('nan')):.4f} at "
             f"{study['baseline']['params']:,} parameters.", ""]
    if "code_versions" in study:  # studies written before archc recorded each trial's code have none
        lines += [code_line(study["code_versions"]), ""]
    if tests:
        lines += [f"**{len(within)} trial{'' if len(within) == 1 else 's'} with at most {weights:,} non-zero weights: median test "
                  f"{100 * statistics.median(tests):.2f}%, best {100 * max(tests):.2f}%, worst {100 * min(tests):.2f}%; "
                  f"{len(reached)} of them at or above {100 * goal:.2f}%.**", "",
                  f"Their median width per layer: {median_widths(within)}; median hidden units (every width but "
                  f"the last layer's, ShrinkNets' MLP size): {statistics.median(hidden_units(r) for r in within):,.0f}.", ""]
    lines += ["| trial | λ | epoch | widths | parameters | non-zero weights | target met | validation | test |",
              "|--:|--:|--:|---|--:|--:|---|--:|--:|"]
    for r in rows:
        widths = "-".join(str(v) for v in r["widths"].values())
        lines.append(f"| {r['trial']} | {r['lam']:.2e} | {r['epoch']} | {widths} | {r['size']:,} | "
                     f"{r['nonzero_weights']:,} | {'yes' if r['target_met'] else 'no'} | {100 * r['metric']:.2f}% | "
                     f"{100 * r['test_metric']:.2f}% |")
    return "\n".join(lines) + "\n"


def hidden_units(row: dict) -> int:
    """The summed widths of a trial's compact model but its last layer's (the output)."""
    return sum(list(row["widths"].values())[:-1])


def median_widths(rows: list[dict]) -> str:
    """Each layer's median width over ``rows``, in the model's layer order."""
    return ", ".join(f"{name} {statistics.median(r['widths'][name] for r in rows):g}" for name in rows[0]["widths"])


def pooled(paths: list[Path], goal: float) -> str:
    """One median over the complete trials of several studies of one setting (their saved
    ``trials.json``, which outlive the trial folders): each trial's test metric and size."""
    trials = [(p, t) for p in paths for t in json.loads(p.read_text())["trials"] if t["state"] == "COMPLETE"]
    tests = [t["test_metric"] for _, t in trials]
    lines = [f"{len(trials)} complete trials of {len(paths)} studies: median test {100 * statistics.median(tests):.2f}%, "
             f"{sum(v >= goal for v in tests)} at or above {100 * goal:.2f}%"]
    lines += [f"  {p.parent.name} trial {t['trial']}: {100 * t['test_metric']:.2f}% at {t['size']:,} parameters"
              for p, t in trials]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trials", type=Path, nargs="+", help="the study's trials.json (several, with --pool)")
    ap.add_argument("--pool", action="store_true", help="print one median over the studies' complete trials")
    ap.add_argument("--weights", type=int, help="the paper's size, in non-zero weights")
    ap.add_argument("--goal", type=float, required=True, help="the paper's test metric at that size")
    ap.add_argument("--paper", help="the paper's figure, in words")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.pool:
        return print(pooled(args.trials, args.goal))
    if len(args.trials) > 1 or None in (args.weights, args.paper, args.out):
        ap.error("one trials.json with --weights, --paper and --out (or several with --pool)")
    study = json.loads(args.trials[0].read_text())
    text = render(study, trial_rows(study), args.weights, args.goal, args.paper)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
