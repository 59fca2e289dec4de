"""The leakage audit (``pipeline.stages.leakage``) on small crafted splits, and on STSb as shipped.

Crafted rows are built from distinct words, so only the planted rows can match; each planted exact
duplicate differs from its train row in case, punctuation, spacing or Unicode form (and, for scored pairs,
order), each planted near duplicate by one word of one text.
"""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest
from datasets import Dataset

from pipeline import PipelineError
from pipeline.stages import leakage, load
from pipeline.stages.leakage import Mode, Settings
from pipeline.stages.spec import read_spec
from pipeline.stages.splits import LoadedData, Split
from tests.conftest import SHARED_DATA, compose_config

WORDS = [f"w{i:03d}" for i in range(2000)]


def sentence(i: int, length: int = 9) -> str:
    """A sentence of ``length`` words no other sentence shares: ``w(length*i)`` .. ."""
    return " ".join(WORDS[length * i : length * i + length]).capitalize() + "."


def pairs(rows: list[tuple[str, str]], scored: bool) -> Split:
    columns = ["sentence1", "sentence2"] if scored else ["anchor", "positive"]
    data = {columns[0]: [a for a, _ in rows], columns[1]: [b for _, b in rows]}
    if scored:
        data["score"] = [1.0] * len(rows)
    return Split(Dataset.from_dict(data), "crafted", "f" * 16)


