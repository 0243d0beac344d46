"""Keep ``python -m bench etf`` from rotting: run it quickly, check its JSON.

Only the shape of the document is checked, never a timing value:
benchmarks measure, they do not gate (see bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.otp import NEEDS_ERL


ROOT = Path(__file__).resolve().parent.parent
CASES = {"a_control", "b_mixed", "c_binary_1mib", "d_int_list", "d2_byte_list"}


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m bench <args>`` from the repository root (bounded by ``timeout``)."""
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _assert_environment(doc, *keys: str) -> None:
    """The run's ``environment`` block names the base facts and ``keys``."""
    for key in ("python", "cpu_count", "git_head", "compiled_module_available", *keys):
        assert key in doc["environment"], key


def test_bench_etf_quick_pure_python_prints_complete_json():
    proc = _bench("etf", "--quick", "--impl", "python")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["benchmark"] == "etf"
    assert doc["errors"] == []
    _assert_environment(doc, "platform", "quicdist_version")
    assert isinstance(doc["environment"]["compiled_module_available"], bool)
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
    proc = _bench("etf", "--quick", "--impl", "nope")
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
    proc = _bench("framing", "--quick", "--impl", "python", timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["benchmark"] == "framing"
    assert doc["errors"] == []
    _assert_environment(doc, "platform", "quicdist_version")
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
    proc = _bench("framing", "--quick", "--impl", "erlpack")
    assert proc.returncode == 2
    assert "unknown implementation" in proc.stderr and proc.stdout == ""


DIST_CASES = {"send_small_tuple", "reg_send_small_tuple", "monitor_p_name"}


def test_bench_dist_quick_pure_python_prints_complete_json():
    proc = _bench("dist", "--quick", "--impl", "python")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)

    assert doc["benchmark"] == "dist"
    assert doc["errors"] == []
    _assert_environment(doc, "platform", "quicdist_version")
    assert list(doc["settings"]["implementations"]) == ["python"]
    assert set(doc["cases"]) == DIST_CASES
    for case_id, case in doc["cases"].items():
        assert _number(case["payload_size"]), case_id
        assert set(case["results"]) == {"python"}, case_id
        row = case["results"]["python"]
        for key in ("encode_us", "decode_us", "encode_codec_floor_us", "decode_codec_floor_us"):
            assert _number(row[key]), (case_id, key, row)
        assert "encode_overhead_us" in row and "decode_overhead_us" in row
        assert "encode_cython_speedup_vs_python" in case
    assert len(doc["targets"]) == 1


def _is_cell(cell, keys):
    """A result cell: the given numbers, or an {"error": ...} from a run that failed."""
    if set(cell) == {"error"}:
        return isinstance(cell["error"], str)
    return all(_number(cell[k]) for k in keys)


def test_bench_carrier_quick_prints_complete_json():
    proc = _bench("carrier", "--quick", "--bulk-mib", "0.25", "--rtt-count", "20",
                  "--frames", "1000", "--timeout", "10")
    # Exit 1 means `errors` is not empty (a wrong answer or a stalled run);
    # only the shape is checked here, so both are accepted if consistent.
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "carrier"
    assert isinstance(doc["errors"], list) and bool(doc["errors"]) == (proc.returncode == 1)
    _assert_environment(doc, "compiled_extension_used_by_client", "aioquic_version")
    assert doc["settings"]["quick"] is True
    assert doc["settings"]["bulk_bytes"] == 256 * 1024

    columns = doc["configurations"]
    assert {"mds_1452", "mds_16384"} <= set(columns)
    std = columns["mds_1452"]
    assert set(std["results"]) == {"quicdist", "aioquic"}
    for impl, row in std["results"].items():
        assert _is_cell(row["bulk"], ("mb_per_s", "best_mb_per_s")), (impl, row["bulk"])
        assert _is_cell(row["frames"], ("frames_per_s",)), (impl, row["frames"])
        assert _is_cell(row["rtt"], ("p50_us", "p99_us")), (impl, row["rtt"])
    assert _is_cell(std["results"]["quicdist"]["rtt_server_on_event"], ("p50_us", "p99_us"))
    for column in columns.values():
        assert set(column["ratios_quicdist_over_aioquic"]) >= {
            "bulk_mb_per_s", "frames_per_s", "rtt_p50_us"}
    assert [t["met"] in (True, False, None) for t in doc["targets"]] == [True] * 4


