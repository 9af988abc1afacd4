"""The stages' records (gloro.bench.results), the report's contract: each one written is read back unchanged,
and a result file the report cannot use gets an error naming the file and the stage to rerun."""

import dataclasses
import json

import pytest

from gloro.bench import results
from gloro.bench.results import CertifyResult, StageResult, StageResultError

RECORDS = sorted(
    (
        cls
        for cls in vars(results).values()
        if isinstance(cls, type) and issubclass(cls, StageResult) and cls is not StageResult
    ),
    key=lambda cls: cls.__name__,
)


def filled(record: type[StageResult]) -> StageResult:
    """An instance with every field set to a value of its kind (required and optional)."""
    values = {}
    for index, item in enumerate(dataclasses.fields(record)):
        kind = str(item.type)
        values[item.name] = (
            {"field": index}
            if "dict" in kind
            else [index]
            if "list" in kind
            else f"text {index}"
            if "str" in kind
            else index + 0.5
        )
    return record(**values)


def test_every_stage_has_a_record():
    assert {cls.stage for cls in RECORDS} == {"train", "time_steps", "certify", "attack", "bounds"}


@pytest.mark.parametrize("record", RECORDS, ids=lambda cls: cls.__name__)
def test_a_record_written_is_read_back_unchanged(record, tmp_path):
    original = filled(record)
    original.write(tmp_path / "result.json")
    assert record.read(tmp_path / "result.json") == original


def test_the_global_report_keeps_the_files_key_and_an_unset_checkpoint_epsilon_is_left_out():
    data = filled(CertifyResult).to_json()
    assert "global" in data and "global_report" not in data
    unset = dataclasses.replace(filled(CertifyResult), checkpoint_eval_epsilon=None).to_json()
    assert "checkpoint_eval_epsilon" not in unset and "checkpoint_eval_epsilon" in data


def test_keys_a_record_does_not_know_are_ignored(tmp_path):
    data = {**filled(CertifyResult).to_json(), "written_by_a_newer_stage": 1}
    (tmp_path / "certify.json").write_text(json.dumps(data))
    assert CertifyResult.read(tmp_path / "certify.json") == filled(CertifyResult)


@pytest.mark.parametrize("record", RECORDS, ids=lambda cls: cls.__name__)
def test_a_file_without_a_required_key_names_the_file_the_key_and_the_stage(record, tmp_path):
    required = [
        f
        for f in dataclasses.fields(record)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    key = required[-1].metadata.get("key", required[-1].name)
    data = filled(record).to_json()
    del data[key]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(data))
    with pytest.raises(StageResultError, match=f"{path}.* lacks {key}.*rerun the {record.stage} stage"):
        record.read(path)


@pytest.mark.parametrize(("text", "message"), [('{"vra": 0.5', "is not a JSON file"), ("[1, 2]", "a JSON list")])
def test_a_truncated_or_foreign_file_says_so(tmp_path, text, message):
    path = tmp_path / "certify.json"
    path.write_text(text)
    with pytest.raises(StageResultError, match=message):
        CertifyResult.read(path)


def test_a_missing_file_says_which_stage_to_run(tmp_path):
    with pytest.raises(StageResultError, match="no certify result at .*run the certify stage first"):
        CertifyResult.read(tmp_path / "certify.json")
