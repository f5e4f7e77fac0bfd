"""List files of videos that name files they should not: an error shows the entry, never
the contents of a file that was read as a list.

A list named on the command line with a list suffix quotes its own failing line (the user
wrote it); a file reached through a shared list, or a small text file without a list suffix,
may be a credentials file, whose first line used to come back in the error.
"""

from __future__ import annotations

import pytest

from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import expand_inputs

SECRET = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def private(tmp_path):
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "creds").write_text(f"{SECRET}\n")
    (folder / "creds.txt").write_text(f"{SECRET}\n")
    (tmp_path / "shared").mkdir()
    return tmp_path


@pytest.mark.parametrize("target", ["../private/creds", "../private/creds.txt"])
def test_a_shared_list_never_shows_the_file_it_names(private, target):
    shared = private / "shared" / "cams.txt"
    shared.write_text(f"# the gate cameras\n{target}\n")
    try:
        found = expand_inputs([shared])
    except AnomalyError as exc:
        assert SECRET not in str(exc) and "wJalr" not in str(exc)
        assert str(exc) == (
            f"{shared.parent / target}:1: names no video file, frame folder, glob or URL "
            "(read as a list of videos; its lines are not shown)"
        )
    else:  # a file without a list suffix named by a list is a video, for the decoder to try
        assert target == "../private/creds" and found == [shared.parent / target]


def test_a_text_file_named_on_the_command_line_is_not_quoted(private):
    with pytest.raises(AnomalyError) as found:
        expand_inputs([private / "private" / "creds"])
    assert SECRET not in str(found.value)
    assert str(found.value).startswith(f"{private / 'private' / 'creds'}:1: names no video")


def test_a_list_the_user_names_still_quotes_its_own_line(private):
    listing = private / "shared" / "cams.txt"
    listing.write_text("gate/cam1.mp4\n")
    with pytest.raises(AnomalyError) as found:
        expand_inputs([listing])
    assert str(found.value) == f"{listing}:1: gate/cam1.mp4: no such video file or frame folder"
