"""convert, open and report from Python against the `tquant` CLI on the same inputs: the
summary and the report rows must be the CLI's JSON (times and paths aside)."""

import json
import subprocess

import numpy as np
import pytest

import tquant
from conftest import HELDOUT, TINY, WEIGHT, reader, student_t, write_safetensors

VOLATILE = {"seconds", "mb_per_s", "input", "output", "threads"}


def test_convert_summary_is_the_cli_json(tmp_path, cli):
    opts = dict(format="sf4", block=32, scale_dtype="bf16", exclude=["*.o_proj.weight"])
    summary = tquant.convert(TINY, tmp_path / "py", **opts)
    out = subprocess.run(
        [cli, "convert", str(TINY), "-o", str(tmp_path / "cli"), "--format", "sf4", "--block", "32",
         "--scale-dtype", "bf16", "--exclude", "*.o_proj.weight", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    expected = json.loads(out)
    assert {k: v for k, v in summary.items() if k not in VOLATILE} == {
        k: v for k, v in expected.items() if k not in VOLATILE
    }
    assert summary["quantized"] > 0 and summary["kept"] > 0
    assert all(t["action"] == "keep" for t in summary["tensors"] if t["name"].endswith("o_proj.weight"))


def test_open_maps_names_to_arrays_and_matrices(tmp_path):
    tquant.convert(TINY, tmp_path / "q", format="nf4")
    c = tquant.open(tmp_path / "q")
    files = reader.Checkpoint(str(tmp_path / "q"))
    assert sorted(c) == files.names() and len(c) == len(files.names())
    assert c.is_quantized and c.config["model_type"] == "deepseek_v2"
    kinds = {type(c[n]) for n in c}
    assert kinds == {tquant.QuantizedMatrix, np.ndarray}
    for name in list(c)[:40]:
        v = c[name]
        got = v.dequantize() if isinstance(v, tquant.QuantizedMatrix) else np.asarray(v, np.float32)
        np.testing.assert_array_equal(got, files.dequantize(name))


def test_open_reads_q8_0_embeddings_and_head(tmp_path):
    # The converter's default stores them as q8_0 (int8 codes, an f16 scale per 32 along a row).
    tquant.convert(TINY, tmp_path / "q")
    c = tquant.open(tmp_path / "q")
    files = reader.Checkpoint(str(tmp_path / "q"))
    x = np.linspace(-1, 1, 192, dtype=np.float32)
    for name in ["model.embed_tokens.weight", "lm_head.weight"]:
        m = c[name]
        assert isinstance(m, tquant.QuantizedMatrix) and m.format == "q8_0"
        assert m.bits_per_weight == 8.5 and m.block == 32 and m.scale_dtype == "f16"
        assert m.codes.shape == (256, 192) and m.scales.shape == (256, 6)
        d = m.dequantize()
        np.testing.assert_array_equal(d, files.dequantize(name))
        np.testing.assert_array_equal(d, m.codes.view(np.int8) * np.repeat(m.scales, 32, axis=1))
        np.testing.assert_allclose(m @ x, d @ x, rtol=1e-5, atol=1e-5)


def test_convert_refuses_an_existing_output_unless_forced(tmp_path):
    w = student_t((16, 64))
    write_safetensors(tmp_path / "model.safetensors", {WEIGHT: w})
    tquant.convert(tmp_path / "model.safetensors", tmp_path / "q", format="nf4")
    with pytest.raises(tquant.TquantError, match="exists"):
        tquant.convert(tmp_path / "model.safetensors", tmp_path / "q", format="nf4")
    assert tquant.convert(tmp_path / "model.safetensors", tmp_path / "q", format="int4", force=True)["format"] == "int4"


def test_report_rows_are_the_cli_rows(tmp_path, cli):
    recipes = ["nf4", "sf4_fit", "int4+search"]
    rows = tquant.report(TINY, text=HELDOUT, recipes=recipes, window=64, max_bytes=4096)
    subprocess.run(
        [cli, "report", str(TINY), "--text", str(HELDOUT), "--window", "64", "--max-bytes", "4096",
         "--formats", ",".join(recipes), "-o", str(tmp_path / "r")],
        check=True, capture_output=True, text=True,
    )
    expected = json.loads((tmp_path / "r" / "report.json").read_text())["rows"]
    assert rows == expected
    assert [r["format"] for r in rows] == recipes
    assert all(r["bits_per_byte"] is not None for r in rows)


def test_weights_only_report():
    rows = tquant.report(TINY, recipes="nf4,e2m1")
    assert [r["format"] for r in rows] == ["nf4", "e2m1"]
    assert all(r["bits_per_byte"] is None and r["nmse"] > 0 for r in rows)
