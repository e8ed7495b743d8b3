"""`revbot score PRED REF`: any line-aligned files, scored like the papers score them."""

from __future__ import annotations

import json

import pytest

from tests.finetune.helpers import run_cli


def test_score_prints_both_bleu_variants_rouge_l_and_exact_match(tmp_path, capsys, codereviewer_bleu):
    predictions = ["Use the logger instead of print.", "Why is the timeout hard-coded?", "", "nit: typo"]
    references = ["Please use the logger, not print.", "Read the timeout from the config.", "Add a test.", "Nit: typo"]
    pred, ref = tmp_path / "pred.txt", tmp_path / "ref.txt"
    pred.write_text("\n".join(predictions) + "\n", encoding="utf-8")
    ref.write_bytes("\r\n".join(references).encode("utf-8"))  # CRLF and no final line break: same lines
    code, out, err = run_cli(["score", str(pred), str(ref), "--format", "json"], capsys)
    assert code == 0, err
    scores = json.loads(out)
    assert scores["pairs"] == 4
    assert scores["bleu4_no_stop"] == pytest.approx(codereviewer_bleu.bleu_fromstr(predictions, references), abs=0.01)
    assert scores["bleu4"] == pytest.approx(
        codereviewer_bleu.bleu_fromstr(predictions, references, rmstop=False), abs=0.01
    )
    assert scores["exact_match"] == 25.0 and 0 < scores["rouge_l"] < 100
    code, out, _ = run_cli(["score", str(pred), str(ref)], capsys)
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert code == 0 and f"{scores['bleu4_no_stop']:.2f}" in rows["BLEU-4, stop words removed"]
    assert f"{scores['rouge_l']:.2f}" in rows["ROUGE-L"] and "25.00" in rows["exact match %"]


def test_score_refuses_files_that_do_not_pair_up(tmp_path, capsys):
    pred, ref = tmp_path / "pred.txt", tmp_path / "ref.txt"
    pred.write_text("a\nb\nc\n")
    ref.write_text("a\nb\n")
    code, _, err = run_cli(["score", str(pred), str(ref)], capsys)
    assert code == 1 and "Traceback" not in err
    assert f"{pred} has 3 line(s) and {ref} has 2" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run_cli(["score", str(empty), str(empty)], capsys)
    assert code == 1 and "nothing to score" in err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"ok\ncaf\xe9\n")
    code, _, err = run_cli(["score", str(latin), str(ref)], capsys)
    assert code == 1 and f"{latin}:2: not UTF-8 text" in err
    code, _, err = run_cli(["score", str(tmp_path / "missing.txt"), str(ref)], capsys)
    assert code == 1 and "missing.txt: cannot read" in err