def one_word_changed(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "different"
    return " ".join(words)


# 40 train pairs; the split: 3 exact copies (altered in form), 2 near (one word changed), 5 unrelated.
TRAIN = [(sentence(2 * i), sentence(2 * i + 1)) for i in range(40)]
EXACT = [
    (TRAIN[0][0].upper(), TRAIN[0][1]),
    (TRAIN[1][1].replace(".", " !"), "  " + TRAIN[1][0]),  # swapped: the same scored pair
    (TRAIN[2][0].replace("w", "\uff57"), TRAIN[2][1]),  # fullwidth letters: the same under NFKC
]
NEAR = [(one_word_changed(TRAIN[3][0]), TRAIN[3][1]), (TRAIN[4][0], one_word_changed(TRAIN[4][1]))]
OTHER = [(sentence(100 + 2 * i), sentence(101 + 2 * i)) for i in range(5)]


DEFAULT = 0.6  # conf/config.yaml's data.leakage_threshold


def run(split_rows, scored=True, mode=Mode.WARN, train=TRAIN):
    return leakage.audit({"train": pairs(train, False)}, {"test": pairs(split_rows, scored)}, Settings(mode, DEFAULT))


@pytest.fixture(params=["one pass", "blocks"])
def reading(request, monkeypatch):
    """The train rows read in one pass (a set within SAMPLE rows), or sampled then read in blocks of 7
    rows and sieved by hash (what a train set of over SAMPLE rows takes)."""
    if request.param == "blocks":
        monkeypatch.setattr(leakage, "SAMPLE", 10)
        monkeypatch.setattr(leakage, "BLOCK", 7)


def test_planted_exact_and_near_rows_are_found_and_nothing_else(reading):
    found, train = run(EXACT + NEAR + OTHER)
    assert found.counts == {"test": {"rows_exact": 3, "rows_near": 2, "texts": 5}}
    matches = found.matches["test"]
    assert set(matches.loc[matches.kind == "exact", "train_row"]) == {0, 1, 2}
    near = matches[matches.kind == "near"]
    assert list(near.train_row) == [3, 4] and list(near.split_row) == [3, 4]
    # 9-word texts: one word changed takes 3 of the row's 34 shingles out and puts 3 in: 31 / 37
    assert near.jaccard.tolist() == pytest.approx([31 / 37, 31 / 37])
    assert not matches.split_row.isin(range(5, 10)).any()  # the unrelated rows match nothing
    assert found.dropped is None and train["train"].dataset.num_rows == 40
    assert found.metrics()["leakage/test_rows_exact"] == 3.0 and "leakage/train_rows_dropped" not in found.metrics()


def test_pairs_without_a_score_match_in_their_own_order_only():
    swapped = [(b, a) for a, b in TRAIN[:3]]
    found, _ = run(swapped + [TRAIN[5]], scored=False)
    assert found.counts["test"]["rows_exact"] == 1  # TRAIN[5]; the swapped ones share texts, not rows
    assert found.counts["test"]["rows_near"] == 0 and found.counts["test"]["texts"] == 4


def test_the_threshold_decides_near(reading):
    split = pairs(NEAR, scored=True)
    strict = leakage.audit({"train": pairs(TRAIN, False)}, {"test": split}, Settings(Mode.WARN, 0.9))[0]
    assert strict.counts["test"]["rows_near"] == 0


def test_drop_trains_without_the_leaking_rows():
    found, train = run(EXACT + NEAR + OTHER, mode=Mode.DROP)
    kept = train["train"]
    assert found.dropped == 5 and found.metrics()["leakage/train_rows_dropped"] == 5.0
    assert kept.dataset.num_rows == 35 and kept.fingerprint != "f" * 16
    again, _ = leakage.audit({"train": kept}, {"test": pairs(EXACT + NEAR + OTHER, True)}, Settings(Mode.WARN, DEFAULT))
    assert again.counts["test"]["rows_exact"] == 0 and again.counts["test"]["rows_near"] == 0


def test_drop_keeps_a_dropped_rows_texts_out_of_the_mined_candidates():
    """``mine.corpus=split``: the candidates are the train file's positives; a dropped row's positive is
    not mined as another row's negative (the load stage's ``audited``, as ``load_data`` runs it)."""
    candidates = [b for _, b in TRAIN] + ["an extra candidate"]
    loaded = LoadedData(
        train=pairs(TRAIN, False), eval_splits={"test": pairs(EXACT + NEAR, True)}, candidates=candidates
    )
    dropped = load.audited(loaded, Settings(Mode.DROP, DEFAULT))
    assert dropped.candidates == [b for _, b in TRAIN[5:]] + ["an extra candidate"]
    assert load.audited(loaded, Settings(Mode.WARN, DEFAULT)).candidates == candidates  # warn trains on all


def test_warn_audits_in_a_thread_the_job_waits_for_and_fail_refuses_at_once():
    loaded = LoadedData(train=pairs(TRAIN, False), eval_splits={"test": pairs(EXACT + NEAR + OTHER, True)})
    warned = load.audited(loaded, Settings(Mode.WARN, DEFAULT))
    assert isinstance(warned.leakage, leakage.Running) and warned.train is loaded.train
    assert copy.deepcopy(warned).leakage is warned.leakage  # the process cache's copies share the one audit
    assert leakage.found(warned.leakage).counts == {"test": {"rows_exact": 3, "rows_near": 2, "texts": 5}}
    with pytest.raises(PipelineError, match="data.leakage=fail"):  # before the job goes on: no run opens
        load.audited(loaded, Settings(Mode.FAIL, DEFAULT))
    unreadable = Split(Dataset.from_dict({"anchor": [[1], [2]], "positive": [[3], [4]]}), "crafted", "f" * 16)
    broken = load.audited(LoadedData(train=unreadable, eval_splits=loaded.eval_splits), Settings(Mode.WARN, DEFAULT))
    with pytest.raises(pa.ArrowNotImplementedError, match="Unsupported cast"):  # raised where the job waits
        leakage.found(broken.leakage)


def test_a_warn_audit_is_logged_once_at_the_first_step_end_after_its_thread_is_done(store, caplog):
    """Training never waits for warn's audit: the trainer callback logs it at the first step's end at
    which its thread is done, once; the job's own call after training then adds nothing."""
    import mlflow

    from pipeline.job import LeakageReport
    from pipeline.runtime.callbacks import WhenReady

    loaded = LoadedData(train=pairs(TRAIN, False), eval_splits={"test": pairs(EXACT + NEAR + OTHER, True)})
    running = load.audited(loaded, Settings(Mode.WARN, DEFAULT)).leakage
    report = LeakageReport(running, main_rank=True)
    hook = WhenReady(report.ready, report)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store["uri"])
    try:
        with mlflow.start_run() as run:
            running.result()  # its thread is done: the next step's end reports it
            assert report.ready() and not report.made
            for _ in range(3):
                hook.on_step_end(None, None, None)
            assert report.made
            report()  # after training: already made
    finally:
        mlflow.set_tracking_uri(previous)
    metrics = mlflow.MlflowClient(store["uri"]).get_run(run.info.run_id).data.metrics
    assert metrics["leakage/test_rows_exact"] == 3 and metrics["leakage/test_rows_near"] == 2
    assert len([r for r in caplog.records if r.getMessage().startswith("Leakage")]) == 1


