"""The report's training curve reads a stats.jsonl that may be damaged or still being written (``report`` while a
training runs): such lines are skipped, never a JSONDecodeError that fails the whole report."""
from __future__ import annotations

from ambient_bench.results.report_plots import read_losses


def test_read_losses_skips_damaged_and_half_written_lines(tmp_path):
    stats = tmp_path / "stats.jsonl"
    stats.write_text('{"kimg": 0.032, "loss": 1.5}\n{bad\n[1]\nnull\n7\n{"kimg": "x", "loss": 2}\n'
                     '{"kimg": 0.064}\n{"kimg": 0.064, "loss": 1.25}\n{"kimg": 0.09')
    assert read_losses(stats) == [(0.032, 1.5), (0.064, 1.25)]
    assert read_losses(tmp_path / "missing.jsonl") == []
