"""Temporary tuning sweep for the demo's budget (not a test; removed after tuning)."""
import json, os, subprocess, sys, time
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LM = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
def configs():
    from revbot.demo import FULL
    return {
        "h64l2": replace(FULL, hidden_size=64, layers=2, lr=3e-3, steps=400),
        "h64l2lm": replace(FULL, hidden_size=64, layers=2, lr=3e-3, steps=400, target_modules=LM),
        "h128l2lm": replace(FULL, hidden_size=128, layers=2, lr=3e-3, steps=300, target_modules=LM),
        "h128l4lm": replace(FULL, hidden_size=128, layers=4, lr=2e-3, steps=250, target_modules=LM),
        "h64l2lm_lr1e2": replace(FULL, hidden_size=64, layers=2, lr=1e-2, steps=400, target_modules=LM),
        "h96l3lm": replace(FULL, hidden_size=96, layers=3, lr=5e-3, steps=300, target_modules=LM),
        "qwen_h64l2lm": replace(FULL, arch="qwen2", hidden_size=64, layers=2, lr=3e-3, steps=400, target_modules=LM),
        "quick": replace(FULL, hidden_size=32, layers=1, steps=3, target_modules=LM, eval_max_new_tokens=8, review_max_new_tokens=8),
    }

def child(name, out):
    import torch
    torch.set_num_threads(2)
    from revbot.demo import run_demo, prepare_workdir
    cfg = configs()[name]
    lines = []
    t0 = time.time()
    try:
        r = run_demo(prepare_workdir(Path(f"/tmp/sweep/{name}")), cfg, echo=lines.append, progress=False)
        res = {"name": name, "ok": True, "comments": r.comments, "on_habit": r.on_habit_lines, "expected": r.expected,
               "timings": r.timings, "table": r.eval_table}
    except Exception as exc:
        import traceback
        res = {"name": name, "ok": False, "error": traceback.format_exc()[-3000:]}
    res["wall"] = time.time() - t0
    res["log"] = "\n".join(lines)
    Path(out, name + ".json").write_text(json.dumps(res, indent=1, default=str))

if __name__ == "__main__":
    out = os.environ.get("OUT", "/tmp/sweep-out")
    Path(out).mkdir(parents=True, exist_ok=True)
    if len(sys.argv) > 1 and sys.argv[1] != "all":
        child(sys.argv[1], out); sys.exit(0)
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else [n for n in configs() if n != "quick"]
    procs = []
    for k, name in enumerate(names):
        env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
        cmd = ["taskset", "-c", f"{2*k},{2*k+1}", sys.executable, __file__, name]
        procs.append((name, subprocess.Popen(cmd, env=env, stdout=open(f"{out}/{name}.out", "w"), stderr=subprocess.STDOUT)))
    for name, p in procs:
        p.wait()
    for name, _ in procs:
        f = Path(out, name + ".json")
        if not f.exists():
            print(name, "NO RESULT"); continue
        r = json.loads(f.read_text())
        if not r["ok"]:
            print(name, "FAILED", r["error"][-600:]); continue
        print(f"== {name}: wall {r['wall']:.0f}s on_habit {r['on_habit']}/{len(r['expected'])} comments {len(r['comments'])}")
        print("   timings", [(a, round(b, 1)) for a, b in r["timings"]])
        for c in r["comments"]: print("   ", c["path"], c["line"], c["body"][:70])
        print(r["table"])
