"""Row transforms applied to a training split after its columns are renamed.

Each takes a ``datasets.Dataset`` (plus keyword options from the data config's
``train_transform``) and returns a new one in the layout the loss trains on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from datasets import Dataset

from pipeline import PipelineError


def positive_pairs(
    dataset: Dataset,
    min_score: float = 4.0,
    sentence1: str = "sentence1",
    sentence2: str = "sentence2",
    score: str = "score",
) -> Dataset:
    """Scored pairs -> (anchor, positive): keep pairs scored at least ``min_score``.

    Used to train MultipleNegativesRankingLoss on STS Benchmark (1,406 train pairs at >= 4.0).
    """
    kept = dataset.filter(lambda row: row[score] >= min_score)
    kept = kept.select_columns([sentence1, sentence2])
    return kept.rename_columns({sentence1: "anchor", sentence2: "positive"})


def nli_triplets(
    dataset: Dataset,
    premise: str = "premise",
    hypothesis: str = "hypothesis",
    label: str = "label",
    entailment: Sequence = ("entailment", 0),
    contradiction: Sequence = ("contradiction", 2),
    neutral: Sequence = ("neutral", 1),
    no_label: Sequence = ("-", -1),
) -> Dataset:
    """NLI pairs -> (anchor, positive, negative) triplets, the way AllNLI was built.

    Rows are grouped by premise; every entailment hypothesis of a premise is paired with every
    contradiction hypothesis of it. Neutral rows and rows without a gold label are dropped; any
    other label value is an error naming the row.
    """
    for column in (premise, hypothesis, label):
        if column not in dataset.column_names:
            raise PipelineError(
                f"nli_triplets needs columns {premise!r}, {hypothesis!r}, {label!r}; the data has "
                f"{dataset.column_names}: map them with data.columns.premise=..., "
                "data.columns.hypothesis=..., data.columns.label=..."
            )
    known = {str(v) for v in (*entailment, *contradiction, *neutral, *no_label)}
    positives: dict[str, list[str]] = defaultdict(list)
    negatives: dict[str, list[str]] = defaultdict(list)
    for index, row in enumerate(dataset.select_columns([premise, hypothesis, label])):
        value = str(row[label])
        if value not in known:
            raise PipelineError(
                f"row {index + 1}: label {row[label]!r} is not an NLI label; expected one of "
                f"{sorted(known)}. Fix the row, or list the value under data.train_transform "
                "(entailment / contradiction / neutral / no_label)."
            )
        if value in {str(v) for v in entailment}:
            positives[row[premise]].append(row[hypothesis])
        elif value in {str(v) for v in contradiction}:
            negatives[row[premise]].append(row[hypothesis])
    rows = {"anchor": [], "positive": [], "negative": []}
    for anchor, pos_list in positives.items():
        for pos in pos_list:
            for neg in negatives.get(anchor, []):
                rows["anchor"].append(anchor)
                rows["positive"].append(pos)
                rows["negative"].append(neg)
    if not rows["anchor"]:
        raise PipelineError(
            "nli_triplets made no triplet: no premise has both an entailment and a contradiction "
            "hypothesis. Check data.columns and the label values in data.train_transform."
        )
    return Dataset.from_dict(rows)


def judged_pairs(
    dataset: Dataset,
    negatives: str = "in_batch",
    max_negatives: int = 3,
    anchor: str = "anchor",
    positive: str = "positive",
    label: str = "label",
) -> Dataset:
    """Labelled (query, text, label 1/0) rows -> training pairs, the TREC QA way.

    ``negatives=in_batch``: (anchor, positive) for every row labelled 1 (MNRL takes its negatives from
    the batch). ``negatives=labelled``: (anchor, positive, negative) rows, each positive paired with up
    to ``max_negatives`` of its query's rows labelled 0, in file order (a query without any keeps its
    positives out).
    """
    if negatives not in ("in_batch", "labelled"):
        raise PipelineError(f"data.negatives={negatives!r}: use in_batch or labelled (the rows labelled 0).")
    for column in (anchor, positive, label):
        if column not in dataset.column_names:
            raise PipelineError(
                f"judged_pairs needs columns {anchor!r}, {positive!r}, {label!r}; the data has "
                f"{dataset.column_names}: map them with data.columns.anchor=..., data.columns.positive=..."
            )
    judged: dict[str, dict[bool, list[str]]] = defaultdict(lambda: {True: [], False: []})
    for row in dataset.select_columns([anchor, positive, label]):
        judged[row[anchor]][float(row[label]) == 1].append(row[positive])
    rows: dict[str, list[str]] = {"anchor": [], "positive": []} | ({"negative": []} if negatives == "labelled" else {})
    for query, texts in judged.items():
        for text in texts[True]:
            pairs = [None] if negatives == "in_batch" else texts[False][:max_negatives]
            for negative in pairs:
                rows["anchor"].append(query)
                rows["positive"].append(text)
                if negative is not None:
                    rows["negative"].append(negative)
    if not rows["anchor"]:
        raise PipelineError("judged_pairs made no training row: no row is labelled 1 (or no positive has a negative).")
    return Dataset.from_dict(rows)
