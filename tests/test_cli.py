"""The `hone` command itself: quick to answer, whatever the command."""

import os
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_the_cli_answers_help_and_version_without_loading_torch():
    # hone --help used to import torch and transformers (3.7 s here); the CLI imports them per command
    done = subprocess.run([sys.executable, "-c", "import sys, hone.cli; print('torch' in sys.modules)"], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    version = subprocess.run([sys.executable, "-m", "hone.cli", "--version"], capture_output=True, text=True, env=ENV, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("hone 0.")


def test_a_model_that_is_not_here_is_one_sentence_at_once(tmp_path):
    """An unknown name used to take ~50 s of hub retries (torch loaded first); now it is answered
    before any model code runs. HF_HUB_OFFLINE makes 'the hub cannot be reached' certain here."""
    import time

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**ENV, "HF_HUB_OFFLINE": "1"}
    for model, expected in [
        ("nosuch-model", "not one of hone's aliases (smollm2-135m, gemma3-270m, tiny), not in the Hugging Face cache"),
        (str(empty), "is neither a Hugging Face model folder (no config.json) nor a run directory or checkpoint of hone's"),
        (str(tmp_path / "missing.gguf"), "no GGUF file at"),
    ]:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "hone.cli", "chat", "hi", "--model", model], capture_output=True, text=True, env=env, timeout=60)
        elapsed = time.monotonic() - started
        said = " ".join(done.stderr.split())
        assert done.returncode == 2 and expected in said and "Traceback" not in said, said
        assert elapsed < 10, elapsed  # was ~50 s; well under 2 s on an idle machine


def test_hone_train_refuses_settings_that_cannot_work_before_loading_anything(tmp_path):
    """An unknown loss used to surface only after the first sampling; a group of one trained
    nothing and said nothing. Both are one sentence now, before any model loads."""
    from typer.testing import CliRunner

    from hone.cli import app

    env_file = str((__import__("pathlib").Path(__file__).parent / "rl" / "toy_env.py"))
    for options, expected in [
        (["--loss", "nosuch"], "unknown loss 'nosuch'; use one of cispo, cross_entropy, importance_sampling, ppo"),
        (["--group-size", "1"], "group_size must be at least 2, got 1"),
        (["--lora-rank", "-1"], "lora_rank must be 0 (full fine-tuning) or more"),
        (["--stop-on", "hacking,crash"], "unknown stop rule 'crash'; use any of collapse, hacking, truncation, mismatch, drift"),
        (["--validate-every", "3"], "validate_every=3 needs a validation split, and the environment 'toy' has no validation_tasks() method"),
    ]:  # in-process (a subprocess per case cost ~15 s of imports): the same command line, the same exit
        done = CliRunner().invoke(app, ["train", env_file, "--model", "tiny", "--out", str(tmp_path / "run"), *options])
        said = " ".join((done.output + done.stderr).split())
        assert done.exit_code == 2 and expected in said and "Traceback" not in said, said
        assert not (tmp_path / "run").exists()  # nothing was started


def test_hone_serve_says_at_once_that_its_port_is_taken():
    """The port is bound before torch and the model load: a taken port used to be reported after
    the model had loaded and 'serving' was printed."""
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "hone.cli", "serve", "--port", str(port)], capture_output=True, text=True, env=ENV, timeout=60)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in said and "--port" in said, said
    assert "serving" not in done.stdout and "Traceback" not in said
    assert time.monotonic() - started < 10  # no model was loaded


def test_hone_serve_refuses_an_unknown_dtype_in_one_sentence_before_loading_anything():
    done = subprocess.run([sys.executable, "-m", "hone.cli", "serve", "--port", "0", "--dtype", "fp8"], capture_output=True, text=True, env=ENV, timeout=60)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "--dtype must be one of auto, bf16, fp32, not 'fp8'" in said and "Traceback" not in said, said


def test_third_party_loading_bars_and_warnings_show_only_with_verbose():
    # this process may have set these itself (the GGUF loader quiets transformers): start clean
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")}
    quiet = subprocess.run([sys.executable, "-m", "hone.cli", "chat", "hi", "--max-tokens", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip(), quiet.stderr
    assert "Loading weights" not in quiet.stderr and "Warning" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "hone.cli", "--verbose", "chat", "hi", "--max-tokens", "3"], capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr
    assert loud.stdout == quiet.stdout  # the same reply either way


def test_hone_train_wants_an_environment_or_a_served_model_to_learn_from():
    from typer.testing import CliRunner

    from hone.cli import app

    for arguments, expected in [
        (["train"], "name an environment to train on"),
        (["train", "toolcall", "--from-traffic", "agent"], "give an environment or --from-traffic MODEL, not both"),
        (["train", "--from-traffic", "agent"], "--from-traffic trains a model of a running `hone serve --home`: pass --backend URL"),
        (["train", "toolcall", "--gate", "toolcall"], "--gate validates a model trained --from-traffic"),
        (["train", "--from-traffic", "agent", "--backend", "http://127.0.0.1:9", "--stop-on", "boredom"], "unknown stop rule 'boredom'"),
    ]:
        done = CliRunner().invoke(app, arguments)
        said = " ".join((done.output + done.stderr).split())
        assert done.exit_code == 2 and expected in said and "Traceback" not in said, said
