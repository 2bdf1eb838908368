"""Print bench/otari.sh's results as one Markdown table: floor against otari.

    python bench/table.py RESULTS

RESULTS holds the harness's `BENCH label=floor|otari ...` lines (run_bench.sh) and
`RSS label=.. when=idle|loaded kib=..` lines. One row per (mode, concurrency): req/s, p50
and p99 latency (ms) and CPU ms per request of the floor and of otari, otari's p99 over the
floor's, and its added p50. RSS (MiB) of both processes idle and after the load follows,
then, when the results hold them, the streams by translation (labels pass, chat-anthropic,
messages-openai): req/s, p50, p99, CPU ms per request and that CPU over the pass-through's.
"""

from __future__ import annotations

import sys


def parse(path: str) -> tuple[dict[tuple[str, str, str], dict[str, str]], dict[str, str]]:
    """(runs by (label, stream, conc), RSS KiB by "label when")."""
    runs: dict[tuple[str, str, str], dict[str, str]] = {}
    rss: dict[str, str] = {}
    with open(path) as lines:
        for line in lines:
            words = line.split()
            if not words or words[0] not in ("BENCH", "RSS"):
                continue
            fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
            if words[0] == "RSS":
                rss[f"{fields['label']} {fields['when']}"] = fields["kib"]
            elif "rps" in fields:
                runs[(fields["label"], fields["stream"], fields["conc"])] = fields
    return runs, rss


def _num(fields: dict[str, str] | None, name: str, places: int) -> str:
    if fields is None or name not in fields:
        return "-"
    return f"{float(fields[name]):,.{places}f}"


def table(runs: dict[tuple[str, str, str], dict[str, str]], rss: dict[str, str]) -> str:
    """The Markdown report."""
    out = []
    if any(label == "floor" or label == "otari" for label, _, _ in runs):
        out += _floor_table(runs, rss)
    out += _streams_table(runs)
    return "\n".join(out)


TRANSLATIONS = (
    ("pass", "chat -> OpenAI (pass-through)"),
    ("chat-anthropic", "chat -> Anthropic (translated)"),
    ("messages-openai", "messages -> OpenAI (translated)"),
)


def _streams_table(runs: dict[tuple[str, str, str], dict[str, str]]) -> list[str]:
    concs = sorted({conc for label, _, conc in runs if label == "pass"}, key=int)
    if not concs:
        return []
    out = [
        "",
        "| stream | conc | req/s | p50 | p99 | CPU/req | CPU vs pass-through |",
        "|---|---|---|---|---|---|---|",
    ]
    for conc in concs:
        base = runs.get(("pass", "1", conc))
        for label, title in TRANSLATIONS:
            fields = runs.get((label, "1", conc))
            ratio = "-"
            if base and fields:
                cpu, base_cpu = fields["gw_cpu_ms_per_req"], base["gw_cpu_ms_per_req"]
                ratio = f"{float(cpu) / max(float(base_cpu), 1e-9):.2f}x"
            out.append(
                " | ".join(
                    [
                        "",
                        title,
                        conc,
                        _num(fields, "rps", 0),
                        _num(fields, "p50_ms", 3),
                        _num(fields, "p99_ms", 2),
                        _num(fields, "gw_cpu_ms_per_req", 3),
                        ratio,
                        "",
                    ]
                ).strip()
            )
    return out


def _floor_table(
    runs: dict[tuple[str, str, str], dict[str, str]], rss: dict[str, str]
) -> list[str]:
    out = [
        "| mode | conc | floor req/s | otari req/s | floor p50 | otari p50 | floor p99 "
        "| otari p99 | p99 ratio | added p50 | floor CPU/req | otari CPU/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(stream, conc) for label, stream, conc in runs if label in ("floor", "otari")},
        key=lambda k: (k[0], int(k[1])),
    )
    for stream, conc in keys:
        floor, otari = runs.get(("floor", stream, conc)), runs.get(("otari", stream, conc))
        ratio = added = "-"
        if floor and otari:
            ratio = f"{float(otari['p99_ms']) / max(float(floor['p99_ms']), 1e-9):.2f}x"
            added = f"{float(otari['p50_ms']) - float(floor['p50_ms']):.3f}"
        out.append(
            " | ".join(
                [
                    "",
                    "SSE" if stream == "1" else "JSON",
                    conc,
                    _num(floor, "rps", 0),
                    _num(otari, "rps", 0),
                    _num(floor, "p50_ms", 3),
                    _num(otari, "p50_ms", 3),
                    _num(floor, "p99_ms", 2),
                    _num(otari, "p99_ms", 2),
                    ratio,
                    added,
                    _num(floor, "gw_cpu_ms_per_req", 3),
                    _num(otari, "gw_cpu_ms_per_req", 3),
                    "",
                ]
            ).strip()
        )
    out.append("")
    out.append(
        "Latency in ms, CPU in ms per request (the process's user+system time over the "
        "measured window)."
    )
    out.append("")
    out.append("| RSS MiB | idle | after load |")
    out.append("|---|---|---|")
    for label in ("floor", "otari"):
        idle, loaded = rss.get(f"{label} idle"), rss.get(f"{label} loaded")
        out.append(f"| {label} | {_mib(idle)} | {_mib(loaded)} |")
    return out


def _mib(kib: str | None) -> str:
    return "-" if kib is None else f"{int(kib) / 1024:.0f}"


def main() -> None:
    """Print the table for the results file named on the command line."""
    runs, rss = parse(sys.argv[1])
    print(table(runs, rss))


if __name__ == "__main__":
    main()
