"""LocalBackend and load_backend: real transformers/peft/bitsandbytes on tiny models, on CPU."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time

import pytest
import torch

from adapters.model import (
    ADAPTER_META_FILE,
    BackendOptions,
    Generation,
    LocalBackend,
    StopTracker,
    find_answer_end,
    load_backend,
    trim_answer,
)
from bot.errors import ModelError
from bot.prompt import ANSWER_END, PROMPT_FORMAT_VERSION, PromptInput

MAX_NEW = 8


def _key(gens: list[Generation]) -> list[tuple]:
    return [(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in gens]


# --------------------------------------------------------------------------- prompt paths


def test_plain_model_gets_plain_text_and_bos(llama_backend, prompts):
    inp = prompts[0]
    assert llama_backend.chat is False
    assert llama_backend.render_prompt(inp) == inp.plain_text()
    tok = llama_backend.tokenizer
    # plain prompts get the tokenizer's <s>, counted in prompt_tokens
    assert llama_backend.count_prompt_tokens(inp) == llama_backend.count_tokens(inp.plain_text()) + 1
    gen = llama_backend.generate([inp], max_new_tokens=4)[0]
    assert gen.prompt_tokens == llama_backend.count_prompt_tokens(inp)
    assert tok.bos_token_id is not None


def test_chat_model_gets_its_chat_template(qwen2_backend, prompts):
    inp = prompts[1]
    text = qwen2_backend.render_prompt(inp)
    assert qwen2_backend.chat is True
    assert text.startswith(f"<|im_start|>system\n{inp.system}<|im_end|>\n<|im_start|>user\n{inp.user}<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    # the template carries its own markers: no extra special tokens are added on top
    assert qwen2_backend.count_prompt_tokens(inp) == qwen2_backend.count_tokens(text)
    assert qwen2_backend.generate([inp], max_new_tokens=4)[0].prompt_tokens == qwen2_backend.count_tokens(text)


def test_describe_and_max_context(llama_backend, qwen2_backend, tiny_llama):
    info = llama_backend.describe()
    assert info["kind"] == "local" and info["model"] == str(tiny_llama)
    assert info["adapter"] is None and info["quantized"] is None
    assert info["prompt_format_version"] == PROMPT_FORMAT_VERSION
    assert info["device"] == "cpu" and info["chat_template"] is False
    assert llama_backend.max_context == 2048
    assert qwen2_backend.describe()["chat_template"] is True
    json.dumps(info)  # serialisable for /healthz


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batched_equals_sequential_greedy(request, arch, prompts):
    backend = request.getfixturevalue(f"{arch}_backend")  # batch_size=2: 5 prompts -> 3 micro-batches
    one_by_one = [backend.generate([p], max_new_tokens=MAX_NEW)[0] for p in prompts]
    batched = backend.generate(prompts, max_new_tokens=MAX_NEW)
    assert len({p.user for p in prompts}) == len(prompts)
    assert len({g.text for g in one_by_one}) > 1, "prompts should not all give the same answer"
    assert _key(batched) == _key(one_by_one)
    # and a single batch holding everything (maximal padding) gives the same again
    wide = LocalBackend(backend.model, backend.tokenizer, name="wide", batch_size=8)
    assert _key(wide.generate(prompts, max_new_tokens=MAX_NEW)) == _key(one_by_one)


def test_micro_batches_are_sorted_by_length_and_results_keep_input_order(llama_backend, prompts, monkeypatch):
    seen: list[list[int]] = []
    original = LocalBackend._generate_batch

    def spy(self, batch, max_new_tokens, *rest):
        seen.append([len(ids) for ids in batch])
        return original(self, batch, max_new_tokens, *rest)

    monkeypatch.setattr(LocalBackend, "_generate_batch", spy)
    gens = llama_backend.generate(prompts, max_new_tokens=2)
    assert [len(b) for b in seen] == [2, 2, 1]
    flat = [n for b in seen for n in b]
    assert flat == sorted(flat, reverse=True)
    assert [g.prompt_tokens for g in gens] == [llama_backend.count_prompt_tokens(p) for p in prompts]
    assert llama_backend.generate([], max_new_tokens=2) == []


def test_missing_pad_token_falls_back_to_eos(tiny_llama, prompts, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.pad_token = None
    assert tok.pad_token_id is None
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with caplog.at_level(logging.DEBUG, logger="adapters.model"):
        backend = LocalBackend(model, tok, name="nopad", batch_size=8)
    assert backend.pad_id == tok.eos_token_id
    assert "no pad token" in caplog.text
    batched = backend.generate(prompts[:3], max_new_tokens=8)
    assert _key(batched) == _key([backend.generate([p], max_new_tokens=8)[0] for p in prompts[:3]])


def test_prompt_longer_than_the_context_is_refused_and_budget_is_capped(tiny_llama, prompts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    backend = LocalBackend(
        AutoModelForCausalLM.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama), name="tiny"
    )
    n = backend.count_prompt_tokens(prompts[0])
    backend.max_context = n + 3
    gen = backend.generate([prompts[0]], max_new_tokens=50)[0]
    assert gen.completion_tokens <= 3 and gen.finish_reason == "length"
    backend.max_context = n
    with pytest.raises(ModelError, match=rf"input 0 is {n} tokens but tiny takes at most {n}"):
        backend.generate([prompts[0]], max_new_tokens=5)
    with pytest.raises(ModelError, match="max_new_tokens"):
        backend.generate([prompts[0]], max_new_tokens=0)


def test_sampling_is_opt_in_and_seeded(llama_backend, prompts):
    sampler = LocalBackend(llama_backend.model, llama_backend.tokenizer, name="s", temperature=1.5, seed=123)
    assert sampler.describe()["sampling"] == {"temperature": 1.5}
    assert llama_backend.describe()["sampling"] == "greedy"
    short = [PromptInput("Review.", "File: a.py\nR1 +x"), PromptInput("Review.", "File: b.py")]
    a = sampler.generate(short, max_new_tokens=8)
    b = sampler.generate(short, max_new_tokens=8)
    assert _key(a) == _key(b)
    assert _key(a) != _key(llama_backend.generate(short, max_new_tokens=8))


# --------------------------------------------------------------------------- stopping at ANSWER_END


def test_find_and_trim_answer_end():
    assert find_answer_end(f"{ANSWER_END}\n") == 0
    assert find_answer_end(f"R1: x\n{ANSWER_END}\nmore") == 6
    assert find_answer_end(f"R1: see  {ANSWER_END} inline") is None
    assert find_answer_end(f"R1: x\n  {ANSWER_END}\n") is None  # indented: comment text
    assert trim_answer(f"R1: x\n  {ANSWER_END}\n{ANSWER_END}\njunk") == (f"R1: x\n  {ANSWER_END}\n", True)
    assert trim_answer("R1: no end") == ("R1: no end", False)


class _ToyVocab:
    """Token id -> text, so StopTracker can be driven with hand-written token sequences."""

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def ids(self, *words: str) -> list[int]:
        return [self.pieces.index(w) for w in words]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids if self.pieces[i] != "<eos>")


def _drive(tracker: StopTracker, rows: list[list[int]], prompt_len: int) -> list[bool]:
    """Feed the rows to the tracker one generated token at a time, as generate() does."""
    done = [False] * len(rows)
    for cur in range(prompt_len + 1, len(rows[0]) + 1):
        start = tracker.window_start(cur)
        done = tracker.update([row[start:cur] for row in rows], cur)
    return done


def test_stop_tracker_on_token_sequences():
    v = _ToyVocab(["<eos>", "<pad>", "sys", " End with ", "</", "review", ">", "\n", "R1", ": ", "fix", " ", "x", "  "])
    prompt = v.ids("sys", " End with ", "</", "review", ">", "\n")  # the prompt itself names the marker
    p = len(prompt)
    rows = [
        prompt + v.ids("R1", ": ", "fix", "\n", "</", "review", ">", "\n", "x", "x", "x", "x", "x"),  # stops mid-way
        prompt + v.ids("</", "review", ">", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x"),  # right at the start
        prompt
        + v.ids("R1", ": ", "fix", "\n", "  ", "</", "review", ">", "x", "x", "x", "x", "x"),  # indented: runs on
        prompt
        + v.ids(
            "R1", ": ", "fix", "<eos>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>", "<pad>"
        ),  # eos
        prompt + v.ids("R1", ": ", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x"),  # never ends
    ]
    assert len({len(r) for r in rows}) == 1
    tracker = StopTracker(v.decode, v.ids("<eos>"), p, len(rows))
    done = _drive(tracker, rows, p)
    assert done == [True, True, False, True, False]
    assert tracker.stopped_at == [p + 7, p + 3, None, p + 4, None]
    assert tracker.window < p + 7  # the test really exercised the sliding window


def _scripted_backend(path, prompts: list[PromptInput], scripts: list[str | list[int]], batch_size: int = 8):
    """A real Llama whose forward pass is overridden to emit a fixed continuation per prompt.

    It runs through the real generate() loop (left padding, attention masks, stopping criteria), so
    it shows what LocalBackend does when a model writes ANSWER_END (or eos) and then goes on.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(path)
    encoded = [tok(p.plain_text())["input_ids"] for p in prompts]  # a plain model: <s> + the plain prompt
    continuations = [s if isinstance(s, list) else tok(s, add_special_tokens=False)["input_ids"] for s in scripts]

    class Scripted(LlamaForCausalLM):
        def forward(self, input_ids=None, **kwargs):
            out = super().forward(input_ids=input_ids, **kwargs)
            forced = torch.full_like(out.logits[:, -1, :], -1e4)
            for row, seq in enumerate(input_ids.tolist()):
                while seq and seq[0] == tok.pad_token_id:
                    seq = seq[1:]
                k = next(i for i, ids in enumerate(encoded) if seq[: len(ids)] == ids)
                script, n = continuations[k], len(seq) - len(encoded[k])
                forced[row, script[min(n, len(script) - 1)]] = 1e4
            out.logits[:, -1, :] = forced
            return out

    model = Scripted.from_pretrained(path)
    model.generation_config.use_cache = False  # forward sees the whole sequence
    return LocalBackend(model, tok, name="scripted", batch_size=batch_size), continuations


