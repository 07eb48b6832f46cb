"""Tables and the plot of ``das_steering.py``: markdown like the paper's Table 1, params vs RMSE.

Run ``python benchmarks/das_steering.py --report`` to rebuild them from the saved JSON.
"""
from __future__ import annotations

from pathlib import Path

from archc.budget import DEFAULT_REACH

PAPER = [("Baseline", "840M", "1.03M", 0.0247, 0.0945), ("DAS indiv. channels t=1e-3, g=1e-8", "692M", "1.01M", 0.0124, 0.0889),
         ("DAS indiv. channels t=1e-2, g=1e-6", "402M", "0.43M", 0.0194, 0.0912),
         ("DAS indiv. channels t=1e-1, g=1e-8", "210M", "0.54M", 0.0682, 0.0955),
         ("DAS grouped t=1e-4, eta=3e-6", "480M", "0.11M", 0.0318, 0.0978), ("DAS grouped t=1e-3, eta=3e-6", "508M", "0.19M", 0.0318, 0.0980),
         ("DAS grouped t=1e-2, eta=3e-5", "409M", "0.04M", 0.0691, 0.0996)]

def arch_text(row: dict) -> str:
    """'5x5 3x4g ...': each conv's kernel, g = grouped, p = patterns form; then linear inputs."""
    tag = {"grouped": "g", "patterns": "p"}
    convs = " ".join(f"{v['kernel'][0]}x{v['kernel'][1]}{tag.get(v['form'], '')}" for v in row["arch"]["convs"].values())
    return convs + "; fc in " + "-".join(str(v) for v in row["arch"]["linear_in"].values())


def table(payload: dict, title: str) -> list[str]:
    """One run's settings line and rows as markdown."""
    d, m, st = payload["data"], payload["machine"], payload["settings"]
    lines = [title, "", f"Command: `{payload['command']}`", "",
             f"Data: {d['train']} train / {d['test']} test synthetic 3x66x200 road images (benchmarks/steering_data.py); "
             f"{st['epochs']} epochs, batch {st['batch_size']}, Adam lr {st['lr']} (search parameters: lr {st['arch_lr']}); "
             f"BatchNorm {'no (He init)' if st.get('no_bn') else 'yes'}; seed {st.get('seed', 0)}; lam (gates) {st['lam']} ({st.get('gate_weighting', 'uniform')})"
             f"{', steered to ' + st['target'] if st.get('target') else ''}, kernel_lam "
             f"{st['kernel_lam']} ({st.get('kernel_weighting', 'uniform')}), group_lam {st['group_lam']}, exclusive_lam "
             f"{st['exclusive_lam']}, patterns {st.get('patterns', 4)} ({st.get('patterns_init', 'random')} init); fine-tuning of compact models (+ftN rows): "
             f"{st.get('finetune', 0)} epochs at Adam lr {st.get('finetune_lr', st['lr'])}. Machine: {m['cpu']}, "
             f"{m['cpu_count']} CPUs (shared), torch {m['torch']}, {st['threads']} torch thread(s) for training. "
             f"Wall time {payload.get('wall_seconds', 0) / 60:.1f} min.", "",
             "| Model | FLOPs | Params | Train RMSE | Test RMSE | ORT ms (2 thr) | ORT ms (1 thr) | conv kernels (p: patterns "
             "form, g: grouped conv); FC inputs |", "|---|---|---|---|---|---|---|---|"]
    for r in payload["rows"]:
        lines.append(f"| {r['model']} | {r['flops'] / 1e6:.1f}M | {r['params'] / 1e6:.3f}M | {r['train_rmse']:.4f} | "
                     f"{r['test_rmse']:.4f} | {r['ort_2t']['median_ms']:.2f} | {r['ort_1t']['median_ms']:.2f} | {arch_text(r)} |")
    z = d["test_rmse_predict"]
    lines.append(f"| predict 0 / predict train mean | 0 | 0 | | {z['zero']:.4f} / {z['train_mean']:.4f} | | | |")
    lines += [f"Correction: {c}." for c in payload.get("corrections", [])]
    return lines + [f"ERROR in {e['row']} ({e['stage']}): {e['type']}: {e['message'][:300]}" for e in payload["errors"]]


