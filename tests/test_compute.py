"""plan's compute estimate (engine/compute.py, engine/work.py) for the paper's Table 2(a) and Table 1 suites,
against hand computations from the published anchors, the device peaks and the networks' FLOPs; plan only."""
from __future__ import annotations

from pathlib import Path

import pytest

from ambient_bench.config.suite import load_suite
from ambient_bench.datasets.standins import write_standins
from ambient_bench.engine import flops
from ambient_bench.engine.compute import estimate
from ambient_bench.engine.runner import build_graph
from ambient_bench.engine.work import forget
from conftest import REPO

PAPER = REPO / "benchmarks" / "paper"
DEVICES = ("v100", "a100", "h100", "h200")
FP32 = {"v100": 15.7e12, "a100": 19.5e12, "h100": 67e12, "h200": 67e12}    # throughput.yaml's peaks
HALF = {"v100": 125e12, "a100": 312e12, "h100": 989.4e12, "h200": 989.4e12}
DDPMPP, CLASSIFIER = 42.380427264e9, 13.760332288e9        # forward FLOPs at 32 px, batch 1
EDM2_XS, EDM2_XS_UNCOND, EDM2_XXL = 89.902522368e9, 89.901498368e9, 1093.800931328e9  # 4×64×64
INCEPTION, DINOV2, CLIP, VAE_ENC, VAE_DEC = 11.43e9, 162.02e9, 12.22e9, 1116.66e9, 2514.52e9
IMAGENET, VAL = 1_281_167, 50_000


@pytest.fixture(scope="module")
def suites(tmp_path_factory) -> dict[str, list]:
    root = tmp_path_factory.mktemp("compute")
    write_standins(root / "data")
    vae = root / "vae"  # the latents key hashes the VAE's weights; plan never loads them
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_text("not weights")
    patch = pytest.MonkeyPatch()
    patch.setenv("AMBIENT_BENCH_DATA", str(root / "data"))
    forget()
    graphs = {name: build_graph(load_suite(PAPER / f"{name}.yaml", overrides))
              for name, overrides in (("table2a_cifar_blur", []), ("table1_imagenet512", [f"latent.weights={vae}"]))}
    yield graphs
    patch.undo()
    forget()


def by_kind(graph, device: str) -> tuple[dict[str, float], list[str], list]:
    rows, lines = estimate(graph.stages, device, {"train": {"gpus": 8, "nodes": 1}})
    totals: dict[str, float] = {}
    for work, est in rows:
        assert est.hours is not None and est.source, (work.text, est)  # every stage has hours and a source
        totals[work.kind] = totals.get(work.kind, 0.0) + est.hours
    return totals, lines, rows


def test_the_networks_flops_as_counted():
    assert flops.diffusion_flops({"preset": "paper_cifar"}, 3, 32) == pytest.approx(DDPMPP)
    assert flops.classifier_flops({"preset": "paper_cifar"}, 3, 32) == pytest.approx(CLASSIFIER)
    # EDM2's count_flops.py on EDM2's own network (1 per multiply-add, plus elementwise ops): 45.7 and 555.1
    assert flops.diffusion_flops({"preset": "edm2_xs", "label_dim": 1000}, 4, 64) / 2e9 == pytest.approx(45.7, rel=0.02)
    xxl = flops.diffusion_flops({"preset": "edm2_xxl", "label_dim": 1000}, 4, 64)
    assert xxl / 2e9 == pytest.approx(555.1, rel=0.02)


@pytest.mark.parametrize("device", DEVICES)
def test_table2a(suites, device):
    totals, lines, rows = by_kind(suites["table2a_cifar_blur"], device)
    anchor = 30_105.6 * 0.8 * 8 / 3600  # one 30-Mimg training at the paper's 0.8 s/kimg on 8 V100s, in V100-hours
    u = 3 * DDPMPP * 1000 / (0.8 * 8 * FP32["v100"])  # the utilisation that anchor implies (1.27: Winograd)
    speed = FP32[device] * u  # FLOP/s of this device for DDPM++ and its encoder (fp32, tf32 off)
    inputs = 4 * 45_000 * 2048 * 4  # 4 Ambient-o cells × the real pool's 45k blurred images × grid × trials
    assert inputs == 1_474_560_000
    assert totals["diffusion training"] == pytest.approx(9 * anchor * FP32["v100"] / FP32[device], rel=1e-6)
    assert totals["classifier training"] == pytest.approx(4 * 15_053.312e3 * 3 * CLASSIFIER / speed / 3600, rel=1e-6)
    assert totals["annotation"] == pytest.approx(inputs * CLASSIFIER / speed / 3600, rel=1e-6)
    # 9 cells × 26 snapshots (5,017.6 to 30,105.6 kimg, every 1,003.52; the last is the final network)
    assert totals["sampling"] == pytest.approx(234 * 50_000 * 35 * DDPMPP / speed / 3600, rel=1e-6)
    # 234 sample sets + the 50k reference through Inception (FID and KID share them) and DINOv2, u 0.5 assumed
    features = 235 * 50_000 * (INCEPTION + DINOV2) / (FP32[device] * 0.5) / 3600
    assert totals["feature extraction"] == pytest.approx(features, rel=1e-6)
    assert "unknown" not in "\n".join(lines)
    total = float(lines[-3].split()[1].replace(",", ""))
    assert total == pytest.approx(sum(totals.values()), abs=0.06)
    sources = {est.source.split(",")[0] for w, est in rows if w.kind == "diffusion training"}
    assert sources == ({"published"} if device == "v100" else {"FLOP-scaled"})


