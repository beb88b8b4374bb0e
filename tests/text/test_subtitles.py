"""SRT / JSON output of timed segments."""

from __future__ import annotations

import json

import numpy as np
import pytest

from funasr_jax.decode.align import TimedToken
from funasr_jax.text.subtitles import TimedSegment, parse_srt, srt_timestamp, to_json_records, to_srt


def test_timestamps():
    assert srt_timestamp(0) == "00:00:00,000"
    assert srt_timestamp(3723004.4) == "01:02:03,004"
    assert srt_timestamp(59999.6) == "00:01:00,000"
    assert srt_timestamp(0.5) == "00:00:00,001"
    assert srt_timestamp(86_399_999) == "23:59:59,999"
    assert srt_timestamp(360_000_000) == "100:00:00,000"
    with pytest.raises(ValueError, match="negative"):
        srt_timestamp(-1)
    with pytest.raises(ValueError, match="finite"):
        srt_timestamp(float("nan"))


def test_srt_round_trip_skips_empty_cues():
    segs = [TimedSegment(500, 2100.4, "你好 世界"), TimedSegment(2500, 2600, "  "), TimedSegment(3000, 4200, "hello\nthere"),
            TimedSegment(3000, 3723004.4, "x")]
    text = to_srt(segs)
    assert text == ("1\n00:00:00,500 --> 00:00:02,100\n你好 世界\n\n"
                    "2\n00:00:03,000 --> 00:00:04,200\nhello there\n\n"
                    "3\n00:00:03,000 --> 01:02:03,004\nx\n")
    back = parse_srt(text)
    assert [(s.start_ms, s.end_ms, s.text) for s in back] == [(500, 2100, "你好 世界"), (3000, 4200, "hello there"),
                                                            (3000, 3723004, "x")]
    assert to_srt([]) == "" and parse_srt("") == []
    assert to_srt([TimedSegment(0, 0, "")]) == ""


def test_srt_order_and_bad_cues():
    with pytest.raises(ValueError, match="segment 0 ends"):
        to_srt([TimedSegment(10, 5, "x")])
    with pytest.raises(ValueError, match="segment 1 starts"):
        to_srt([TimedSegment(100, 200, "a"), TimedSegment(50, 300, "b")])
    with pytest.raises(ValueError, match="cue 1"):
        parse_srt("1\n00:00:01 --> 00:00:02\nx\n")
    with pytest.raises(ValueError, match="cue 2"):
        parse_srt("1\n00:00:01,000 --> 00:00:02,000\nx\n\n3\n00:00:03,000 --> 00:00:04,000\ny\n")
    with pytest.raises(ValueError, match="cue 1"):
        parse_srt("1\n00:00:01,000 --> 00:00:02,000\n")
    with pytest.raises(ValueError, match="cue 1 ends before"):
        parse_srt("1\n00:00:02,000 --> 00:00:01,000\nx\n")


def test_json_records():
    seg = TimedSegment(0.04, 900.06, "ok", (TimedToken("ok", 100.04, 800.0),))
    assert to_json_records([seg]) == [{"start_ms": 0.0, "end_ms": 900.1, "text": "ok",
                                       "words": [{"text": "ok", "start_ms": 100.0, "end_ms": 800.0}]}]
    recs = to_json_records([TimedSegment(np.float32(1.25), np.float32(2.5), "a")])
    assert recs == [{"start_ms": 1.2, "end_ms": 2.5, "text": "a", "words": []}]
    assert json.loads(json.dumps(recs)) == recs
    assert to_json_records([]) == []