def _followup_label(st: dict, main_epochs: int) -> str:
    """What a follow-up run changed, for the plot legend."""
    epochs = f"{st['epochs']} epochs, " if st["epochs"] != main_epochs else ""
    return epochs + _searched(st)


def _searched(st: dict) -> str:
    only = "/".join(st.get("only") or ["all"])
    if "kernels" in only:
        return f"{only}: kernel_lam {st['kernel_lam']:g} ({st.get('kernel_weighting', 'uniform')})"
    weighting = st.get("gate_weighting", "uniform")
    lam = f"{only}: lam {st['lam']:g}" + (f" ({weighting}-weighted)" if weighting != "uniform" else "")
    lam += f", target {st['target']}" if st.get("target") else ""
    lam += f" by {st['target_reach']:.0%} of the epochs" if st.get("target") and st.get("target_reach", DEFAULT_REACH) != DEFAULT_REACH else ""
    init = ", partition init" if st.get("patterns_init") == "partition" else ""
    if "grouped" in only and st.get("patterns_form") == "assign":
        return f"{lam}, assign form: purity_lam {st['purity_lam']:g}, connections_lam {st['connections_lam']:g}{init}"
    if "grouped" in only:
        return f"{lam}, group_lam {st['group_lam']:g}, exclusive_lam {st['exclusive_lam']:g}{init}"
    return lam


def _same_training(st: dict) -> tuple:
    """Runs whose baselines are interchangeable: same seed, data size, epochs and fine-tuning."""
    return (st.get("seed") or 0, st["train"], st["epochs"], st.get("finetune", 0), bool(st.get("no_bn")))


