"""The README's install alone (no test extras, so no torch pulling in jinja2 by chance)
is enough for the chat path: a `messages` template and a `chat = on` source train,
evaluate and pass their gate, with no row lost to the environment.

Slow: it builds a virtual environment (about a minute or two with pip's cache)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "specs" / "data"

SPEC = f'''sft "chat-install"

model {{
    base      = init llama(layers = 1, dim = 32, heads = 2, ffn = 64, max_seq_len = 512)
    tokenizer = train sentencepiece(vocab = 400, model_type = bpe) on chats  # carries the default chat template
    dtype     = float32
}}

data chats = jsonl("{DATA / "chats.jsonl"}") {{
    split eval = 5% seed 7
    on_bad_row = skip  # the old failure: every row skipped, the source silently empty
}}

data faq = jsonl("{DATA / "faq.jsonl"}") {{
    split eval = 5% seed 7
    on_bad_row = skip
}}

template dialog for chats {{
    messages = messages
}}

template answer for faq {{
    prompt     = "{{question}}"
    completion = "{{answer}}"
    chat       = on
}}

train {{
    data      = chats * 0.5 + faq * 0.5
    steps     = 6
    batch     = 4
    seq_len   = 512
    optimizer = adamw(lr = 1e-3)
}}

eval {{
    generate = greedy(max_new_tokens = 4)
    samples  = 4
}}

accept {{
    loss <= 100
}}

output {{
    dir    = "runs/{{name}}"
    export = none
}}
'''


def _readme_install(venv: Path) -> str:
    """The README's first command up to `sftc run`, with the environment in ``venv``."""
    first = (ROOT / "README.md").read_text().split("```sh\n", 1)[1].splitlines()[0]
    install = first.split(" && .venv/bin/sftc ", 1)[0]
    assert "pip install" in install and "[test]" not in install, first
    return install.replace(".venv", str(venv)).replace("python3 ", f"{sys.executable} ", 1)


@pytest.mark.slow
def test_the_readme_install_alone_runs_the_chat_path(tmp_path, source_tree):
    venv = tmp_path / "venv"
    installed = subprocess.run(  # from a copy of the sources: an install writes *.egg-info beside them
        _readme_install(venv), shell=True, cwd=source_tree, capture_output=True, text=True, timeout=1200
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    python = venv / "bin" / "python"
    torch = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert torch.returncode != 0, "the README's install must not bring torch: this test would prove nothing"

    (tmp_path / "chat.sft").write_text(SPEC)
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "SFTC_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }
    ran = subprocess.run(
        [venv / "bin" / "sftc", "run", "chat.sft"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output[-4000:]
    assert "ImportError" not in output and "jinja2" not in output
    (run_dir,) = (tmp_path / "runs" / "chat-install").iterdir()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["accepted"]
    sources = report["data"]["sources"]
    assert {name: s["bad_rows"] for name, s in sources.items()} == {"chats": 0, "faq": 0}
    assert all(s["train_examples"] == 95 for s in sources.values())
