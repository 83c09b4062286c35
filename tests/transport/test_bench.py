"""``robot-rl bench transport --quick`` runs the real sockets end to end and writes its JSON."""

import json

from robot_rl.cli import main


def test_bench_transport_quick_writes_ingest_and_broadcast_numbers(tmp_path):
    out = tmp_path / "transport.json"
    assert main(["bench", "transport", "--quick", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [row["robots"] for row in r["ingest"]] == [1, 4]
    for row in r["ingest"]:
        assert row["episodes"] == 3 * row["robots"] and row["steps_per_s"] > 0
        assert row["ack_latency_ms"]["n"] == row["episodes"] and row["ratio_to_disk"] > 0
    assert {(b["model"], b["subscribers"]) for b in r["broadcast"]} == {(m, n) for m in ("default", "100MB") for n in (1, 4)}
    for b in r["broadcast"]:
        assert b["curve_ms"]["n"] == 2 * b["subscribers"] and b["plain_ms"]["n"] == 2 * b["subscribers"]
