"""Pretrained weights (issue 28 item 2): fetched on first use with a pinned sha256, offline never connects.

The real hosts are out of reach in tests: a loopback HTTP server serves a small file under the real file
name, and the registry entry's pin is set to that file's hash (or to a wrong one) for the test.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ambient_bench import weights
from ambient_bench.errors import UserError
from conftest import REPO, run_cli

PAYLOAD = b"not really inception weights, but bytes with a known sha256\n" * 64
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        self.seen.append(self.path)
        body = self.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    """A loopback server for every weights URL (AMBIENT_BENCH_WEIGHTS_URL), online, with empty caches."""
    handler = type("Handler", (_Handler,), {"files": {weights.INCEPTION_FILE: PAYLOAD}, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(weights.BASE_URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}/mirror")
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var, folder in (("TORCH_HOME", "torch"), ("HOME", "home"), ("HF_HOME", "hf")):
        monkeypatch.setenv(var, str(tmp_path / folder))
    yield handler
    httpd.shutdown()
    thread.join()


def pin_inception(monkeypatch, sha256: str | None) -> weights.WeightsFile:
    from ambient_bench.metrics import inception

    entry = dataclasses.replace(weights.REGISTRY["inception"], sha256=sha256)
    monkeypatch.setitem(weights.REGISTRY, "inception", entry)
    monkeypatch.setattr(inception, "WEIGHTS", entry)
    return entry


def test_urls_are_the_libraries_own_and_pins_agree_with_the_file_names():
    from piq.clip_iqa import TOKENS_URL
    from piq.feature_extractors.clip import OPENIQA_CLIP_MODEL_PATH, PIQ_CLIP_MODEL_PATH
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert weights.REGISTRY["inception"].url == URL_INCEPTION_V3
    assert weights.REGISTRY["clip_rn50"].url == OPENIQA_CLIP_MODEL_PATH  # piq's fallback, which carries its hash
    assert weights.PIQ_CLIP_RN50_URL == PIQ_CLIP_MODEL_PATH and weights.REGISTRY["clip_iqa_tokens"].url == TOKENS_URL
    # torch.hub's convention: the 8 hex digits in the file name start the sha256; OpenAI's URL holds it whole
    assert weights.REGISTRY["inception"].sha256.startswith("6726825d")
    assert weights.REGISTRY["clip_rn50"].sha256 == OPENIQA_CLIP_MODEL_PATH.split("/")[-2]
    for entry in weights.REGISTRY.values():
        assert entry.sha256 is None or all(c in "0123456789abcdef" for c in entry.sha256)
        assert entry.folder().name in ("checkpoints", "clip", "<revision>", "tmp")


def test_first_use_downloads_verifies_and_caches(server, monkeypatch, tmp_path):
    from ambient_bench.registry import METRICS

    pin_inception(monkeypatch, PAYLOAD_SHA)
    METRICS.build({"name": "fid"}).check()  # first use: fetched from the loopback server
    path = tmp_path / "torch" / "hub" / "checkpoints" / weights.INCEPTION_FILE
    assert path.read_bytes() == PAYLOAD and server.seen == [f"/mirror/{weights.INCEPTION_FILE}"]
    METRICS.build({"name": "kid"}).check()  # cached: no second request
    assert len(server.seen) == 1 and list(path.parent.iterdir()) == [path]


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(server, monkeypatch, tmp_path):
    from ambient_bench.registry import METRICS

    pin_inception(monkeypatch, "0" * 64)
    with pytest.raises(UserError) as err:
        METRICS.build({"name": "fid"}).check()
    message = str(err.value)
    assert "\n" not in message and "refused" in message and "nothing cached" in message
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert f"folder {folder}" in message and weights.INCEPTION_FILE in message
    assert list(folder.iterdir()) == []  # neither the file nor a .partial is left
    assert len(server.seen) == 1


def test_a_failed_download_gives_the_one_line_error(server, monkeypatch):
    from ambient_bench.registry import METRICS

    server.files = {}  # the server answers 404
    with pytest.raises(UserError) as err:
        METRICS.build({"name": "fd_dinov2"}).check()
    message = str(err.value)
    assert "\n" not in message and "dinov2_vitl14_pretrain.pth" in message and "HTTP Error 404" in message
    assert server.seen == ["/mirror/dinov2_vitl14_pretrain.pth"]


@pytest.mark.parametrize("switch", ["AMBIENT_BENCH_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_connects(server, monkeypatch, switch):
    from ambient_bench.registry import METRICS

    pin_inception(monkeypatch, PAYLOAD_SHA)
    monkeypatch.setenv(switch, "1")
    for spec in ({"name": "fid"}, {"name": "fd_dinov2"}, {"name": "clip_iqa"}):
        with pytest.raises(UserError, match="offline") as err:
            METRICS.build(spec).check()
        assert "\n" not in str(err.value)
    assert server.seen == []


def test_the_offline_flag_of_the_cli_never_connects(server, monkeypatch, capsys):
    from ambient_bench.cli import main

    proc = run_cli("--offline", "weights", "fetch", "inception", "clip_rn50", timeout=120)  # the real command line
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.count("not fetched: offline (--offline or AMBIENT_BENCH_OFFLINE=1)") == 2 and server.seen == []
    # the same command online reaches the (loopback) host; the real pin refuses the test payload
    assert main(["weights", "fetch", "inception"]) == 1 and "refused" in capsys.readouterr().out
    assert server.seen == [f"/mirror/{weights.INCEPTION_FILE}"]
    assert not (Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / weights.INCEPTION_FILE).exists()
    # an unpinned file (piq's tokens) is fetched into piq's cache; a second fetch finds it there
    server.files["clipiqa_tokens.pt"] = b"tokens"
    for expected in ("clip_iqa_tokens: fetched (unpinned)", "clip_iqa_tokens: present at"):
        assert main(["weights", "fetch", "clip_iqa_tokens"]) == 0 and expected in capsys.readouterr().out
    assert (Path(os.environ["HOME"]) / ".cache" / "clip" / "clipiqa_tokens.pt").read_bytes() == b"tokens"
    assert server.seen[1:] == ["/mirror/clipiqa_tokens.pt"]


def test_verify_reports_each_file(server, monkeypatch, tmp_path, capsys):
    from ambient_bench.cli import main

    pin_inception(monkeypatch, PAYLOAD_SHA)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / weights.INCEPTION_FILE).write_bytes(PAYLOAD)  # matches (the test's pin)
    (checkpoints / "dinov2_vitl14_pretrain.pth").write_bytes(b"corrupt")  # mismatches the real pin
    clip = tmp_path / "home" / ".cache" / "clip"
    clip.mkdir(parents=True)
    (clip / "clipiqa_tokens.pt").write_bytes(b"tokens")  # unpinned
    assert main(["weights", "verify"]) == 1
    out = capsys.readouterr().out.splitlines()
    lines = {line.split(":")[0]: line for line in out}
    assert set(lines) == {"inception", "dinov2_vitl14", "clip_rn50", "clip_iqa_tokens", "sd_vae"}
    assert "ok, sha256 matches its full pin" in lines["inception"]
    assert "MISMATCH" in lines["dinov2_vitl14"] and hashlib.sha256(b"corrupt").hexdigest() in lines["dinov2_vitl14"]
    assert "unpinned" in lines["clip_iqa_tokens"] and "missing" in lines["clip_rn50"] and "missing" in lines["sd_vae"]
    assert main(["weights", "verify", "inception"]) == 0
    assert server.seen == []  # verify never downloads


def test_list_shows_place_and_state_without_loading_the_heavy_libraries(tmp_path):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / weights.INCEPTION_FILE).write_bytes(PAYLOAD)
    code = ("import sys; bare = 'torch' in sys.modules or __import__('ambient_bench') and 'torch' in sys.modules\n"
            "from ambient_bench.cli import main; main(['weights', 'list'])\n"
            "heavy = [m for m in ('torch_fidelity', 'timm', 'piq', 'diffusers', 'scipy') if m in sys.modules]\n"
            "print('HEAVY', heavy, 'TORCH', 'torch' in sys.modules, 'BARE', bare)")
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "HOME": str(tmp_path / "home"),
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "present" in rows["inception"] and str(checkpoints / weights.INCEPTION_FILE) in rows["inception"]
    dinov2 = rows["dinov2_vitl14"]
    assert "missing" in dinov2 and str(checkpoints / "dinov2_vitl14_pretrain.pth") in dinov2
    assert str(tmp_path / "home" / ".cache" / "clip" / "RN50.pt") in rows["clip_rn50"]
    assert "models--stabilityai--sd-vae-ft-mse" in rows["sd_vae"]
    last = proc.stdout.strip().splitlines()[-1]
    assert "HEAVY []" in last
    if "BARE False" in last:  # once the package imports torch lazily, listing must not import it either
        assert "TORCH False" in last


def test_a_hugging_face_download_with_the_wrong_hash_is_deleted(server, monkeypatch, tmp_path):
    import huggingface_hub

    def fake_download(repo, filename, cache_dir):  # the hub's cache layout: snapshot link → blob
        root = Path(cache_dir) / f"models--{repo.replace('/', '--')}"
        blob = root / "blobs" / "etag"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(b"tampered")
        link = root / "snapshots" / "rev" / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
        return str(link)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    reason = weights.fetch(weights.REGISTRY["sd_vae"])
    assert reason and "refused" in reason and "nothing cached" in reason
    root = tmp_path / "hf" / "hub" / "models--stabilityai--sd-vae-ft-mse"
    assert not any(p.is_file() for p in root.rglob("*"))


def test_plan_and_slurm_dry_run_never_need_weights(monkeypatch, tmp_path, capsys):
    """Offline with empty caches: plan and --dry-run succeed and name the weights a stage will fetch, with stage
    keys that hold the pinned hash (the same keys once the file is there); run stops before anything is written."""
    from ambient_bench.cli import main

    pytest.importorskip("submitit")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after main(--offline) sets it
    suite, runs = str(REPO / "benchmarks" / "mini_table2a.yaml"), str(tmp_path / "runs")
    override = "evaluate.metrics=[fd_digits,fid]"
    assert main(["--offline", "plan", suite, override, "--runs", runs]) == 0
    out = capsys.readouterr().out
    assert "note: weights not in the cache yet: inception;" in out and "weights fetch" in out
    assert main(["--offline", "run", suite, override, "--runs", runs, "--launcher", "slurm", "--dry-run"]) == 0
    assert "weights not in the cache yet: inception" in capsys.readouterr().out
    from ambient_bench.registry import METRICS

    assert METRICS.build({"name": "fid"}).content_identity() == {"weights_sha256": weights.REGISTRY["inception"].sha256}
    assert main(["--offline", "run", suite, override, "--runs", str(tmp_path / "runs2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "offline (--offline" in err and weights.INCEPTION_FILE in err
    assert not (tmp_path / "runs2").exists()


def test_cifar10_download_true_stays_offline(tmp_path, monkeypatch):
    """Datasets follow the same switch: download: true never reaches the network offline."""
    pytest.importorskip("torchvision")
    import urllib.request

    from ambient_bench.registry import DATASETS

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    dataset = DATASETS.build({"name": "cifar10", "root": str(tmp_path / "data"), "download": True})
    dataset.check()  # planning is fine: it will download at load time
    with pytest.raises(UserError, match=r"offline \(--offline or AMBIENT_BENCH_OFFLINE=1\)") as err:
        dataset.load()
    assert "\n" not in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)


def test_plan_online_makes_no_request(server, monkeypatch, tmp_path, capsys):
    """plan is online here (the loopback host would answer) and still downloads nothing."""
    from ambient_bench.cli import main

    pin_inception(monkeypatch, PAYLOAD_SHA)
    suite = str(REPO / "benchmarks" / "mini_table2a.yaml")
    assert main(["plan", suite, "evaluate.metrics=[fd_digits, fid, fd_dinov2]", "--runs", str(tmp_path / "runs")]) == 0
    assert "weights not in the cache yet: inception, dinov2_vitl14;" in capsys.readouterr().out
    assert server.seen == [] and not (tmp_path / "torch").exists()
