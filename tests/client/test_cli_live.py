"""`imageflow` against a live server (uvicorn, a real worker, the real services): the commands a
user types, their output and exit status, and what they did on the server."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from PIL import Image

from executions.demo import DEMO_PIPELINE_NAME, demo_load
from executions.models import PipelineExecution
from files.models import File
from tests.client.conftest import PASSWORD
from tests.factories import PipelineExecutionFactory, PipelineFactory, UserFactory

pytestmark = [pytest.mark.timeout(240)]

PHOTO_NAMES = ["Canon_40D.jpg", "Nikon_D70.jpg", "Pentax_K10D.jpg"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_id_of(out: str) -> str:
    return re.search(r"^run ([0-9a-f-]{36}) ", out, re.M).group(1)


def until_output(imageflow, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """The command, repeated until it prints something (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        status, out, err = imageflow(*args)
        if out.strip() or status != 0 or time.monotonic() > deadline:
            return status, out, err
        time.sleep(0.5)


# --- login ----------------------------------------------------------------------------------------

def test_login_stores_the_users_token_readable_by_the_user_alone(imageflow, server, user, cli_env):
    from rest_framework.authtoken.models import Token

    # when the user logs in with the password on stdin
    status, out, err = imageflow("login", "--url", server.url, "-u", user.username, "--password-stdin",
                                 stdin=PASSWORD + "\n")
    # then the token the server issued is stored, in a file and folder only the user can read
    assert status == 0, err
    path = cli_env / "credentials.json"
    stored = json.loads(path.read_text())
    assert stored == {"url": server.url, "servers": {server.url: {"token": Token.objects.get(user=user).key,
                                                                  "username": user.username}}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(cli_env.stat().st_mode) == 0o700
    # and a command after it is signed in with it, on that server only
    assert imageflow("pipelines", "list")[0] == 0
    status, out, err = imageflow("pipelines", "list", "--url", "http://127.0.0.1:9")
    assert status == 1 and "not signed in to http://127.0.0.1:9" in err
    # and logout revokes the token on the server and forgets it
    status, out, err = imageflow("logout")
    assert status == 0, err
    assert not Token.objects.filter(user=user).exists() and not path.exists()


def test_a_wrong_password_stores_nothing_and_exits_non_zero(imageflow, server, user, cli_env):
    status, out, err = imageflow("login", "--url", server.url, "-u", user.username, "--password-stdin",
                                 stdin="wrong\n")
    assert status == 1
    assert "Unable to log in" in err
    assert not (cli_env / "credentials.json").exists()
    # and a command without a token says so
    status, out, err = imageflow("runs", "list")
    assert status == 1 and "imageflow login" in err


# --- upload ---------------------------------------------------------------------------------------

def test_upload_sends_a_folder_recursively_and_again_skips_every_file_by_checksum(imageflow, signed_in, photo_folder):
    from tests.photos import PHOTOS

    photos = {name: PHOTOS / "camera" / name for name in PHOTO_NAMES}
    # when the folder is uploaded
    status, out, err = imageflow("upload", photo_folder, "--jobs", "3")
    # then its three photos are stored (the README is not sent), with their bytes' SHA-256
    assert status == 0, err
    rows = {f.original_name: f for f in File.objects.filter(created_by=signed_in)}
    assert set(rows) == set(PHOTO_NAMES)
    assert {name: rows[name].checksum for name in rows} == {name: sha256(path) for name, path in photos.items()}
    assert {name: rows[name].file_size for name in rows} == {name: path.stat().st_size for name, path in photos.items()}
    assert sorted(re.findall(r"^uploaded\s+\S+/(\w+\.jpg) -> ([0-9a-f-]{36})$", out, re.M)) == sorted(
        (name, str(rows[name].pk)) for name in PHOTO_NAMES)
    assert "3 uploaded, 0 skipped" in err
    assert re.search(r"upload 3/3 .*━", err)  # the bar, as drawn at its end (stderr is not a terminal)
    assert "README" not in out
    # when it is uploaded again, with the same bytes under one more name (in the test's tmp dir)
    (photo_folder / "copy-of-canon.jpg").write_bytes(photos["Canon_40D.jpg"].read_bytes())
    status, out, err = imageflow("upload", photo_folder, "--json")
    # then nothing is sent: every file is found by its checksum, the new name is the known file
    assert status == 0, err
    assert File.objects.filter(created_by=signed_in).count() == 3
    outcomes = {Path(row["path"]).name: (row["outcome"], row["id"]) for row in json.loads(out)}
    assert outcomes == {"Canon_40D.jpg": ("skipped", str(rows["Canon_40D.jpg"].pk)),
                        "copy-of-canon.jpg": ("duplicate", str(rows["Canon_40D.jpg"].pk)),
                        "Nikon_D70.jpg": ("skipped", str(rows["Nikon_D70.jpg"].pk)),
                        "Pentax_K10D.jpg": ("skipped", str(rows["Pentax_K10D.jpg"].pk))}
    assert "0 uploaded, 3 skipped (already stored), 1 duplicates, 0 failed" in err


def test_a_file_the_server_refuses_is_reported_and_the_exit_status_is_non_zero(imageflow, signed_in, tmp_path):
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"plain text, not a JPEG")
    status, out, err = imageflow("upload", bad)
    assert status == 1
    assert re.search(r"^failed\s+\S*not-an-image\.jpg: ", out, re.M)
    assert File.objects.filter(created_by=signed_in).count() == 0


# --- pipelines ------------------------------------------------------------------------------------

def test_pipelines_export_then_import_makes_the_same_pipeline(imageflow, signed_in, tmp_path):
    demo = demo_load(user=signed_in)["pipeline"]
    status, out, err = imageflow("pipelines", "list")
    assert status == 0 and f"{demo.pk}  v1  {DEMO_PIPELINE_NAME}" in out
    status, out, err = imageflow("pipelines", "show", DEMO_PIPELINE_NAME)
    assert status == 0, err
    assert re.search(r"^  board\s+side_by_side@1\.0\.0  gap=8  after gray, edges, sharpen$", out, re.M)
    exported = tmp_path / "demo.yaml"
    status, out, err = imageflow("pipelines", "export", str(demo.pk), "--format", "yaml", "-o", exported)
    assert status == 0, err
    assert "side_by_side" in exported.read_text()
    status, out, err = imageflow("pipelines", "import", exported)
    assert status == 0, err
    copy_id = re.search(r"^imported ([0-9a-f-]{36}) ", out).group(1)
    copy = type(demo).objects.get(pk=copy_id)
    assert copy.definition == demo.definition and copy.name == demo.name and copy.created_by == signed_in
    # two pipelines of that name now: a name no longer picks one
    status, out, err = imageflow("pipelines", "show", DEMO_PIPELINE_NAME)
    assert status == 1 and "2 pipelines are named" in err


# --- runs (a real worker) -------------------------------------------------------------------------

@pytest.mark.worker
def test_run_watch_follows_the_demo_pipeline_with_bars_and_download_names_outputs_after_inputs(
    imageflow, signed_in, photo_folder, cli_worker, tmp_path,
):
    demo_load(user=signed_in)
    # when the demo pipeline runs on the folder (uploaded by the run command) and is watched
    status, out, err = imageflow("run", DEMO_PIPELINE_NAME, "--input", photo_folder, "--param", "resize.width=200",
                                 "--watch", "--progress", "bars")
    # then it ends completed, exit status 0
    assert status == 0, out + err
    execution = PipelineExecution.objects.get(pk=run_id_of(out))
    assert execution.status == "completed"
    assert out.strip().splitlines()[-1] == f"completed {execution.pk}"
    assert execution.input_data["parameters"] == {"resize": {"width": 200}}
    assert "local inputs: 3 (3 uploaded, 0 already stored)" in err
    uploads = {f.original_name: str(f.pk) for f in File.objects.filter(created_by=signed_in, original_name__in=PHOTO_NAMES)}
    assert execution.input_data["inputs"] == [uploads[name] for name in PHOTO_NAMES]  # the folder's order
    # and the bars showed each step, the map steps with their three items
    for node in ("resize", "gray", "edges", "sharpen"):
        assert re.search(rf"{node}\s.*━.*\s3/3\s+completed, 3/3 items", err), (node, err)
    assert re.search(r"board\s.*━.*\s1/1\s+completed", err)
    assert re.search(r"run\s.*━.*\s5/5\s+completed", err)

    # and watching it after its end shows the final state at once
    status, out, err = imageflow("watch", execution.pk, "--progress", "lines")
    assert status == 0 and out == f"completed {execution.pk}\n"
    assert re.search(r"^sharpen: completed, 3/3 items$", err, re.M) and f"run {execution.pk}: completed" in err

    # when its outputs are downloaded
    status, out, err = imageflow("download", execution.pk, "--to", tmp_path / "out")
    # then the board (made from the three inputs) is named after its node, with its bytes
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["board.jpg"]
    board_id = execution.output_data["outputs"]["board"][0]
    assert sha256(tmp_path / "out" / "board.jpg") == File.objects.get(pk=board_id).checksum
    with Image.open(tmp_path / "out" / "board.jpg") as board:
        assert board.width == 3 * 3 * 200 + 8 * 8  # nine 200-px images, eight gaps of 8
    # and a node's outputs by input are named after the input each was made from
    status, out, err = imageflow("download", execution.pk, "--to", tmp_path / "sharp", "--node", "sharpen")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "sharp").iterdir()) == sorted(PHOTO_NAMES)
    for name in PHOTO_NAMES:
        with Image.open(tmp_path / "sharp" / name) as image, Image.open(photo_folder.rglob(name).__next__()) as source:
            assert image.width == 200 and source.width != 200
    # and downloading again fetches nothing that is there already
    status, out, err = imageflow("download", execution.pk, "--to", tmp_path / "sharp", "--node", "sharpen")
    assert status == 0 and out.count("unchanged") == 3


