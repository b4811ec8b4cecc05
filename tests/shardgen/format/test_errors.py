"""The one error family and its one exit mapping (`shardgen.format.errors.report`), which `shardgen`,
`models.train` and `models.evaluate` all call."""

import pytest

import loaders
import models.errors
import shardgen.errors
from shardgen.format.errors import HANDLED, DataError, FormatError, UserError, error_line, exit_code, report


def test_every_kind_of_bad_data_and_bad_input_is_one_family():
    for bad_data in (FormatError, shardgen.errors.SchemaError, loaders.LoaderError, loaders.DecodeError,
                     shardgen.errors.BadImage):
        assert issubclass(bad_data, DataError) and exit_code(bad_data("x")) == 2, bad_data
    for bad_input in (loaders.SourceError, loaders.StateError, shardgen.errors.EncoderLoadError,
                      models.errors.CheckpointError, models.errors.ShardSourceError):
        assert issubclass(bad_input, UserError) and exit_code(bad_input("x")) == 2, bad_input
    assert models.errors.UserError is UserError is shardgen.errors.UserError
    assert not issubclass(loaders.SourceError, ValueError)  # an `except ValueError` cannot take it for a bug
    assert exit_code(models.errors.TrainingInterrupted(3, None)) == 130 and exit_code(KeyboardInterrupt()) == 130
    assert exit_code(ValueError("a bug")) is None and exit_code(loaders.WorkerError("died")) is None


def test_report_prints_one_line_and_returns_the_code(capsys):
    assert report("train", loaders.LoaderError("s3://b/x.tar: 000000000042: bad\n  npy header")) == 2
    assert capsys.readouterr().err == "train: error: bad data: s3://b/x.tar: 000000000042: bad npy header\n"
    assert report("shardgen show", UserError("no such folder")) == 2
    assert capsys.readouterr().err == "shardgen show: error: no such folder\n"
    assert report("train", KeyboardInterrupt(), interrupted="interrupted; nothing saved") == 130
    assert capsys.readouterr().err == "train: interrupted; nothing saved\n"
    assert error_line("train", models.errors.TrainingInterrupted(5, "r/latest.pt", resume="r")) == \
        "train: interrupted at step 5; checkpoint r/latest.pt; resume with --resume r"


def test_a_bug_is_re_raised_with_its_traceback(capsys):
    with pytest.raises(ZeroDivisionError):
        try:
            1 / 0
        except ZeroDivisionError as exc:
            report("evaluate", exc)
    assert capsys.readouterr().err == ""
    assert not issubclass(ZeroDivisionError, HANDLED)
