"""Retrieval on the tiny model: several evaluators in one run, the baseline, the IR metrics in MLflow."""

from __future__ import annotations

import math
import re

from tests.conftest import all_runs, check_items_reproduce, logged_items

IR_ON_PAIRS = ("debug=smoke", "evaluators.ir.columns=[sentence1,sentence2]")
SMOKE_IR = ("evaluators=[sts,ir]", *IR_ON_PAIRS)


def test_sts_and_ir_together_during_training_and_after_with_a_baseline(run_job, mlflow_client):
    result = run_job(*SMOKE_IR, "training.eval_strategy=steps")
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    # each evaluator under its own prefix, MLflow's spelling of "@" (ir-dev_cosine_ndcg@10)
    for name in ("sts-test_spearman_cosine", "ir-test_cosine_ndcg_at_10", "ir-dev_cosine_mrr_at_10"):
        assert name in metrics and math.isfinite(metrics[name]), name
    # during training: one SequentialEvaluator on dev, each metric keeps its prefix
    assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id, "eval_ir-dev_cosine_ndcg_at_10")] == [
        1,
        2,
    ]
    assert "eval_sts-dev_spearman_cosine" in metrics
    # the starting model, scored once before training, by the same evaluators
    for name in ("sts-test_spearman_cosine", "ir-test_cosine_ndcg_at_10"):
        assert math.isfinite(metrics[f"baseline/{name}"])
    assert result.metrics["baseline/ir-dev_cosine_ndcg@10"] == metrics["baseline/ir-dev_cosine_ndcg_at_10"]
    assert result.optimized_metric == metrics["sts-dev_spearman_cosine"]
    # per-item scores, final and baseline: one file per evaluator and split, each row aggregating to the logged metric
    items = logged_items(mlflow_client, run)
    assert sorted(items) == ["ir-dev.parquet", "ir-test.parquet", "sts-dev.parquet", "sts-test.parquet"]
    assert list(items["sts-test.parquet"][0].columns) == ["score", "label"]
    ir_rows = items["ir-test.parquet"][0]
    assert {"query_id", "cosine_ndcg@10", "cosine_mrr@10", "cosine_map@100", "cosine_recall@1"} <= set(ir_rows.columns)
    assert ir_rows["query_id"].is_unique and len(ir_rows) > 1
    final = check_items_reproduce(mlflow_client, run)
    assert {"sts-test_spearman_cosine", "sts-test_pearson_cosine", "ir-test_cosine_ndcg@10"} <= final
    assert {name for name in result.metrics if not name.startswith("baseline/")} == final  # every final metric
    assert check_items_reproduce(mlflow_client, run, "items/baseline", prefix="baseline/") == final


def test_summary_prints_the_change_from_the_baseline_and_compare_shows_it(cli, store):
    # the former spelling of evaluators=[ir]
    out = cli(
        *IR_ON_PAIRS, "evaluator=none", "evaluators=[ir]", "optimized_metric=ir-dev_cosine_ndcg@10", in_process=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.strip().startswith("ir-test_cosine_ndcg@10"))
    assert "from baseline" in line
    table = cli("--tracking-uri", store["uri"], "--format", "csv", module="pipeline.compare", in_process=True)
    assert table.returncode == 0, table.stderr[-2000:]
    header = table.stdout.splitlines()[0].split(",")
    assert header[4:6] == ["ir-dev_cosine_ndcg_at_10", "ir-dev_cosine_ndcg_at_10 delta"], header


def test_an_optimized_metric_no_evaluator_logs_is_one_line_and_no_run(cli, mlflow_client):
    out = cli(*SMOKE_IR, "optimized_metric=ir-dev_cosine_ndcg@5", in_process=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "optimized_metric='ir-dev_cosine_ndcg@5'" in out.stderr and "ir-dev_cosine_ndcg@10" in out.stderr
    assert all_runs(mlflow_client) == []


def test_mine_stage_trains_on_mined_triplets_logs_them_and_reuses_them(run_job, mlflow_client, tmp_path):
    from datasets import load_from_disk

    mine = ("debug=smoke", "stages=[load,mine,train,evaluate]", f"mine.cache_dir={tmp_path / 'mined'}")
    first = mlflow_client.get_run(run_job(*mine).run_id)
    assert first.info.status == "FINISHED" and first.data.tags["mine.cache"] == "miss"
    folder = first.data.tags["mine.folder"]
    mined = load_from_disk(folder)
    assert mined.column_names == ["anchor", "positive", "negative"] and len(mined) > 0
    assert all(row["negative"] != row["positive"] for row in mined)  # a negative is never the row's own positive
    inputs = {d.dataset.name: d for d in first.inputs.dataset_inputs}
    assert [t.value for t in inputs["example-mined"].tags if t.key == "mlflow.data.context"] == ["training"]
    second = mlflow_client.get_run(run_job(*mine).run_id)
    assert second.data.tags["mine.cache"] == "hit" and second.data.tags["mine.folder"] == folder
    again = {d.dataset.name: d for d in second.inputs.dataset_inputs}
    assert again["example-mined"].dataset.digest == inputs["example-mined"].dataset.digest
    # another option, another fingerprint: mined afresh
    third = mlflow_client.get_run(run_job(*mine, "mine.sampling_strategy=random").run_id)
    assert third.data.tags["mine.cache"] == "miss" and third.data.tags["mine.folder"] != folder


def test_a_mined_set_that_makes_no_batch_fails_the_run_in_one_line(cli, mlflow_client, tmp_path):
    """The 16 smoke pairs mine fewer triplets (4 here): no full batch of 16, though the check before mining
    saw 16 rows. A run that trained no step is FAILED with the reason, never FINISHED with the starting model."""
    out = cli("debug=smoke", "stages=[load,mine,train,evaluate]", f"mine.cache_dir={tmp_path / 'mined'}",
              "training.per_device_train_batch_size=16", "+training.dataloader_drop_last=true", in_process=True)  # fmt: skip
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert len(errors) == 1 and re.fullmatch(
        r"error: training ran no step: ([0-9]|1[0-5]) train rows on 1 rank\(s\) made no full batch of "
        r"training\.per_device_train_batch_size=16: lower the batch size, or train on more rows\.",
        errors[0],
    ), errors
    (run,) = all_runs(mlflow_client)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"] == f"PipelineError: {errors[0][7:]}"


def test_mine_with_range_max_below_num_negatives_is_one_line_and_no_run(cli, mlflow_client):
    out = cli(
        "debug=smoke", "stages=[load,mine,train,evaluate]", "mine.range_max=2", "mine.num_negatives=3", in_process=True
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "mine.range_max=2" in out.stderr and "mine.num_negatives=3" in out.stderr
    assert all_runs(mlflow_client) == []


def test_a_corpus_file_with_repeated_ids_is_one_line_and_no_run(cli, mlflow_client, tmp_path):
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("id,text\nd1,one\nd2,two\nd1,three\n")
    out = cli("debug=smoke", "evaluator=ir", f"+data.corpus={corpus}", "stages=[load,evaluate]", in_process=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{corpus}: row 3, id 'd1' appears 2 times" in out.stderr
    assert all_runs(mlflow_client) == []