@pytest.mark.worker
def test_a_run_that_fails_exits_non_zero_with_the_error(imageflow, signed_in, photo_folder, cli_worker):
    from executions.catalogue import builtin_components_register

    builtin_components_register()
    pipeline = PipelineFactory(created_by=signed_in, name="crop-them", definition={"nodes": [
        {"id": "crop", "component": {"name": "crop", "version": "1.0.0"},
         "parameters": {"left": 0, "top": 0, "right": 10, "bottom": 10}}], "edges": []})
    # when the crop box is made larger than the photos
    status, out, err = imageflow("run", pipeline.pk, "-i", photo_folder / "Canon_40D.jpg", "-p", "crop.right=100000",
                                 "--watch")
    # then the run fails and the command says so with a non-zero status
    assert status == 1
    execution = PipelineExecution.objects.get(pk=run_id_of(out))
    assert execution.status == "failed"
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"failed {execution.pk}: node 'crop'") and "not inside" in last
    # (stderr is not a terminal: the progress is lines)
    assert re.search(r"^crop: failed$", err, re.M), err  # (one image: a plain step, no items)
    assert f"run {execution.pk}: failed" in err

    # and the run's log lines, and a search of the logs, show the failure (once shipped to the
    # search server, which the end of the run asks for)
    status, out, err = until_output(imageflow, "logs", execution.pk, "--level", "error")
    assert status == 0, err
    assert re.search(r"error\s+crop\s+.*crop box \(0, 0, 100000, 10\) is not inside", out), out
    assert "info" not in out
    status, out, err = until_output(imageflow, "logs", "search", "not inside", "--run", execution.pk, "--since", "1h")
    assert status == 0, err
    assert str(execution.pk) in out and "crop box" in out


