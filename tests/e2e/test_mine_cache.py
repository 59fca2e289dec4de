"""The mine stage's cache: keyed by what the mined set depends on, shared safely by concurrent processes.
(The ranks of one cpu_ddp job sharing one mined set: tests/e2e/test_distributed.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import REPO_ROOT
from tests.conftest import all_runs, compose_config

pytestmark = pytest.mark.slow

# (sentence1, sentence2, score) rows: 16 pairs scored >= 4 (the positive_pairs transform keeps them), 8 at 3.
TOPICS = ["cat", "dog", "car", "train", "rain", "sun", "book", "song", "tree", "river", "bread", "chess"]


def write_pairs(folder: Path) -> Path:
    folder.mkdir()
    rows = ["sentence1,sentence2,score"]
    for i, topic in enumerate(TOPICS * 2):
        score = 3.0 if i % 3 == 2 else 4.5
        rows.append(f"the {topic} story number {i},a tale of the {topic} and item {i},{score}")
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    (folder / "dev.csv").write_text("\n".join(rows[:9]) + "\n")
    return folder


def mine_job(data: Path, cache: Path) -> list[str]:
    return [
        "model=tiny", "data=stsb_pairs", f"data.local_dir={data}", "evaluator=none", "baseline=false",
        "tracking.log_model=false", "stages=[load,mine,train,evaluate]", "mine.relative_margin=null",
        f"mine.cache_dir={cache}", "training.max_steps=1", "training.per_device_train_batch_size=4",
    ]  # fmt: skip


def mined_input(run) -> tuple[int, str]:
    """Row count and digest of the run's mined training input."""
    (mined,) = [d.dataset for d in run.inputs.dataset_inputs if d.dataset.name == "stsb_pairs-mined"]
    return json.loads(mined.profile)["num_rows"], mined.digest


def test_the_key_follows_the_processed_rows_the_transform_and_the_prompts(
    run_job, mlflow_client, tmp_path, monkeypatch
):
    job = mine_job(write_pairs(tmp_path / "pairs"), tmp_path / "mined")

    def run(*extra: str):
        found = mlflow_client.get_run(run_job(*job, *extra).run_id)
        assert found.info.status == "FINISHED"
        return found.data.tags["mine.cache"], found.data.tags["mine.folder"], mined_input(found)

    quick = run("data.max_train_rows=6")
    full = run()
    assert quick[0] == full[0] == "miss" and quick[1] != full[1]
    assert quick[2][0] == 6 and full[2][0] == 16  # the full run trains on every pair, not the quick try's 6
    looser = run("data.train_transform.min_score=3.0")  # a transform option: 24 pairs
    assert looser[0] == "miss" and looser[2][0] == 24
    reversed_pairs = run("data.train_columns=[positive,anchor]")
    assert reversed_pairs[0] == "miss" and reversed_pairs[1] != full[1]
    prompted = run("+data.prompts.anchor='query: '", "+data.prompts.positive='passage: '")
    assert prompted[0] == "miss" and prompted[1] != full[1] and prompted[2][1] != full[2][1]  # other negatives
    record = json.loads((Path(prompted[1]) / "mined_from.json").read_text())
    assert record["prompts"] == {"query_prompt": "query: ", "corpus_prompt": "passage: "} and record["pairs"] == 16
    # a miner of its own (model@miner) is loaded by the job that mines with it, not by one that finds its set
    from pipeline.stages import build

    loaded, shared_model = [], build.shared_model
    monkeypatch.setattr(build, "shared_model", lambda *a, **kw: loaded.append(kw.get("key")) or shared_model(*a, **kw))
    mined = run("model@miner=tiny")
    assert mined[0] == "miss" and mined[1] != full[1] and loaded == [None, "miner"]
    loaded.clear()
    assert run("model@miner=tiny") == ("hit", *mined[1:]) and loaded == [None]  # the same config: reused, no miner
    info = Path(full[1]) / "dataset_info.json"
    three_days_ago = time.time() - 3 * 86400
    os.utime(info, (three_days_ago, three_days_ago))
    assert run("mine.cache_max_age_days=1") == ("miss", full[1], full[2])  # too old: mined again, in place
    assert time.time() - info.stat().st_mtime < 3600


def test_two_processes_mining_one_key_compute_it_once(mlflow_client, store_overrides, tmp_path):
    from filelock import FileLock

    from pipeline.job import mine_inputs
    from pipeline.stages import build, load, mine
    from pipeline.stages.spec import read_spec

    cache = tmp_path / "mined"
    job = mine_job(write_pairs(tmp_path / "pairs"), cache)
    cfg = compose_config([*job, *store_overrides])
    spec = read_spec(cfg)
    key = mine.cache_key(mine_inputs(spec, load.load_data(spec), build.miner_key(spec)))
    cache.mkdir()
    logs = [tmp_path / f"job{i}.log" for i in range(2)]
    with FileLock(str(cache / f"{key}.lock")):  # held until both jobs wait for it: they ask for the key together
        jobs = [
            subprocess.Popen(
                [sys.executable, "-m", "pipeline", *job, *store_overrides, f"hydra.run.dir={tmp_path}/hydra{i}"],
                cwd=REPO_ROOT,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            for i, log in enumerate(logs)
        ]
        deadline = time.monotonic() + 300
        while not all("another process is mining it" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(j.poll() is None for j in jobs), [
                log.read_text() for log in logs
            ]
            time.sleep(0.5)
    assert [j.wait(timeout=300) for j in jobs] == [0, 0], [log.read_text()[-3000:] for log in logs]
    runs = all_runs(mlflow_client)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert sorted(r.data.tags["mine.cache"] for r in runs) == ["hit", "miss"]
    assert {r.data.tags["mine.folder"] for r in runs} == {str(cache / key)}
    assert sorted(p.name for p in cache.iterdir()) == [key, f"{key}.lock"]
