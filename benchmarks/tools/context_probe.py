"""Measure the crop size → sigma_max table of a trained denoiser (paper Figs. 16-19).

The centre 2×2 patch is denoised with only a c×c window of context, for every noise level and
every even c; the context where the loss comes within --tol of the full-image loss is the
"plateau", and its inverse is the table ``ambient_o_crops`` takes as ``crop_sigma_table``
(see ambient_bench/annotation/context_probe.py for the exact definition).

    python -m ambient_bench run benchmarks/smoke_cpu.yaml      # trains networks under runs/train/
    python benchmarks/tools/context_probe.py --network runs/train/<key>/network.pt --dataset digits

Writes probe.json, table.json (crop size → sigma_max), context_curves.png (Figs. 16/18) and
context_table.png (Figs. 17/19) under --out, and prints the table as a YAML line to paste.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ambient_bench import fileio
from ambient_bench.annotation.context_probe import FILLS, probe_context, save_probe
from ambient_bench.annotation.crops import scaled_table
from ambient_bench.errors import UserError
from ambient_bench.params import ParamError

DEFAULT_SIGMAS = "0.005,0.01,0.02,0.05,0.1,0.15,0.2,0.35,0.55,0.7,1.0,1.5,2.0"


def _numbers(text: str, kind: type) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected a comma-separated list of {kind.__name__}s, got {text!r}") from None


def _dataset_spec(name: str, resolution: int, extra: list[str]) -> dict:
    spec = {"name": name, "resolution": resolution}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--dataset-arg expects KEY=VALUE (VALUE as JSON), got {item!r}")
        try:
            spec[key] = json.loads(value)
        except json.JSONDecodeError:
            spec[key] = value
    return spec


def run(args: argparse.Namespace) -> None:
    from ambient_bench.annotation.figures import plot_context_curves, plot_context_table
    from ambient_bench.registry import DATASETS
    from ambient_bench.training.loop import load_network, resolve_device

    network = Path(args.network)
    if not network.is_file():
        raise UserError(f"network file {network} not found: train one with `python -m ambient_bench run "
                        f"<suite>.yaml` (e.g. benchmarks/smoke_cpu.yaml) and pass runs/train/<key>/network.pt")
    net = load_network(network, resolve_device(args.device))
    channels, net_res, _ = net.image_shape
    resolution = args.resolution or net_res
    images = DATASETS.build(_dataset_spec(args.dataset, resolution, args.dataset_arg)).load().images[:args.count]
    if tuple(images.shape[1:]) != (channels, resolution, resolution) or resolution != net_res:
        raise UserError(f"dataset images are {tuple(images.shape[1:])} but the network expects "
                        f"{tuple(net.image_shape)}: pass a --resolution / dataset matching the network")
    contexts = _numbers(args.contexts, int) if args.contexts else list(range(2, resolution + 1, 2))
    crop_sizes = _numbers(args.crop_sizes, int) if args.crop_sizes else sorted(scaled_table(resolution))
    try:
        probe = probe_context(net, images, _numbers(args.sigmas, float), contexts, trials=args.trials,
                              seed=args.seed, batch=args.batch, fill=args.fill, tol=args.tol, relative=args.relative)
    except ValueError as err:
        raise UserError(str(err)) from None
    probe.meta.update({"network": str(network), "dataset": args.dataset, "dataset_args": args.dataset_arg})
    table = probe.table(crop_sizes)
    out = Path(args.out or f"results/context_probe/{args.dataset}-{resolution}px")
    save_probe(probe, out / "probe.json")
    fileio.write_text(out / "table.json", json.dumps({str(k): v for k, v in table.items()}, indent=2) + "\n")
    plot_context_curves(out / "context_curves.png", probe.context_sizes, probe.sigmas, probe.losses,
                        probe.plateau_context)
    plot_context_table(out / "context_table.png", probe.sigmas, probe.plateau_context)

    tol = f"{args.tol:g}" + (" relative" if args.relative else "")
    print(f"{len(images)} images at {resolution} px, {args.trials} trials, fill {args.fill}, tol {tol}")
    print(f"{'sigma':>8} {'plateau':>8}  loss at full context")
    for sigma, plateau, loss in zip(probe.sigmas, probe.plateau_context, probe.losses[:, -1]):
        print(f"{sigma:8.3g} {plateau:8d}  {loss:.3g}")
    paper = scaled_table(resolution)
    print(f"{'crop K':>8} {'sigma_max':>10} {'paper (scaled)':>15}")
    for k, sigma_max in table.items():
        print(f"{k:8d} {sigma_max:10.3g} {paper.get(k, float('nan')):15.3g}")
    print("crop_sigma_table: {" + ", ".join(f"{k}: {v:g}" for k, v in table.items()) + "}")
    print(f"wrote {out}/probe.json, table.json, context_curves.png, context_table.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", required=True, help="runs/train/<key>/network.pt")
    parser.add_argument("--dataset", required=True, help="dataset name in the registry (e.g. digits)")
    parser.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="extra dataset parameter, VALUE as JSON (e.g. classes=[0,1,2,3,4]); repeatable")
    parser.add_argument("--resolution", type=int, default=None, help="default: the network's")
    parser.add_argument("--count", type=int, default=256, help="first N images of the dataset")
    parser.add_argument("--sigmas", default=DEFAULT_SIGMAS)
    parser.add_argument("--contexts", default=None, help="default: every even size 2..resolution")
    parser.add_argument("--crop-sizes", default=None, help="table keys; default: the paper's 64 px keys scaled")
    parser.add_argument("--trials", type=int, default=2, help="noise draws per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--fill", choices=FILLS, default="zero")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--relative", action="store_true", help="tol is relative to the full-context loss")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="default: results/context_probe/<dataset>-<res>px")
    try:
        run(parser.parse_args(argv))
    except (UserError, ParamError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