# --- runs list ------------------------------------------------------------------------------------

def test_runs_list_filters_by_status_and_since(imageflow, signed_in):
    pipeline = PipelineFactory(created_by=signed_in, name="nightly")
    now = timezone.now()
    made = {}
    for label, status, age in [("recent_failed", "failed", timedelta(hours=2)),
                               ("old_failed", "failed", timedelta(days=3)),
                               ("recent_completed", "completed", timedelta(hours=1))]:
        execution = PipelineExecutionFactory(pipeline=pipeline, created_by=signed_in, status=status,
                                             error_message="disk full" if status == "failed" else None)
        PipelineExecution.objects.filter(pk=execution.pk).update(created_at=now - age)
        made[label] = str(execution.pk)
    PipelineExecutionFactory(status="failed")  # another user's: never listed

    status, out, err = imageflow("runs", "list", "--status", "failed", "--since", "1d")
    assert status == 0, err
    assert [line.split()[0] for line in out.splitlines()] == [made["recent_failed"]]
    assert "failed" in out and "nightly" in out and "disk full" in out
    status, out, err = imageflow("runs", "list", "--status", "failed,completed", "--since", "1d", "--json")
    assert [row["id"] for row in json.loads(out)] == [made["recent_completed"], made["recent_failed"]]
    status, out, err = imageflow("runs", "list", "--since", "yesterday")
    assert status == 2 and "duration" in err


def test_another_users_run_cannot_be_watched(imageflow, signed_in):
    other = PipelineExecutionFactory(pipeline=PipelineFactory(created_by=UserFactory()))
    status, out, err = imageflow("watch", other.pk)
    assert status == 1 and "no such run, or not yours" in err


# --- the installed command ------------------------------------------------------------------------

def test_the_installed_command_runs_without_django(server, signed_in, cli_env):
    import os
    import subprocess
    import sys

    from rest_framework.authtoken.models import Token

    env = {**os.environ, "IMAGEFLOW_CONFIG_DIR": str(cli_env)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    # the console script pip installed, signed in by the credentials file login wrote
    done = subprocess.run([str(Path(sys.executable).parent / "imageflow"), "runs", "list", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    # and once that token is revoked it is refused, while IMAGEFLOW_TOKEN overrides the file
    Token.objects.filter(user=signed_in).delete()
    done = subprocess.run([sys.executable, "-m", "imageflow_client", "runs", "list"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "imageflow login" in done.stderr
    fresh = Token.objects.create(user=signed_in).key
    done = subprocess.run([sys.executable, "-m", "imageflow_client", "runs", "list"],
                          env={**env, "IMAGEFLOW_TOKEN": fresh}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    # no module of the client imports Django
    probe = ("import sys, imageflow_client.cli, imageflow_client.watch, imageflow_client.uploads, "
             "imageflow_client.downloads; print('django' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                          cwd=cli_env.parent)
    assert done.stdout.strip() == "False", done.stderr
