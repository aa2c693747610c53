#!/usr/bin/env python3
"""Writes tests/fixtures/tfevents/expected.tfevents with TensorBoard's own writer, the
bytes tests/test_formats.c (formats/tfevents_matches_tensorboard) expects our
tl_tfevents writer to produce for the same events.  Run from the repo root:

    pip install tensorboard
    python3 scripts/gen_tfevents_fixture.py
"""
import os

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

OUT = "tests/fixtures/tfevents/expected.tfevents"
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "wb") as f:
    w = RecordWriter(f)
    w.write(event_pb2.Event(wall_time=1000.5, file_version="brain.Event:2").SerializeToString())
    for tag, step, wall, value in [("train/loss", 3, 1001.25, 2.5), ("train/lr", 123456789, 1002.0, 4e-4),
                                   ("val/loss", 0, 1003.0, -1.75)]:
        v = summary_pb2.Summary.Value(tag=tag, simple_value=value)
        w.write(event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=[v])).SerializeToString())
    log = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    w.write(event_pb2.Event(wall_time=1004.0, step=2, session_log=log).SerializeToString())
print("wrote", OUT, os.path.getsize(OUT), "bytes")