def comparison(runs: list, main_epochs: int) -> list[str]:
    """Every compact model against the baseline trained the same way (seed, epochs), after the
    fine-tuning both get and before it; runs without a baseline borrow a matching run's."""
    baselines = {}
    for run in runs:
        named = {r["model"]: r for r in run["rows"]}
        tuned = next((r for m, r in named.items() if m.startswith("Baseline +ft")), None)
        if "Baseline" in named and tuned is not None:
            baselines[_same_training(run["settings"])] = (named["Baseline"], tuned)
    lines = ["#### Against the baseline trained the same way (same seed and epochs)", "",
             "| run | model | params | FLOPs | test RMSE +ft | vs baseline +ft | test RMSE before ft | vs baseline before ft "
             "| search s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, run in enumerate(runs):
        st, named = run["settings"], {r["model"]: r for r in run["rows"]}
        base = baselines.get(_same_training(st))
        if base is None:
            continue
        label = "main run" if i == 0 else _followup_label(st, main_epochs)
        label += f", seed {st['seed']}" if st.get("seed") else ""
        label += f" ({run['note']})" if run.get("note") else ""  # what the settings do not say (the code)
        for model, r in named.items():
            before = named.get(model.rsplit(" +ft", 1)[0])
            if model.startswith("Baseline") or "+ft" not in model or before is None:
                continue
            lines.append(f"| {label} | {model} | {r['params'] / 1e6:.3f}M ({base[1]['params'] / r['params']:.1f}x fewer) "
                         f"| {r['flops'] / 1e6:.1f}M | {r['test_rmse']:.4f} | {_delta(r, base[1])} | "
                         f"{before['test_rmse']:.4f} | {_delta(before, base[0])} | {r.get('train_seconds', 0):.0f} |")
    return lines


def _delta(row: dict, baseline: dict) -> str:
    return f"{(row['test_rmse'] / baseline['test_rmse'] - 1) * 100:+.1f}%"


def write_report(payload: dict, out: Path, followups: list = ()) -> None:
    """The markdown tables (main run, then follow-up runs) and a params-vs-test-RMSE scatter (PNG)."""
    lines = table(payload, "### DAS (Shin, Packer & Song), Table 1, on a procedural steering stand-in")
    for f in followups:
        lines += [""] + table(f, "#### Follow-up run")
    lines += [""] + comparison([payload, *followups], payload["settings"]["epochs"])
    lines += ["", "Paper (Udacity, real data; their PilotNet input gives 840M FLOPs, ours 66x200 gives ~54M):", "",
              "| Model | FLOPs | Params | Train RMSE | Test RMSE |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {e} | {f} |" for a, b, c, e, f in payload["paper"]]
    lines += ["", "Rows are compact models (archc.compact, search_threshold=t), evaluated after compaction. FLOPs: "
              "archc.flops.count (the 0/1 scatter conv of a 'patterns' layer included). ORT: onnxruntime CPU provider, batch "
              "1, median of 50 runs after 10 warm-up; the CPU is shared with other jobs, so latencies are indicative.",
              "", "Two follow-ups (kernels_area, grouped_lam1e-4) were run while `--only` still matched substrings of the "
              "search names (`kernels` ran kernels and channels+kernels; `grouped` ran grouped+channels); the docstring of "
              "benchmarks/das_steering.py gives today's equivalent commands."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(payload, followups, out.with_suffix(".png"))


def _final_rows(run: dict) -> list[dict]:
    """The models a user would keep: fine-tuned compact models (or all rows if none were fine-tuned),
    with the run's own baseline when it trained one (a run with other epochs needs its own)."""
    tuned = [r for r in run["rows"] if "+ft" in r["model"]]
    return tuned or run["rows"]


def _plot(payload: dict, followups: list, path: Path) -> None:
    """Test RMSE against parameters of each final model, one panel per epoch count (each run is
    compared with the baseline trained as long), one marker per run; area ~ MFLOPs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [payload, *followups]
    epochs = sorted({run["settings"]["epochs"] for run in runs})
    fig, axes = plt.subplots(1, len(epochs), figsize=(9 * len(epochs), 6), squeeze=False)
    for ax, n in zip(axes[0], epochs):
        _scatter_runs(ax, [run for run in runs if run["settings"]["epochs"] == n], payload)
        st = payload["settings"]
        ax.set_title(f"{st['train']} train, {n} epochs + {st.get('finetune', 0)} fine-tuning; marker area ~ MFLOPs",
                     fontsize=9)
    fig.suptitle("DAS on synthetic steering: compact models after fine-tuning", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _scatter_runs(ax, runs: list, payload: dict) -> None:
    short = {"DAS ": "", "grouped+channels": "grp+ch", "channels+kernels": "ch+k", " +ft3": ""}
    cmap = matplotlib_colors(len(runs))
    for i, run in enumerate(runs):
        rows = _final_rows(run)
        seed = run["settings"].get("seed", 0)
        label = "main run" if run is payload else _followup_label(run["settings"], payload["settings"]["epochs"])
        label = label.split(" epochs, ")[-1] + (f", seed {seed}" if seed else "")
        ax.scatter([r["params"] for r in rows], [r["test_rmse"] for r in rows], s=[18 + 2 * r["flops"] / 1e6 for r in rows],
                   marker="o^svDP*X"[i % 8], color=cmap[i], alpha=0.6, label=label)
        for r in rows:
            name = r["model"]
            for a, b in short.items():
                name = name.replace(a, b)
            ax.annotate(name, (r["params"], r["test_rmse"]), fontsize=6, xytext=(4, 4), textcoords="offset points")
    ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("parameters of the compact model (log)")
    ax.set_ylabel("test RMSE (after fine-tuning)")


def matplotlib_colors(n: int) -> list:
    """``n`` distinct colours (tab20 when more than 10 runs share a panel)."""
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]
