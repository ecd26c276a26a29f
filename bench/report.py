"""Turns a pytest-benchmark JSON file into the ratio tables of bench/RESULTS.md.

    python bench/report.py results.json

Each benchmark carries extra_info (family, case, variant, impl, policy); ratios compare the
medians (or, with --stat min, the minima) of the same run.  "x faster" = baseline / fairkernels;
"of floor" = fairkernels / copy floor (1.0 = as fast as the memory copy it is compared with);
"fastest torch" = the fastest of the torch baselines of that row (whatever its mask dtype or
allocation), against fairkernels.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def load(path: str, stat: str = "median") -> tuple[dict, dict]:
    with open(path) as handle:
        report = json.load(handle)
    medians: dict = defaultdict(dict)
    for bench in report["benchmarks"]:
        info = bench.get("extra_info", {})
        if "impl" not in info:
            continue
        key = (info.get("family", "advantage"), info["case"], info["variant"], info.get("policy", "fresh"))
        medians[key][info["impl"]] = bench["stats"][stat]
    return medians, report.get("machine_info", {})


def table(medians: dict, family: str) -> list[str]:
    rows = []
    keys = sorted(k for k in medians if k[0] == family and k[2] != "any")
    baselines = sorted({impl for k in keys for impl in medians[k] if impl != "fairkernels"})
    header = ("| case | groups | result | fairkernels (ms) | " + " | ".join(baselines) +
              " | fastest torch | of floor |")
    rows += [header, "|" + "---|" * (header.count("|") - 1)]
    for key in keys:
        entry = medians[key]
        if "fairkernels" not in entry:
            continue
        ours = entry["fairkernels"]
        cells = []
        for impl in baselines:
            cells.append(f"{entry[impl] * 1e3:.2f} ms ({entry[impl] / ours:.1f}x)" if impl in entry else "")
        torch_times = {impl: t for impl, t in entry.items() if impl.startswith("torch")}
        fastest = min(torch_times, key=torch_times.get) if torch_times else None
        cells.append(f"{fastest} ({torch_times[fastest] / ours:.2f}x)" if fastest else "")
        floor = medians.get((family, key[1], "any", key[3]), {}).get("copy_floor")
        floor_cell = f"{ours / floor:.2f} (copy {floor * 1e3:.2f} ms)" if floor else ""
        rows.append(
            f"| {key[1]} | {key[2]} | {key[3]} | {ours * 1e3:.3f} | " + " | ".join(cells) + f" | {floor_cell} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--family", default="advantage")
    parser.add_argument("--stat", default="median", choices=["median", "min", "mean"],
                        help="statistic compared (min is the least sensitive to a loaded machine)")
    args = parser.parse_args()
    medians, machine = load(args.json_file, args.stat)
    print(
        f"machine: {machine.get('node', '?')}, {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"python {machine.get('python_version', '?')}"
    )
    print("\n".join(table(medians, args.family)))


if __name__ == "__main__":
    main()