def test_generation_stops_at_answer_end_and_trims(tiny_llama):
    from transformers import AutoTokenizer

    answer = "R2: Is this import used?\n"
    scripts = [
        answer + ANSWER_END + "\nand then the model rambles on and on and on and on",
        "R3: runs past the token budget without ever ending " * 4,
        None,  # eos, filled in below
        f"R1: quote it\n  {ANSWER_END}\nstill the same comment\n{ANSWER_END}\nrambling on and on",
    ]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    short = tok("R4: short", add_special_tokens=False)["input_ids"]
    scripts[2] = short + [tok.eos_token_id] + tok(" junk after eos", add_special_tokens=False)["input_ids"]
    # short prompts of different lengths keep this cheap: the scripted model runs without a KV cache
    inputs = [PromptInput("Review.", "File: a.py\n" + "R1 +x\n" * n) for n in (1, 4, 2, 7)]
    backend, conts = _scripted_backend(tiny_llama, inputs, scripts)
    gens = backend.generate(inputs, max_new_tokens=24)

    # 1. the marker line ends the answer: text before it, tokens counted up to the marker
    marker_tokens = next(k for k in range(1, len(conts[0]) + 1) if ANSWER_END in tok.decode(conts[0][:k]))
    assert gens[0].text == answer
    assert gens[0].finish_reason == "stop"
    assert gens[0].completion_tokens == marker_tokens < 24
    # 2. no marker: cut by max_new_tokens
    assert gens[1].finish_reason == "length" and gens[1].completion_tokens == 24
    assert gens[1].text.startswith("R3: runs past")
    # 3. eos ends it too, and is not part of the text
    assert (gens[2].text, gens[2].finish_reason, gens[2].completion_tokens) == ("R4: short", "stop", len(short) + 1)
    # 4. an indented marker is comment text; the real one ends the answer
    assert gens[3].text == f"R1: quote it\n  {ANSWER_END}\nstill the same comment\n"
    assert gens[3].finish_reason == "stop"
    # rows that stopped early do not change the others: same as one at a time
    alone = [backend.generate([p], max_new_tokens=24)[0] for p in inputs]
    assert _key(gens) == _key(alone)


