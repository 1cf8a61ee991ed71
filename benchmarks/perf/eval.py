"""Evaluation time with a cold and a warm reference-feature cache, and extractor throughput.

    python benchmarks/perf/eval.py [--metric fd_bandpass] [--reference 10000] [--generated 1000]
    python benchmarks/perf/eval.py --metric fid --repeats 1     # needs the Inception weights file

One metric's ``compute`` on the same data in the same process, best of ``--repeats`` after a
warm-up call: cold = every call gets an empty ``_refstats`` folder (reference and generated
features extracted), warm = every call finds the reference features cached (generated only).
Target: warm ≥ 5× faster than cold. Extraction dominates, so the ratio cannot exceed about
(N_reference + N_generated) / N_generated, printed as the bound. The default sizes are those of
snapshot screening (1k samples per snapshot against a 10k reference; bound 11×); at the paper's
final protocol (50k samples against a 50k reference) the bound is 2×, whatever the cache does.
``fd_bandpass`` (offline, no weights) is the
default; ``fid``/``kid``/``precision``/``recall`` stop with the missing-weights line if absent.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from ambient_bench.allocator import retain_freed_memory
from ambient_bench.components import ImageSet
from ambient_bench.errors import UserError
from ambient_bench.metrics import features
from ambient_bench.registry import DATASETS, METRICS
from timing import best_time  # benchmarks/perf/timing.py: the script's folder is on sys.path

TARGET = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="fd_bandpass", help="fd_bandpass (offline) | fid | kid | ...")
    parser.add_argument("--reference", type=int, default=10000, help="reference images")
    parser.add_argument("--generated", type=int, default=1000, help="generated images")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--weights", help="Inception metrics: weights file (timing does not depend on the values)")
    args = parser.parse_args()
    retain_freed_memory()  # as the CLI does

    spec = {"name": args.metric, "device": args.device, **({"weights": args.weights} if args.weights else {})}
    metric = METRICS.build(spec)
    try:
        metric.check()
    except UserError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    images = DATASETS.build({"name": "natural_patches", "resolution": args.resolution,
                             "count": args.reference + args.generated}).load().images
    reference, samples = ImageSet(images[:args.reference]), images[args.reference:]
    device = features.resolve_metric_device(args.device)
    print(f"metric {args.metric} on {device} ({torch.get_num_threads()} CPU threads): "
          f"{args.reference} reference + {args.generated} generated {args.resolution}² images, "
          f"best of {args.repeats} after a warm-up")

    with tempfile.TemporaryDirectory() as tmp:
        root, count = Path(tmp), [0]

        def cold() -> None:  # a fresh, empty cache folder per call
            count[0] += 1
            metric.compute(samples, reference, root, root / f"cold{count[0]}")

        warm_dir = root / "warm"
        value = metric.compute(samples, reference, root, warm_dir)  # fills the cache
        t_cold = best_time(cold, args.repeats)
        t_warm = best_time(lambda: metric.compute(samples, reference, root, warm_dir), args.repeats)

    # extractor throughput alone on the generated set, as compute calls it (model built once per process)
    extractor, layer, kwargs = extractor_of(metric)
    t_extract = best_time(lambda: features.extract(samples, extractor, layer, device, metric.p.batch,
                                                   verbose=False, **kwargs), args.repeats)
    # paid cold and warm alike: the cache key needs the reference's content hash
    t_hash = best_time(reference.content_hash, args.repeats)
    ratio = t_cold / t_warm
    bound = (args.reference + args.generated) / args.generated
    print(f"value          {value}")
    print(f"cold cache     {t_cold:8.3f} s")
    print(f"warm cache     {t_warm:8.3f} s")
    print(f"ratio          {ratio:8.2f}x   (target >= {TARGET:.0f}x; extraction-bound ceiling "
          f"(N_ref + N_gen) / N_gen = {bound:.2f}x)")
    print(f"reference hash {t_hash:8.3f} s   (part of both; the warm floor with extraction of the generated set)")
    print(f"extractor      {args.generated / t_extract:8.1f} images/s ({extractor}, layer {layer}, {device}, "
          f"batch {metric.p.batch})")
    print(f"target {'met' if ratio >= TARGET else 'NOT met'}")


def extractor_of(metric: object) -> tuple[str, str, dict]:
    """(extractor, layer, extra kwargs) the metric's module uses."""
    module = sys.modules[type(metric).__module__]
    kwargs = {}
    if hasattr(metric, "weights_path"):
        kwargs["feature_extractor_weights_path"] = str(metric.weights_path())
    return module.EXTRACTOR, module.LAYER, kwargs


if __name__ == "__main__":
    main()
