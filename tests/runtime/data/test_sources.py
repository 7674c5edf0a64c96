"""Sources through datasets: every kind, globs, fingerprints, missing/empty files, the hub offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from runtime.data.sources import load_source, source_fingerprint
from runtime.plan.data_errors import SourceError
from runtime.plan.data_plan import DataPlan, EvalSplit, SourceSpec, TemplateSpec
from tests.runtime.data_helpers import write_jsonl

ROWS = [{"q": "hello", "a": "hi"}, {"q": "thanks", "a": "ok"}, {"q": "what", "a": "yes"}]


def rows_of(loaded):
    return loaded.dataset.select_columns(["q", "a"]).to_list()


def test_jsonl_glob_reads_files_in_sorted_order_with_provenance(tmp_path):
    write_jsonl(str(tmp_path / "part-1.jsonl"), ROWS[1:])
    write_jsonl(str(tmp_path / "part-0.jsonl"), ROWS[:1])
    loaded = load_source(
        SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "part-*.jsonl"),)), cache_dir=str(tmp_path / "c")
    )
    assert rows_of(loaded) == ROWS
    assert loaded.locate(0) == (str(tmp_path / "part-0.jsonl"), 1)
    assert loaded.locate(2) == (str(tmp_path / "part-1.jsonl"), 2)


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"q": "hello", "a": "hi"}\n\n   \n{"q": "thanks", "a": "ok"}\n')
    loaded = load_source(
        SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "b.jsonl"),)), cache_dir=str(tmp_path / "c")
    )
    assert len(loaded) == 2 and loaded.locate(1) == (str(tmp_path / "b.jsonl"), 4)


def test_json_csv_parquet_text_disk(tmp_path):
    c = str(tmp_path / "c")
    (tmp_path / "doc.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    assert (
        rows_of(
            load_source(
                SourceSpec(name="j", kind="json", paths=(str(tmp_path / "doc.json"),), field="data"), cache_dir=c
            )
        )
        == ROWS
    )
    (tmp_path / "arr.json").write_text(json.dumps(ROWS))
    assert (
        rows_of(load_source(SourceSpec(name="j2", kind="json", paths=(str(tmp_path / "arr.json"),)), cache_dir=c))
        == ROWS
    )
    (tmp_path / "t.csv").write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in ROWS))
    csv_src = load_source(SourceSpec(name="c", kind="csv", paths=(str(tmp_path / "t.csv"),)), cache_dir=c)
    assert rows_of(csv_src) == ROWS and csv_src.locate(0)[1] == 2  # line 2: after the header
    ds = datasets.Dataset.from_list(ROWS)
    ds.to_parquet(str(tmp_path / "t.parquet"))
    assert (
        rows_of(load_source(SourceSpec(name="p", kind="parquet", paths=(str(tmp_path / "t.parquet"),)), cache_dir=c))
        == ROWS
    )
    (tmp_path / "t.txt").write_text("hello you\nthanks\n")
    assert load_source(SourceSpec(name="t", kind="text", paths=(str(tmp_path / "t.txt"),)), cache_dir=c).dataset[
        "text"
    ] == ["hello you", "thanks"]
    ds.save_to_disk(str(tmp_path / "saved"))
    disk = load_source(SourceSpec(name="d", kind="disk", paths=(str(tmp_path / "saved"),)), cache_dir=c)
    assert rows_of(disk) == ROWS
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    disk_test = load_source(SourceSpec(name="d", kind="disk", paths=(str(tmp_path / "saved_dict"),), split="test"))
    assert rows_of(disk_test) == ROWS[:1]


def test_tsv_arrow_files_and_parquet_shards(tmp_path):
    c = str(tmp_path / "c")
    (tmp_path / "t.tsv").write_text("q\ta\n" + "".join(f"{r['q']}, really\t{r['a']}\n" for r in ROWS))
    tsv = load_source(SourceSpec(name="t", kind="csv", paths=(str(tmp_path / "t.tsv"),), delimiter="\t"), cache_dir=c)
    assert rows_of(tsv) == [{"q": f"{r['q']}, really", "a": r["a"]} for r in ROWS]  # the comma is text
    ds = datasets.Dataset.from_list(ROWS)
    import pyarrow as pa

    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_stream(sink, ds.data.schema) as writer:
        writer.write_table(ds.data.table)
    assert (
        rows_of(load_source(SourceSpec(name="a", kind="arrow", paths=(str(tmp_path / "t.arrow"),)), cache_dir=c))
        == ROWS
    )
    for k in range(3):
        ds.select([k]).to_parquet(str(tmp_path / f"shard-{k:05d}.parquet"))
    shards = load_source(SourceSpec(name="p", kind="parquet", paths=(str(tmp_path / "shard-*.parquet"),)), cache_dir=c)
    assert rows_of(shards) == ROWS and shards.locate(2) == (str(tmp_path / "shard-00002.parquet"), 1)


def test_missing_and_empty_files_are_named(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(SourceError, match="file not found: .*nope.jsonl"):
        load_source(SourceSpec(name="s", kind="jsonl", paths=(missing,)))
    with pytest.raises(SourceError, match="no file matches .*zzz-\\*.jsonl"):
        load_source(SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "zzz-*.jsonl"),)))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SourceError, match="file is empty: .*empty.jsonl"):
        load_source(SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "empty.jsonl"),)))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(SourceError, match="blank.jsonl has no rows"):
        load_source(
            SourceSpec(name="s", kind="jsonl", paths=(str(tmp_path / "blank.jsonl"),)), cache_dir=str(tmp_path / "c")
        )


def test_fingerprint_follows_content_not_mtime(tmp_path):
    p = write_jsonl(str(tmp_path / "a.jsonl"), ROWS)
    spec = SourceSpec(name="s", kind="jsonl", paths=(p,))
    fp = source_fingerprint(spec)
    assert load_source(spec, cache_dir=str(tmp_path / "c")).fingerprint == fp
    os.utime(p, (time.time() + 100, time.time() + 100))
    assert source_fingerprint(spec) == fp
    write_jsonl(p, ROWS[:2] + [{"q": "what", "a": "no"}])
    assert source_fingerprint(spec) != fp


def test_hf_dataset_from_a_local_dataset_directory(tmp_path):
    d = tmp_path / "org_faq"
    d.mkdir()
    datasets.Dataset.from_list(ROWS).to_parquet(str(d / "train.parquet"))
    loaded = load_source(
        SourceSpec(name="faq", kind="hf_dataset", hub=str(d), split="train"), cache_dir=str(tmp_path / "c")
    )
    assert rows_of(loaded) == ROWS and loaded.fingerprint


def test_hf_dataset_from_the_datasets_cache_offline(tmp_path):
    """A hub dataset already in the datasets cache loads with the hub unreachable (offline mode)."""
    cache = tmp_path / "cache"
    src = tmp_path / "src"
    src.mkdir()
    datasets.Dataset.from_list(ROWS).to_parquet(str(src / "train.parquet"))
    # Build what a previous online `load_dataset("org/faq")` leaves in the cache: a prepared
    # builder directory <cache>/org___faq/<config>/<version>/<hash>/.
    builder = datasets.load_dataset_builder(
        "parquet", data_files={"train": str(src / "train.parquet")}, cache_dir=str(cache)
    )
    builder.download_and_prepare()
    built = builder.cache_dir
    target = cache / "org___faq" / "default" / "0.0.0" / os.path.basename(built)
    shutil.copytree(built, target)
    info = json.loads((target / "dataset_info.json").read_text())
    info["config_name"] = "default"
    info["dataset_name"] = "faq"
    (target / "dataset_info.json").write_text(json.dumps(info))
    for f in os.listdir(target):
        if f.startswith("parquet-"):
            os.rename(target / f, target / f.replace("parquet-", "faq-", 1))
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from runtime.data.sources import load_source; from runtime.plan.data_plan import SourceSpec;"
        f"l = load_source(SourceSpec(name='faq', kind='hf_dataset', hub='org/faq'), cache_dir={str(cache)!r});"
        "print(l.dataset.to_list())"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[3]),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert eval(out.stdout.strip().splitlines()[-1]) == ROWS


def test_hf_dataset_offline_without_cache_fails_fast_and_clearly(tmp_path):
    # fast: offline, it fails without trying the network (every connection attempt is counted)
    code = (
        "import socket, sys; sys.path.insert(0, '.'); attempts = []\n"
        "connect = socket.socket.connect\n"
        "socket.socket.connect = lambda self, address: (attempts.append(address), connect(self, address))[1]\n"
        "socket.create_connection = lambda address, *a, **k: (attempts.append(address), 1/0)\n"
        "from runtime.data.sources import load_source; from runtime.plan.data_plan import SourceSpec\n"
        "from runtime.plan.data_errors import HubUnavailableError\n"
        "try:\n"
        "    load_source(SourceSpec(name='faq', kind='hf_dataset', hub='org/not-cached'), "
        f"cache_dir={str(tmp_path)!r})\n"
        "except HubUnavailableError as e:\n"
        "    print('ERR', len(attempts), e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(Path(__file__).resolve().parents[3]),
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR")]
    assert line, out.stdout + out.stderr[-2000:]
    assert "org/not-cached" in line[0] and "not in the datasets cache" in line[0] and "offline" in line[0]
    assert line[0].split()[1] == "0"  # no connection attempted


def test_plan_round_trips_through_json(tmp_path):
    plan = DataPlan(
        sources=(
            SourceSpec(
                name="t",
                kind="jsonl",
                paths=("/d/t-*.jsonl",),
                eval=EvalSplit(fraction=0.05, seed=7),
                overflow="truncate",
                on_bad_row="skip",
            ),
            SourceSpec(name="faq", kind="hf_dataset", hub="org/faq", split="train", revision="abc"),
            SourceSpec(
                name="c",
                kind="parquet",
                paths=("/d/c.parquet",),
                eval=EvalSplit(source=SourceSpec(name="c_eval", kind="parquet", paths=("/d/e.parquet",))),
            ),
        ),
        templates={
            "t": TemplateSpec(prompt="Q: {q}\n", completion="{a}"),
            "c": TemplateSpec(messages="messages", train_on="last_assistant"),
        },
        weights={"t": 0.7, "faq": 0.1, "c": 0.2},
        seq_len=1024,
        packing=True,
        seed=42,
        global_batch_size=32,
        epochs=3,
    )
    again = DataPlan.from_json(plan.to_json())
    assert again == plan
    assert json.loads(again.to_json()) == json.loads(plan.to_json())
    assert plan.template_for("faq") == TemplateSpec()


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(kind="xml", paths=("/a",)), "kind must be one of"),
        (dict(kind="jsonl", paths=("/a",), overflow="wrap"), "overflow must be one of"),
        (dict(kind="jsonl", paths=("/a",), on_bad_row="ignore"), "on_bad_row must be one of"),
        (dict(kind="hf_dataset"), "needs hub"),
        (dict(kind="jsonl"), "needs paths"),
    ],
)
def test_source_spec_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SourceSpec(name="s", **kw)


def test_data_plan_validation():
    s = SourceSpec(name="s", kind="jsonl", paths=("/a",))
    with pytest.raises(ValueError, match="exactly one of epochs or steps"):
        DataPlan(sources=(s,), epochs=None, steps=None)
    with pytest.raises(ValueError, match="weight for unknown source"):
        DataPlan(sources=(s,), weights={"x": 1.0})
    with pytest.raises(ValueError, match="must be positive"):
        DataPlan(sources=(s,), weights={"s": 0.0})
    with pytest.raises(ValueError, match="fraction must be in"):
        EvalSplit(fraction=1.5)
    with pytest.raises(ValueError, match="both prompt and completion"):
        TemplateSpec(prompt="x")