# --------------------------------------------------------------------------- 4-bit


def test_4bit_nf4_loads_on_cpu_and_generates(tiny_llama, prompts):
    import bitsandbytes as bnb

    backend = load_backend(BackendOptions(str(tiny_llama), quantize="4bit", device="cpu", batch_size=4))
    assert backend.describe()["quantized"] == "4bit"
    layers = [m for m in backend.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers, "no 4-bit layers"
    assert all(m.weight.quant_type == "nf4" for m in layers)
    assert layers[0].weight.quant_state.nested  # double quantisation
    gens = backend.generate(prompts[:3], max_new_tokens=8)
    assert [g.prompt_tokens for g in gens] == [backend.count_prompt_tokens(p) for p in prompts[:3]]
    assert all(g.completion_tokens > 0 and g.finish_reason in ("stop", "length") for g in gens)


def test_quantization_defaults_off_on_cpu(tiny_llama):
    backend = load_backend(BackendOptions(str(tiny_llama), device="cpu"))
    assert backend.quantized is None
    assert not any(type(m).__name__ == "Linear4bit" for m in backend.model.modules())
    with pytest.raises(ModelError, match="unknown quantization"):
        load_backend(BackendOptions(str(tiny_llama), quantize="8bit"))


# --------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    # init_lora_weights=False: random B, so the adapter visibly changes the output
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    out = tmp_path_factory.mktemp("adapter") / "v1"
    peft_model.save_pretrained(out)
    (out / ADAPTER_META_FILE).write_text(
        json.dumps({"base_model": str(tiny_llama), "prompt_format_version": PROMPT_FORMAT_VERSION})
    )
    return out


def _copy_adapter(adapter_dir, tmp_path, **meta):
    target = tmp_path / "adapter"
    shutil.copytree(adapter_dir, target)
    data = json.loads((target / ADAPTER_META_FILE).read_text())
    data.update(meta)
    (target / ADAPTER_META_FILE).write_text(json.dumps(data))
    return target


def test_adapter_loads_on_its_recorded_base(adapter_dir, tiny_llama, llama_backend, prompts):
    from peft import PeftModel

    backend = load_backend(BackendOptions(adapter=str(adapter_dir), device="cpu"))
    assert isinstance(backend.model, PeftModel)
    info = backend.describe()
    assert info["model"] == str(tiny_llama) and info["adapter"] == str(adapter_dir)
    assert info["prompt_format_version"] == PROMPT_FORMAT_VERSION
    adapted = backend.generate(prompts[:2], max_new_tokens=MAX_NEW)
    assert _key(adapted) != _key(llama_backend.generate(prompts[:2], max_new_tokens=MAX_NEW))
    # naming the same base explicitly (another spelling of the path) is fine
    same = load_backend(BackendOptions(str(tiny_llama) + "/", adapter=str(adapter_dir), device="cpu"))
    assert _key(same.generate(prompts[:2], max_new_tokens=MAX_NEW)) == _key(adapted)


def test_adapter_with_another_prompt_format_is_refused(adapter_dir, tmp_path):
    old = _copy_adapter(adapter_dir, tmp_path, prompt_format_version=PROMPT_FORMAT_VERSION + 41)
    with pytest.raises(ModelError) as err:
        load_backend(BackendOptions(adapter=str(old), device="cpu"))
    message = str(err.value)
    assert f"prompt format version {PROMPT_FORMAT_VERSION + 41}" in message
    assert "this revbot renders versions 1, 2" in message
    assert "retrain" in message and str(old) in message


def test_adapter_whose_recorded_base_is_gone(adapter_dir, tmp_path):
    moved = _copy_adapter(adapter_dir, tmp_path, base_model=str(tmp_path / "moved-away"))
    with pytest.raises(ModelError, match=r"no model at .*moved-away \(the base_model recorded in .*revbot\.json\)"):
        load_backend(BackendOptions(adapter=str(moved), device="cpu"))


def test_adapter_on_another_base_needs_the_override(adapter_dir, tiny_llama, tiny_qwen2):
    with pytest.raises(
        ModelError, match=f"was trained on {re.escape(str(tiny_llama))}, not {re.escape(str(tiny_qwen2))}"
    ):
        load_backend(BackendOptions(str(tiny_qwen2), adapter=str(adapter_dir), device="cpu"))
    backend = load_backend(
        BackendOptions(str(tiny_qwen2), adapter=str(adapter_dir), device="cpu", allow_base_mismatch=True)
    )
    assert backend.describe()["model"] == str(tiny_qwen2)  # same shapes, so it loads when told to


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("no-weights", "holds no adapter: adapter_config.json, adapter_model.safetensors or adapter_model.bin missing"),
        ("no-meta", f"is not a revbot adapter: {ADAPTER_META_FILE} is missing"),
        ("bad-json", f"{ADAPTER_META_FILE}:3: not valid JSON"),
        ("no-base", "'base_model' is missing"),
        ("not-a-dir", "no adapter at"),
    ],
)
def test_broken_adapter_directories(tmp_path, case, fragment):
    target = tmp_path / "adapter"
    target.mkdir()
    meta = {"base_model": "/models/x", "prompt_format_version": PROMPT_FORMAT_VERSION}
    if case == "no-weights":
        (target / ADAPTER_META_FILE).write_text(json.dumps(meta))
    elif case == "bad-json":
        (target / ADAPTER_META_FILE).write_text('{\n  "base_model": \n}')
    elif case == "no-base":
        (target / ADAPTER_META_FILE).write_text(json.dumps({"prompt_format_version": 1}))
    elif case == "not-a-dir":
        target = tmp_path / "missing"
    with pytest.raises(ModelError) as err:
        load_backend(BackendOptions(adapter=str(target), device="cpu"))
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- bad model references


