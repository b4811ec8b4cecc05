"""What may be printed (`shardgen.format.redact`): no URL's password in any message of the error family or in the
one line `report` prints; no control character from a name reaches the terminal."""

import pickle

import pytest

import loaders
from shardgen.format import has_secret, printable_name, redact, redact_fields
from shardgen.format.errors import DataError, UserError, error_line, report


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://AKIAKEY:wJal/K7MD+ENG@bucket/x", "s3://AKIAKEY:****@bucket/x"),  # AWS secrets hold raw '/'
    ("https://u:p@ss@host/x", "https://u:****@host/x"),  # and '@'
    ("http://a:b@h1/x,http://c:d@h2/y", "http://a:****@h1/x,http://c:****@h2/y"),
    ("https://registry/@types/x", "https://registry/@types/x"),
    ("https://h/a:b@c", "https://h/a:b@c"),  # a path's '@' is no password
])
def test_redact_hides_passwords_that_hold_slashes_and_at_signs(url, shown):
    assert redact(url) == shown
    assert has_secret(url) is (url != shown)


def test_every_message_of_the_family_is_redacted_when_made_and_stays_so_when_pickled():
    for cls in (UserError, DataError, loaders.SourceError, loaders.LoaderError):
        exc = cls("https://user:secret@host/shards/manifest.json: not found")
        assert "secret" not in str(exc) and "user:****@host" in str(exc), cls
        assert "secret" not in str(pickle.loads(pickle.dumps(exc)))


def test_report_hides_passwords_and_escapes_control_characters(capsys):
    class Bug(Exception):
        pass

    assert report("train", KeyboardInterrupt("stopped; s3://k:secret@b/x")) == 130
    assert "secret" not in capsys.readouterr().err
    line = error_line("shardgen verify", DataError("evil\x1b[2J\x1b[Hname.jpg: bad"))
    assert "\x1b" not in line and "evil\\x1b[2J\\x1b[Hname.jpg" in line


def test_a_name_quoted_in_a_message_of_the_family_is_escaped_when_made():
    """So a loader's skip warning (logged, not printed by `report`) cannot clear the screen either."""
    exc = loaders.LoaderError("s.tar: \x1b[2Jevil: corrupt\n  member")
    assert str(exc) == "s.tar: \\x1b[2Jevil: corrupt\n  member"  # lines kept for error_line to join


def test_printable_name_escapes_controls_and_keeps_the_rest():
    assert printable_name("a\x1b[31mb\u202ec\x7f") == "a\\x1b[31mb\\u202ec\\x7f"
    assert printable_name("café 猫 😀 x.jpg") == "café 猫 😀 x.jpg"


def test_redact_fields_cleans_a_nested_configuration():
    config = {"train_shards": "https://u:pw@h/s", "loader": {"urls": ["s3://k:pw@b/x"]}, "n": 3, "none": None}
    assert redact_fields(config) == {"train_shards": "https://u:****@h/s", "loader": {"urls": ["s3://k:****@b/x"]},
                                     "n": 3, "none": None}


def test_a_password_in_an_s3_url_is_refused_before_the_client_sees_it():
    with pytest.raises(UserError) as info:
        loaders.make_loader("s3://AKIAKEY:topsecret@bucket/shards", batch_size=2)
    assert "topsecret" not in str(info.value) and "AKIAKEY:****@bucket" in str(info.value)


def test_make_loader_never_names_the_password(tmp_path):
    from tests.helpers import free_port

    with pytest.raises(loaders.SourceError) as info:
        loaders.make_loader(f"http://user:topsecret@127.0.0.1:{free_port()}/shards", batch_size=2)
    assert "topsecret" not in str(info.value) and "user:****@127.0.0.1" in str(info.value)
