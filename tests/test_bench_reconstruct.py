"""The reconstruct benchmark's table: a rerun of some scenes replaces their rows and keeps the others."""

import json

from benchmarks.reconstruct import earlier_rows, merged


def test_a_rerun_keeps_the_other_scenes_rows_in_catalogue_order(tmp_path):
    path = tmp_path / "reconstruct-cpu.json"
    assert earlier_rows(path) == []  # no earlier run
    path.write_text(json.dumps({"scenes": [{"scene": "snowman", "psnr": 36.0}, {"scene": "mug", "psnr": 30.0}]}))
    rows = earlier_rows(path)
    assert rows == [{"scene": "snowman", "psnr": 36.0}, {"scene": "mug", "psnr": 30.0}]  # kept until measured again
    rows = merged(rows, {"scene": "mug", "psnr": 33.0})
    assert rows == [{"scene": "snowman", "psnr": 36.0}, {"scene": "mug", "psnr": 33.0}]
    rows = merged(rows, {"scene": "red-ball-on-blue-box", "psnr": 30.0})
    assert [r["scene"] for r in rows] == ["red-ball-on-blue-box", "snowman", "mug"]
    assert merged(rows, {"scene": "mug", "psnr": 34.0})[2]["psnr"] == 34.0 and len(merged(rows, {"scene": "mug"})) == 3
