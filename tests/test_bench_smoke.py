"""Keep ``python -m bench etf`` from rotting: run it quickly, check its JSON.

Only the shape of the document is checked, never a timing value:
benchmarks measure, they do not gate (see bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CASES = {"a_control", "b_mixed", "c_binary_1mib", "d_int_list", "d2_byte_list"}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_bench_etf_quick_pure_python_prints_complete_json():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "etf", "--quick", "--impl", "python"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["benchmark"] == "etf"
    assert doc["errors"] == []
    env = doc["environment"]
    for key in ("python", "platform", "cpu_count", "git_head", "quicdist_version",
                "compiled_module_available"):
        assert key in env
    assert isinstance(env["compiled_module_available"], bool)
    assert list(doc["settings"]["implementations"]) == ["python"]

    assert set(doc["cases"]) == CASES
    for case_id, case in doc["cases"].items():
        assert _number(case["encoded_size"]), case_id
        row = case["results"]["python"]
        assert _number(row["encode_us"]) and _number(row["decode_us"]), (case_id, row)
        assert set(case["results"]) == {"python"}
        assert "encode_cython_speedup_vs_python" in case["ratios"]
    assert 900 <= doc["cases"]["b_mixed"]["encoded_size"] <= 1200  # "~1 KiB"

    copies = doc["copies"]["python"]
    assert copies["encode_peak_bytes"] >= doc["copies"]["binary_size"]
    assert copies["decode_peak_bytes"] >= doc["copies"]["binary_size"]
    assert isinstance(copies["encode_copies"], int)
    assert isinstance(copies["decode_copies"], int)
    assert len(doc["targets"]) == 4


def test_bench_rejects_an_unknown_implementation():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "etf", "--quick", "--impl", "nope"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "unknown implementation" in proc.stderr
    assert proc.stdout == ""


FRAMING_CASES = {
    "pack_frame_40b": "us", "pack_frame_64kib": "us", "pack_frames_100x40b": "us",
    "decode_200k_40b_64kib_chunks": "us_per_frame", "decode_16mib_1200b_pieces": "ms_per_run",
    "scheduler_next_1": "ns", "scheduler_next_16": "ns", "scheduler_next_1000": "ns",
    "scheduler_next_1000_mixed": "ns", "scheduler_serve_cycle_1000_mixed": "ns",
}


def test_bench_framing_quick_pure_python_prints_complete_json():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "framing", "--quick", "--impl", "python"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["benchmark"] == "framing"
    assert doc["errors"] == []
    for key in ("python", "platform", "cpu_count", "git_head", "quicdist_version",
                "compiled_module_available"):
        assert key in doc["environment"]
    assert list(doc["settings"]["implementations"]) == ["python"]
    assert set(doc["cases"]) == set(FRAMING_CASES)
    for case_id, key in FRAMING_CASES.items():
        case = doc["cases"][case_id]
        assert set(case["results"]) == {"python"}, case_id
        assert _number(case["results"]["python"][key]), (case_id, case["results"])
        assert "cython_speedup_vs_python" in case
    decode = doc["cases"]["decode_200k_40b_64kib_chunks"]["results"]["python"]
    assert _number(decode["frames_per_s"])
    large = doc["cases"]["decode_16mib_1200b_pieces"]["results"]["python"]
    assert _number(large["mb_per_s"]) and _number(large["second_half_over_first_half"])
    assert len(doc["targets"]) == 3


def test_bench_framing_rejects_an_alternative_implementation():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "framing", "--quick", "--impl", "erlpack"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "unknown implementation" in proc.stderr and proc.stdout == ""