@pytest.mark.parametrize("device", DEVICES)
def test_table1(suites, device):
    totals, lines, rows = by_kind(suites["table1_imagenet512"], device)
    xs, xxl = 2_147_483.648 * 0.12070 * 32 / 3600, 939_524.096 * 0.64375 * 32 / 3600  # 3 and 7 days on 32 H200s
    assert xs == pytest.approx(3 * 24 * 32, rel=1e-3) and xxl == pytest.approx(7 * 24 * 32, rel=1e-3)
    # three XS-sized trainings (all data, Ambient-o, the unconditional guide) and three XXL: ≈ 23,000 H200-hours
    assert totals["diffusion training"] == pytest.approx((3 * xs + 3 * xxl) * HALF["h200"] / HALF[device], rel=1e-3)
    fp32 = FP32[device] * 0.5
    # the pool encoded once (no mirror images: EDM2 trains without x-flip)
    assert totals["latents encoding"] == pytest.approx(IMAGENET * VAE_ENC / fp32 / 3600, rel=1e-6)
    # 10 cells (2 XS, 3 XXL models; no CFG and CFG), each with its FID and its FD_DINOv2 sample set (EDM2's
    # per-metric presets): 8 XS and 12 XXL sets; the 5 guided cells' 10 sets also run the unconditional XS guide
    main = 8 * EDM2_XS + 12 * EDM2_XXL
    sampling = 50_000 * (63 * (main + 10 * EDM2_XS_UNCOND) + 20 * VAE_DEC)
    assert totals["sampling"] == pytest.approx(sampling / fp32 / 3600, rel=1e-6)
    patches = 512 ** 2 + sum((512 // k) ** 2 * max(k, 224) ** 2 for k in (32, 64, 128, 256, 512))
    clip = IMAGENET * (512 ** 2 + patches) / 224 ** 2 * CLIP  # quality (whole images), + crops (their patches)
    assert totals["annotation"] == pytest.approx(clip / fp32 / 3600, rel=1e-6)
    # train and test references through both networks; each cell's FID set through Inception, its FD set
    # through DINOv2
    features = (IMAGENET + VAL) * (INCEPTION + DINOV2) + 10 * 50_000 * (INCEPTION + DINOV2)
    assert totals["feature extraction"] == pytest.approx(features / fp32 / 3600, rel=1e-6)
    assert "unknown" not in "\n".join(lines)
    if device == "h200":
        assert 22_500 < totals["diffusion training"] < 23_500


def test_standin_pool_is_counted_at_its_real_size(suites):
    rows, lines = estimate(suites["table2a_cifar_blur"].stages, "h100")
    assert "1,475 M classifier inputs (annotation)" in lines[-1]
    assert lines[0].startswith("compute on H100") and "total" in lines[-3]


def test_nominal_counts():
    from ambient_bench.registry import DATASETS

    assert DATASETS.build({"name": "cifar10"}).nominal_count() == 50_000
    assert DATASETS.build({"name": "cifar10", "limit": 1000}).nominal_count() == 1000
    assert DATASETS.build({"name": "imagenet", "split": "val"}).nominal_count() == VAL
    assert DATASETS.build({"name": "ffhq"}).nominal_count() == 70_000
    assert DATASETS.build({"name": "afhq", "animal": "dog", "split": "all"}).nominal_count() == 5_239
    assert DATASETS.build({"name": "afhq", "animal": "dog", "split": "train"}).nominal_count() is None
    assert Path(PAPER).is_dir()


@pytest.mark.slow
def test_gpu_throughput_script_prints_entries_plan_can_use():
    """benchmarks/perf/throughput_entries.py at --tiny on the CPU (about a minute): its entries parse, and
    compute derives a utilisation from each (the same path a GPU's entries take)."""
    import sys

    import yaml

    from ambient_bench.engine.compute import entry_flops_per_kimg

    sys.path.insert(0, str(REPO / "benchmarks" / "perf"))
    from throughput_entries import main

    entries = yaml.safe_load("\n".join(main(["--tiny", "--repeats", "1"])))
    assert [(e["stage"], e.get("guided")) for e in entries] == [("train", None), ("sample", False), ("train", None),
                                                                 ("sample", False), ("sample", True)]
    for e in entries:
        assert e["kind"] == "measured" and e["device"] == "cpu" and e["seconds_per_kimg"] > 0 and e["date"]
        assert entry_flops_per_kimg(e) > 0