def test_fail_refuses_in_one_line_and_off_does_nothing():
    with pytest.raises(PipelineError, match=r"data.leakage=fail: .*test: 3 exact, 2 near rows") as error:
        run(EXACT + NEAR, mode=Mode.FAIL)
    assert "\n" not in str(error.value)
    assert run(OTHER, mode=Mode.FAIL)[0].counts["test"]["rows_exact"] == 0  # nothing leaks: no refusal
    assert run(EXACT, mode=Mode.OFF) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.leakage=maybe", r"data.leakage='maybe': one of warn, drop, fail, off"),
        ("data.leakage_threshold=1.5", r"data.leakage_threshold=1.5: a number in \(0, 1\]"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key(override, message):
    with pytest.raises(PipelineError, match=message):
        read_spec(compose_config([override]))


def test_drop_is_part_of_the_data_cache_key():
    warn, drop = (read_spec(compose_config([f"data.leakage={mode}"])) for mode in ("warn", "drop"))
    assert load.data_key(warn) != load.data_key(drop)


@pytest.mark.realdata
def test_stsb_as_shipped():
    spec = read_spec(compose_config(["data=stsb", f"data.local_dir={SHARED_DATA / 'stsb'}", "data.leakage=drop"]))
    data = load.load_data(spec)
    assert data.leakage.counts == {
        "dev": {"rows_exact": 8, "rows_near": 104, "texts": 255},
        "test": {"rows_exact": 12, "rows_near": 91, "texts": 249},
    }
    assert data.leakage.dropped == 257 and len(data.train_dataset) == 5749 - 257


@pytest.mark.parametrize(
    "columns", [["anchor", "positive"], ["anchor", "positive", "negative"], ["sentence1", "sentence2", "score"]]
)
def test_a_smoke_sample_takes_other_rows_for_dev_and_test(columns):
    from pipeline.stages.smoke import smoke_split

    evaluated = {name: smoke_split(columns, name) for name in ("dev", "test")}
    found, _ = leakage.audit({"train": smoke_split(columns, "train")}, evaluated, Settings(Mode.WARN, DEFAULT))
    assert found.counts == {name: {"rows_exact": 0, "rows_near": 0, "texts": 0} for name in evaluated}


def test_words_read_from_bytes_are_the_normalised_words():
    """The byte reading (``wordhash.words``) against Arrow's normalisation then a split, on texts of
    ASCII punctuation, control characters, Unicode letters and compatibility forms."""
    import random

    import numpy as np
    import pyarrow as pa

    from pipeline.stages import wordhash

    pieces = list("abcXYZ019 .,;:!?'\"()[]-_/@#$%^&*+=<>|~`{}\\\t\n\r\f\v\x00\x1c") + [
        "é",
        "Ｗ",
        "ß",
        "İ",
        "\u00a0",
        "ﬁ",
    ]
    draw = random.Random(0)
    texts = ["".join(draw.choice(pieces) for _ in range(draw.randint(0, 30))) for _ in range(3000)] + [
        "",
        "A man, playing!",
    ]
    read, normalised = wordhash.words(pa.array(texts)), wordhash.normalise(pa.array(texts)).to_pylist()
    expected = [text.split(" ") if text else [] for text in normalised]
    flat = wordhash.words(pa.array([word for text in expected for word in text]), normalised=True)
    order = np.argsort(read.text, kind="stable")
    assert read.text[order].tolist() == [i for i, text in enumerate(expected) for _ in text]
    assert (read.hashes[order] == flat.hashes).all()
    again = wordhash.words(pa.array(normalised), normalised=True).text_hashes
    assert (read.text_hashes == again).all()  # the same hash for the same text, read either way
