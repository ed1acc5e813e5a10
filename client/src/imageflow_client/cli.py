"""`imageflow`: the command line. Each command is a function `cmd_<name>(args) -> exit status`;
0 is success, 1 a failure (a request refused, a run that failed or was cancelled, a file that
did not upload), 2 a usage error."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from rich.console import Console

from imageflow_client import __version__
from imageflow_client.api import Api, ApiError, is_uuid
from imageflow_client.config import Credentials, credentials_forget, credentials_load, credentials_save

RUN_OK = {"completed"}
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(Exception):
    pass


# --- helpers --------------------------------------------------------------------------------------

def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def api_from(args) -> Api:
    credentials = credentials_load(args.url)
    if not credentials.token:
        raise ApiError(401, f"not signed in to {credentials.url}: run `imageflow login` first (or set IMAGEFLOW_TOKEN)")
    return Api(credentials.url, credentials.token)


def parse_param(text: str) -> tuple[str, str, object]:
    """`node.key=value`; the value is JSON when it parses as JSON (`480`, `true`, `[1, 2]`,
    `"480"` for the string), else the text as it is."""
    target, sep, raw = text.partition("=")
    node, dot, key = target.partition(".")
    if not sep or not dot or not node or not key:
        raise UsageError(f"--param {text!r}: expected node.key=value")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node, key, value


def parse_since(text: str, *, now: datetime | None = None) -> str:
    """`1d`, `12h`, `30m`, `90s`, `2w` before now, or an ISO 8601 date-time (a date alone is its
    midnight UTC); answers an ISO 8601 date-time in UTC."""
    now = now or datetime.now(UTC)
    if match := DURATION.match(text.strip()):
        moment = now - timedelta(**{DURATION_UNITS[match.group(2)]: float(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"{text!r}: use a duration such as 1d, 12h, 30m, or an ISO 8601 date-time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def comma_list(values: list[str] | None) -> list[str]:
    return [part.strip() for raw in values or [] for part in raw.split(",") if part.strip()]


def print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def short_time(value: str | None) -> str:
    return (value or "-").replace("T", " ")[:19]


# --- commands -------------------------------------------------------------------------------------

def cmd_login(args) -> int:
    stored = credentials_load(args.url)
    url = stored.url
    username = args.username or stored.username
    if not username:
        if args.password_stdin:
            raise UsageError("--password-stdin needs --username")
        username = input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {username} at {url}: ")
    token = Api(url).token_obtain(username=username, password=password)
    path = credentials_save(Credentials(url=url, token=token, username=username))
    print(f"signed in to {url} as {username}; token stored in {path}")
    return 0


def cmd_logout(args) -> int:
    api = api_from(args)
    try:
        api.token_revoke()
    except ApiError as exc:
        if exc.status != 401:
            raise
    credentials_forget(api.url)
    print(f"signed out of {api.url}; the token is revoked")
    return 0


def cmd_upload(args) -> int:
    from imageflow_client.uploads import upload_paths

    api = api_from(args)
    try:
        results = upload_paths(api, args.paths, jobs=args.jobs, console=stderr(), quiet=args.quiet,
                               lines=not args.json)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    counts = {outcome: sum(1 for r in results if r.outcome == outcome)
              for outcome in ("uploaded", "skipped", "duplicate", "failed")}
    if args.json:
        print_json([{"path": str(r.path), "id": r.file_id, "checksum": r.checksum, "outcome": r.outcome,
                     "error": r.error} for r in results])
    print(f"{counts['uploaded']} uploaded, {counts['skipped']} skipped (already stored), "
          f"{counts['duplicate']} duplicates, {counts['failed']} failed", file=sys.stderr)
    return 1 if counts["failed"] else 0


def cmd_pipelines_list(args) -> int:
    api = api_from(args)
    rows = list(api.pages("pipelines/", search=args.search, limit=args.limit, page_size=min(args.limit, 200)))
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        print(f"{row['id']}  v{row.get('version', '?')}  {row['name']}")
    return 0


def cmd_pipelines_show(args) -> int:
    pipeline = api_from(args).pipeline_resolve(args.pipeline)
    if args.json:
        print_json(pipeline)
        return 0
    definition = pipeline.get("definition") or {}
    print(f"{pipeline['name']}  ({pipeline['id']}, version {pipeline.get('version')})")
    if pipeline.get("description"):
        print(pipeline["description"])
    parents: dict[str, list[str]] = {}
    for edge in definition.get("edges") or []:
        parents.setdefault(edge["to"], []).append(edge["from"])
    print("nodes:")
    for node in definition.get("nodes") or []:
        component = node.get("component") or {}
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in (node.get("parameters") or {}).items())
        after = f"  after {', '.join(parents[node['id']])}" if node["id"] in parents else ""
        print(f"  {node['id']:<12} {component.get('name')}@{component.get('version')}  {params}{after}".rstrip())
    return 0


def cmd_pipelines_export(args) -> int:
    api = api_from(args)
    pipeline = api.pipeline_resolve(args.pipeline)
    response = api.request("GET", f"pipelines/{pipeline['id']}/export/", params={"as": args.format},
                           headers={"Accept": "*/*" if args.format == "yaml" else "application/json"})
    text = response.text if args.format == "yaml" else json.dumps(response.json(), indent=2, ensure_ascii=False) + "\n"
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"exported {pipeline['name']} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_pipelines_import(args) -> int:
    api = api_from(args)
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    created = api.post("pipelines/import/", {"document": text}, expect=(201,))
    print(f"imported {created['id']} (version {created['version']})")
    return 0


def cmd_run(args) -> int:
    from imageflow_client.uploads import upload_paths

    api = api_from(args)
    parameters: dict[str, dict] = {}
    for text in args.param or []:
        node, key, value = parse_param(text)
        parameters.setdefault(node, {})[key] = value
    pipeline = api.pipeline_resolve(args.pipeline)
    inputs: list[str] = []
    paths = [i for i in args.input or [] if not is_uuid(i)]
    uploaded = {}
    if paths:
        try:
            results = upload_paths(api, paths, jobs=args.jobs, console=stderr(), lines=False)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        failed = [r for r in results if r.outcome == "failed"]
        if failed:
            for r in failed:
                print(f"error: {r.path}: {r.error}", file=sys.stderr)
            return 1
        uploaded = {raw: [r.file_id for r in upload_paths_for(results, raw)] for raw in paths}
        sent = sum(1 for r in results if r.outcome == "uploaded")
        print(f"local inputs: {len(results)} ({sent} uploaded, {len(results) - sent} already stored)", file=sys.stderr)
    for raw in args.input or []:
        inputs.extend([raw] if is_uuid(raw) else uploaded[raw])
    body: dict = {"inputs": inputs, "parameters": parameters}
    if args.on_item_error:
        body["on_item_error"] = args.on_item_error
    if args.no_cache:
        body["use_cache"] = False
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    accepted = api.post(f"pipelines/{pipeline['id']}/run/", body, expect=(202,), headers=headers)
    execution_id = str(accepted["id"])
    print(f"run {execution_id} of {pipeline['name']} (version {accepted.get('pipeline_version')}) on "
          f"{len(inputs)} input{'s' if len(inputs) != 1 else ''}")
    if not args.watch:
        return 0
    from imageflow_client.watch import follow

    execution = follow(api, execution_id, console=stderr(), view=args.progress)
    return report_end(execution)


def upload_paths_for(results, raw: str):
    """The uploads that came from one --input path (a file, or a folder's files)."""
    root = Path(raw).expanduser()
    return [r for r in results if r.path == root or root in r.path.parents]


def report_end(execution: dict) -> int:
    status = execution["status"]
    line = f"{status} {execution['id']}"
    if execution.get("error_message"):
        line += f": {execution['error_message']}"
    print(line)
    return 0 if status in RUN_OK else 1


def cmd_watch(args) -> int:
    from imageflow_client.watch import follow

    return report_end(follow(api_from(args), str(args.run), console=stderr(), view=args.progress))


def cmd_runs_list(args) -> int:
    api = api_from(args)
    query = {"status": ",".join(comma_list(args.status)) or None, "q": args.search,
             "created_after": parse_since(args.since) if args.since else None,
             "created_before": parse_since(args.until) if args.until else None}
    if args.pipeline:
        query["pipeline"] = api.pipeline_resolve(args.pipeline)["id"]
    rows = list(api.pages("executions/", limit=args.limit, page_size=min(args.limit, 200), **query))
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        error = f"  {row['error_message'][:80]}" if row.get("error_message") else ""
        print(f"{row['id']}  {row['status']:<9}  {short_time(row.get('created_at'))}  {row.get('pipeline_name')}{error}")
    return 0


def cmd_runs_show(args) -> int:
    execution = api_from(args).execution(args.run)
    if args.json:
        print_json(execution)
        return 0
    print(f"{execution['id']}  {execution['status']}  {execution.get('pipeline_name')} "
          f"(version {execution.get('pipeline_version')})")
    print(f"created {short_time(execution.get('created_at'))}, started {short_time(execution.get('started_at'))}, "
          f"completed {short_time(execution.get('completed_at'))}")
    if execution.get("error_message"):
        print(f"error: {execution['error_message']}")
    from imageflow_client.watch import StepState

    for row in execution.get("steps") or []:
        state = StepState(row["node_id"], row["status"])
        state.merge_items(row.get("items"))
        took = f"  {row['execution_time_ms']} ms" if row.get("execution_time_ms") is not None else ""
        print(f"  {row['node_id']:<12} {state.summary()}{took}")
    return 0


def cmd_download(args) -> int:
    from imageflow_client.downloads import download_run

    api = api_from(args)
    execution = api.execution(args.run)
    if execution["status"] != "completed" and not args.node:
        print(f"warning: run {execution['id']} is {execution['status']}: it has no final outputs; --node NODE "
              f"downloads what a step made", file=sys.stderr)
    planned = download_run(api, execution, Path(args.to), nodes=args.node)
    for item in planned:
        print(f"{item.outcome:<10} {Path(args.to) / item.name}  ({item.node_id}, {item.file_id})")
    if not planned:
        print(f"run {execution['id']} has no outputs to download", file=sys.stderr)
    return 1 if any(item.outcome.startswith("failed") for item in planned) else 0


def cmd_logs(args) -> int:
    api = api_from(args)
    if args.target[0] == "search":
        if len(args.target) != 2:
            raise UsageError('logs search takes one text: imageflow logs search "some words"')
        query = {"q": args.target[1], "level": ",".join(comma_list(args.level)) or None,
                 "node": ",".join(comma_list(args.node)) or None, "execution": args.run,
                 "since": parse_since(args.since) if args.since else None,
                 "until": parse_since(args.until) if args.until else None}
        if args.pipeline:
            query["pipeline"] = api.pipeline_resolve(args.pipeline)["id"]
        rows = api.pages("logs/", limit=args.limit, page_size=min(args.limit, 200), **query)
        for row in rows:
            print(f"{short_time(row['timestamp'])}  {row['level']:<8} {row['execution_id']}  "
                  f"{row.get('node_id') or '-':<10} {row['message']}")
        return 0
    if len(args.target) != 1 or not is_uuid(args.target[0]):
        raise UsageError('logs takes a run id, or: search "text"')
    query = {"level": ",".join(comma_list(args.level)) or None, "node": ",".join(comma_list(args.node)) or None}
    rows = api.pages(f"executions/{args.target[0]}/logs/", limit=args.limit, page_size=min(args.limit, 1000), **query)
    for row in rows:
        print(f"{short_time(row['timestamp'])}  {row['level']:<8} {row.get('node_id') or '-':<10} {row['message']}")
    return 0


# --- the parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imageflow", description="Command-line client of an ImageFlow server.")
    parser.add_argument("--version", action="version", version=f"imageflow-client {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (default: IMAGEFLOW_URL, else the one you last logged in to, "
                                      "else http://127.0.0.1:8000)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", parents=[common], help="get an API token and store it")
    login.add_argument("--username", "-u")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(handler=cmd_login)
    commands.add_parser("logout", parents=[common], help="revoke the token and forget it").set_defaults(
        handler=cmd_logout)

    upload = commands.add_parser("upload", parents=[common], help="upload images (folders recursively)")
    upload.add_argument("paths", nargs="+", metavar="PATH")
    upload.add_argument("--jobs", "-j", type=int, default=4, help="uploads in parallel (default 4)")
    upload.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no line per file")
    upload.add_argument("--json", action="store_true", help="print the outcome of every file as JSON")
    upload.set_defaults(handler=cmd_upload)

    pipelines = commands.add_parser("pipelines", help="list, show, export and import pipelines")
    pipeline_commands = pipelines.add_subparsers(dest="pipelines_command", required=True, metavar="COMMAND")
    p_list = pipeline_commands.add_parser("list", parents=[common], help="the pipelines you can run")
    p_list.add_argument("--search", "-s")
    p_list.add_argument("--limit", type=int, default=200)
    p_list.add_argument("--json", action="store_true")
    p_list.set_defaults(handler=cmd_pipelines_list)
    p_show = pipeline_commands.add_parser("show", parents=[common], help="a pipeline's nodes and parameters")
    p_show.add_argument("pipeline", metavar="PIPELINE", help="id or exact name")
    p_show.add_argument("--json", action="store_true")
    p_show.set_defaults(handler=cmd_pipelines_show)
    p_export = pipeline_commands.add_parser("export", parents=[common], help="a pipeline as a document")
    p_export.add_argument("pipeline", metavar="PIPELINE", help="id or exact name")
    p_export.add_argument("--format", choices=["json", "yaml"], default="json")
    p_export.add_argument("--output", "-o", help="file to write (default stdout)")
    p_export.set_defaults(handler=cmd_pipelines_export)
    p_import = pipeline_commands.add_parser("import", parents=[common], help="create a pipeline from a document")
    p_import.add_argument("file", metavar="FILE", help="JSON or YAML export; - reads stdin")
    p_import.set_defaults(handler=cmd_pipelines_import)

    run = commands.add_parser("run", parents=[common], help="run a pipeline")
    run.add_argument("pipeline", metavar="PIPELINE", help="id or exact name")
    run.add_argument("--input", "-i", action="append", metavar="FILE_ID_OR_PATH",
                     help="a file id, or a local file or folder (uploaded first, known ones skipped); repeatable")
    run.add_argument("--param", "-p", action="append", metavar="NODE.KEY=VALUE",
                     help="parameter override; the value is read as JSON when it is JSON; repeatable")
    run.add_argument("--watch", "-w", action="store_true", help="follow the run live; exit 1 unless it completes")
    run.add_argument("--progress", choices=["auto", "bars", "lines"], default="auto",
                     help="bars on a terminal, lines otherwise (auto)")
    run.add_argument("--on-item-error", choices=["fail", "continue"])
    run.add_argument("--no-cache", action="store_true", help="do not reuse results from the step cache")
    run.add_argument("--idempotency-key", help="the same key again returns the same run instead of a new one")
    run.add_argument("--jobs", "-j", type=int, default=4, help="parallel uploads of local inputs")
    run.set_defaults(handler=cmd_run)

    watch = commands.add_parser("watch", parents=[common], help="follow a run that is going on")
    watch.add_argument("run", metavar="RUN")
    watch.add_argument("--progress", choices=["auto", "bars", "lines"], default="auto")
    watch.set_defaults(handler=cmd_watch)

    runs = commands.add_parser("runs", help="list and show runs")
    run_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    r_list = run_commands.add_parser("list", parents=[common], help="runs, newest first")
    r_list.add_argument("--status", action="append", help="e.g. failed, or failed,cancelled; repeatable")
    r_list.add_argument("--since", help="created since: 1d, 12h, 30m, or an ISO 8601 date-time")
    r_list.add_argument("--until", help="created before: as --since")
    r_list.add_argument("--pipeline", help="id or exact name")
    r_list.add_argument("--search", help="text in the pipeline's name or description or the error")
    r_list.add_argument("--limit", type=int, default=20)
    r_list.add_argument("--json", action="store_true")
    r_list.set_defaults(handler=cmd_runs_list)
    r_show = run_commands.add_parser("show", parents=[common], help="a run and its steps")
    r_show.add_argument("run", metavar="RUN")
    r_show.add_argument("--json", action="store_true")
    r_show.set_defaults(handler=cmd_runs_show)

    download = commands.add_parser("download", parents=[common], help="a run's outputs, named after their inputs")
    download.add_argument("run", metavar="RUN")
    download.add_argument("--to", required=True, metavar="DIR")
    download.add_argument("--node", action="append", help="this node's outputs instead of the run's final ones")
    download.set_defaults(handler=cmd_download)

    logs = commands.add_parser("logs", parents=[common], help='a run\'s log lines, or: logs search "text"',
                               usage='imageflow logs RUN [options] | imageflow logs search "TEXT" [options]')
    logs.add_argument("target", nargs="+", metavar="RUN | search TEXT")
    logs.add_argument("--level", action="append", help="e.g. error or warning,error")
    logs.add_argument("--node", action="append")
    logs.add_argument("--limit", type=int, default=1000)
    logs.add_argument("--run", help="search: only this run")
    logs.add_argument("--pipeline", help="search: only this pipeline (id or exact name)")
    logs.add_argument("--since", help="search: 1d, 12h, ... or ISO 8601")
    logs.add_argument("--until", help="search: as --since")
    logs.set_defaults(handler=cmd_logs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        parser.exit(2, f"imageflow: error: {exc}\n")
    except ApiError as exc:
        message = str(exc)
        if exc.status == 401:
            message += " (run `imageflow login`)" if "login" not in message else ""
        for field, errors in (exc.errors or {}).items():
            if field != "non_field_errors" and field not in message:
                message += f"\n  {field}: {'; '.join(map(str, errors))}"
        print(f"imageflow: error: {message}", file=sys.stderr)
        return 1
    except requests.ConnectionError as exc:
        print(f"imageflow: error: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