def test_missing_local_path_is_a_clear_error(tmp_path):
    for ref in (str(tmp_path / "nope"), "./models/not-here", "../x/y/z"):
        with pytest.raises(ModelError, match=f"no model at {ref}"):
            load_backend(BackendOptions(ref, device="cpu"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="is not a model directory: config.json is missing"):
        load_backend(BackendOptions(str(empty), device="cpu"))
    with pytest.raises(ModelError, match="no model given"):
        load_backend(BackendOptions(device="cpu"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelError, match=f"could not load the tokenizer from {broken}: "):
        load_backend(BackendOptions(str(broken), device="cpu"))


def test_hub_id_without_network_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelError) as err:
        load_backend(BackendOptions("revbot-test-org/no-such-model-1.5B", device="cpu"))
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert message.startswith(
        "could not load revbot-test-org/no-such-model-1.5B: not a local directory and the hub is unreachable"
    )
    assert "revbot dev init-model" in message and "HF_HUB_OFFLINE=0" in message


def test_load_backend_argument_errors(tiny_llama, tmp_path):
    with pytest.raises(ModelError, match="unknown backend kind"):
        load_backend(BackendOptions(str(tiny_llama), kind="vllm"))
    with pytest.raises(ModelError, match="needs a base URL"):
        load_backend(BackendOptions(kind="openai", api_model="m"))
    with pytest.raises(ModelError, match="lora-modules"):
        load_backend(
            BackendOptions(kind="openai", adapter=str(tmp_path), base_url="http://127.0.0.1:9/v1", api_model="m")
        )
    with pytest.raises(ModelError, match="for kind='openai'"):
        load_backend(BackendOptions(str(tiny_llama), base_url="http://127.0.0.1:9/v1"))
