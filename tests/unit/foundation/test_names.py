"""The names a video id is stored and written under, pinned: existing stores find their
videos by these keys and ``anomaly report`` its CSVs by these names, so each must stay the
same byte for byte (store keys: docs/store.md; output names: eval's and predict's files)."""

from __future__ import annotations

import pytest

from anomalyclip.names import OUTPUT_MAX, OUTPUT_SAFE, percent_decode, percent_encode, safe_name
from anomalyclip.store.records import video_id_of, video_key

CJK = "日本/" + "中" * 30  # a part of 270 bytes once encoded
ZHONG = "%E4%B8%AD"
E_ACUTE = "%C3%A9"

# id -> (store key, output name)
PINNED = {
    "Abuse/Abuse028_x264": ("Abuse%2FAbuse028_x264", "Abuse/Abuse028_x264"),
    "v=38GQ9L2meyE__#1_label_B2-0-0, Bad Boys (1995) #3": (
        "v=38GQ9L2meyE__%231_label_B2-0-0, Bad Boys (1995) %233",
        "v=38GQ9L2meyE__#1_label_B2-0-0,%20Bad%20Boys%20(1995)%20#3",
    ),
    "a b%c~d": ("a b%25c~d", "a%20b%25c%7Ed"),
    ".hidden/x": (".hidden%2Fx", "%2Ehidden/x"),
    "__init": ("%5F_init", "__init"),
    "caf\udce9": ("caf%E9", "caf%E9"),  # a file name that is not UTF-8 keeps its byte
    CJK: (
        "%E6%97%A5%E6%9C%AC%2F" + ZHONG * 17 + "%E4!87884a660462e13e0cd9",
        "%E6%97%A5%E6%9C%AC/" + ZHONG * 20 + "~537e06b22aa38ed6",
    ),
    "x" * 250: ("x" * 179 + "!086d4a1c293bde318dc1", "x" * 180 + "~086d4a1c293bde31"),
    "é" * 120: (E_ACUTE * 29 + "%C3!5fdddb561e39aff16678", E_ACUTE * 30 + "~bb658d82692ba343"),
}


@pytest.mark.parametrize("video_id", PINNED)
def test_store_keys_and_output_names_are_the_ones_on_disk(video_id):
    key, name = PINNED[video_id]
    assert video_key(video_id) == key and len(key) <= 200
    assert safe_name(video_id) == name
    if "!" not in key:  # an unbounded key gives its id back
        assert video_id_of(key) == video_id
    if "~" not in name[-17:]:  # so does an output name that was not cut
        assert percent_decode(name) == video_id


@pytest.mark.parametrize("video_id", ["x" * 250, CJK, "é" * 120, "clip~2", "a~b/c~d"])
def test_a_tilde_in_an_output_name_is_only_ever_a_mark(video_id):
    """An id's own '~' is written %7E, so the '~' that ends a cut name before its hash (or
    predict's ``name~2``) cannot come from an id: no id gets the name of a cut one."""
    name = safe_name(video_id)
    cut = sum(len(percent_encode(p, OUTPUT_SAFE)) > OUTPUT_MAX for p in video_id.split("/"))
    assert name.count("~") == cut
    assert safe_name(name) != name or "~" not in name  # a cut name, taken as an id, moves
