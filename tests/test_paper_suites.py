"""The paper-scale suites (benchmarks/paper/): their protocol, the plan and its compute estimate,
missing data, stand-ins, and the tiny profile of every suite end to end."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ambient_bench import UserError
from ambient_bench.cli import main
from ambient_bench.config.profiles import apply_profile
from ambient_bench.config.suite import load_suite
from ambient_bench.datasets.standins import write_standins
from ambient_bench.engine.compute import estimate
from ambient_bench.engine.runner import build_graph
from conftest import REPO

PAPER = REPO / "benchmarks" / "paper"
SUITES = ["table1_imagenet512", "table5_imagenet512",
          "table2a_cifar_blur", "table3_cifar_jpeg", "appB1_cifar_motion", "table4_ffhq_blur", "table2b_afhq_ood",
          "table6_loss_ablation", "table7_single_annotation", "appD_classifier", "table2a_release_vs_paper"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("standins")
    write_standins(folder)
    return folder


@pytest.fixture
def data(monkeypatch, standins) -> Path:
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(standins))
    return standins


def cells(name: str, profile: str = "full") -> list[dict]:
    return [c.config for c in load_suite(PAPER / f"{name}.yaml", profile=profile).cells]


def test_every_experiment_has_a_suite():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted(SUITES)


def test_cifar_protocol_values():
    """The values the paper and the release notes give (benchmarks/paper/table2a_cifar_blur.yaml's header)."""
    found = cells("table2a_cifar_blur")
    assert len(found) == 9
    for cfg in found:
        train, sample, evaluate = cfg["train"], cfg["sample"], cfg["evaluate"]
        assert cfg["dataset"]["name"] == "cifar10" and cfg["dataset"]["split"] == "train"
        assert cfg["network"]["preset"] == "paper_cifar" and cfg["mix"]["clean_fraction"] == 0.1
        assert (train["batch"], train["lr"], train["warmup_kimg"], train["ema_halflife_kimg"]) == \
            (512, 1e-3, 10000, 500)
        assert (train["ema_rampup"], train["grad_clip"], train["augment_p"]) == (0.05, 1.0, 0.12)
        assert (train["P_mean"], train["P_std"], train["precision"], train["tf32"]) == (-1.2, 1.2, "fp32", False)
        # 30 release snapshots: its 5-20 Mimg lists, its internal 22.5-30 Mimg list and its public script's 025088
        assert train["duration_kimg"] == pytest.approx(30 * 1003.52) and train["snapshot_kimg"] == 1003.52
        assert (sample["num"], sample["steps"], sample["sigma_min"], sample["sigma_max"], sample["rho"]) == \
            (50000, 18, 0.002, 80.0, 7.0)
        assert [m["name"] for m in evaluate["metrics"]] == ["fid", "kid", "fd_dinov2"]
        assert evaluate["select"] == "best" and evaluate["snapshot_range_kimg"] == [5017.6, 30105.6]
        assert evaluate["metrics"][2]["arch"] == "vitl14"
    ambient = [c["method"] for c in found if c["method"]["name"] == "ambient_o"]
    assert len(ambient) == 4
    for method in ambient:
        classifier = method["classifier"]
        assert (method["annotate"], method["classifier_pool"], method["num_sigmas"], method["trials"]) == \
            ("classifier", "balanced", 2048, 4)
        assert (method["epsilon"], method["s_max"], method["ema_span"], method["ambient_weight"]) == \
            (0.05, 4.0, None, "full")
        assert (classifier["preset"], classifier["lr"], classifier["batch"], classifier["duration_kimg"]) == \
            ("paper_cifar", 1e-4, 512, 15053.312)  # the release's classifier scripts: --lr=1e-4, snapshot 015053
        assert (classifier["class_balance"], classifier["holdout_fraction"]) == (False, 0)  # plain BCE, whole pool
        assert (classifier["warmup_kimg"], classifier["ema_halflife_kimg"], classifier["augment_p"]) == \
            (10000, 500, 0.12)
    sigmas = sorted(c["mix"]["corruption"]["sigma"] for c in found if c["method"]["name"] == "all_data")
    assert sigmas == [0.4, 0.6, 0.8, 1.0]


def test_64px_protocol_values():
    for name in ("table4_ffhq_blur", "table2b_afhq_ood"):
        for cfg in cells(name):
            train = cfg["train"]
            assert cfg["network"]["preset"] == "paper_64" and cfg["sample"]["steps"] == 40
            assert (train["batch"], train["lr"], train["augment_p"], train["duration_kimg"]) == \
                (512, 2e-4, 0.15, 100000)
    afhq = cells("table2b_afhq_ood")
    samples = {(c["dataset"]["animal"], c["sample"]["num"]) for c in afhq}
    assert samples == {("dog", 5239), ("cat", 5653)}
    assert all(c["mix"]["discard_rest"] and c["dataset"]["split"] == "all" for c in afhq)
    fixed = sorted(c["method"]["ood_sigma_max"] for c in afhq if c["method"]["name"] == "ambient_o")
    assert fixed == [0.025, 0.05, 0.1, 0.2]
    crops = [c for c in afhq if c["method"]["name"] == "ambient_o_crops"]
    assert len(crops) == 4 and all(c["method"]["crops_threshold"] == 0.45 for c in crops)
    assert {c["method"]["crops_classifier"]["duration_kimg"] for c in crops} == {20070.4}
    assert sorted(c["mix"]["ood"][0].get("animal") or c["mix"]["ood"][0]["name"] for c in crops) == \
        ["cat", "dog", "procedural_texture", "wild"]


def test_table7_and_appendix_grids():
    table7 = cells("table7_single_annotation")
    singles = {(c["mix"]["corruption"]["sigma"], c["method"]["sigma_min"]) for c in table7
               if c["method"]["name"] == "ambient_o" and c["method"]["annotate"] == "fixed"}
    assert (1.0, 2.32) in singles and (0.8, 1.89) in singles and (0.4, 0.0) in singles and len(singles) == 13
    table6 = cells("table6_loss_ablation")
    rows = {(c["method"]["ambient_weight"], c["method"]["weight_clip"], c["method"]["s_max"]) for c in table6}
    inf = float("inf")
    assert rows == {("none", None, inf), ("full", None, inf), ("full", 2.0, inf), ("full", 4.0, inf),
                    ("full", None, 2.0), ("full", None, 4.0)}
    appd = cells("appD_classifier")
    assert {(c["method"]["classifier_pool"], c["method"]["classifier"]["duration_kimg"]) for c in appd} == \
        {("balanced", 15053.312), ("diffusion", 15053.312), ("balanced", 5018.112), ("balanced", 10035.712)}
    # App. D's unbalanced classifier: the release's plain BCE on the 10/90 pool, its drops allowed
    unbalanced = [c["method"] for c in appd if c["method"]["classifier_pool"] == "diffusion"]
    assert len(unbalanced) == 1 and unbalanced[0]["classifier"]["class_balance"] is False
    assert unbalanced[0]["max_dropped_fraction"] == 1.0


def test_table7_single_annotation_zero_matches_the_paper_row(data):
    """The paper's "single annotation σ_min 0.00 at σ_B 0.4" (FID 2.47) is a cell, and the reference row
    that carries the number matches it (and no other cell)."""
    from ambient_bench.config.suite import flatten
    from ambient_bench.results.reference import reference_table

    paper = reference_table(REPO / "benchmarks" / "reference" / "ambient_omni_paper.yaml", "table7", "test")
    found = {}
    for cfg in cells("table7_single_annotation"):
        row = paper.lookup(flatten(cfg))
        if row is not None and row.values.get("fid") == 2.47 and row.label == "Single annotation":
            found[(cfg["method"]["annotate"], cfg["method"]["sigma_min"], cfg["mix"]["corruption"]["sigma"])] = row
    assert list(found) == [("fixed", 0.0, 0.4)]


# EDM2's generate_images.py presets behind the paper's EDM2 numbers: (guidance, σ_rel, guide σ_rel) per metric
EDM2_PRESETS = {("edm2_xs", False): {"fid": (1.0, 0.135, None), "fd_dinov2": (1.0, 0.200, None)},
                ("edm2_xs", True): {"fid": (1.4, 0.045, 0.045), "fd_dinov2": (1.7, 0.150, 0.150)},
                ("edm2_xxl", False): {"fid": (1.0, 0.070, None), "fd_dinov2": (1.0, 0.150, None)},
                ("edm2_xxl", True): {"fid": (1.2, 0.015, 0.015), "fd_dinov2": (1.7, 0.015, 0.015)}}


def test_release_vs_paper_suite_is_table2a_with_the_release_variant_beside_it():
    """benchmarks/paper/table2a_release_vs_paper.yaml copies Table 2(a)'s protocol (no include in suites):
    its cells are table2a_cifar_blur's plus one release-variant Ambient-o per σ_B, differing in three keys."""
    table2a = cells("table2a_cifar_blur")
    both = cells("table2a_release_vs_paper")
    release = [c for c in both if c["method"].get("objective") == "ambient_release"]
    others = [c for c in both if c not in release]
    assert len(release) == 4 and len(others) == len(table2a)
    assert sorted(map(repr, others)) == sorted(map(repr, table2a))  # fails when the two suites drift apart
    for cfg in release:
        paper = next(c for c in table2a if c["method"]["name"] == "ambient_o"
                     and c["mix"] == cfg["mix"])
        different = {k for k in cfg["method"] if cfg["method"][k] != paper["method"][k]}
        assert different == {"objective", "never_crossed", "grid"}
        assert (cfg["method"]["objective"], cfg["method"]["never_crossed"], cfg["method"]["grid"]) == \
            ("ambient_release", "top", "random")
        assert (paper["method"]["objective"], paper["method"]["never_crossed"], paper["method"]["grid"]) == \
            ("ambient", "drop", "quantile")
        assert {k: v for k, v in cfg.items() if k != "method"} == {k: v for k, v in paper.items() if k != "method"}


def test_imagenet_protocol_values():
    """Table 1's suite: the EDM2 recipe, the paper's five models with and without guidance, each metric on the
    samples of EDM2's preset for it, no ambient buffer, one shared guide."""
    from ambient_bench.engine.cells import metric_samples

    found = cells("table1_imagenet512")
    assert len(found) == 10
    seen = set()
    for cfg in found:
        train, sample, latent = cfg["train"], cfg["sample"], cfg["latent"]
        xxl = cfg["network"]["preset"] == "edm2_xxl"
        assert cfg["dataset"]["name"] == "imagenet" and cfg["dataset"]["resolution"] == 512
        assert latent["vae"] == "sd-vae-ft-mse" and not latent["xflip"] and cfg["network"]["label_dim"] == 1000
        assert (train["batch"], train["P_mean"], train["P_std"], train["adam_beta2"]) == (2048, -0.4, 1.0, 0.99)
        assert (train["lr"], train["duration_kimg"]) == ((0.0065, 939524.096) if xxl else (0.012, 2147483.648))
        assert train["lr_ref_kimg"] == 70000 * 2048 / 1000 and train["ema_sigma_rels"] == [0.05, 0.10]
        assert (sample["steps"], sample["num"]) == (32, 50000)
        assert sample["guide"]["method"] == "all_data" and sample["guide"]["network"]["label_dim"] == 0
        assert [m["name"] for m in cfg["evaluate"]["metrics"]] == ["fid", "fd_dinov2"]
        assert cfg["evaluate"]["heldout_reference"]["split"] == "val"
        if cfg["method"]["name"] == "ambient_o":
            assert cfg["method"]["s_max"] == float("inf")  # the EDM2 code has no buffer
        guided = sample["guidance"] != 1
        preset = EDM2_PRESETS[(cfg["network"]["preset"], guided)]
        own = metric_samples(cfg)
        assert list(own) == ["fd_dinov2"]
        for name, setting in (("fid", sample), ("fd_dinov2", own["fd_dinov2"])):
            wanted = preset[name]
            assert (setting["guidance"], setting["ema_sigma_rel"]) == wanted[:2], (name, cfg["network"], guided)
            if guided:
                assert setting["guide_sigma_rel"] == wanted[2]
        crops = bool(cfg["method"].get("quality_patch_sizes"))
        seen.add((cfg["network"]["preset"], guided, cfg["method"]["name"], crops))
    assert len(seen) == 10
    crops = [c for c in found if c["method"].get("quality_patch_sizes")]
    assert len(crops) == 2 and crops[0]["method"]["quality_patch_table"][512] == 200.0


def test_table1_graph_samples_each_metric_at_its_preset(data):
    """The graph behind `plan`: each cell's FID is evaluated on the samples of the FID preset, its FD_DINOv2 (train
    and test) on those of the FD_DINOv2 preset, each from the network reconstructed at that preset's σ_rel."""
    suite = load_suite(PAPER / "table1_imagenet512.yaml", profile="tiny")
    graph = build_graph(suite)
    for cell, stages in zip(suite.cells, graph.cells):
        cfg = cell.config
        preset = EDM2_PRESETS[(cfg["network"]["preset"], cfg["sample"]["guidance"] != 1)]
        for name in ("fid", "fd_dinov2"):
            for prefix in ("evaluate", "heldout"):
                sample = stages[f"{prefix}:{name}"].deps["sample"]
                guidance, sigma_rel, guide_rel = preset[name]
                assert sample.runtime["sample"]["guidance"] == guidance
                network = sample.deps["train"]
                assert network.kind == "reconstruct" and network.material["sigma_rel"] == sigma_rel
                assert f"EMA σ_rel {sigma_rel:g}" in sample.describe
                if guide_rel is not None:
                    assert sample.deps["guide"].material["sigma_rel"] == guide_rel
                    assert f"guidance {guidance:g}" in sample.describe
                else:
                    assert "guide" not in sample.deps
        assert stages["evaluate:fid"].deps["sample"] is stages["sample"]
        assert stages["evaluate:fd_dinov2"].deps["sample"] is not stages["sample"]
        if cfg["method"]["name"] == "ambient_o":
            assert "s_max=inf" in stages["train"].describe  # no buffer


def test_tiny_profile_keeps_every_cell_and_shrinks_every_size():
    for name in SUITES:
        full, tiny = cells(name), cells(name, "tiny")
        assert len(full) == len(tiny), name
        for cfg in tiny:
            xxl = cfg["network"]["preset"] == "edm2_xxl"  # EDM2 presets keep their widths relative to XS
            assert cfg["sample"]["num"] <= 8 and cfg["network"]["model_channels"] == (56 if xxl else 16)
            assert cfg["train"]["duration_kimg"] <= 0.064 + 1e-9 and cfg["train"]["batch"] <= 16
            assert cfg["dataset"]["limit"] == 64
            assert all(m.get("arch", "vits14") == "vits14" for m in cfg["evaluate"]["metrics"])
    # classifier lengths keep their proportions, so App. D's three classifiers stay three
    lengths = sorted({c["method"]["classifier"]["duration_kimg"] for c in cells("appD_classifier", "tiny")})
    assert len(lengths) == 3 and lengths[0] == pytest.approx(lengths[2] / 3, rel=1e-3)  # 100 / 300 ticks + a batch


def test_a_profile_that_would_merge_cells_is_an_error(write_suite):
    suite = write_suite("""
suite: t
defaults:
  dataset: digits
  method: clean_only
  train: {duration_kimg: 1}
  evaluate: {metrics: [fd_digits]}
grid:
  sample.num: [50000, 40000]
""")
    assert len(load_suite(suite).cells) == 2
    with pytest.raises(UserError, match="profile tiny makes two cells identical.*sample.num=50000.*sample.num=40000"):
        load_suite(suite, profile="tiny")
    with pytest.raises(UserError, match="unknown profile"):
        apply_profile("huge", cells("appD_classifier"))


def test_empty_data_folder_one_line_per_suite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(tmp_path))
    for name in SUITES:
        assert main(["plan", str(PAPER / f"{name}.yaml"), "--runs", str(tmp_path / "runs")]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and str(tmp_path) in err, (name, err)
        assert "https://" in err  # where to get it
    assert not (tmp_path / "runs").exists()


def test_plan_on_standins_prints_work_and_gpu_hours(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights: plan never needs them, it names them
    assert main(["plan", str(PAPER / "table2a_cifar_blur.yaml"), "--runs", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "diffusion training           481.7" in out  # 9 trainings × 30,105.6 kimg × 0.8 s × 8 V100s
    assert out.index("compute on V100") < out.index("stage         key")  # the totals first
    assert "30,105.6 kimg trained" in out and "50,000 samples × 35 NFE" in out and "unknown" not in out
    assert "stand-in data" in out and err == "" and "note: weights not in the cache yet: inception" in out
    assert main(["plan", str(PAPER / "table2a_cifar_blur.yaml"), "--runs", str(tmp_path / "runs"),
                 "--gpu", "h200"]) == 0
    assert "compute on H200" in capsys.readouterr().out  # the rest: tests/test_compute.py


def test_estimate_counts_the_annotation_grid(data):
    graph = build_graph(load_suite(PAPER / "table2a_cifar_blur.yaml"))
    rows, _ = estimate(graph.stages, "v100")
    annotate = [work for (work, _), stage in zip(rows, graph.stages) if stage.kind == "annotate" and work.units]
    assert len(annotate) == 4  # the real pool: 90% of CIFAR-10's 50,000 images corrupted, not the stand-in's
    assert annotate[0].units * 1000 == pytest.approx(50_000 * 0.9 * 2048 * 4)


def test_full_profile_run_refuses_standins(data, tmp_path, capsys, monkeypatch):
    suite = tmp_path / "s.yaml"
    suite.write_text((PAPER / "appB1_cifar_motion.yaml").read_text()
                     .replace("metrics: [fid, kid, fd_dinov2]", "metrics: [fd_bandpass]")
                     .replace("tables: [tables/appB1.yaml]", "tables: []"))
    assert main(["run", str(suite), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "stand-in data" in err and "--profile tiny" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_standin_and_real_data_never_share_a_key(data, tmp_path, monkeypatch):
    standin_keys = {s.key for s in build_graph(load_suite(PAPER / "appB1_cifar_motion.yaml")).stages}
    real = tmp_path / "real"
    (real / "cifar-10-batches-py").mkdir(parents=True)
    for f in (data / "cifar-10-batches-py").iterdir():
        (real / "cifar-10-batches-py" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(real))
    real_keys = {s.key for s in build_graph(load_suite(PAPER / "appB1_cifar_motion.yaml")).stages}
    assert standin_keys.isdisjoint(real_keys)  # every stage reads the data, directly or upstream


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory) -> Path:
    """Random-weight feature networks and a tiny CLIP (CLIP-IQA: ImageNet's quality annotation, Table 5),
    and one runs folder, shared by the suites so that the stages they share run once."""
    from random_weights import write_random_weights
    from test_quality import write_tiny_clip

    home = tmp_path_factory.mktemp("tiny_home")
    write_random_weights(home / "torch")
    write_tiny_clip(home / "home" / ".cache" / "clip")
    return home


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITES)
def test_tiny_profile_of_every_paper_suite_end_to_end(name, standins, tiny_home, monkeypatch, capsys):
    """Every paper suite at --profile tiny on stand-in data, through the real loaders, training,
    annotation, sampling and metrics (random-weight feature networks: a loading check, not FID).
    In one process, as `python -m ambient_bench run` (the CLI's main) would run them one by one."""
    monkeypatch.setenv("AMBIENT_BENCH_DATA", str(standins))
    monkeypatch.setenv("TORCH_HOME", str(tiny_home / "torch"))
    monkeypatch.setenv("HOME", str(tiny_home / "home"))
    runs = tiny_home / "runs"
    expected = {"table1_imagenet512": {"fid", "fd_dinov2", "fid_heldout", "fd_dinov2_heldout", "parameters_m", "nfe"},
                "table5_imagenet512": {"clip_iqa_mean", "clip_iqa_median", "clip_iqa_win_rate"}}
    code = main(["run", str(PAPER / f"{name}.yaml"), "--profile", "tiny", "--runs", str(runs)])
    out, err = capsys.readouterr()
    assert code == 0, (name, err[-3000:])
    results = runs / "tiny" / "results" / name
    frame = pd.read_csv(results / "results.csv")
    assert set(frame["profile"]) == {"tiny"} and frame["standin_data"].all()
    assert frame["cell"].nunique() == len(load_suite(PAPER / f"{name}.yaml").cells), name
    assert expected.get(name, {"fid", "kid", "fd_dinov2"}) <= set(frame["quantity"])
    table = next(p for p in results.glob("*.md") if p.name != "figures.md").read_text()
    ours = table.split("## The paper's numbers (same layout)")[0]
    assert "Tiny profile" in ours and "STAND-IN DATA" in ours and "Δ" not in ours
    assert " paper " in ours.splitlines()[2] and "## The paper's numbers (same layout)" in table
    if name == "table1_imagenet512":  # the paper's nested layout, the paper's numbers beside ours
        header = ours.splitlines()[2]
        assert "Train · FID · no CFG" in header and "Test · FD_DINOv2 · CFG" in header and "Mparams" in header
        assert "| EDM2-XS " in ours and "| Ambient-o-XXL " in ours and " 3.57 |" in ours
    if name == "table2a_release_vs_paper":  # both variants, each with the paper's one Ambient-o number
        assert ours.count("| Ambient-o, paper's variant") == 4 and ours.count("| Ambient-o, release's variant") == 4
        assert ours.count(" 5.34 |") == 2
    assert not (REPO / "results" / name).exists()  # tiny results never land in results/


def test_slurm_dry_run_of_the_paper_table2a_suite(data, tmp_path, capsys):
    pytest.importorskip("submitit")
    # the tiny profile on stand-ins, with the suite's own metrics (a dry run never needs their weights): the
    # job graph, resources and dependencies are those of the paper suite's nine cells
    assert main(["--offline", "run", str(PAPER / "table2a_cifar_blur.yaml"), "--runs", str(tmp_path / "runs"),
                 "--profile", "tiny", "--launcher", "slurm", "--dry-run", "resources.train.partition=gpu"]) == 0
    out = capsys.readouterr().out
    folder = next((tmp_path / "runs" / "tiny" / "_slurm").glob("table2a_cifar_blur-*"))
    trains = sorted(folder.glob("w*_train.sbatch"))  # one job array per wave of trainings
    listed = [line for script in trains for line in script.with_suffix(".stages").read_text().split()]
    assert len(listed) == 9 and "nothing submitted" in out  # the nine trainings of Table 2(a)
    assert sum(line.startswith("wave ") for line in out.splitlines()) <= 8  # one console line per wave
    for script in trains:
        text = script.read_text()  # the tiny profile asks for one GPU, not a node of eight
        assert "#SBATCH --gpus-per-node=1" in text and "#SBATCH --ntasks-per-node=1" in text
        assert "#SBATCH --partition=gpu" in text and "#SBATCH --kill-on-invalid-dep=yes" in text
    submit = (folder / "submit.sh").read_text()
    assert submit.count("--dependency=afterany:") >= 5 and not (tmp_path / "runs" / "tiny" / "train").exists()
