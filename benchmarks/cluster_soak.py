"""Soak: steady mixed traffic on a multi-node cluster for a long time, memory per process.

A head (proxy, controller, ingress) and a worker (U2-Net), one replica each, started with
`ray start` on 127.0.0.1 in a network namespace of their own. Capacity is measured with
the same mix of requests (plain cut-outs, the presets, the styles, WebP/JPEG, the mask
alone), then open-loop arrivals at `--load` x capacity (default 0.7) for `--minutes`.
Every `--interval` seconds: the RSS of each Serve process, p50/p99 and errors of that
interval. At the end, each process's memory slope (MiB per hour, robust: Theil-Sen over
its samples after its first `--skip` seconds).

    .venv/bin/python -m benchmarks.cluster_soak --minutes 30
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from typing import Any

from benchmarks.cluster_app import APP
from benchmarks.cluster_drill import (
    App,
    add_common_args,
    isolate_or_exit,
    make_cluster,
    write_report,
)
from benchmarks.cluster_watch import Sampler, rss_slopes, write_csv
from benchmarks.loadgen import (
    Fields,
    Photo,
    Results,
    closed_loop,
    load_photos,
    open_loop,
    summary,
)
from models.hardware import cpu_description

#: The option mix, one request each in turn: what a shop's traffic might send.
MIX: list[Fields] = [
    {},
    {"preset": "marketplace-white"},
    {"preset": "catalogue-transparent"},
    {"preset": "social-portrait"},
    {"style": "minimal", "ratio": "4:5", "format": "jpeg"},
    {"style": "mood", "ratio": "1:1", "format": "webp"},
    {"style": "street", "format": "jpeg"},
    {"bg_color": "dbe7f0", "format": "jpeg"},
    {"format": "webp"},
    {"channels": "alpha"},
    {"crop": "true", "crop_margin": "5%"},
]


def mixed(photos: list[Photo]) -> Iterator[tuple[Photo, Fields]]:
    """Photos and options in turn; 7 photos and 11 option sets meet in every pairing."""
    return zip(itertools.cycle(photos), itertools.cycle(MIX), strict=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--load", type=float, default=0.7, help="x measured capacity")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per sample")
    parser.add_argument("--skip", type=float, default=120.0, help="warm-up left out of slopes")
    parser.add_argument("--name", default="soak")
    opts = parser.parse_args()
    isolate_or_exit(opts)

    with make_cluster(workers=1) as cluster:
        app = App(cluster, u2net=(1, 1, 2.0), ingress=(1, 1, 4.0))
        deploy_s = app.deploy()
        photos = load_photos()
        closed_loop(app.url, photos, 1, 5.0, mixed(photos))  # warm-up
        cap = closed_loop(app.url, photos, opts.capacity_clients, opts.capacity_seconds,
                          mixed(photos))  # fmt: skip
        rate = cap * opts.load
        print(f"deployed in {deploy_s:.0f} s; capacity {cap:.2f} img/s (mix); sending {rate:.2f}/s")
        results = Results()
        seconds = opts.minutes * 60
        sampler = Sampler(cluster, APP, results, opts.interval, max_s=seconds + 600).start()
        sampler.mark(f"load {rate:.2f}/s")
        open_loop(app.url, mixed(photos), lambda t: rate, seconds, results)
        sampler.stop()
        final = sampler.sample(sampler.started + seconds - opts.interval, sampler.started + seconds)
        sampler.rows.append(final)

    slopes = rss_slopes(sampler.rss, skip_s=opts.skip, min_samples=4)
    per_hour = {name: round(s["slope_mib_per_min"] * 60, 1) for name, s in slopes.items()}
    rss_rows = [
        {"process": name, "t_s": t, "rss_mib": round(v, 1)}
        for name, samples in sampler.rss.items()
        for t, v in samples
    ]
    write_csv(rss_rows, opts.out_dir / f"{opts.name}_rss.csv")
    title = (
        f"soak {opts.minutes:g} min at {opts.load:g}x capacity ({rate:.2f} img/s) "
        f"on {cpu_description()}"
    )
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.cluster_soak", *sys.argv[1:]]),
        "nodes": "head (proxy, controller, ingress) + 1 worker (U2-Net), one replica each",
        "minutes": opts.minutes,
        "capacity_img_s_mix": round(cap, 2),
        "offered_img_s": round(rate, 2),
        **summary(results),
        "rss_slope_mib_per_hour": per_hour,
        "rss": slopes,
    }
    write_report(opts.name, opts.out_dir, sampler, title, report)
    print("memory slope per process (MiB/hour, after the first", opts.skip, "s):")
    for name, slope in sorted(per_hour.items()):
        print(f"  {name:40s} {slope:+8.1f}")


if __name__ == "__main__":
    main()