def test_bench_node_quick_prints_complete_json():
    proc = _bench("node", "--quick", timeout=120)
    # Exit 1 means `errors` is not empty: a lost, reordered or damaged
    # message, a wrong answer, or a run that could not complete.
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "node"
    assert doc["errors"] == []
    _assert_environment(doc, "quicdist_using_extension")
    assert isinstance(doc["environment"]["quicdist_using_extension"], bool)
    assert doc["settings"]["quick"] is True
    assert isinstance(doc["peer"]["compiled_extension_used"], bool)

    assert set(doc["throughput"]) == {"local_to_peer", "peer_to_local"}
    for direction, cases in doc["throughput"].items():
        assert set(cases) == {"small", "binary_1kib"}, direction
        for case, cell in cases.items():
            for key in ("messages", "msgs_per_s", "mb_per_s", "payload_mb_per_s",
                        "term_bytes_per_message"):
                assert _number(cell[key]), (direction, case, key, cell)
    assert doc["throughput"]["local_to_peer"]["binary_1kib"]["payload_bytes"] == 1024

    assert set(doc["latency"]) == {"mailbox_roundtrip", "ping", "rpc"}
    for kind, cell in doc["latency"].items():
        for key in ("count", "p50_us", "p90_us", "p99_us"):
            assert _number(cell[key]), (kind, key, cell)
        assert cell["p50_us"] <= cell["p90_us"] <= cell["p99_us"], (kind, cell)

    setup = doc["connection_setup"]
    for key in ("count", "median_ms", "min_ms", "first_connect_ms"):
        assert _number(setup[key]), (key, setup)


INTEROP_DIRECTIONS = {"python_to_erlang", "erlang_to_erlang", "erlang_to_python"}


@pytest.mark.erl
@NEEDS_ERL
def test_bench_interop_quick_prints_complete_json():
    proc = _bench("interop", "--quick", timeout=120)
    # Exit 1 means `errors` is not empty: a lost, reordered or damaged
    # message, a wrong echo, or a run that could not complete.
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "interop"
    assert doc["errors"] == []
    _assert_environment(doc, "quicdist_using_extension")
    assert doc["erlang"]["otp_release"] and doc["erlang"]["erts_version"]
    assert doc["settings"]["quick"] is True

    assert set(doc["throughput"]) == INTEROP_DIRECTIONS
    for direction, cases in doc["throughput"].items():
        assert set(cases) == {"small", "binary_1kib"}, direction
        for case, cell in cases.items():
            for key in ("messages", "msgs_per_s", "mb_per_s", "term_bytes_per_message"):
                assert _number(cell[key]), (direction, case, key, cell)
        assert cases["small"]["messages"] == doc["settings"]["small_messages"]

    assert set(doc["latency"]) == {"python_erlang", "erlang_python", "erlang_erlang"}
    for kind, cell in doc["latency"].items():
        for key in ("count", "p50_us", "p90_us", "p99_us"):
            assert _number(cell[key]), (kind, key, cell)
        assert cell["p50_us"] <= cell["p90_us"] <= cell["p99_us"], (kind, cell)

    for key, value in doc["ratios"].items():
        assert _number(value), (key, value)
    [target] = doc["targets"]
    assert target["value"] == doc["ratios"]["small.python_to_erlang_over_erlang_to_erlang"]
    assert target["met"] in (True, False)


def test_bench_streams_quick_prints_complete_json():
    proc = _bench("streams", "--quick", timeout=180)
    # Exit 1 means `errors` is not empty: damaged or lost stream bytes, a
    # wrong echo, or a run that could not complete (the baselines included).
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["benchmark"] == "streams"
    assert doc["errors"] == []
    _assert_environment(doc, "quicdist_using_extension", "aioquic_version")
    assert doc["settings"]["quick"] is True
    assert isinstance(doc["peer"]["compiled_extension_used"], bool)

    parallel = f"parallel_{doc['settings']['parallel_streams']}"
    assert set(doc["bulk"]) == {"one_stream", parallel, "aioquic_baseline", "quicdist_carrier"}
    for key, cell in doc["bulk"].items():
        assert _number(cell["mb_per_s"]), (key, cell)
        assert cell["bytes"] == doc["settings"]["bulk_bytes"], (key, cell)
    assert doc["bulk"][parallel]["streams"] == doc["settings"]["parallel_streams"]

    assert set(doc["latency"]) == {"open_to_first_byte", "urgent_rtt_idle",
                                   "urgent_rtt_under_bulk"}
    for kind, cell in doc["latency"].items():
        for key in ("count", "p50_us", "p90_us", "p99_us"):
            assert _number(cell[key]), (kind, key, cell)
        assert cell["p50_us"] <= cell["p90_us"] <= cell["p99_us"], (kind, cell)
    assert _number(doc["latency"]["urgent_rtt_under_bulk"]["bulk_bytes_checked"])

    assert len(doc["targets"]) == 2
    for target in doc["targets"]:
        assert target["met"] in (True, False), target
