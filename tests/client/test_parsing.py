"""The client's own rules, without a server: parameters, times, names of downloads, the
credentials file."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import pytest

from imageflow_client.cli import UsageError, parse_param, parse_since
from imageflow_client.config import Credentials, credentials_load, credentials_save
from imageflow_client.downloads import plan
from imageflow_client.uploads import collect


def test_a_param_value_is_json_when_it_parses_as_json_and_text_otherwise():
    assert parse_param("resize.width=480") == ("resize", "width", 480)
    assert parse_param("resize.keep_aspect=false") == ("resize", "keep_aspect", False)
    assert parse_param('board.background="#000000"') == ("board", "background", "#000000")
    assert parse_param("board.background=#000000") == ("board", "background", "#000000")
    assert parse_param("crop.box=a=b") == ("crop", "box", "a=b")  # only the first = splits
    for bad in ("width=480", "resize.width", ".width=1", "resize.=1"):
        with pytest.raises(UsageError):
            parse_param(bad)


def test_since_takes_a_duration_before_now_or_an_iso_date_time():
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert parse_since("1d", now=now) == "2026-11-30T12:00:00Z"
    assert parse_since("90m", now=now) == "2026-12-01T10:30:00Z"
    assert parse_since("2w", now=now) == "2026-11-17T12:00:00Z"
    assert parse_since("2026-11-30T08:00:00+02:00", now=now) == "2026-11-30T06:00:00Z"
    assert parse_since("2026-11-30", now=now) == "2026-11-30T00:00:00Z"
    with pytest.raises(UsageError):
        parse_since("yesterday", now=now)


def test_credentials_are_written_readable_by_the_user_alone(tmp_path, monkeypatch):
    directory = tmp_path / "cfg"
    monkeypatch.setenv("IMAGEFLOW_CONFIG_DIR", str(directory))
    monkeypatch.delenv("IMAGEFLOW_TOKEN", raising=False)
    monkeypatch.delenv("IMAGEFLOW_URL", raising=False)
    path = credentials_save(Credentials(url="http://example.test:8000/", token="secret", username="ann"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in directory.iterdir()] == ["credentials.json"]  # no temporary left
    loaded = credentials_load()
    assert (loaded.url, loaded.token, loaded.username) == ("http://example.test:8000", "secret", "ann")
    # a second server keeps the first one's token, and becomes the default
    credentials_save(Credentials(url="https://prod.test", token="other", username="bob"))
    assert (credentials_load().url, credentials_load().token) == ("https://prod.test", "other")
    assert credentials_load("http://example.test:8000").token == "secret"
    # a token goes to the server that issued it only
    assert credentials_load("http://elsewhere.test").token is None
    monkeypatch.setenv("IMAGEFLOW_TOKEN", "from-env")
    assert credentials_load().token == "from-env"


def test_a_folder_gives_its_images_recursively_in_a_stable_order(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("b/c/z.JPG", "b/a.png", "top.heic", "notes.txt", ".dot.jpg", ".hidden/x.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in collect([str(tmp_path)])] == ["top.heic", "b/a.png",
                                                                                       "b/c/z.JPG"]
    # a file named on the command line is sent whatever its suffix, and once
    assert [p.name for p in collect([str(tmp_path / "notes.txt"), str(tmp_path / "notes.txt")])] == ["notes.txt"]


def test_downloads_are_named_after_their_inputs_and_a_merge_after_its_node():
    execution = {"outputs_by_input": {"in1": {"gray": ["g1"], "board": ["b"]}, "in2": {"gray": ["g2"], "board": ["b"]},
                                      "in3": {"gray": ["g3"]}}}
    files = {"g1": {"original_name": "IMG_1-resize-gray.png", "mime_type": "image/png"},
             "g2": {"original_name": "x-gray.jpg", "mime_type": "image/jpeg"},
             "g3": {"original_name": "", "mime_type": "image/webp"},
             "b": {"original_name": "IMG_1-board.jpg", "mime_type": "image/jpeg"}}
    inputs = {"in1": {"original_name": "IMG_1.jpg"}, "in2": {"original_name": "IMG_2.jpeg"},
              "in3": {"original_name": "IMG_1.tif"}}
    assert [p.name for p in plan(execution, files, inputs, {"gray": ["g1", "g2", "g3"]})] == [
        "IMG_1.png", "IMG_2.jpg", "IMG_1.webp"]
    assert [p.name for p in plan(execution, files, inputs, {"board": ["b"]})] == ["board.jpg"]
    # two nodes: the node is in the name; a name taken already gets a number
    files["g3"]["mime_type"] = "image/png"
    assert [p.name for p in plan(execution, files, inputs, {"gray": ["g1", "g3"], "board": ["b"]})] == [
        "IMG_1-gray.png", "IMG_1-gray-2.png", "board.jpg"]


def test_the_watched_state_drops_events_seen_already_and_never_lowers_item_counts():
    from imageflow_client.watch import RunState

    def items(completed, failed=0, cached=0):
        return {"total": 4, "completed": completed, "failed": failed, "skipped": 0, "cached": cached}

    run = RunState("r")
    assert run.apply({"type": "snapshot", "seq": 5, "execution_status": "running", "final": False,
                      "steps": [{"node_id": "resize", "status": "running", "items": items(2)},
                                {"node_id": "board", "status": "pending", "items": None}]})
    # an event at or below the snapshot's seq is already in it
    assert not run.apply({"type": "step_items", "seq": 5, "node_id": "resize", "items": items(1)})
    # a later event with older counts (the snapshot read the database) keeps the higher ones
    assert run.apply({"type": "step_items", "seq": 6, "node_id": "resize", "items": items(1, failed=1)})
    assert run.steps["resize"].items == items(2, failed=1)
    assert run.steps["resize"].summary() == "running, 2/4 items (1 failed)"
    assert run.apply({"type": "step", "seq": 7, "node_id": "board", "status": "completed",
                      "execution_status": "running"})
    assert run.apply({"type": "execution", "seq": 8, "status": "failed", "execution_status": "failed", "final": True})
    assert (run.status, run.final, run.steps["board"].summary()) == ("failed", True, "completed")
    # a reconnection's snapshot moves nothing back
    run.apply({"type": "snapshot", "seq": 8, "execution_status": "failed", "final": True,
               "steps": [{"node_id": "resize", "status": "failed", "items": items(2, failed=1)}]})
    assert run.seq == 8 and run.steps["resize"].items == items(2, failed=1)
